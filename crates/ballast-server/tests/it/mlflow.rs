//! The MLflow-compatible API over HTTP, in MLflow's wire format: GET fields in the query string,
//! other methods' fields in JSON bodies, `{"error_code", "message"}` errors.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{spawn_app, TestApp};

const API: &str = "/api/2.0/mlflow";

async fn call(app: &TestApp, method: Method, path: &str, body: &Value) -> (StatusCode, Value) {
    let url = format!("{API}/{path}");
    let r = if method == Method::GET {
        let pairs: Vec<(String, String)> = body
            .as_object()
            .map(|o| {
                o.iter()
                    .flat_map(|(k, v)| match v {
                        Value::Array(a) => a
                            .iter()
                            .map(|x| (k.clone(), x.as_str().map_or_else(|| x.to_string(), str::to_owned)))
                            .collect::<Vec<_>>(),
                        Value::String(s) => vec![(k.clone(), s.clone())],
                        other => vec![(k.clone(), other.to_string())],
                    })
                    .collect()
            })
            .unwrap_or_default();
        app.req(Method::GET, &url).query(&pairs).send().await
    } else {
        app.req(method, &url).json(body).send().await
    }
    .expect("send");
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let (s, v) = call(app, method, path, &body).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v
}

async fn fails(app: &TestApp, method: Method, path: &str, body: Value, status: u16, code: &str) -> Value {
    let (s, v) = call(app, method, path, &body).await;
    assert_eq!(s.as_u16(), status, "{path}: {v}");
    assert_eq!(v["error_code"], code, "{path}: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    v
}

/// Uploads a file through the artifacts proxy.
async fn put_artifact(app: &TestApp, path: &str, bytes: &[u8]) {
    let r = app
        .req(
            Method::PUT,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{path}"),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn mlflow_registered_models_crud_and_errors() {
    let app = spawn_app().await;
    let created = ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "Fraud Model", "description": "d", "tags": [{ "key": "team", "value": "risk" }] }),
    )
    .await;
    assert_eq!(created["registered_model"]["name"], "Fraud Model");
    assert!(
        created["registered_model"]["creation_timestamp"]
            .as_i64()
            .unwrap()
            > 1_600_000_000_000
    );

    // The name the client used is kept; the Ballast model lives in the default namespace.
    let got = ok(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "Fraud Model" }),
    )
    .await;
    assert_eq!(
        got["registered_model"]["tags"],
        json!([{ "key": "team", "value": "risk" }])
    );
    let native: Value = app.get_ok("/v1/models/mlflow/fraud-model").await;
    assert_eq!(native["description"], "d");

    fails(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "Fraud Model" }),
        400,
        "RESOURCE_ALREADY_EXISTS",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "nope" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::POST,
        "registered-models/create",
        json!({}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "filter": "name = " }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "filter": "owner = 'x'" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "max_results": "5000" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let (s, v) = call(
        &app,
        Method::POST,
        "registered-models/create",
        &json!("not an object"),
    )
    .await;
    assert_eq!(
        (s.as_u16(), v["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );

    ok(
        &app,
        Method::PATCH,
        "registered-models/update",
        json!({ "name": "Fraud Model", "description": "new" }),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "registered-models/set-tag",
        json!({ "name": "Fraud Model", "key": "k", "value": "v" }),
    )
    .await;
    ok(
        &app,
        Method::DELETE,
        "registered-models/delete-tag",
        json!({ "name": "Fraud Model", "key": "team" }),
    )
    .await;
    // As MLflow's server: deleting a tag that is not set succeeds and changes nothing.
    ok(
        &app,
        Method::DELETE,
        "registered-models/delete-tag",
        json!({ "name": "Fraud Model", "key": "team" }),
    )
    .await;
    fails(
        &app,
        Method::DELETE,
        "registered-models/delete-tag",
        json!({ "name": "No Such Model", "key": "team" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    // An unknown attribute is refused even when nothing could match it.
    fails(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "filter": "nosuch = 'x'" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "name = 'No Such Model' AND nosuch = 'x'" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let got = ok(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "Fraud Model" }),
    )
    .await;
    assert_eq!(got["registered_model"]["description"], "new");
    assert_eq!(
        got["registered_model"]["tags"],
        json!([{ "key": "k", "value": "v" }])
    );

    // Rename changes the MLflow name; the Ballast name (audit, routes) stays.
    let renamed = ok(
        &app,
        Method::POST,
        "registered-models/rename",
        json!({ "name": "Fraud Model", "new_name": "fraud-v2" }),
    )
    .await;
    assert_eq!(renamed["registered_model"]["name"], "fraud-v2");
    fails(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "Fraud Model" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    ok(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "fraud-v2" }),
    )
    .await;
    let _: Value = app.get_ok("/v1/models/mlflow/fraud-model").await;

    // A plain name that was freed by a rename is taken by a new, different model.
    let again = ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "fraud-model" }),
    )
    .await;
    assert_eq!(again["registered_model"]["name"], "fraud-model");
    let _: Value = app.get_ok("/v1/models/mlflow/fraud-model-2").await;

    ok(
        &app,
        Method::DELETE,
        "registered-models/delete",
        json!({ "name": "fraud-v2" }),
    )
    .await;
    fails(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "fraud-v2" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    // Every change is in the audit trail.
    let actions: Vec<String> = app.audit_all().await.into_iter().map(|e| e.action).collect();
    assert!(actions.iter().any(|a| a == "model.mlflow_rename"), "{actions:?}");
    assert!(actions.iter().any(|a| a == "model.delete"));
}

#[tokio::test]
async fn mlflow_search_filters_ordering_and_paging() {
    let app = spawn_app().await;
    for (i, team) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        ok(
            &app,
            Method::POST,
            "registered-models/create",
            json!({ "name": format!("Search-{i}"), "tags": [{ "key": "team-name", "value": team }] }),
        )
        .await;
    }
    // Native models are visible too, by their model part in the default namespace or in full.
    app.create_model("mlflow/native-one").await;
    app.create_model("acme/other").await;

    let names = |v: &Value| -> Vec<String> {
        v["registered_models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ok(&app, Method::GET, "registered-models/search", json!({})).await;
    assert_eq!(
        names(&all),
        [
            "Search-0",
            "Search-1",
            "Search-2",
            "Search-3",
            "Search-4",
            "acme/other",
            "native-one"
        ]
    );
    let v = ok(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "filter": "name LIKE 'Search-%' AND tags.`team-name` = 'a'", "order_by": ["name DESC"] }),
    )
    .await;
    assert_eq!(names(&v), ["Search-4", "Search-2", "Search-0"]);
    let v = ok(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "filter": "name ILIKE 'search-_'  and tag.`team-name` != 'a'" }),
    )
    .await;
    assert_eq!(names(&v), ["Search-1", "Search-3"]);
    let v = ok(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "filter": "name = \"native-one\"" }),
    )
    .await;
    assert_eq!(names(&v), ["native-one"]);

    let p1 = ok(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "max_results": 3 }),
    )
    .await;
    assert_eq!(names(&p1), ["Search-0", "Search-1", "Search-2"]);
    let token = p1["next_page_token"].as_str().unwrap().to_owned();
    let p2 = ok(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "max_results": 3, "page_token": token }),
    )
    .await;
    assert_eq!(names(&p2), ["Search-3", "Search-4", "acme/other"]);
    let token = p2["next_page_token"].as_str().unwrap().to_owned();
    let p3 = ok(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "max_results": 3, "page_token": token }),
    )
    .await;
    assert_eq!(names(&p3), ["native-one"]);
    assert!(p3.get("next_page_token").is_none());
    fails(
        &app,
        Method::GET,
        "registered-models/search",
        json!({ "page_token": "garbage" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    // An MLflow route Ballast does not serve answers in MLflow's format.
    fails(
        &app,
        Method::POST,
        "traces/start",
        json!({}),
        404,
        "ENDPOINT_NOT_FOUND",
    )
    .await;

    // The same routes answer under /ajax-api.
    let r = app
        .req(Method::GET, "/ajax-api/2.0/mlflow/registered-models/get")
        .query(&[("name", "Search-0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn mlflow_versions_from_proxy_artifacts_are_sealed_with_lineage() {
    let app = spawn_app().await;
    // The tracking subset a registration flow uses.
    let exp = ok(
        &app,
        Method::POST,
        "experiments/create",
        json!({ "name": "exp-1" }),
    )
    .await;
    let exp_id = exp["experiment_id"].as_str().unwrap().to_owned();
    fails(
        &app,
        Method::POST,
        "experiments/create",
        json!({ "name": "exp-1" }),
        400,
        "RESOURCE_ALREADY_EXISTS",
    )
    .await;
    let by_name = ok(
        &app,
        Method::GET,
        "experiments/get-by-name",
        json!({ "experiment_name": "exp-1" }),
    )
    .await;
    assert_eq!(by_name["experiment"]["experiment_id"], exp_id.as_str());
    let run = ok(
        &app,
        Method::POST,
        "runs/create",
        json!({ "experiment_id": exp_id, "start_time": 1 }),
    )
    .await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    ok(&app, Method::POST, "runs/log-batch", json!({
        "run_id": run_id,
        "params": [{ "key": "lr", "value": "0.1" }],
        "metrics": [{ "key": "auc", "value": 0.8, "timestamp": 1, "step": 0 }, { "key": "auc", "value": 0.9, "timestamp": 2, "step": 1 }],
    }))
    .await;
    ok(
        &app,
        Method::POST,
        "runs/log-metric",
        json!({ "run_id": run_id, "key": "loss", "value": 0.25, "timestamp": 3, "step": 0 }),
    )
    .await;
    fails(
        &app,
        Method::POST,
        "runs/log-parameter",
        json!({ "run_id": run_id, "key": "lr", "value": "0.2" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let art = run["run"]["info"]["artifact_uri"].as_str().unwrap().to_owned();
    let dir = art.strip_prefix("mlflow-artifacts:/").unwrap().to_owned();
    put_artifact(&app, &format!("{dir}/model/MLmodel"), b"flavors: {}\n").await;
    put_artifact(&app, &format!("{dir}/model/data/weights.bin"), &[7u8; 1000]).await;

    let listed = app
        .get(&format!("/api/2.0/mlflow-artifacts/artifacts?path={dir}/model"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        listed["files"],
        json!([{ "path": "MLmodel", "is_dir": false, "file_size": 12 }, { "path": "data", "is_dir": true }])
    );

    ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "clf" }),
    )
    .await;
    let v = ok(
        &app,
        Method::POST,
        "model-versions/create",
        json!({
            "name": "clf", "source": format!("{art}/model"), "run_id": run_id, "description": "first",
            "tags": [{ "key": "t", "value": "1" }],
        }),
    )
    .await;
    let mv = &v["model_version"];
    assert_eq!(mv["version"], "1");
    assert_eq!(mv["status"], "READY");
    assert_eq!(mv["current_stage"], "None");
    assert_eq!(mv["run_id"], run_id.as_str());
    assert_eq!(mv["description"], "first");

    // A first-class Ballast version: sealed with a manifest, carrying the run's lineage.
    let native: ballast_api::Version = app.get_ok("/v1/models/mlflow/clf/versions/1").await;
    assert_eq!(native.state, ballast_api::VersionState::Sealed);
    assert_eq!(
        native.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["MLmodel", "data/weights.bin"]
    );
    assert_eq!(native.metadata.metrics["auc"], 0.9);
    assert_eq!(native.metadata.metrics["loss"], 0.25);
    assert_eq!(native.metadata.hyperparameters["lr"], json!("0.1"));
    assert_eq!(
        native.metadata.lineage.source_run_id.as_deref(),
        Some(run_id.as_str())
    );
    assert_eq!(
        native.metadata.lineage.source_experiment_id.as_deref(),
        Some(exp_id.as_str())
    );

    // Changing the proxy's files afterwards never touches the sealed version.
    put_artifact(&app, &format!("{dir}/model/MLmodel"), b"changed").await;
    let uri = ok(
        &app,
        Method::GET,
        "model-versions/get-download-uri",
        json!({ "name": "clf", "version": "1" }),
    )
    .await;
    let uri = uri["artifact_uri"].as_str().unwrap().to_owned();
    let path = uri.strip_prefix("mlflow-artifacts:/").unwrap();
    let body = app
        .get(&format!("/api/2.0/mlflow-artifacts/artifacts/{path}/MLmodel"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"flavors: {}\n");

    // An unreachable source: the reference is sealed, the content reported unverified.
    let ext = ok(
        &app,
        Method::POST,
        "model-versions/create",
        json!({ "name": "clf", "source": "s3://bucket/x" }),
    )
    .await;
    assert_eq!(ext["model_version"]["status"], "READY");
    assert!(ext["model_version"]["status_message"]
        .as_str()
        .unwrap()
        .contains("unverified"));
    let uri = ok(
        &app,
        Method::GET,
        "model-versions/get-download-uri",
        json!({ "name": "clf", "version": "2" }),
    )
    .await;
    assert_eq!(uri["artifact_uri"], "s3://bucket/x");
    let native: ballast_api::Version = app.get_ok("/v1/models/mlflow/clf/versions/2").await;
    assert_eq!(native.tags["ballast.source_verified"], "false");
    assert_eq!(native.files[0].path, "ballast-external-source.json");
    let native: ballast_api::Version = app.get_ok("/v1/models/mlflow/clf/versions/1").await;
    assert_eq!(native.tags["ballast.source_verified"], "true");
    let v1 = ok(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "clf", "version": "1" }),
    )
    .await;
    assert_eq!(v1["model_version"]["tags"], json!([{ "key": "t", "value": "1" }]));

    // Multipart uploads are not supported, as MLflow's server without multipart.
    let r = app
        .req(Method::POST, "/api/2.0/mlflow-artifacts/mpu/create/x/y")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 501);
}

#[tokio::test]
async fn mlflow_stages_aliases_tags_and_version_search() {
    let app = spawn_app().await;
    ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "m" }),
    )
    .await;
    for i in 1..=3 {
        ok(
            &app,
            Method::POST,
            "model-versions/create",
            json!({ "name": "m", "source": format!("s3://b/{i}"), "run_id": format!("run{i}") }),
        )
        .await;
    }
    fails(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "m", "version": "9" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "m", "version": "x" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    // None -> Production passes through staging (both gated) in one transaction.
    let t = ok(
        &app,
        Method::POST,
        "model-versions/transition-stage",
        json!({ "name": "m", "version": "1", "stage": "Production", "archive_existing_versions": false }),
    )
    .await;
    assert_eq!(t["model_version"]["current_stage"], "Production");
    ok(
        &app,
        Method::POST,
        "model-versions/transition-stage",
        json!({ "name": "m", "version": "2", "stage": "production" }),
    )
    .await;
    let v1 = ok(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "m", "version": "1" }),
    )
    .await;
    assert_eq!(v1["model_version"]["current_stage"], "Archived");
    ok(
        &app,
        Method::POST,
        "model-versions/transition-stage",
        json!({ "name": "m", "version": "3", "stage": "Staging" }),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "model-versions/transition-stage",
        json!({ "name": "m", "version": "1", "stage": "Staging", "archive_existing_versions": true }),
    )
    .await;
    let v3 = ok(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "m", "version": "3" }),
    )
    .await;
    assert_eq!(v3["model_version"]["current_stage"], "Archived");
    fails(
        &app,
        Method::POST,
        "model-versions/transition-stage",
        json!({ "name": "m", "version": "1", "stage": "Live" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let native: ballast_api::Version = app.get_ok("/v1/models/mlflow/m/versions/2").await;
    assert_eq!(native.stage, ballast_core::Stage::Production);

    let latest = ok(
        &app,
        Method::POST,
        "registered-models/get-latest-versions",
        json!({ "name": "m", "stages": ["Production"] }),
    )
    .await;
    assert_eq!(latest["model_versions"][0]["version"], "2");
    let latest = ok(
        &app,
        Method::GET,
        "registered-models/get-latest-versions",
        json!({ "name": "m", "stages": ["Staging", "Archived"] }),
    )
    .await;
    let got: Vec<&str> = latest["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["1", "3"]);

    // Aliases: compare-and-swap and audit underneath.
    ok(
        &app,
        Method::POST,
        "registered-models/alias",
        json!({ "name": "m", "alias": "champion", "version": "2" }),
    )
    .await;
    let a = ok(
        &app,
        Method::GET,
        "registered-models/alias",
        json!({ "name": "m", "alias": "champion" }),
    )
    .await;
    assert_eq!(a["model_version"]["version"], "2");
    assert_eq!(a["model_version"]["aliases"], json!(["champion"]));
    fails(
        &app,
        Method::POST,
        "registered-models/alias",
        json!({ "name": "m", "alias": "champion", "version": "9" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    let m = ok(&app, Method::GET, "registered-models/get", json!({ "name": "m" })).await;
    assert_eq!(
        m["registered_model"]["aliases"],
        json!([{ "alias": "champion", "version": "2" }])
    );
    ok(
        &app,
        Method::DELETE,
        "registered-models/alias",
        json!({ "name": "m", "alias": "champion" }),
    )
    .await;
    // MLflow's server answers an unset alias with INVALID_PARAMETER_VALUE (400).
    fails(
        &app,
        Method::GET,
        "registered-models/alias",
        json!({ "name": "m", "alias": "champion" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    // Deleting it again succeeds, as in MLflow; `latest` is the highest version and reserved.
    ok(
        &app,
        Method::DELETE,
        "registered-models/alias",
        json!({ "name": "m", "alias": "champion" }),
    )
    .await;
    let latest = ok(
        &app,
        Method::GET,
        "registered-models/alias",
        json!({ "name": "m", "alias": "latest" }),
    )
    .await;
    let highest = ok(&app, Method::GET, "registered-models/get", json!({ "name": "m" })).await;
    let top = highest["registered_model"]["latest_versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["version"].as_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    assert_eq!(latest["model_version"]["version"], top.to_string());
    for reserved in ["latest", "LATEST", "v1"] {
        fails(
            &app,
            Method::POST,
            "registered-models/alias",
            json!({ "name": "m", "alias": reserved, "version": "1" }),
            400,
            "INVALID_PARAMETER_VALUE",
        )
        .await;
    }

    ok(
        &app,
        Method::POST,
        "model-versions/set-tag",
        json!({ "name": "m", "version": "2", "key": "ok", "value": "yes" }),
    )
    .await;
    ok(
        &app,
        Method::PATCH,
        "model-versions/update",
        json!({ "name": "m", "version": "2", "description": "later" }),
    )
    .await;
    let v2 = ok(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "m", "version": "2" }),
    )
    .await;
    assert_eq!(
        v2["model_version"]["tags"],
        json!([{ "key": "ok", "value": "yes" }])
    );
    assert_eq!(v2["model_version"]["description"], "later");
    ok(
        &app,
        Method::DELETE,
        "model-versions/delete-tag",
        json!({ "name": "m", "version": "2", "key": "ok" }),
    )
    .await;

    let hits = |v: &Value| -> Vec<String> {
        v["model_versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_owned())
            .collect()
    };
    let s = ok(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "name = 'm'", "order_by": ["version_number DESC"] }),
    )
    .await;
    assert_eq!(hits(&s), ["3", "2", "1"]);
    // Without order_by, as MLflow's server: the most recently updated first.
    let s = ok(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "name = 'm'" }),
    )
    .await;
    let updated: Vec<i64> = s["model_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["last_updated_timestamp"].as_i64().unwrap())
        .collect();
    assert!(updated.windows(2).all(|w| w[0] >= w[1]), "{updated:?}");
    let s = ok(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "run_id IN ('run1', 'run3')", "order_by": ["version_number ASC"] }),
    )
    .await;
    assert_eq!(hits(&s), ["1", "3"]);
    let s = ok(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "name = 'm' AND version_number = 2" }),
    )
    .await;
    assert_eq!(hits(&s), ["2"]);
    let s = ok(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "source_path LIKE 's3://b/%'", "max_results": 2, "order_by": ["version_number DESC"] }),
    )
    .await;
    assert_eq!(hits(&s), ["3", "2"]);
    assert!(s["next_page_token"].is_string());

    // Deleting: refused in production, allowed once archived; the number is never reused.
    fails(
        &app,
        Method::DELETE,
        "model-versions/delete",
        json!({ "name": "m", "version": "2" }),
        400,
        "INVALID_STATE",
    )
    .await;
    ok(
        &app,
        Method::DELETE,
        "model-versions/delete",
        json!({ "name": "m", "version": "3" }),
    )
    .await;
    fails(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "m", "version": "3" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    let v4 = ok(
        &app,
        Method::POST,
        "model-versions/create",
        json!({ "name": "m", "source": "s3://b/4" }),
    )
    .await;
    assert_eq!(v4["model_version"]["version"], "4");
    // A model with a version in production is not deleted.
    fails(
        &app,
        Method::DELETE,
        "registered-models/delete",
        json!({ "name": "m" }),
        400,
        "INVALID_STATE",
    )
    .await;
}

#[tokio::test]
async fn mlflow_sees_native_versions() {
    let app = spawn_app().await;
    app.create_model("mlflow/native").await;
    let n = app.sealed_version("mlflow/native", b"weights").await;
    let v = ok(
        &app,
        Method::GET,
        "model-versions/get",
        json!({ "name": "native", "version": n.to_string() }),
    )
    .await;
    assert_eq!(v["model_version"]["status"], "READY");
    let uri = ok(
        &app,
        Method::GET,
        "model-versions/get-download-uri",
        json!({ "name": "native", "version": "1" }),
    )
    .await;
    let path = uri["artifact_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mlflow-artifacts:/")
        .unwrap()
        .to_owned();
    let listed = app
        .get(&format!("/api/2.0/mlflow-artifacts/artifacts?path={path}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(listed["files"][0]["path"], "model.bin");
    let body = app
        .get(&format!("/api/2.0/mlflow-artifacts/artifacts/{path}/model.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&body[..], b"weights");
    // Registered versions under ballast-versions/ are read-only.
    let r = app
        .req(
            Method::PUT,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{path}/model.bin"),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn mlflow_creates_are_idempotent_with_a_key() {
    let app = spawn_app().await;
    ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "idem" }),
    )
    .await;
    let send = |body: Value| {
        app.req(Method::POST, &format!("{API}/model-versions/create"))
            .header("idempotency-key", "k1")
            .json(&body)
            .send()
    };
    let a: Value = send(json!({ "name": "idem", "source": "s3://a" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = send(json!({ "name": "idem", "source": "s3://a" }))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["model_version"]["version"], "1");
    assert_eq!(b["model_version"]["version"], "1");
    let r = send(json!({ "name": "idem", "source": "s3://other" }))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "INVALID_PARAMETER_VALUE");
    let s = ok(
        &app,
        Method::GET,
        "model-versions/search",
        json!({ "filter": "name = 'idem'" }),
    )
    .await;
    assert_eq!(s["model_versions"].as_array().unwrap().len(), 1);
}

/// Refuses every move into production, naming the gate.
struct NoProduction;

#[async_trait::async_trait]
impl ballast_server::governance::TransitionGate for NoProduction {
    async fn check(
        &self,
        _ctx: &ballast_store::Ctx,
        _version: &ballast_api::Version,
        to: ballast_core::Stage,
    ) -> Result<(), ballast_server::ApiError> {
        if to == ballast_core::Stage::Production {
            return Err(ballast_server::ApiError::new(
                ballast_core::ErrorCode::PermissionDenied,
                "metric gate accuracy >= 0.9 failed (no value)",
            ));
        }
        Ok(())
    }
}

#[tokio::test]
async fn mlflow_stage_moves_pass_the_governance_gate() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = ballast_store::SqlStore::open(&dir.path().join("ballast.db")).unwrap();
    let blobs = ballast_blob::LocalBlobStore::open(dir.path().join("blobs")).unwrap();
    let mut state = ballast_server::AppState::new(
        ballast_server::Config {
            auth: ballast_server::auth::AuthMode::Off,
            ..ballast_server::Config::default()
        },
        Arc::new(store) as Arc<dyn ballast_store::Store>,
        Arc::new(blobs),
    );
    state.gate = Arc::new(NoProduction);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}{API}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, ballast_server::api::router(state)).await });
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(format!("{base}/{path}")).json(&body).send();

    post("registered-models/create", json!({ "name": "gated" }))
        .await
        .unwrap();
    post(
        "model-versions/create",
        json!({ "name": "gated", "source": "s3://x" }),
    )
    .await
    .unwrap();
    let r = post(
        "model-versions/transition-stage",
        json!({ "name": "gated", "version": "1", "stage": "Production" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "PERMISSION_DENIED");
    assert!(v["message"].as_str().unwrap().contains("accuracy >= 0.9"), "{v}");
    // Nothing moved: not even the intermediate step to Staging.
    let got: Value = client
        .get(format!("{base}/model-versions/get?name=gated&version=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["model_version"]["current_stage"], "None");
    let r = post(
        "model-versions/transition-stage",
        json!({ "name": "gated", "version": "1", "stage": "Staging" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn the_openapi_document_carries_the_mlflow_error_table() {
    let app = spawn_app().await;
    let r = app
        .req(Method::GET, "/v1/openapi.json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.expect("json");
    let table = &doc["x-mlflow-errors"];
    assert_eq!(table["body"]["required"], json!(["error_code", "message"]));
    let codes = table["codes"].as_array().expect("codes");
    let row = |ballast: &str| {
        codes
            .iter()
            .find(|c| c["ballast_code"] == ballast)
            .map(|c| (c["error_code"].clone(), c["status"].clone()))
    };
    assert_eq!(
        row("already_exists"),
        Some((json!("RESOURCE_ALREADY_EXISTS"), json!(400)))
    );
    assert_eq!(
        row("not_found"),
        Some((json!("RESOURCE_DOES_NOT_EXIST"), json!(404)))
    );
    assert_eq!(
        row("invalid_transition"),
        Some((json!("INVALID_STATE"), json!(400)))
    );
    assert!(codes
        .iter()
        .any(|c| c["error_code"] == "NOT_IMPLEMENTED" && c["status"] == 501));
}

#[tokio::test]
async fn mlflow_name_searches_find_mapped_native_and_namespaced_names() {
    let app = spawn_app().await;
    for name in ["Fraud Model", "fraud-model-b", "team-x/fraud-model"] {
        ok(
            &app,
            Method::POST,
            "registered-models/create",
            json!({ "name": name }),
        )
        .await;
    }
    // A native model in the default namespace answers to its model part.
    let r = app
        .req(Method::POST, "/v1/models")
        .json(&json!({ "name": "mlflow/fraud-native" }))
        .send()
        .await
        .expect("send");
    assert!(r.status().is_success(), "{}", r.status());
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["registered_models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let search = |filter: &str| {
        ok(
            &app,
            Method::GET,
            "registered-models/search",
            json!({ "filter": filter }),
        )
    };
    assert_eq!(names(&search("name LIKE 'Fraud%'").await), ["Fraud Model"]);
    assert_eq!(
        names(&search("name LIKE 'fraud%'").await),
        ["fraud-model-b", "fraud-native"]
    );
    assert_eq!(
        names(&search("name LIKE 'team-x/%'").await),
        ["team-x/fraud-model"]
    );
    assert_eq!(names(&search("name = 'Fraud Model'").await), ["Fraud Model"]);
    assert_eq!(
        names(&search("name ILIKE 'fraud%'").await),
        ["Fraud Model", "fraud-model-b", "fraud-native"]
    );
    assert_eq!(
        names(&search("name LIKE 'fraud_model%'").await),
        ["fraud-model-b"]
    );
    assert!(names(&search("name = 'fraud'").await).is_empty());
}
