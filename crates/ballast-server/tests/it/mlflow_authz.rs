//! Authorization of the MLflow-compatible API: the artifacts proxy serves a registered version's
//! files only to readers of its namespace (downloads, listings, and versions registered from
//! them), an MLflow name acts in one namespace decided by the name alone (so creates land where
//! the roles were checked and denials never tell whether a model exists), renames need `writer`
//! on both names and never move a model between namespaces, and the fields authorization reads
//! are the ones the handler acts on.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{create_token, spawn_app, TestApp};

/// The MLflow default namespace of the test server (the configuration's default).
const DEFAULT_NS: &str = "mlflow";

/// A request to `path` (absolute, query included) as `token` (none: no `Authorization`).
async fn send(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut rb = reqwest::Client::new().request(method, app.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    let r = rb.send().await.expect("send");
    let status = r.status();
    let bytes = r.bytes().await.expect("body");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn denied(answer: &(StatusCode, Value), what: &str) {
    assert_eq!(answer.0, StatusCode::FORBIDDEN, "{what}: {}", answer.1);
    assert_eq!(
        answer.1["error_code"], "PERMISSION_DENIED",
        "{what}: {}",
        answer.1
    );
}

async fn token(app: &TestApp, principal: &str, roles: &[(&str, &str)]) -> String {
    create_token(&app.base, &app.admin_token, principal, roles).await
}

const ART: &str = "/api/2.0/mlflow-artifacts/artifacts";
const AJAX_ART: &str = "/ajax-api/2.0/mlflow-artifacts/artifacts";
const ML: &str = "/api/2.0/mlflow";

#[tokio::test]
async fn registered_version_files_through_the_proxy_need_read_on_their_namespace() {
    let app = spawn_app().await;
    app.create_model("other/secret").await;
    let n = app.sealed_version("other/secret", b"other's weights").await;
    assert_eq!(n, 1);
    let reader = token(&app, "default-reader", &[(DEFAULT_NS, "reader")]).await;
    let other_reader = token(&app, "other-reader", &[("other", "reader")]).await;

    // Downloads and listings of another namespace's versions are refused, and a version that
    // exists answers exactly like one that does not.
    for prefix in [ART, AJAX_ART] {
        let existing = send(
            &app,
            Some(&reader),
            Method::GET,
            &format!("{prefix}/ballast-versions/other/secret/1/model.bin"),
            None,
        )
        .await;
        let missing = send(
            &app,
            Some(&reader),
            Method::GET,
            &format!("{prefix}/ballast-versions/other/ghost/1/model.bin"),
            None,
        )
        .await;
        denied(&existing, "download");
        assert_eq!(existing, missing, "existing and missing versions answer alike");
        for path in [
            "ballast-versions/other/secret/1",
            "/ballast-versions/other/secret/1/",
            "ballast-versions/other/ghost/1",
            "ballast-versions/other",
        ] {
            let listed = send(
                &app,
                Some(&reader),
                Method::GET,
                &format!("{prefix}?path={path}"),
                None,
            )
            .await;
            denied(&listed, path);
            assert_eq!(listed.1, existing.1, "{path}: the same refusal");
        }
        // The handler reads the last `path`: so does authorization.
        let smuggled = send(
            &app,
            Some(&reader),
            Method::GET,
            &format!("{prefix}?path=x&path=ballast-versions/other/secret/1"),
            None,
        )
        .await;
        denied(&smuggled, "repeated path");
        // An encoded separator decodes to the same path.
        let encoded = send(
            &app,
            Some(&reader),
            Method::GET,
            &format!("{prefix}/ballast-versions%2Fother%2Fsecret%2F1%2Fmodel.bin"),
            None,
        )
        .await;
        denied(&encoded, "encoded path");
        // The default namespace's own files stay readable.
        let own = send(&app, Some(&reader), Method::GET, &format!("{prefix}?path="), None).await;
        assert_eq!(own.0, StatusCode::OK, "{}", own.1);
    }

    // A reader of the version's namespace gets its files.
    let (s, listed) = send(
        &app,
        Some(&other_reader),
        Method::GET,
        &format!("{ART}?path=ballast-versions/other/secret/1"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(listed["files"][0]["path"], "model.bin");
    let (s, body) = send(
        &app,
        Some(&other_reader),
        Method::GET,
        &format!("{ART}/ballast-versions/other/secret/1/model.bin"),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!("other's weights")));
    let (s, _) = send(
        &app,
        Some(&other_reader),
        Method::GET,
        &format!("{AJAX_ART}/ballast-versions/other/ghost/1/model.bin"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a reader learns a version is missing");

    // Registering a version from another namespace's version copies its files: that needs
    // `read` there too (and `writer` on the target, as always).
    let writer = token(&app, "default-writer", &[(DEFAULT_NS, "writer")]).await;
    let copier = token(&app, "copier", &[(DEFAULT_NS, "writer"), ("other", "reader")]).await;
    let (s, v) = send(
        &app,
        Some(&writer),
        Method::POST,
        &format!("{ML}/registered-models/create"),
        Some(&json!({ "name": "Copy" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for source in [
        "mlflow-artifacts:/ballast-versions/other/secret/1",
        "mlflow-artifacts://registry.example:5000/ballast-versions/other/secret/1",
        "mlflow-artifacts:/ballast-versions/other/ghost/1",
    ] {
        let r = send(
            &app,
            Some(&writer),
            Method::POST,
            &format!("{ML}/model-versions/create"),
            Some(&json!({ "name": "Copy", "source": source })),
        )
        .await;
        denied(&r, source);
        // Also when the source comes in the query string, which the handler reads too.
        let r = send(
            &app,
            Some(&writer),
            Method::POST,
            &format!("{ML}/model-versions/create?source={source}"),
            Some(&json!({ "name": "Copy" })),
        )
        .await;
        denied(&r, source);
    }
    let versions: Value = app.get_ok("/v1/models/mlflow/copy/versions").await;
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(0),
        "nothing was copied: {versions}"
    );
    let (s, v) = send(
        &app,
        Some(&copier),
        Method::POST,
        &format!("{ML}/model-versions/create"),
        Some(&json!({ "name": "Copy", "source": "mlflow-artifacts:/ballast-versions/other/secret/1" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, body) = send(
        &app,
        Some(&copier),
        Method::GET,
        &format!("{ART}/ballast-versions/mlflow/copy/1/model.bin"),
        None,
    )
    .await;
    assert_eq!((s, body), (StatusCode::OK, json!("other's weights")));
}

#[tokio::test]
async fn an_mlflow_name_acts_in_one_namespace_whether_or_not_the_model_exists() {
    let app = spawn_app().await;
    let writer = token(&app, "default-writer", &[(DEFAULT_NS, "writer")]).await;
    let reader = token(&app, "default-reader", &[(DEFAULT_NS, "reader")]).await;
    let acme_reader = token(&app, "acme-reader", &[("acme", "reader")]).await;

    // A namespaced name that is not a valid registry name lives in its namespace's slug: a
    // writer of the default namespace cannot create it there, and nothing is created.
    let create = |name: &'static str| json!({ "name": name });
    let r = send(
        &app,
        Some(&writer),
        Method::POST,
        &format!("{ML}/registered-models/create"),
        Some(&create("Acme/Fraud Model")),
    )
    .await;
    denied(&r, "create in acme");
    assert!(
        r.1["message"].as_str().unwrap_or("").contains("namespace acme"),
        "{}",
        r.1
    );
    let (s, _) = send(
        &app,
        Some(&app.admin_token),
        Method::GET,
        "/v1/models/acme/fraud-model",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was created");
    let (s, v) = send(
        &app,
        Some(&app.admin_token),
        Method::POST,
        &format!("{ML}/registered-models/create"),
        Some(&create("Acme/Fraud Model")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = send(
        &app,
        Some(&app.admin_token),
        Method::GET,
        "/v1/models/acme/fraud-model",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "created where authorization looked");

    // Existing and missing names of that namespace answer alike to an outsider.
    let get = |name: &str| format!("{ML}/registered-models/get?name={}", name.replace(' ', "%20"));
    let existing = send(&app, Some(&reader), Method::GET, &get("Acme/Fraud Model"), None).await;
    let missing = send(&app, Some(&reader), Method::GET, &get("Acme/Missing Model"), None).await;
    denied(&existing, "get existing");
    assert_eq!(existing, missing, "existing and missing names answer alike");
    let (s, v) = send(
        &app,
        Some(&acme_reader),
        Method::GET,
        &get("Acme/Fraud Model"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registered_model"]["name"], "Acme/Fraud Model");
    let (s, v) = send(
        &app,
        Some(&acme_reader),
        Method::GET,
        &get("Acme/Missing Model"),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RESOURCE_DOES_NOT_EXIST"))
    );

    // The fields authorization reads are those the handler acts on: a name in the query string
    // of a POST, a list, or a repeated query key cannot slip past it.
    app.create_model("acme/bot").await;
    let (s, v) = send(
        &app,
        Some(&writer),
        Method::POST,
        &format!("{ML}/registered-models/create"),
        Some(&create("Mine")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for (path, body) in [
        (
            format!("{ML}/registered-models/set-tag?name=acme/bot"),
            json!({ "key": "k", "value": "v" }),
        ),
        (
            format!("{ML}/registered-models/set-tag"),
            json!({ "name": ["Mine", "acme/bot"], "key": "k", "value": "v" }),
        ),
    ] {
        let r = send(&app, Some(&writer), Method::POST, &path, Some(&body)).await;
        denied(&r, &format!("{path} {body}"));
    }
    // A null name in the body hides the query's: the request names no model and is refused.
    let (s, v) = send(
        &app,
        Some(&writer),
        Method::POST,
        &format!("{ML}/registered-models/set-tag?name=acme/bot"),
        Some(&json!({ "name": null, "key": "k", "value": "v" })),
    )
    .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")),
        "{v}"
    );
    let bot: Value = app.get_ok("/v1/models/acme/bot").await;
    assert_eq!(bot["tags"], json!({}), "no tag was set: {bot}");
    let r = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{ML}/registered-models/get?name=Mine&name=acme/bot"),
        None,
    )
    .await;
    denied(&r, "repeated name");
    let r = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{ML}/registered-models/get?name=Mine"),
        None,
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
}

#[tokio::test]
async fn mlflow_renames_need_writer_on_both_names_and_never_move_a_model() {
    let app = spawn_app().await;
    let writer = token(&app, "default-writer", &[(DEFAULT_NS, "writer")]).await;
    let both = token(&app, "both-writer", &[(DEFAULT_NS, "writer"), ("acme", "writer")]).await;
    let reader = token(&app, "default-reader", &[(DEFAULT_NS, "reader")]).await;
    let rename = |from: &str, to: &str| json!({ "name": from, "new_name": to });
    let url = format!("{ML}/registered-models/rename");
    let (s, v) = send(
        &app,
        Some(&writer),
        Method::POST,
        &format!("{ML}/registered-models/create"),
        Some(&json!({ "name": "Mine" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Renaming into a namespace needs `writer` there, whether or not the new name is taken.
    for to in ["Acme/Mine", "acme/mine", "acme/bot"] {
        let r = send(&app, Some(&writer), Method::POST, &url, Some(&rename("Mine", to))).await;
        denied(&r, to);
    }
    app.create_model("acme/bot").await;
    let r = send(
        &app,
        Some(&writer),
        Method::POST,
        &url,
        Some(&rename("Mine", "acme/bot")),
    )
    .await;
    denied(&r, "taken target");

    // With `writer` on both, a rename still cannot move the model: refused, nothing changes.
    let before = app.audit_all().await.len();
    for (from, to) in [("Mine", "Acme/Mine"), ("acme/bot", "bare name")] {
        let (s, v) = send(&app, Some(&both), Method::POST, &url, Some(&rename(from, to))).await;
        assert_eq!(
            (s, v["error_code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")),
            "{from} → {to}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains("between namespaces"),
            "{v}"
        );
    }
    assert_eq!(
        app.audit_all().await.len(),
        before,
        "refused renames leave no trace"
    );
    // So a bare name never resolves to a model outside the default namespace.
    let bare = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{ML}/registered-models/get?name=bare%20name"),
        None,
    )
    .await;
    let ghost = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{ML}/registered-models/get?name=ghost"),
        None,
    )
    .await;
    assert_eq!(bare.0, StatusCode::NOT_FOUND, "{}", bare.1);
    assert_eq!(bare.1["error_code"], ghost.1["error_code"]);

    // Within a namespace, renames work.
    let (s, v) = send(
        &app,
        Some(&writer),
        Method::POST,
        &url,
        Some(&rename("Mine", "Mine v2")),
    )
    .await;
    assert_eq!(
        (s, v["registered_model"]["name"].as_str()),
        (StatusCode::OK, Some("Mine v2")),
        "{v}"
    );
    let (s, v) = send(
        &app,
        Some(&both),
        Method::POST,
        &url,
        Some(&rename("acme/bot", "Acme/Bot")),
    )
    .await;
    assert_eq!(
        (s, v["registered_model"]["name"].as_str()),
        (StatusCode::OK, Some("Acme/Bot")),
        "{v}"
    );
}

#[tokio::test]
async fn a_mapping_to_another_namespace_left_in_the_database_resolves_to_nothing() {
    // A database written before MLflow names were tied to their namespace may hold a mapping
    // from a bare name to a model elsewhere: the name must not reach that model (authorization
    // checked the default namespace), and must answer like a missing name.
    let mut app = spawn_app().await;
    app.create_model("acme/bot").await;
    app.stop().await;
    {
        let db = rusqlite::Connection::open(app.data_dir().join("ballast.db")).unwrap();
        db.execute(
            "INSERT INTO mlflow_names (mlflow_name, model_id) SELECT 'legacy', id FROM models WHERE namespace = 'acme' AND name = 'bot'",
            [],
        )
        .unwrap();
    }
    let app = app.restart().await;
    let reader = token(&app, "default-reader", &[(DEFAULT_NS, "reader")]).await;
    let legacy = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{ML}/registered-models/get?name=legacy"),
        None,
    )
    .await;
    let ghost = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{ML}/registered-models/get?name=ghost"),
        None,
    )
    .await;
    assert_eq!(legacy.0, StatusCode::NOT_FOUND, "{}", legacy.1);
    assert_eq!(legacy.1["error_code"], ghost.1["error_code"]);
    let writer = token(&app, "default-writer", &[(DEFAULT_NS, "writer")]).await;
    let r = send(
        &app,
        Some(&writer),
        Method::POST,
        &format!("{ML}/registered-models/set-tag"),
        Some(&json!({ "name": "legacy", "key": "k", "value": "v" })),
    )
    .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
    let bot: Value = app.get_ok("/v1/models/acme/bot").await;
    assert_eq!(bot["tags"], json!({}));
}

#[tokio::test]
async fn the_ajax_artifacts_prefix_is_authorized_and_answers_like_mlflow() {
    let app = spawn_app().await;
    let reader = token(&app, "default-reader", &[(DEFAULT_NS, "reader")]).await;
    let writer = token(&app, "default-writer", &[(DEFAULT_NS, "writer")]).await;
    let (s, v) = send(
        &app,
        Some(&writer),
        Method::PUT,
        &format!("{AJAX_ART}/0/run/artifacts/a.txt"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = send(
        &app,
        Some(&reader),
        Method::GET,
        &format!("{AJAX_ART}?path=0/run/artifacts"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["files"][0]["path"], "a.txt");
    let r = send(
        &app,
        Some(&reader),
        Method::PUT,
        &format!("{AJAX_ART}/0/run/artifacts/b.txt"),
        None,
    )
    .await;
    denied(&r, "a reader uploads");
    let (s, v) = send(&app, None, Method::GET, &format!("{AJAX_ART}?path="), None).await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
        "{v}"
    );
    let (s, v) = send(
        &app,
        Some(&reader),
        Method::POST,
        "/ajax-api/2.0/mlflow-artifacts/mpu/create/x",
        Some(&json!({})),
    )
    .await;
    denied(&(s, v), "a reader starts a multipart upload");
}
