//! `/v1/routes`: registry routes, the logical models routers serve, each pointing at a stage or
//! an alias of a model.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ballast_api::deployments::{RegistryRoute, RouteList, SetRoute};

use super::extract::Params;
use super::{Mutation, RequestCtx};
use crate::error::ApiResult;
use crate::state::AppState;

pub(super) async fn set(
    State(state): State<AppState>,
    p: Params,
    m: Mutation<SetRoute>,
) -> ApiResult<Json<RegistryRoute>> {
    Ok(Json(
        state.store.set_route(&m.rc.ctx, p.get("name"), m.body).await?,
    ))
}

pub(super) async fn list(State(state): State<AppState>) -> ApiResult<Json<RouteList>> {
    Ok(Json(RouteList {
        routes: state.store.list_routes().await?,
    }))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    state.store.delete_route(&rc.ctx, p.get("name")).await?;
    Ok(StatusCode::NO_CONTENT)
}
