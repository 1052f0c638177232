//! Ballast objects in MLflow's JSON shapes: stages, millisecond timestamps, tags as
//! `[{key, value}]`, versions as strings.

use ballast_api::{Tags, Version, VersionState};
use ballast_core::Stage;
use ballast_store::mlflow::{MlflowModel, MlflowVersion};
use serde_json::{json, Value};

use super::MlError;

/// Unix milliseconds of a stored RFC 3339 time (0 when unreadable).
pub(crate) fn ms(t: &str) -> i64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        .unwrap_or(0)
}

/// MLflow's name of a Ballast stage.
pub(crate) fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Development => "None",
        Stage::Staging => "Staging",
        Stage::Production => "Production",
        Stage::Archived => "Archived",
    }
}

/// The Ballast stage of an MLflow stage name (case-insensitive, as MLflow accepts it).
pub(crate) fn parse_stage(s: &str) -> Result<Stage, MlError> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "development" => Ok(Stage::Development),
        "staging" => Ok(Stage::Staging),
        "production" => Ok(Stage::Production),
        "archived" => Ok(Stage::Archived),
        _ => Err(MlError::invalid(format!(
            "Invalid Model Version stage: {s}. Value must be one of None, Staging, Production, Archived."
        ))),
    }
}

/// Tags as MLflow's list of `{key, value}`.
pub(crate) fn tags_json(tags: &Tags) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect(),
    )
}

fn version_updated(v: &Version) -> i64 {
    [
        Some(v.created_at.as_str()),
        v.sealed_at.as_deref(),
        Some(v.stage_changed_at.as_str()),
    ]
    .into_iter()
    .flatten()
    .map(ms)
    .max()
    .unwrap_or(0)
}

/// A version in MLflow's `ModelVersion` shape, named as the client knows its model.
pub(crate) fn version_json(name: &str, mv: &MlflowVersion) -> Value {
    let v = &mv.version;
    let description = mv
        .info
        .description
        .clone()
        .unwrap_or_else(|| v.metadata.description.clone());
    let run_id = if mv.info.run_id.is_empty() {
        v.metadata.lineage.source_run_id.clone().unwrap_or_default()
    } else {
        mv.info.run_id.clone()
    };
    let source = if mv.info.source.is_empty() {
        native_source(&v.model, v.version)
    } else {
        mv.info.source.clone()
    };
    let (status, message) = match v.state {
        VersionState::Sealed if mv.info.verified || mv.info.source.is_empty() => ("READY", String::new()),
        VersionState::Sealed => (
            "READY",
            "source is outside Ballast: the reference was sealed, the content is unverified".to_owned(),
        ),
        VersionState::Draft => (
            "PENDING_REGISTRATION",
            "draft: upload its files and seal it to make it usable".to_owned(),
        ),
    };
    let mut out = json!({
        "name": name,
        "version": v.version.to_string(),
        "creation_timestamp": ms(&v.created_at),
        "last_updated_timestamp": version_updated(v),
        "user_id": v.created_by,
        "current_stage": stage_name(v.stage),
        "description": description,
        "source": source,
        "run_id": run_id,
        "status": status,
        "tags": tags_json(&v.tags.iter().filter(|(k, _)| !k.starts_with("ballast.")).map(|(k, v)| (k.clone(), v.clone())).collect()),
        "aliases": v.aliases,
    });
    if let Some(o) = out.as_object_mut() {
        if !message.is_empty() {
            o.insert("status_message".into(), json!(message));
        }
        if !mv.info.run_link.is_empty() {
            o.insert("run_link".into(), json!(mv.info.run_link));
        }
        if !mv.info.logged_model_id.is_empty() {
            o.insert("model_id".into(), json!(mv.info.logged_model_id));
        }
    }
    out
}

/// The artifact URI of a version created natively (served by the artifacts proxy from the
/// version's verified files).
pub(crate) fn native_source(model: &str, number: u64) -> String {
    format!("mlflow-artifacts:/ballast-versions/{model}/{number}")
}

/// The newest version in each stage (MLflow's `latest_versions`), oldest stage first.
pub(crate) fn latest_per_stage(versions: &[MlflowVersion], stages: &[Stage]) -> Vec<MlflowVersion> {
    let mut out = Vec::new();
    for s in Stage::ALL {
        if !stages.is_empty() && !stages.contains(&s) {
            continue;
        }
        if let Some(v) = versions
            .iter()
            .filter(|v| v.version.stage == s)
            .max_by_key(|v| v.version.version)
        {
            out.push(v.clone());
        }
    }
    out
}

/// A registered model in MLflow's `RegisteredModel` shape.
pub(crate) fn model_json(m: &MlflowModel, versions: &[MlflowVersion]) -> Value {
    let latest: Vec<Value> = latest_per_stage(versions, &[])
        .iter()
        .map(|v| version_json(&m.name, v))
        .collect();
    let aliases: Vec<Value> = m
        .model
        .aliases
        .iter()
        .map(|(a, n)| json!({ "alias": a, "version": n.to_string() }))
        .collect();
    let mut updated = ms(&m.model.updated_at);
    for v in versions {
        updated = updated.max(version_updated(&v.version));
    }
    json!({
        "name": m.name,
        "creation_timestamp": ms(&m.model.created_at),
        "last_updated_timestamp": updated,
        "user_id": m.model.created_by,
        "description": m.model.description,
        "latest_versions": latest,
        "tags": tags_json(&m.model.tags),
        "aliases": aliases,
    })
}
