//! Garbage collection: removes the versions that retention policies let go, then the blobs that
//! nothing references any more; on request (`POST /v1/gc`) or on a schedule (`gc_interval_secs`).
//!
//! # Why a blob in use is never swept
//!
//! A blob becomes referenced in two steps: its bytes are stored (an upload renames them into
//! place) or found (an attach of a digest the server holds), and then a row that references it
//! commits. Garbage collection could see the blob between the two steps and find it unreferenced.
//! Three rules close that window:
//!
//! 1. Every write that may reference a blob is a mutating HTTP request, and the server tracks
//!    when each one in flight started ([`Gc::begin_change`], installed as a layer).
//! 2. A blob's *touched* time is when it was last stored, or touched by an attach or an
//!    existence check (`GET /v1/blobs/sha256/…`). Collection uses a cutoff of
//!    `min(start - grace, oldest change in flight) - 1 s` and removes a blob only if it is
//!    unreferenced *and* untouched since the cutoff: bytes stored by a change in flight were
//!    written after it started, so after the cutoff.
//! 3. The blob store checks the touched time and removes the blob atomically with respect to
//!    stores and touches of the same digest ([`BlobStore::delete_if_untouched`]). An attach
//!    touches the blob before it commits its row: either the touch comes first and the blob
//!    stays, or the removal comes first and the attach finds no blob and fails (nothing is
//!    acknowledged). An upload that races a removal of the same bytes stores them again.
//!
//! So the grace period is not what makes collection safe; it keeps recently stored or checked
//! blobs (a client that checked a blob exists and attaches it a moment later) from being swept.
//!
//! [`BlobStore::delete_if_untouched`]: ballast_blob::BlobStore::delete_if_untouched

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use ballast_api::retention::{GcBlob, GcError, GcReport, GcRequest};
use ballast_blob::BlobEntry;
use ballast_core::{ErrorCode, ModelName, Sha256Digest};
use ballast_store::{Ctx, GcScope};

use crate::error::ApiError;
use crate::state::AppState;

/// Blobs listed and checked per page.
const PAGE: usize = 1000;
/// Subtracted from the cutoff: file systems stamp writes with a clock that may lag the system
/// clock by a tick.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);
/// Actor recorded for scheduled collections.
pub const SCHEDULE_ACTOR: &str = "ballast-gc";

/// Garbage collection state shared by the API, the scheduler and the change-tracking layer.
#[derive(Debug, Default)]
pub struct Gc {
    /// Start times of mutating requests in flight, by a sequence number.
    changes: Mutex<BTreeMap<u64, SystemTime>>,
    next: AtomicU64,
    /// Held while a collection that removes things runs (one at a time).
    running: tokio::sync::Mutex<()>,
}

/// A mutating request in flight; dropping it ends it.
#[derive(Debug)]
pub struct ChangeGuard {
    gc: Arc<Gc>,
    id: u64,
}

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.gc.changes.lock() {
            m.remove(&self.id);
        }
    }
}

/// How a collection was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST /v1/gc`.
    Api,
    /// The server's schedule.
    Schedule,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Schedule => "schedule",
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        "ballast_gc_runs_total",
        "garbage collections run, by trigger (api, schedule), dry_run and outcome"
    );
    metrics::describe_counter!(
        "ballast_gc_versions_removed_total",
        "versions removed by garbage collection"
    );
    metrics::describe_counter!(
        "ballast_gc_blobs_removed_total",
        "blobs removed by garbage collection"
    );
    metrics::describe_counter!(
        "ballast_gc_bytes_freed_total",
        metrics::Unit::Bytes,
        "blob bytes freed by garbage collection"
    );
    metrics::describe_histogram!(
        "ballast_gc_duration_seconds",
        metrics::Unit::Seconds,
        "time garbage collections take"
    );
}

impl Gc {
    /// A fresh state (and the metric descriptions).
    #[must_use]
    pub fn new() -> Arc<Self> {
        describe();
        Arc::new(Self::default())
    }

    /// Records that a change which may reference blobs has started; the guard ends it.
    pub fn begin_change(self: &Arc<Self>) -> ChangeGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.changes.lock() {
            m.insert(id, SystemTime::now());
        }
        ChangeGuard {
            gc: Arc::clone(self),
            id,
        }
    }

    /// When the oldest change in flight started.
    fn oldest_change(&self) -> Option<SystemTime> {
        self.changes.lock().ok().and_then(|m| m.values().min().copied())
    }

    /// The blob cutoff for a collection that started at `started`: blobs touched at or after it
    /// stay.
    fn cutoff(&self, started: SystemTime, grace: Duration) -> SystemTime {
        let by_grace = started.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff = self.oldest_change().map_or(by_grace, |o| o.min(by_grace));
        cutoff.checked_sub(CLOCK_MARGIN).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Layer: tracks every mutating request while it runs (see the module documentation).
pub async fn track_changes(State(gc): State<Arc<Gc>>, req: Request, next: Next) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let guard = mutating.then(|| gc.begin_change());
    let resp = next.run(req).await;
    drop(guard);
    resp
}

/// What a collection should do.
#[derive(Debug, Clone)]
pub struct GcRun {
    /// Who runs it (recorded in the audit trail).
    pub ctx: Ctx,
    /// Report only.
    pub dry_run: bool,
    /// Which models.
    pub scope: GcScope,
    /// Also report why kept versions stay.
    pub explain: bool,
    /// How it was started.
    pub trigger: Trigger,
}

/// Validates a request's scope.
///
/// # Errors
/// `invalid_argument` or `invalid_name` naming the field.
pub fn scope_of(req: &GcRequest) -> Result<GcScope, ApiError> {
    match (&req.namespace, &req.model) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "model",
            "give either namespace or model, not both",
        )),
        (Some(ns), None) => {
            ballast_core::validate_namespace(ns).map_err(|e| ApiError::from(e).field("namespace"))?;
            Ok(GcScope::Namespace(ns.clone()))
        }
        (None, Some(m)) => Ok(GcScope::Model(
            ModelName::parse(m).map_err(|e| ApiError::from(e).field("model"))?,
        )),
        (None, None) => Ok(GcScope::All),
    }
}

fn now_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn rfc3339(t: SystemTime) -> String {
    let ns = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(0))
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The digest just before `d` (to list `d` itself with `list(after, 1)`).
fn predecessor(d: &Sha256Digest) -> Option<Sha256Digest> {
    let mut b = *d.as_bytes();
    for byte in b.iter_mut().rev() {
        if *byte > 0 {
            *byte -= 1;
            return Some(Sha256Digest::from_bytes(b));
        }
        *byte = 0xff;
    }
    None
}

/// Runs one collection.
///
/// # Errors
/// `conflict` when another collection that removes things is running; store failures that
/// stop the whole run (a failure on one model or blob is reported and skipped).
pub async fn run(state: &AppState, run: GcRun) -> Result<GcReport, ApiError> {
    let gc = Arc::clone(&state.gc);
    let _running = if run.dry_run {
        None
    } else {
        Some(gc.running.try_lock().map_err(|_| {
            ApiError::new(
                ErrorCode::Conflict,
                "a garbage collection is already running; retry when it has finished",
            )
        })?)
    };
    let started = SystemTime::now();
    let clock = Instant::now();
    let grace = Duration::from_secs(state.config.gc_blob_grace_secs);
    let mut report = GcReport {
        dry_run: run.dry_run,
        scope: match &run.scope {
            GcScope::All => None,
            GcScope::Namespace(ns) => Some(ns.clone()),
            GcScope::Model(m) => Some(m.to_string()),
        },
        started_at: rfc3339(started),
        blob_grace_secs: grace.as_secs(),
        ..GcReport::default()
    };
    let outcome = collect(state, &gc, &run, started, grace, &mut report).await;
    report.duration_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let result = if outcome.is_ok() { "ok" } else { "error" };
    metrics::counter!("ballast_gc_runs_total", "trigger" => run.trigger.as_str(), "dry_run" => run.dry_run.to_string(), "outcome" => result).increment(1);
    metrics::histogram!("ballast_gc_duration_seconds").record(clock.elapsed().as_secs_f64());
    if !run.dry_run {
        metrics::counter!("ballast_gc_versions_removed_total").increment(report.versions_removed);
        metrics::counter!("ballast_gc_blobs_removed_total").increment(report.blobs_removed);
        metrics::counter!("ballast_gc_bytes_freed_total").increment(report.bytes_freed);
    }
    outcome?;
    tracing::info!(
        trigger = run.trigger.as_str(),
        dry_run = run.dry_run,
        scope = report.scope.as_deref().unwrap_or("all"),
        versions_removed = report.versions_removed,
        blobs_removed = report.blobs_removed,
        bytes_freed = report.bytes_freed,
        blobs_in_grace = report.blobs_in_grace,
        errors = report.errors.len(),
        duration_ms = report.duration_ms,
        "garbage collection finished"
    );
    Ok(report)
}

async fn collect(
    state: &AppState,
    gc: &Gc,
    run: &GcRun,
    started: SystemTime,
    grace: Duration,
    report: &mut GcReport,
) -> Result<(), ApiError> {
    // Versions.
    let ms = now_ms(started);
    let mut freed_blobs: HashMap<Sha256Digest, u64> = HashMap::new();
    let mut planned: Vec<(ModelName, u64)> = Vec::new();
    for model in state.store.retention_models(run.scope.clone()).await? {
        let decided = if run.dry_run {
            state.store.plan_retention(&model, ms, run.explain).await
        } else {
            state.store.apply_retention(&run.ctx, &model, ms).await
        };
        let plan = match decided {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(GcError {
                    target: model.to_string(),
                    message: e.message,
                });
                continue;
            }
        };
        planned.extend(plan.remove.iter().map(|v| (model.clone(), v.version)));
        freed_blobs.extend(plan.blobs.iter().copied());
        report.versions.extend(plan.remove);
        if run.explain {
            if run.dry_run {
                report.kept.extend(plan.kept);
            } else if let Ok(after) = state.store.plan_retention(&model, ms, true).await {
                report.kept.extend(after.kept);
            }
        }
    }
    report.versions_removed = if run.dry_run {
        0
    } else {
        report.versions.len() as u64
    };
    // A dry run leaves aside the versions it would remove, so that it reports their blobs.
    let ignoring = if run.dry_run { planned } else { Vec::new() };

    // Blobs.
    let cutoff = gc.cutoff(started, grace);
    if matches!(run.scope, GcScope::All) {
        let mut after = None;
        loop {
            let page = state.blobs.list(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.digest);
            sweep(state, run, &page, &ignoring, cutoff, report).await?;
            if page.len() < PAGE {
                break;
            }
        }
    } else {
        // A scoped run sweeps only what its own removals freed.
        let mut digests: Vec<Sha256Digest> = freed_blobs.keys().copied().collect();
        digests.sort_unstable();
        for chunk in digests.chunks(PAGE) {
            let mut page = Vec::with_capacity(chunk.len());
            for d in chunk {
                let listed = state.blobs.list(predecessor(d), 1).await?;
                if let Some(entry) = listed.into_iter().find(|e| e.digest == *d) {
                    page.push(entry);
                }
            }
            sweep(state, run, &page, &ignoring, cutoff, report).await?;
        }
    }
    if !run.dry_run && report.blobs_removed > 0 {
        if let Err(e) = state
            .store
            .record_blob_sweep(&run.ctx, report.blobs_removed, report.bytes_freed)
            .await
        {
            report.errors.push(GcError {
                target: "audit".into(),
                message: format!("the blob sweep could not be recorded: {}", e.message),
            });
        }
    }
    Ok(())
}

/// Removes (or, in a dry run, reports) the unreferenced, untouched blobs of one page.
async fn sweep(
    state: &AppState,
    run: &GcRun,
    page: &[BlobEntry],
    ignoring: &[(ModelName, u64)],
    cutoff: SystemTime,
    report: &mut GcReport,
) -> Result<(), ApiError> {
    if page.is_empty() {
        return Ok(());
    }
    let digests: Vec<Sha256Digest> = page.iter().map(|e| e.digest).collect();
    let unreferenced = state.store.unreferenced_blobs(digests, ignoring.to_vec()).await?;
    let by_digest: HashMap<Sha256Digest, &BlobEntry> = page.iter().map(|e| (e.digest, e)).collect();
    for d in unreferenced {
        let Some(entry) = by_digest.get(&d) else { continue };
        if entry.touched >= cutoff {
            report.blobs_in_grace += 1;
            continue;
        }
        let removed = if run.dry_run {
            true
        } else {
            match state.blobs.delete_if_untouched(d, cutoff).await {
                Ok(true) => true,
                Ok(false) => {
                    report.blobs_in_grace += 1;
                    false
                }
                Err(e) => {
                    report.errors.push(GcError {
                        target: format!("blob {d}"),
                        message: e.to_string(),
                    });
                    false
                }
            }
        };
        if removed {
            report.blobs.push(GcBlob {
                sha256: d.to_hex(),
                size: entry.size,
            });
            report.bytes_freed += entry.size;
            if !run.dry_run {
                report.blobs_removed += 1;
            }
        }
    }
    Ok(())
}

/// Runs a collection every `gc_interval_secs` until shutdown (nothing when it is 0). The first
/// run comes one interval after start.
pub async fn run_scheduled(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = state.config.gc_interval_secs;
    if every == 0 {
        return;
    }
    tracing::info!(
        interval_secs = every,
        grace_secs = state.config.gc_blob_grace_secs,
        "scheduled garbage collection is on"
    );
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(every),
        Duration::from_secs(every),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ctx = Ctx {
            actor: SCHEDULE_ACTOR.into(),
            request_id: format!("{:032x}", rand::random::<u128>()),
            idempotency: None,
        };
        let job = GcRun {
            ctx,
            dry_run: false,
            scope: GcScope::All,
            explain: false,
            trigger: Trigger::Schedule,
        };
        if let Err(e) = run(&state, job).await {
            tracing::warn!(error = %e.message, "scheduled garbage collection failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn predecessor_lists_the_digest_itself() {
        let d = Sha256Digest::of(b"x");
        let p = predecessor(&d).unwrap();
        assert!(p < d);
        let zero = Sha256Digest::from_bytes([0; 32]);
        assert_eq!(predecessor(&zero), None);
        let mut b = [0u8; 32];
        b[31] = 0;
        b[30] = 1;
        let mut want = [0u8; 32];
        want[31] = 0xff;
        assert_eq!(
            predecessor(&Sha256Digest::from_bytes(b)),
            Some(Sha256Digest::from_bytes(want))
        );
    }

    #[test]
    fn cutoff_respects_grace_and_changes_in_flight() {
        let gc = Gc::new();
        let start = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(gc.cutoff(start, hour), start - hour - CLOCK_MARGIN);
        let guard = gc.begin_change();
        let began = gc.oldest_change().unwrap();
        assert_eq!(gc.cutoff(began + hour * 2, Duration::ZERO), began - CLOCK_MARGIN);
        drop(guard);
        assert_eq!(gc.oldest_change(), None);
    }
}
