//! Retention policies (`/v1/retention/{ns}`, `/v1/models/{ns}/{model}/retention`) and garbage
//! collection (`POST /v1/gc`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ballast_api::retention::{EffectiveRetention, GcReport, GcRequest, RetentionPolicy, RetentionRule};
use ballast_core::ErrorCode;
use ballast_store::RetentionTarget;

use super::extract::Params;
use super::{Mutation, RequestCtx};
use crate::error::{ApiError, ApiResult};
use crate::gc::{self, GcRun, Trigger};
use crate::state::AppState;

fn namespace(p: &Params) -> ApiResult<RetentionTarget> {
    let ns = p.get("ns");
    ballast_core::validate_namespace(ns).map_err(|e| ApiError::from(e).field("ns"))?;
    Ok(RetentionTarget::Namespace(ns.to_owned()))
}

pub(super) async fn get_namespace(
    State(state): State<AppState>,
    p: Params,
) -> ApiResult<Json<RetentionRule>> {
    Ok(Json(state.store.get_retention(&namespace(&p)?).await?))
}

pub(super) async fn set_namespace(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<RetentionPolicy>,
) -> ApiResult<Json<RetentionRule>> {
    let target = namespace(&p)?;
    Ok(Json(state.store.set_retention(&m.rc.ctx, &target, m.body).await?))
}

pub(super) async fn delete_namespace(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    state.store.delete_retention(&rc.ctx, &namespace(&p)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_model(
    State(state): State<AppState>,
    p: Params,
) -> ApiResult<Json<EffectiveRetention>> {
    let model = p.model()?;
    match state.store.effective_retention(&model).await? {
        Some((rule, own)) => Ok(Json(EffectiveRetention {
            model: model.to_string(),
            source: if own { "model" } else { "namespace" }.to_owned(),
            rule,
        })),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no retention policy applies to {model} (none on the model or on namespace {}): garbage collection removes none of its versions",
                model.namespace()
            ),
        )),
    }
}

pub(super) async fn set_model(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<RetentionPolicy>,
) -> ApiResult<Json<RetentionRule>> {
    let target = RetentionTarget::Model(p.model()?);
    Ok(Json(state.store.set_retention(&m.rc.ctx, &target, m.body).await?))
}

pub(super) async fn delete_model(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    let target = RetentionTarget::Model(p.model()?);
    state.store.delete_retention(&rc.ctx, &target).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn run_gc(
    State(state): State<AppState>,
    m: Mutation<GcRequest>,
) -> ApiResult<Json<GcReport>> {
    let scope = gc::scope_of(&m.body)?;
    let run = GcRun {
        ctx: m.rc.ctx,
        dry_run: m.body.dry_run,
        scope,
        explain: m.body.explain,
        trigger: Trigger::Api,
    };
    Ok(Json(gc::run(&state, run).await?))
}
