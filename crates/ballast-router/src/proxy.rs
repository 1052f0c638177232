//! The proxy: finds the route of a request, plans its attempts, and walks them under one
//! deadline until a target answers something worth returning; then streams that answer back
//! with headers saying what served it. A final failure lists every attempt.
//!
//! Requests and answers travel as HTTP/1.1 bytes ([`crate::h1`]): the request head is written
//! to the upstream straight from the client's parsed head (hop-by-hop fields dropped), and the
//! answer's head is rewritten the same way on its way back.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ballast_api::routing::{AttemptReport, RouteKind, RouterErrorBody, RouterErrorDetail, OPENAI_PATHS};
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::net::TcpStream;

use crate::body::{ClientBody, RequestBody};
use crate::error::{ErrorKind, RouterError};
use crate::h1::{self, BodyDecoder, Framing, Piece, RequestHead, ResponseHead};
use crate::health::{FailureEffect, TargetHealth};
use crate::select::{self, Candidate};
use crate::state::{Active, Shared};
use crate::table::{RouteRt, TargetRt};
use crate::upstream::{Answer, Conn, Outgoing, PoolKey};
use crate::wire::Wire;

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

/// Request fields the router sets itself (besides the hop-by-hop ones it never forwards).
const REQUEST_OWN: [&str; 4] = ["host", "content-length", "expect", "transfer-encoding"];

/// Answer fields the router sets itself: the length (when it re-frames a body) and its own.
const RESPONSE_OWN: [&str; 6] = [
    "content-length",
    H_ROUTE,
    H_TARGET,
    H_MODEL_VERSION,
    H_REGION,
    H_ATTEMPTS,
];

/// The client's connection.
pub(crate) type ClientWire = Wire<TcpStream>;

/// Parses `Retry-After`: delay-seconds or an HTTP date.
#[must_use]
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let s = std::str::from_utf8(value).ok()?.trim();
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

/// One request on a client connection, as the proxy serves it.
pub(crate) struct Exchange<'a> {
    /// The request head.
    pub head: &'a RequestHead,
    /// Its body, still on the connection.
    pub body: &'a mut ClientBody,
    /// The connection.
    pub client: &'a mut ClientWire,
    /// The client wants the connection kept and the router is not draining.
    pub keep_alive: bool,
    /// The connection's scratch buffer for encoding (kept across its requests).
    pub buf: &'a mut Vec<u8>,
}

impl Exchange<'_> {
    /// Whether the connection can take another request after this answer.
    fn keep(&self) -> bool {
        self.keep_alive && self.body.is_done()
    }
}

/// Proxies one request (everything but the router's own endpoints) and writes the answer.
/// Returns whether the client connection can take another request.
pub(crate) async fn handle(shared: &Arc<Shared>, ex: &mut Exchange<'_>) -> bool {
    let started = Instant::now();
    // The request keeps this snapshot to its end, whatever reloads happen meanwhile.
    let active = shared.active();
    let routed = match find_route(shared, &active, ex).await {
        Ok(r) => r,
        Err(e) => {
            shared
                .metrics
                .requests
                .with(&["", e.http_status().as_str()])
                .inc();
            return write_error(ex, &e, None, &[], None).await;
        }
    };
    let route = Arc::clone(&routed.route);
    let name = route.spec.name.as_str();
    let outcome = forward(shared, &active, &routed, ex, started).await;
    let m = &shared.metrics;
    let status = match &outcome {
        Outcome::Served(s) => StatusCode::from_u16(s.winner.head.status).unwrap_or(StatusCode::BAD_GATEWAY),
        Outcome::Failed { err, .. } => err.http_status(),
    };
    if status == StatusCode::OK {
        route.metrics.requests_ok.get(&m.requests, &[name, "200"]).inc();
    } else {
        m.requests.with(&[name, status.as_str()]).inc();
    }
    route
        .metrics
        .duration
        .get(&m.request_duration, &[name])
        .observe(started.elapsed());
    match outcome {
        Outcome::Served(served) => stream_response(shared, served, ex).await,
        Outcome::Failed {
            err,
            attempts,
            reports,
        } => write_error(ex, &err, Some(attempts), &reports, Some(name)).await,
    }
}

fn client_body_error(e: &crate::body::BodyError) -> RouterError {
    RouterError::new(
        ErrorKind::ClientBody,
        format!("cannot read the request body: {e}"),
    )
}

/// Whether a path has a `.` or `..` segment, plain or percent-encoded (`%2e`). Segments are
/// also cut at `\\` and at encoded slashes (`%2f`, `%5c`), which some servers decode into
/// separators.
fn has_dot_segment(path: &str) -> bool {
    fn is_dot(seg: &[u8]) -> bool {
        [&b"."[..], b"..", b"%2e", b"%2e%2e", b".%2e", b"%2e."]
            .iter()
            .any(|dot| seg.eq_ignore_ascii_case(dot))
    }
    let b = path.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let sep = match b[i] {
            b'/' | b'\\' => 1,
            b'%' if b
                .get(i + 1..i + 3)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"2f") || h.eq_ignore_ascii_case(b"5c")) =>
            {
                3
            }
            _ => 0,
        };
        if sep == 0 {
            i += 1;
            continue;
        }
        if is_dot(&b[start..i]) {
            return true;
        }
        i += sep;
        start = i;
    }
    is_dot(&b[start..])
}

async fn find_route(shared: &Shared, active: &Active, ex: &mut Exchange<'_>) -> Result<Routed, RouterError> {
    let head = ex.head;
    let path = head.path();
    // A prefix is matched on the path as sent, and the rest is appended to the target's base
    // path: a `..` segment would climb out of both.
    if has_dot_segment(path) {
        return Err(RouterError::new(
            ErrorKind::InvalidRequest,
            format!(
                "the request path {path:?} has a \".\" or \"..\" segment (plain or percent-encoded); \
                 send it without them"
            ),
        ));
    }
    if head.method == Method::POST && OPENAI_PATHS.contains(&path) {
        let limit = shared.config.max_openai_body_bytes;
        let body = ex
            .body
            .read_bounded(ex.client, limit)
            .await
            .map_err(|e| client_body_error(&e))?;
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
            format!("no route matches {} {path}", head.method),
        )
    })?;
    let limit = usize::try_from(route.spec.retry.replay_buffer_bytes).unwrap_or(usize::MAX);
    let body = ex
        .body
        .read_bounded(ex.client, limit)
        .await
        .map_err(|e| client_body_error(&e))?;
    Ok(Routed {
        route: Arc::clone(route),
        body,
        model: None,
    })
}

/// Appends the path and query sent to a target (origin form).
fn put_upstream_target(out: &mut Vec<u8>, target: &TargetRt, route: &RouteRt, head: &RequestHead) {
    let path = head.path();
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
    out.extend_from_slice(target.base_path.as_bytes());
    if !rest.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(rest.as_bytes());
    if let Some(q) = head.query() {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
}

/// The body for a candidate: openai bodies get the model the target knows. Only the value of
/// the top-level `model` member changes; every other byte goes on as the client sent it.
fn body_for<'b>(
    cand: &Candidate,
    requested_model: Option<&str>,
    body: &'b RequestBody,
) -> std::borrow::Cow<'b, [u8]> {
    let bytes = match body {
        RequestBody::Full(b) | RequestBody::Partial(b) => b,
    };
    if let (Some(requested), RequestBody::Full(_)) = (requested_model, body) {
        let wanted = cand
            .target
            .spec
            .upstream_model
            .as_deref()
            .unwrap_or(cand.route.spec.name.as_str());
        if wanted != requested {
            if let Some(span) = model_value_span(bytes) {
                let value = serde_json::Value::String(wanted.to_owned()).to_string();
                let mut out = Vec::with_capacity(bytes.len() - span.len() + value.len());
                out.extend_from_slice(&bytes[..span.start]);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(&bytes[span.end..]);
                return std::borrow::Cow::Owned(out);
            }
        }
    }
    std::borrow::Cow::Borrowed(bytes.as_ref())
}

/// Where the value of a JSON object's top-level `model` member lies in `body` (the last one,
/// should there be several; `None` when `body` is not an object or has no `model`).
fn model_value_span(body: &[u8]) -> Option<std::ops::Range<usize>> {
    use serde::de::{Deserializer as _, MapAccess, Visitor};

    /// A member name, read without allocating: whether it is `model`.
    struct IsModel(bool);
    impl<'de> serde::Deserialize<'de> for IsModel {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Name;
            impl Visitor<'_> for Name {
                type Value = IsModel;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IsModel, E> {
                    Ok(IsModel(v == "model"))
                }
            }
            d.deserialize_str(Name)
        }
    }

    struct Members<'de>(&'de [u8]);
    impl<'de> Visitor<'de> for Members<'de> {
        type Value = Option<std::ops::Range<usize>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut span = None;
            while let Some(IsModel(is_model)) = map.next_key()? {
                let raw: &'de serde_json::value::RawValue = map.next_value()?;
                if is_model {
                    // The raw value is a slice of the body: its place is its address's offset.
                    let text = raw.get();
                    span = text
                        .as_ptr()
                        .addr()
                        .checked_sub(self.0.as_ptr().addr())
                        .map(|start| start..start + text.len());
                }
            }
            Ok(span)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(Members(body))
        .ok()
        .flatten()
        .filter(|span| span.end <= body.len())
}

/// Encodes the request for one attempt: head, and the whole body (or the buffered start of a
/// streamed one). Returns whether the rest of a streamed body follows chunked.
fn encode_request(
    out: &mut Vec<u8>,
    head: &RequestHead,
    cand: &Candidate,
    body: &[u8],
    streamed: Option<Framing>,
) -> Option<bool> {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    put_upstream_target(out, &cand.target, &cand.route, head);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(h) = &cand.target.host {
        h1::put_field(out, b"host", h.as_bytes());
    }
    for (name, value) in h1::forwardable(&head.fields, &REQUEST_OWN) {
        h1::put_field(out, name, value);
    }
    let rest_chunked = match streamed {
        None => {
            // A request that said how long its body is keeps saying it, even for an empty one
            // (some servers refuse a POST without a length).
            let framed =
                head.fields.get("content-length").is_some() || head.fields.get("transfer-encoding").is_some();
            if framed || !body.is_empty() {
                out.extend_from_slice(b"content-length: ");
                h1::put_u64(out, body.len() as u64);
                out.extend_from_slice(b"\r\n");
            }
            None
        }
        Some(Framing::Length(total)) => {
            out.extend_from_slice(b"content-length: ");
            h1::put_u64(out, total);
            out.extend_from_slice(b"\r\n");
            Some(false)
        }
        Some(_) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Some(true)
        }
    };
    out.extend_from_slice(b"\r\n");
    match rest_chunked {
        Some(true) if !body.is_empty() => h1::put_chunk(out, body),
        Some(true) => {}
        _ => out.extend_from_slice(body),
    }
    rest_chunked
}

/// An answer that will be returned to the client.
struct Winner {
    head: ResponseHead,
    framing: Framing,
    decoder: BodyDecoder,
    first: Option<Bytes>,
    conn: Box<Conn>,
    request_sent: bool,
}

/// The answer that won, and what served it.
struct Served {
    winner: Winner,
    route: Arc<RouteRt>,
    target: Arc<TargetRt>,
    attempts: usize,
}

/// How a request ended.
enum Outcome {
    Served(Served),
    Failed {
        err: RouterError,
        attempts: usize,
        reports: Vec<AttemptReport>,
    },
}

async fn forward(
    shared: &Arc<Shared>,
    active: &Active,
    routed: &Routed,
    ex: &mut Exchange<'_>,
    started: Instant,
) -> Outcome {
    let route = &routed.route;
    let spec = &route.spec;
    let head = ex.head;
    let now = Instant::now();
    let deadline = started + Duration::from_millis(spec.timeouts.deadline_ms);
    let plan = select::plan(
        &active.table,
        route,
        &shared.config.region,
        &head.fields,
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
    let streamed = match &routed.body {
        RequestBody::Full(_) => None,
        RequestBody::Partial(_) => Some(ex.body.framing()),
    };
    let mut bytes = std::mem::take(ex.buf);
    let outcome = walk(shared, routed, ex, &plan, deadline, streamed, &mut bytes).await;
    *ex.buf = bytes;
    outcome
}

/// Whether a candidate is tried now.
enum Admit {
    /// Try it, within this much time (holding its probe slot when half-open).
    Go(ProbeGuard, Duration),
    /// Another request holds its probe slot: go on to the next one.
    Skip,
    /// Stop trying (deadline, or retry budget spent).
    Stop(RouterError),
}

/// Decides whether `cand` is tried as attempt `attempt_no`. A retry takes a token of the
/// route's budget only once the attempt is certain to be made: a skipped candidate or a spent
/// deadline costs nothing.
fn admit(cand: &Candidate, attempt_no: usize, route: &RouteRt, deadline: Instant, now: Instant) -> Admit {
    let remaining = deadline.saturating_duration_since(now);
    if remaining.is_zero() {
        return Admit::Stop(RouterError::new(
            ErrorKind::Deadline,
            "the request's deadline ran out",
        ));
    }
    let mut guard = ProbeGuard(None);
    if cand.probe {
        if !cand.target.health.try_begin_probe(now) {
            return Admit::Skip;
        }
        guard = ProbeGuard(Some(Arc::clone(&cand.target.health)));
    }
    if attempt_no > 0 && !route.state.budget.try_retry(now, &route.spec.retry) {
        // Dropping the guard gives the probe slot back.
        return Admit::Stop(RouterError::new(
            ErrorKind::RetryBudget,
            "the route's retry budget is spent; not retrying now",
        ));
    }
    Admit::Go(guard, remaining)
}

/// Tries the plan's candidates in turn.
#[allow(clippy::too_many_lines)]
async fn walk(
    shared: &Arc<Shared>,
    routed: &Routed,
    ex: &mut Exchange<'_>,
    plan: &select::Plan,
    deadline: Instant,
    streamed: Option<Framing>,
    bytes: &mut Vec<u8>,
) -> Outcome {
    let route = &routed.route;
    let spec = &route.spec;
    let head = ex.head;
    let mut reports: Vec<AttemptReport> = Vec::new();
    let mut stop: Option<RouterError> = None;
    let mut last: Option<RouterError> = None;
    for cand in &plan.candidates {
        let attempt_no = reports.len();
        if attempt_no >= usize::try_from(spec.retry.max_attempts).unwrap_or(usize::MAX) {
            break;
        }
        if attempt_no > 0 && streamed.is_some() && ex.body.started() {
            stop = Some(RouterError::new(
                ErrorKind::UpstreamIo,
                "the request body was larger than the replay buffer and had started to flow; not retried",
            ));
            break;
        }
        let now = Instant::now();
        let (mut guard, remaining) = match admit(cand, attempt_no, route, deadline, now) {
            Admit::Go(guard, remaining) => (guard, remaining),
            Admit::Skip => continue,
            Admit::Stop(e) => {
                if e.kind == ErrorKind::RetryBudget {
                    shared.metrics.retry_budget_exhausted.with(&[&spec.name]).inc();
                }
                stop = Some(e);
                break;
            }
        };
        let body = body_for(cand, routed.model.as_deref(), &routed.body);
        let rest_chunked = encode_request(bytes, head, cand, &body, streamed);
        let result = attempt(shared, cand, ex, bytes, rest_chunked, remaining).await;
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
                return Outcome::Served(Served {
                    winner,
                    route: Arc::clone(&cand.route),
                    target: Arc::clone(&cand.target),
                    attempts: attempt_no + 1,
                });
            }
            Err(e) => {
                guard.disarm();
                shared
                    .metrics
                    .attempts
                    .with(&[&cand.route.spec.name, target_id, e.attempt_class().as_str()])
                    .inc();
                let report = AttemptReport {
                    route: cand.route.spec.name.clone(),
                    target: target_id.to_owned(),
                    region: cand.target.spec.region.clone(),
                    error: e.attempt_class(),
                    status: e.status,
                    elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                };
                if ex.body.client_failed() {
                    if cand.probe {
                        cand.target.health.abandon_probe();
                    }
                    // The attempt was made: it is listed, and counted once.
                    reports.push(report);
                    return Outcome::Failed {
                        err: RouterError::new(
                            ErrorKind::ClientBody,
                            "the request body broke while it was forwarded",
                        ),
                        attempts: reports.len(),
                        reports,
                    };
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
                reports.push(report);
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
    Outcome::Failed {
        err,
        attempts,
        reports,
    }
}

fn spec_budget(route: &RouteRt) -> &crate::budget::RetryBudget {
    &route.state.budget
}

/// Records a failure against a target, ejecting it when due and allowed by the route's share.
pub(crate) fn record_target_failure(shared: &Shared, route: &RouteRt, target: &TargetRt, now: Instant) {
    let effect = route.record_failure(target, now);
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

async fn attempt(
    shared: &Shared,
    cand: &Candidate,
    ex: &mut Exchange<'_>,
    bytes: &[u8],
    rest_chunked: Option<bool>,
    remaining: Duration,
) -> Result<Winner, RouterError> {
    let key = PoolKey::new(&cand.target.scheme, &cand.target.authority);
    let timeouts = &cand.route.spec.timeouts;
    let connect_ms = timeouts.connect_ms;
    let first_byte = Duration::from_millis(timeouts.first_byte_ms);
    let method = &ex.head.method;
    let (body, client) = (&mut *ex.body, &mut *ex.client);
    let work = async {
        let out = Outgoing {
            bytes,
            rest: rest_chunked.map(|chunked| (body, client, chunked)),
        };
        let Answer {
            head,
            mut conn,
            request_sent,
            first_byte_by,
        } = shared.pool.exchange(&key, connect_ms, first_byte, out).await?;
        let status = head.status;
        if status >= 500 {
            return Err(
                RouterError::new(ErrorKind::UpstreamStatus, format!("upstream answered {status}"))
                    .with_status(status),
            );
        }
        if status == 429 {
            let mut e = RouterError::new(ErrorKind::RateLimited, "upstream answered 429").with_status(429);
            e.retry_after = head
                .fields
                .get("retry-after")
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(e);
        }
        let framing = head.framing(method).map_err(|e| {
            RouterError::new(
                ErrorKind::UpstreamIo,
                format!("the upstream's answer is not valid HTTP/1.1: {e}"),
            )
            .with_status(status)
        })?;
        let mut decoder = BodyDecoder::new(framing);
        let piece = tokio::time::timeout_at(
            first_byte_by,
            crate::upstream::next_piece(&mut conn, &mut decoder),
        );
        let first = match piece.await {
            Err(_) => {
                return Err(RouterError::new(
                    ErrorKind::FirstByteTimeout,
                    format!(
                        "no response body within {} ms of the request being sent",
                        first_byte.as_millis()
                    ),
                )
                .with_status(status))
            }
            Ok(Ok(Piece::Data(b))) => Some(b),
            Ok(Ok(Piece::End)) => None,
            Ok(Err(e)) => {
                return Err(RouterError::new(
                    ErrorKind::UpstreamIo,
                    format!("the response broke before its first byte: {e}"),
                )
                .with_status(status))
            }
        };
        Ok(Winner {
            head,
            framing,
            decoder,
            first,
            conn,
            request_sent,
        })
    };
    // Connecting and the first byte have their own limits (in the pool); the request's
    // deadline covers the whole attempt, a slow upload included.
    match tokio::time::timeout(remaining, work).await {
        Ok(r) => r,
        Err(_) => Err(RouterError::new(
            ErrorKind::Deadline,
            "the request's deadline ran out during the attempt",
        )),
    }
}

/// Appends a piece of the answer's body, chunk-encoded when `chunked`.
fn put_piece(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        h1::put_chunk(out, data);
    } else {
        out.extend_from_slice(data);
    }
}

/// Writes the winning answer to the client and streams its body; returns whether the client
/// connection can take another request.
async fn stream_response(shared: &Arc<Shared>, served: Served, ex: &mut Exchange<'_>) -> bool {
    let Served {
        winner,
        route,
        target,
        attempts,
    } = served;
    let Winner {
        head,
        framing,
        mut decoder,
        first,
        mut conn,
        request_sent,
    } = winner;
    let upstream_keep = head.keep_alive() && request_sent;
    let mut keep = ex.keep();
    // A body of unknown length goes out chunked to HTTP/1.1 clients; an HTTP/1.0 client reads
    // it until the connection closes.
    let chunked = match framing {
        Framing::Length(_) => false,
        Framing::Chunked | Framing::UntilClose => {
            if ex.head.minor == 0 {
                keep = false;
            }
            ex.head.minor >= 1
        }
    };
    let mut out = std::mem::take(ex.buf);
    out.clear();
    h1::put_status_line(&mut out, head.status, head.reason());
    // The `x-ballast-*` fields are this router's to set (an upstream may be another router).
    let own: &[&str] = if chunked {
        &RESPONSE_OWN
    } else {
        &RESPONSE_OWN[1..]
    };
    for (name, value) in h1::forwardable(&head.fields, own) {
        h1::put_field(&mut out, name, value);
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let [r, t, v, g] = &target.served_by;
    h1::put_field(&mut out, H_ROUTE.as_bytes(), r.as_bytes());
    h1::put_field(&mut out, H_TARGET.as_bytes(), t.as_bytes());
    h1::put_field(&mut out, H_MODEL_VERSION.as_bytes(), v.as_bytes());
    h1::put_field(&mut out, H_REGION.as_bytes(), g.as_bytes());
    out.extend_from_slice(H_ATTEMPTS.as_bytes());
    out.extend_from_slice(b": ");
    h1::put_u64(&mut out, attempts as u64);
    out.extend_from_slice(b"\r\n");
    put_connection(&mut out, ex.head.minor, keep);
    out.extend_from_slice(b"\r\n");
    if let Some(first) = &first {
        put_piece(&mut out, first, chunked);
    }
    let idle = route
        .spec
        .timeouts
        .stream_idle_ms
        .map_or(shared.config.stream_idle_timeout, Duration::from_millis);
    let mut client_ok = true;
    loop {
        if decoder.is_done() && chunked {
            out.extend_from_slice(h1::LAST_CHUNK);
        }
        if !out.is_empty() && ex.client.write_all(&out).await.is_err() {
            client_ok = false;
            break;
        }
        out.clear();
        if decoder.is_done() {
            break;
        }
        match tokio::time::timeout(idle, crate::upstream::next_piece(&mut conn, &mut decoder)).await {
            Ok(Ok(Piece::Data(b))) => put_piece(&mut out, &b, chunked),
            Ok(Ok(Piece::End)) => {
                // Only a body that lasts until the connection closes ends this way.
                if chunked {
                    out.extend_from_slice(h1::LAST_CHUNK);
                }
                if !out.is_empty() && ex.client.write_all(&out).await.is_err() {
                    client_ok = false;
                }
                break;
            }
            Ok(Err(why)) => {
                stream_broke(shared, &route, &target, &why);
                return false;
            }
            Err(_) => {
                let why = format!(
                    "no data from the upstream for {} ms; stream cut",
                    idle.as_millis()
                );
                stream_broke(shared, &route, &target, &why);
                return false;
            }
        }
    }
    if upstream_keep && decoder.is_done() {
        shared.pool.checkin(conn);
    }
    out.clear();
    *ex.buf = out;
    client_ok && keep
}

fn stream_broke(shared: &Shared, route: &RouteRt, target: &TargetRt, why: &str) {
    tracing::warn!(route = %route.spec.name, target = %target.spec.id, error = why, "response stream broke (or went idle) after it started");
    shared.metrics.stream_errors.with(&[&target.spec.id]).inc();
    record_target_failure(shared, route, target, Instant::now());
}

/// Appends the `Connection` field an answer needs: `close` when the connection ends after it,
/// `keep-alive` for an HTTP/1.0 client whose connection stays.
pub(crate) fn put_connection(out: &mut Vec<u8>, minor: u8, keep: bool) {
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}

/// Writes a complete answer held in memory; returns whether the connection can go on.
pub(crate) async fn write_full(
    client: &mut ClientWire,
    minor: u8,
    keep: bool,
    status: StatusCode,
    fields: &[(&[u8], &[u8])],
    body: &[u8],
) -> bool {
    let mut out = Vec::with_capacity(256 + body.len());
    h1::put_status_line(&mut out, status.as_u16(), "");
    for (n, v) in fields {
        h1::put_field(&mut out, n, v);
    }
    out.extend_from_slice(b"content-length: ");
    h1::put_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    put_connection(&mut out, minor, keep);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    client.write_all(&out).await.is_ok() && keep
}

/// The router's own error answer, with every attempt listed.
#[must_use]
pub fn error_body(err: &RouterError, reports: &[AttemptReport]) -> Vec<u8> {
    let body = RouterErrorBody {
        error: RouterErrorDetail {
            code: err.code().to_owned(),
            message: err.message.clone(),
            source: err.origin.as_str().to_owned(),
            attempts: reports.to_vec(),
        },
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

async fn write_error(
    ex: &mut Exchange<'_>,
    err: &RouterError,
    attempts: Option<usize>,
    reports: &[AttemptReport],
    route: Option<&str>,
) -> bool {
    let body = error_body(err, reports);
    let n = attempts.map(|a| a.to_string());
    let mut fields: Vec<(&[u8], &[u8])> = vec![(b"content-type", b"application/json")];
    if let Some(n) = &n {
        fields.push((H_ATTEMPTS.as_bytes(), n.as_bytes()));
    }
    if let Some(r) = route {
        fields.push((H_ROUTE.as_bytes(), r.as_bytes()));
    }
    let keep = ex.keep();
    write_full(ex.client, ex.head.minor, keep, err.http_status(), &fields, &body).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn one_route(targets: &[&str]) -> Arc<RouteRt> {
        use ballast_api::routing::{FailoverPolicy, HealthPolicy, RetryPolicy, Route, Target, Timeouts};
        let route = Route {
            name: "bot".into(),
            kind: RouteKind::Openai,
            prefix: None,
            strip_prefix: false,
            targets: targets
                .iter()
                .map(|id| Target {
                    id: (*id).into(),
                    url: format!("http://127.0.0.1:1/{id}"),
                    region: "eu".into(),
                    model_version: "m/bot/1".into(),
                    weight: 1,
                    upstream_model: None,
                })
                .collect(),
            fallbacks: vec![],
            split: vec![],
            sticky_header: "x-session-id".into(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy {
                budget_percent: 0,
                min_retries_per_second: 1,
                window_ms: 1_000,
                ..RetryPolicy::default()
            },
            health: HealthPolicy {
                consecutive_failures: 1,
                ..HealthPolicy::default()
            },
            failover: FailoverPolicy::default(),
            regions: None,
        };
        let snapshot =
            ballast_api::routing::RoutingSnapshot::new(1, std::collections::BTreeMap::new(), vec![route]);
        let table = crate::table::Table::compile(&snapshot, "eu", &crate::table::Runtime::default());
        Arc::clone(table.openai("bot").unwrap())
    }

    #[test]
    fn a_retry_token_is_taken_only_for_an_attempt_really_made() {
        let route = one_route(&["a", "b"]);
        let cand = |i: usize, probe: bool| Candidate {
            target: Arc::clone(&route.targets[i]),
            route: Arc::clone(&route),
            probe,
        };
        let t0 = Instant::now();
        // Target a is half-open, and another request holds its probe slot.
        let a = &route.targets[0].health;
        assert!(matches!(
            a.record_failure(t0, &route.spec.health, true),
            FailureEffect::Ejected(_)
        ));
        let now = a.ejected_until().unwrap() + Duration::from_millis(1);
        assert!(a.try_begin_probe(now));
        let far = now + Duration::from_secs(60);
        assert!(matches!(admit(&cand(0, true), 1, &route, far, now), Admit::Skip));
        // The deadline has run out.
        assert!(matches!(
            admit(&cand(1, false), 1, &route, now, now),
            Admit::Stop(e) if e.kind == ErrorKind::Deadline
        ));
        // The budget's single token is still there: the next real retry gets it, and only it.
        assert!(matches!(
            admit(&cand(1, false), 1, &route, far, now),
            Admit::Go(_, _)
        ));
        assert!(matches!(
            admit(&cand(1, false), 1, &route, far, now),
            Admit::Stop(e) if e.kind == ErrorKind::RetryBudget
        ));
        // A first attempt needs no token.
        assert!(matches!(
            admit(&cand(1, false), 0, &route, far, now),
            Admit::Go(_, _)
        ));
        // A probe refused for want of budget gives its slot back.
        a.abandon_probe();
        assert!(matches!(
            admit(&cand(0, true), 1, &route, far, now),
            Admit::Stop(e) if e.kind == ErrorKind::RetryBudget
        ));
        assert!(a.try_begin_probe(now), "the probe slot was released");
    }

    #[test]
    fn only_the_model_value_is_rewritten() {
        let body = br#"{ "z": 1, "model" : "small-bot", "n": 123456789012345678901234567890, "x": 0.10000000000000000555, "m\u006fdel2": "keep" }"#;
        let span = model_value_span(body).unwrap();
        assert_eq!(&body[span], br#""small-bot""#);
        // An escaped member name is still found, nested `model`s are not.
        let escaped = br#"{"inner": {"model": "no"}, "m\u006fdel": "yes"}"#;
        assert_eq!(&escaped[model_value_span(escaped).unwrap()], br#""yes""#);
        assert_eq!(model_value_span(br#"{"inner": {"model": "no"}}"#), None);
        assert_eq!(model_value_span(b"[1, 2]"), None);
        assert_eq!(model_value_span(b"{\"model\": "), None);

        let route = one_route(&["a"]);
        let cand = Candidate {
            target: Arc::clone(&route.targets[0]),
            route: Arc::clone(&route),
            probe: false,
        };
        let full = RequestBody::Full(bytes::Bytes::from_static(body));
        let out = body_for(&cand, Some("small-bot"), &full);
        let expected = br#"{ "z": 1, "model" : "bot", "n": 123456789012345678901234567890, "x": 0.10000000000000000555, "m\u006fdel2": "keep" }"#;
        // The route is `bot`: a request naming another model gets `bot`, byte for byte the rest.
        assert_eq!(out.as_ref(), expected.as_slice());
        let renamed = RequestBody::Full(bytes::Bytes::from_static(
            br#"{"model":"fallback\"q","stream":true}"#,
        ));
        assert_eq!(
            body_for(&cand, Some("fallback\"q"), &renamed).as_ref(),
            br#"{"model":"bot","stream":true}"#
        );
        // Nothing to change: the body is passed on as it is.
        assert!(matches!(
            body_for(&cand, Some("bot"), &full),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn dot_segments_are_found_plain_and_percent_encoded() {
        for bad in [
            "/ocr/../x",
            "/ocr/./x",
            "/..",
            "/a/%2e%2E/b",
            "/a/.%2e/b",
            "/a/%2E",
            "/a/..",
            "/a/%2e./",
            "/a/..%2fx",
            "/a/..%2F..%2Fx",
            "/a/..%5cx",
            "/a\\..\\x",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for good in [
            "/",
            "/ocr/x",
            "/a/...",
            "/a/.hidden",
            "/a/..b",
            "/a/%2e%2e%2e",
            "/v1.2/x.",
            "",
            "/a/%2",
            "/a/%2fb",
            "/a%",
        ] {
            assert!(!has_dot_segment(good), "{good}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(b"7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(date.as_bytes(), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(b"soon", now), None);
    }
}
