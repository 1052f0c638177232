//! Artifact storage: content-addressed blobs with a streaming hash on the way in and
//! verification on the way out.
//!
//! A blob is stored under its SHA-256. Writes stream into a temporary file that is hashed as it
//! grows, checked against the client's expected digest, fsynced, renamed into place and made
//! durable with a directory fsync; a failed write leaves nothing behind. Reads are verified: a
//! whole-blob read holds back its last piece until the digest matches, and a range read checks
//! every 4 MiB chunk it touches against a per-blob chunk index built from verified bytes. Bytes
//! that fail verification are moved to `quarantine/` and reported as corrupt, never served.

pub mod chunk_index;
mod local;
mod location;
pub mod regional;
mod s3;

pub use local::LocalBlobStore;
pub use location::{open_store, BlobLocation, BlobUrlError};
pub use regional::{Region, RegionalBlobStore};
pub use s3::{S3BlobStore, S3Options, DEFAULT_PART_SIZE, MIN_PART_SIZE};

use std::pin::Pin;
use std::time::SystemTime;

use async_trait::async_trait;
use ballast_core::{ErrorCode, Sha256Digest};
use bytes::Bytes;
use futures_util::Stream;

/// A stream of bytes coming in (an upload) or going out (a download).
pub type ByteStream<E> = Pin<Box<dyn Stream<Item = Result<Bytes, E>> + Send>>;

/// An error of an incoming stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A blob that was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    /// Its digest.
    pub digest: Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// A stored blob as listed for garbage collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// Its digest.
    pub digest: Sha256Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written or [touched](BlobStore::touch). Garbage collection keeps a blob
    /// touched at or after its cutoff, however unreferenced it looks.
    pub touched: SystemTime,
}

/// An entry of a durable queue kept beside the blobs (see [`BlobStore::put_marker`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The blob it is about.
    pub digest: Sha256Digest,
    /// When it was written.
    pub since: SystemTime,
}

/// Whether `queue` may name a marker queue: 1 to 63 lowercase letters, digits, `-` or `_`,
/// starting with a letter or digit (so it is one safe path segment or key segment).
#[must_use]
pub fn valid_queue_name(queue: &str) -> bool {
    (1..=63).contains(&queue.len())
        && queue
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && queue.as_bytes()[0].is_ascii_alphanumeric()
}

fn bad_queue(queue: &str) -> BlobError {
    BlobError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("invalid marker queue name {queue:?}"),
    ))
}

/// What a client announced about an upload.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions {
    /// The digest the bytes must have.
    pub expected_digest: Option<Sha256Digest>,
    /// The length the bytes must have (e.g. `Content-Length`).
    pub expected_size: Option<u64>,
    /// The most bytes accepted.
    pub max_size: u64,
}

/// The outcome of checking a stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The bytes match the digest.
    Ok {
        /// Size in bytes.
        size: u64,
    },
    /// The blob is not stored.
    Missing,
    /// The bytes do not match; they were quarantined.
    Corrupt,
}

/// A failed blob operation.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The blob is not stored.
    #[error("blob {0} is not stored")]
    NotFound(Sha256Digest),
    /// The uploaded bytes hash to something else than announced.
    #[error("the uploaded bytes have digest {actual}, not the expected {expected}; nothing was stored")]
    DigestMismatch {
        /// Announced.
        expected: Sha256Digest,
        /// Computed.
        actual: Sha256Digest,
    },
    /// The upload ended early.
    #[error("the upload ended after {received} of {expected} bytes; nothing was stored")]
    Incomplete {
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// The upload is larger than allowed.
    #[error("the upload is larger than the limit of {limit} bytes; nothing was stored")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client's stream failed mid-way.
    #[error("the upload failed mid-way ({0}); nothing was stored")]
    Client(String),
    /// Stored bytes failed verification.
    #[error("blob {0} is corrupt on disk (its bytes do not match its digest); it was quarantined")]
    Corrupt(Sha256Digest),
    /// The requested range is outside the blob.
    #[error("range {start}-{end} is outside the blob of {size} bytes")]
    Range {
        /// First byte asked.
        start: u64,
        /// Last byte asked (inclusive).
        end: u64,
        /// Blob size.
        size: u64,
    },
    /// The storage failed.
    #[error("blob storage error: {0}")]
    Io(#[from] std::io::Error),
}

impl BlobError {
    /// The API error code for this failure.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            BlobError::NotFound(_) => ErrorCode::NotFound,
            BlobError::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            BlobError::Incomplete { .. } | BlobError::Client(_) => ErrorCode::IncompleteUpload,
            BlobError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            BlobError::Corrupt(_) => ErrorCode::BlobCorrupt,
            BlobError::Range { .. } => ErrorCode::RangeNotSatisfiable,
            BlobError::Io(_) => ErrorCode::Unavailable,
        }
    }
}

/// Content-addressed blob storage. One implementation per backend.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Stores the bytes of `body`, returning their digest and size once durable.
    async fn put(&self, body: ByteStream<BoxError>, opts: PutOptions) -> Result<StoredBlob, BlobError>;
    /// The size of a stored blob, if it is stored.
    async fn stat(&self, digest: Sha256Digest) -> Result<Option<u64>, BlobError>;
    /// Streams the blob, or the inclusive byte range `range` of it, verifying as it goes.
    async fn get(
        &self,
        digest: Sha256Digest,
        range: Option<(u64, u64)>,
    ) -> Result<(u64, ByteStream<BlobError>), BlobError>;
    /// Reads the whole blob and checks it against its digest (quarantining it when corrupt).
    async fn verify(&self, digest: Sha256Digest) -> Result<Verified, BlobError>;

    // Garbage collection. A blob is removed only when no record references it and it has not
    // been touched since a cutoff; `put` and `touch` make a blob "touched now", and
    // `delete_if_untouched` decides atomically with respect to both on the same digest, so a
    // blob that an upload or attach is about to reference is never swept from under it.

    /// Lists stored blobs in ascending digest order, strictly after `after` (from the first
    /// when `None`), at most `limit` of them. Page through the store by passing the last digest
    /// of one page as `after` of the next; an empty page is the end. Blobs stored or removed
    /// while paging may or may not appear. Temporary, quarantined and index files are never
    /// listed.
    async fn list(&self, after: Option<Sha256Digest>, limit: usize) -> Result<Vec<BlobEntry>, BlobError>;
    /// Marks a stored blob as used just now (its [`BlobEntry::touched`] becomes the current
    /// time), so a garbage collection whose cutoff is earlier keeps it. Returns `false`, changing
    /// nothing, when the blob is not stored. Callers touch a blob they are about to reference
    /// without uploading it (an attach of a digest the server already holds).
    async fn touch(&self, digest: Sha256Digest) -> Result<bool, BlobError>;
    /// Removes the blob (and anything derived from it, such as a chunk index) unless it was
    /// touched or written at or after `cutoff`. Returns `true` when it was removed, `false` when
    /// it was kept because it is recent or was not stored. The check and the removal are atomic
    /// with respect to `put` and `touch` of the same digest: a `put` or `touch` that completes
    /// before this call makes it keep the blob, one that starts after it finds the blob gone
    /// (`touch` returns `false`; `put` stores it again).
    async fn delete_if_untouched(&self, digest: Sha256Digest, cutoff: SystemTime) -> Result<bool, BlobError>;

    // Durable marker queues: small entries naming a digest, kept in the store itself under
    // `replication/<queue>/` so every node sharing the store sees them and they outlive any one
    // node. Replication between regions uses one queue per destination region.

    /// Records, durably, that `digest` is queued in `queue` (idempotent; an existing marker
    /// keeps its original time). Stores that keep no markers refuse.
    async fn put_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        let _ = digest;
        Err(unsupported_markers(queue))
    }
    /// Up to `limit` markers of `queue` in ascending digest order.
    async fn list_markers(&self, queue: &str, limit: usize) -> Result<Vec<Marker>, BlobError> {
        let _ = limit;
        Err(unsupported_markers(queue))
    }
    /// Removes the marker of `digest` from `queue` (no error when it is absent).
    async fn remove_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        let _ = digest;
        Err(unsupported_markers(queue))
    }
}

fn unsupported_markers(queue: &str) -> BlobError {
    if !valid_queue_name(queue) {
        return bad_queue(queue);
    }
    BlobError::Io(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "this blob store keeps no marker queues",
    ))
}

/// Checks a queue name for the stores' implementations.
pub(crate) fn check_queue(queue: &str) -> Result<(), BlobError> {
    if valid_queue_name(queue) {
        Ok(())
    } else {
        Err(bad_queue(queue))
    }
}
