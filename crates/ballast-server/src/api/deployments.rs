//! `/v1/deployments`: where sealed versions are served (recorded by CD pipelines); the routing
//! snapshot is compiled from them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::deployments::{CreateDeployment, DeploymentList};
use ballast_core::ModelName;

use super::extract::{Params, QueryPairs};
use super::{Mutation, RequestCtx};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn create(
    State(state): State<AppState>,
    m: Mutation<CreateDeployment>,
) -> ApiResult<Response> {
    let d = state.store.add_deployment(&m.rc.ctx, m.body).await?;
    Ok((StatusCode::CREATED, Json(d)).into_response())
}

pub(super) async fn list(State(state): State<AppState>, q: QueryPairs) -> ApiResult<Json<DeploymentList>> {
    q.only(&["model", "region"])?;
    let model = q
        .one("model")
        .map(|m| ModelName::parse(m).map_err(|e| ApiError::from(e).field("model")))
        .transpose()?;
    let region = q.one("region").map(str::to_owned);
    Ok(Json(DeploymentList {
        deployments: state.store.list_deployments(model, region).await?,
    }))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    let id = p.id("id")?;
    state.store.remove_deployment(&rc.ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
