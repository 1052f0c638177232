//! Health, readiness, metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::AppState;

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reason": e.message })),
        )
            .into_response(),
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(s) = state.store.stats().await {
        #[allow(clippy::cast_precision_loss)]
        {
            metrics::gauge!("ballast_store_models").set(s.models as f64);
            metrics::gauge!("ballast_store_versions").set(s.versions as f64);
            metrics::gauge!("ballast_store_blobs").set(s.blobs as f64);
            metrics::gauge!("ballast_store_blob_bytes").set(s.blob_bytes as f64);
            metrics::gauge!("ballast_store_audit_entries").set(s.audit_entries as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub(super) async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
        .into_response()
}
