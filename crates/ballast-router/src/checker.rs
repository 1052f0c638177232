//! The background task of one target: runs its active checks when the route has them, and
//! probes it when its ejection ends (half-open) so that it can return even while no traffic is
//! routed to it (e.g. while its region is failed over).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Uri};

use crate::proxy::record_target_failure;
use crate::state::Shared;
use crate::table::{RouteRt, TargetRt};

/// Longest sleep of an unejected target's checker without active checks (it is woken at
/// once by an ejection; this bounds the wait should a wake-up be missed).
const IDLE: Duration = Duration::from_secs(30);

/// `GET path` on the target; the status, or `None` on error or time-out.
async fn probe(
    shared: &Shared,
    route: &RouteRt,
    target: &TargetRt,
    path: &str,
    timeout: Duration,
) -> Option<u16> {
    let pq = format!("{}{path}", target.base_path);
    let uri = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(pq)
        .build()
        .ok()?;
    let mut req = Request::new(http_body_util::Empty::new());
    *req.uri_mut() = uri;
    req.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("ballast-router-health"),
    );
    let client = shared.clients.get(route.spec.timeouts.connect_ms);
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// Frees a claimed probe slot if the task is aborted mid-probe.
struct Slot(Option<Arc<crate::health::TargetHealth>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abandon_probe();
        }
    }
}

/// Runs until aborted (when the snapshot is replaced or the router stops).
pub(crate) async fn run(shared: Arc<Shared>, route: Arc<RouteRt>, target: Arc<TargetRt>) {
    let policy = route.spec.health.clone();
    let probe_timeout = Duration::from_millis(
        route
            .spec
            .timeouts
            .connect_ms
            .saturating_add(route.spec.timeouts.first_byte_ms)
            .min(10_000),
    );
    loop {
        let now = Instant::now();
        let wait = match &policy.active {
            Some(a) => Duration::from_millis(a.interval_ms),
            None => match target.health.ejected_until() {
                Some(u) => u.saturating_duration_since(now).max(Duration::from_millis(20)),
                None => {
                    // Nothing is due until the target is ejected: sleep until it is (with a
                    // slow timer as a safety net) instead of polling.
                    let _ = tokio::time::timeout(IDLE, target.health.ejection()).await;
                    continue;
                }
            },
        };
        tokio::time::sleep(wait).await;
        if let Some(active) = &policy.active {
            let status = probe(
                &shared,
                &route,
                &target,
                &active.path,
                Duration::from_millis(active.timeout_ms),
            )
            .await;
            let ok = status.is_some_and(|s| (200..300).contains(&s));
            if target.health.record_active(ok, active) {
                tracing::warn!(route = %route.spec.name, target = %target.spec.id, healthy = ok, "active health check changed the target's state");
            }
            // The check doubles as the half-open probe.
            if target.health.try_begin_probe(Instant::now()) {
                let _slot = Slot(Some(Arc::clone(&target.health)));
                if ok {
                    target.health.record_success(Instant::now(), &policy);
                } else {
                    record_target_failure(&shared, &route, &target, Instant::now());
                }
            }
        } else if target.health.try_begin_probe(Instant::now()) {
            let mut slot = Slot(Some(Arc::clone(&target.health)));
            let status = probe(&shared, &route, &target, &policy.probe_path, probe_timeout).await;
            slot.0 = None;
            if status.is_some_and(|s| s < 500) {
                tracing::info!(route = %route.spec.name, target = %target.spec.id, "half-open probe passed; target back in service");
                target.health.record_success(Instant::now(), &policy);
            } else {
                record_target_failure(&shared, &route, &target, Instant::now());
            }
        }
    }
}
