//! Transition requests: `/v1/transitions` (every model's, filtered) and
//! `/v1/models/{ns}/{model}/transitions[/{id}[/approve|reject|complete|cancel]]`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::governance::{Decision, RequestState, ReviewBody, TransitionList};
use ballast_core::{ModelName, Stage};
use ballast_store::governance::TransitionFilter;

use super::extract::{Caller, Params, QueryPairs};
use super::Mutation;
use crate::error::{ApiError, ApiResult};
use crate::governance::GateFailure;
use crate::state::AppState;

fn id(p: &Params) -> ApiResult<u64> {
    let v = p.get("id");
    v.parse::<u64>()
        .ok()
        .filter(|n| *n >= 1 && *n <= i64::MAX as u64)
        .ok_or_else(|| {
            ApiError::invalid(
                "id",
                format!("a transition request id is a positive integer, got {v:?}"),
            )
        })
}

fn filter(q: &QueryPairs, model: Option<ModelName>) -> ApiResult<TransitionFilter> {
    let version = q
        .one("version")
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n >= 1 && *n <= i64::MAX as u64)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "version",
                        format!("version must be a positive integer, got {v:?}"),
                    )
                })
        })
        .transpose()?;
    if version.is_some() && model.is_none() {
        return Err(ApiError::invalid("version", "version needs model"));
    }
    let before = q
        .one("before")
        .map(|v| {
            v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                ApiError::invalid("before", format!("before must be a positive integer, got {v:?}"))
            })
        })
        .transpose()?;
    Ok(TransitionFilter {
        model,
        version,
        state: q.one("state").map(str::parse::<RequestState>).transpose()?,
        to_stage: q.one("stage").map(str::parse::<Stage>).transpose()?,
        limit: q.limit()?,
        before,
        namespaces: None,
    })
}

pub(super) async fn list_all(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryPairs,
) -> ApiResult<Json<TransitionList>> {
    q.only(&["model", "version", "state", "stage", "limit", "before"])?;
    let model = q
        .one("model")
        .map(|m| ModelName::parse(m).map_err(|e| ApiError::from(e).field("model")))
        .transpose()?;
    let mut f = filter(&q, model)?;
    f.namespaces = caller.readable_namespaces();
    Ok(Json(state.store.list_transitions(f).await?))
}

pub(super) async fn list(
    State(state): State<AppState>,
    p: Params,
    q: QueryPairs,
) -> ApiResult<Json<TransitionList>> {
    q.only(&["version", "state", "stage", "limit", "before"])?;
    let f = filter(&q, Some(p.model()?))?;
    Ok(Json(state.store.list_transitions(f).await?))
}

pub(super) async fn get(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let r = state.store.get_transition(&p.model()?, id(&p)?).await?;
    Ok(Json(r).into_response())
}

async fn review(
    state: &AppState,
    p: &Params,
    m: Mutation<ReviewBody>,
    decision: Decision,
) -> ApiResult<Response> {
    let r = state
        .store
        .review_transition(&m.rc.ctx, &p.model()?, id(p)?, decision, m.body.comment)
        .await?;
    Ok(Json(r).into_response())
}

pub(super) async fn approve(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<ReviewBody>,
) -> ApiResult<Response> {
    review(&state, &p, m, Decision::Approve).await
}

pub(super) async fn reject(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<ReviewBody>,
) -> ApiResult<Response> {
    review(&state, &p, m, Decision::Reject).await
}

pub(super) async fn complete(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<ReviewBody>,
) -> ApiResult<Response> {
    let r = state
        .store
        .complete_transition(&m.rc.ctx, &p.model()?, id(&p)?, m.body.comment)
        .await?;
    if r.state == RequestState::GatesFailed {
        return Ok(GateFailure { request: r }.into_response());
    }
    Ok(Json(r).into_response())
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<ReviewBody>,
) -> ApiResult<Response> {
    let r = state
        .store
        .cancel_transition(&m.rc.ctx, &p.model()?, id(&p)?, m.body.comment)
        .await?;
    Ok(Json(r).into_response())
}
