//! The router's own endpoints: `/healthz` (alive), `/readyz` (has a snapshot), `/metrics`
//! (Prometheus), `GET /routes` (the active snapshot's generation and digest) and
//! `GET /admin/targets` (each target's health and drain flag), `POST /admin/targets/{id}/drain`
//! and `/undrain` (the operator's drain flag). They take precedence over prefix routes.
//!
//! `/admin/*` is guarded ([`authorize`]): with an admin token configured every request needs
//! `Authorization: Bearer <token>`; without one only loopback peers are served.

use std::net::IpAddr;
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

/// Why an `/admin/*` request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// A token is configured and the request did not present it (401).
    Unauthorized,
    /// No token is configured and the peer is not on loopback (403).
    NotLoopback,
}

impl AdminRefusal {
    /// The HTTP status of the refusal.
    #[must_use]
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotLoopback => StatusCode::FORBIDDEN,
        }
    }

    /// The JSON error body of the refusal.
    #[must_use]
    pub fn body(self) -> Vec<u8> {
        let (code, message) = match self {
            Self::Unauthorized => (
                "unauthorized",
                "this endpoint needs the router's admin token as `Authorization: Bearer <token>`",
            ),
            Self::NotLoopback => (
                "forbidden",
                "the router has no admin token (--admin-token-file), so /admin/* answers loopback clients only",
            ),
        };
        serde_json::to_vec(&serde_json::json!({"error": {"code": code, "message": message}}))
            .unwrap_or_default()
    }
}

/// Decides whether an `/admin/*` request is served: with a `token`, only when `authorization`
/// (the request's `Authorization` field) is `Bearer <token>`; without one, only when the `peer`
/// is a loopback address (an unknown peer is refused).
///
/// # Errors
/// Why the request is refused.
pub fn authorize(
    token: Option<&crate::config::AdminToken>,
    peer: Option<IpAddr>,
    authorization: Option<&[u8]>,
) -> Result<(), AdminRefusal> {
    match token {
        Some(token) => {
            let presented = authorization
                .and_then(|v| {
                    let scheme = v.get(..7)?;
                    scheme
                        .eq_ignore_ascii_case(b"bearer ")
                        .then(|| v[7..].trim_ascii())
                })
                .unwrap_or_default();
            if token.matches(presented) {
                Ok(())
            } else {
                Err(AdminRefusal::Unauthorized)
            }
        }
        None if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) => Ok(()),
        None => Err(AdminRefusal::NotLoopback),
    }
}

/// `GET /readyz`: 200 while the router takes traffic; 503 with a `reason` while it shuts down
/// (`shutting_down`: load balancers should stop sending) or when the active snapshot has no
/// routes (`no_routes`: every request would be refused).
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let active = shared.active();
    let generation = active.snapshot.generation;
    let reason = if shared.is_shutting_down() {
        Some("shutting_down")
    } else if active.snapshot.routes.is_empty() {
        Some("no_routes")
    } else {
        None
    };
    match reason {
        None => Json(serde_json::json!({ "ready": true, "generation": generation })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason, "generation": generation })),
        )
            .into_response(),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{authorize, AdminRefusal};
    use crate::config::AdminToken;

    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn without_a_token_only_loopback_peers_are_served() {
        assert_eq!(authorize(None, Some(LOOPBACK), None), Ok(()));
        assert_eq!(
            authorize(None, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), None),
            Ok(())
        );
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(authorize(None, Some(mapped), None), Ok(()));
        assert_eq!(
            authorize(None, Some(REMOTE), None),
            Err(AdminRefusal::NotLoopback)
        );
        assert_eq!(
            authorize(None, Some(REMOTE), Some(b"Bearer anything")),
            Err(AdminRefusal::NotLoopback)
        );
        assert_eq!(authorize(None, None, None), Err(AdminRefusal::NotLoopback));
        assert_eq!(AdminRefusal::NotLoopback.status(), 403);
        let body: serde_json::Value = serde_json::from_slice(&AdminRefusal::NotLoopback.body()).unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--admin-token-file"));
    }

    #[test]
    fn with_a_token_every_peer_needs_it() {
        let t = AdminToken::new("s3cret-token\n").unwrap();
        for peer in [Some(REMOTE), Some(LOOPBACK), None] {
            assert_eq!(authorize(Some(&t), peer, Some(b"Bearer s3cret-token")), Ok(()));
            assert_eq!(authorize(Some(&t), peer, Some(b"bearer s3cret-token")), Ok(()));
            for wrong in [
                None,
                Some(&b"Bearer s3cret-tokem"[..]),
                Some(b"Bearer s3cret-token2"),
                Some(b"Bearer s3cret"),
                Some(b"Bearer "),
                Some(b"Basic s3cret-token"),
                Some(b"s3cret-token"),
            ] {
                assert_eq!(
                    authorize(Some(&t), peer, wrong),
                    Err(AdminRefusal::Unauthorized),
                    "{wrong:?}"
                );
            }
        }
        assert_eq!(AdminRefusal::Unauthorized.status(), 401);
        assert!(AdminToken::new("  ").is_err());
        assert!(AdminToken::new("two words").is_err());
        assert_eq!(format!("{t:?}"), "AdminToken(****)");
    }
}
