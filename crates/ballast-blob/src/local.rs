//! Blobs on the local file system:
//!
//! ```text
//! <root>/sha256/ab/abcdef…         the blob
//! <root>/chunks/ab/abcdef…         SHA-256 of each 4 MiB chunk, built from verified bytes
//! <root>/tmp/                      uploads in progress (emptied on open)
//! <root>/quarantine/abcdef….<ts>   bytes that failed verification
//! <root>/replication/<queue>/abcdef…  empty marker: the blob waits in a replication queue
//! ```
//!
//! A blob's touched time (for garbage collection) is its file's modification time: a `put`
//! renames a freshly written file into place and a `touch` sets it to now. Renames into place,
//! touches and garbage-collection removals of one digest are serialized by a per-digest lock
//! (striped), so a removal never takes bytes that were just stored or touched.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use ballast_core::Sha256Digest;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{BlobEntry, BlobError, BlobStore, BoxError, ByteStream, PutOptions, StoredBlob, Verified};

/// Size of the chunks that range reads verify.
pub const CHUNK: u64 = 4 * 1024 * 1024;
/// Size of the pieces whole-blob reads send.
const READ_PIECE: usize = 256 * 1024;
/// Bytes gathered before each write of an upload.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Number of locks serializing renames, touches and removals per digest.
const STRIPES: usize = 64;

/// Blobs in a directory.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

fn fan_out(root: &Path, kind: &str, d: &Sha256Digest) -> PathBuf {
    let hex = d.to_hex();
    root.join(kind).join(&hex[..2]).join(hex)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the temporary file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl LocalBlobStore {
    /// Opens the store in `root`, creating its directories and removing leftovers of
    /// interrupted uploads.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        for d in ["sha256", "chunks", "tmp", "quarantine"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        for entry in std::fs::read_dir(root.join("tmp"))? {
            let _ = std::fs::remove_file(entry?.path());
        }
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Ok(Self { root, stripes })
    }

    /// The lock that serializes renames into place, touches and removals of `d`.
    async fn lock(&self, d: &Sha256Digest) -> tokio::sync::MutexGuard<'_, ()> {
        let i = usize::from(d.as_bytes()[0]) % self.stripes.len();
        self.stripes[i].lock().await
    }

    /// Where the blob lives (for tests and repair tools).
    #[must_use]
    pub fn blob_path(&self, d: &Sha256Digest) -> PathBuf {
        fan_out(&self.root, "sha256", d)
    }

    /// Moves corrupt bytes aside so they are never served again, and drops their chunk index.
    async fn quarantine(&self, d: &Sha256Digest) {
        let from = self.blob_path(d);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_millis())
            .unwrap_or(0);
        let to = self
            .root
            .join("quarantine")
            .join(format!("{}.{stamp}", d.to_hex()));
        match tokio::fs::rename(&from, &to).await {
            Ok(()) => {
                tracing::error!(blob = %d, quarantined = %to.display(), "blob failed verification and was quarantined")
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(blob = %d, error = %e, "blob failed verification and could not be quarantined")
            }
        }
        let _ = tokio::fs::remove_file(fan_out(&self.root, "chunks", d)).await;
    }

    /// Reads the chunk index, building it from a full verified pass when it is missing or
    /// malformed.
    async fn chunk_index(&self, d: &Sha256Digest, size: u64) -> Result<Vec<[u8; 32]>, BlobError> {
        let want = usize::try_from(size.div_ceil(CHUNK)).unwrap_or(usize::MAX);
        let path = fan_out(&self.root, "chunks", d);
        if let Ok(raw) = tokio::fs::read(&path).await {
            if raw.len() == want.saturating_mul(32) {
                return Ok(raw
                    .chunks_exact(32)
                    .map(|c| <[u8; 32]>::try_from(c).unwrap_or([0; 32]))
                    .collect());
            }
        }
        let mut file = tokio::fs::File::open(self.blob_path(d)).await?;
        let mut whole = Sha256::new();
        let mut index = Vec::with_capacity(want);
        let mut buf = vec![0u8; usize::try_from(CHUNK).unwrap_or(4 << 20)];
        let mut total = 0u64;
        loop {
            let n = read_full(&mut file, &mut buf).await?;
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            index.push(Sha256::digest(&buf[..n]).into());
            total += n as u64;
        }
        if total != size || Sha256Digest::from_bytes(whole.finalize().into()) != *d {
            self.quarantine(d).await;
            return Err(BlobError::Corrupt(*d));
        }
        let flat: Vec<u8> = index.iter().flatten().copied().collect();
        write_atomically(&self.root, &path, &flat).await?;
        Ok(index)
    }
}

/// Fills `buf` as far as the file allows; returns the bytes read (0 at the end).
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = file.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

async fn write_atomically(root: &Path, dest: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = root
        .join("tmp")
        .join(format!("idx-{:016x}", rand::random::<u64>()));
    let guard = TempFile(Some(tmp.clone()));
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(data).await?;
    f.sync_all().await?;
    drop(f);
    let dir = dest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::rename(&tmp, dest).await?;
    std::mem::forget(guard);
    tokio::task::spawn_blocking(move || sync_dir(&dir))
        .await
        .map_err(std::io::Error::other)?
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, mut body: ByteStream<BoxError>, opts: PutOptions) -> Result<StoredBlob, BlobError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("up-{:016x}", rand::random::<u64>()));
        let mut guard = TempFile(Some(tmp.clone()));
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut pending = BytesMut::with_capacity(WRITE_BUFFER);
        let limit = opts.expected_size.map_or(opts.max_size, |s| s.min(opts.max_size));
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| BlobError::Client(e.to_string()))?;
            size += piece.len() as u64;
            if size > limit {
                return Err(match opts.expected_size {
                    Some(s) if s < opts.max_size => {
                        BlobError::Client(format!("more than the announced {s} bytes were sent"))
                    }
                    _ => BlobError::TooLarge { limit: opts.max_size },
                });
            }
            hasher.update(&piece);
            pending.extend_from_slice(&piece);
            if pending.len() >= WRITE_BUFFER {
                file.write_all(&pending).await?;
                pending.clear();
            }
        }
        file.write_all(&pending).await?;
        if let Some(expected) = opts.expected_size {
            if size != expected {
                return Err(BlobError::Incomplete {
                    received: size,
                    expected,
                });
            }
        }
        let digest = Sha256Digest::from_bytes(hasher.finalize().into());
        if let Some(expected) = opts.expected_digest {
            if expected != digest {
                return Err(BlobError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        file.sync_all().await?;
        drop(file);
        let dest = self.blob_path(&digest);
        let dir = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        tokio::fs::create_dir_all(&dir).await?;
        // Renaming over an existing copy is safe (same digest) and repairs a damaged one. The
        // renamed file carries a fresh modification time, so garbage collection keeps it.
        let lock = self.lock(&digest).await;
        tokio::fs::rename(&tmp, &dest).await?;
        drop(lock);
        guard.0 = None;
        tokio::task::spawn_blocking(move || sync_dir(&dir))
            .await
            .map_err(std::io::Error::other)??;
        Ok(StoredBlob { digest, size })
    }

    async fn stat(&self, digest: Sha256Digest) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.blob_path(&digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(
        &self,
        digest: Sha256Digest,
        range: Option<(u64, u64)>,
    ) -> Result<(u64, ByteStream<BlobError>), BlobError> {
        let path = self.blob_path(&digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(BlobError::NotFound(digest)),
            Err(e) => return Err(e.into()),
        };
        let size = file.metadata().await?.len();
        let store = self.clone();
        match range {
            None => {
                let stream = async_stream_whole(store, digest, file, size);
                Ok((size, stream))
            }
            Some((start, end)) => {
                if start > end || end >= size {
                    return Err(BlobError::Range { start, end, size });
                }
                let index = self.chunk_index(&digest, size).await?;
                let first = start / CHUNK;
                file.seek(SeekFrom::Start(first * CHUNK)).await?;
                let stream = async_stream_range(store, digest, file, index, start, end);
                Ok((end - start + 1, stream))
            }
        }
    }

    async fn verify(&self, digest: Sha256Digest) -> Result<Verified, BlobError> {
        let Some(size) = self.stat(digest).await? else {
            return Ok(Verified::Missing);
        };
        let _ = tokio::fs::remove_file(fan_out(&self.root, "chunks", &digest)).await;
        match self.chunk_index(&digest, size).await {
            Ok(_) => Ok(Verified::Ok { size }),
            Err(BlobError::Corrupt(_)) => Ok(Verified::Corrupt),
            Err(BlobError::Io(e)) if e.kind() == ErrorKind::NotFound => Ok(Verified::Missing),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, after: Option<Sha256Digest>, limit: usize) -> Result<Vec<BlobEntry>, BlobError> {
        let root = self.root.join("sha256");
        tokio::task::spawn_blocking(move || list_blobs(&root, after, limit))
            .await
            .map_err(std::io::Error::other)?
            .map_err(BlobError::Io)
    }

    async fn touch(&self, digest: Sha256Digest) -> Result<bool, BlobError> {
        let path = self.blob_path(&digest);
        let _lock = self.lock(&digest).await;
        let touched = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let file = match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            file.set_modified(SystemTime::now())?;
            Ok(true)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(touched)
    }

    async fn delete_if_untouched(&self, digest: Sha256Digest, cutoff: SystemTime) -> Result<bool, BlobError> {
        let path = self.blob_path(&digest);
        let index = fan_out(&self.root, "chunks", &digest);
        let _lock = self.lock(&digest).await;
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            };
            if meta.modified()? >= cutoff {
                return Ok(false);
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            let _ = std::fs::remove_file(&index);
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            Ok(true)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(removed)
    }

    async fn put_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        crate::check_queue(queue)?;
        let dir = self.root.join("replication").join(queue);
        let path = dir.join(digest.to_hex());
        if tokio::fs::try_exists(&path).await? {
            return Ok(());
        }
        tokio::fs::create_dir_all(&dir).await?;
        write_atomically(&self.root, &path, b"").await?;
        Ok(())
    }

    async fn list_markers(&self, queue: &str, limit: usize) -> Result<Vec<crate::Marker>, BlobError> {
        crate::check_queue(queue)?;
        let dir = self.root.join("replication").join(queue);
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<crate::Marker>> {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for e in entries.filter_map(Result::ok) {
                let Some(digest) = e
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<Sha256Digest>().ok())
                else {
                    continue;
                };
                match e.metadata() {
                    Ok(m) if m.is_file() => out.push(crate::Marker {
                        digest,
                        since: m.modified()?,
                    }),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            out.sort_unstable_by_key(|m| m.digest);
            out.truncate(limit);
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(BlobError::Io)
    }

    async fn remove_marker(&self, queue: &str, digest: Sha256Digest) -> Result<(), BlobError> {
        crate::check_queue(queue)?;
        let dir = self.root.join("replication").join(queue);
        let path = dir.join(digest.to_hex());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&dir),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }
}

/// Lists `<root>/<ab>/<abcdef…>` in digest order after `after`, at most `limit` entries. Names
/// that are not digests, and files that vanish while listing, are skipped.
fn list_blobs(root: &Path, after: Option<Sha256Digest>, limit: usize) -> std::io::Result<Vec<BlobEntry>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let after_hex = after.map(|d| d.to_hex());
    let start_dir = after_hex.as_deref().map_or("", |h| &h[..2]);
    let mut dirs: Vec<String> = std::fs::read_dir(root)?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.len() == 2
                && n.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        .filter(|n| n.as_str() >= start_dir)
        .collect();
    dirs.sort_unstable();
    for dir in dirs {
        let entries = match std::fs::read_dir(root.join(&dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut names: Vec<(Sha256Digest, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !name.starts_with(&dir) || after_hex.as_deref().is_some_and(|a| name.as_str() <= a) {
                    return None;
                }
                let digest = name.parse::<Sha256Digest>().ok()?;
                (digest.to_hex() == name).then(|| (digest, e.path()))
            })
            .collect();
        names.sort_unstable_by_key(|a| a.0);
        for (digest, path) in names {
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            out.push(BlobEntry {
                digest,
                size: meta.len(),
                touched: meta.modified()?,
            });
            if out.len() == limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Streams a whole blob, hashing as it goes and holding back the last piece until the digest is
/// confirmed, so a corrupt blob never reaches the client complete.
fn async_stream_whole(
    store: LocalBlobStore,
    digest: Sha256Digest,
    file: tokio::fs::File,
    size: u64,
) -> ByteStream<BlobError> {
    struct State {
        store: LocalBlobStore,
        digest: Sha256Digest,
        file: tokio::fs::File,
        hasher: Sha256,
        held: Option<Bytes>,
        seen: u64,
        size: u64,
        done: bool,
    }
    let state = State {
        store,
        digest,
        file,
        hasher: Sha256::new(),
        held: None,
        seen: 0,
        size,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let mut buf = vec![0u8; READ_PIECE];
            let n = match read_full(&mut st.file, &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    st.done = true;
                    return Some((Err(BlobError::Io(e)), st));
                }
            };
            if n == 0 {
                st.done = true;
                let actual = Sha256Digest::from_bytes(std::mem::take(&mut st.hasher).finalize().into());
                if actual != st.digest || st.seen != st.size {
                    st.store.quarantine(&st.digest).await;
                    return Some((Err(BlobError::Corrupt(st.digest)), st));
                }
                return st.held.take().map(|b| (Ok(b), st));
            }
            buf.truncate(n);
            st.hasher.update(&buf);
            st.seen += n as u64;
            if let Some(prev) = st.held.replace(Bytes::from(buf)) {
                return Some((Ok(prev), st));
            }
        }
    }))
}

/// Streams the inclusive range `start..=end`, verifying every chunk it touches before sending
/// any of its bytes.
fn async_stream_range(
    store: LocalBlobStore,
    digest: Sha256Digest,
    file: tokio::fs::File,
    index: Vec<[u8; 32]>,
    start: u64,
    end: u64,
) -> ByteStream<BlobError> {
    struct State {
        store: LocalBlobStore,
        digest: Sha256Digest,
        file: tokio::fs::File,
        index: Vec<[u8; 32]>,
        chunk: u64,
        start: u64,
        end: u64,
        done: bool,
    }
    let state = State {
        store,
        digest,
        file,
        index,
        chunk: start / CHUNK,
        start,
        end,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.done || st.chunk * CHUNK > st.end {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(CHUNK).unwrap_or(4 << 20)];
        let n = match read_full(&mut st.file, &mut buf).await {
            Ok(n) => n,
            Err(e) => {
                st.done = true;
                return Some((Err(BlobError::Io(e)), st));
            }
        };
        buf.truncate(n);
        let want = usize::try_from(st.chunk).ok().and_then(|i| st.index.get(i));
        let got: [u8; 32] = Sha256::digest(&buf).into();
        if want != Some(&got) {
            st.done = true;
            st.store.quarantine(&st.digest).await;
            return Some((Err(BlobError::Corrupt(st.digest)), st));
        }
        let base = st.chunk * CHUNK;
        let from = usize::try_from(st.start.saturating_sub(base)).unwrap_or(0);
        let to = usize::try_from((st.end + 1 - base).min(n as u64)).unwrap_or(n);
        st.chunk += 1;
        let piece = Bytes::from(buf).slice(from.min(to)..to);
        Some((Ok(piece), st))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: Vec<Vec<u8>>) -> ByteStream<BoxError> {
        Box::pin(futures_util::stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from(p))),
        ))
    }

    async fn collect(s: ByteStream<BlobError>) -> Result<Vec<u8>, BlobError> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(p) = s.next().await {
            out.extend_from_slice(&p?);
        }
        Ok(out)
    }

    fn opts() -> PutOptions {
        PutOptions {
            max_size: u64::MAX,
            ..PutOptions::default()
        }
    }

    #[tokio::test]
    async fn put_get_range_and_corruption() -> Result<(), BlobError> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let data: Vec<u8> = (0..(CHUNK as usize * 2 + 1234))
            .map(|i| (i % 251) as u8)
            .collect();
        let b = store
            .put(body(vec![data[..1000].to_vec(), data[1000..].to_vec()]), opts())
            .await?;
        assert_eq!(b.digest, Sha256Digest::of(&data));
        assert_eq!(store.stat(b.digest).await?, Some(data.len() as u64));
        let (len, s) = store.get(b.digest, None).await?;
        assert_eq!(len, data.len() as u64);
        assert_eq!(collect(s).await?, data);
        for (a, z) in [
            (0, 0),
            (5, CHUNK + 10),
            (CHUNK - 1, CHUNK),
            (CHUNK * 2, data.len() as u64 - 1),
        ] {
            let (len, s) = store.get(b.digest, Some((a, z))).await?;
            assert_eq!(len, z - a + 1);
            assert_eq!(collect(s).await?, data[a as usize..=z as usize].to_vec());
        }
        assert!(matches!(
            store.get(b.digest, Some((0, data.len() as u64))).await,
            Err(BlobError::Range { .. })
        ));

        // Corrupt one byte: a whole read fails before its end, a range read of the damaged
        // chunk fails, and the blob is quarantined.
        let path = store.blob_path(&b.digest);
        let mut bytes = std::fs::read(&path)?;
        bytes[CHUNK as usize + 7] ^= 1;
        std::fs::write(&path, &bytes)?;
        let (_, s) = store.get(b.digest, None).await?;
        let mut s = s;
        let mut received = 0usize;
        let mut failed = false;
        while let Some(p) = s.next().await {
            match p {
                Ok(p) => received += p.len(),
                Err(e) => {
                    assert!(matches!(e, BlobError::Corrupt(_)));
                    failed = true;
                }
            }
        }
        assert!(failed && received < data.len());
        assert_eq!(store.stat(b.digest).await?, None);
        assert_eq!(store.verify(b.digest).await?, Verified::Missing);
        Ok(())
    }

    #[tokio::test]
    async fn bad_uploads_leave_nothing() -> Result<(), BlobError> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let wrong = Sha256Digest::of(b"other");
        let r = store
            .put(
                body(vec![b"hello".to_vec()]),
                PutOptions {
                    expected_digest: Some(wrong),
                    ..opts()
                },
            )
            .await;
        assert!(matches!(r, Err(BlobError::DigestMismatch { .. })));
        let r = store
            .put(
                body(vec![b"hello".to_vec()]),
                PutOptions {
                    expected_size: Some(10),
                    ..opts()
                },
            )
            .await;
        assert!(matches!(
            r,
            Err(BlobError::Incomplete {
                received: 5,
                expected: 10
            })
        ));
        let r = store
            .put(
                body(vec![b"hello".to_vec()]),
                PutOptions {
                    max_size: 3,
                    ..opts()
                },
            )
            .await;
        assert!(matches!(r, Err(BlobError::TooLarge { .. })));
        let failing: ByteStream<BoxError> = Box::pin(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err::<Bytes, BoxError>("connection reset".into()),
        ]));
        assert!(matches!(
            store.put(failing, opts()).await,
            Err(BlobError::Client(_))
        ));
        assert_eq!(std::fs::read_dir(dir.path().join("tmp"))?.count(), 0);
        assert_eq!(store.stat(Sha256Digest::of(b"hello")).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn list_touch_and_delete_if_untouched() -> Result<(), BlobError> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let mut digests = Vec::new();
        for i in 0..5u8 {
            digests.push(
                store
                    .put(body(vec![vec![i; usize::from(i) + 1]]), opts())
                    .await?
                    .digest,
            );
        }
        digests.sort();
        // Strays that are not blobs are never listed.
        std::fs::write(dir.path().join("sha256").join("README"), b"x")?;
        std::fs::create_dir_all(dir.path().join("sha256").join("zz"))?;
        std::fs::write(dir.path().join("sha256").join("zz").join("zz"), b"x")?;

        let all = store.list(None, 100).await?;
        assert_eq!(all.iter().map(|e| e.digest).collect::<Vec<_>>(), digests);
        assert!(all.iter().all(|e| e.size >= 1 && e.size <= 5));
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(after, 2).await?;
            let Some(last) = page.last() else { break };
            assert!(page.len() <= 2);
            after = Some(last.digest);
            paged.extend(page.iter().map(|e| e.digest));
        }
        assert_eq!(paged, digests);
        assert!(store.list(None, 0).await?.is_empty());

        // A blob written or touched at or after the cutoff is kept; an older one goes.
        let past = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert!(!store.delete_if_untouched(digests[0], past).await?);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(store.blob_path(&digests[0]))?;
        file.set_modified(past - std::time::Duration::from_secs(60))?;
        drop(file);
        let before = store.list(None, 1).await?[0].touched;
        assert!(before < past);
        assert!(store.touch(digests[0]).await?);
        assert!(store.list(None, 1).await?[0].touched >= past);
        assert!(!store.delete_if_untouched(digests[0], past).await?);
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert!(store.delete_if_untouched(digests[0], later).await?);
        assert_eq!(store.stat(digests[0]).await?, None);
        assert!(!store.touch(digests[0]).await?);
        assert!(!store.delete_if_untouched(digests[0], later).await?);
        assert_eq!(store.list(None, 100).await?.len(), 4);
        Ok(())
    }

    #[tokio::test]
    async fn verify_detects_corruption_and_reupload_repairs() -> Result<(), BlobError> {
        let dir = tempfile::tempdir()?;
        let store = LocalBlobStore::open(dir.path())?;
        let b = store.put(body(vec![b"weights".to_vec()]), opts()).await?;
        assert_eq!(store.verify(b.digest).await?, Verified::Ok { size: 7 });
        std::fs::write(store.blob_path(&b.digest), b"weightz")?;
        assert_eq!(store.verify(b.digest).await?, Verified::Corrupt);
        assert_eq!(std::fs::read_dir(dir.path().join("quarantine"))?.count(), 1);
        store.put(body(vec![b"weights".to_vec()]), opts()).await?;
        assert_eq!(store.verify(b.digest).await?, Verified::Ok { size: 7 });
        Ok(())
    }
}
