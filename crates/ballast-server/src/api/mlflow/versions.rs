//! `model-versions/*`: create (registered, filled and sealed in one transaction), get, update,
//! delete, search, stage transitions through the governance gate, download URIs and tags.

use std::collections::{BTreeMap, VecDeque};

use axum::extract::State;
use axum::Json;
use ballast_api::{UpdateVersion, VersionMetadata};
use ballast_core::{ErrorCode, ModelName, Stage};
use ballast_store::mlflow::{MlflowVersion, MlflowVersionInfo, NewMlflowVersion};
use ballast_store::Precondition;
use serde_json::{json, Value};

use super::convert::{self, parse_stage, version_json};
use super::filter::{self, Key};
use super::models::{max_results, ns, order_key, page, parse_version, resolve};
use super::{artifacts, tracking, MlError, MlRequest, MlResult};
use crate::state::AppState;

/// Version tag saying whether Ballast holds (and sealed) the content behind `source`.
pub(crate) const VERIFIED_TAG: &str = "ballast.source_verified";

fn version_not_found(name: &str, version: u64) -> impl Fn(ballast_store::StoreError) -> MlError + '_ {
    move |e| {
        if e.code == ErrorCode::NotFound {
            MlError::not_found(format!(
                "Model Version (name={name}, version={version}) not found"
            ))
        } else {
            e.into()
        }
    }
}

async fn name_and_version(state: &AppState, r: &MlRequest) -> MlResult<(String, ModelName, u64)> {
    let name = r.need("name")?;
    let version = parse_version(&r.need("version")?)?;
    let ballast = resolve(state, &name).await?;
    Ok((name, ballast, version))
}

pub(super) async fn create(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let source = r.str("source").unwrap_or_default();
    let run_id = r.str("run_id").unwrap_or_default();
    let logged_model_id = r.str("model_id").unwrap_or_default();
    let ballast = resolve(&state, &name).await?;
    let mut metadata = VersionMetadata {
        description: r.str("description").unwrap_or_default(),
        ..VersionMetadata::default()
    };
    // Lineage: the run's id, experiment, parameters and metrics, so gates and comparisons
    // work on them without re-entry.
    let lineage_run = if run_id.is_empty() {
        tracking::logged_model_run(&state, &logged_model_id).await?
    } else {
        Some(run_id.clone())
    };
    if let Some(run) = &lineage_run {
        tracking::fill_lineage(&state, run, &mut metadata).await?;
    }
    let (files, verified) = artifacts::source_files(&state, &source, &r.rc.ctx).await?;
    let mut tags: ballast_api::Tags = r.pairs("tags")?.into_iter().collect();
    // Visible in the native API and CLI; hidden from MLflow's tag lists (`ballast.` is reserved).
    tags.insert(VERIFIED_TAG.into(), verified.to_string());
    let new = NewMlflowVersion {
        metadata,
        tags,
        files,
        info: MlflowVersionInfo {
            source,
            run_id,
            run_link: r.str("run_link").unwrap_or_default(),
            logged_model_id,
            verified,
            description: None,
        },
    };
    let v = state
        .store
        .mlflow_create_version(&r.rc.ctx, &ballast, new)
        .await?;
    Ok(Json(json!({ "model_version": version_json(&name, &v) })))
}

pub(super) async fn get(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    let v = state
        .store
        .mlflow_version(&ballast, version)
        .await
        .map_err(version_not_found(&name, version))?;
    Ok(Json(json!({ "model_version": version_json(&name, &v) })))
}

pub(super) async fn update(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    let v = match r.str("description") {
        Some(d) => state
            .store
            .mlflow_set_version_description(&r.rc.ctx, &ballast, version, d)
            .await
            .map_err(version_not_found(&name, version))?,
        None => state
            .store
            .mlflow_version(&ballast, version)
            .await
            .map_err(version_not_found(&name, version))?,
    };
    Ok(Json(json!({ "model_version": version_json(&name, &v) })))
}

pub(super) async fn delete(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    state
        .store
        .mlflow_delete_version(&r.rc.ctx, &ballast, version)
        .await
        .map_err(version_not_found(&name, version))?;
    Ok(Json(json!({})))
}

/// The shortest sequence of allowed moves from `from` to `to` (MLflow moves in one step between
/// any two stages; Ballast's state machine may need two, e.g. None → Staging → Production).
fn stage_path(from: Stage, to: Stage) -> Option<Vec<Stage>> {
    if from == to {
        return Some(Vec::new());
    }
    let mut prev: BTreeMap<Stage, Stage> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        for next in Stage::ALL {
            if next != from && !prev.contains_key(&next) && s.can_move_to(next) {
                prev.insert(next, s);
                if next == to {
                    let mut path = vec![to];
                    let mut cur = to;
                    while let Some(p) = prev.get(&cur).copied() {
                        if p == from {
                            break;
                        }
                        path.push(p);
                        cur = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                queue.push_back(next);
            }
        }
    }
    None
}

pub(super) async fn transition(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    let to = parse_stage(&r.need("stage")?)?;
    let archive_existing = r.bool("archive_existing_versions")?;
    if archive_existing && !matches!(to, Stage::Staging | Stage::Production) {
        return Err(MlError::invalid(format!(
            "Model version transition cannot archive existing model versions because '{}' is not an Active stage. Valid stages are Staging and Production",
            convert::stage_name(to)
        )));
    }
    let current = state
        .store
        .get_version(&ballast, version)
        .await
        .map_err(version_not_found(&name, version))?;
    let path = stage_path(current.stage, to).ok_or_else(|| {
        MlError::new(
            ErrorCode::InvalidTransition,
            format!(
                "cannot move version {version} of {name} from {} to {}",
                convert::stage_name(current.stage),
                convert::stage_name(to)
            ),
        )
    })?;
    // Every step passes the governance gate, as a native stage move does.
    for step in &path {
        state.gate.check(&r.rc.ctx, &current, *step).await.map_err(|e| {
            MlError::new(
                e.code,
                format!(
                    "stage move to {} refused: {}",
                    convert::stage_name(*step),
                    e.message
                ),
            )
        })?;
    }
    // The policy's gates and approvals, as for a native stage move.
    if let crate::governance::PathDecision::Done =
        crate::governance::govern_path(&state, &r.rc.ctx, &ballast, &current, &path).await?
    {
        let v = state.store.mlflow_version(&ballast, version).await?;
        return Ok(Json(json!({ "model_version": version_json(&name, &v) })));
    }
    let v = state
        .store
        .mlflow_transition(&r.rc.ctx, &ballast, version, path, archive_existing)
        .await?;
    Ok(Json(json!({ "model_version": version_json(&name, &v) })))
}

pub(super) async fn download_uri(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    let v = state
        .store
        .mlflow_version(&ballast, version)
        .await
        .map_err(version_not_found(&name, version))?;
    // A verified version downloads from its sealed manifest (immutable, digest-checked), not
    // from the paths it was registered from.
    let uri = if v.info.verified || v.info.source.is_empty() {
        convert::native_source(&v.version.model, v.version.version)
    } else {
        v.info.source.clone()
    };
    Ok(Json(json!({ "artifact_uri": uri })))
}

pub(super) async fn set_tag(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    let mut req = UpdateVersion::default();
    req.set_tags
        .insert(r.need("key")?, r.str("value").unwrap_or_default());
    state
        .store
        .update_version(&r.rc.ctx, &ballast, version, req, Precondition::None)
        .await
        .map_err(version_not_found(&name, version))?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_tag(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let (name, ballast, version) = name_and_version(&state, &r).await?;
    let key = r.need("key")?;
    let v = state
        .store
        .get_version(&ballast, version)
        .await
        .map_err(version_not_found(&name, version))?;
    if !v.tags.contains_key(&key) {
        // MLflow answers success when the tag is not there; nothing changes, nothing is audited.
        return Ok(Json(json!({})));
    }
    let req = UpdateVersion {
        remove_tags: vec![key],
        ..UpdateVersion::default()
    };
    state
        .store
        .update_version(&r.rc.ctx, &ballast, version, req, Precondition::None)
        .await?;
    Ok(Json(json!({})))
}

/// Refuses a clause on an attribute versions do not have (or an operator the attribute does
/// not support), whether or not any version exists.
fn check_version_clause(c: &filter::Clause) -> MlResult<()> {
    let Key::Attr(a) = &c.key else {
        return Ok(());
    };
    if !["name", "version_number", "run_id", "source_path", "current_stage"].contains(&a.as_str()) {
        return Err(MlError::invalid(format!(
            "Invalid attribute key '{a}' specified. Valid keys are name, version_number, run_id, source_path and tags"
        )));
    }
    if a == "version_number" && !["=", "!=", "IN", "NOT IN"].contains(&c.op.as_str()) {
        return Err(MlError::invalid("version_number supports =, != and IN"));
    }
    Ok(())
}

fn version_matches(c: &filter::Clause, name: &str, v: &Value, mv: &MlflowVersion) -> MlResult<bool> {
    match &c.key {
        Key::Tag(t) => filter::matches(c, mv.version.tags.get(t).map(String::as_str)),
        Key::Attr(a) => {
            let field = match a.as_str() {
                "name" => Some(name.to_owned()),
                "version_number" => Some(mv.version.version.to_string()),
                "run_id" => v["run_id"].as_str().map(str::to_owned),
                "source_path" => v["source"].as_str().map(str::to_owned),
                _ => v["current_stage"].as_str().map(str::to_owned),
            };
            filter::matches(c, field.as_deref())
        }
    }
}

pub(super) async fn search(
    State(state): State<AppState>,
    crate::api::Caller(caller): crate::api::Caller,
    r: MlRequest,
) -> MlResult<Json<Value>> {
    let clauses = filter::parse(&r.str("filter").unwrap_or_default())?;
    for c in &clauses {
        check_version_clause(c)?;
    }
    let max = max_results(&r, 10_000, 200_000)?;
    let offset = page::decode_token(r.str("page_token"))?;
    // Narrow to one model when the filter names it exactly.
    let exact: Option<&str> = clauses.iter().find_map(|c| match (&c.key, c.op.as_str()) {
        (Key::Attr(a), "=") if a == "name" => c.values.first().map(String::as_str),
        _ => None,
    });
    let models: Vec<(String, ModelName)> = match exact {
        Some(n) => match state.store.mlflow_resolve(n, ns(&state)).await {
            Ok(b) => vec![(n.to_owned(), b)],
            Err(e) if e.code == ErrorCode::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        None => state
            .store
            .mlflow_model_index(ns(&state), None)
            .await?
            .into_iter()
            .map(|m| (m.name, m.model))
            .collect(),
    };
    let mut hits: Vec<(String, Value, MlflowVersion)> = Vec::new();
    let readable = |m: &ModelName| caller.can(ballast_api::auth::Permission::Read, m.namespace());
    for (name, ballast) in models.into_iter().filter(|(_, m)| readable(m)) {
        for mv in state.store.mlflow_versions(&ballast).await? {
            let v = version_json(&name, &mv);
            let mut ok = true;
            for c in &clauses {
                ok &= version_matches(c, &name, &v, &mv)?;
            }
            if ok {
                hits.push((name.clone(), v, mv));
            }
        }
    }
    let mut orders = Vec::new();
    for o in r.list("order_by") {
        let (key, desc) = order_key(&o)?;
        if ![
            "name",
            "version_number",
            "creation_timestamp",
            "last_updated_timestamp",
            "timestamp",
        ]
        .contains(&key.as_str())
        {
            return Err(MlError::invalid(format!(
                "Invalid order by key '{key}' specified."
            )));
        }
        orders.push((key, desc));
    }
    // MLflow's order: the given keys, then name ascending and version descending; with no
    // keys given, the most recently updated first.
    if orders.is_empty() {
        orders.push(("last_updated_timestamp".into(), true));
    }
    for (key, desc) in [("name", false), ("version_number", true)] {
        if !orders.iter().any(|(k, _)| k == key) {
            orders.push((key.into(), desc));
        }
    }
    hits.sort_by(|a, b| {
        for (key, desc) in &orders {
            let ord = match key.as_str() {
                "name" => a.0.cmp(&b.0),
                "version_number" => a.2.version.version.cmp(&b.2.version.version),
                "creation_timestamp" => a.1["creation_timestamp"]
                    .as_i64()
                    .cmp(&b.1["creation_timestamp"].as_i64()),
                _ => a.1["last_updated_timestamp"]
                    .as_i64()
                    .cmp(&b.1["last_updated_timestamp"].as_i64()),
            };
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
    let total = hits.len();
    let out: Vec<Value> = hits.into_iter().skip(offset).take(max).map(|h| h.1).collect();
    let mut body = json!({ "model_versions": out });
    if offset + max < total {
        body["next_page_token"] = json!(page::encode_token(offset + max));
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_paths_follow_the_state_machine() {
        use Stage::{Archived, Development, Production, Staging};
        assert_eq!(
            stage_path(Development, Production),
            Some(vec![Staging, Production])
        );
        assert_eq!(stage_path(Development, Staging), Some(vec![Staging]));
        assert_eq!(stage_path(Archived, Production), Some(vec![Staging, Production]));
        assert_eq!(
            stage_path(Production, Development),
            Some(vec![Staging, Development])
        );
        assert_eq!(stage_path(Staging, Staging), Some(vec![]));
    }
}
