//! Retention policies and garbage collection: the API, every protected case end to end, dry
//! runs that change nothing, the blob grace period, the schedule, and collections racing
//! uploads and attaches without losing an acknowledged file.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ballast_api::retention::{EffectiveRetention, GcReport, RetentionRule};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{data, err, ok, sha_hex, spawn_app, spawn_app_with, TestApp};

/// Moves the touched time of every stored blob `secs` into the past.
fn age_blobs(app: &TestApp, secs: u64) {
    fn walk(dir: &Path, when: SystemTime) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, when);
            } else if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&p) {
                f.set_modified(when).expect("set mtime");
            }
        }
    }
    walk(
        &app.data_dir().join("blobs/sha256"),
        SystemTime::now() - Duration::from_secs(secs),
    );
}

async fn gc(app: &TestApp, body: Value) -> GcReport {
    ok(app.post("/v1/gc", &body).send().await.unwrap(), StatusCode::OK).await
}

async fn set_policy(app: &TestApp, path: &str, body: Value) -> RetentionRule {
    ok(app.put_json(path, &body).send().await.unwrap(), StatusCode::OK).await
}

async fn status(app: &TestApp, path: &str) -> StatusCode {
    app.get(path).send().await.unwrap().status()
}

fn numbers(r: &GcReport, model: &str) -> Vec<u64> {
    r.versions
        .iter()
        .filter(|v| v.model == model)
        .map(|v| v.version)
        .collect()
}

fn reasons(r: &GcReport, model: &str, n: u64) -> Vec<String> {
    r.kept
        .iter()
        .find(|k| k.model == model && k.version == n)
        .map(|k| k.reasons.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn retention_policies_are_set_inherited_overridden_and_removed() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    err(
        app.get("/v1/retention/acme").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    err(
        app.get("/v1/models/acme/bot/retention").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let rule = set_policy(
        &app,
        "/v1/retention/acme",
        json!({ "keep_last_dev": 5, "keep_days": 30 }),
    )
    .await;
    assert_eq!(
        (rule.namespace.as_str(), rule.model.as_deref(), rule.revision),
        ("acme", None, 1)
    );
    assert!(rule.policy.enabled);
    let eff: EffectiveRetention = app.get_ok("/v1/models/acme/bot/retention").await;
    assert_eq!(
        (eff.source.as_str(), eff.rule.policy.keep_last_dev),
        ("namespace", 5)
    );

    let own = set_policy(
        &app,
        "/v1/models/acme/bot/retention",
        json!({ "keep_last_dev": 1, "keep_days": 0, "enabled": false }),
    )
    .await;
    assert_eq!(own.model.as_deref(), Some("acme/bot"));
    let eff: EffectiveRetention = app.get_ok("/v1/models/acme/bot/retention").await;
    assert_eq!((eff.source.as_str(), eff.rule.policy.enabled), ("model", false));

    // Bad input is refused and changes nothing.
    for (body, code, field) in [
        (json!({ "keep_last_dev": 1 }), "invalid_json", None),
        (
            json!({ "keep_last_dev": 1, "keep_days": 1, "extra": 1 }),
            "invalid_json",
            None,
        ),
        (
            json!({ "keep_last_dev": -1, "keep_days": 1 }),
            "invalid_json",
            None,
        ),
        (
            json!({ "keep_last_dev": 1, "keep_days": 36501 }),
            "invalid_argument",
            Some("keep_days"),
        ),
        (
            json!({ "keep_last_dev": 1000001, "keep_days": 1 }),
            "invalid_argument",
            Some("keep_last_dev"),
        ),
    ] {
        let e = err(
            app.put_json("/v1/retention/acme", &body).send().await.unwrap(),
            StatusCode::BAD_REQUEST,
            code,
        )
        .await;
        if let Some(f) = field {
            assert_eq!(e["field"], f);
        }
    }
    err(
        app.put_json(
            "/v1/retention/Bad_NS",
            &json!({ "keep_last_dev": 1, "keep_days": 1 }),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_name",
    )
    .await;
    err(
        app.put_json(
            "/v1/models/acme/nope/retention",
            &json!({ "keep_last_dev": 1, "keep_days": 1 }),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let unchanged: RetentionRule = app.get_ok("/v1/retention/acme").await;
    assert_eq!(unchanged, rule);

    let r = app.delete("/v1/models/acme/bot/retention").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    err(
        app.delete("/v1/models/acme/bot/retention").send().await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let eff: EffectiveRetention = app.get_ok("/v1/models/acme/bot/retention").await;
    assert_eq!(eff.source, "namespace");
    let r = app.delete("/v1/retention/acme").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(status(&app, "/v1/retention/acme").await, StatusCode::NOT_FOUND);

    let actions: Vec<(String, String)> = app
        .audit_all()
        .await
        .into_iter()
        .filter(|e| e.action.starts_with("retention."))
        .map(|e| (e.action, e.target))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("retention.set".into(), "acme".into()),
            ("retention.set".into(), "acme/bot".into()),
            ("retention.delete".into(), "acme/bot".into()),
            ("retention.delete".into(), "acme".into()),
        ]
    );
}

/// One model with a version for each protected case; the policy keeps the newest development
/// version and nothing by age, so only versions 5 (plain) and 7 (an abandoned draft) qualify.
async fn protected_fixture(app: &TestApp) {
    let m = "acme/bot";
    app.create_model(m).await;
    for n in 1..=6u64 {
        let body = if n == 6 {
            json!({})
        } else {
            json!({ "metadata": { "description": format!("v{n}") } })
        };
        let v = app.create_version(m, &body).await;
        app.upload(m, v.version, "w.bin", &data(1000 + n as usize, n))
            .await;
        app.seal(m, v.version).await;
    }
    // 1 was in production (replaced by 2), 2 is, 3 is in staging, 4 has an alias.
    app.set_stage(m, 1, "staging").await;
    app.set_stage(m, 1, "production").await;
    app.set_stage(m, 2, "staging").await;
    app.set_stage(m, 2, "production").await;
    app.set_stage(m, 3, "staging").await;
    let r = app
        .put_json(
            &format!("/v1/models/{m}/aliases/champion"),
            &json!({ "version": 4 }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // 7: a draft that was abandoned with a file.
    let draft = app.create_version(m, &json!({})).await;
    assert_eq!(draft.version, 7);
    app.upload(m, 7, "partial.bin", &data(777, 7)).await;
    // 8: the newest development version, derived from 6.
    let v8 = app
        .create_version(m, &json!({ "metadata": { "lineage": { "parent_version": 6 } } }))
        .await;
    app.upload(m, v8.version, "w.bin", &data(1008, 8)).await;
    app.seal(m, v8.version).await;
    // Another model of the namespace opts out.
    app.create_model("acme/exempt").await;
    app.sealed_version("acme/exempt", b"exempt-1").await;
    app.sealed_version("acme/exempt", b"exempt-2").await;
    set_policy(
        app,
        "/v1/retention/acme",
        json!({ "keep_last_dev": 1, "keep_days": 0 }),
    )
    .await;
    set_policy(
        app,
        "/v1/models/acme/exempt/retention",
        json!({ "keep_last_dev": 0, "keep_days": 0, "enabled": false }),
    )
    .await;
}

#[tokio::test]
async fn gc_removes_only_unprotected_versions_and_dry_run_changes_nothing() {
    let app = spawn_app_with(|c| c.gc_blob_grace_secs = 0).await;
    protected_fixture(&app).await;
    // A model of another namespace names version 3 of acme/bot as its parent: with version 3
    // out of staging it stays for that reason alone.
    app.create_model("other/child").await;
    app.create_version(
        "other/child",
        &json!({ "metadata": { "lineage": { "parent": "acme/bot/3" } } }),
    )
    .await;
    app.set_stage("acme/bot", 3, "archived").await;
    age_blobs(&app, 10);

    let audit_before = app.audit_everything().await.len();
    let files_before = app.files_under("sha256");
    let dry = gc(&app, json!({ "dry_run": true, "explain": true })).await;
    assert!(dry.dry_run);
    assert_eq!(numbers(&dry, "acme/bot"), vec![5, 7]);
    assert!(numbers(&dry, "acme/exempt").is_empty());
    assert_eq!((dry.versions_removed, dry.blobs_removed), (0, 0));
    let v7 = dry.versions.iter().find(|v| v.version == 7).unwrap();
    assert_eq!((v7.state.as_str(), v7.size), ("draft", 777));
    assert!(v7.reason.starts_with("draft (never sealed)"), "{}", v7.reason);
    // The dry run reports the blobs the removals would free.
    let would: BTreeSet<String> = dry.blobs.iter().map(|b| b.sha256.clone()).collect();
    assert_eq!(
        would,
        BTreeSet::from([sha_hex(&data(1005, 5)), sha_hex(&data(777, 7))])
    );
    assert_eq!(dry.bytes_freed, 1005 + 777);
    for (n, why) in [
        (1, "was in production"),
        (2, "in production"),
        (3, "lineage parent of other/child/1"),
        (4, "alias champion"),
        (6, "lineage parent of kept version 8"),
        (8, "among the newest 1 development version"),
    ] {
        let got = reasons(&dry, "acme/bot", n);
        assert!(got.iter().any(|r| r == why), "version {n}: {got:?}");
    }
    assert_eq!(
        reasons(&dry, "acme/exempt", 1),
        vec!["retention is disabled for this model".to_owned()]
    );
    // Nothing changed.
    assert_eq!(app.audit_everything().await.len(), audit_before);
    assert_eq!(app.files_under("sha256"), files_before);
    assert_eq!(
        status(&app, "/v1/models/acme/bot/versions/5").await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, "/v1/models/acme/bot/versions/7").await,
        StatusCode::OK
    );

    let done = gc(&app, json!({ "dry_run": false })).await;
    assert_eq!(numbers(&done, "acme/bot"), vec![5, 7]);
    assert_eq!((done.versions_removed, done.blobs_removed), (2, 2));
    assert_eq!(done.bytes_freed, 1005 + 777);
    assert!(done.kept.is_empty());
    for n in [5, 7] {
        err(
            app.get(&format!("/v1/models/acme/bot/versions/{n}"))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    assert!(!app.blob_path(&sha_hex(&data(1005, 5))).exists());
    assert!(!app.blob_path(&sha_hex(&data(777, 7))).exists());
    // Everything kept is still there and downloads.
    for n in [1u64, 2, 3, 4, 6, 8] {
        let r = app
            .get(&format!("/v1/models/acme/bot/versions/{n}/files/w.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "version {n}");
        assert_eq!(r.bytes().await.unwrap().to_vec(), data(1000 + n as usize, n));
    }
    assert_eq!(
        status(&app, "/v1/models/acme/exempt/versions/1").await,
        StatusCode::OK
    );

    // Each removal is audited with its reason and announced as version.deleted.
    let audit = app.audit_all().await;
    let deleted: Vec<&ballast_api::AuditEntry> =
        audit.iter().filter(|e| e.action == "version.delete").collect();
    assert_eq!(
        deleted.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        vec!["acme/bot/5", "acme/bot/7"]
    );
    assert!(deleted[1].before["reason"].as_str().unwrap().starts_with("draft"));
    let sweep = audit
        .iter()
        .find(|e| e.action == "blob.gc")
        .expect("blob sweep audited");
    assert_eq!(sweep.after["blobs_removed"], 2);
    let events: Value = app.get_ok("/v1/events?type=version.deleted").await;
    let subjects: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, vec!["acme/bot/5", "acme/bot/7"]);

    // A second run finds nothing more.
    let again = gc(&app, json!({ "dry_run": false })).await;
    assert_eq!((again.versions_removed, again.blobs_removed), (0, 0));
}

#[tokio::test]
async fn young_versions_and_models_without_a_policy_are_kept() {
    let app = spawn_app_with(|c| c.gc_blob_grace_secs = 0).await;
    for m in ["young/bot", "nopolicy/bot"] {
        app.create_model(m).await;
        for i in 0..3u8 {
            app.sealed_version(m, &[i; 10]).await;
        }
    }
    set_policy(
        &app,
        "/v1/retention/young",
        json!({ "keep_last_dev": 0, "keep_days": 1 }),
    )
    .await;
    let r = gc(&app, json!({ "dry_run": false, "explain": true })).await;
    assert!(r.versions.is_empty());
    for n in 1..=3 {
        assert_eq!(reasons(&r, "young/bot", n), vec!["younger than 1 day".to_owned()]);
    }
    // Models without a policy are not even looked at.
    assert!(r.kept.iter().all(|k| k.model == "young/bot"));
    // With keep_days 0 the same versions go.
    set_policy(
        &app,
        "/v1/retention/young",
        json!({ "keep_last_dev": 0, "keep_days": 0 }),
    )
    .await;
    let r = gc(&app, json!({ "dry_run": true })).await;
    assert_eq!(numbers(&r, "young/bot"), vec![1, 2, 3]);
    assert!(numbers(&r, "nopolicy/bot").is_empty());
}

#[tokio::test]
async fn gc_requests_are_validated_and_scoped_runs_touch_only_their_scope() {
    let app = spawn_app_with(|c| c.gc_blob_grace_secs = 0).await;
    for (body, status, code) in [
        (json!({}), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            json!({ "dry_run": "yes" }),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({ "dry_run": true, "bogus": 1 }),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({ "dry_run": true, "namespace": "a", "model": "a/b" }),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            json!({ "dry_run": true, "model": "nope" }),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            json!({ "dry_run": true, "namespace": "A B" }),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            json!({ "dry_run": true, "model": "a/missing" }),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        err(app.post("/v1/gc", &body).send().await.unwrap(), status, code).await;
    }
    for m in ["one/a", "two/a"] {
        app.create_model(m).await;
        app.sealed_version(m, format!("{m}-1").as_bytes()).await;
        app.sealed_version(m, format!("{m}-2").as_bytes()).await;
    }
    for ns in ["one", "two"] {
        set_policy(
            &app,
            &format!("/v1/retention/{ns}"),
            json!({ "keep_last_dev": 1, "keep_days": 0 }),
        )
        .await;
    }
    // An orphan blob (uploaded to a draft of a model without a policy, then removed from it).
    app.create_model("three/x").await;
    let v = app.create_version("three/x", &json!({})).await;
    orphan(&app, "three/x", v.version, b"orphan").await;
    age_blobs(&app, 10);

    let r = gc(&app, json!({ "dry_run": false, "namespace": "one" })).await;
    assert_eq!(numbers(&r, "one/a"), vec![1]);
    assert!(numbers(&r, "two/a").is_empty());
    // Only the blob its own removal freed goes; the orphan elsewhere stays.
    assert_eq!(
        r.blobs.iter().map(|b| b.sha256.clone()).collect::<Vec<_>>(),
        vec![sha_hex(b"one/a-1")]
    );
    assert!(app.blob_path(&sha_hex(b"orphan")).exists());
    assert_eq!(status(&app, "/v1/models/two/a/versions/1").await, StatusCode::OK);

    let r = gc(&app, json!({ "dry_run": false, "model": "two/a" })).await;
    assert_eq!(numbers(&r, "two/a"), vec![1]);
    assert!(app.blob_path(&sha_hex(b"orphan")).exists());
    let r = gc(&app, json!({ "dry_run": false })).await;
    assert_eq!(
        r.blobs.iter().map(|b| b.sha256.clone()).collect::<Vec<_>>(),
        vec![sha_hex(b"orphan")]
    );
    assert!(!app.blob_path(&sha_hex(b"orphan")).exists());
}

/// Uploads `bytes` to a scratch draft and removes the file again: the blob stays, unreferenced.
async fn orphan(app: &TestApp, model: &str, n: u64, bytes: &[u8]) {
    app.upload(model, n, "scratch.bin", bytes).await;
    let r = app
        .delete(&format!("/v1/models/{model}/versions/{n}/files/scratch.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn unreferenced_blobs_stay_through_the_grace_period() {
    let app = spawn_app().await;
    app.create_model("g/m").await;
    let v = app.create_version("g/m", &json!({})).await;
    orphan(&app, "g/m", v.version, b"lonely").await;
    app.upload("g/m", v.version, "kept.bin", b"referenced").await;
    let lonely = sha_hex(b"lonely");

    // Fresh: inside the default hour of grace.
    let r = gc(&app, json!({ "dry_run": false })).await;
    assert_eq!(
        (r.blobs_removed, r.blobs_in_grace, r.blob_grace_secs),
        (0, 1, 3600)
    );
    assert!(app.blob_path(&lonely).exists());

    // Two hours old, but checked by a client (which may attach it next): still kept.
    age_blobs(&app, 7200);
    let info: Value = app.get_ok(&format!("/v1/blobs/sha256/{lonely}")).await;
    assert_eq!(info["size"], 6);
    let r = gc(&app, json!({ "dry_run": true })).await;
    assert!(r.blobs.is_empty());
    assert_eq!(r.blobs_in_grace, 1);

    // Old and untouched: it goes; the referenced blob stays, however old.
    age_blobs(&app, 7200);
    let dry = gc(&app, json!({ "dry_run": true })).await;
    assert_eq!(dry.blobs.len(), 1);
    assert!(app.blob_path(&lonely).exists());
    let r = gc(&app, json!({ "dry_run": false })).await;
    assert_eq!(
        r.blobs
            .iter()
            .map(|b| (b.sha256.clone(), b.size))
            .collect::<Vec<_>>(),
        vec![(lonely.clone(), 6)]
    );
    assert!(!app.blob_path(&lonely).exists());
    let r = app
        .get(&format!("/v1/models/g/m/versions/{}/files/kept.bin", v.version))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"referenced");
    // Attaching the swept blob is refused, not acknowledged.
    err(
        app.post(
            &format!("/v1/models/g/m/versions/{}/files", v.version),
            &json!({ "path": "again.bin", "sha256": lonely }),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn scheduled_gc_runs_and_is_measured() {
    let app = spawn_app_with(|c| {
        c.gc_interval_secs = 1;
        c.gc_blob_grace_secs = 0;
    })
    .await;
    app.create_model("s/m").await;
    let v = app.create_version("s/m", &json!({})).await;
    orphan(&app, "s/m", v.version, b"scheduled").await;
    age_blobs(&app, 10);
    let path = app.blob_path(&sha_hex(b"scheduled"));
    // The sweep's audit entry follows the removal: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let sweep = loop {
        let audit = app.audit_all().await;
        if let Some(e) = audit.into_iter().find(|e| e.action == "blob.gc") {
            break e;
        }
        assert!(Instant::now() < deadline, "no scheduled sweep within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!path.exists());
    assert_eq!(sweep.actor, "ballast-gc");
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ballast_gc_runs_total") && l.contains("trigger=\"schedule\"")),
        "{metrics}"
    );
    assert!(metrics.contains("ballast_gc_blobs_removed_total"));
    assert!(metrics.contains("ballast_gc_bytes_freed_total"));
}

/// Uploads (new bytes and bytes of blobs being swept) and attaches of old unreferenced blobs run
/// while collections with no grace period run back to back: every acknowledged file stays
/// downloadable and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_uploads_and_attaches_loses_nothing() {
    let app = Arc::new(spawn_app_with(|c| c.gc_blob_grace_secs = 0).await);
    let m = "race/m";
    app.create_model(m).await;
    // A policy that keeps everything, so only blobs are collected.
    set_policy(
        &app,
        "/v1/retention/race",
        json!({ "keep_last_dev": 1000, "keep_days": 365 }),
    )
    .await;
    // A pool of old, unreferenced blobs for the writers to attach and upload again.
    let scratch = app.create_version(m, &json!({})).await.version;
    let pool: Vec<Vec<u8>> = (0..300u64)
        .map(|i| data(64 + (i as usize % 7) * 512, 10_000 + i))
        .collect();
    for b in &pool {
        orphan(&app, m, scratch, b).await;
    }
    age_blobs(&app, 10);
    let pool = Arc::new(pool);

    let stop = Arc::new(AtomicBool::new(false));
    let removed = Arc::new(AtomicU64::new(0));
    let collector = {
        let (app, stop, removed) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&removed));
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !stop.load(Ordering::Relaxed) || runs < 3 {
                let r = gc(&app, json!({ "dry_run": false })).await;
                removed.fetch_add(r.blobs_removed, Ordering::Relaxed);
                runs += 1;
            }
            runs
        })
    };

    let deadline = Instant::now() + Duration::from_secs(4);
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (app, pool) = (Arc::clone(&app), Arc::clone(&pool));
        writers.push(tokio::spawn(async move {
            // (version, path, bytes) of every acknowledged file.
            let mut acked: Vec<(u64, String, Vec<u8>)> = Vec::new();
            let mut refused = 0u32;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let v = app.create_version(m, &json!({})).await.version;
                // New bytes.
                let fresh = data(2048, w * 1_000_000 + i);
                app.upload(m, v, "fresh.bin", &fresh).await;
                acked.push((v, "fresh.bin".into(), fresh));
                // Attach an old unreferenced blob (the collector may sweep it first: then the
                // attach is refused and nothing is acknowledged).
                let old = &pool[((w * 97 + i * 13) % pool.len() as u64) as usize];
                let r = app
                    .post(
                        &format!("/v1/models/{m}/versions/{v}/files"),
                        &json!({ "path": "attached.bin", "sha256": sha_hex(old) }),
                    )
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::CREATED => acked.push((v, "attached.bin".into(), old.clone())),
                    StatusCode::NOT_FOUND => refused += 1,
                    s => panic!("attach answered {s}: {}", r.text().await.unwrap()),
                }
                // Upload bytes of another pooled blob (stored again, or raced with its sweep).
                let again = &pool[((w * 31 + i * 7 + 1) % pool.len() as u64) as usize];
                app.upload(m, v, "again.bin", again).await;
                acked.push((v, "again.bin".into(), again.clone()));
                i += 1;
            }
            (acked, refused)
        }));
    }
    let mut acked = Vec::new();
    let mut refused = 0;
    for w in writers {
        let (a, r) = w.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    stop.store(true, Ordering::Relaxed);
    let runs = collector.await.unwrap();
    let swept = removed.load(Ordering::Relaxed);
    eprintln!(
        "race: {} acknowledged files, {refused} attaches refused, {runs} collections, {swept} blobs swept",
        acked.len()
    );
    assert!(
        runs >= 3 && swept > 0,
        "the collector must have run and swept blobs"
    );
    assert!(acked.len() > 30, "the writers must have made progress");

    // One more collection after the race, then every acknowledged file downloads and verifies.
    gc(&app, json!({ "dry_run": false })).await;
    for (v, path, bytes) in &acked {
        let r = app
            .req(Method::GET, &format!("/v1/models/{m}/versions/{v}/files/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "version {v} {path} lost");
        let got = r.bytes().await.unwrap();
        assert_eq!(sha_hex(&got), sha_hex(bytes), "version {v} {path} corrupt");
    }
}
