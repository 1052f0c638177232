//! Retries with an `Idempotency-Key` return the first result and change nothing; the same key
//! with a different request is refused.

use ballast_api::FileEntry;
use ballast_api::{Model, Version};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{err, ok, spawn_app};

#[tokio::test]
async fn retries_with_the_same_key_create_once() {
    let app = spawn_app().await;
    let body = json!({ "name": "idem/model", "description": "once" });
    let first = app
        .post("/v1/models", &body)
        .header("idempotency-key", "k-model")
        .send()
        .await
        .unwrap();
    let first: Value = ok(first, StatusCode::CREATED).await;
    let again = app
        .post("/v1/models", &body)
        .header("idempotency-key", "k-model")
        .send()
        .await
        .unwrap();
    let again: Value = ok(again, StatusCode::CREATED).await;
    assert_eq!(first, again);
    // Without the key, the same request is a real second attempt.
    let r = app.post("/v1/models", &body).send().await.unwrap();
    err(r, StatusCode::CONFLICT, "already_exists").await;
    // Same key, another body.
    let r = app
        .post("/v1/models", &json!({ "name": "idem/other" }))
        .header("idempotency-key", "k-model")
        .send()
        .await
        .unwrap();
    let e = err(r, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    assert_eq!(e["field"], "Idempotency-Key");
    let r = app.get("/v1/models/idem/other").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    // Versions: a repeated create returns the same draft; the next create gets N+1.
    let vbody =
        json!({ "metadata": { "description": "draft", "metrics": { "acc": 0.5 } }, "tags": { "k": "v" } });
    let path = "/v1/models/idem/model/versions";
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = app
            .post(path, &vbody)
            .header("idempotency-key", "k-version")
            .send()
            .await
            .unwrap();
        let v: Version = ok(r, StatusCode::CREATED).await;
        seen.push(v.version);
    }
    assert_eq!(seen, [1, 1, 1]);
    let r = app
        .post(path, &json!({ "metadata": { "description": "changed" } }))
        .header("idempotency-key", "k-version")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    // The same key on another route is another request too.
    let r = app
        .post("/v1/models", &json!({ "name": "idem/third" }))
        .header("idempotency-key", "k-version")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    let next = app.create_version("idem/model", &json!({})).await;
    assert_eq!(next.version, 2);
    let m: Model = app.get_ok("/v1/models/idem/model").await;
    assert_eq!(m.latest_version, 2);

    // Concurrent retries of one request also create exactly one version.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = app
            .post(path, &json!({ "tags": { "retry": "yes" } }))
            .header("idempotency-key", "k-burst");
        tasks.push(tokio::spawn(async move {
            ok::<Version>(req.send().await.unwrap(), StatusCode::CREATED).await
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap().version);
    }
    assert!(numbers.iter().all(|n| *n == 3), "{numbers:?}");
    let m: Model = app.get_ok("/v1/models/idem/model").await;
    assert_eq!(m.latest_version, 3);

    let trail = app.audit_all().await;
    let creates = trail.iter().filter(|e| e.action == "version.create").count();
    let models = trail.iter().filter(|e| e.action == "model.create").count();
    assert_eq!((models, creates), (1, 3));
}

#[tokio::test]
async fn upload_retries_are_checked_against_the_bytes() {
    let app = spawn_app().await;
    app.create_model("idem/files").await;
    app.create_version("idem/files", &json!({})).await;
    let path = "/v1/models/idem/files/versions/1/files/w.bin";
    let put = |body: &'static str| {
        app.req(Method::PUT, path)
            .header("idempotency-key", "k-upload")
            .body(body)
    };
    let first: FileEntry = ok(put("first bytes").send().await.unwrap(), StatusCode::CREATED).await;
    let again: FileEntry = ok(put("first bytes").send().await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(first, again);
    // The body is streamed, yet a retry with other bytes is still recognised as another request.
    let r = put("other bytes").send().await.unwrap();
    err(r, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    let v: Version = app.get_ok("/v1/models/idem/files/versions/1").await;
    assert_eq!(v.files, vec![first]);
    let puts = app
        .audit_all()
        .await
        .iter()
        .filter(|e| e.action == "version.file_put")
        .count();
    assert_eq!(puts, 1);
}
