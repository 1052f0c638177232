//! `registered-models/*`: create, get, rename, update, delete, search, latest versions, tags
//! and aliases, over the native model operations.

use axum::extract::State;
use axum::Json;
use ballast_api::UpdateModel;
use ballast_core::{ErrorCode, ModelName};
use ballast_store::mlflow::{MlflowModel, MlflowModelEntry};
use ballast_store::Precondition;
use page::{decode_token, encode_token};
use serde_json::{json, Value};

use super::convert::{self, model_json, parse_stage, version_json};
use super::filter::{self, Key};
use super::{MlError, MlRequest, MlResult};
use crate::state::AppState;

/// Page tokens are an offset into the ordered result, written as hex so they look opaque.
pub(crate) mod page {
    use super::MlError;

    pub(crate) fn encode_token(offset: usize) -> String {
        format!("o{offset:x}")
    }

    pub(crate) fn decode_token(t: Option<String>) -> Result<usize, MlError> {
        match t.as_deref() {
            None | Some("") => Ok(0),
            Some(t) => t
                .strip_prefix('o')
                .and_then(|h| usize::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    MlError::invalid(format!(
                        "Invalid page token {t:?}: pass next_page_token unchanged"
                    ))
                }),
        }
    }
}

pub(crate) fn ns(state: &AppState) -> &str {
    &state.config.mlflow_default_namespace
}

/// The Ballast name an MLflow name refers to, with MLflow's not-found message.
pub(crate) async fn resolve(state: &AppState, name: &str) -> MlResult<ModelName> {
    if name.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'name'."));
    }
    Ok(state.store.mlflow_resolve(name, ns(state)).await?)
}

async fn full_json(state: &AppState, m: &MlflowModel) -> MlResult<Value> {
    let name = ModelName::parse(&m.model.name)?;
    let versions = state.store.mlflow_versions(&name).await?;
    Ok(model_json(m, &versions))
}

fn tags_of(pairs: Vec<(String, String)>) -> ballast_api::Tags {
    pairs.into_iter().collect()
}

pub(super) async fn create(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let m = state
        .store
        .mlflow_create_model(
            &r.rc.ctx,
            &name,
            ns(&state),
            r.str("description").unwrap_or_default(),
            tags_of(r.pairs("tags")?),
        )
        .await?;
    Ok(Json(json!({ "registered_model": model_json(&m, &[]) })))
}

pub(super) async fn get(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let m = state.store.mlflow_model(&name, ns(&state)).await?;
    Ok(Json(json!({ "registered_model": full_json(&state, &m).await? })))
}

pub(super) async fn rename(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let new_name = r.need("new_name")?;
    let m = state
        .store
        .mlflow_rename_model(&r.rc.ctx, &name, &new_name, ns(&state))
        .await?;
    Ok(Json(json!({ "registered_model": full_json(&state, &m).await? })))
}

pub(super) async fn update(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let ballast = resolve(&state, &name).await?;
    let req = UpdateModel {
        description: r.str("description"),
        ..UpdateModel::default()
    };
    state
        .store
        .update_model(&r.rc.ctx, &ballast, req, Precondition::None)
        .await?;
    let m = state.store.mlflow_model(&name, ns(&state)).await?;
    Ok(Json(json!({ "registered_model": full_json(&state, &m).await? })))
}

pub(super) async fn delete(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let ballast = resolve(&state, &name).await?;
    state
        .store
        .delete_model(&r.rc.ctx, &ballast, Precondition::None)
        .await?;
    Ok(Json(json!({})))
}

/// Refuses a clause on an attribute models do not have, whether or not any model exists.
fn check_model_clause(c: &filter::Clause) -> MlResult<()> {
    match &c.key {
        Key::Attr(a) if a != "name" => Err(MlError::invalid(format!(
            "Invalid attribute key '{a}' specified. Valid keys are '{{'name'}}' and tags"
        ))),
        _ => Ok(()),
    }
}

/// A literal prefix every name passing `c` starts with (`name = 'x'`, `name LIKE 'x%…'`), for
/// the store to narrow the search with before the clauses are applied.
fn name_prefix(c: &filter::Clause) -> Option<String> {
    let value = c.values.first()?;
    let prefix: String = match (&c.key, c.op.as_str()) {
        (Key::Attr(a), "=") if a == "name" => value.clone(),
        (Key::Attr(a), "LIKE") if a == "name" => {
            value.chars().take_while(|ch| !matches!(ch, '%' | '_')).collect()
        }
        _ => return None,
    };
    (!prefix.is_empty()).then_some(prefix)
}

fn model_matches(c: &filter::Clause, m: &MlflowModelEntry) -> MlResult<bool> {
    match &c.key {
        Key::Tag(t) => filter::matches(c, m.tags.get(t).map(String::as_str)),
        Key::Attr(_) => filter::matches(c, Some(&m.name)),
    }
}

/// `max_results` within `1..=limit`, defaulting to `default`.
pub(crate) fn max_results(r: &MlRequest, default: i64, limit: i64) -> MlResult<usize> {
    let n = r.int("max_results")?.unwrap_or(default);
    if n < 1 || n > limit {
        return Err(MlError::invalid(format!(
            "Invalid value {n} for parameter 'max_results' supplied. It must be at most {limit} and at least 1."
        )));
    }
    Ok(usize::try_from(n).unwrap_or(1))
}

/// Splits `key [ASC|DESC]`.
pub(crate) fn order_key(o: &str) -> MlResult<(String, bool)> {
    let mut parts = o.split_whitespace();
    let key = parts
        .next()
        .ok_or_else(|| MlError::invalid("Invalid order_by clause ''"))?
        .to_ascii_lowercase();
    let key = key.strip_prefix("attribute.").map_or(key.clone(), str::to_owned);
    let desc = match parts.next().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => {
            return Err(MlError::invalid(format!(
                "Invalid order_by clause '{o}': expected ASC or DESC, got {other}"
            )))
        }
    };
    if parts.next().is_some() {
        return Err(MlError::invalid(format!("Invalid order_by clause '{o}'")));
    }
    Ok((key, desc))
}

pub(super) async fn search(
    State(state): State<AppState>,
    crate::api::Caller(caller): crate::api::Caller,
    r: MlRequest,
) -> MlResult<Json<Value>> {
    let clauses = filter::parse(&r.str("filter").unwrap_or_default())?;
    for c in &clauses {
        check_model_clause(c)?;
    }
    let max = max_results(&r, 100, 1000)?;
    let offset = decode_token(r.str("page_token"))?;
    // Filter and sort on the index (one query); load full models for the answered page only.
    let prefix = clauses.iter().find_map(name_prefix);
    let mut all = state
        .store
        .mlflow_model_index(ns(&state), prefix.as_deref())
        .await?;
    all.retain(|m| caller.can(ballast_api::auth::Permission::Read, m.model.namespace()));
    let mut kept = Vec::new();
    for m in all {
        let mut ok = true;
        for c in &clauses {
            ok &= model_matches(c, &m)?;
        }
        if ok {
            kept.push(m);
        }
    }
    let mut orders = Vec::new();
    for o in r.list("order_by") {
        let (key, desc) = order_key(&o)?;
        if ![
            "name",
            "timestamp",
            "last_updated_timestamp",
            "creation_timestamp",
        ]
        .contains(&key.as_str())
        {
            return Err(MlError::invalid(format!(
                "Invalid order by key '{key}' specified. Valid keys are name, timestamp, last_updated_timestamp"
            )));
        }
        orders.push((key, desc));
    }
    kept.sort_by(|a, b| {
        for (key, desc) in &orders {
            let ord = match key.as_str() {
                "name" => a.name.cmp(&b.name),
                "creation_timestamp" => a.created_at.cmp(&b.created_at),
                _ => a.updated_at.cmp(&b.updated_at),
            };
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        a.name.cmp(&b.name)
    });
    let total = kept.len();
    let page: Vec<MlflowModelEntry> = kept.into_iter().skip(offset).take(max).collect();
    let out: Vec<Value> = state
        .store
        .mlflow_model_page(page)
        .await?
        .iter()
        .map(|(m, versions)| model_json(m, versions))
        .collect();
    let mut body = json!({ "registered_models": out });
    if offset + max < total {
        body["next_page_token"] = json!(encode_token(offset + max));
    }
    Ok(Json(body))
}

pub(super) async fn latest_versions(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let ballast = resolve(&state, &name).await?;
    let stages = r
        .list("stages")
        .iter()
        .map(|s| parse_stage(s))
        .collect::<MlResult<Vec<_>>>()?;
    let versions = state.store.mlflow_versions(&ballast).await?;
    let latest: Vec<Value> = convert::latest_per_stage(&versions, &stages)
        .iter()
        .map(|v| version_json(&name, v))
        .collect();
    Ok(Json(json!({ "model_versions": latest })))
}

pub(super) async fn set_tag(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let key = r.need("key")?;
    let value = r.str("value").unwrap_or_default();
    let ballast = resolve(&state, &name).await?;
    let mut req = UpdateModel::default();
    req.set_tags.insert(key, value);
    state
        .store
        .update_model(&r.rc.ctx, &ballast, req, Precondition::None)
        .await?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_tag(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let key = r.need("key")?;
    let ballast = resolve(&state, &name).await?;
    let m = state.store.get_model(&ballast).await?;
    if !m.tags.contains_key(&key) {
        // MLflow answers success when the tag is not there; nothing changes, nothing is audited.
        return Ok(Json(json!({})));
    }
    let req = UpdateModel {
        remove_tags: vec![key],
        ..UpdateModel::default()
    };
    state
        .store
        .update_model(&r.rc.ctx, &ballast, req, Precondition::None)
        .await?;
    Ok(Json(json!({})))
}

/// A version number given as MLflow's string.
pub(crate) fn parse_version(v: &str) -> MlResult<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1 && i64::try_from(*n).is_ok())
        .ok_or_else(|| MlError::invalid(format!("Parameter 'version' must be an integer, got '{v}'.")))
}

/// MLflow reserves `latest` (any case: it resolves to the highest version) and `v<digits>`.
fn check_alias_not_reserved(alias: &str) -> MlResult<()> {
    if alias.eq_ignore_ascii_case(LATEST) {
        return Err(MlError::invalid(
            "'latest' alias name (case insensitive) is reserved.",
        ));
    }
    let version_like = alias
        .strip_prefix(['v', 'V'])
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
    if version_like {
        return Err(MlError::invalid(format!(
            "Version alias name '{alias}' is reserved."
        )));
    }
    Ok(())
}

/// The alias MLflow resolves to a model's highest version.
const LATEST: &str = "latest";

pub(super) async fn set_alias(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let alias = r.need("alias")?;
    check_alias_not_reserved(&alias)?;
    let version = parse_version(&r.need("version")?)?;
    let ballast = resolve(&state, &name).await?;
    state
        .store
        .set_alias(&r.rc.ctx, &ballast, &alias, version, Precondition::None)
        .await
        .map_err(|e| {
            if e.code == ErrorCode::NotFound {
                MlError::not_found(format!(
                    "Model Version (name={name}, version={version}) not found"
                ))
            } else {
                e.into()
            }
        })?;
    Ok(Json(json!({})))
}

pub(super) async fn delete_alias(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let alias = r.need("alias")?;
    let ballast = resolve(&state, &name).await?;
    match state
        .store
        .delete_alias(&r.rc.ctx, &ballast, &alias, Precondition::None)
        .await
    {
        // MLflow answers success for an alias that is not set (the model exists).
        Err(e) if e.code != ErrorCode::NotFound => Err(e.into()),
        _ => Ok(Json(json!({}))),
    }
}

pub(super) async fn get_alias(State(state): State<AppState>, r: MlRequest) -> MlResult<Json<Value>> {
    let name = r.need("name")?;
    let alias = r.need("alias")?;
    if alias.eq_ignore_ascii_case(LATEST) {
        let ballast = resolve(&state, &name).await?;
        let versions = state.store.mlflow_versions(&ballast).await?;
        let v = versions
            .last()
            .ok_or_else(|| MlError::not_found(format!("Latest version not found for model {name}.")))?;
        return Ok(Json(json!({ "model_version": version_json(&name, v) })));
    }
    if name.is_empty() {
        return Err(MlError::invalid("Missing value for required parameter 'name'."));
    }
    // The model, the alias and the version in one read.
    let v = state
        .store
        .mlflow_alias_version(&name, &alias, ns(&state))
        .await?
        // MLflow's code for an alias that is not set.
        .ok_or_else(|| MlError::invalid(format!("Registered model alias {alias} not found.")))?;
    Ok(Json(json!({ "model_version": version_json(&name, &v) })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn prefix_of(f: &str) -> Vec<Option<String>> {
        filter::parse(f).unwrap().iter().map(name_prefix).collect()
    }

    #[test]
    fn name_prefixes_are_literal_and_case_sensitive_only() {
        assert_eq!(prefix_of("name = 'Fraud Model'"), [Some("Fraud Model".into())]);
        assert_eq!(prefix_of("name LIKE 'team/bot-%'"), [Some("team/bot-".into())]);
        assert_eq!(prefix_of("name LIKE 'a_b%'"), [Some("a".into())]);
        assert_eq!(prefix_of("name LIKE '%bot'"), [None]);
        assert_eq!(prefix_of("name ILIKE 'bot%'"), [None]);
        assert_eq!(prefix_of("name != 'x'"), [None]);
        assert_eq!(prefix_of("tags.name = 'x'"), [None]);
    }
}
