//! The router's own endpoints: `/healthz` (alive), `/readyz` (has a snapshot), `/metrics`
//! (Prometheus), `GET /routes` (the active snapshot's generation and digest) and
//! `GET /admin/targets` (each target's health and drain flag), `POST /admin/targets/{id}/drain`
//! and `/undrain` (the operator's drain flag). They take precedence over prefix routes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::health::HealthView;
use crate::state::{unix_ms, Shared};

/// `GET /healthz`.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: ready once a snapshot is active (always true after start).
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let active = shared.active();
    Json(serde_json::json!({
        "ready": true,
        "generation": active.snapshot.generation,
    }))
    .into_response()
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.metrics.render(unix_ms(SystemTime::now()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// One route in `GET /routes`.
#[derive(Debug, Serialize)]
struct RouteSummary {
    name: String,
    kind: ballast_api::routing::RouteKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    targets: usize,
    fallbacks: Vec<String>,
}

/// `GET /routes`.
pub(crate) async fn routes(State(shared): State<Arc<Shared>>) -> Response {
    let active = shared.active();
    let s = &active.snapshot;
    let routes: Vec<RouteSummary> = s
        .routes
        .iter()
        .map(|r| RouteSummary {
            name: r.name.clone(),
            kind: r.kind,
            prefix: r.prefix.clone(),
            targets: r.targets.len(),
            fallbacks: r.fallbacks.clone(),
        })
        .collect();
    let now = unix_ms(SystemTime::now());
    Json(serde_json::json!({
        "generation": s.generation,
        "digest": s.digest,
        "source": active.source,
        "registry": shared.registry_status(),
        "region": shared.config.region,
        "loaded_at_unix_ms": active.loaded_at_unix_ms,
        "age_ms": now.saturating_sub(active.loaded_at_unix_ms),
        "routes": routes,
    }))
    .into_response()
}

/// One target in `GET /admin/targets`.
#[derive(Debug, Serialize)]
struct TargetSummary {
    id: String,
    route: String,
    region: String,
    model_version: String,
    url: String,
    weight: u32,
    /// The operator's drain flag (apart from health).
    drained: bool,
    #[serde(flatten)]
    health: HealthView,
}

/// `GET /admin/targets`.
pub(crate) async fn targets(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    let list: Vec<TargetSummary> = shared
        .targets()
        .into_iter()
        .map(|(route, t)| TargetSummary {
            id: t.spec.id.clone(),
            route: route.spec.name.clone(),
            region: t.spec.region.clone(),
            model_version: t.spec.model_version.clone(),
            url: t.spec.url.clone(),
            weight: t.spec.weight,
            drained: t.drain.is_drained(),
            health: t.health.view(now),
        })
        .collect();
    Json(serde_json::json!({ "targets": list })).into_response()
}

/// `POST /admin/targets/{id}/drain`: no new requests to the target; those under way finish.
pub(crate) async fn drain(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    set_drain(&shared, &id, true)
}

/// `POST /admin/targets/{id}/undrain`: the target takes requests again (if healthy).
pub(crate) async fn undrain(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    set_drain(&shared, &id, false)
}

fn set_drain(shared: &Shared, id: &str, drained: bool) -> Response {
    let Some((route, target)) = shared.targets().into_iter().find(|(_, t)| t.spec.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": {"code": "unknown_target", "message": format!("no target {id:?} in the active snapshot")}
            })),
        )
            .into_response();
    };
    let was = target.drain.set(drained);
    if was != drained {
        tracing::warn!(route = %route.spec.name, target = %id, drained, "operator drain flag changed");
    }
    Json(serde_json::json!({ "id": id, "route": route.spec.name, "drained": drained, "was_drained": was }))
        .into_response()
}
