//! `GET /v1/routing/snapshot`: the routing snapshot routers serve, compiled from routes,
//! stages, aliases and deployments. `ETag` is the digest (`If-None-Match` answers 304); with
//! `wait=SECONDS` and `after_generation=N` the request waits until a snapshot newer than `N`
//! exists (woken by every commit), answering 304 when the wait runs out.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::routing::RoutingSnapshot;
use ballast_core::ErrorCode;

use super::extract::QueryPairs;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Longest `wait` accepted, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 300;

fn number(q: &QueryPairs, key: &str, max: u64) -> ApiResult<Option<u64>> {
    q.one(key)
        .map(|v| {
            v.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| {
                ApiError::invalid(
                    key,
                    format!("{key} must be an integer from 0 to {max}, got {v:?}"),
                )
            })
        })
        .transpose()
}

/// The current snapshot, compiled once per generation.
async fn current(state: &AppState, seen: u64) -> ApiResult<Arc<RoutingSnapshot>> {
    if let Ok(cache) = state.routing_cache.lock() {
        if let Some(s) = cache.as_ref().filter(|s| s.generation == seen.max(1)) {
            return Ok(Arc::clone(s));
        }
    }
    let input = state.store.routing_state().await?;
    let snapshot = crate::snapshot::compile_valid(&input).map_err(|e| {
        tracing::error!(error = %e, "the compiled routing snapshot is invalid");
        ApiError::new(
            ErrorCode::Internal,
            format!("the compiled routing snapshot is invalid: {e}"),
        )
    })?;
    let snapshot = Arc::new(snapshot);
    if let Ok(mut cache) = state.routing_cache.lock() {
        *cache = Some(Arc::clone(&snapshot));
    }
    Ok(snapshot)
}

fn etag(digest: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{digest}\"")).ok()
}

fn not_modified(digest: &str, generation: u64) -> Response {
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    if let Some(v) = etag(digest) {
        r.headers_mut().insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&generation.to_string()) {
        r.headers_mut().insert("x-ballast-generation", v);
    }
    r
}

pub(super) async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
) -> ApiResult<Response> {
    q.only(&["wait", "after_generation"])?;
    let wait = Duration::from_secs(number(&q, "wait", MAX_WAIT_SECONDS)?.unwrap_or(0));
    let after = number(&q, "after_generation", u64::MAX)?;
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"').to_owned());
    let deadline = tokio::time::Instant::now() + wait;
    let mut watch = state.store.watch_events();
    let mut stop = state.shutdown.subscribe();
    loop {
        // Mark the watch as seen before reading, so a commit after the read wakes us.
        let seen = *watch.borrow_and_update();
        let s = current(&state, seen).await?;
        let newer = after.is_none_or(|a| s.generation > a);
        let changed = known.as_deref() != Some(s.digest.as_str());
        if newer && changed {
            let mut r = (StatusCode::OK, Json(s.as_ref())).into_response();
            if let Some(v) = etag(&s.digest) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(r);
        }
        if wait.is_zero() || *stop.borrow() {
            return Ok(not_modified(&s.digest, s.generation));
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() {
                return Ok(not_modified(&s.digest, s.generation));
            },
            () = tokio::time::sleep_until(deadline) => return Ok(not_modified(&s.digest, s.generation)),
            _ = stop.changed() => return Ok(not_modified(&s.digest, s.generation)),
        }
    }
}
