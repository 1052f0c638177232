//! `/v1/events`: the change feed, as pages (`?after=<id>`) or as a live Server-Sent Events
//! stream that resumes from `after` or `Last-Event-ID` without gaps or repeats.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use ballast_api::events::{is_event_type, EventList};
use futures_util::Stream;

use super::extract::QueryPairs;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn types(q: &QueryPairs) -> ApiResult<Vec<String>> {
    q.all("type")
        .map(|t| {
            if is_event_type(t) {
                Ok(t.to_owned())
            } else {
                Err(ApiError::invalid(
                    "type",
                    format!("unknown event type {t:?}; see the event catalogue in /v1/openapi.json"),
                ))
            }
        })
        .collect()
}

/// Where to start: `after`, else `Last-Event-ID` — or, for the stream, `Last-Event-ID` first: an
/// `EventSource` reconnects to the same URL (with its original `after`) and sends the last id it
/// saw in the header, which is where it must resume to see no repeats.
fn after(q: &QueryPairs, headers: &HeaderMap, header_first: bool) -> ApiResult<u64> {
    let header = headers.get("last-event-id").map(|v| v.to_str().unwrap_or("?"));
    let raw = if header_first {
        header.or_else(|| q.one("after"))
    } else {
        q.one("after").or(header)
    };
    match raw {
        None => Ok(0),
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "after",
                format!("after / Last-Event-ID must be an event id, got {v:?}"),
            )
        }),
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
) -> ApiResult<Json<EventList>> {
    q.only(&["after", "limit", "type"])?;
    let (after, types, limit) = (after(&q, &headers, false)?, types(&q)?, q.limit()?);
    Ok(Json(state.store.list_events(after, limit, types).await?))
}

pub(super) async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: QueryPairs,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    q.only(&["after", "type"])?;
    let (after, types) = (after(&q, &headers, true)?, types(&q)?);
    let watch = state.store.watch_events();
    let stop = state.shutdown.subscribe();
    struct Feed {
        stop: tokio::sync::watch::Receiver<bool>,
        state: AppState,
        watch: tokio::sync::watch::Receiver<u64>,
        after: u64,
        types: Vec<String>,
        buffered: std::collections::VecDeque<ballast_api::events::Event>,
    }
    let feed = Feed {
        stop,
        state,
        watch,
        after,
        types,
        buffered: Default::default(),
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some(e) = f.buffered.pop_front() {
                f.after = e.id;
                let data = serde_json::to_string(&e).unwrap_or_default();
                let sse = SseEvent::default()
                    .id(e.id.to_string())
                    .event(e.event_type.clone())
                    .data(data);
                return Some((Ok(sse), f));
            }
            // Mark the watch as seen before reading, so a commit after the read wakes us.
            let committed = *f.watch.borrow_and_update();
            match f.state.store.list_events(f.after, 500, f.types.clone()).await {
                Ok(page) if !page.events.is_empty() => f.buffered.extend(page.events),
                Ok(_) => {
                    // Every event up to `committed` was visible to the read and none matched:
                    // skip past them so a filtered stream never re-reads them.
                    f.after = f.after.max(committed);
                    if *f.stop.borrow() {
                        return None;
                    }
                    tokio::select! {
                        changed = f.watch.changed() => if changed.is_err() { return None },
                        _ = f.stop.changed() => return None,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e.message, "change feed read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
