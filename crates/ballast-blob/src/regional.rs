//! Blobs kept in several regions: one blob store per region, one of them local.
//!
//! New blobs are written to the local region and, before the write is acknowledged, queued for
//! every other region as a durable marker in the local store (`replication/<region>/<digest>`,
//! see [`BlobStore::put_marker`]). Keeping the queue beside the blobs means every node that shares
//! the local store sees it and it survives the loss of any node. A background replicator
//! ([`RegionalBlobStore::replicate`]) copies each queued blob — a verified streaming read, written
//! with its expected digest, so bad bytes can never land — and then removes the marker. Several
//! nodes may copy the same blob at once: content addressing makes that harmless.
//!
//! Reads try the local region first, then the others in their configured order (a region that
//! failed moments ago goes last). A region is skipped when the blob is missing there, the store
//! is unreachable, or its bytes fail their digest. Every read is served as a chunk-verified range,
//! so no unverified byte is ever sent, and when a region fails mid-stream the rest of the bytes
//! come from the next region. A read that had to leave the local region repairs the local copy
//! in the background.
//!
//! Garbage collection sees the union of every region's blobs and removes a blob from every
//! region that holds it (each region applies the same cutoff, so a copy written or touched since
//! is kept).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use ballast_core::Sha256Digest;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use crate::{
    BlobEntry, BlobError, BlobLocation, BlobStore, BoxError, ByteStream, Marker, PutOptions, S3Options,
    StoredBlob, Verified,
};

/// How long a region that failed is tried last.
const DOWN_FOR: Duration = Duration::from_secs(10);
/// Markers replicated per pass and region.
const BATCH: usize = 64;
/// Copies in flight per region.
const COPIES_IN_FLIGHT: usize = 4;
/// Background repairs of local copies in flight.
const REPAIRS_IN_FLIGHT: usize = 4;
/// How often the queues are looked at when nothing wakes the replicator (other nodes may
/// enqueue blobs too).
const POLL: Duration = Duration::from_secs(5);
/// First and longest pause of a region whose copies fail.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Markers counted for the status (a longer queue is reported as at least this long).
const STATUS_LIMIT: usize = 1_000_000;
/// Longest wait for one region's answer to a status probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

type Opener = Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn BlobStore>, BlobError>> + Send + Sync>;

/// One region: a name, where its blobs live, and its store (opened on first use when it was
/// unreachable at start, so a remote region that is down never keeps the server from starting).
pub struct Region {
    name: String,
    location: String,
    store: tokio::sync::OnceCell<Arc<dyn BlobStore>>,
    opener: Option<Opener>,
    down_since: Mutex<Option<Instant>>,
    backoff: Mutex<(Duration, Option<Instant>)>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Region {
    /// A region backed by an open store. `location` is how it is shown (a URL or a path).
    #[must_use]
    pub fn new(name: impl Into<String>, location: impl Into<String>, store: Arc<dyn BlobStore>) -> Self {
        Self::build(
            name.into(),
            location.into(),
            tokio::sync::OnceCell::new_with(Some(store)),
            None,
        )
    }

    /// A region opened on first use (and on every use until it opens).
    #[must_use]
    pub fn lazy(name: impl Into<String>, location: BlobLocation, s3: S3Options) -> Self {
        let shown = location.to_string();
        let opener: Opener = Arc::new(move || {
            let (location, s3) = (location.clone(), s3.clone());
            Box::pin(async move { crate::open_store(&location, s3).await })
        });
        Self::build(name.into(), shown, tokio::sync::OnceCell::new(), Some(opener))
    }

    fn build(
        name: String,
        location: String,
        store: tokio::sync::OnceCell<Arc<dyn BlobStore>>,
        opener: Option<Opener>,
    ) -> Self {
        Self {
            name,
            location,
            store,
            opener,
            down_since: Mutex::new(None),
            backoff: Mutex::new((Duration::ZERO, None)),
        }
    }

    /// The region's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its blobs live.
    #[must_use]
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The region's store, opening it when needed.
    ///
    /// # Errors
    /// When it cannot be opened (unreachable, refused).
    pub async fn store(&self) -> Result<Arc<dyn BlobStore>, BlobError> {
        let store = self
            .store
            .get_or_try_init(|| async {
                match &self.opener {
                    Some(open) => open().await,
                    None => Err(BlobError::Io(std::io::Error::other("the region has no store"))),
                }
            })
            .await;
        match store {
            Ok(s) => Ok(Arc::clone(s)),
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    fn failed(&self) {
        if let Ok(mut d) = self.down_since.lock() {
            *d = Some(Instant::now());
        }
    }

    fn answered(&self) {
        if let Ok(mut d) = self.down_since.lock() {
            *d = None;
        }
    }

    fn recently_down(&self) -> bool {
        self.down_since
            .lock()
            .ok()
            .and_then(|d| *d)
            .is_some_and(|t| t.elapsed() < DOWN_FOR)
    }

    /// Notes the outcome of an operation on this region (only unreachability counts).
    fn note<T>(&self, r: &Result<T, BlobError>) {
        match r {
            Err(BlobError::Io(_)) => self.failed(),
            _ => self.answered(),
        }
    }
}

/// Counters of the regional store since it was opened.
#[derive(Debug, Default)]
struct Counters {
    replicated: AtomicU64,
    replication_failures: AtomicU64,
    fallback_reads: AtomicU64,
    repairs: AtomicU64,
    repair_failures: AtomicU64,
}

/// Totals since start (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegionalCounters {
    /// Blobs copied to another region (or found already there).
    pub replicated: u64,
    /// Copies to another region that failed (they are retried).
    pub replication_failures: u64,
    /// Reads served (at least in part) by a region other than the local one.
    pub fallback_reads: u64,
    /// Local copies restored from another region.
    pub repairs: u64,
    /// Local repairs that failed.
    pub repair_failures: u64,
}

/// One region as seen by [`RegionalBlobStore::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    /// Its name.
    pub name: String,
    /// Where its blobs live.
    pub location: String,
    /// Whether it is the local region (written first, read first).
    pub local: bool,
    /// Whether it answered just now.
    pub reachable: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Blobs waiting to be copied into it (`None` when the local region cannot tell; always 0
    /// for the local region).
    pub queued: Option<u64>,
    /// Age of the oldest waiting blob: the replication lag (0 when nothing waits).
    pub lag: Option<Duration>,
}

/// What fsck found of one blob in one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// Present with the right bytes.
    Ok,
    /// Not stored.
    Missing,
    /// Bytes that fail their digest (now quarantined).
    Corrupt,
    /// Right bytes, but not the size the registry recorded.
    WrongSize {
        /// Size stored.
        stored: u64,
    },
    /// The region could not be checked.
    Unreachable,
}

impl CopyState {
    /// Short name for reports.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Corrupt => "corrupt",
            Self::WrongSize { .. } => "wrong_size",
            Self::Unreachable => "unreachable",
        }
    }
}

/// One bad copy found by fsck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsckProblem {
    /// The blob.
    pub digest: Sha256Digest,
    /// The region holding the bad copy.
    pub region: String,
    /// What is wrong.
    pub state: CopyState,
    /// Whether it was repaired (with `repair`).
    pub repaired: bool,
    /// More about it (an error, or why it was not repaired).
    pub detail: Option<String>,
}

/// Per-region totals of an fsck run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckRegion {
    /// The region.
    pub name: String,
    /// Blobs checked.
    pub checked: u64,
    /// Good copies.
    pub ok: u64,
    /// Missing copies.
    pub missing: u64,
    /// Corrupt copies.
    pub corrupt: u64,
    /// Copies whose size differs from the recorded one.
    pub wrong_size: u64,
    /// Blobs that could not be checked.
    pub unreachable: u64,
    /// Copies repaired.
    pub repaired: u64,
}

/// The outcome of [`RegionalBlobStore::fsck`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Referenced blobs checked.
    pub blobs: u64,
    /// Whether bad copies were repaired.
    pub repair: bool,
    /// Totals per region, in configured order.
    pub regions: Vec<FsckRegion>,
    /// Every bad copy, with what was done.
    pub problems: Vec<FsckProblem>,
    /// Blobs with no good copy in any reachable region.
    pub lost: Vec<Sha256Digest>,
}

impl FsckReport {
    /// Whether every copy is good now (nothing missing, corrupt or unchecked left unrepaired).
    #[must_use]
    pub fn clean(&self) -> bool {
        self.problems.iter().all(|p| p.repaired) && self.lost.is_empty()
    }
}

struct Inner {
    regions: Vec<Region>,
    counters: Counters,
    repairing: Mutex<HashSet<Sha256Digest>>,
    repair_slots: tokio::sync::Semaphore,
    wake: tokio::sync::Notify,
}

/// A blob store spread over regions (see the module documentation).
#[derive(Clone)]
pub struct RegionalBlobStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RegionalBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionalBlobStore")
            .field("regions", &self.inner.regions)
            .finish_non_exhaustive()
    }
}

fn to_box(e: BlobError) -> BoxError {
    Box::new(e)
}

/// Whether a failure of one region is worth trying the next one for.
fn falls_back(e: &BlobError) -> bool {
    matches!(
        e,
        BlobError::NotFound(_) | BlobError::Corrupt(_) | BlobError::Io(_) | BlobError::Range { .. }
    )
}

/// Of two failures, the one to report: a bad range, then unreachability (the blob may be in a
/// region that did not answer), then corruption, then absence.
fn worse(a: Option<BlobError>, b: BlobError) -> BlobError {
    let rank = |e: &BlobError| match e {
        BlobError::Range { .. } => 4,
        BlobError::Io(_) => 3,
        BlobError::Corrupt(_) => 2,
        BlobError::NotFound(_) => 1,
        _ => 5,
    };
    match a {
        Some(a) if rank(&a) >= rank(&b) => a,
        _ => b,
    }
}

impl RegionalBlobStore {
    /// Regions in read order after the local one, which is `regions[local]`.
    ///
    /// # Errors
    /// When there is no region, `local` is out of range, or names repeat or are not valid queue
    /// names (lowercase letters, digits, `-`, `_`).
    pub fn new(mut regions: Vec<Region>, local: usize) -> Result<Self, BlobError> {
        let invalid = |m: String| BlobError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
        if local >= regions.len() {
            return Err(invalid("the local region must be one of the regions".into()));
        }
        let mut seen = HashSet::new();
        for r in &regions {
            if !crate::valid_queue_name(&r.name) {
                return Err(invalid(format!(
                    "invalid region name {:?}: use 1 to 63 lowercase letters, digits, '-' or '_'",
                    r.name
                )));
            }
            if !seen.insert(r.name.clone()) {
                return Err(invalid(format!("region {:?} is given twice", r.name)));
            }
        }
        let l = regions.remove(local);
        regions.insert(0, l);
        Ok(Self::from_regions(regions))
    }

    /// One store as the only (local) region, named `local`: no replication, but the same
    /// status and fsck.
    #[must_use]
    pub fn single(location: impl Into<String>, store: Arc<dyn BlobStore>) -> Self {
        Self::from_regions(vec![Region::new("local", location, store)])
    }

    fn from_regions(regions: Vec<Region>) -> Self {
        Self {
            inner: Arc::new(Inner {
                regions,
                counters: Counters::default(),
                repairing: Mutex::new(HashSet::new()),
                repair_slots: tokio::sync::Semaphore::new(REPAIRS_IN_FLIGHT),
                wake: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The regions, the local one first.
    #[must_use]
    pub fn regions(&self) -> &[Region] {
        &self.inner.regions
    }

    fn local(&self) -> &Region {
        &self.inner.regions[0]
    }

    /// Totals since start.
    #[must_use]
    pub fn counters(&self) -> RegionalCounters {
        let c = &self.inner.counters;
        RegionalCounters {
            replicated: c.replicated.load(Ordering::Relaxed),
            replication_failures: c.replication_failures.load(Ordering::Relaxed),
            fallback_reads: c.fallback_reads.load(Ordering::Relaxed),
            repairs: c.repairs.load(Ordering::Relaxed),
            repair_failures: c.repair_failures.load(Ordering::Relaxed),
        }
    }

    /// Region indexes in read order: configured order, but regions that failed moments ago
    /// last.
    fn read_order(&self) -> Vec<usize> {
        let (mut up, down): (Vec<usize>, Vec<usize>) =
            (0..self.inner.regions.len()).partition(|&i| !self.inner.regions[i].recently_down());
        up.extend(down);
        up
    }

    /// Opens a verified stream of `range` (the whole blob when `None`) from region `i`.
    async fn open_in(
        &self,
        i: usize,
        digest: Sha256Digest,
        range: Option<(u64, u64)>,
    ) -> Result<(u64, Option<(u64, u64)>, ByteStream<BlobError>), BlobError> {
        let region = &self.inner.regions[i];
        let store = region.store().await?;
        let range = match range {
            Some(r) => Some(r),
            None => {
                let size = store.stat(digest).await;
                region.note(&size);
                match size? {
                    None => return Err(BlobError::NotFound(digest)),
                    Some(0) => None,
                    Some(size) => Some((0, size - 1)),
                }
            }
        };
        let r = store.get(digest, range).await;
        region.note(&r);
        let (len, stream) = r?;
        Ok((len, range, stream))
    }

    /// Starts restoring the local copy of `digest` from another region, unless one is running.
    fn repair_local(&self, digest: Sha256Digest) {
        if self.local().recently_down() {
            return;
        }
        match self.inner.repairing.lock() {
            Ok(mut set) => {
                if !set.insert(digest) {
                    return;
                }
            }
            Err(_) => return,
        }
        let this = self.clone();
        tokio::spawn(async move {
            let done = match this.inner.repair_slots.acquire().await {
                Ok(_slot) => this.copy_to(0, digest).await,
                Err(_) => Ok(false),
            };
            match done {
                Ok(true) => {
                    this.inner.counters.repairs.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(blob = %digest, region = %this.local().name, "repaired the local copy from another region");
                }
                Ok(false) => {
                    this.inner
                        .counters
                        .repair_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(blob = %digest, "cannot repair the local copy: no other region has good bytes");
                }
                Err(e) => {
                    this.inner
                        .counters
                        .repair_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(blob = %digest, error = %e, "cannot repair the local copy");
                }
            }
            if let Ok(mut set) = this.inner.repairing.lock() {
                set.remove(&digest);
            }
        });
    }

    /// Copies `digest` into region `dest` from the first other region (local first) that
    /// serves good bytes. `Ok(false)` when no region has it.
    async fn copy_to(&self, dest: usize, digest: Sha256Digest) -> Result<bool, BlobError> {
        let target = &self.inner.regions[dest];
        let to = target.store().await?;
        let mut last = None;
        for i in self.read_order() {
            if i == dest {
                continue;
            }
            let source = &self.inner.regions[i];
            let from = match source.store().await {
                Ok(s) => s,
                Err(e) => {
                    last = Some(worse(last, e));
                    continue;
                }
            };
            let got = from.get(digest, None).await;
            source.note(&got);
            let (size, stream) = match got {
                Ok(found) => found,
                Err(e) => {
                    last = Some(worse(last, e));
                    continue;
                }
            };
            let body: ByteStream<BoxError> = Box::pin(stream.map(|r| r.map_err(to_box)));
            let put = to
                .put(
                    body,
                    PutOptions {
                        expected_digest: Some(digest),
                        expected_size: Some(size),
                        max_size: u64::MAX,
                    },
                )
                .await;
            target.note(&put);
            match put {
                Ok(_) => return Ok(true),
                // The source failed mid-way (its bytes were bad or it went away): try the next.
                Err(BlobError::Client(m)) => {
                    last = Some(worse(last, BlobError::Io(std::io::Error::other(m))))
                }
                Err(e) => return Err(e),
            }
        }
        match last {
            None | Some(BlobError::NotFound(_) | BlobError::Corrupt(_)) => Ok(false),
            Some(e) => Err(e),
        }
    }

    /// Copies queued blobs to the other regions until `shutdown` turns true: bounded
    /// concurrency per region, a growing pause for a region whose copies fail, and a pass at
    /// least every few seconds (other nodes sharing the local store enqueue too). Resumes from
    /// the durable queue after a restart.
    pub async fn replicate(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let more = self.replicate_once().await;
            if more {
                continue;
            }
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                r = shutdown.changed() => if r.is_err() { return },
            }
        }
    }

    /// One pass over every destination's queue (at most a batch each). Returns whether a full
    /// batch was copied (so more may be waiting).
    pub async fn replicate_once(&self) -> bool {
        let mut more = false;
        let Ok(local) = self.local().store().await else {
            return false;
        };
        for dest in 1..self.inner.regions.len() {
            let region = &self.inner.regions[dest];
            let paused = region
                .backoff
                .lock()
                .ok()
                .and_then(|b| b.1)
                .is_some_and(|until| Instant::now() < until);
            if paused {
                continue;
            }
            let markers = match local.list_markers(&region.name, BATCH).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(region = %region.name, error = %e, "cannot read the replication queue");
                    continue;
                }
            };
            let full = markers.len() == BATCH;
            let outcomes: Vec<bool> = futures_util::stream::iter(markers)
                .map(|m| self.replicate_one(dest, &local, m))
                .buffer_unordered(COPIES_IN_FLIGHT)
                .collect()
                .await;
            let failed = outcomes.iter().any(|ok| !ok);
            if let Ok(mut b) = region.backoff.lock() {
                if failed {
                    let next = (b.0 * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                    *b = (next, Some(Instant::now() + next));
                } else {
                    *b = (Duration::ZERO, None);
                }
            }
            more |= full && !failed;
        }
        more
    }

    async fn replicate_one(&self, dest: usize, local: &Arc<dyn BlobStore>, m: Marker) -> bool {
        let region = &self.inner.regions[dest];
        let copied = async {
            let to = region.store().await?;
            // Already there: touching it keeps a concurrent garbage collection from taking it.
            if to.touch(m.digest).await? {
                return Ok(true);
            }
            self.copy_to(dest, m.digest).await
        }
        .await;
        match copied {
            Ok(found) => {
                if found {
                    self.inner.counters.replicated.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::warn!(blob = %m.digest, region = %region.name, "a queued blob is stored in no region any more; dropping it from the queue");
                }
                if let Err(e) = local.remove_marker(&region.name, m.digest).await {
                    tracing::warn!(blob = %m.digest, region = %region.name, error = %e, "cannot remove a replication marker");
                }
                true
            }
            Err(e) => {
                self.inner
                    .counters
                    .replication_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(blob = %m.digest, region = %region.name, error = %e, "replication failed; it will be retried");
                false
            }
        }
    }

    /// Every region's reachability and replication lag.
    pub async fn status(&self) -> Vec<RegionStatus> {
        let now = SystemTime::now();
        let local = self.local().store().await.ok();
        let probes = self.inner.regions.iter().enumerate().map(|(i, r)| {
            let local = local.clone();
            async move {
                let probe = tokio::time::timeout(PROBE_TIMEOUT, async {
                    let s = r.store().await?;
                    s.list(None, 1).await.map(|_| ())
                })
                .await
                .unwrap_or_else(|_| Err(BlobError::Io(std::io::Error::other("no answer within 5 s"))));
                r.note(&probe);
                let (queued, lag) = if i == 0 {
                    (Some(0), Some(Duration::ZERO))
                } else {
                    match local {
                        Some(l) => match l.list_markers(&r.name, STATUS_LIMIT).await {
                            Ok(ms) => {
                                let oldest = ms.iter().map(|m| m.since).min();
                                let lag = oldest
                                    .map_or(Duration::ZERO, |t| now.duration_since(t).unwrap_or_default());
                                (Some(ms.len() as u64), Some(lag))
                            }
                            Err(_) => (None, None),
                        },
                        None => (None, None),
                    }
                };
                RegionStatus {
                    name: r.name.clone(),
                    location: r.location.clone(),
                    local: i == 0,
                    reachable: probe.is_ok(),
                    error: probe.err().map(|e| e.to_string()),
                    queued,
                    lag,
                }
            }
        });
        futures_util::future::join_all(probes).await
    }

    /// Checks every blob of `blobs` (digest and recorded size) in every region, and with
    /// `repair` copies good bytes over missing or corrupt copies.
    pub async fn fsck(&self, blobs: &[(Sha256Digest, u64)], repair: bool) -> FsckReport {
        let n = self.inner.regions.len();
        let mut report = FsckReport {
            blobs: blobs.len() as u64,
            repair,
            regions: self
                .inner
                .regions
                .iter()
                .map(|r| FsckRegion {
                    name: r.name.clone(),
                    ..FsckRegion::default()
                })
                .collect(),
            ..FsckReport::default()
        };
        for &(digest, size) in blobs {
            let checks = self.inner.regions.iter().map(|r| async move {
                let verdict = async { r.store().await?.verify(digest).await }.await;
                r.note(&verdict);
                verdict
            });
            let verdicts = futures_util::future::join_all(checks).await;
            let mut states = Vec::with_capacity(n);
            for (i, v) in verdicts.into_iter().enumerate() {
                let tally = &mut report.regions[i];
                tally.checked += 1;
                let (state, detail) = match v {
                    Ok(Verified::Ok { size: stored }) if stored == size => (CopyState::Ok, None),
                    Ok(Verified::Ok { size: stored }) => (CopyState::WrongSize { stored }, None),
                    Ok(Verified::Missing) => (CopyState::Missing, None),
                    Ok(Verified::Corrupt) => (CopyState::Corrupt, None),
                    Err(e) => (CopyState::Unreachable, Some(e.to_string())),
                };
                match state {
                    CopyState::Ok => tally.ok += 1,
                    CopyState::Missing => tally.missing += 1,
                    CopyState::Corrupt => tally.corrupt += 1,
                    CopyState::WrongSize { .. } => tally.wrong_size += 1,
                    CopyState::Unreachable => tally.unreachable += 1,
                }
                states.push((state, detail));
            }
            let good = states
                .iter()
                .any(|(s, _)| matches!(s, CopyState::Ok | CopyState::WrongSize { .. }));
            if !good {
                report.lost.push(digest);
            }
            for (i, (state, mut detail)) in states.into_iter().enumerate() {
                if state == CopyState::Ok {
                    continue;
                }
                let mut repaired = false;
                if repair && matches!(state, CopyState::Missing | CopyState::Corrupt) {
                    if good {
                        match self.copy_to(i, digest).await {
                            Ok(true) => {
                                repaired = true;
                                report.regions[i].repaired += 1;
                            }
                            Ok(false) => detail = Some("no region has good bytes".into()),
                            Err(e) => detail = Some(format!("repair failed: {e}")),
                        }
                    } else {
                        detail = Some("no region has good bytes".into());
                    }
                }
                report.problems.push(FsckProblem {
                    digest,
                    region: self.inner.regions[i].name.clone(),
                    state,
                    repaired,
                    detail,
                });
            }
        }
        report
    }
}

#[async_trait]
impl BlobStore for RegionalBlobStore {
    async fn put(&self, body: ByteStream<BoxError>, opts: PutOptions) -> Result<StoredBlob, BlobError> {
        let local = self.local().store().await?;
        let stored = local.put(body, opts).await;
        self.local().note(&stored);
        let stored = stored?;
        // Queued before the write is acknowledged: a crash from here on leaves the marker,
        // and a failure to queue fails the upload (its retry queues again).
        for r in &self.inner.regions[1..] {
            local.put_marker(&r.name, stored.digest).await?;
        }
        if self.inner.regions.len() > 1 {
            self.inner.wake.notify_one();
        }
        Ok(stored)
    }

    async fn stat(&self, digest: Sha256Digest) -> Result<Option<u64>, BlobError> {
        let mut last = None;
        for i in self.read_order() {
            let r = &self.inner.regions[i];
            let size = async { r.store().await?.stat(digest).await }.await;
            r.note(&size);
            match size {
                Ok(Some(size)) => return Ok(Some(size)),
                Ok(None) => {}
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    async fn get(
        &self,
        digest: Sha256Digest,
        range: Option<(u64, u64)>,
    ) -> Result<(u64, ByteStream<BlobError>), BlobError> {
        let order = self.read_order();
        let mut last = None;
        for (pos, &i) in order.iter().enumerate() {
            match self.open_in(i, digest, range).await {
                Ok((len, resolved, stream)) => {
                    if i != 0 {
                        self.inner.counters.fallback_reads.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(blob = %digest, region = %self.inner.regions[i].name, "served from another region");
                        self.repair_local(digest);
                    }
                    let stream = match resolved {
                        Some((start, end)) => failover(
                            self.clone(),
                            digest,
                            start,
                            end,
                            order[pos + 1..].to_vec(),
                            i,
                            stream,
                        ),
                        None => stream,
                    };
                    return Ok((len, stream));
                }
                Err(e) if falls_back(&e) => {
                    tracing::debug!(blob = %digest, region = %self.inner.regions[i].name, error = %e, "region cannot serve the blob");
                    last = Some(worse(last, e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(BlobError::NotFound(digest)))
    }

    async fn verify(&self, digest: Sha256Digest) -> Result<Verified, BlobError> {
        let first = async { self.local().store().await?.verify(digest).await }.await;
        self.local().note(&first);
        if let Ok(Verified::Ok { .. }) = first {
            return first;
        }
        for r in &self.inner.regions[1..] {
            let v = async { r.store().await?.verify(digest).await }.await;
            r.note(&v);
            if let Ok(Verified::Ok { size }) = v {
                self.repair_local(digest);
                return Ok(Verified::Ok { size });
            }
        }
        first
    }

    async fn list(&self, after: Option<Sha256Digest>, limit: usize) -> Result<Vec<BlobEntry>, BlobError> {
        // The union of every region's page: each region's first `limit` entries after `after`
        // cover the first `limit` of the union.
        let mut all: Vec<BlobEntry> = self.local().store().await?.list(after, limit).await?;
        for r in &self.inner.regions[1..] {
            let page = async { r.store().await?.list(after, limit).await }.await;
            r.note(&page);
            match page {
                Ok(page) => all.extend(page),
                // Not listing an unreachable region only keeps its blobs longer.
                Err(e) => {
                    tracing::warn!(region = %r.name, error = %e, "cannot list a region's blobs; its unreferenced blobs stay for now")
                }
            }
        }
        all.sort_by_key(|e| e.digest);
        let mut out: Vec<BlobEntry> = Vec::with_capacity(limit);
        for e in all {
            match out.last_mut() {
                Some(prev) if prev.digest == e.digest => prev.touched = prev.touched.max(e.touched),
                _ => {
                    if out.len() == limit {
                        break;
                    }
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    async fn touch(&self, digest: Sha256Digest) -> Result<bool, BlobError> {
        let local = async { self.local().store().await?.touch(digest).await }.await;
        self.local().note(&local);
        if let Ok(true) = local {
            return Ok(true);
        }
        for r in &self.inner.regions[1..] {
            let t = async { r.store().await?.touch(digest).await }.await;
            r.note(&t);
            if let Ok(true) = t {
                self.repair_local(digest);
                return Ok(true);
            }
        }
        local
    }

    async fn delete_if_untouched(&self, digest: Sha256Digest, cutoff: SystemTime) -> Result<bool, BlobError> {
        let mut removed = false;
        let mut failure = None;
        for r in &self.inner.regions {
            let d = async { r.store().await?.delete_if_untouched(digest, cutoff).await }.await;
            r.note(&d);
            match d {
                Ok(gone) => removed |= gone,
                Err(e) => {
                    tracing::warn!(blob = %digest, region = %r.name, error = %e, "cannot remove a blob from a region");
                    failure = Some(e);
                }
            }
        }
        match failure {
            Some(e) if !removed => Err(e),
            _ => Ok(removed),
        }
    }

    async fn put_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        self.local().store().await?.put_marker(queue, digest).await
    }

    async fn list_markers(&self, queue: &str, limit: usize) -> Result<Vec<Marker>, BlobError> {
        self.local().store().await?.list_markers(queue, limit).await
    }

    async fn remove_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        self.local().store().await?.remove_marker(queue, digest).await
    }
}

/// Streams `start..=end` from the region `current`, continuing from the next region of
/// `rest` where it left off when a region fails mid-way (every piece was verified before it was
/// sent, so the bytes already sent stand).
fn failover(
    store: RegionalBlobStore,
    digest: Sha256Digest,
    start: u64,
    end: u64,
    rest: Vec<usize>,
    current: usize,
    stream: ByteStream<BlobError>,
) -> ByteStream<BlobError> {
    struct State {
        store: RegionalBlobStore,
        digest: Sha256Digest,
        next: u64,
        end: u64,
        rest: std::vec::IntoIter<usize>,
        current: usize,
        stream: ByteStream<BlobError>,
        done: bool,
    }
    let state = State {
        store,
        digest,
        next: start,
        end,
        rest: rest.into_iter(),
        current,
        stream,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let failure = match st.stream.next().await {
                Some(Ok(piece)) => {
                    st.next += piece.len() as u64;
                    return Some((Ok(piece), st));
                }
                None if st.next > st.end => return None,
                None => BlobError::Io(std::io::Error::other(format!(
                    "region {} ended the blob early",
                    st.store.inner.regions[st.current].name
                ))),
                Some(Err(e)) if falls_back(&e) => e,
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            tracing::warn!(blob = %st.digest, region = %st.store.inner.regions[st.current].name, error = %failure, offset = st.next, "region failed mid-read; continuing from the next region");
            if st.current == 0 {
                st.store.repair_local(st.digest);
            }
            let mut last = failure;
            let mut reopened = None;
            for i in st.rest.by_ref() {
                match st.store.open_in(i, st.digest, Some((st.next, st.end))).await {
                    Ok((_, _, s)) => {
                        reopened = Some((i, s));
                        break;
                    }
                    Err(e) => last = worse(Some(last), e),
                }
            }
            match reopened {
                Some((i, s)) => {
                    st.store
                        .inner
                        .counters
                        .fallback_reads
                        .fetch_add(1, Ordering::Relaxed);
                    st.current = i;
                    st.stream = s;
                }
                None => {
                    st.done = true;
                    return Some((Err(last), st));
                }
            }
        }
    }))
}
