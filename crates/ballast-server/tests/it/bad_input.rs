//! Bad input gets a clear JSON error with the right status and code, and changes nothing:
//! the listings, the audit trail and the blob directory are identical before and after.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{data, err, eventually, sha_hex, spawn_app, spawn_app_with, TestApp};

/// Everything a bad request could have changed.
async fn snapshot(app: &TestApp) -> (Value, Value, Value, usize, Vec<String>, Vec<String>) {
    let models: Value = app.get_ok("/v1/models?limit=1000").await;
    let v1: Value = app.get_ok("/v1/models/acme/bot/versions?limit=1000").await;
    let aliases: Value = app.get_ok("/v1/models/acme/bot").await;
    let audit = app.audit_all().await.len();
    (
        models,
        v1,
        aliases,
        audit,
        app.files_under("sha256"),
        app.files_under("tmp"),
    )
}

struct Case {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    status: StatusCode,
    code: &'static str,
}

fn case(method: Method, path: &str, status: StatusCode, code: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body: None,
        headers: Vec::new(),
        status,
        code,
    }
}

impl Case {
    fn json(mut self, v: &Value) -> Self {
        self.body = Some(serde_json::to_vec(v).unwrap());
        self.headers.push(("content-type", "application/json".into()));
        self
    }
    fn raw(mut self, b: &[u8]) -> Self {
        self.body = Some(b.to_vec());
        self
    }
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_owned()));
        self
    }
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;

#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    use Method as M;
    let v = "/v1/models/acme/bot/versions";
    let sealed_hex = sha_hex(b"sealed");
    let mut c = vec![
        // Model names.
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "Acme/bot" })),
        case(M::POST, "/v1/models", BAD, "invalid_name")
            .json(&json!({ "name": format!("acme/{}", "a".repeat(65)) })),
        case(M::POST, "/v1/models", BAD, "invalid_name")
            .json(&json!({ "name": format!("{}/bot", "a".repeat(65)) })),
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "acme" })),
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "acme/.." })),
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "../bot" })),
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "acme/b/c" })),
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "" })),
        case(M::POST, "/v1/models", BAD, "invalid_name").json(&json!({ "name": "acme/bot\u{0}" })),
        case(M::POST, "/v1/models", BAD, "invalid_name")
            .json(&json!({ "name": "acme/x", "tags": { "bad key": "v" } })),
        case(M::POST, "/v1/models", StatusCode::CONFLICT, "already_exists")
            .json(&json!({ "name": "acme/bot" })),
        case(M::GET, "/v1/models/Acme/bot", BAD, "invalid_name"),
        case(
            M::GET,
            &format!("/v1/models/acme/{}", "b".repeat(65)),
            BAD,
            "invalid_name",
        ),
        case(M::POST, "/v1/models/acme/BOT/versions", BAD, "invalid_name").json(&json!({})),
        case(M::GET, "/v1/models?namespace=Acme", BAD, "invalid_name"),
        case(
            M::GET,
            "/v1/models/acme/missing",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        case(
            M::POST,
            "/v1/models/acme/missing/versions",
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .json(&json!({})),
        // Aliases.
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/Champion",
            BAD,
            "invalid_name",
        )
        .json(&json!({ "version": 2 })),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/production",
            BAD,
            "invalid_name",
        )
        .json(&json!({ "version": 2 })),
        case(M::PUT, "/v1/models/acme/bot/aliases/1st", BAD, "invalid_name").json(&json!({ "version": 2 })),
        case(M::PUT, "/v1/models/acme/bot/aliases/a.b", BAD, "invalid_name").json(&json!({ "version": 2 })),
        case(
            M::PUT,
            &format!("/v1/models/acme/bot/aliases/{}", "a".repeat(65)),
            BAD,
            "invalid_name",
        )
        .json(&json!({ "version": 2 })),
        case(M::PUT, "/v1/models/acme/bot/aliases/x%20y", BAD, "invalid_name").json(&json!({ "version": 2 })),
        case(
            M::GET,
            "/v1/models/acme/bot/aliases/Champion",
            BAD,
            "invalid_name",
        ),
        case(
            M::DELETE,
            "/v1/models/acme/bot/aliases/Champion",
            BAD,
            "invalid_name",
        ),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/champion",
            StatusCode::CONFLICT,
            "conflict",
        )
        .json(&json!({ "version": 1 })),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/champion",
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .json(&json!({ "version": 99 })),
        // Artifact paths (percent-encoded so no client normalises them away).
        case(M::PUT, &format!("{v}/1/files/a%2F..%2Fb"), BAD, "invalid_path").raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/..%2Fescape"), BAD, "invalid_path").raw(b"x"),
        case(
            M::PUT,
            &format!("{v}/1/files/%2Fetc%2Fpasswd"),
            BAD,
            "invalid_path",
        )
        .raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/a%00b"), BAD, "invalid_path").raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/a%5Cb"), BAD, "invalid_path").raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/a%2F%2Fb"), BAD, "invalid_path").raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/a%2F.%2Fb"), BAD, "invalid_path").raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/a%0Ab"), BAD, "invalid_path").raw(b"x"),
        case(
            M::PUT,
            &format!("{v}/1/files/{}", "p".repeat(1025)),
            BAD,
            "invalid_path",
        )
        .raw(b"x"),
        case(M::GET, &format!("{v}/1/files/a%2F..%2Fb"), BAD, "invalid_path"),
        case(M::PUT, &format!("{v}/1/files/dir/"), BAD, "invalid_path").raw(b"x"),
        case(M::PUT, &format!("{v}/1/files/a%FF"), BAD, "invalid_argument").raw(b"x"),
        case(
            M::PUT,
            &format!("{v}/1/files/"),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .raw(b"x"),
        case(M::GET, "/v1/models/acme/bot%FF", BAD, "invalid_argument"),
        case(M::DELETE, &format!("{v}/1/files/a%2F..%2Fb"), BAD, "invalid_path"),
        case(M::POST, &format!("{v}/1/files"), BAD, "invalid_path")
            .json(&json!({ "path": "../x", "sha256": sealed_hex })),
        case(M::POST, &format!("{v}/1/files"), BAD, "invalid_path")
            .json(&json!({ "path": "/abs", "sha256": sealed_hex })),
        case(M::POST, &format!("{v}/1/files"), BAD, "invalid_argument")
            .json(&json!({ "path": "ok.bin", "sha256": "xyz" })),
        case(
            M::POST,
            &format!("{v}/1/files"),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .json(&json!({ "path": "ok.bin", "sha256": sha_hex(b"never stored") })),
        case(
            M::GET,
            &format!("{v}/1/files/missing.bin"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        case(
            M::DELETE,
            &format!("{v}/1/files/missing.bin"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        // Upload headers.
        case(M::PUT, &format!("{v}/1/files/x.bin"), BAD, "invalid_argument")
            .raw(b"x")
            .header("x-ballast-sha256", "zz"),
        case(
            M::PUT,
            &format!("{v}/1/files/x.bin"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "digest_mismatch",
        )
        .raw(b"these bytes")
        .header("x-ballast-sha256", &sha_hex(b"other bytes")),
        case(
            M::PUT,
            &format!("{v}/2/files/x.bin"),
            StatusCode::CONFLICT,
            "conflict",
        )
        .raw(b"x"),
        // Malformed JSON, unknown fields, wrong types.
        case(M::POST, "/v1/models", BAD, "invalid_json")
            .raw(b"{")
            .header("content-type", "application/json"),
        case(M::POST, "/v1/models", BAD, "invalid_json").raw(b"[]"),
        case(M::POST, "/v1/models", BAD, "invalid_json").raw(b"null"),
        case(M::POST, "/v1/models", BAD, "invalid_json").raw(b"{\"name\":\"acme/x\"} trailing"),
        case(M::POST, "/v1/models", BAD, "invalid_json").raw(b"{\"name\":\"acme/x\"}{}"),
        case(M::POST, "/v1/models", BAD, "invalid_json").raw(&[0xff, 0xfe, 0x00]),
        case(M::POST, "/v1/models", BAD, "invalid_json").json(&json!({ "name": 5 })),
        case(M::POST, "/v1/models", BAD, "invalid_json").json(&json!({ "description": "no name" })),
        case(M::POST, "/v1/models", BAD, "invalid_json")
            .json(&json!({ "name": "acme/x", "tags": { "k": 1 } })),
        case(M::POST, "/v1/models", BAD, "invalid_argument")
            .raw(b"{\"name\":\"acme/x\"}")
            .header("content-type", "text/plain"),
        case(M::POST, v, BAD, "invalid_json").json(&json!({ "metadata": { "metrics": { "acc": "high" } } })),
        case(M::POST, v, BAD, "invalid_json").json(&json!({ "metadata": { "descr": "typo" } })),
        case(M::POST, v, BAD, "invalid_json")
            .json(&json!({ "metadata": { "resources": { "gpu_count": -1 } } })),
        case(M::POST, v, BAD, "invalid_json")
            .json(&json!({ "metadata": { "lineage": { "parent_version": "one" } } })),
        case(M::POST, v, BAD, "invalid_argument")
            .json(&json!({ "metadata": { "lineage": { "parent_version": 7 } } })),
        case(M::POST, v, BAD, "invalid_argument").json(&json!({ "metadata": { "metrics": { "": 1.0 } } })),
        case(M::POST, v, BAD, "invalid_argument")
            .json(&json!({ "metadata": { "description": "d".repeat(65 * 1024) } })),
        case(M::POST, v, BAD, "invalid_name").json(&json!({ "tags": { "": "empty key" } })),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/champion",
            BAD,
            "invalid_json",
        )
        .json(&json!({ "version": "two" })),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/champion",
            BAD,
            "invalid_json",
        )
        .json(&json!({ "version": -1 })),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/champion",
            BAD,
            "invalid_json",
        )
        .json(&json!({})),
        case(M::POST, &format!("{v}/2/stage"), BAD, "invalid_json").json(&json!({ "stage": "prod" })),
        case(M::POST, &format!("{v}/2/stage"), BAD, "invalid_json")
            .json(&json!({ "stage": "staging", "why": "x" })),
        case(M::POST, &format!("{v}/1/seal"), BAD, "invalid_argument")
            .json(&json!({ "expected_digest": "abc" })),
        case(M::PATCH, "/v1/models/acme/bot", BAD, "invalid_json").json(&json!({ "set_tags": ["a"] })),
        // Version numbers.
        case(M::GET, &format!("{v}/0"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}/-1"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}/abc"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}/1.5"), BAD, "invalid_argument"),
        case(
            M::GET,
            &format!("{v}/99999999999999999999999"),
            BAD,
            "invalid_argument",
        ),
        case(
            M::GET,
            &format!("{v}/18446744073709551615"),
            BAD,
            "invalid_argument",
        ),
        case(
            M::GET,
            &format!("{v}/9223372036854775808"),
            BAD,
            "invalid_argument",
        ),
        case(
            M::GET,
            &format!("{v}/9223372036854775807"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        case(M::GET, &format!("{v}/99"), StatusCode::NOT_FOUND, "not_found"),
        case(M::POST, &format!("{v}/0/seal"), BAD, "invalid_argument").json(&json!({})),
        case(M::PUT, &format!("{v}/-1/files/a.bin"), BAD, "invalid_argument").raw(b"x"),
        // Query parameters.
        case(M::GET, "/v1/models?bogus=1", BAD, "invalid_argument"),
        case(M::GET, "/v1/models?limit=0", BAD, "invalid_argument"),
        case(M::GET, "/v1/models?limit=1001", BAD, "invalid_argument"),
        case(M::GET, "/v1/models?limit=ten", BAD, "invalid_argument"),
        case(M::GET, "/v1/models?cursor=not-a-cursor", BAD, "invalid_argument"),
        case(M::GET, "/v1/models?cursor=W10", BAD, "invalid_argument"),
        case(M::GET, "/v1/models?tag=a%20b", BAD, "invalid_name"),
        case(M::GET, &format!("{v}?sort=number"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}?order_by=size"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}?order_by=metric:"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}?order=up"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}?state=open"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}?stage=prod"), BAD, "invalid_argument"),
        case(M::GET, &format!("{v}?metric=accuracy"), BAD, "invalid_argument"),
        case(
            M::GET,
            &format!("{v}?metric=accuracy%3E%3Dhigh"),
            BAD,
            "invalid_argument",
        ),
        case(M::GET, &format!("{v}?metric=%3E%3D1"), BAD, "invalid_argument"),
        case(
            M::GET,
            &format!("{v}?metric=accuracy%3E%3Dinf"),
            BAD,
            "invalid_argument",
        ),
        case(M::GET, &format!("{v}?cursor=%%%"), BAD, "invalid_argument"),
        case(M::GET, "/v1/audit?after=x", BAD, "invalid_argument"),
        case(M::GET, "/v1/audit?who=me", BAD, "invalid_argument"),
        case(M::GET, "/v1/models/acme/bot/stages/prod", BAD, "invalid_argument"),
        case(M::GET, "/v1/blobs/sha256/nothex", BAD, "invalid_argument"),
        // Preconditions.
        case(M::PATCH, "/v1/models/acme/bot", BAD, "invalid_argument")
            .json(&json!({}))
            .header("if-match", "abc"),
        case(M::PATCH, "/v1/models/acme/bot", BAD, "invalid_argument")
            .json(&json!({}))
            .header("if-match", "\"-1\""),
        case(M::PATCH, "/v1/models/acme/bot", BAD, "invalid_argument")
            .json(&json!({}))
            .header("if-match", "W/\"x\""),
        case(M::PATCH, "/v1/models/acme/bot", BAD, "invalid_argument")
            .json(&json!({}))
            .header("if-none-match", "\"3\""),
        case(
            M::PATCH,
            "/v1/models/acme/bot",
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        )
        .json(&json!({ "description": "x" }))
        .header("if-match", "\"999\""),
        case(
            M::DELETE,
            "/v1/models/acme/bot",
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        )
        .header("if-match", "\"999\""),
        case(
            M::POST,
            &format!("{v}/2/stage"),
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        )
        .json(&json!({ "stage": "staging" }))
        .header("if-match", "\"999\""),
        case(
            M::PUT,
            "/v1/models/acme/bot/aliases/newbie",
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        )
        .json(&json!({ "version": 2 }))
        .header("if-match", "\"1\""),
        // Identity headers.
        case(M::POST, "/v1/models", StatusCode::UNAUTHORIZED, "unauthenticated")
            .json(&json!({ "name": "acme/x" }))
            .header("authorization", "Bearer blst_not-a-token"),
        case(M::POST, "/v1/models", StatusCode::UNAUTHORIZED, "unauthenticated")
            .json(&json!({ "name": "acme/x" }))
            .header("authorization", "Basic dXNlcjpwYXNz"),
        case(M::POST, "/v1/models", BAD, "invalid_argument")
            .json(&json!({ "name": "acme/x" }))
            .header("idempotency-key", &"k".repeat(300)),
        // Stage transitions.
        case(
            M::POST,
            &format!("{v}/2/stage"),
            StatusCode::CONFLICT,
            "invalid_transition",
        )
        .json(&json!({ "stage": "production" })),
        case(
            M::POST,
            &format!("{v}/2/stage"),
            StatusCode::CONFLICT,
            "invalid_transition",
        )
        .json(&json!({ "stage": "development" })),
        case(M::POST, &format!("{v}/1/stage"), StatusCode::CONFLICT, "conflict")
            .json(&json!({ "stage": "staging" })),
        case(
            M::POST,
            &format!("{v}/1/stage"),
            StatusCode::CONFLICT,
            "invalid_transition",
        )
        .json(&json!({ "stage": "production" })),
        case(
            M::POST,
            &format!("{v}/99/stage"),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .json(&json!({ "stage": "staging" })),
        case(
            M::POST,
            "/v1/models/acme/bot/rollback",
            StatusCode::CONFLICT,
            "conflict",
        )
        .json(&json!({})),
        case(M::POST, &format!("{v}/2/seal"), StatusCode::CONFLICT, "conflict").json(&json!({})),
        case(M::PATCH, &format!("{v}/2"), StatusCode::CONFLICT, "conflict").json(&json!({ "metadata": {} })),
        // Unknown routes and methods.
        case(M::GET, "/v1/nope", StatusCode::NOT_FOUND, "not_found"),
        case(M::GET, "/v2/models", StatusCode::NOT_FOUND, "not_found"),
        case(M::GET, "/", StatusCode::NOT_FOUND, "not_found"),
        case(M::GET, "/v1/models/acme", StatusCode::NOT_FOUND, "not_found"),
        case(
            M::GET,
            "/v1/models/acme/bot/versions/1/nope",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        case(
            M::POST,
            "/v1/models/acme/bot/versions/1/files/a/b",
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_argument",
        )
        .raw(b"x"),
        case(
            M::DELETE,
            "/v1/models",
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_argument",
        ),
    ];
    c.push(case(
        M::GET,
        &format!("/v1/blobs/sha256/{}", "A".repeat(63)),
        BAD,
        "invalid_argument",
    ));
    c
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    let draft = app.create_version("acme/bot", &json!({})).await.version;
    app.upload("acme/bot", draft, "a.bin", b"draft bytes").await;
    let sealed = app.sealed_version("acme/bot", b"sealed").await;
    assert_eq!((draft, sealed), (1, 2));
    app.put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": 2 }))
        .send()
        .await
        .unwrap();
    let before = snapshot(&app).await;

    for (i, c) in cases().into_iter().enumerate() {
        let mut rb = app.client.request(c.method.clone(), app.url(&c.path));
        if !c.headers.iter().any(|(k, _)| *k == "x-ballast-actor") {
            rb = rb.header("x-ballast-actor", &app.actor);
        }
        for (k, v) in &c.headers {
            rb = rb.header(*k, v);
        }
        if let Some(b) = &c.body {
            rb = rb.body(b.clone());
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", c.method, c.path));
        let what = format!("case {i}: {} {}", c.method, c.path);
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(
            (status, text.contains(c.code)),
            (c.status, true),
            "{what}: {text}"
        );
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!(body["error"]["code"], c.code, "{what}: {text}");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }

    // The field at fault is named.
    let r = app
        .post("/v1/models", &json!({ "name": "acme/x", "bogus": 1 }))
        .send()
        .await
        .unwrap();
    let e = err(r, BAD, "invalid_json").await;
    assert_eq!(e["field"], "bogus");
    let r = app.get("/v1/models?bogus=1").send().await.unwrap();
    assert_eq!(err(r, BAD, "invalid_argument").await["field"], "bogus");
    let r = app
        .post("/v1/models", &json!({ "name": "Acme/bot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r, BAD, "invalid_name").await["field"], "namespace");
    let r = app
        .req(Method::PUT, "/v1/models/acme/bot/versions/1/files/x.bin")
        .header("x-ballast-sha256", sha_hex(b"other"))
        .body("these bytes")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch").await;
    let r = app
        .get(&format!("/v1/blobs/sha256/{}", sha_hex(b"these bytes")))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    // HEAD of something missing answers 404 without a body.
    let r = app
        .req(Method::HEAD, "/v1/models/acme/bot/versions/1/files/missing.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let after = snapshot(&app).await;
    assert_eq!(before, after);
    assert!(after.5.is_empty(), "temporary files left: {:?}", after.5);
}

/// Sends a request head announcing `announced` bytes, then `sent` bytes, then half-closes.
/// Returns what the server answered (possibly nothing).
async fn truncated_put(app: &TestApp, path: &str, announced: usize, sent: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let token = &app.token;
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-length: {announced}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(sent).await.unwrap();
    s.flush().await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn truncated_upload_stores_nothing() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    app.create_version("acme/bot", &json!({})).await;
    let before = snapshot(&app).await;
    let bytes = data(3 * 1024 * 1024, 5);
    for (announced, sent) in [(100_000, 1_000), (bytes.len() + 1, bytes.len()), (10, 0)] {
        let answer = truncated_put(
            &app,
            "/v1/models/acme/bot/versions/1/files/t.bin",
            announced,
            &bytes[..sent],
        )
        .await;
        // The client half-closed its side: the server still answers on the other half.
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{announced}/{sent}: {answer:?}"
        );
        assert!(answer.contains("\"code\":\"incomplete_upload\""), "{answer}");
        // The temporary file is removed before the answer; poll anyway in case of a late writer.
        eventually(Duration::from_secs(10), "no temporary upload files", || async {
            app.files_under("tmp").is_empty()
        })
        .await;
        let r = app
            .get(&format!("/v1/blobs/sha256/{}", sha_hex(&bytes[..sent])))
            .send()
            .await
            .unwrap();
        err(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn oversized_json_is_refused() {
    let app = spawn_app_with(|c| c.max_json_bytes = 4096).await;
    app.create_model("acme/bot").await;
    let before = app.audit_all().await.len();
    let big = json!({ "name": "acme/big", "description": "x".repeat(8000) });
    let r = app.post("/v1/models", &big).send().await.unwrap();
    err(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let big = json!({ "metadata": { "model_card": "y".repeat(100_000) } });
    let r = app
        .post("/v1/models/acme/bot/versions", &big)
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let r = app.get("/v1/models/acme/big").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.audit_all().await.len(), before);
    // Just under the limit is fine.
    let ok = json!({ "name": "acme/fits", "description": "z".repeat(3000) });
    let r = app.post("/v1/models", &ok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Uploads have their own limit, announced or not.
    let app = spawn_app_with(|c| c.max_upload_bytes = 1000).await;
    app.create_model("acme/bot").await;
    app.create_version("acme/bot", &json!({})).await;
    let r = app
        .req(Method::PUT, "/v1/models/acme/bot/versions/1/files/big.bin")
        .body(vec![1u8; 5000])
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..5).map(|_| Ok(vec![2u8; 400])).collect();
    let r = app
        .req(Method::PUT, "/v1/models/acme/bot/versions/1/files/big.bin")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let v: ballast_api::Version = app.get_ok("/v1/models/acme/bot/versions/1").await;
    assert!(v.files.is_empty());
    assert!(app.files_under("sha256").is_empty());
    assert!(app.files_under("tmp").is_empty());
}
