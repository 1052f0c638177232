//! `GET /v1/models/{ns}/{model}/compare?versions=1,2[,…]`: versions side by side (metadata,
//! parameters, metrics with deltas against the first) and the gates each would pass for staging
//! and production under the policy in force.

use axum::extract::State;
use axum::Json;
use ballast_api::governance::{compare_fields, evaluate, ComparedVersion, Comparison};
use ballast_core::{ErrorCode, Stage};

use super::extract::{Params, QueryPairs};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The most versions compared at once.
const MAX_VERSIONS: usize = 10;

fn parse_versions(q: &QueryPairs) -> ApiResult<Vec<u64>> {
    let raw: Vec<&str> = q
        .all("versions")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if raw.is_empty() || raw.iter().all(|s| s.is_empty()) {
        return Err(ApiError::invalid(
            "versions",
            "versions is required: a comma-separated list of 2 to 10 version numbers, e.g. versions=3,4",
        ));
    }
    let mut out = Vec::new();
    for s in raw {
        let n = s
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1 && *n <= i64::MAX as u64)
            .ok_or_else(|| ApiError::invalid("versions", format!("{s:?} is not a version number")))?;
        if out.contains(&n) {
            return Err(ApiError::invalid(
                "versions",
                format!("version {n} is listed twice"),
            ));
        }
        out.push(n);
    }
    if !(2..=MAX_VERSIONS).contains(&out.len()) {
        return Err(ApiError::invalid(
            "versions",
            format!("compare 2 to {MAX_VERSIONS} versions, got {}", out.len()),
        ));
    }
    Ok(out)
}

pub(super) async fn compare(
    State(state): State<AppState>,
    p: Params,
    q: QueryPairs,
) -> ApiResult<Json<Comparison>> {
    q.only(&["versions"])?;
    let name = p.model()?;
    let numbers = parse_versions(&q)?;
    let mut versions = Vec::with_capacity(numbers.len());
    for n in numbers {
        versions.push(state.store.get_version(&name, n).await?);
    }
    let production = match state.store.version_in_stage(&name, Stage::Production).await {
        Ok(v) => Some(v),
        Err(e) if e.code == ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let policy = state.store.effective_policy(&name).await?;
    let columns = versions
        .iter()
        .map(|v| {
            let (staging, production_verdicts) = match &policy.policy {
                Some(p) => (
                    evaluate(p, v, production.as_ref(), Stage::Staging),
                    evaluate(p, v, production.as_ref(), Stage::Production),
                ),
                None => (Vec::new(), Vec::new()),
            };
            ComparedVersion {
                version: v.version,
                stage: v.stage,
                state: v.state,
                digest: v.digest.clone(),
                created_by: v.created_by.clone(),
                created_at: v.created_at.clone(),
                staging_gates_passed: staging.iter().all(|g| g.passed),
                production_gates_passed: production_verdicts.iter().all(|g| g.passed),
                staging_verdicts: staging,
                production_verdicts,
            }
        })
        .collect();
    let refs: Vec<&ballast_api::Version> = versions.iter().collect();
    let (metadata, params, metrics) = compare_fields(&refs);
    Ok(Json(Comparison {
        model: name.to_string(),
        versions: columns,
        production_version: production.map(|v| v.version),
        policy_source: policy.source(),
        metadata,
        params,
        metrics,
    }))
}
