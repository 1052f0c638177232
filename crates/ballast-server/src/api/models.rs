//! `/v1/models`: create, read, list, update, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use ballast_api::{CreateModel, ModelList, UpdateModel};
use ballast_store::ModelFilter;

use super::extract::{tag_filter, with_etag, Caller, Params, QueryPairs};
use super::{Mutation, RequestCtx};
use crate::error::ApiResult;
use crate::state::AppState;

pub(super) async fn create(State(state): State<AppState>, m: Mutation<CreateModel>) -> ApiResult<Response> {
    let name = ballast_core::ModelName::parse(&m.body.name).map_err(crate::ApiError::from)?;
    crate::governance::check_model_name(&state, &name).await?;
    let model = state.store.create_model(&m.rc.ctx, m.body).await?;
    Ok(with_etag(StatusCode::CREATED, model.revision, &model))
}

pub(super) async fn get(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let model = state.store.get_model(&p.model()?).await?;
    Ok(with_etag(StatusCode::OK, model.revision, &model))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryPairs,
) -> ApiResult<Json<ModelList>> {
    q.only(&["namespace", "prefix", "tag", "limit", "cursor"])?;
    if let Some(ns) = q.one("namespace") {
        ballast_core::name::validate_namespace(ns)?;
    }
    let filter = ModelFilter {
        namespace: q.one("namespace").map(str::to_owned),
        namespaces: caller.readable_namespaces(),
        prefix: q.one("prefix").map(str::to_owned),
        tag: q.one("tag").map(tag_filter).transpose()?,
        limit: q.limit()?,
        cursor: q.one("cursor").map(str::to_owned),
    };
    Ok(Json(state.store.list_models(filter).await?))
}

pub(super) async fn update(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<UpdateModel>,
) -> ApiResult<Response> {
    let model = state
        .store
        .update_model(&m.rc.ctx, &p.model()?, m.body, m.rc.pre)
        .await?;
    Ok(with_etag(StatusCode::OK, model.revision, &model))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    state.store.delete_model(&rc.ctx, &p.model()?, rc.pre).await?;
    Ok(StatusCode::NO_CONTENT)
}
