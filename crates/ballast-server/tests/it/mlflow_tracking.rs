//! The MLflow tracking subset and artifacts proxy over HTTP, called directly as the MLflow
//! client calls them: experiments, runs (update, tags, metric history, search), MLflow 3 logged
//! models (search, tags), artifact deletion, and a non-default MLflow namespace.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{create_token, spawn_app, spawn_app_with, TestApp};

/// An MLflow call as the test principal: GET fields in the query string, others in a JSON body.
async fn call(app: &TestApp, method: Method, path: &str, body: &Value) -> (StatusCode, Value) {
    let url = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/api/2.0/mlflow/{path}")
    };
    let r = if method == Method::GET {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in body.as_object().into_iter().flatten() {
            match v {
                Value::Array(a) => {
                    for x in a {
                        pairs.push((k.clone(), x.as_str().map_or_else(|| x.to_string(), str::to_owned)));
                    }
                }
                Value::String(s) => pairs.push((k.clone(), s.clone())),
                other => pairs.push((k.clone(), other.to_string())),
            }
        }
        app.req(Method::GET, &url).query(&pairs).send().await
    } else {
        app.req(method, &url).json(body).send().await
    }
    .expect("send");
    let status = r.status();
    let v = r.json().await.unwrap_or(Value::Null);
    (status, v)
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let (s, v) = call(app, method, path, &body).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v
}

async fn fails(app: &TestApp, method: Method, path: &str, body: Value, status: u16, code: &str) {
    let (s, v) = call(app, method, path, &body).await;
    assert_eq!(
        (s.as_u16(), v["error_code"].as_str()),
        (status, Some(code)),
        "{path}: {v}"
    );
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: {v}"
    );
}

/// The value of tag `key` in a `[{key, value}]` list.
fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a str> {
    tags.as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str())
}

fn ids(list: &Value, field: &str, id: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let v = if x["info"].is_object() {
                &x["info"][id]
            } else {
                &x[id]
            };
            v.as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn experiments_and_runs_are_created_read_updated_tagged_and_searched() {
    let app = spawn_app().await;
    // Experiments: create (with tags), get, search (GET and POST, with a filter).
    let exp = ok(
        &app,
        Method::POST,
        "experiments/create",
        json!({ "name": "churn", "tags": [{ "key": "team", "value": "risk" }] }),
    )
    .await;
    let exp_id = exp["experiment_id"].as_str().unwrap().to_owned();
    let got = ok(
        &app,
        Method::GET,
        "experiments/get",
        json!({ "experiment_id": exp_id }),
    )
    .await;
    assert_eq!(got["experiment"]["name"], "churn");
    assert_eq!(got["experiment"]["lifecycle_stage"], "active");
    assert_eq!(tag(&got["experiment"]["tags"], "team"), Some("risk"));
    assert_eq!(
        got["experiment"]["artifact_location"],
        format!("mlflow-artifacts:/{exp_id}")
    );
    fails(
        &app,
        Method::GET,
        "experiments/get",
        json!({ "experiment_id": "999" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "experiments/get",
        json!({}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let all = ok(&app, Method::GET, "experiments/search", json!({})).await;
    let mut names: Vec<&str> = all["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["Default", "churn"],
        "the Default experiment exists as on MLflow's server"
    );
    let hits = ok(
        &app,
        Method::POST,
        "experiments/search",
        json!({ "filter": "name = 'churn'" }),
    )
    .await;
    assert_eq!(ids(&hits, "experiments", "experiment_id"), [exp_id.as_str()]);
    let hits = ok(
        &app,
        Method::POST,
        "experiments/search",
        json!({ "filter": "tags.team = 'risk'" }),
    )
    .await;
    assert_eq!(ids(&hits, "experiments", "experiment_id"), [exp_id.as_str()]);
    fails(
        &app,
        Method::POST,
        "experiments/search",
        json!({ "filter": "name = " }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    // Runs: create, get, update, set-tag.
    let mut runs = Vec::new();
    for (i, team) in ["a", "b", "a"].iter().enumerate() {
        let r = ok(
            &app,
            Method::POST,
            "runs/create",
            json!({ "experiment_id": exp_id, "run_name": format!("run-{i}"), "start_time": 1000 + i,
                    "tags": [{ "key": "team", "value": team }] }),
        )
        .await;
        assert_eq!(r["run"]["info"]["status"], "RUNNING");
        runs.push(r["run"]["info"]["run_id"].as_str().unwrap().to_owned());
    }
    fails(
        &app,
        Method::POST,
        "runs/create",
        json!({ "experiment_id": "999" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    let got = ok(&app, Method::GET, "runs/get", json!({ "run_id": runs[0] })).await;
    assert_eq!(got["run"]["info"]["run_name"], "run-0");
    assert_eq!(got["run"]["info"]["experiment_id"], exp_id.as_str());
    assert_eq!(
        got["run"]["info"]["artifact_uri"],
        format!("mlflow-artifacts:/{exp_id}/{}/artifacts", runs[0])
    );
    assert_eq!(tag(&got["run"]["data"]["tags"], "mlflow.runName"), Some("run-0"));
    // `run_uuid`, the older field name, works too.
    let again = ok(&app, Method::GET, "runs/get", json!({ "run_uuid": runs[0] })).await;
    assert_eq!(again["run"]["info"]["run_id"], runs[0].as_str());
    fails(
        &app,
        Method::GET,
        "runs/get",
        json!({ "run_id": "nope" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "runs/get",
        json!({}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    let updated = ok(
        &app,
        Method::POST,
        "runs/update",
        json!({ "run_id": runs[0], "status": "FINISHED", "end_time": 5000, "run_name": "renamed" }),
    )
    .await;
    assert_eq!(updated["run_info"]["status"], "FINISHED");
    assert_eq!(updated["run_info"]["end_time"], 5000);
    assert_eq!(updated["run_info"]["run_name"], "renamed");
    fails(
        &app,
        Method::POST,
        "runs/update",
        json!({ "run_id": "nope", "status": "FAILED" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::POST,
        "runs/update",
        json!({ "run_id": runs[0], "end_time": "later" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    ok(
        &app,
        Method::POST,
        "runs/set-tag",
        json!({ "run_id": runs[0], "key": "stage", "value": "eval" }),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "runs/set-tag",
        json!({ "run_id": runs[0], "key": "stage", "value": "final" }),
    )
    .await;
    fails(
        &app,
        Method::POST,
        "runs/set-tag",
        json!({ "run_id": runs[0] }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let got = ok(&app, Method::GET, "runs/get", json!({ "run_id": runs[0] })).await;
    let tags = &got["run"]["data"]["tags"];
    assert_eq!(
        tag(tags, "stage"),
        Some("final"),
        "a tag set twice keeps the last value"
    );
    assert_eq!(tag(tags, "mlflow.runName"), Some("renamed"));
    assert_eq!(
        tags.as_array()
            .unwrap()
            .iter()
            .filter(|t| t["key"] == "stage")
            .count(),
        1
    );

    // Metric history: every logged point, while the run shows the latest.
    for (step, value) in [(0, 0.5), (1, 0.7), (2, 0.9)] {
        ok(
            &app,
            Method::POST,
            "runs/log-metric",
            json!({ "run_id": runs[1], "key": "acc", "value": value, "timestamp": 10 + step, "step": step }),
        )
        .await;
    }
    ok(
        &app,
        Method::POST,
        "runs/log-metric",
        json!({ "run_id": runs[1], "key": "loss", "value": 1.0, "timestamp": 10, "step": 0 }),
    )
    .await;
    let h = ok(
        &app,
        Method::GET,
        "metrics/get-history",
        json!({ "run_id": runs[1], "metric_key": "acc" }),
    )
    .await;
    let points: Vec<(i64, f64)> = h["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(points, [(0, 0.5), (1, 0.7), (2, 0.9)]);
    let none = ok(
        &app,
        Method::GET,
        "metrics/get-history",
        json!({ "run_id": runs[1], "metric_key": "f1" }),
    )
    .await;
    assert_eq!(none["metrics"], json!([]));
    fails(
        &app,
        Method::GET,
        "metrics/get-history",
        json!({ "run_id": "nope", "metric_key": "acc" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::GET,
        "metrics/get-history",
        json!({ "run_id": runs[1] }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    let got = ok(&app, Method::GET, "runs/get", json!({ "run_id": runs[1] })).await;
    let latest: Vec<(String, f64)> = got["run"]["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["key"].as_str().unwrap().to_owned(),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(latest.contains(&("acc".to_owned(), 0.9)), "{latest:?}");
    assert!(
        got["run"].get("history").is_none(),
        "the history is not part of the run"
    );

    // Search: by experiment, by tag and attribute filters, paged, newest first.
    let all = ok(
        &app,
        Method::POST,
        "runs/search",
        json!({ "experiment_ids": [exp_id] }),
    )
    .await;
    assert_eq!(
        ids(&all, "runs", "run_id"),
        [runs[2].clone(), runs[1].clone(), runs[0].clone()]
    );
    let by_get = ok(
        &app,
        Method::GET,
        "runs/search",
        json!({ "experiment_ids": [exp_id.clone()] }),
    )
    .await;
    assert_eq!(by_get["runs"], all["runs"]);
    let team_a = ok(
        &app,
        Method::POST,
        "runs/search",
        json!({ "experiment_ids": [exp_id], "filter": "tags.team = 'a'" }),
    )
    .await;
    assert_eq!(ids(&team_a, "runs", "run_id"), [runs[2].clone(), runs[0].clone()]);
    let finished = ok(
        &app,
        Method::POST,
        "runs/search",
        json!({ "experiment_ids": [exp_id], "filter": "attributes.status = 'FINISHED'" }),
    )
    .await;
    assert_eq!(ids(&finished, "runs", "run_id"), [runs[0].clone()]);
    let other = ok(
        &app,
        Method::POST,
        "runs/search",
        json!({ "experiment_ids": ["0"] }),
    )
    .await;
    assert_eq!(other["runs"], json!([]));
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({ "experiment_ids": [exp_id], "max_results": 2 });
        if let Some(t) = &token {
            body["page_token"] = json!(t);
        }
        let page = ok(&app, Method::POST, "runs/search", body).await;
        seen.extend(ids(&page, "runs", "run_id"));
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all, "runs", "run_id"), "pages cover every run once");
    fails(
        &app,
        Method::POST,
        "runs/search",
        json!({ "filter": "tags.team = " }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    fails(
        &app,
        Method::POST,
        "runs/search",
        json!({ "page_token": "garbage" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
}

#[tokio::test]
async fn logged_models_are_searched_and_tagged() {
    let app = spawn_app().await;
    let exp = ok(&app, Method::POST, "experiments/create", json!({ "name": "lm" })).await;
    let exp_id = exp["experiment_id"].as_str().unwrap().to_owned();
    let run = ok(
        &app,
        Method::POST,
        "runs/create",
        json!({ "experiment_id": exp_id }),
    )
    .await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let mut models = Vec::new();
    for (name, flavor) in [("first", "sklearn"), ("second", "pytorch")] {
        let m = ok(
            &app,
            Method::POST,
            "logged-models",
            json!({ "experiment_id": exp_id, "name": name, "source_run_id": run_id,
                    "tags": [{ "key": "flavor", "value": flavor }],
                    "params": [{ "key": "depth", "value": "3" }] }),
        )
        .await;
        let info = &m["model"]["info"];
        assert_eq!(info["status"], "LOGGED_MODEL_PENDING");
        assert_eq!(info["source_run_id"], run_id.as_str());
        let id = info["model_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("m-"), "{id}");
        models.push(id);
    }
    fails(
        &app,
        Method::POST,
        "logged-models",
        json!({}),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    fails(
        &app,
        Method::POST,
        "logged-models",
        json!({ "experiment_id": "999" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    // Finalize, tags (set, replace, delete), params.
    let lm = |id: &str| format!("logged-models/{id}");
    let fin = ok(
        &app,
        Method::PATCH,
        &lm(&models[0]),
        json!({ "status": "LOGGED_MODEL_READY" }),
    )
    .await;
    assert_eq!(fin["model"]["info"]["status"], "LOGGED_MODEL_READY");
    let tagged = ok(
        &app,
        Method::PATCH,
        &format!("{}/tags", lm(&models[0])),
        json!({ "tags": [{ "key": "flavor", "value": "xgboost" }, { "key": "owner", "value": "dana" }] }),
    )
    .await;
    let tags = &tagged["model"]["info"]["tags"];
    assert_eq!(
        tag(tags, "flavor"),
        Some("xgboost"),
        "a tag set again is replaced"
    );
    assert_eq!(tag(tags, "owner"), Some("dana"));
    let untagged = ok(
        &app,
        Method::DELETE,
        &format!("{}/tags/owner", lm(&models[0])),
        json!({}),
    )
    .await;
    assert_eq!(tag(&untagged["model"]["info"]["tags"], "owner"), None);
    ok(
        &app,
        Method::POST,
        &format!("{}/params", lm(&models[1])),
        json!({ "params": [{ "key": "lr", "value": "0.01" }] }),
    )
    .await;
    let got = ok(&app, Method::GET, &lm(&models[1]), json!({})).await;
    assert_eq!(tag(&got["model"]["data"]["params"], "lr"), Some("0.01"));
    assert_eq!(tag(&got["model"]["data"]["params"], "depth"), Some("3"));
    fails(
        &app,
        Method::GET,
        &lm("m-nope"),
        json!({}),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::PATCH,
        &format!("{}/tags", lm("m-nope")),
        json!({ "tags": [] }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    fails(
        &app,
        Method::PATCH,
        &format!("{}/tags", lm(&models[0])),
        json!({ "tags": "flavor=x" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;

    // Search: by experiment, by tag, by attribute; paged, newest first.
    let all = ok(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "experiment_ids": [exp_id] }),
    )
    .await;
    assert_eq!(
        ids(&all, "models", "model_id"),
        [models[1].clone(), models[0].clone()]
    );
    let xgb = ok(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "experiment_ids": [exp_id], "filter": "tags.flavor = 'xgboost'" }),
    )
    .await;
    assert_eq!(ids(&xgb, "models", "model_id"), [models[0].clone()]);
    let named = ok(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "filter": "name = 'second'" }),
    )
    .await;
    assert_eq!(ids(&named, "models", "model_id"), [models[1].clone()]);
    let none = ok(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "experiment_ids": ["0"] }),
    )
    .await;
    assert_eq!(none["models"], json!([]));
    let page = ok(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "max_results": 1 }),
    )
    .await;
    assert_eq!(ids(&page, "models", "model_id"), [models[1].clone()]);
    let token = page["next_page_token"].as_str().unwrap().to_owned();
    let page = ok(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "max_results": 1, "page_token": token }),
    )
    .await;
    assert_eq!(ids(&page, "models", "model_id"), [models[0].clone()]);
    assert!(page.get("next_page_token").is_none());
    fails(
        &app,
        Method::POST,
        "logged-models/search",
        json!({ "filter": "name ~ 'x'" }),
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
}

const ART: &str = "/api/2.0/mlflow-artifacts/artifacts";

async fn put_artifact(app: &TestApp, path: &str, bytes: &[u8]) {
    let r = app
        .req(Method::PUT, &format!("{ART}/{path}"))
        .body(bytes.to_vec())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), StatusCode::OK);
}

async fn get_artifact(app: &TestApp, path: &str) -> (StatusCode, Vec<u8>) {
    let r = app.get(&format!("{ART}/{path}")).send().await.expect("send");
    let s = r.status();
    (s, r.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn artifacts_are_deleted_over_http_but_registered_versions_never_are() {
    let app = spawn_app().await;
    put_artifact(&app, "0/r1/artifacts/model/MLmodel", b"flavors").await;
    put_artifact(&app, "0/r1/artifacts/model/data/w.bin", b"weights").await;
    put_artifact(&app, "0/r1/artifacts/notes.txt", b"notes").await;
    ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "kept" }),
    )
    .await;
    ok(
        &app,
        Method::POST,
        "model-versions/create",
        json!({ "name": "kept", "source": "mlflow-artifacts:/0/r1/artifacts/model" }),
    )
    .await;

    // One file.
    let (s, v) = call(
        &app,
        Method::DELETE,
        &format!("{ART}/0/r1/artifacts/notes.txt"),
        &json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        get_artifact(&app, "0/r1/artifacts/notes.txt").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = call(
        &app,
        Method::DELETE,
        &format!("{ART}/0/r1/artifacts/notes.txt"),
        &json!(null),
    )
    .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RESOURCE_DOES_NOT_EXIST")),
        "{v}"
    );
    // A directory: everything under it.
    let (s, v) = call(
        &app,
        Method::DELETE,
        &format!("{ART}/0/r1/artifacts/model"),
        &json!(null),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, listed) = call(&app, Method::GET, ART, &json!({ "path": "0/r1/artifacts" })).await;
    assert_eq!((s, &listed["files"]), (StatusCode::OK, &json!([])), "{listed}");
    assert_eq!(
        get_artifact(&app, "0/r1/artifacts/model/data/w.bin").await.0,
        StatusCode::NOT_FOUND
    );
    // A bad path is refused.
    let (s, v) = call(
        &app,
        Method::DELETE,
        &format!("{ART}/0/r1/..%2F..%2Fx"),
        &json!(null),
    )
    .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")),
        "{v}"
    );

    // The registered version still has every byte, and its paths cannot be deleted or written.
    let native = "ballast-versions/mlflow/kept/1";
    assert_eq!(
        get_artifact(&app, &format!("{native}/data/w.bin")).await,
        (StatusCode::OK, b"weights".to_vec())
    );
    for path in [
        format!("{native}/MLmodel"),
        native.to_owned(),
        "ballast-versions/mlflow/kept".into(),
    ] {
        let (s, v) = call(&app, Method::DELETE, &format!("{ART}/{path}"), &json!(null)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(
            v["message"].as_str().unwrap_or("").contains("immutable"),
            "{path}: {v}"
        );
    }
    assert_eq!(
        get_artifact(&app, &format!("{native}/MLmodel")).await,
        (StatusCode::OK, b"flavors".to_vec())
    );
    let version: ballast_api::Version = app.get_ok("/v1/models/mlflow/kept/versions/1").await;
    assert_eq!(version.files.len(), 2);
    // Deletions through the proxy leave the audit trail alone (tracking records are not
    // audited); the registered version's entries are still there.
    let trail = app.audit_all().await;
    assert!(
        trail
            .iter()
            .any(|e| e.action == "version.seal" && e.target.starts_with("mlflow/kept")),
        "{trail:?}"
    );
}

#[tokio::test]
async fn a_non_default_mlflow_namespace_holds_bare_names_and_tracking() {
    let app = spawn_app_with(|c| c.mlflow_default_namespace = "ml-team".into()).await;
    let created = ok(
        &app,
        Method::POST,
        "registered-models/create",
        json!({ "name": "Churn Model" }),
    )
    .await;
    assert_eq!(created["registered_model"]["name"], "Churn Model");
    let _: Value = app.get_ok("/v1/models/ml-team/churn-model").await;
    let (s, _) = call(&app, Method::GET, "/v1/models/mlflow/churn-model", &json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing lands in the built-in default");
    // Native models: bare in the configured namespace, `ns/model` elsewhere.
    app.create_model("ml-team/native").await;
    app.create_model("mlflow/elsewhere").await;
    let found = ok(&app, Method::GET, "registered-models/search", json!({})).await;
    let mut names: Vec<&str> = found["registered_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Churn Model", "mlflow/elsewhere", "native"]);
    ok(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "native" }),
    )
    .await;
    fails(
        &app,
        Method::GET,
        "registered-models/get",
        json!({ "name": "elsewhere" }),
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    // Roles follow the setting: bare names, tracking and proxy files are in `ml-team`.
    let team = create_token(
        &app.base,
        &app.admin_token,
        "team-writer",
        &[("ml-team", "writer")],
    )
    .await;
    let outsider = create_token(
        &app.base,
        &app.admin_token,
        "mlflow-writer",
        &[("mlflow", "writer")],
    )
    .await;
    let c = reqwest::Client::new();
    for (token, want) in [(&team, StatusCode::OK), (&outsider, StatusCode::FORBIDDEN)] {
        for (path, body) in [
            (
                "registered-models/set-tag",
                json!({ "name": "Churn Model", "key": "k", "value": "v" }),
            ),
            ("experiments/create", json!({ "name": format!("exp-{want}") })),
        ] {
            let r = c
                .post(app.url(&format!("/api/2.0/mlflow/{path}")))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), want, "{path}");
        }
        let r = c
            .put(app.url(&format!("{ART}/0/x/artifacts/{}.txt", want.as_u16())))
            .bearer_auth(token)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "artifact upload");
    }
    // `mlflow/...` names are a namespace like any other: the outsider may write there.
    let r = c
        .post(app.url("/api/2.0/mlflow/registered-models/set-tag"))
        .bearer_auth(&outsider)
        .json(&json!({ "name": "mlflow/elsewhere", "key": "k", "value": "v" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
