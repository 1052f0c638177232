//! Policies: `/v1/namespaces/{ns}/policy` and `/v1/models/{ns}/{model}/policy` (read, replace,
//! remove; JSON or YAML bodies), and `/v1/models/{ns}/{model}/policy/effective` (the merged
//! policy in force and where it comes from).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use ballast_api::governance::{EffectivePolicy, Policy};
use ballast_core::ErrorCode;
use ballast_store::governance::PolicyTarget;
use sha2::{Digest, Sha256};

use super::extract::{with_etag, Params};
use super::RequestCtx;
use crate::error::{ApiError, ApiResult};
use crate::governance::validate_policy;
use crate::state::AppState;

fn namespace_target(p: &Params) -> ApiResult<PolicyTarget> {
    let ns = p.get("ns");
    ballast_core::name::validate_namespace(ns)?;
    Ok(PolicyTarget::Namespace(ns.to_owned()))
}

fn model_target(p: &Params) -> ApiResult<PolicyTarget> {
    Ok(PolicyTarget::Model(p.model()?))
}

fn is_yaml(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(ct) = headers.get("content-type") else {
        return Ok(false);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::invalid("Content-Type", "Content-Type must be printable ASCII"))?
        .trim()
        .to_ascii_lowercase();
    if ct.starts_with("application/json") {
        Ok(false)
    } else if ct.starts_with("application/yaml")
        || ct.starts_with("application/x-yaml")
        || ct.starts_with("text/yaml")
    {
        Ok(true)
    } else {
        Err(ApiError::invalid(
            "Content-Type",
            format!("a policy is application/json or application/yaml, got {ct:?}"),
        ))
    }
}

/// Reads a policy from a JSON or YAML body, strictly (unknown fields are refused by name).
async fn read_policy(state: &AppState, rc: &mut RequestCtx, req: Request) -> ApiResult<Policy> {
    let yaml = is_yaml(req.headers())?;
    let limit = state.config.max_json_bytes;
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a policy is at most {limit} bytes"),
        )
    })?;
    // The body is part of what an Idempotency-Key stands for.
    if let Some(idem) = rc.ctx.idempotency.as_mut() {
        let mut h = Sha256::new();
        h.update(idem.fingerprint.as_bytes());
        h.update(&bytes);
        idem.fingerprint = hex::encode(h.finalize());
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::new(ErrorCode::InvalidJson, "the policy body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "the policy body is empty; send {} for an empty policy, or DELETE to remove it",
        ));
    }
    let policy: Policy = if yaml {
        serde_yaml::from_str(text)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid YAML policy: {e}")))?
    } else {
        serde_json::from_str(text)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON policy: {e}")))?
    };
    validate_policy(&policy)?;
    Ok(policy)
}

async fn get(state: &AppState, target: PolicyTarget) -> ApiResult<Response> {
    let p = state.store.get_policy(&target).await?;
    Ok(with_etag(StatusCode::OK, p.revision, &p))
}

async fn set(
    state: &AppState,
    target: PolicyTarget,
    mut rc: RequestCtx,
    req: Request,
) -> ApiResult<Response> {
    let policy = read_policy(state, &mut rc, req).await?;
    let p = state.store.set_policy(&rc.ctx, &target, policy, rc.pre).await?;
    Ok(with_etag(StatusCode::OK, p.revision, &p))
}

async fn delete(state: &AppState, target: PolicyTarget, rc: RequestCtx) -> ApiResult<StatusCode> {
    state.store.delete_policy(&rc.ctx, &target, rc.pre).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_namespace(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    get(&state, namespace_target(&p)?).await
}

pub(super) async fn set_namespace(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
    req: Request,
) -> ApiResult<Response> {
    set(&state, namespace_target(&p)?, rc, req).await
}

pub(super) async fn delete_namespace(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    delete(&state, namespace_target(&p)?, rc).await
}

pub(super) async fn get_model(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    get(&state, model_target(&p)?).await
}

pub(super) async fn set_model(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
    req: Request,
) -> ApiResult<Response> {
    set(&state, model_target(&p)?, rc, req).await
}

pub(super) async fn delete_model(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    delete(&state, model_target(&p)?, rc).await
}

pub(super) async fn effective(State(state): State<AppState>, p: Params) -> ApiResult<Json<EffectivePolicy>> {
    Ok(Json(state.store.effective_policy(&p.model()?).await?))
}
