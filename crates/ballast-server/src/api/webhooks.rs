//! `/v1/webhooks`: subscriptions, their deliveries, test pings and manual redelivery.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::events::{CreateWebhook, Delivery, DeliveryList, DeliveryStatus, Webhook};

use super::extract::{Params, QueryPairs};
use super::{Mutation, RequestCtx};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(super) async fn create(State(state): State<AppState>, m: Mutation<CreateWebhook>) -> ApiResult<Response> {
    if reqwest::Url::parse(m.body.url.trim()).is_err() {
        return Err(ApiError::invalid(
            "url",
            format!("invalid webhook URL {:?}", m.body.url),
        ));
    }
    let hook = state.store.create_webhook(&m.rc.ctx, m.body).await?;
    Ok((StatusCode::CREATED, Json(hook)).into_response())
}

pub(super) async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(state.store.list_webhooks().await?))
}

pub(super) async fn get(State(state): State<AppState>, p: Params) -> ApiResult<Json<Webhook>> {
    Ok(Json(state.store.get_webhook(p.id("id")?).await?))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<StatusCode> {
    state.store.delete_webhook(&rc.ctx, p.id("id")?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn test(State(state): State<AppState>, p: Params, rc: RequestCtx) -> ApiResult<Response> {
    let d = state.store.ping_webhook(&rc.ctx, p.id("id")?).await?;
    Ok((StatusCode::ACCEPTED, Json(d)).into_response())
}

pub(super) async fn deliveries(
    State(state): State<AppState>,
    p: Params,
    q: QueryPairs,
) -> ApiResult<Json<DeliveryList>> {
    q.only(&["status", "limit"])?;
    let status = match q.one("status") {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("dead") => Some(DeliveryStatus::Dead),
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("status must be pending, delivered or dead, got {other:?}"),
            ))
        }
    };
    Ok(Json(
        state
            .store
            .list_deliveries(p.id("id")?, status, q.limit()?)
            .await?,
    ))
}

pub(super) async fn delivery(State(state): State<AppState>, p: Params) -> ApiResult<Json<Delivery>> {
    Ok(Json(
        state.store.get_delivery(p.id("id")?, p.id("delivery")?).await?,
    ))
}

pub(super) async fn redeliver(
    State(state): State<AppState>,
    p: Params,
    rc: RequestCtx,
) -> ApiResult<Response> {
    let d = state
        .store
        .redeliver(&rc.ctx, p.id("id")?, p.id("delivery")?)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(d)).into_response())
}
