//! The HTTP API: routes, the request context every handler gets, and cross-cutting layers
//! (request ids, metrics, panic safety net).

mod access;
mod aliases;
mod audit;
mod compare;
mod deployments;
mod events;
mod extract;
mod files;
pub(crate) mod mlflow;
mod models;
mod policies;
pub mod regions;
mod retention;
mod routes;
mod routing;
mod system;
mod transitions;
mod versions;
mod webhooks;

pub use extract::{parse_model, Caller, Mutation, RequestCtx, ACTOR as ACTOR_HEADER};

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use ballast_core::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Builds the application with every route and layer.
pub fn router(state: AppState) -> Router {
    let model = "/v1/models/{ns}/{model}";
    let version = "/v1/models/{ns}/{model}/versions/{n}";
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/v1/openapi.json", get(system::openapi))
        .route("/v1/models", post(models::create).get(models::list))
        .route(
            model,
            get(models::get).patch(models::update).delete(models::delete),
        )
        .route(
            &format!("{model}/versions"),
            post(versions::create).get(versions::list),
        )
        .route(&format!("{model}/rollback"), post(versions::rollback))
        .route(&format!("{model}/stages/{{stage}}"), get(versions::in_stage))
        .route(
            &format!("{model}/aliases/{{alias}}"),
            get(aliases::get).put(aliases::set).delete(aliases::delete),
        )
        .route(
            &format!("{model}/aliases/{{alias}}/version"),
            get(aliases::resolve),
        )
        .route(version, get(versions::get).patch(versions::update))
        .route(&format!("{version}/seal"), post(versions::seal))
        .route(&format!("{version}/stage"), post(versions::stage))
        .route(&format!("{version}/manifest"), get(files::manifest))
        .route(&format!("{version}/files"), post(files::attach))
        .route(
            &format!("{version}/files/{{*path}}"),
            put(files::upload).get(files::download).delete(files::delete),
        )
        .route("/v1/blobs/sha256/{digest}", get(files::blob_info))
        .route(
            "/v1/policies/{ns}",
            get(policies::get_namespace)
                .put(policies::set_namespace)
                .delete(policies::delete_namespace),
        )
        .route(
            &format!("{model}/policy"),
            get(policies::get_model)
                .put(policies::set_model)
                .delete(policies::delete_model),
        )
        .route(&format!("{model}/policy/effective"), get(policies::effective))
        .route(&format!("{model}/compare"), get(compare::compare))
        .route("/v1/transition-requests", get(transitions::list_all))
        .route(&format!("{model}/transition-requests"), get(transitions::list))
        .route(
            &format!("{model}/transition-requests/{{id}}"),
            get(transitions::get),
        )
        .route(
            &format!("{model}/transition-requests/{{id}}/approve"),
            post(transitions::approve),
        )
        .route(
            &format!("{model}/transition-requests/{{id}}/reject"),
            post(transitions::reject),
        )
        .route(
            &format!("{model}/transition-requests/{{id}}/complete"),
            post(transitions::complete),
        )
        .route(
            &format!("{model}/transition-requests/{{id}}/cancel"),
            post(transitions::cancel),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/events", get(events::list))
        .route("/v1/events/stream", get(events::stream))
        .route(
            "/v1/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route("/v1/deployments/{id}", axum::routing::delete(deployments::delete))
        .route("/v1/routes", get(routes::list))
        .route("/v1/routes/{name}", put(routes::set).delete(routes::delete))
        .route("/v1/routing/snapshot", get(routing::snapshot))
        .route("/v1/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/v1/webhooks/{id}", get(webhooks::get).delete(webhooks::delete))
        .route("/v1/webhooks/{id}/test", post(webhooks::test))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/v1/webhooks/{id}/deliveries/{delivery}", get(webhooks::delivery))
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(webhooks::redeliver),
        )
        .route(
            "/v1/retention/{ns}",
            get(retention::get_namespace)
                .put(retention::set_namespace)
                .delete(retention::delete_namespace),
        )
        .route(
            &format!("{model}/retention"),
            get(retention::get_model)
                .put(retention::set_model)
                .delete(retention::delete_model),
        )
        .route("/v1/gc", post(retention::run_gc))
        .route("/v1/status", get(regions::status))
        .route("/v1/fsck", post(regions::fsck))
        .route("/v1/whoami", get(access::whoami))
        .route("/v1/tokens", post(access::create_token).get(access::list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(access::revoke_token))
        .route("/v1/roles", post(access::grant_role).get(access::list_roles))
        .route(
            "/v1/roles/{principal}/{namespace}/{role}",
            axum::routing::delete(access::revoke_role),
        )
        .merge(mlflow::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            crate::authz::AuthzState::new(&state),
            crate::authz::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::clone(&state.gc),
            crate::gc::track_changes,
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(
                ErrorCode::Internal,
                "internal error: the request could not be completed",
            )
            .into_response()
        }))
        .with_state(state)
}

/// An authorization failure on an MLflow route, in MLflow's error format.
pub(crate) fn mlflow_error(e: ApiError) -> Response {
    mlflow::MlError::from(e).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route; see /v1/openapi.json for the API",
    )
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::new(
        ErrorCode::InvalidArgument,
        "method not allowed on this route; see /v1/openapi.json",
    )
    .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Assigns the request id, times the request and records its metrics.
async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| format!("{:032x}", rand::random::<u128>()), str::to_owned);
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    metrics::gauge!("ballast_http_requests_in_flight").increment(1.0);
    let mut resp = next.run(req).await;
    metrics::gauge!("ballast_http_requests_in_flight").decrement(1.0);
    let status = resp.status().as_u16().to_string();
    metrics::counter!("ballast_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ballast_http_request_duration_seconds", "method" => method.clone(), "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(%method, %route, status = resp.status().as_u16(), request_id = %id, elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}
