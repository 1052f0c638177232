//! Blobs in an S3-compatible bucket, through the `object_store` crate, with the same guarantees
//! as on local disk:
//!
//! ```text
//! <prefix>/sha256/ab/abcdef…          the blob
//! <prefix>/chunks/ab/abcdef…          SHA-256 of each 4 MiB chunk, from verified bytes
//! <prefix>/tmp/<random>               large uploads whose digest was not announced, until checked
//! <prefix>/quarantine/abcdef….<ts>    bytes that failed verification
//! <prefix>/touched/ab/abcdef…         empty marker: when the blob was last put or touched
//! <prefix>/trash/abcdef….<ts>         a blob being garbage-collected, until the removal holds
//! <prefix>/replication/<queue>/abcdef… empty marker: the blob waits in a replication queue
//! ```
//!
//! An upload is hashed while it streams. One that fits in a part is written with a single PUT
//! once its digest and size check out. A larger one goes up as a multipart upload — to its final
//! key when the digest is announced (S3 makes the object visible only when the upload completes,
//! and it is completed only after the digest matched; otherwise it is aborted), or else to a
//! temporary key that is copied into place once the digest is known. Either way a failed upload
//! leaves no object behind. Reads fetch the blob in 4 MiB `Range` requests (one ahead, so
//! transfers overlap) and verify exactly as [`crate::LocalBlobStore`] does: a whole read holds
//! back its last chunk until the digest matches, a range read checks each chunk it touches
//! against the chunk index, and corrupt objects are moved to `quarantine/` and reported.
//!
//! Garbage collection cannot rely on an atomic rename or a file lock shared by several nodes, so
//! a `put` or `touch` writes the blob's `touched/` marker *before* the blob becomes visible, and
//! a removal re-reads the marker after deleting: when a put or touch raced with it, the blob is
//! restored from the copy kept in `trash/` meanwhile. Within one node the three operations are
//! also serialized per digest.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ballast_core::Sha256Digest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::chunk_index::{encode_index, parse_index, ChunkHasher, CHUNK};
use crate::{BlobEntry, BlobError, BlobStore, BoxError, ByteStream, PutOptions, StoredBlob, Verified};

/// Default size of the parts of a multipart upload.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// The largest part S3 accepts.
const MAX_PART_SIZE: usize = 5 << 30;
/// S3 allows 10 000 parts; the part size doubles every this many parts, so an upload of unknown
/// length is not capped at `10 000 × part size`.
const PARTS_PER_STEP: usize = 1000;
/// Parts uploaded at once by one upload (memory per upload ≈ (this + 1) × part size).
const PARTS_IN_FLIGHT: usize = 2;
/// Temporary objects older than this are leftovers of interrupted uploads.
const STALE_TMP_SECS: i64 = 24 * 3600;
/// Number of locks serializing, within one process, the puts, touches and removals of a digest.
const STRIPES: usize = 64;

/// How to reach the bucket. Credentials and settings not given here come from the usual
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, …).
#[derive(Clone)]
pub struct S3Options {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix of every object of the store (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); AWS when unset.
    pub endpoint: Option<String>,
    /// Region (`us-east-1` when neither this nor `AWS_REGION` is set).
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers expect,
    /// instead of virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key (never printed).
    pub secret_access_key: Option<String>,
    /// Size of the parts of a multipart upload; uploads that fit in one part use a single PUT.
    pub part_size: usize,
    /// Longest time one request (including its body) may take before it is retried.
    pub request_timeout: Duration,
    /// Longest time to establish a connection.
    pub connect_timeout: Duration,
    /// Retries of a failed request (timeouts, connection errors, 5xx, throttling).
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
}

impl S3Options {
    /// Settings for `bucket`/`prefix` with every other value at its default.
    #[must_use]
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: prefix.into(),
            ..Self::default()
        }
    }
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: DEFAULT_PART_SIZE,
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("part_size", &self.part_size)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

fn invalid(msg: impl Into<String>) -> BlobError {
    BlobError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("invalid S3 settings: {}", msg.into()),
    ))
}

fn backend(e: object_store::Error) -> BlobError {
    BlobError::Io(std::io::Error::other(e))
}

/// When an object was last written, rounded up: S3 reports whole seconds, and garbage collection
/// must never take a blob written just after its cutoff for an older one.
fn written_at(meta: &object_store::ObjectMeta) -> SystemTime {
    SystemTime::from(meta.last_modified) + Duration::from_secs(1)
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// Blobs in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    part_size: usize,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

impl S3BlobStore {
    /// Connects to the bucket, checks that it answers, and removes temporary objects left by
    /// uploads interrupted more than a day ago.
    ///
    /// # Errors
    /// When the settings are invalid or the bucket cannot be listed (unreachable, missing, or
    /// the credentials are refused).
    pub async fn open(opts: S3Options) -> Result<Self, BlobError> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&opts.part_size) {
            return Err(invalid(format!(
                "the part size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes, not {}",
                opts.part_size
            )));
        }
        let root = if opts.prefix.is_empty() {
            Path::default()
        } else {
            Path::parse(&opts.prefix).map_err(|e| invalid(format!("prefix {:?}: {e}", opts.prefix)))?
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&opts.bucket)
            .with_virtual_hosted_style_request(!opts.path_style)
            .with_client_options(
                ClientOptions::new()
                    .with_timeout(opts.request_timeout)
                    .with_connect_timeout(opts.connect_timeout),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: opts.max_retries,
                retry_timeout: opts.retry_timeout,
            });
        if let Some(endpoint) = &opts.endpoint {
            // A plain-http endpoint was asked for explicitly (a test or in-cluster server).
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let region = opts
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        builder = builder.with_region(region);
        if let Some(k) = &opts.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &opts.secret_access_key {
            builder = builder.with_secret_access_key(s);
        }
        let s3 = builder.build().map_err(|e| invalid(e.to_string()))?;
        let store = Self::with_store(Arc::new(s3), root, opts.part_size);
        store.sweep_tmp().await.map_err(|e| {
            BlobError::Io(std::io::Error::other(format!(
                "cannot reach bucket {:?}: {e}",
                opts.bucket
            )))
        })?;
        Ok(store)
    }

    fn with_store(store: Arc<dyn ObjectStore>, root: Path, part_size: usize) -> Self {
        Self {
            store,
            root,
            part_size,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// The lock that serializes, in this process, the puts, touches and removals of `d`.
    async fn lock(&self, d: &Sha256Digest) -> tokio::sync::MutexGuard<'_, ()> {
        let i = usize::from(d.as_bytes()[0]) % self.stripes.len();
        self.stripes[i].lock().await
    }

    /// Records that `d` is being written or used now.
    async fn mark_touched(&self, d: &Sha256Digest) -> Result<(), BlobError> {
        self.store
            .put(&self.key("touched", d), PutPayload::default())
            .await
            .map(|_| ())
            .map_err(backend)
    }

    /// When `d` was last marked as touched, if ever.
    async fn marked_at(&self, d: &Sha256Digest) -> Result<Option<SystemTime>, BlobError> {
        match self.store.head(&self.key("touched", d)).await {
            Ok(meta) => Ok(Some(written_at(&meta))),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// The digest a key below `<prefix>/<kind>/` names, when it is a well-formed blob key.
    fn digest_in(&self, kind: &Path, key: &Path) -> Option<Sha256Digest> {
        let parts: Vec<String> = key.prefix_match(kind)?.map(|p| p.as_ref().to_owned()).collect();
        let [dir, name] = parts.as_slice() else {
            return None;
        };
        let d: Sha256Digest = name.parse().ok()?;
        (d.to_hex() == *name && name.starts_with(dir.as_str()) && dir.len() == 2).then_some(d)
    }

    /// Lists the keys below `<prefix>/<kind>/` that name digests after `after`, in order.
    fn list_kind(
        &self,
        kind: &str,
        after: Option<Sha256Digest>,
    ) -> futures_util::stream::BoxStream<'static, Result<object_store::ObjectMeta, object_store::Error>> {
        let prefix = self.root.clone().join(kind);
        match after {
            Some(a) => self.store.list_with_offset(Some(&prefix), &self.key(kind, &a)),
            None => self.store.list(Some(&prefix)),
        }
    }

    /// Lists `tmp/` (which proves the bucket answers) and `trash/`, and deletes stale leftovers.
    async fn sweep_tmp(&self) -> Result<(), object_store::Error> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root.clone().join("tmp")))
            .await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
        for o in listed.objects {
            if now - o.last_modified.timestamp() > STALE_TMP_SECS {
                if let Err(e) = self.store.delete(&o.location).await {
                    tracing::warn!(key = %o.location, error = %e, "cannot remove a stale temporary upload");
                }
            }
        }
        // Copies kept by removals that were interrupted: useless once the blob is back in
        // place; otherwise kept for an operator to look at.
        let trash = self
            .store
            .list_with_delimiter(Some(&self.root.clone().join("trash")))
            .await?;
        for o in trash.objects {
            if now - o.last_modified.timestamp() <= STALE_TMP_SECS {
                continue;
            }
            let digest = o
                .location
                .filename()
                .and_then(|n| n.split('.').next())
                .and_then(|hex| hex.parse::<Sha256Digest>().ok());
            let restored = match digest {
                Some(d) => self.store.head(&self.key("sha256", &d)).await.is_ok(),
                None => false,
            };
            if restored {
                let _ = self.store.delete(&o.location).await;
            } else {
                tracing::warn!(key = %o.location, "a blob removed while it may have been in use is kept in trash/");
            }
        }
        Ok(())
    }

    fn key(&self, kind: &str, d: &Sha256Digest) -> Path {
        let hex = d.to_hex();
        self.root.clone().join(kind).join(&hex[..2]).join(hex.as_str())
    }

    /// The key of the marker of `d` in the queue `queue`.
    fn marker_key(&self, queue: &str, d: &Sha256Digest) -> Path {
        self.root
            .clone()
            .join("replication")
            .join(queue)
            .join(d.to_hex().as_str())
    }

    /// The key of the blob (for tests and repair tools).
    #[must_use]
    pub fn blob_key(&self, d: &Sha256Digest) -> String {
        self.key("sha256", d).to_string()
    }

    fn part_size_for(&self, part: usize) -> usize {
        let step = u32::try_from(part / PARTS_PER_STEP).unwrap_or(u32::MAX);
        self.part_size
            .checked_shl(step)
            .unwrap_or(MAX_PART_SIZE)
            .min(MAX_PART_SIZE)
    }

    /// Moves corrupt bytes aside so they are never served again, and drops their chunk index.
    async fn quarantine(&self, d: &Sha256Digest) {
        let from = self.key("sha256", d);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis())
            .unwrap_or(0);
        let to = self
            .root
            .clone()
            .join("quarantine")
            .join(format!("{}.{stamp}", d.to_hex()).as_str());
        match self.store.copy(&from, &to).await {
            Ok(()) => match self.store.delete(&from).await {
                Ok(()) => {
                    tracing::error!(blob = %d, quarantined = %to, "blob failed verification and was quarantined");
                }
                Err(e) => {
                    tracing::error!(blob = %d, error = %e, "blob failed verification and could not be removed");
                }
            },
            Err(e) if not_found(&e) => {}
            Err(e) => {
                tracing::error!(blob = %d, error = %e, "blob failed verification and could not be quarantined");
            }
        }
        let _ = self.store.delete(&self.key("chunks", d)).await;
    }

    /// Starts fetching `range` of `key` in the background.
    fn fetch(&self, key: &Path, range: Range<u64>) -> Prefetch {
        let store = Arc::clone(&self.store);
        let key = key.clone();
        Prefetch(tokio::spawn(async move { store.get_range(&key, range).await }))
    }

    /// The byte range of chunk `i` of a blob of `size` bytes.
    fn chunk_range(i: u64, size: u64) -> Range<u64> {
        let start = i * CHUNK;
        start..(start + CHUNK).min(size)
    }

    /// Reads the whole blob once, checking it against its digest; stores and returns its chunk
    /// index, or quarantines it.
    async fn build_index(&self, d: &Sha256Digest, size: u64) -> Result<Vec<[u8; 32]>, BlobError> {
        let key = self.key("sha256", d);
        let chunks = crate::chunk_index::chunk_count(size);
        let mut hasher = ChunkHasher::new();
        let mut next = (chunks > 0).then(|| self.fetch(&key, Self::chunk_range(0, size)));
        for i in 0..chunks {
            let Some(current) = next.take() else { break };
            if i + 1 < chunks {
                next = Some(self.fetch(&key, Self::chunk_range(i + 1, size)));
            }
            let bytes = current.take(d).await?;
            hasher.update(&bytes);
        }
        let (actual, seen, index) = hasher.finish();
        if actual != *d || seen != size {
            self.quarantine(d).await;
            return Err(BlobError::Corrupt(*d));
        }
        self.write_index(d, &index).await;
        Ok(index)
    }

    /// Stores a chunk index; failing to is only logged (it is rebuilt when needed).
    async fn write_index(&self, d: &Sha256Digest, index: &[[u8; 32]]) {
        let payload = PutPayload::from(Bytes::from(encode_index(index)));
        if let Err(e) = self.store.put(&self.key("chunks", d), payload).await {
            tracing::warn!(blob = %d, error = %e, "cannot store the chunk index");
        }
    }

    /// The chunk index from its stored copy, or rebuilt from a verified pass.
    async fn chunk_index(&self, d: &Sha256Digest, size: u64) -> Result<Vec<[u8; 32]>, BlobError> {
        match self.store.get(&self.key("chunks", d)).await {
            Ok(r) => {
                if let Some(index) = r.bytes().await.ok().and_then(|raw| parse_index(&raw, size)) {
                    return Ok(index);
                }
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(backend(e)),
        }
        self.build_index(d, size).await
    }

    /// Starts the multipart upload that `put` streams its parts into.
    async fn start_upload(&self, expected: Option<Sha256Digest>) -> Result<Upload, BlobError> {
        let (key, temporary) = match expected {
            Some(d) => (self.key("sha256", &d), false),
            None => (
                self.root
                    .clone()
                    .join("tmp")
                    .join(format!("up-{:032x}", rand::random::<u128>()).as_str()),
                true,
            ),
        };
        let mp = self.store.put_multipart(&key).await.map_err(backend)?;
        Ok(Upload {
            key,
            temporary,
            mp: Some(mp),
            parts: VecDeque::new(),
            count: 0,
        })
    }
}

/// A background fetch, cancelled when dropped.
struct Prefetch(JoinHandle<Result<Bytes, object_store::Error>>);

impl Prefetch {
    async fn take(mut self, d: &Sha256Digest) -> Result<Bytes, BlobError> {
        match (&mut self.0).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) if not_found(&e) => Err(BlobError::NotFound(*d)),
            Ok(Err(e)) => Err(backend(e)),
            Err(e) => Err(BlobError::Io(std::io::Error::other(e))),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A multipart upload in progress; aborted (with its parts) unless it completed.
struct Upload {
    key: Path,
    temporary: bool,
    mp: Option<Box<dyn MultipartUpload>>,
    parts: VecDeque<JoinHandle<Result<(), object_store::Error>>>,
    count: usize,
}

async fn joined(h: JoinHandle<Result<(), object_store::Error>>) -> Result<(), BlobError> {
    match h.await {
        Ok(r) => r.map_err(backend),
        Err(e) => Err(BlobError::Io(std::io::Error::other(e))),
    }
}

impl Upload {
    /// Sends the next part, waiting first when enough parts are in flight.
    async fn send(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        while self.parts.len() >= PARTS_IN_FLIGHT {
            if let Some(h) = self.parts.pop_front() {
                joined(h).await?;
            }
        }
        let mp = self
            .mp
            .as_mut()
            .ok_or_else(|| BlobError::Io(std::io::Error::other("the upload is already finished")))?;
        self.parts
            .push_back(tokio::spawn(mp.put_part(PutPayload::from(bytes))));
        self.count += 1;
        Ok(())
    }

    /// Waits for every part and completes the upload, making the object visible.
    async fn complete(&mut self) -> Result<(), BlobError> {
        while let Some(h) = self.parts.pop_front() {
            joined(h).await?;
        }
        let mp = self
            .mp
            .as_mut()
            .ok_or_else(|| BlobError::Io(std::io::Error::other("the upload is already finished")))?;
        mp.complete().await.map_err(backend)?;
        self.mp = None;
        Ok(())
    }
}

/// How long an abandoned upload waits for its in-flight parts before aborting the upload.
const PART_SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Drop for Upload {
    fn drop(&mut self) {
        let parts = std::mem::take(&mut self.parts);
        let (Some(mut mp), Ok(rt)) = (self.mp.take(), tokio::runtime::Handle::try_current()) else {
            for h in &parts {
                h.abort();
            }
            return;
        };
        let key = self.key.clone();
        rt.spawn(async move {
            // A part cancelled mid-request can still land on the server after the abort and
            // outlive it as an orphan; letting the (at most PARTS_IN_FLIGHT) parts in flight
            // settle first means the abort removes every part that was ever stored.
            for h in parts {
                let abort = h.abort_handle();
                if tokio::time::timeout(PART_SETTLE_TIMEOUT, h).await.is_err() {
                    abort.abort();
                }
            }
            if let Err(e) = mp.abort().await {
                tracing::warn!(%key, error = %e, "cannot abort an unfinished multipart upload");
            }
        });
    }
}

/// Deletes a temporary object unless disarmed.
struct TempObject {
    store: Arc<dyn ObjectStore>,
    key: Option<Path>,
}

impl Drop for TempObject {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let store = Arc::clone(&self.store);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = store.delete(&key).await {
                        tracing::warn!(%key, error = %e, "cannot remove a temporary upload");
                    }
                });
            }
        }
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, mut body: ByteStream<BoxError>, opts: PutOptions) -> Result<StoredBlob, BlobError> {
        let limit = opts.expected_size.map_or(opts.max_size, |s| s.min(opts.max_size));
        let mut hasher = ChunkHasher::new();
        let mut pending = BytesMut::new();
        let mut upload: Option<Upload> = None;
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| BlobError::Client(e.to_string()))?;
            if hasher.size() + piece.len() as u64 > limit {
                return Err(match opts.expected_size {
                    Some(s) if s < opts.max_size => {
                        BlobError::Client(format!("more than the announced {s} bytes were sent"))
                    }
                    _ => BlobError::TooLarge { limit: opts.max_size },
                });
            }
            hasher.update(&piece);
            pending.extend_from_slice(&piece);
            loop {
                let part = self.part_size_for(upload.as_ref().map_or(0, |u| u.count));
                if pending.len() <= part {
                    break;
                }
                let bytes = pending.split_to(part).freeze();
                let up = match &mut upload {
                    Some(up) => up,
                    None => upload.insert(self.start_upload(opts.expected_digest).await?),
                };
                up.send(bytes).await?;
            }
        }
        let (digest, size, index) = hasher.finish();
        if let Some(expected) = opts.expected_size {
            if size != expected {
                return Err(BlobError::Incomplete {
                    received: size,
                    expected,
                });
            }
        }
        if let Some(expected) = opts.expected_digest {
            if expected != digest {
                return Err(BlobError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        let dest = self.key("sha256", &digest);
        // The marker goes first, so that a concurrent garbage collection that removes the blob
        // sees it and puts the blob back (see the module documentation).
        let lock = self.lock(&digest).await;
        self.mark_touched(&digest).await?;
        match upload {
            // Writing over an existing copy is safe (same digest) and repairs a damaged one.
            None => {
                self.store
                    .put(&dest, PutPayload::from(pending.freeze()))
                    .await
                    .map_err(backend)?;
            }
            Some(mut up) => {
                if !pending.is_empty() {
                    up.send(pending.freeze()).await?;
                }
                up.complete().await?;
                if up.temporary {
                    let tmp = TempObject {
                        store: Arc::clone(&self.store),
                        key: Some(up.key.clone()),
                    };
                    self.store.copy(&up.key, &dest).await.map_err(backend)?;
                    drop(tmp);
                }
            }
        }
        drop(lock);
        self.write_index(&digest, &index).await;
        Ok(StoredBlob { digest, size })
    }

    async fn stat(&self, digest: Sha256Digest) -> Result<Option<u64>, BlobError> {
        match self.store.head(&self.key("sha256", &digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn get(
        &self,
        digest: Sha256Digest,
        range: Option<(u64, u64)>,
    ) -> Result<(u64, ByteStream<BlobError>), BlobError> {
        let Some(size) = self.stat(digest).await? else {
            return Err(BlobError::NotFound(digest));
        };
        match range {
            None => Ok((size, stream_whole(self.clone(), digest, size))),
            Some((start, end)) => {
                if start > end || end >= size {
                    return Err(BlobError::Range { start, end, size });
                }
                let index = self.chunk_index(&digest, size).await?;
                Ok((
                    end - start + 1,
                    stream_range(self.clone(), digest, size, index, start, end),
                ))
            }
        }
    }

    async fn verify(&self, digest: Sha256Digest) -> Result<Verified, BlobError> {
        let Some(size) = self.stat(digest).await? else {
            return Ok(Verified::Missing);
        };
        let _ = self.store.delete(&self.key("chunks", &digest)).await;
        match self.build_index(&digest, size).await {
            Ok(_) => Ok(Verified::Ok { size }),
            Err(BlobError::Corrupt(_)) => Ok(Verified::Corrupt),
            Err(BlobError::NotFound(_)) => Ok(Verified::Missing),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, after: Option<Sha256Digest>, limit: usize) -> Result<Vec<BlobEntry>, BlobError> {
        let mut out: Vec<BlobEntry> = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let kind = self.root.clone().join("sha256");
        let mut blobs = self.list_kind("sha256", after);
        while let Some(meta) = blobs.next().await {
            let meta = meta.map_err(backend)?;
            let Some(digest) = self.digest_in(&kind, &meta.location) else {
                continue;
            };
            if after.is_some_and(|a| digest <= a) {
                continue;
            }
            out.push(BlobEntry {
                digest,
                size: meta.size,
                touched: written_at(&meta),
            });
            if out.len() == limit {
                break;
            }
        }
        drop(blobs);
        out.sort_by_key(|e| e.digest);
        let Some(last) = out.last().map(|e| e.digest) else {
            return Ok(out);
        };
        // A blob's touched time is the later of its own write and its marker.
        let kind = self.root.clone().join("touched");
        let mut markers = self.list_kind("touched", after);
        while let Some(meta) = markers.next().await {
            let meta = meta.map_err(backend)?;
            let Some(digest) = self.digest_in(&kind, &meta.location) else {
                continue;
            };
            if digest > last {
                break;
            }
            if let Ok(i) = out.binary_search_by(|e| e.digest.cmp(&digest)) {
                let at = written_at(&meta);
                if at > out[i].touched {
                    out[i].touched = at;
                }
            }
        }
        Ok(out)
    }

    async fn touch(&self, digest: Sha256Digest) -> Result<bool, BlobError> {
        let _lock = self.lock(&digest).await;
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        self.mark_touched(&digest).await?;
        // A removal on another node between the two checks either saw the marker (and put the
        // blob back) or removed it for good, which this check reports.
        Ok(self.stat(digest).await?.is_some())
    }

    async fn delete_if_untouched(&self, digest: Sha256Digest, cutoff: SystemTime) -> Result<bool, BlobError> {
        let _lock = self.lock(&digest).await;
        let key = self.key("sha256", &digest);
        let meta = match self.store.head(&key).await {
            Ok(m) => m,
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(backend(e)),
        };
        let written = written_at(&meta);
        let marked = self.marked_at(&digest).await?;
        if written >= cutoff || marked.is_some_and(|t| t >= cutoff) {
            return Ok(false);
        }
        let stamp = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis())
            .unwrap_or(0);
        let trash = self
            .root
            .clone()
            .join("trash")
            .join(format!("{}.{stamp}", digest.to_hex()).as_str());
        match self.store.copy(&key, &trash).await {
            Ok(()) => {}
            Err(e) if not_found(&e) => return Ok(false),
            Err(e) => return Err(backend(e)),
        }
        let removed = self.store.delete(&key).await;
        if let Err(e) = removed {
            let _ = self.store.delete(&trash).await;
            return Err(backend(e));
        }
        let _ = self.store.delete(&self.key("chunks", &digest)).await;
        if self.marked_at(&digest).await?.is_some_and(|t| t >= cutoff) {
            // A put or touch on another node raced with this removal: put the blob back.
            self.store.copy(&trash, &key).await.map_err(|e| {
                tracing::error!(blob = %digest, trash = %trash, error = %e, "cannot restore a blob removed while it was being used; its bytes are kept in trash/");
                backend(e)
            })?;
            let _ = self.store.delete(&trash).await;
            return Ok(false);
        }
        let _ = self.store.delete(&trash).await;
        let _ = self.store.delete(&self.key("touched", &digest)).await;
        Ok(true)
    }

    async fn put_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        crate::check_queue(queue)?;
        let key = self.marker_key(queue, &digest);
        match self.store.head(&key).await {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => self
                .store
                .put(&key, PutPayload::default())
                .await
                .map(|_| ())
                .map_err(backend),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list_markers(&self, queue: &str, limit: usize) -> Result<Vec<crate::Marker>, BlobError> {
        crate::check_queue(queue)?;
        let dir = self.root.clone().join("replication").join(queue);
        let mut listed = self.store.list(Some(&dir));
        let mut out = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(backend)?;
            let Some(digest) =
                meta.location
                    .prefix_match(&dir)
                    .and_then(|mut parts| match (parts.next(), parts.next()) {
                        (Some(name), None) => name.as_ref().parse::<Sha256Digest>().ok(),
                        _ => None,
                    })
            else {
                continue;
            };
            out.push(crate::Marker {
                digest,
                since: SystemTime::from(meta.last_modified),
            });
        }
        out.sort_unstable_by_key(|m| m.digest);
        out.truncate(limit);
        Ok(out)
    }

    async fn remove_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        crate::check_queue(queue)?;
        match self.store.delete(&self.marker_key(queue, &digest)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}

/// Streams a whole blob chunk by chunk, hashing as it goes and holding back the last chunk
/// until the digest is confirmed, so a corrupt blob never reaches the client complete.
fn stream_whole(store: S3BlobStore, digest: Sha256Digest, size: u64) -> ByteStream<BlobError> {
    struct State {
        store: S3BlobStore,
        digest: Sha256Digest,
        key: Path,
        size: u64,
        chunk: u64,
        next: Option<Prefetch>,
        hasher: Sha256,
        held: Option<Bytes>,
        done: bool,
    }
    let key = store.key("sha256", &digest);
    let next = (size > 0).then(|| store.fetch(&key, S3BlobStore::chunk_range(0, size)));
    let state = State {
        store,
        digest,
        key,
        size,
        chunk: 0,
        next,
        hasher: Sha256::new(),
        held: None,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let Some(current) = st.next.take() else {
                st.done = true;
                let actual = Sha256Digest::from_bytes(std::mem::take(&mut st.hasher).finalize().into());
                if actual != st.digest {
                    st.store.quarantine(&st.digest).await;
                    return Some((Err(BlobError::Corrupt(st.digest)), st));
                }
                return st.held.take().map(|b| (Ok(b), st));
            };
            let want = S3BlobStore::chunk_range(st.chunk, st.size);
            st.chunk += 1;
            if st.chunk * CHUNK < st.size {
                st.next = Some(
                    st.store
                        .fetch(&st.key, S3BlobStore::chunk_range(st.chunk, st.size)),
                );
            }
            let bytes = match current.take(&st.digest).await {
                Ok(b) if b.len() as u64 == want.end - want.start => b,
                Ok(_) => {
                    st.done = true;
                    st.store.quarantine(&st.digest).await;
                    return Some((Err(BlobError::Corrupt(st.digest)), st));
                }
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            st.hasher.update(&bytes);
            if let Some(prev) = st.held.replace(bytes) {
                return Some((Ok(prev), st));
            }
        }
    }))
}

/// Streams the inclusive range `start..=end`, verifying every chunk it touches before sending
/// any of its bytes.
fn stream_range(
    store: S3BlobStore,
    digest: Sha256Digest,
    size: u64,
    index: Vec<[u8; 32]>,
    start: u64,
    end: u64,
) -> ByteStream<BlobError> {
    struct State {
        store: S3BlobStore,
        digest: Sha256Digest,
        key: Path,
        size: u64,
        index: Vec<[u8; 32]>,
        chunk: u64,
        next: Option<Prefetch>,
        start: u64,
        end: u64,
        done: bool,
    }
    let key = store.key("sha256", &digest);
    let first = start / CHUNK;
    let next = Some(store.fetch(&key, S3BlobStore::chunk_range(first, size)));
    let state = State {
        store,
        digest,
        key,
        size,
        index,
        chunk: first,
        next,
        start,
        end,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let current = st.next.take()?;
        let base = st.chunk * CHUNK;
        let i = st.chunk;
        st.chunk += 1;
        if st.chunk * CHUNK <= st.end {
            st.next = Some(
                st.store
                    .fetch(&st.key, S3BlobStore::chunk_range(st.chunk, st.size)),
            );
        }
        let buf = match current.take(&st.digest).await {
            Ok(b) => b,
            Err(e) => {
                st.done = true;
                return Some((Err(e), st));
            }
        };
        let want = usize::try_from(i).ok().and_then(|i| st.index.get(i));
        let got: [u8; 32] = Sha256::digest(&buf).into();
        if want != Some(&got) {
            st.done = true;
            st.store.quarantine(&st.digest).await;
            return Some((Err(BlobError::Corrupt(st.digest)), st));
        }
        let n = buf.len();
        let from = usize::try_from(st.start.saturating_sub(base)).unwrap_or(0);
        let to = usize::try_from((st.end + 1 - base).min(n as u64)).unwrap_or(n);
        Some((Ok(buf.slice(from.min(to)..to)), st))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed_and_part_sizes_grow() {
        let opts = S3Options {
            secret_access_key: Some("hunter2".into()),
            ..S3Options::new("b", "p")
        };
        assert!(!format!("{opts:?}").contains("hunter2"));
        let store = S3BlobStore::with_store(
            Arc::new(object_store::memory::InMemory::new()),
            Path::default(),
            MIN_PART_SIZE,
        );
        assert_eq!(store.part_size_for(0), MIN_PART_SIZE);
        assert_eq!(store.part_size_for(999), MIN_PART_SIZE);
        assert_eq!(store.part_size_for(1000), MIN_PART_SIZE * 2);
        assert_eq!(store.part_size_for(9999), MIN_PART_SIZE << 9);
        assert_eq!(store.part_size_for(usize::MAX), MAX_PART_SIZE);
        let total: usize = (0..10_000).map(|p| store.part_size_for(p)).sum();
        assert!(total as u64 > 1 << 40, "10 000 parts hold at least 1 TiB");
    }

    use std::collections::HashSet;
    use std::sync::Mutex;

    use futures_util::stream::BoxStream;
    use futures_util::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, ObjectMeta, PutMultipartOptions, PutResult,
    };

    /// An in-memory bucket where chosen objects look two hours old, and where deleting one
    /// chosen key first writes another (a put or touch on another node landing at that moment).
    #[derive(Debug, Default)]
    struct Aging {
        inner: Arc<InMemory>,
        aged: Arc<Mutex<HashSet<Path>>>,
        on_delete: Arc<Mutex<Option<(Path, Path)>>>,
    }

    impl fmt::Display for Aging {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Aging")
        }
    }

    fn aged(set: &Mutex<HashSet<Path>>, mut meta: ObjectMeta) -> ObjectMeta {
        if set.lock().is_ok_and(|s| s.contains(&meta.location)) {
            meta.last_modified = (SystemTime::from(meta.last_modified) - Duration::from_secs(7200)).into();
        }
        meta
    }

    impl Aging {
        fn age(&self, p: &Path) {
            self.aged
                .lock()
                .map(|mut s| s.insert(p.clone()))
                .unwrap_or_default();
        }
        fn fresh(&self, p: &Path) {
            self.aged.lock().map(|mut s| s.remove(p)).unwrap_or_default();
        }
    }

    #[async_trait]
    impl ObjectStore for Aging {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<PutResult> {
            self.fresh(location);
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.fresh(location);
            self.inner.put_multipart_opts(location, opts).await
        }

        async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
            let mut r = self.inner.get_opts(location, options).await?;
            r.meta = aged(&self.aged, r.meta);
            Ok(r)
        }

        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            let (inner, hook, set) = (
                Arc::clone(&self.inner),
                Arc::clone(&self.on_delete),
                Arc::clone(&self.aged),
            );
            let locations = locations
                .then(move |p| {
                    let (inner, hook, set) = (Arc::clone(&inner), Arc::clone(&hook), Arc::clone(&set));
                    async move {
                        let also = match (&p, hook.lock().ok().and_then(|h| h.clone())) {
                            (Ok(p), Some((when, write))) if *p == when => Some(write),
                            _ => None,
                        };
                        if let Some(write) = also {
                            set.lock().map(|mut s| s.remove(&write)).unwrap_or_default();
                            let _ = inner.put(&write, PutPayload::default()).await;
                        }
                        p
                    }
                })
                .boxed();
            self.inner.delete_stream(locations)
        }

        fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            let set = Arc::clone(&self.aged);
            self.inner.list(prefix).map_ok(move |m| aged(&set, m)).boxed()
        }

        async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
            let mut r = self.inner.list_with_delimiter(prefix).await?;
            r.objects = r.objects.into_iter().map(|m| aged(&self.aged, m)).collect();
            Ok(r)
        }

        async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
            self.fresh(to);
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn body(bytes: &'static [u8]) -> ByteStream<BoxError> {
        Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(bytes))]))
    }

    #[tokio::test]
    async fn a_removal_that_races_with_a_put_or_touch_puts_the_blob_back() -> Result<(), BlobError> {
        let bucket = Arc::new(Aging::default());
        let store = S3BlobStore::with_store(bucket.clone(), Path::from("reg"), MIN_PART_SIZE);
        let opts = PutOptions {
            max_size: u64::MAX,
            ..PutOptions::default()
        };
        let d = store.put(body(b"weights"), opts).await?.digest;
        let (blob, marker) = (store.key("sha256", &d), store.key("touched", &d));
        let cutoff = SystemTime::now() - Duration::from_secs(3600);
        let count = |prefix: &'static str| {
            let inner = Arc::clone(&bucket.inner);
            async move {
                inner
                    .list(Some(&Path::from(prefix)))
                    .try_collect::<Vec<_>>()
                    .await
                    .map_or(usize::MAX, |v| v.len())
            }
        };

        // Written just now: kept.
        assert!(!store.delete_if_untouched(d, cutoff).await?);
        // Old, but another node touches it while this one removes it: restored, trash emptied.
        bucket.age(&blob);
        bucket.age(&marker);
        assert!(store.list(None, 10).await?[0].touched < cutoff);
        if let Ok(mut h) = bucket.on_delete.lock() {
            *h = Some((blob.clone(), marker.clone()));
        }
        assert!(!store.delete_if_untouched(d, cutoff).await?);
        assert_eq!(store.verify(d).await?, Verified::Ok { size: 7 });
        assert_eq!(count("reg/trash").await, 0);

        // Old and untouched: removed with its marker, index and trash copy.
        if let Ok(mut h) = bucket.on_delete.lock() {
            *h = None;
        }
        bucket.age(&blob);
        bucket.age(&marker);
        assert!(store.delete_if_untouched(d, cutoff).await?);
        assert_eq!(store.stat(d).await?, None);
        for prefix in ["reg/trash", "reg/touched", "reg/chunks", "reg/sha256", "reg/tmp"] {
            assert_eq!(count(prefix).await, 0, "{prefix}");
        }
        assert!(!store.touch(d).await?);
        Ok(())
    }
}
