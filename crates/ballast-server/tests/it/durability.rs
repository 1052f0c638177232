//! Acknowledged means durable: state written before a graceful shutdown is all there after a
//! restart on the same data directory. Also the operational endpoints.

use ballast_api::{AuditEntry, Model, Version};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{data, ok, spawn_app};

#[tokio::test]
async fn state_survives_a_restart() {
    let app = spawn_app().await;
    app.create_model("dur/model").await;
    let r = app
        .patch(
            "/v1/models/dur/model",
            &json!({ "description": "kept", "set_tags": { "team": "core" } }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = data(300_000, 3);
    let v1 = app.sealed_version("dur/model", &bytes).await;
    app.set_stage("dur/model", v1, "staging").await;
    app.set_stage("dur/model", v1, "production").await;
    let v2 = app
        .create_version("dur/model", &json!({ "metadata": { "metrics": { "acc": 0.7 } } }))
        .await
        .version;
    app.upload("dur/model", v2, "draft.bin", b"draft").await;
    let r = app
        .put_json("/v1/models/dur/model/aliases/champion", &json!({ "version": v1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post("/v1/models", &json!({ "name": "dur/idem" }))
        .header("idempotency-key", "before-restart")
        .send()
        .await
        .unwrap();
    let idem_first: Value = ok(r, StatusCode::CREATED).await;

    let model: Model = app.get_ok("/v1/models/dur/model").await;
    let versions: Value = app.get_ok("/v1/models/dur/model/versions").await;
    let models: Value = app.get_ok("/v1/models").await;
    let trail: Vec<AuditEntry> = app.audit_everything().await;

    let old_base = app.base.clone();
    let app = app.restart().await;
    assert_ne!(app.base, "", "restarted on {} (was {old_base})", app.base);

    let model2: Model = app.get_ok("/v1/models/dur/model").await;
    assert_eq!(
        serde_json::to_value(&model2).unwrap(),
        serde_json::to_value(&model).unwrap()
    );
    assert_eq!(
        app.get_ok::<Value>("/v1/models/dur/model/versions").await,
        versions
    );
    assert_eq!(app.get_ok::<Value>("/v1/models").await, models);
    let trail2 = app.audit_everything().await;
    assert_eq!(
        serde_json::to_value(&trail2).unwrap(),
        serde_json::to_value(&trail).unwrap()
    );
    let verify: Value = app.get_ok("/v1/audit/verify").await;
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["entries"], trail.len());

    let r = app
        .get(&format!("/v1/models/dur/model/versions/{v1}/files/model.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == bytes);
    let v: Version = app.get_ok("/v1/models/dur/model/aliases/champion/version").await;
    assert_eq!(v.version, v1);
    let v: Version = app.get_ok("/v1/models/dur/model/stages/production").await;
    assert_eq!(v.version, v1);

    // The idempotency record survived too, and work continues where it stopped.
    let r = app
        .post("/v1/models", &json!({ "name": "dur/idem" }))
        .header("idempotency-key", "before-restart")
        .send()
        .await
        .unwrap();
    assert_eq!(ok::<Value>(r, StatusCode::CREATED).await, idem_first);
    let v3 = app.create_version("dur/model", &json!({})).await;
    assert_eq!(v3.version, v2 + 1);
    app.upload("dur/model", v2, "more.bin", b"more").await;
    let r = app
        .post(&format!("/v1/models/dur/model/versions/{v2}/seal"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let verify: Value = app.get_ok("/v1/audit/verify").await;
    assert_eq!(verify["ok"], true);

    // And a second restart still sees all of it.
    let app = app.restart().await;
    let v: Version = app.get_ok(&format!("/v1/models/dur/model/versions/{v2}")).await;
    assert_eq!((v.files.len(), v.digest.is_some()), (2, true));
    let m: Model = app.get_ok("/v1/models/dur/model").await;
    assert_eq!(m.latest_version, v2 + 1);
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let app = spawn_app().await;
    let health: Value = app.get_ok("/healthz").await;
    assert_eq!(health, json!({ "status": "ok" }));
    let r = app.get("/readyz").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    app.create_model("ops/model").await;
    let r = app.get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(text.contains("ballast_http_requests_total"), "{text}");
    assert!(
        text.contains("route=\"/v1/models\""),
        "requests are labelled by route: {text}"
    );
    assert!(text.contains("ballast_store_models"), "{text}");

    let r = app.get("/v1/openapi.json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/models",
        "/v1/models/{ns}/{model}",
        "/v1/models/{ns}/{model}/versions",
        "/v1/models/{ns}/{model}/versions/{n}/files/{path}",
        "/v1/models/{ns}/{model}/aliases/{alias}",
        "/v1/audit",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(paths["/v1/models"].get("post").is_some());
    assert!(doc["components"]["schemas"].get("VersionMetadata").is_some());

    // x-request-id is echoed, or generated.
    let r = app
        .get("/healthz")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app.get("/healthz").send().await.unwrap();
    assert!(!r.headers()["x-request-id"].is_empty());
}

#[tokio::test]
async fn shutdown_lets_in_flight_uploads_finish() {
    let mut app = spawn_app().await;
    app.create_model("dur/slow").await;
    app.create_version("dur/slow", &json!({})).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::io::Error>))
    }));
    let req = app
        .req(Method::PUT, "/v1/models/dur/slow/versions/1/files/slow.bin")
        .body(body);
    let upload = tokio::spawn(async move { req.send().await.map(|r| r.status()) });
    tx.send(vec![1; 1000]).await.unwrap();
    // Wait until the server is receiving the upload before asking it to stop.
    crate::app::eventually(
        std::time::Duration::from_secs(10),
        "upload in progress",
        || async { !app.files_under("tmp").is_empty() },
    )
    .await;
    let finish = tokio::spawn(async move {
        tx.send(vec![2; 1000]).await.unwrap();
    });
    app.stop().await;
    finish.await.unwrap();
    assert_eq!(upload.await.unwrap().unwrap(), StatusCode::CREATED);
    let app = app.restart().await;
    let v: Version = app.get_ok("/v1/models/dur/slow/versions/1").await;
    assert_eq!(v.files.len(), 1);
    assert_eq!(
        v.files[0].sha256,
        crate::app::sha_hex(&[vec![1u8; 1000], vec![2u8; 1000]].concat())
    );
}

#[tokio::test]
async fn audit_chain_detects_tampering_and_every_entry_has_its_event() {
    let mut app = spawn_app().await;
    app.create_model("dur/audit").await;
    let n = app.sealed_version("dur/audit", b"bytes").await;
    app.set_stage("dur/audit", n, "staging").await;
    let trail = app.audit_everything().await;
    assert_eq!(
        trail
            .iter()
            .filter(|e| !crate::app::is_access_setup(&e.action))
            .count(),
        5
    );
    app.stop().await;

    let db = rusqlite::Connection::open(app.data_dir().join("ballast.db")).unwrap();
    // The change, its audit entry and its outbox event were committed together.
    let mut stmt = db
        .prepare("SELECT type, subject, data FROM outbox ORDER BY id")
        .unwrap();
    let events: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(stmt);
    assert_eq!(events.len(), trail.len());
    for (e, (kind, subject, data)) in trail.iter().zip(&events) {
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(subject.as_str(), e.target.as_str());
        assert!(
            kind.split('.').next() == e.action.split('.').next() || kind.starts_with("stage_transition"),
            "{kind} vs {}",
            e.action
        );
        assert_eq!(data["audit_id"], e.id);
        assert_eq!(data["after"], e.after);
    }
    // Rewrite history: who made the second change.
    let changed = db
        .execute("UPDATE audit SET actor = 'mallory' WHERE id = ?1", [trail[1].id])
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let app = app.restart().await;
    let verify: Value = app.get_ok("/v1/audit/verify").await;
    assert_eq!(verify["ok"], false, "{verify}");
    assert_eq!(verify["first_bad_id"], trail[1].id);
}

/// Deleting, reordering or cutting entries is found, and the first entry that no longer fits is
/// named.
#[tokio::test]
async fn audit_verify_finds_deleted_reordered_and_truncated_entries() {
    type Tamper = fn(&rusqlite::Connection, &[AuditEntry]) -> u64;
    let cases: [(&str, Tamper); 3] = [
        ("delete a middle entry", |db, t| {
            db.execute("DELETE FROM audit WHERE id = ?1", [t[3].id]).unwrap();
            t[4].id
        }),
        ("swap two entries", |db, t| {
            let (a, b) = (t[2].id, t[3].id);
            db.execute_batch(&format!(
                "UPDATE audit SET id = -1 WHERE id = {a}; UPDATE audit SET id = {a} WHERE id = {b}; UPDATE audit SET id = {b} WHERE id = -1;"
            ))
            .unwrap();
            a
        }),
        ("cut the newest entry", |db, t| {
            let last = t.last().unwrap().id;
            db.execute("DELETE FROM audit WHERE id = ?1", [last]).unwrap();
            last
        }),
    ];
    for (what, tamper) in cases {
        let mut app = spawn_app().await;
        app.create_model("dur/tamper").await;
        let n = app.sealed_version("dur/tamper", b"bytes").await;
        app.set_stage("dur/tamper", n, "staging").await;
        let trail = app.audit_everything().await;
        let verify: Value = app.get_ok("/v1/audit/verify").await;
        assert_eq!(verify["ok"], true, "{what}: {verify}");
        app.stop().await;
        let db = rusqlite::Connection::open(app.data_dir().join("ballast.db")).unwrap();
        let bad = tamper(&db, &trail);
        drop(db);
        let app = app.restart().await;
        let verify: Value = app.get_ok("/v1/audit/verify").await;
        assert_eq!(verify["ok"], false, "{what}: {verify}");
        assert_eq!(verify["first_bad_id"], bad, "{what}: {verify}");
    }
}
