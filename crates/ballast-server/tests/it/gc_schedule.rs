//! Scheduled garbage collection applies retention policies on its own: old development versions
//! go, protected ones stay, and every removal is in the audit trail.

use std::time::Duration;

use ballast_api::AuditEntry;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{data, eventually, sha_hex, spawn_app_with, TestApp};

async fn status(app: &TestApp, path: &str) -> StatusCode {
    app.get(path).send().await.unwrap().status()
}

fn content(n: u64) -> Vec<u8> {
    data(1000 + n as usize, n)
}

/// A sealed version of `model` holding `content(n)`, with these metadata.
async fn sealed(app: &TestApp, model: &str, n: u64, metadata: Value) {
    let v = app.create_version(model, &json!({ "metadata": metadata })).await;
    assert_eq!(v.version, n);
    app.upload(model, n, "w.bin", &content(n)).await;
    app.seal(model, n).await;
}

#[tokio::test]
async fn scheduled_gc_removes_old_development_versions_by_retention_policy() {
    let app = spawn_app_with(|c| {
        c.gc_interval_secs = 1;
        c.gc_blob_grace_secs = 0;
    })
    .await;
    let m = "acme/bot";
    app.create_model(m).await;
    for n in 1..=6u64 {
        sealed(&app, m, n, json!({ "description": format!("v{n}") })).await;
    }
    // 7, the newest development version, derives from 6.
    sealed(&app, m, 7, json!({ "lineage": { "parent_version": 6 } })).await;
    // 1 was in production (replaced by 2), 2 is, 3 has an alias; 4 and 5 are plain old
    // development versions.
    for n in [1, 2] {
        app.set_stage(m, n, "staging").await;
        app.set_stage(m, n, "production").await;
    }
    let r = app
        .put_json(
            &format!("/v1/models/{m}/aliases/champion"),
            &json!({ "version": 3 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A model without a retention policy is never touched.
    app.create_model("other/bot").await;
    for i in 0..3u8 {
        app.sealed_version("other/bot", &[i; 64]).await;
    }
    // Every scheduled run so far found no policy. Now one applies: keep the newest development
    // version and nothing by age.
    let r = app
        .put_json(
            "/v1/retention/acme",
            &json!({ "keep_last_dev": 1, "keep_days": 0 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Nobody asks for a collection: the schedule removes 4 and 5, then the blobs they freed.
    eventually(
        Duration::from_secs(20),
        "scheduled removal of versions 4 and 5",
        || async {
            status(&app, "/v1/models/acme/bot/versions/4").await == StatusCode::NOT_FOUND
                && status(&app, "/v1/models/acme/bot/versions/5").await == StatusCode::NOT_FOUND
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "scheduled sweep of the freed blobs",
        || async {
            [4, 5]
                .iter()
                .all(|n| !app.blob_path(&sha_hex(&content(*n))).exists())
        },
    )
    .await;
    // Let a few more runs pass: what is protected stays through every one of them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for n in [1u64, 2, 3, 6, 7] {
        let r = app
            .get(&format!("/v1/models/{m}/versions/{n}/files/w.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "version {n} must be kept");
        assert_eq!(r.bytes().await.unwrap().to_vec(), content(n), "version {n}");
    }
    for n in 1..=3 {
        assert_eq!(
            status(&app, &format!("/v1/models/other/bot/versions/{n}")).await,
            StatusCode::OK
        );
    }

    // The trail says who removed what, and why; the chain still verifies.
    let audit = app.audit_all().await;
    let deleted: Vec<&AuditEntry> = audit.iter().filter(|e| e.action == "version.delete").collect();
    assert_eq!(
        deleted
            .iter()
            .map(|e| (e.target.as_str(), e.actor.as_str()))
            .collect::<Vec<_>>(),
        [("acme/bot/4", "ballast-gc"), ("acme/bot/5", "ballast-gc")],
        "{audit:#?}"
    );
    for e in &deleted {
        let reason = e.before["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("not among the newest 1 development version"),
            "{}: {reason:?}",
            e.target
        );
        assert_ne!(e.request_id, "", "{e:?}");
    }
    let sweeps: Vec<&AuditEntry> = audit.iter().filter(|e| e.action == "blob.gc").collect();
    assert!(
        sweeps.iter().all(|e| e.actor == "ballast-gc") && !sweeps.is_empty(),
        "{sweeps:?}"
    );
    let removed: u64 = sweeps
        .iter()
        .map(|e| e.after["blobs_removed"].as_u64().unwrap())
        .sum();
    assert_eq!(removed, 2, "{sweeps:?}");
    let chain: Value = app.get_ok("/v1/audit/verify").await;
    assert_eq!(chain["ok"], true, "{chain}");
}
