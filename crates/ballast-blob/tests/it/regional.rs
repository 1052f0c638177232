//! The regional store over two regions — two directories, or two `s3s-fs` servers — with the
//! local copy deleted, corrupted or unreachable; replication resuming from its durable queue;
//! concurrent puts; fsck; garbage collection across regions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ballast_blob::regional::CopyState;
use ballast_blob::{
    BlobError, BlobStore, BoxError, ByteStream, LocalBlobStore, PutOptions, Region, RegionalBlobStore,
    S3BlobStore,
};
use ballast_core::Sha256Digest;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::fixture::s3_options;
use crate::s3s::S3Server;

/// One region's store and the directory mirroring its keys.
struct Side {
    store: Arc<dyn BlobStore>,
    root: PathBuf,
    server: Option<S3Server>,
    _dir: Option<tempfile::TempDir>,
}

impl Side {
    fn local() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            store: Arc::new(LocalBlobStore::open(dir.path()).expect("open")),
            root: dir.path().to_owned(),
            server: None,
            _dir: Some(dir),
        }
    }

    async fn s3() -> Option<Self> {
        let server = S3Server::start("ballast-region")?;
        let store = S3BlobStore::open(s3_options(&server, "blobs"))
            .await
            .expect("open S3 store");
        Some(Self {
            store: Arc::new(store),
            root: server.object_file("blobs"),
            server: Some(server),
            _dir: None,
        })
    }

    fn blob_file(&self, d: &Sha256Digest) -> PathBuf {
        let hex = d.to_hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    fn markers(&self, region: &str) -> usize {
        std::fs::read_dir(self.root.join("replication").join(region))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Stops the server behind this region (S3 only): it becomes unreachable.
    fn stop(&mut self) {
        drop(self.server.take());
    }
}

fn regional(local: &Side, remote: &Side) -> RegionalBlobStore {
    RegionalBlobStore::new(
        vec![
            Region::new("eu-west", "local", Arc::clone(&local.store)),
            Region::new("us-east", "remote", Arc::clone(&remote.store)),
        ],
        0,
    )
    .expect("regions")
}

fn body(data: &[u8]) -> ByteStream<BoxError> {
    let parts: Vec<Result<Bytes, BoxError>> = data
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(parts))
}

fn opts() -> PutOptions {
    PutOptions {
        max_size: u64::MAX,
        ..PutOptions::default()
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

async fn read(
    store: &dyn BlobStore,
    d: Sha256Digest,
    range: Option<(u64, u64)>,
) -> Result<Vec<u8>, BlobError> {
    let (len, mut s) = store.get(d, range).await?;
    let mut out = Vec::new();
    while let Some(p) = s.next().await {
        out.extend_from_slice(&p?);
    }
    assert_eq!(out.len() as u64, len, "the stream has the announced length");
    Ok(out)
}

/// Waits until `side` holds a good copy of `d`.
async fn wait_stored(side: &Side, d: Sha256Digest, data: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::fs::read(side.blob_file(&d)).is_ok_and(|b| b == data) {
            return;
        }
        assert!(Instant::now() < deadline, "the copy of {d} was not repaired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` repairs of local copies have completed.
async fn wait_repairs(store: &RegionalBlobStore, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.counters().repairs < n {
        assert!(Instant::now() < deadline, "{:?}", store.counters());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put_and_replicate(
    store: &RegionalBlobStore,
    local: &Side,
    remote: &Side,
    data: &[u8],
) -> Sha256Digest {
    let d = store.put(body(data), opts()).await.expect("put").digest;
    assert_eq!(
        local.markers("us-east"),
        1,
        "the copy is queued durably before the put returns"
    );
    assert!(
        !remote.blob_file(&d).exists(),
        "nothing is copied before the replicator runs"
    );
    store.replicate_once().await;
    assert_eq!(
        local.markers("us-east"),
        0,
        "the marker goes once the copy is made"
    );
    assert_eq!(std::fs::read(remote.blob_file(&d)).expect("replicated"), data);
    d
}

async fn missing_and_corrupt_local_copies_are_served_and_repaired(local: Side, remote: Side) {
    let store = regional(&local, &remote);
    // Three chunks, so a range read and a mid-stream switch can be exercised.
    let bytes = data(9 << 20, 7);
    let d = put_and_replicate(&store, &local, &remote, &bytes).await;

    std::fs::remove_file(local.blob_file(&d)).expect("delete the local copy");
    assert_eq!(
        read(&store, d, None).await.expect("served from the other region"),
        bytes
    );
    wait_stored(&local, d, &bytes).await;
    wait_repairs(&store, 1).await;

    // A corrupted byte in the last chunk: the first chunks come from the local region, the rest
    // from the other one, and no bad byte is ever sent.
    let mut damaged = bytes.clone();
    damaged[(8 << 20) + 5] ^= 0xff;
    std::fs::write(local.blob_file(&d), &damaged).expect("corrupt");
    assert_eq!(read(&store, d, None).await.expect("whole read"), bytes);
    wait_stored(&local, d, &bytes).await;
    wait_repairs(&store, 2).await;

    std::fs::write(local.blob_file(&d), &damaged).expect("corrupt again");
    let (a, b) = ((4 << 20) - 3, (8 << 20) + 10);
    assert_eq!(
        read(&store, d, Some((a, b))).await.expect("range read"),
        bytes[a as usize..=b as usize].to_vec()
    );
    wait_stored(&local, d, &bytes).await;
    wait_repairs(&store, 3).await;
    let c = store.counters();
    assert!(c.fallback_reads >= 3, "{c:?}");
    assert_eq!(c.repair_failures, 0, "{c:?}");
}

async fn an_unreachable_local_region_still_serves(mut local: Side, remote: Side) {
    let store = regional(&local, &remote);
    let bytes = data(300_000, 3);
    let d = put_and_replicate(&store, &local, &remote, &bytes).await;
    local.stop();
    for _ in 0..3 {
        assert_eq!(
            read(&store, d, None)
                .await
                .expect("read with the local region down"),
            bytes
        );
    }
    assert_eq!(store.stat(d).await.expect("stat"), Some(bytes.len() as u64));
    let status = store.status().await;
    assert!(!status[0].reachable && status[1].reachable, "{status:?}");
    // Writes need the local region: they fail cleanly.
    assert!(matches!(
        store.put(body(b"new"), opts()).await,
        Err(BlobError::Io(_))
    ));
}

async fn replication_resumes_after_a_restart(local: Side, remote: Side) {
    let bytes = data(70_000, 9);
    let d = {
        let store = regional(&local, &remote);
        store.put(body(&bytes), opts()).await.expect("put").digest
        // Dropped before replicating: the node "crashed".
    };
    assert_eq!(local.markers("us-east"), 1);
    let store = regional(&local, &remote);
    assert_eq!(store.status().await[1].queued, Some(1));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let store = store.clone();
        async move { store.replicate(rx).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while local.markers("us-east") > 0 {
        assert!(Instant::now() < deadline, "the queue was not resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send_replace(true);
    running.await.expect("replicator stops");
    assert_eq!(std::fs::read(remote.blob_file(&d)).expect("replicated"), bytes);
    let status = store.status().await;
    assert_eq!(status[1].queued, Some(0));
    assert_eq!(status[1].lag, Some(Duration::ZERO));
}

async fn concurrent_puts_of_the_same_blob(local: Side, remote: Side) {
    let store = regional(&local, &remote);
    let bytes = data(200_000, 1);
    let puts = (0..6).map(|_| {
        let store = store.clone();
        let bytes = bytes.clone();
        async move { store.put(body(&bytes), opts()).await }
    });
    let done = futures_util::future::join_all(puts).await;
    let d = Sha256Digest::of(&bytes);
    assert!(done.iter().all(|r| r.as_ref().is_ok_and(|b| b.digest == d)));
    assert_eq!(local.markers("us-east"), 1);
    // Two replicators (two nodes) at once.
    let other = regional(&local, &remote);
    tokio::join!(store.replicate_once(), other.replicate_once());
    assert_eq!(local.markers("us-east"), 0);
    assert_eq!(std::fs::read(remote.blob_file(&d)).expect("replicated"), bytes);
}

async fn fsck_reports_and_repairs(local: Side, remote: Side) {
    let store = regional(&local, &remote);
    let a = data(50_000, 11);
    let b = data(60_000, 12);
    let da = put_and_replicate(&store, &local, &remote, &a).await;
    let db = put_and_replicate(&store, &local, &remote, &b).await;
    std::fs::remove_file(remote.blob_file(&da)).expect("delete remote copy");
    let mut bad = b.clone();
    bad[10] ^= 1;
    std::fs::write(local.blob_file(&db), &bad).expect("corrupt local copy");
    let blobs = [(da, a.len() as u64), (db, b.len() as u64)];

    let report = store.fsck(&blobs, false).await;
    assert!(!report.clean());
    assert_eq!(report.regions[0].corrupt, 1, "{report:?}");
    assert_eq!(report.regions[1].missing, 1, "{report:?}");
    assert_eq!(report.problems.len(), 2);
    assert!(report.problems.iter().all(|p| !p.repaired));
    assert!(report
        .problems
        .iter()
        .any(|p| p.digest == da && p.region == "us-east" && p.state == CopyState::Missing));

    let report = store.fsck(&blobs, true).await;
    // The corrupt copy was quarantined by the first run: now it is missing, and repaired.
    assert!(report.clean(), "{report:?}");
    assert_eq!(report.regions[0].repaired + report.regions[1].repaired, 2);
    assert_eq!(std::fs::read(local.blob_file(&db)).expect("repaired"), b);
    assert_eq!(std::fs::read(remote.blob_file(&da)).expect("repaired"), a);
    let report = store.fsck(&blobs, false).await;
    assert!(report.problems.is_empty(), "{report:?}");

    // A blob in no region is lost.
    let gone = Sha256Digest::of(b"never stored");
    let report = store.fsck(&[(gone, 12)], true).await;
    assert_eq!(report.lost, vec![gone]);
}

async fn garbage_collection_removes_every_copy(local: Side, remote: Side) {
    let store = regional(&local, &remote);
    let bytes = data(1000, 5);
    let d = put_and_replicate(&store, &local, &remote, &bytes).await;
    // A blob only the other region holds is listed too.
    let only_remote = remote
        .store
        .put(body(b"remote only"), opts())
        .await
        .expect("put")
        .digest;
    let listed: Vec<Sha256Digest> = store
        .list(None, 10)
        .await
        .expect("list")
        .iter()
        .map(|e| e.digest)
        .collect();
    let mut want = vec![d, only_remote];
    want.sort();
    assert_eq!(listed, want);
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert!(!store.delete_if_untouched(d, past).await.expect("kept"));
    let later = SystemTime::now() + Duration::from_secs(5);
    assert!(store.delete_if_untouched(d, later).await.expect("removed"));
    assert!(store
        .delete_if_untouched(only_remote, later)
        .await
        .expect("removed"));
    assert!(!local.blob_file(&d).exists() && !remote.blob_file(&d).exists());
    assert!(store.list(None, 10).await.expect("list").is_empty());
}

/// The marker queues both stores keep (the second side is unused).
async fn marker_queues(side: Side, _other: Side) {
    let s = &side.store;
    let (a, b) = (Sha256Digest::of(b"a"), Sha256Digest::of(b"b"));
    assert!(s.list_markers("eu-west", 10).await.expect("empty").is_empty());
    s.put_marker("eu-west", a).await.expect("put");
    let first = s.list_markers("eu-west", 10).await.expect("list")[0].since;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.put_marker("eu-west", a).await.expect("put again");
    s.put_marker("eu-west", b).await.expect("put b");
    s.put_marker("us-east", b).await.expect("other queue");
    let listed = s.list_markers("eu-west", 10).await.expect("list");
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(listed.iter().map(|m| m.digest).collect::<Vec<_>>(), want);
    let again = listed.iter().find(|m| m.digest == a).map(|m| m.since);
    assert_eq!(again, Some(first), "a marker keeps its first time");
    assert_eq!(s.list_markers("eu-west", 1).await.expect("limit").len(), 1);
    s.remove_marker("eu-west", a).await.expect("remove");
    s.remove_marker("eu-west", a).await.expect("remove twice");
    assert_eq!(s.list_markers("eu-west", 10).await.expect("list").len(), 1);
    assert_eq!(s.list_markers("us-east", 10).await.expect("list").len(), 1);
    for bad in ["", "../x", "a/b", "UP", "-x"] {
        assert!(s.put_marker(bad, a).await.is_err(), "{bad:?} accepted");
        assert!(s.list_markers(bad, 1).await.is_err(), "{bad:?} accepted");
    }
    // Markers are never listed as blobs.
    assert!(s.list(None, 10).await.expect("list").is_empty());
}

async fn bad_regions_are_refused() {
    let a = Side::local();
    let mk = |name: &str| Region::new(name, "x", Arc::clone(&a.store));
    assert!(RegionalBlobStore::new(vec![], 0).is_err());
    assert!(RegionalBlobStore::new(vec![mk("eu")], 1).is_err());
    assert!(RegionalBlobStore::new(vec![mk("eu"), mk("eu")], 0).is_err());
    assert!(RegionalBlobStore::new(vec![mk("EU West")], 0).is_err());
    assert!(RegionalBlobStore::new(vec![mk("../x")], 0).is_err());
    assert!(a.store.put_marker("../x", Sha256Digest::of(b"")).await.is_err());
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local_dirs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Side::local(), super::Side::local()).await;
                }
            )*
        }
        mod s3_servers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(a) = super::Side::s3().await else { return };
                    let Some(b) = super::Side::s3().await else { return };
                    super::$name(a, b).await;
                }
            )*
        }
    };
}

both!(
    marker_queues,
    missing_and_corrupt_local_copies_are_served_and_repaired,
    replication_resumes_after_a_restart,
    concurrent_puts_of_the_same_blob,
    fsck_reports_and_repairs,
    garbage_collection_removes_every_copy,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_local_region_unreachable() {
    let Some(a) = Side::s3().await else { return };
    let Some(b) = Side::s3().await else { return };
    an_unreachable_local_region_still_serves(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_local_region_unreachable_disk_remote() {
    // The local region on S3, the other one on disk.
    let Some(a) = Side::s3().await else { return };
    an_unreachable_local_region_still_serves(a, Side::local()).await;
}

/// A store that fails like an unreachable server while `down` is set.
struct Flaky {
    inner: Arc<dyn BlobStore>,
    down: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), BlobError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BlobError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl BlobStore for Flaky {
    async fn put(
        &self,
        body: ByteStream<BoxError>,
        opts: PutOptions,
    ) -> Result<ballast_blob::StoredBlob, BlobError> {
        self.check()?;
        self.inner.put(body, opts).await
    }
    async fn stat(&self, d: Sha256Digest) -> Result<Option<u64>, BlobError> {
        self.check()?;
        self.inner.stat(d).await
    }
    async fn get(
        &self,
        d: Sha256Digest,
        r: Option<(u64, u64)>,
    ) -> Result<(u64, ByteStream<BlobError>), BlobError> {
        self.check()?;
        self.inner.get(d, r).await
    }
    async fn verify(&self, d: Sha256Digest) -> Result<ballast_blob::Verified, BlobError> {
        self.check()?;
        self.inner.verify(d).await
    }
    async fn list(
        &self,
        after: Option<Sha256Digest>,
        limit: usize,
    ) -> Result<Vec<ballast_blob::BlobEntry>, BlobError> {
        self.check()?;
        self.inner.list(after, limit).await
    }
    async fn touch(&self, d: Sha256Digest) -> Result<bool, BlobError> {
        self.check()?;
        self.inner.touch(d).await
    }
    async fn delete_if_untouched(&self, d: Sha256Digest, cutoff: SystemTime) -> Result<bool, BlobError> {
        self.check()?;
        self.inner.delete_if_untouched(d, cutoff).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_backs_off_while_a_region_is_down_and_catches_up() {
    let local = Side::local();
    let remote = Side::local();
    let flaky = Arc::new(Flaky {
        inner: Arc::clone(&remote.store),
        down: std::sync::atomic::AtomicBool::new(true),
    });
    let store = RegionalBlobStore::new(
        vec![
            Region::new("eu-west", "local", Arc::clone(&local.store)),
            Region::new("us-east", "remote", Arc::clone(&flaky) as Arc<dyn BlobStore>),
        ],
        0,
    )
    .expect("regions");
    let bytes = data(10_000, 4);
    let d = store
        .put(body(&bytes), opts())
        .await
        .expect("put while a remote region is down")
        .digest;
    assert_eq!(read(&store, d, None).await.expect("read"), bytes);
    store.replicate_once().await;
    assert_eq!(local.markers("us-east"), 1, "a failed copy stays queued");
    assert_eq!(store.counters().replication_failures, 1);
    let status = store.status().await;
    assert!(!status[1].reachable, "{status:?}");
    assert_eq!(status[1].queued, Some(1));
    // While the region is paused, passes do not hammer it.
    store.replicate_once().await;
    assert_eq!(
        store.counters().replication_failures,
        1,
        "a paused region was retried at once"
    );

    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let store = store.clone();
        async move { store.replicate(rx).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while local.markers("us-east") > 0 {
        assert!(Instant::now() < deadline, "replication did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send_replace(true);
    running.await.expect("replicator stops");
    assert_eq!(std::fs::read(remote.blob_file(&d)).expect("caught up"), bytes);
    let status = store.status().await;
    assert!(status[1].reachable && status[1].queued == Some(0), "{status:?}");
}

#[tokio::test]
async fn invalid_region_settings() {
    bad_regions_are_refused().await;
}
