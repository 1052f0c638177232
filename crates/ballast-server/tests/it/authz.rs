//! Access control: the authorization matrices (every route of the OpenAPI document, and every
//! MLflow route under both prefixes, × every role, no token, an expired and a revoked token),
//! token lifecycle, the admin token written on first start, lists filtered to what the caller
//! may read, and `auth = off`.

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

/// Waits until a short-lived token is refused (its expiry has passed and no cached lookup still
/// accepts it), with a deadline.
async fn wait_until_refused(app: &TestApp, token: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::Client::new()
            .get(app.url("/v1/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    wait_until_refused(&app, &expired).await;
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

/// What an MLflow request needs, written down independently of the server's table.
#[derive(Debug, Clone)]
enum MlNeed {
    /// Any valid token (an MLflow route this server does not serve).
    Caller,
    /// A permission in at least one namespace (searches, filtered to what the caller reads).
    Anywhere(&'static str),
    /// Every one of these permissions, each in its namespace.
    All(Vec<(&'static str, &'static str)>),
}

/// One MLflow request of the matrix: method, path (query included), JSON body, and its need.
struct MlCase {
    method: &'static str,
    path: String,
    body: Option<Value>,
    need: MlNeed,
}

/// The MLflow default namespace of the test server.
const ML_NS: &str = "mlflow";

/// Every MLflow route under `prefix` (`/api/2.0` or `/ajax-api/2.0`), once for a model of the
/// default namespace and once for one in `acme`, plus the requests that touch two namespaces.
#[allow(clippy::too_many_lines)]
fn mlflow_cases(prefix: &str) -> Vec<MlCase> {
    use MlNeed::{All, Anywhere, Caller};
    let mut out = Vec::new();
    let mut add = |method: &'static str, path: String, body: Option<Value>, need: MlNeed| {
        out.push(MlCase {
            method,
            path,
            body,
            need,
        });
    };
    let ml = format!("{prefix}/mlflow");
    let rm = format!("{ml}/registered-models");
    let mv = format!("{ml}/model-versions");
    // (MLflow name, its namespace, another name in the same namespace)
    for (name, ns, sibling) in [("Fraud", ML_NS, "Fraud 2"), ("acme/bot", "acme", "Acme/Bot 2")] {
        let q = format!("name={}", name.replace(' ', "%20"));
        let one = |perm: &'static str| All(vec![(perm, ns)]);
        add(
            "post",
            format!("{rm}/create"),
            Some(json!({ "name": sibling })),
            one("write"),
        );
        add("get", format!("{rm}/get?{q}"), None, one("read"));
        add(
            "post",
            format!("{rm}/rename"),
            Some(json!({ "name": name, "new_name": sibling })),
            one("write"),
        );
        add(
            "patch",
            format!("{rm}/update"),
            Some(json!({ "name": name, "description": "d" })),
            one("write"),
        );
        add("get", format!("{rm}/get-latest-versions?{q}"), None, one("read"));
        add(
            "post",
            format!("{rm}/get-latest-versions"),
            Some(json!({ "name": name })),
            one("read"),
        );
        add(
            "post",
            format!("{rm}/set-tag"),
            Some(json!({ "name": name, "key": "k", "value": "v" })),
            one("write"),
        );
        add(
            "delete",
            format!("{rm}/delete-tag"),
            Some(json!({ "name": name, "key": "k" })),
            one("write"),
        );
        add("get", format!("{rm}/alias?{q}&alias=champion"), None, one("read"));
        add(
            "post",
            format!("{rm}/alias"),
            Some(json!({ "name": name, "alias": "champion", "version": "1" })),
            one("maintain"),
        );
        add(
            "delete",
            format!("{rm}/alias"),
            Some(json!({ "name": name, "alias": "champion" })),
            one("maintain"),
        );
        add(
            "post",
            format!("{mv}/create"),
            Some(json!({ "name": name, "source": "mlflow-artifacts:/0/r/artifacts" })),
            one("write"),
        );
        add("get", format!("{mv}/get?{q}&version=1"), None, one("read"));
        add(
            "patch",
            format!("{mv}/update"),
            Some(json!({ "name": name, "version": "1", "description": "d" })),
            one("write"),
        );
        add(
            "post",
            format!("{mv}/transition-stage"),
            Some(json!({ "name": name, "version": "1", "stage": "Archived" })),
            one("maintain"),
        );
        add(
            "get",
            format!("{mv}/get-download-uri?{q}&version=1"),
            None,
            one("read"),
        );
        add(
            "post",
            format!("{mv}/set-tag"),
            Some(json!({ "name": name, "version": "1", "key": "k", "value": "v" })),
            one("write"),
        );
        add(
            "delete",
            format!("{mv}/delete-tag"),
            Some(json!({ "name": name, "version": "1", "key": "k" })),
            one("write"),
        );
        // Destructive last, on names nobody else uses (the answer may be 404: what matters is
        // that the right callers get past authorization).
        let gone = if ns == ML_NS { "Gone" } else { "acme/gone" };
        add(
            "delete",
            format!("{mv}/delete"),
            Some(json!({ "name": gone, "version": "1" })),
            one("maintain"),
        );
        add(
            "delete",
            format!("{rm}/delete"),
            Some(json!({ "name": gone })),
            one("maintain"),
        );
    }
    // Two namespaces: a rename into another one, a version copied from another one's version.
    add(
        "post",
        format!("{rm}/rename"),
        Some(json!({ "name": "Fraud", "new_name": "Acme/Fraud" })),
        All(vec![("write", ML_NS), ("write", "acme")]),
    );
    add(
        "post",
        format!("{mv}/create"),
        Some(json!({ "name": "Fraud", "source": "mlflow-artifacts:/ballast-versions/acme/bot/1" })),
        All(vec![("write", ML_NS), ("read", "acme")]),
    );
    add(
        "post",
        format!("{mv}/create"),
        Some(json!({ "name": "Fraud", "source": "mlflow-artifacts://h/ballast-versions/acme/ghost/1" })),
        All(vec![("write", ML_NS), ("read", "acme")]),
    );
    // Searches span namespaces (filtered to what the caller reads).
    add("get", format!("{rm}/search"), None, Anywhere("read"));
    add(
        "get",
        format!("{mv}/search?filter=name%3D%27acme%2Fbot%27"),
        None,
        Anywhere("read"),
    );
    // Tracking objects live in the default namespace.
    let d = |perm: &'static str| All(vec![(perm, ML_NS)]);
    let body = Some(json!({}));
    for (method, tail, need) in [
        ("post", "experiments/create", d("write")),
        ("get", "experiments/get?experiment_id=0", d("read")),
        (
            "get",
            "experiments/get-by-name?experiment_name=Default",
            d("read"),
        ),
        ("get", "experiments/search", d("read")),
        ("post", "experiments/search", d("read")),
        ("post", "runs/create", d("write")),
        ("get", "runs/get?run_id=none", d("read")),
        ("post", "runs/update", d("write")),
        ("post", "runs/log-batch", d("write")),
        ("post", "runs/log-metric", d("write")),
        ("post", "runs/log-parameter", d("write")),
        ("post", "runs/set-tag", d("write")),
        ("post", "runs/log-inputs", d("write")),
        ("post", "runs/outputs", d("write")),
        ("get", "runs/search", d("read")),
        ("post", "runs/search", d("read")),
        ("get", "metrics/get-history?run_id=none&metric_key=m", d("read")),
        ("post", "logged-models", d("write")),
        ("post", "logged-models/search", d("read")),
        ("get", "logged-models/m-none", d("read")),
        ("patch", "logged-models/m-none", d("write")),
        ("patch", "logged-models/m-none/tags", d("write")),
        ("delete", "logged-models/m-none/tags/k", d("write")),
        ("post", "logged-models/m-none/params", d("write")),
        ("get", "no/such/route", Caller),
    ] {
        let b = (method != "get").then(|| body.clone()).flatten();
        add(method, format!("{ml}/{tail}"), b, need);
    }
    // The artifacts proxy: its own files in the default namespace, registered versions in
    // theirs (whether or not the version exists).
    let art = format!("{prefix}/mlflow-artifacts");
    for (path, ns) in [
        ("0/r/artifacts/a.txt", ML_NS),
        ("ballast-versions/acme/bot/1/model.bin", "acme"),
        ("ballast-versions/acme/ghost/1/model.bin", "acme"),
    ] {
        let one = |perm: &'static str| All(vec![(perm, ns)]);
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        add("get", format!("{art}/artifacts?path={dir}"), None, one("read"));
        add("get", format!("{art}/artifacts/{path}"), None, one("read"));
        add("put", format!("{art}/artifacts/{path}"), None, one("write"));
        add(
            "delete",
            format!("{art}/artifacts/{path}.gone"),
            None,
            one("write"),
        );
    }
    for op in ["create", "complete", "abort"] {
        add(
            "post",
            format!("{art}/mpu/{op}/x.bin"),
            Some(json!({})),
            d("write"),
        );
    }
    out
}

/// A caller of the MLflow matrix: its token and roles (`valid`: false for no, expired and
/// revoked tokens).
struct Holder {
    label: String,
    token: Option<String>,
    roles: Vec<(&'static str, &'static str)>,
    valid: bool,
}

impl Holder {
    fn may(&self, perm: &str, ns: &str) -> bool {
        self.roles
            .iter()
            .any(|(n, r)| (*n == ns || *n == "*") && grants(r, perm))
    }

    /// The refusal `need` earns this caller, if any.
    fn refusal(&self, need: &MlNeed) -> Option<(StatusCode, &'static str)> {
        if !self.valid {
            return Some((StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"));
        }
        let allowed = match need {
            MlNeed::Caller => true,
            MlNeed::Anywhere(p) => self.roles.iter().any(|(_, r)| grants(r, p)),
            MlNeed::All(needs) => needs.iter().all(|(p, ns)| self.may(p, ns)),
        };
        (!allowed).then_some((StatusCode::FORBIDDEN, "PERMISSION_DENIED"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mlflow_route_answers_401_403_or_proceeds_as_each_role_allows() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    assert_eq!(app.sealed_version("acme/bot", b"acme weights").await, 1);
    let r = app
        .post(
            "/api/2.0/mlflow/registered-models/create",
            &json!({ "name": "Fraud" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .req(
            Method::PUT,
            "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/a.txt",
        )
        .body("a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post(
            "/api/2.0/mlflow/model-versions/create",
            &json!({ "name": "Fraud", "source": "mlflow-artifacts:/0/r/artifacts" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let base = app.base.clone();
    let admin = app.admin_token.clone();
    let mut holders = Vec::new();
    for ns in [ML_NS, "acme"] {
        for role in ["reader", "writer", "reviewer", "maintainer", "admin"] {
            let label = format!("{role}@{ns}");
            let principal = format!("{role}-{ns}");
            holders.push(Holder {
                label,
                token: Some(create_token(&base, &admin, &principal, &[(ns, role)]).await),
                roles: vec![(ns, role)],
                valid: true,
            });
        }
    }
    let two = vec![(ML_NS, "writer"), ("acme", "reader")];
    holders.push(Holder {
        label: "writer@mlflow+reader@acme".into(),
        token: Some(create_token(&base, &admin, "copier", &two).await),
        roles: two,
        valid: true,
    });
    holders.push(Holder {
        label: "admin@*".into(),
        token: Some(create_token(&base, &admin, "root", &[("*", "admin")]).await),
        roles: vec![("*", "admin")],
        valid: true,
    });
    let expired = expired_token(&app).await;
    let revoked = revoked_token(&app).await;
    wait_until_refused(&app, &expired).await;
    for (label, token) in [
        ("no token", None),
        ("expired", Some(expired)),
        ("revoked", Some(revoked)),
    ] {
        holders.push(Holder {
            label: label.into(),
            token,
            roles: Vec::new(),
            valid: false,
        });
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for prefix in ["/api/2.0", "/ajax-api/2.0"] {
        for case in mlflow_cases(prefix) {
            for h in &holders {
                let m = Method::from_bytes(case.method.to_uppercase().as_bytes()).unwrap();
                let mut rb = client.request(m, format!("{base}{}", case.path));
                if let Some(t) = &h.token {
                    rb = rb.bearer_auth(t);
                }
                if let Some(b) = &case.body {
                    rb = rb.json(b);
                } else if case.method == "put" {
                    rb = rb.body("x");
                }
                let r = rb.send().await.unwrap();
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                checked += 1;
                let what = format!(
                    "{} {} {}",
                    case.method,
                    case.path,
                    case.body.clone().unwrap_or_default()
                );
                match h.refusal(&case.need) {
                    Some((want, code)) => {
                        if status != want || body["error_code"] != code {
                            failures.push(format!(
                                "{what} as {}: want {want} {code}, got {status} {body}",
                                h.label
                            ));
                        }
                    }
                    None => {
                        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                            failures.push(format!(
                                "{what} as {}: should be allowed, got {status} {body}",
                                h.label
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
    assert!(checked >= 2500, "only {checked} checks ran");
}
