//! Access control: the authorization matrix (every route of the OpenAPI document × every role,
//! no token, an expired and a revoked token), token lifecycle, the admin token written on first
//! start, lists filtered to what the caller may read, and `auth = off`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{create_token, ok, spawn_app, spawn_app_with, TestApp};

/// What a route needs, written down independently of the server's own table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    Public,
    Caller,
    /// A permission in the request's namespace (`acme` in this test).
    Ns(&'static str),
    /// A permission in every namespace.
    Global(&'static str),
    /// A permission in at least one namespace.
    Anywhere(&'static str),
}

fn expectation(method: &str, path: &str) -> Need {
    use Need::{Anywhere, Caller, Global, Ns, Public};
    let get = method == "get" || method == "head";
    if let Some(rest) = path.strip_prefix("/v1/models/{ns}/{model}") {
        if get {
            return Ns("read");
        }
        let last = rest.rsplit('/').next().unwrap_or("");
        return match (method, rest, last) {
            ("delete", "", _) => Ns("maintain"),
            (_, "/rollback" | "/versions/{n}/stage" | "/aliases/{alias}" | "/policy" | "/retention", _) => {
                Ns("maintain")
            }
            (_, _, "approve" | "reject") => Ns("review"),
            (_, _, "complete") => Ns("maintain"),
            _ => Ns("write"),
        };
    }
    match (method, path) {
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json") => Public,
        ("get", "/v1/whoami" | "/v1/models" | "/v1/transition-requests") => Caller,
        ("get" | "head", "/v1/blobs/sha256/{digest}") => Anywhere("write"),
        ("post", "/v1/models") => Ns("write"),
        ("post", "/v1/deployments") => Ns("maintain"),
        (
            "get",
            "/v1/audit"
            | "/v1/audit/verify"
            | "/v1/events"
            | "/v1/events/stream"
            | "/v1/deployments"
            | "/v1/routes"
            | "/v1/routing/snapshot"
            | "/v1/status",
        ) => Global("read"),
        (_, "/v1/deployments/{id}" | "/v1/routes/{name}") => Global("maintain"),
        ("get", "/v1/policies/{ns}" | "/v1/retention/{ns}") => Ns("read"),
        (_, "/v1/policies/{ns}" | "/v1/retention/{ns}") => Ns("maintain"),
        (_, p)
            if p.starts_with("/v1/webhooks")
                || p.starts_with("/v1/tokens")
                || p.starts_with("/v1/roles")
                || p == "/v1/gc"
                || p == "/v1/fsck" =>
        {
            Global("admin")
        }
        _ => panic!("no access expectation for {method} {path}: add one to this test"),
    }
}

/// Which permissions a role grants (the roles of the issue).
fn grants(role: &str, perm: &str) -> bool {
    match perm {
        "read" => true,
        "write" => matches!(role, "writer" | "maintainer" | "admin"),
        "review" => matches!(role, "reviewer" | "admin"),
        "maintain" => matches!(role, "maintainer" | "admin"),
        _ => role == "admin",
    }
}

/// A caller in the matrix: a token, the namespace its role is in, and its role.
struct Who {
    label: &'static str,
    token: Option<String>,
    ns: &'static str,
    role: &'static str,
}

fn concrete(path: &str, digest: &str) -> String {
    path.replace("{ns}", "acme")
        .replace("{model}", "bot")
        .replace("{n}", "1")
        .replace("{alias}", "champion")
        .replace("{stage}", "production")
        .replace("{path}", "weights.bin")
        .replace("{digest}", digest)
        .replace("{id}", "999999")
        .replace("{delivery}", "999999")
        .replace("{name}", "no-such-route")
        .replace("{principal}", "nobody")
        .replace("{namespace}", "acme")
        .replace("{role}", "reader")
}

fn body_for(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("get" | "head" | "delete", _) => None,
        ("post", "/v1/models") => Some(json!({ "name": "acme/new-model" })),
        ("post", "/v1/deployments") => {
            Some(json!({ "model": "acme/bot", "version": 1, "region": "r", "url": "http://127.0.0.1:1" }))
        }
        _ => Some(json!({})),
    }
}

async fn expired_token(app: &TestApp) -> String {
    let soon = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(700);
    let at = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let r = app
        .post(
            "/v1/tokens",
            &json!({ "principal": "short-lived", "expires_at": at, "roles": [{ "namespace": "*", "role": "admin" }] }),
        )
        .send()
        .await
        .unwrap();
    let v: Value = ok(r, StatusCode::CREATED).await;
    v["secret"].as_str().unwrap().to_owned()
}

async fn revoked_token(app: &TestApp) -> String {
    let r = app
        .post(
            "/v1/tokens",
            &json!({ "principal": "gone", "roles": [{ "namespace": "*", "role": "admin" }] }),
        )
        .send()
        .await
        .unwrap();
    let v: Value = ok(r, StatusCode::CREATED).await;
    let id = v["id"].as_u64().unwrap();
    let r = app.delete(&format!("/v1/tokens/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    v["secret"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn every_route_answers_401_403_or_proceeds_as_each_role_allows() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    app.create_model("other/thing").await;
    let n = app.sealed_version("acme/bot", b"matrix weights").await;
    assert_eq!(n, 1);
    let digest = crate::app::sha_hex(b"matrix weights");
    let base = app.base.clone();
    let admin = app.admin_token.clone();
    let mut who = Vec::new();
    for (label, ns, role) in [
        ("reader@acme", "acme", "reader"),
        ("writer@acme", "acme", "writer"),
        ("reviewer@acme", "acme", "reviewer"),
        ("maintainer@acme", "acme", "maintainer"),
        ("admin@acme", "acme", "admin"),
        ("maintainer@other", "other", "maintainer"),
        ("admin@*", "*", "admin"),
    ] {
        let principal = label.replace(['@', '*'], "-").trim_end_matches('-').to_owned();
        let token = create_token(&base, &admin, &principal, &[(ns, role)]).await;
        who.push(Who {
            label,
            token: Some(token),
            ns,
            role,
        });
    }
    let expired = expired_token(&app).await;
    let revoked = revoked_token(&app).await;
    // Wait until the short-lived token is refused (its expiry has passed and no cached lookup
    // still accepts it), with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::Client::new()
            .get(app.url("/v1/whoami"))
            .bearer_auth(&expired)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (label, token) in [
        ("no token", None),
        ("expired", Some(expired)),
        ("revoked", Some(revoked)),
    ] {
        who.push(Who {
            label,
            token,
            ns: "",
            role: "",
        });
    }

    let doc: Value = app.get_ok("/v1/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let need = expectation(method, path);
            let url = format!("{base}{}", concrete(path, &digest));
            for w in &who {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                if path == "/v1/events/stream" && w.token.is_some() && !w.role.is_empty() {
                    // A stream that is allowed stays open; its allowed case is checked elsewhere.
                    let allowed = match need {
                        Need::Global(p) => w.ns == "*" && grants(w.role, p),
                        _ => unreachable!(),
                    };
                    if allowed {
                        continue;
                    }
                }
                let mut rb = client.request(m, &url);
                if let Some(t) = &w.token {
                    rb = rb.bearer_auth(t);
                }
                if let Some(b) = body_for(method, path) {
                    rb = rb.json(&b);
                }
                let r = rb.send().await.unwrap();
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let expected_denial = match (need, &w.token, w.role) {
                    (Need::Public, _, _) => None,
                    (_, None, _) | (_, Some(_), "") => Some(StatusCode::UNAUTHORIZED),
                    (Need::Caller, _, _) => None,
                    (Need::Ns(p), _, role) => (!((w.ns == "acme" || w.ns == "*") && grants(role, p)))
                        .then_some(StatusCode::FORBIDDEN),
                    (Need::Global(p), _, role) => {
                        (!(w.ns == "*" && grants(role, p))).then_some(StatusCode::FORBIDDEN)
                    }
                    (Need::Anywhere(p), _, role) => (!grants(role, p)).then_some(StatusCode::FORBIDDEN),
                };
                checked += 1;
                match expected_denial {
                    Some(want) => {
                        let code = if want == StatusCode::FORBIDDEN {
                            "permission_denied"
                        } else {
                            "unauthenticated"
                        };
                        let code_ok = method == "head" || body["error"]["code"] == code;
                        if status != want || !code_ok {
                            failures.push(format!(
                                "{method} {path} as {}: want {want} {code}, got {status} {body}",
                                w.label
                            ));
                        }
                    }
                    None => {
                        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                            failures.push(format!(
                                "{method} {path} as {}: should be allowed, got {status} {body}",
                                w.label
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 500, "only {checked} checks ran");
}

#[tokio::test]
async fn the_first_start_writes_one_private_admin_token_and_restarts_keep_it() {
    let app = spawn_app().await;
    let file = app.data_dir().join("admin.token");
    let meta = std::fs::metadata(&file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let first = std::fs::read_to_string(&file).unwrap();
    assert!(first.trim().starts_with("blst_"));
    let app = app.restart().await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        first,
        "a restart keeps the token"
    );
    // The secret works, and is stored only as a hash: not in the database file.
    let me: Value = ok(
        reqwest::Client::new()
            .get(app.url("/v1/whoami"))
            .bearer_auth(first.trim())
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["principal"], "admin");
    assert_eq!(me["roles"][0]["role"], "admin");
    let db = std::fs::read(app.data_dir().join("ballast.db")).unwrap();
    let wal = std::fs::read(app.data_dir().join("ballast.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes
                .windows(first.trim().len())
                .any(|w| w == first.trim().as_bytes()),
            "the secret is stored in clear"
        );
    }
}

#[tokio::test]
async fn tokens_are_shown_once_expire_revoke_and_never_lock_out_the_last_admin() {
    let mut app = spawn_app().await;
    let created: Value = ok(
        app.post(
            "/v1/tokens",
            &json!({ "principal": "ci-bot", "description": "pipeline", "roles": [{ "namespace": "acme", "role": "writer" }] }),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    let listed: Value = app.get_ok("/v1/tokens").await;
    let text = listed.to_string();
    assert!(!text.contains(&secret) && !text.contains("secret"), "{text}");
    assert!(listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["principal"] == "ci-bot"));

    // The token acts as its principal; the actor header is ignored.
    let client = reqwest::Client::new();
    let r = client
        .post(app.url("/v1/models"))
        .bearer_auth(&secret)
        .header("x-ballast-actor", "someone-else")
        .json(&json!({ "name": "acme/by-bot" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let trail = app.audit_all().await;
    assert_eq!(trail.last().unwrap().actor, "ci-bot");
    // Audit list by actor and by time.
    let mine: Value = app.get_ok("/v1/audit?actor=ci-bot").await;
    assert_eq!(mine["entries"].as_array().unwrap().len(), 1);
    let future: Value = app.get_ok("/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert!(future["entries"].as_array().unwrap().is_empty());
    let past: Value = app.get_ok("/v1/audit?until=2000-01-01T00:00:00Z").await;
    assert!(past["entries"].as_array().unwrap().is_empty());
    let r = app.get("/v1/audit?since=yesterday").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Revoked: refused at once.
    let id = created["id"].as_u64().unwrap();
    let r = app.delete(&format!("/v1/tokens/{id}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = client
        .get(app.url("/v1/whoami"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Bad requests change nothing.
    for body in [
        json!({ "principal": "" }),
        json!({ "principal": "has space" }),
        json!({ "principal": "x", "expires_at": "2001-01-01T00:00:00Z" }),
        json!({ "principal": "x", "expires_at": "tomorrow" }),
        json!({ "principal": "x", "roles": [{ "namespace": "Bad NS", "role": "reader" }] }),
        json!({ "principal": "x", "roles": [{ "namespace": "acme", "role": "owner" }] }),
        json!({ "principal": "x", "bogus": 1 }),
    ] {
        let before = app.get_ok::<Value>("/v1/tokens").await;
        let r = app.post("/v1/tokens", &body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(app.get_ok::<Value>("/v1/tokens").await, before, "{body}");
    }

    // The last usable admin token and the last admin binding cannot go.
    let admin_only = spawn_app().await;
    let tokens: Value = admin_only.get_ok("/v1/tokens").await;
    assert_eq!(
        tokens["tokens"].as_array().unwrap().len(),
        2,
        "admin + the harness's tester"
    );
    let r = admin_only
        .delete("/v1/roles/tester/*/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "another admin remains");
    let admin_app_token = admin_only.admin_token.clone();
    let r = reqwest::Client::new()
        .delete(admin_only.url("/v1/roles/admin/*/admin"))
        .bearer_auth(&admin_app_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let r = reqwest::Client::new()
        .delete(admin_only.url("/v1/tokens/1"))
        .bearer_auth(&admin_app_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    app.stop().await;
}

/// The `name` of every item of the list `field` that `path` answers to `token` (expecting 200).
async fn names_seen(app: &TestApp, token: &str, path: &str, field: &str) -> Vec<String> {
    let r = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let v: Value = ok(r, StatusCode::OK).await;
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn callers_see_only_their_namespaces_and_denials_do_not_reveal_existence() {
    let app = spawn_app().await;
    for m in ["acme/a", "acme/b", "other/secret"] {
        app.create_model(m).await;
    }
    let reader = create_token(&app.base, &app.admin_token, "acme-reader", &[("acme", "reader")]).await;
    let c = reqwest::Client::new();
    let names = names_seen(&app, &reader, "/v1/models", "models").await;
    assert_eq!(names, ["acme/a", "acme/b"]);
    let mut answers = BTreeMap::new();
    for path in ["/v1/models/other/secret", "/v1/models/other/missing"] {
        let r = c.get(app.url(path)).bearer_auth(&reader).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap().to_owned();
        answers.insert(path, (status, msg));
    }
    let vals: Vec<_> = answers.values().collect();
    assert_eq!(vals[0], vals[1], "existing and missing models answer alike");
    assert_eq!(vals[0].0, StatusCode::FORBIDDEN);
    assert!(vals[0].1.contains("ballast role grant"), "{}", vals[0].1);
    let me: Value = ok(
        c.get(app.url("/v1/whoami"))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["principal"], "acme-reader");

    // MLflow routes answer in MLflow's format.
    let r = c
        .get(app.url("/api/2.0/mlflow/registered-models/get?name=other/secret"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error_code"],
        "PERMISSION_DENIED"
    );
    let r = c
        .post(app.url("/api/2.0/mlflow/registered-models/create"))
        .json(&json!({ "name": "Fraud" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error_code"], "UNAUTHENTICATED");
    let r = c
        .get(app.url("/api/2.0/mlflow/registered-models/get?name=acme/a"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let names = names_seen(
        &app,
        &reader,
        "/api/2.0/mlflow/registered-models/search",
        "registered_models",
    )
    .await;
    assert_eq!(names, ["acme/a", "acme/b"], "MLflow searches are filtered too");
}

#[tokio::test]
async fn with_auth_off_there_is_no_token_and_the_actor_header_names_the_actor() {
    let app = spawn_app_with(|c| c.auth = ballast_server::auth::AuthMode::Off).await;
    assert!(!app.data_dir().join("admin.token").exists());
    let c = reqwest::Client::new();
    let r = c
        .post(app.url("/v1/models"))
        .header("x-ballast-actor", "dana")
        .json(&json!({ "name": "lab/m" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let trail = app.audit_all().await;
    assert_eq!(trail.last().unwrap().actor, "dana");
    let me: Value = ok(c.get(app.url("/v1/whoami")).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(me["auth"], false);
}
