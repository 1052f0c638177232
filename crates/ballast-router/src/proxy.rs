//! The proxy: finds the route of a request, plans its attempts, and walks them under one
//! deadline until a target answers something worth returning; then streams that answer back
//! with headers saying what served it. A final failure lists every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ballast_api::routing::{AttemptReport, RouteKind, RouterErrorBody, RouterErrorDetail, OPENAI_PATHS};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::body::{read_bounded, ProxyBody, RequestBody, ResponseBody, UpstreamBody};
use crate::error::{ErrorKind, RouterError};
use crate::health::{FailureEffect, TargetHealth};
use crate::select::{self, Candidate};
use crate::state::{Active, Shared};
use crate::table::{RouteRt, TargetRt};

/// Response header: the route that served.
pub const H_ROUTE: &str = "x-ballast-route";
/// Response header: the target id that served.
pub const H_TARGET: &str = "x-ballast-target";
/// Response header: the model version that served.
pub const H_MODEL_VERSION: &str = "x-ballast-model-version";
/// Response header: the region that served.
pub const H_REGION: &str = "x-ballast-region";
/// Response header: how many attempts the request took.
pub const H_ATTEMPTS: &str = "x-ballast-attempts";

const N_ROUTE: HeaderName = HeaderName::from_static(H_ROUTE);
const N_TARGET: HeaderName = HeaderName::from_static(H_TARGET);
const N_MODEL_VERSION: HeaderName = HeaderName::from_static(H_MODEL_VERSION);
const N_REGION: HeaderName = HeaderName::from_static(H_REGION);
const N_ATTEMPTS: HeaderName = HeaderName::from_static(H_ATTEMPTS);

/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1), with the
/// legacy `keep-alive` and `proxy-connection`.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
#[must_use]
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[derive(serde::Deserialize)]
struct ModelField {
    model: String,
}

/// What a request needs from its route lookup.
struct Routed {
    route: Arc<RouteRt>,
    body: RequestBody,
    model: Option<String>,
}

/// Releases a half-open probe slot if the attempt ends without a verdict.
struct ProbeGuard(Option<Arc<TargetHealth>>);

impl ProbeGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abandon_probe();
        }
    }
}

/// Proxies one request (everything but the router's own endpoints).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    // The request keeps this snapshot to its end, whatever reloads happen meanwhile.
    let active = shared.active();
    let (parts, body) = req.into_parts();
    let routed = match find_route(&shared, &active, &parts.method, &parts.uri, body).await {
        Ok(r) => r,
        Err(e) => {
            shared
                .metrics
                .requests
                .with(&["", e.http_status().as_str()])
                .inc();
            return error_response(&e, None, &[]);
        }
    };
    let route = Arc::clone(&routed.route);
    let mut resp = forward(&shared, &active, routed, parts, started).await;
    let name = route.spec.name.as_str();
    if !resp.headers().contains_key(&N_ROUTE) {
        resp.headers_mut().insert(N_ROUTE, header_value(name));
    }
    let m = &shared.metrics;
    if resp.status() == StatusCode::OK {
        route.metrics.requests_ok.get(&m.requests, &[name, "200"]).inc();
    } else {
        m.requests.with(&[name, resp.status().as_str()]).inc();
    }
    route
        .metrics
        .duration
        .get(&m.request_duration, &[name])
        .observe(started.elapsed());
    resp
}

async fn find_route(
    shared: &Shared,
    active: &Active,
    method: &Method,
    uri: &Uri,
    body: hyper::body::Incoming,
) -> Result<Routed, RouterError> {
    let path = uri.path();
    if method == Method::POST && OPENAI_PATHS.contains(&path) {
        let limit = shared.config.max_openai_body_bytes;
        let body = read_bounded(body, limit).await.map_err(|e| {
            RouterError::new(
                ErrorKind::ClientBody,
                format!("cannot read the request body: {e}"),
            )
        })?;
        let RequestBody::Full(bytes) = &body else {
            return Err(RouterError::new(
                ErrorKind::BodyTooLarge,
                format!("the request body is larger than {limit} bytes"),
            ));
        };
        let model = serde_json::from_slice::<ModelField>(bytes)
            .map_err(|e| {
                RouterError::new(
                    ErrorKind::InvalidRequest,
                    format!("the body must be a JSON object with a string \"model\": {e}"),
                )
            })?
            .model;
        let route = active.table.openai(&model).ok_or_else(|| {
            RouterError::new(
                ErrorKind::UnknownRoute,
                format!("no route serves the model {model:?}"),
            )
        })?;
        return Ok(Routed {
            route: Arc::clone(route),
            body,
            model: Some(model),
        });
    }
    let route = active.table.prefix_match(path).ok_or_else(|| {
        RouterError::new(
            ErrorKind::UnknownRoute,
            format!("no route matches {method} {path}"),
        )
    })?;
    let limit = usize::try_from(route.spec.retry.replay_buffer_bytes).unwrap_or(usize::MAX);
    let body = read_bounded(body, limit).await.map_err(|e| {
        RouterError::new(
            ErrorKind::ClientBody,
            format!("cannot read the request body: {e}"),
        )
    })?;
    Ok(Routed {
        route: Arc::clone(route),
        body,
        model: None,
    })
}

/// The path and query sent to a target (origin form).
fn upstream_uri(target: &TargetRt, route: &RouteRt, uri: &Uri) -> Result<Uri, RouterError> {
    let path = uri.path();
    let rest = match (
        &route.spec.kind,
        route.spec.strip_prefix,
        route.spec.prefix.as_deref(),
    ) {
        (RouteKind::Prefix, true, Some(prefix)) => {
            let p = prefix.trim_end_matches('/');
            path.get(p.len()..).unwrap_or("")
        }
        _ => path,
    };
    let mut pq = String::with_capacity(target.base_path.len() + rest.len() + 16);
    pq.push_str(&target.base_path);
    if !rest.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(rest);
    if let Some(q) = uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    // Origin form (path and query only): the authority goes in `Host`.
    Uri::builder()
        .path_and_query(pq)
        .build()
        .map_err(|e| RouterError::new(ErrorKind::Internal, format!("cannot build the upstream URI: {e}")))
}

/// The body for a candidate: openai bodies get the model the target knows.
fn body_for(cand: &Candidate, requested_model: Option<&str>, body: &RequestBody) -> ProxyBody {
    if let (Some(requested), RequestBody::Full(bytes)) = (requested_model, body) {
        let wanted = cand
            .target
            .spec
            .upstream_model
            .as_deref()
            .unwrap_or(cand.route.spec.name.as_str());
        if wanted != requested {
            if let Ok(mut map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes) {
                map.insert("model".to_owned(), serde_json::Value::String(wanted.to_owned()));
                if let Ok(v) = serde_json::to_vec(&map) {
                    return ProxyBody::Full(Some(Bytes::from(v)));
                }
            }
        }
    }
    ProxyBody::for_attempt(body)
}

/// A response that will be returned to the client.
struct Winner {
    parts: http::response::Parts,
    first: Option<http_body::Frame<Bytes>>,
    body: hyper::body::Incoming,
    conn: Box<crate::upstream::Conn>,
}

#[allow(clippy::too_many_lines)]
async fn forward(
    shared: &Arc<Shared>,
    active: &Active,
    routed: Routed,
    mut parts: http::request::Parts,
    started: Instant,
) -> Response<ResponseBody> {
    let route = &routed.route;
    let spec = &route.spec;
    let now = Instant::now();
    let deadline = started + Duration::from_millis(spec.timeouts.deadline_ms);
    let plan = select::plan(
        &active.table,
        route,
        &shared.config.region,
        &parts.headers,
        rand::random::<u64>(),
        now,
    );
    for (r, t) in &plan.transitions {
        let direction = match t {
            crate::failover::Transition::Out => "out",
            crate::failover::Transition::Back => "back",
        };
        tracing::warn!(route = %r, direction, region = %shared.config.region, "region failover");
        shared.metrics.failovers.with(&[r, direction]).inc();
    }
    for r in &plan.panic_routes {
        shared.metrics.panic_routing.with(&[r]).inc();
    }
    spec_budget(route).record_request(now, &spec.retry);

    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    if matches!(routed.body, RequestBody::Full(_)) {
        headers.remove(header::CONTENT_LENGTH);
    }

    let mut reports: Vec<AttemptReport> = Vec::new();
    let mut stop: Option<RouterError> = None;
    let mut last: Option<RouterError> = None;
    for cand in &plan.candidates {
        let attempt_no = reports.len();
        if attempt_no >= usize::try_from(spec.retry.max_attempts).unwrap_or(usize::MAX) {
            break;
        }
        if attempt_no > 0 {
            if let RequestBody::Partial(src) = &routed.body {
                if src.started() {
                    stop = Some(RouterError::new(
                        ErrorKind::UpstreamIo,
                        "the request body was larger than the replay buffer and had started to flow; not retried",
                    ));
                    break;
                }
            }
            if !route.state.budget.try_retry(Instant::now(), &spec.retry) {
                shared.metrics.retry_budget_exhausted.with(&[&spec.name]).inc();
                stop = Some(RouterError::new(
                    ErrorKind::RetryBudget,
                    "the route's retry budget is spent; not retrying now",
                ));
                break;
            }
        }
        let mut guard = ProbeGuard(None);
        if cand.probe {
            if !cand.target.health.try_begin_probe(Instant::now()) {
                continue;
            }
            guard = ProbeGuard(Some(Arc::clone(&cand.target.health)));
        }
        let now = Instant::now();
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            stop = Some(RouterError::new(
                ErrorKind::Deadline,
                "the request's deadline ran out",
            ));
            break;
        }
        let timeouts = &cand.route.spec.timeouts;
        let per_attempt = Duration::from_millis(timeouts.connect_ms.saturating_add(timeouts.first_byte_ms));
        let (limit, by_deadline) = if remaining < per_attempt {
            (remaining, true)
        } else {
            (per_attempt, false)
        };
        let uri = match upstream_uri(&cand.target, &cand.route, &parts.uri) {
            Ok(u) => u,
            Err(e) => {
                stop = Some(e);
                break;
            }
        };
        let result = attempt(
            shared,
            cand,
            &parts.method,
            uri,
            &headers,
            || body_for(cand, routed.model.as_deref(), &routed.body),
            limit,
            by_deadline,
        )
        .await;
        let elapsed = now.elapsed();
        let target_id = cand.target.spec.id.as_str();
        cand.target
            .metrics
            .latency
            .get(&shared.metrics.attempt_duration, &[target_id])
            .observe(elapsed);
        match result {
            Ok(winner) => {
                guard.disarm();
                cand.target
                    .health
                    .record_success(Instant::now(), &cand.route.spec.health);
                cand.target
                    .metrics
                    .attempts_ok
                    .get(
                        &shared.metrics.attempts,
                        &[&cand.route.spec.name, target_id, "ok"],
                    )
                    .inc();
                if cand.route.spec.name != spec.name {
                    shared
                        .metrics
                        .fallbacks
                        .with(&[&spec.name, &cand.route.spec.name])
                        .inc();
                }
                return success_response(shared, cand, winner, attempt_no + 1);
            }
            Err(e) => {
                guard.disarm();
                shared
                    .metrics
                    .attempts
                    .with(&[&cand.route.spec.name, target_id, e.attempt_class().as_str()])
                    .inc();
                let client_fault = matches!(&routed.body, RequestBody::Partial(src) if src.client_failed());
                if client_fault {
                    if cand.probe {
                        cand.target.health.abandon_probe();
                    }
                    let e = RouterError::new(
                        ErrorKind::ClientBody,
                        "the request body broke while it was forwarded",
                    );
                    return error_response(&e, Some(attempt_no + 1), &reports);
                }
                let now = Instant::now();
                if e.counts_against_target() {
                    record_target_failure(shared, &cand.route, &cand.target, now);
                } else if e.kind == ErrorKind::RateLimited {
                    cand.target
                        .health
                        .record_rate_limited(now, e.retry_after, &cand.route.spec.health);
                    if cand.probe {
                        cand.target.health.abandon_probe();
                    }
                } else if cand.probe {
                    cand.target.health.abandon_probe();
                }
                tracing::debug!(route = %cand.route.spec.name, target = target_id, error = %e, "attempt failed");
                reports.push(AttemptReport {
                    route: cand.route.spec.name.clone(),
                    target: target_id.to_owned(),
                    region: cand.target.spec.region.clone(),
                    error: e.attempt_class(),
                    status: e.status,
                    elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                });
                let retryable = e.retryable;
                last = Some(e);
                if !retryable {
                    break;
                }
            }
        }
    }
    let attempts = reports.len();
    let err = match (stop, last) {
        (Some(s), _) if s.kind != ErrorKind::UpstreamIo => s,
        (_, Some(l)) if l.kind == ErrorKind::Deadline => l,
        (_, Some(_))
            if !reports.is_empty()
                && reports.iter().all(|r| {
                    matches!(
                        r.error,
                        ballast_api::routing::AttemptErrorClass::FirstByteTimeout
                            | ballast_api::routing::AttemptErrorClass::ConnectTimeout
                            | ballast_api::routing::AttemptErrorClass::Deadline
                    )
                }) =>
        {
            RouterError::new(
                ErrorKind::Deadline,
                format!("every attempt timed out ({attempts} attempts)"),
            )
        }
        (_, Some(_)) => RouterError::new(
            ErrorKind::UpstreamStatus,
            format!("every attempt failed ({attempts} attempts)"),
        ),
        (Some(s), None) => s,
        (None, None) => RouterError::new(
            ErrorKind::NoTarget,
            format!("route {:?} has no target to try", spec.name),
        ),
    };
    tracing::warn!(route = %spec.name, attempts, code = err.code(), "request failed");
    error_response(&err, Some(attempts), &reports)
}

fn spec_budget(route: &RouteRt) -> &crate::budget::RetryBudget {
    &route.state.budget
}

/// Records a failure against a target, ejecting it when due and allowed by the route's share.
pub(crate) fn record_target_failure(shared: &Shared, route: &RouteRt, target: &TargetRt, now: Instant) {
    let policy = &route.spec.health;
    let total = route.targets.len();
    let ejected = route.targets.iter().filter(|t| t.health.is_ejected()).count();
    let cap = (total * usize::try_from(policy.max_ejection_percent).unwrap_or(100) / 100).max(1);
    let effect = target.health.record_failure(now, policy, ejected < cap);
    match effect {
        FailureEffect::Ejected(d) => {
            tracing::warn!(route = %route.spec.name, target = %target.spec.id, ejected_for_ms = d.as_millis(), "target ejected");
            shared
                .metrics
                .ejections
                .with(&[&route.spec.name, &target.spec.id])
                .inc();
        }
        FailureEffect::EjectionCapped => {
            tracing::debug!(route = %route.spec.name, target = %target.spec.id, "ejection skipped: maximum ejection share reached");
        }
        FailureEffect::Counted => {}
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    shared: &Shared,
    cand: &Candidate,
    method: &Method,
    uri: Uri,
    headers: &HeaderMap,
    body: impl Fn() -> ProxyBody,
    limit: Duration,
    by_deadline: bool,
) -> Result<Winner, RouterError> {
    let host = cand.target.host.as_ref();
    let build = || {
        let mut req = Request::new(body());
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers.clone();
        if let Some(h) = host {
            req.headers_mut().insert(header::HOST, h.clone());
        }
        req
    };
    let key = crate::upstream::PoolKey::new(&cand.target.scheme, &cand.target.authority);
    let connect_ms = cand.route.spec.timeouts.connect_ms;
    let work = async {
        let (resp, mut conn) = shared
            .pool
            .send(&key, connect_ms, build(), || Some(build()))
            .await?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(
                RouterError::new(ErrorKind::UpstreamStatus, format!("upstream answered {status}"))
                    .with_status(status.as_u16()),
            );
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let mut e = RouterError::new(ErrorKind::RateLimited, "upstream answered 429").with_status(429);
            e.retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(e);
        }
        let (parts, mut body) = resp.into_parts();
        let frame =
            std::future::poll_fn(|cx| crate::upstream::poll_body_frame(Some(&mut conn), &mut body, cx)).await;
        let first = match frame {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                return Err(RouterError::new(
                    ErrorKind::UpstreamIo,
                    format!("the response broke before its first byte: {e}"),
                )
                .with_status(parts.status.as_u16()))
            }
        };
        Ok(Winner {
            parts,
            first,
            body,
            conn,
        })
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) if by_deadline => Err(RouterError::new(
            ErrorKind::Deadline,
            "the request's deadline ran out during the attempt",
        )),
        Err(_) => Err(RouterError::new(
            ErrorKind::FirstByteTimeout,
            format!("no response within {} ms", limit.as_millis()),
        )),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn success_response(
    shared: &Arc<Shared>,
    cand: &Candidate,
    winner: Winner,
    attempts: usize,
) -> Response<ResponseBody> {
    let Winner {
        mut parts,
        first,
        body,
        conn,
    } = winner;
    strip_hop_by_hop(&mut parts.headers);
    let h = &mut parts.headers;
    let [route, target, version, region] = &cand.target.served_by;
    h.insert(N_ROUTE, route.clone());
    h.insert(N_TARGET, target.clone());
    h.insert(N_MODEL_VERSION, version.clone());
    h.insert(N_REGION, region.clone());
    h.insert(N_ATTEMPTS, HeaderValue::from(attempts));
    let on_error = {
        let shared = Arc::clone(shared);
        let route = Arc::clone(&cand.route);
        let target = Arc::clone(&cand.target);
        Box::new(move || {
            tracing::warn!(route = %route.spec.name, target = %target.spec.id, "response stream broke (or went idle) after it started");
            shared.metrics.stream_errors.with(&[&target.spec.id]).inc();
            record_target_failure(&shared, &route, &target, Instant::now());
        })
    };
    let idle = cand
        .route
        .spec
        .timeouts
        .stream_idle_ms
        .map_or(shared.config.stream_idle_timeout, Duration::from_millis);
    let upstream = UpstreamBody::new(first, body, idle, on_error).with_conn(conn, Arc::clone(&shared.pool));
    Response::from_parts(parts, ResponseBody::Upstream(upstream))
}

/// The router's own error answer, with every attempt listed.
pub(crate) fn error_response(
    err: &RouterError,
    attempts: Option<usize>,
    reports: &[AttemptReport],
) -> Response<ResponseBody> {
    let body = RouterErrorBody {
        error: RouterErrorDetail {
            code: err.code().to_owned(),
            message: err.message.clone(),
            source: err.origin.as_str().to_owned(),
            attempts: reports.to_vec(),
        },
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = Response::new(ResponseBody::full(bytes));
    *resp.status_mut() = err.http_status();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(n) = attempts {
        resp.headers_mut().insert(N_ATTEMPTS, HeaderValue::from(n));
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7"), now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&date).unwrap(), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon"), now), None);
    }
}
