//! The tracking subset that MLflow's registration flows call — experiments, runs (params,
//! metrics, tags) and MLflow 3 logged models — kept as JSON documents in MLflow's own shapes.
//! This is not a general experiment tracker: it is the lineage behind each version. A version
//! registered from a run copies the run's id, experiment, parameters and metrics into its
//! Ballast metadata.

use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use ballast_api::VersionMetadata;
use ballast_core::ErrorCode;
use ballast_store::mlflow::MlflowObject;
use serde_json::{json, Map, Value};

use super::filter::{self, Key};
use super::models::{order_key, page};
use super::{MlError, MlRequest, MlResult};
use crate::api::extract::Params;
use crate::state::AppState;

/// Serialises read-modify-write of tracking documents in this process (log-batch on one run
/// from several threads must not lose an update).
static WRITE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EXPERIMENT: &str = "experiment";
const RUN: &str = "run";
const LOGGED_MODEL: &str = "logged_model";

pub(super) fn routes(r: axum::Router<AppState>, prefix: &str) -> axum::Router<AppState> {
    let e = format!("{prefix}/experiments");
    let runs = format!("{prefix}/runs");
    let lm = format!("{prefix}/logged-models");
    r.route(&format!("{e}/create"), post(create_experiment))
        .route(&format!("{e}/get"), get(get_experiment))
        .route(&format!("{e}/get-by-name"), get(get_experiment_by_name))
        .route(
            &format!("{e}/search"),
            post(search_experiments).get(search_experiments),
        )
        .route(&format!("{runs}/create"), post(create_run))
        .route(&format!("{runs}/get"), get(get_run))
        .route(&format!("{runs}/update"), post(update_run))
        .route(&format!("{runs}/log-batch"), post(log_batch))
        .route(&format!("{runs}/log-metric"), post(log_metric))
        .route(&format!("{runs}/log-parameter"), post(log_param))
        .route(&format!("{runs}/set-tag"), post(set_run_tag))
        .route(&format!("{runs}/log-inputs"), post(ignore_run_io))
        .route(&format!("{runs}/outputs"), post(log_outputs))
        .route(&format!("{runs}/search"), post(search_runs).get(search_runs))
        .route(&format!("{prefix}/metrics/get-history"), get(metric_history))
        .route(&lm, post(create_logged_model))
        .route(&format!("{lm}/search"), post(search_logged_models))
        .route(
            &format!("{lm}/{{model_id}}"),
            get(get_logged_model).patch(finalize_logged_model),
        )
        .route(
            &format!("{lm}/{{model_id}}/tags"),
            axum::routing::patch(set_logged_model_tags),
        )
        .route(
            &format!("{lm}/{{model_id}}/tags/{{tag_key}}"),
            axum::routing::delete(delete_logged_model_tag),
        )
        .route(
            &format!("{lm}/{{model_id}}/params"),
            post(log_logged_model_params),
        )
}

use ballast_store::unix_ms as now_ms;

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn kv(pairs: &[(String, String)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect(),
    )
}

/// Sets `key` in a `[{key, value}]` array (replacing an existing entry).
fn upsert_kv(arr: &mut Value, key: &str, value: Value) {
    if !arr.is_array() {
        *arr = json!([]);
    }
    if let Some(a) = arr.as_array_mut() {
        a.retain(|e| e.get("key").and_then(Value::as_str) != Some(key));
        a.push(json!({ "key": key, "value": value }));
    }
}

async fn get_obj(state: &AppState, kind: &str, id: &str, what: &str) -> MlResult<MlflowObject> {
    state.store.mlflow_get_object(kind, id).await.map_err(|e| {
        if e.code == ErrorCode::NotFound {
            MlError::not_found(format!("{what} '{id}' does not exist."))
        } else {
            e.into()
        }
    })
}

async fn put(
    state: &AppState,
    r: &MlRequest,
    obj: MlflowObject,
    create_only: bool,
) -> MlResult<MlflowObject> {
    Ok(state.store.mlflow_put_object(&r.rc.ctx, obj, create_only).await?)
}

fn experiment_doc(id: &str, name: &str, tags: &[(String, String)]) -> Value {
    let t = now_ms();
    json!({
        "experiment_id": id,
        "name": name,
        "artifact_location": format!("mlflow-artifacts:/{id}"),
        "lifecycle_stage": "active",
        "creation_time": t,
        "last_update_time": t,
        "tags": kv(tags),
    })
}

/// The `Default` experiment (id 0), created on first use as MLflow's server does.
async fn ensure_default(state: &AppState, r: &MlRequest) -> MlResult<()> {
    if state.store.mlflow_get_object(EXPERIMENT, "0").await.is_err() {
        let obj = MlflowObject {
            kind: EXPERIMENT.into(),
            id: "0".into(),
            name: Some("Default".into()),
            body: experiment_doc("0", "Default", &[]),
        };
        match state.store.mlflow_put_object(&r.rc.ctx, obj, true).await {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn create_experiment(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    if name.trim().is_empty() || name.len() > 500 {
        return Err(MlError::invalid("experiment names are 1-500 characters"));
    }
    ensure_default(&state, &r).await?;
    let _guard = WRITE_LOCK.lock().await;
    let n = state.store.mlflow_objects(EXPERIMENT).await?.len();
    let id = n.to_string();
    let obj = MlflowObject {
        kind: EXPERIMENT.into(),
        id: id.clone(),
        name: Some(name.clone()),
        body: experiment_doc(&id, &name, &r.pairs("tags")?),
    };
    put(&state, &r, obj, true).await.map_err(|e| {
        if e.code == ErrorCode::AlreadyExists {
            MlError::new(
                ErrorCode::AlreadyExists,
                format!("Experiment(name={name}) already exists."),
            )
        } else {
            e
        }
    })?;
    Ok(Json(json!({ "experiment_id": id })))
}

async fn get_experiment(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    ensure_default(&state, &r).await?;
    let id = r.need("experiment_id")?;
    let e = get_obj(&state, EXPERIMENT, &id, "Experiment").await?;
    Ok(Json(json!({ "experiment": e.body })))
}

async fn get_experiment_by_name(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    ensure_default(&state, &r).await?;
    let name = r.need("experiment_name")?;
    let e = state
        .store
        .mlflow_object_by_name(EXPERIMENT, &name)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::NotFound {
                MlError::not_found(format!("Could not find experiment with name '{name}'"))
            } else {
                e.into()
            }
        })?;
    Ok(Json(json!({ "experiment": e.body })))
}

async fn search_experiments(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    ensure_default(&state, &r).await?;
    let clauses = filter::parse(&r.str("filter").unwrap_or_default())?;
    let mut out = Vec::new();
    for e in state.store.mlflow_objects(EXPERIMENT).await? {
        if doc_matches(&clauses, &e.body, &e.body["tags"])? {
            out.push(e.body);
        }
    }
    out.reverse();
    Ok(Json(json!({ "experiments": out })))
}

/// A filter over a document's top-level (or `info`) fields and its tags.
fn doc_matches(clauses: &[filter::Clause], fields: &Value, tags: &Value) -> MlResult<bool> {
    for c in clauses {
        let v = match &c.key {
            Key::Tag(t) => tags
                .as_array()
                .and_then(|a| a.iter().find(|e| e["key"].as_str() == Some(t.as_str())))
                .and_then(|e| e["value"].as_str().map(str::to_owned)),
            Key::Attr(a) => {
                let a = match a.as_str() {
                    "run_id" => "run_uuid",
                    other => other,
                };
                match &fields[a] {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            }
        };
        if !filter::matches(c, v.as_deref())? {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn create_run(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    ensure_default(&state, &r).await?;
    let exp = r.str("experiment_id").unwrap_or_else(|| "0".into());
    get_obj(&state, EXPERIMENT, &exp, "Experiment").await?;
    let id = new_id();
    let tags = r.pairs("tags")?;
    let run_name = r
        .str("run_name")
        .or_else(|| {
            tags.iter()
                .find(|(k, _)| k == "mlflow.runName")
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| format!("run-{}", &id[..8]));
    let mut tag_doc = kv(&tags);
    upsert_kv(&mut tag_doc, "mlflow.runName", json!(run_name));
    let body = json!({
        "info": {
            "run_id": id, "run_uuid": id, "run_name": run_name, "experiment_id": exp,
            "user_id": r.str("user_id").unwrap_or_default(), "status": "RUNNING",
            "start_time": r.int("start_time")?.unwrap_or_else(now_ms),
            "artifact_uri": format!("mlflow-artifacts:/{exp}/{id}/artifacts"),
            "lifecycle_stage": "active",
        },
        "data": { "metrics": [], "params": [], "tags": tag_doc },
        "inputs": {},
        "outputs": {},
    });
    let obj = put(
        &state,
        &r,
        MlflowObject {
            kind: RUN.into(),
            id,
            name: None,
            body,
        },
        true,
    )
    .await?;
    Ok(Json(json!({ "run": obj.body })))
}

/// A run as MLflow shows it (without the metric history kept beside it).
fn run_view(mut body: Value) -> Value {
    if let Some(o) = body.as_object_mut() {
        o.remove("history");
    }
    body
}

async fn metric_history(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let id = run_id_of(&r)?;
    let key = r.need("metric_key")?;
    let run = get_obj(&state, RUN, &id, "Run").await?;
    let metrics: Vec<Value> = run.body["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|m| m["key"].as_str() == Some(key.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({ "metrics": metrics })))
}

fn run_id_of(r: &MlRequest) -> MlResult<String> {
    r.str("run_id")
        .or_else(|| r.str("run_uuid"))
        .ok_or_else(|| MlError::invalid("Missing value for required parameter 'run_id'."))
}

async fn get_run(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let id = run_id_of(&r)?;
    let run = get_obj(&state, RUN, &id, "Run").await?;
    Ok(Json(json!({ "run": run_view(run.body) })))
}

async fn update_run(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let id = run_id_of(&r)?;
    let _guard = WRITE_LOCK.lock().await;
    let mut run = get_obj(&state, RUN, &id, "Run").await?;
    if let Some(s) = r.str("status") {
        run.body["info"]["status"] = json!(s);
    }
    if let Some(t) = r.int("end_time")? {
        run.body["info"]["end_time"] = json!(t);
    }
    if let Some(n) = r.str("run_name") {
        run.body["info"]["run_name"] = json!(n);
        upsert_kv(&mut run.body["data"]["tags"], "mlflow.runName", json!(n));
    }
    let run = put(&state, &r, run, false).await?;
    Ok(Json(json!({ "run_info": run.body["info"] })))
}

async fn log_batch(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let metrics = match r.raw("metrics") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    apply_run_data(&state, &r, metrics, r.pairs("params")?, r.pairs("tags")?).await
}

async fn log_metric(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let m = json!({
        "key": r.need("key")?,
        "value": r.float("value")?.ok_or_else(|| MlError::invalid("Missing value for required parameter 'value'."))?,
        "timestamp": r.int("timestamp")?.unwrap_or_else(now_ms),
        "step": r.int("step")?.unwrap_or(0),
    });
    apply_run_data(&state, &r, vec![m], Vec::new(), Vec::new()).await
}

async fn log_param(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let p = (r.need("key")?, r.str("value").unwrap_or_default());
    apply_run_data(&state, &r, Vec::new(), vec![p], Vec::new()).await
}

async fn set_run_tag(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let t = (r.need("key")?, r.str("value").unwrap_or_default());
    apply_run_data(&state, &r, Vec::new(), Vec::new(), vec![t]).await
}

/// Adds metrics (keeping the latest value per key), params (a changed value is refused, as
/// MLflow does) and tags to a run.
async fn apply_run_data(
    state: &AppState,
    r: &MlRequest,
    metrics: Vec<Value>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
) -> MlResult<Json<Value>> {
    let id = run_id_of(r)?;
    let _guard = WRITE_LOCK.lock().await;
    let mut run = get_obj(state, RUN, &id, "Run").await?;
    for m in metrics {
        let key = m["key"]
            .as_str()
            .ok_or_else(|| MlError::invalid("every metric needs a 'key'"))?
            .to_owned();
        let value = m["value"]
            .as_f64()
            .or_else(|| m["value"].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| MlError::invalid(format!("metric {key:?} needs a numeric 'value'")))?;
        let step = m["step"].as_i64().unwrap_or(0);
        let ts = m["timestamp"].as_i64().unwrap_or_else(now_ms);
        let newer = run.body["data"]["metrics"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["key"].as_str() == Some(key.as_str())))
            .is_none_or(|e| {
                (step, ts)
                    >= (
                        e["step"].as_i64().unwrap_or(0),
                        e["timestamp"].as_i64().unwrap_or(0),
                    )
            });
        if !run.body["history"].is_array() {
            run.body["history"] = json!([]);
        }
        if let Some(h) = run.body["history"].as_array_mut() {
            h.push(json!({ "key": key, "value": value, "timestamp": ts, "step": step }));
        }
        let data = &mut run.body["data"];
        if newer {
            if !data["metrics"].is_array() {
                data["metrics"] = json!([]);
            }
            if let Some(a) = data["metrics"].as_array_mut() {
                a.retain(|e| e["key"].as_str() != Some(key.as_str()));
                a.push(json!({ "key": key, "value": value, "timestamp": ts, "step": step }));
            }
        }
    }
    let data = &mut run.body["data"];
    for (k, v) in &params {
        let existing = data["params"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["key"].as_str() == Some(k.as_str())))
            .and_then(|e| e["value"].as_str().map(str::to_owned));
        match existing {
            Some(old) if &old != v => {
                return Err(MlError::invalid(format!(
                    "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{id}'. Attempted logging new value '{v}'."
                )))
            }
            _ => upsert_kv(&mut data["params"], k, json!(v)),
        }
    }
    for (k, v) in &tags {
        upsert_kv(&mut data["tags"], k, json!(v));
    }
    put(state, r, run, false).await?;
    Ok(Json(json!({})))
}

async fn ignore_run_io(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    get_obj(&state, RUN, &run_id_of(&r)?, "Run").await?;
    Ok(Json(json!({})))
}

async fn log_outputs(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let id = run_id_of(&r)?;
    let _guard = WRITE_LOCK.lock().await;
    let mut run = get_obj(&state, RUN, &id, "Run").await?;
    if let Some(Value::Array(models)) = r.raw("models") {
        let mut outs = run.body["outputs"]["model_outputs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        outs.extend(models.iter().cloned());
        run.body["outputs"]["model_outputs"] = Value::Array(outs);
    }
    put(&state, &r, run, false).await?;
    Ok(Json(json!({})))
}

async fn search_runs(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let exps = r.list("experiment_ids");
    let clauses = filter::parse(&r.str("filter").unwrap_or_default())?;
    let max = usize::try_from(r.int("max_results")?.unwrap_or(1000).clamp(1, 50_000)).unwrap_or(1000);
    let offset = page::decode_token(r.str("page_token"))?;
    let mut hits = Vec::new();
    for run in state.store.mlflow_objects(RUN).await? {
        let info = &run.body["info"];
        if !exps.is_empty() && !exps.iter().any(|e| info["experiment_id"].as_str() == Some(e)) {
            continue;
        }
        if doc_matches(&clauses, info, &run.body["data"]["tags"])? {
            hits.push(run_view(run.body));
        }
    }
    hits.reverse();
    for o in r.list("order_by") {
        order_key(&o)?;
    }
    let total = hits.len();
    let runs: Vec<Value> = hits.into_iter().skip(offset).take(max).collect();
    let mut body = json!({ "runs": runs });
    if offset + max < total {
        body["next_page_token"] = json!(page::encode_token(offset + max));
    }
    Ok(Json(body))
}

async fn create_logged_model(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    ensure_default(&state, &r).await?;
    let exp = r.need("experiment_id")?;
    get_obj(&state, EXPERIMENT, &exp, "Experiment").await?;
    let id = format!("m-{}", new_id());
    let t = now_ms();
    let mut info = Map::new();
    info.insert("model_id".into(), json!(id));
    info.insert("experiment_id".into(), json!(exp));
    info.insert(
        "name".into(),
        json!(r.str("name").unwrap_or_else(|| "model".into())),
    );
    info.insert(
        "artifact_uri".into(),
        json!(format!("mlflow-artifacts:/{exp}/models/{id}/artifacts")),
    );
    info.insert("status".into(), json!("LOGGED_MODEL_PENDING"));
    info.insert("creation_timestamp_ms".into(), json!(t));
    info.insert("last_updated_timestamp_ms".into(), json!(t));
    info.insert("tags".into(), kv(&r.pairs("tags")?));
    info.insert("lifecycle_stage".into(), json!("active"));
    for k in ["source_run_id", "model_type"] {
        if let Some(v) = r.str(k) {
            info.insert(k.into(), json!(v));
        }
    }
    let body = json!({ "info": info, "data": { "params": kv(&r.pairs("params")?), "metrics": [] } });
    let obj = put(
        &state,
        &r,
        MlflowObject {
            kind: LOGGED_MODEL.into(),
            id,
            name: None,
            body,
        },
        true,
    )
    .await?;
    Ok(Json(json!({ "model": obj.body })))
}

async fn get_logged_model(State(state): State<AppState>, p: Params) -> MlResult<Json<Value>> {
    let m = get_obj(&state, LOGGED_MODEL, p.get("model_id"), "Logged model").await?;
    Ok(Json(json!({ "model": m.body })))
}

async fn update_logged_model(
    state: &AppState,
    r: &MlRequest,
    id: &str,
    change: impl FnOnce(&mut Value),
) -> MlResult<Json<Value>> {
    let _guard = WRITE_LOCK.lock().await;
    let mut m = get_obj(state, LOGGED_MODEL, id, "Logged model").await?;
    change(&mut m.body);
    m.body["info"]["last_updated_timestamp_ms"] = json!(now_ms());
    let m = put(state, r, m, false).await?;
    Ok(Json(json!({ "model": m.body })))
}

async fn finalize_logged_model(
    State(state): State<AppState>,
    p: Params,
    r: MlRequest,
) -> MlResult<Json<Value>> {
    let status = r.str("status").unwrap_or_else(|| "LOGGED_MODEL_READY".into());
    update_logged_model(&state, &r, p.get("model_id"), |b| {
        b["info"]["status"] = json!(status)
    })
    .await
}

async fn set_logged_model_tags(
    State(state): State<AppState>,
    p: Params,
    r: MlRequest,
) -> MlResult<Json<Value>> {
    let tags = r.pairs("tags")?;
    update_logged_model(&state, &r, p.get("model_id"), |b| {
        for (k, v) in &tags {
            upsert_kv(&mut b["info"]["tags"], k, json!(v));
        }
    })
    .await
}

async fn delete_logged_model_tag(
    State(state): State<AppState>,
    p: Params,
    r: MlRequest,
) -> MlResult<Json<Value>> {
    let key = p.get("tag_key").to_owned();
    update_logged_model(&state, &r, p.get("model_id"), |b| {
        if let Some(a) = b["info"]["tags"].as_array_mut() {
            a.retain(|e| e["key"].as_str() != Some(key.as_str()));
        }
    })
    .await
}

async fn log_logged_model_params(
    State(state): State<AppState>,
    p: Params,
    r: MlRequest,
) -> MlResult<Json<Value>> {
    let params = r.pairs("params")?;
    update_logged_model(&state, &r, p.get("model_id"), |b| {
        for (k, v) in &params {
            upsert_kv(&mut b["data"]["params"], k, json!(v));
        }
    })
    .await
}

async fn search_logged_models(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let exps = r.list("experiment_ids");
    let clauses = filter::parse(&r.str("filter").unwrap_or_default())?;
    let max = usize::try_from(r.int("max_results")?.unwrap_or(100).clamp(1, 10_000)).unwrap_or(100);
    let offset = page::decode_token(r.str("page_token"))?;
    let mut hits = Vec::new();
    for m in state.store.mlflow_objects(LOGGED_MODEL).await? {
        let info = &m.body["info"];
        if !exps.is_empty() && !exps.iter().any(|e| info["experiment_id"].as_str() == Some(e)) {
            continue;
        }
        if doc_matches(&clauses, info, &info["tags"])? {
            hits.push(m.body);
        }
    }
    hits.reverse();
    let total = hits.len();
    let models: Vec<Value> = hits.into_iter().skip(offset).take(max).collect();
    let mut body = json!({ "models": models });
    if offset + max < total {
        body["next_page_token"] = json!(page::encode_token(offset + max));
    }
    Ok(Json(body))
}

/// The artifact URI of a logged model.
pub(crate) async fn logged_model_uri(state: &AppState, id: &str) -> MlResult<Option<String>> {
    Ok(state
        .store
        .mlflow_get_object(LOGGED_MODEL, id)
        .await
        .ok()
        .and_then(|m| m.body["info"]["artifact_uri"].as_str().map(str::to_owned)))
}

/// The run a logged model came from.
pub(crate) async fn logged_model_run(state: &AppState, id: &str) -> MlResult<Option<String>> {
    if id.is_empty() {
        return Ok(None);
    }
    Ok(state
        .store
        .mlflow_get_object(LOGGED_MODEL, id)
        .await
        .ok()
        .and_then(|m| m.body["info"]["source_run_id"].as_str().map(str::to_owned)))
}

/// The artifact URI of a run.
pub(crate) async fn run_artifact_uri(state: &AppState, id: &str) -> MlResult<Option<String>> {
    Ok(state
        .store
        .mlflow_get_object(RUN, id)
        .await
        .ok()
        .and_then(|m| m.body["info"]["artifact_uri"].as_str().map(str::to_owned)))
}

/// Copies a run's id, experiment, parameters and (latest) metrics into version metadata.
pub(crate) async fn fill_lineage(state: &AppState, run_id: &str, m: &mut VersionMetadata) -> MlResult<()> {
    m.lineage.source_run_id = Some(run_id.to_owned());
    let Ok(run) = state.store.mlflow_get_object(RUN, run_id).await else {
        // A run this server does not track (another tracking server): its id is all we know.
        return Ok(());
    };
    m.lineage.source_experiment_id = run.body["info"]["experiment_id"].as_str().map(str::to_owned);
    if let Some(params) = run.body["data"]["params"].as_array() {
        for p in params {
            if let (Some(k), Some(v)) = (p["key"].as_str(), p["value"].as_str()) {
                m.hyperparameters.insert(k.to_owned(), json!(v));
            }
        }
    }
    if let Some(metrics) = run.body["data"]["metrics"].as_array() {
        for x in metrics {
            if let (Some(k), Some(v)) = (x["key"].as_str(), x["value"].as_f64()) {
                if v.is_finite() {
                    m.metrics.insert(k.to_owned(), v);
                }
            }
        }
    }
    Ok(())
}
