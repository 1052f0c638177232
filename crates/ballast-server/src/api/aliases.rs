//! `/v1/models/{ns}/{model}/aliases/{alias}`: set (with compare-and-swap), read, resolve, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use ballast_api::SetAlias;
use ballast_core::validate_alias;

use super::extract::{with_etag, Params};
use super::{Mutation, RequestCtx};
use crate::error::ApiResult;
use crate::state::AppState;

pub(super) async fn get(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let alias = p.get("alias");
    validate_alias(alias)?;
    let a = state.store.get_alias(&p.model()?, alias).await?;
    Ok(with_etag(StatusCode::OK, a.revision, &a))
}

pub(super) async fn resolve(State(state): State<AppState>, p: Params) -> ApiResult<Response> {
    let alias = p.get("alias");
    validate_alias(alias)?;
    let name = p.model()?;
    let a = state.store.get_alias(&name, alias).await?;
    let v = state.store.get_version(&name, a.version).await?;
    Ok(with_etag(StatusCode::OK, v.revision, &v))
}

pub(super) async fn set(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<SetAlias>,
) -> ApiResult<Response> {
    let a = state
        .store
        .set_alias(&m.rc.ctx, &p.model()?, p.get("alias"), m.body.version, m.rc.pre)
        .await?;
    Ok(with_etag(StatusCode::OK, a.revision, &a))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_alias(&rc.ctx, &p.model()?, p.get("alias"), rc.pre)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
