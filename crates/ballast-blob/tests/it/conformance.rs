//! The blob conformance suite: every function here runs against every backend (see `main.rs`)
//! and states a guarantee of [`BlobStore`] that a backend must keep.

use std::time::{Duration, SystemTime};

use ballast_blob::chunk_index::CHUNK;
use ballast_blob::{BlobError, BoxError, ByteStream, PutOptions, StoredBlob, Verified};
use ballast_core::Sha256Digest;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::fixture::Fixture;

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A request body that arrives in pieces of `piece` bytes.
fn body(bytes: &[u8], piece: usize) -> ByteStream<BoxError> {
    let parts: Vec<Result<Bytes, BoxError>> = bytes
        .chunks(piece.max(1))
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

fn announced(bytes: &[u8]) -> PutOptions {
    PutOptions {
        expected_digest: Some(Sha256Digest::of(bytes)),
        expected_size: Some(bytes.len() as u64),
        ..opts()
    }
}

async fn collect(s: ByteStream<BlobError>) -> Result<Vec<u8>, BlobError> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(p) = s.next().await {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

async fn read_all(f: &Fixture, d: Sha256Digest) -> Vec<u8> {
    let (len, s) = f.store.get(d, None).await.expect("get");
    let out = collect(s).await.expect("read");
    assert_eq!(len, out.len() as u64, "announced length");
    out
}

async fn read_range(f: &Fixture, d: Sha256Digest, a: u64, z: u64) -> Vec<u8> {
    let (len, s) = f.store.get(d, Some((a, z))).await.expect("get range");
    assert_eq!(len, z - a + 1);
    collect(s).await.expect("read range")
}

/// Ranges around chunk boundaries that a blob of `len` bytes can serve.
fn ranges(len: u64) -> Vec<(u64, u64)> {
    let mut out = vec![(0, 0), (5, 99.min(len - 1)), (len - 1, len - 1), (0, len - 1)];
    let mut at = CHUNK;
    while at < len {
        out.push((at - 1, at));
        out.push((at - 10, (at + 10).min(len - 1)));
        out.push((at, (at + CHUNK - 1).min(len - 1)));
        at += CHUNK;
    }
    out.push((1000.min(len - 1), len - 1));
    out
}

async fn assert_stored(f: &Fixture, bytes: &[u8], stored: StoredBlob) {
    assert_eq!(stored.digest, Sha256Digest::of(bytes));
    assert_eq!(stored.size, bytes.len() as u64);
    assert_eq!(
        f.store.stat(stored.digest).await.expect("stat"),
        Some(stored.size)
    );
    assert!(read_all(f, stored.digest).await == bytes, "whole read differs");
    assert_eq!(
        f.store.verify(stored.digest).await.expect("verify"),
        Verified::Ok { size: stored.size }
    );
}

async fn assert_nothing_stored(f: &Fixture, digests: &[Sha256Digest]) {
    for d in digests {
        assert_eq!(f.store.stat(*d).await.expect("stat"), None, "{d} was stored");
    }
    assert_eq!(f.files("sha256"), Vec::<String>::new(), "blobs were stored");
    f.assert_no_leftovers().await;
}

fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut b = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut b).expect("read");
    b[0] ^= 0x5a;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&b).expect("write");
    file.sync_all().expect("sync");
}

/// Put, stat, whole and ranged reads, verify; unknown digests and bad ranges.
pub async fn round_trip(f: &Fixture) {
    let bytes = data(2 * CHUNK as usize + 12_345, 1);
    let stored = f.store.put(body(&bytes, 64 * 1024), opts()).await.expect("put");
    assert_stored(f, &bytes, stored).await;
    let len = bytes.len() as u64;
    for (a, z) in ranges(len) {
        let got = read_range(f, stored.digest, a, z).await;
        assert!(got == bytes[a as usize..=z as usize], "range {a}-{z} differs");
    }
    for (a, z) in [(0, len), (len, len), (10, 9)] {
        assert!(
            matches!(
                f.store.get(stored.digest, Some((a, z))).await,
                Err(BlobError::Range { .. })
            ),
            "range {a}-{z} accepted"
        );
    }
    // Small and empty blobs, with their digest announced.
    for small in [b"weights".to_vec(), Vec::new()] {
        let s = f
            .store
            .put(body(&small, 3), announced(&small))
            .await
            .expect("put small");
        assert_stored(f, &small, s).await;
    }
    let unknown = Sha256Digest::of(b"never stored");
    assert_eq!(f.store.stat(unknown).await.expect("stat"), None);
    assert!(matches!(
        f.store.get(unknown, None).await,
        Err(BlobError::NotFound(d)) if d == unknown
    ));
    assert_eq!(f.store.verify(unknown).await.expect("verify"), Verified::Missing);
    f.assert_no_leftovers().await;
}

/// An upload whose bytes do not hash to the announced digest stores nothing, small or large.
pub async fn digest_mismatch_stores_nothing(f: &Fixture) {
    let wrong = Sha256Digest::of(b"something else");
    for len in [100, f.part_size * 2 + 17] {
        let bytes = data(len, 2);
        let r = f
            .store
            .put(
                body(&bytes, 256 * 1024),
                PutOptions {
                    expected_digest: Some(wrong),
                    ..opts()
                },
            )
            .await;
        assert!(
            matches!(r, Err(BlobError::DigestMismatch { expected, actual })
                if expected == wrong && actual == Sha256Digest::of(&bytes)),
            "{len} bytes: {r:?}"
        );
        assert_nothing_stored(f, &[wrong, Sha256Digest::of(&bytes)]).await;
    }
}

/// An upload that ends early or whose client fails mid-way stores nothing.
pub async fn incomplete_upload_stores_nothing(f: &Fixture) {
    let bytes = data(f.part_size * 2 + 5, 3);
    let r = f
        .store
        .put(
            body(&bytes, 1 << 20),
            PutOptions {
                expected_size: Some(bytes.len() as u64 + 1),
                ..opts()
            },
        )
        .await;
    assert!(
        matches!(r, Err(BlobError::Incomplete { received, expected })
            if received == bytes.len() as u64 && expected == received + 1),
        "{r:?}"
    );
    // The client fails only once the upload is visibly under way (a temporary file, or a
    // multipart upload on S3), so the clean-up of a real partial upload is what is checked.
    let (fail, failed) = tokio::sync::oneshot::channel::<()>();
    let parts: Vec<Result<Bytes, BoxError>> = bytes
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let tail = futures_util::stream::once(async move {
        let _ = failed.await;
        Err::<Bytes, BoxError>("connection reset by peer".into())
    });
    let stream: ByteStream<BoxError> = Box::pin(futures_util::stream::iter(parts).chain(tail));
    let store = std::sync::Arc::clone(&f.store);
    let put = tokio::spawn(async move { store.put(stream, opts()).await });
    f.wait_for_upload_in_progress().await;
    let _ = fail.send(());
    let r = put.await.expect("task");
    assert!(
        matches!(r, Err(BlobError::Client(ref m)) if m.contains("connection reset")),
        "{r:?}"
    );
    assert_nothing_stored(f, &[Sha256Digest::of(&bytes)]).await;
}

/// More bytes than the limit, or than announced, are refused and nothing is stored.
pub async fn too_large_stores_nothing(f: &Fixture) {
    let bytes = data(f.part_size + 4096, 4);
    let limit = f.part_size as u64 + 1;
    let r = f
        .store
        .put(
            body(&bytes, 1 << 20),
            PutOptions {
                max_size: limit,
                ..opts()
            },
        )
        .await;
    assert!(
        matches!(r, Err(BlobError::TooLarge { limit: l }) if l == limit),
        "{r:?}"
    );
    let r = f
        .store
        .put(
            body(&bytes, 1 << 20),
            PutOptions {
                expected_size: Some(10),
                ..opts()
            },
        )
        .await;
    assert!(matches!(r, Err(BlobError::Client(_))), "{r:?}");
    assert_nothing_stored(f, &[Sha256Digest::of(&bytes)]).await;
}

/// Uploads larger than a part (split into parts on S3), with and without an announced digest,
/// read back whole and by ranges.
pub async fn multipart_sized_upload(f: &Fixture) {
    let bytes = data(f.part_size * 5 / 2 + 333, 5);
    let stored = f
        .store
        .put(body(&bytes, 300_000), announced(&bytes))
        .await
        .expect("put announced");
    assert_stored(f, &bytes, stored).await;
    for (a, z) in ranges(bytes.len() as u64) {
        let got = read_range(f, stored.digest, a, z).await;
        assert!(got == bytes[a as usize..=z as usize], "range {a}-{z} differs");
    }
    let other = data(f.part_size * 2 + 1, 6);
    let stored = f
        .store
        .put(body(&other, 1 << 20), opts())
        .await
        .expect("put unannounced");
    assert_stored(f, &other, stored).await;
    f.assert_no_leftovers().await;
    assert_eq!(f.files("sha256").len(), 2);
}

/// Bytes damaged in storage are never served as good data: a whole read fails before its end,
/// a range read of a damaged chunk fails, the object is quarantined, and uploading the bytes
/// again repairs the blob.
pub async fn corrupted_object_is_detected_and_quarantined(f: &Fixture) {
    let bytes = data(2 * CHUNK as usize + 999, 7);
    let d = f
        .store
        .put(body(&bytes, 1 << 20), announced(&bytes))
        .await
        .expect("put")
        .digest;

    // Whole read.
    flip_byte(&f.blob_file(&d), CHUNK + 7);
    let (_, mut s) = f.store.get(d, None).await.expect("get");
    let (mut received, mut failed) = (0usize, None);
    while let Some(p) = s.next().await {
        match p {
            Ok(p) => received += p.len(),
            Err(e) => failed = Some(e),
        }
    }
    assert!(
        matches!(failed, Some(BlobError::Corrupt(x)) if x == d),
        "{failed:?}"
    );
    assert!(received < bytes.len(), "the corrupt blob was served whole");
    assert_eq!(f.store.stat(d).await.expect("stat"), None, "not quarantined");
    assert_eq!(f.files("quarantine").len(), 1);
    assert!(matches!(f.store.get(d, None).await, Err(BlobError::NotFound(_))));

    // Re-upload repairs; a range read of an intact chunk still works, a damaged one fails.
    let again = f.store.put(body(&bytes, 1 << 20), opts()).await.expect("re-put");
    assert_stored(f, &bytes, again).await;
    flip_byte(&f.blob_file(&d), 2 * CHUNK + 5);
    assert!(read_range(f, d, 10, 20).await == bytes[10..=20]);
    let (_, s) = f
        .store
        .get(d, Some((2 * CHUNK, 2 * CHUNK + 10)))
        .await
        .expect("get range");
    assert!(matches!(collect(s).await, Err(BlobError::Corrupt(_))));
    assert_eq!(f.store.stat(d).await.expect("stat"), None);
    assert_eq!(f.files("quarantine").len(), 2);

    // Verify reports damage (here: a truncated object) and quarantines it.
    f.store.put(body(&bytes, 1 << 20), opts()).await.expect("re-put");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(f.blob_file(&d))
        .expect("open");
    file.set_len(CHUNK).expect("truncate");
    drop(file);
    assert_eq!(f.store.verify(d).await.expect("verify"), Verified::Corrupt);
    assert_eq!(f.store.verify(d).await.expect("verify"), Verified::Missing);
    assert_eq!(f.files("quarantine").len(), 3);
}

/// Several uploads of the same bytes at once all succeed and leave one good blob.
pub async fn concurrent_puts_of_the_same_bytes(f: &Fixture) {
    let bytes = std::sync::Arc::new(data(f.part_size + CHUNK as usize, 8));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = std::sync::Arc::clone(&f.store);
        let bytes = std::sync::Arc::clone(&bytes);
        tasks.push(tokio::spawn(async move {
            let o = if i % 2 == 0 { announced(&bytes) } else { opts() };
            store.put(body(&bytes, 200_000 + i * 1000), o).await
        }));
    }
    for t in tasks {
        let stored = t.await.expect("task").expect("put");
        assert_eq!(stored.digest, Sha256Digest::of(&bytes));
    }
    let d = Sha256Digest::of(&bytes);
    assert_stored(
        f,
        &bytes,
        StoredBlob {
            digest: d,
            size: bytes.len() as u64,
        },
    )
    .await;
    assert_eq!(f.files("sha256").len(), 1);
    f.assert_no_leftovers().await;
}

/// Listing pages in digest order; `touch` and `delete_if_untouched` follow the cutoff.
pub async fn list_touch_and_delete_if_untouched(f: &Fixture) {
    let mut blobs = Vec::new();
    for i in 0..5u8 {
        let bytes = vec![i; usize::from(i) + 1];
        let d = f.store.put(body(&bytes, 1), opts()).await.expect("put").digest;
        blobs.push((d, bytes));
    }
    blobs.sort();
    let digests: Vec<Sha256Digest> = blobs.iter().map(|b| b.0).collect();
    // Strays that are not blobs are never listed.
    std::fs::write(f.root().join("sha256").join("README"), b"x").expect("stray");
    std::fs::create_dir_all(f.root().join("sha256").join("zz")).expect("stray dir");
    std::fs::write(f.root().join("sha256").join("zz").join("zz"), b"x").expect("stray");

    let all = f.store.list(None, 100).await.expect("list");
    assert_eq!(all.iter().map(|e| e.digest).collect::<Vec<_>>(), digests);
    assert!(all.iter().all(|e| (1..=5).contains(&e.size)));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = f.store.list(after, 2).await.expect("list page");
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        after = Some(last.digest);
        paged.extend(page.iter().map(|e| e.digest));
    }
    assert_eq!(paged, digests);
    assert!(f.store.list(None, 0).await.expect("list").is_empty());

    // Written just now: kept by an earlier cutoff.
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert!(!f.store.delete_if_untouched(digests[0], past).await.expect("gc"));

    // A touch moves the touched time forward. S3 keeps whole seconds (and the store rounds
    // them up), so the cutoff sits a second before the touch and well after the writes.
    let before = f.store.list(None, 1).await.expect("list")[0].touched;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let cutoff = SystemTime::now() - Duration::from_secs(1);
    assert!(before < cutoff, "the blob was written before the cutoff");
    assert!(f.store.touch(digests[0]).await.expect("touch"));
    let after_touch = f.store.list(None, 1).await.expect("list")[0].touched;
    assert!(
        after_touch > before && after_touch >= cutoff,
        "before {before:?}, cutoff {cutoff:?}, after the touch {after_touch:?}"
    );
    assert!(!f.store.delete_if_untouched(digests[0], cutoff).await.expect("gc"));

    // Untouched since a later cutoff: removed, and gone for every operation.
    let later = SystemTime::now() + Duration::from_secs(3);
    assert!(f.store.delete_if_untouched(digests[0], later).await.expect("gc"));
    assert_eq!(f.store.stat(digests[0]).await.expect("stat"), None);
    assert!(!f.store.touch(digests[0]).await.expect("touch"));
    assert!(!f.store.delete_if_untouched(digests[0], later).await.expect("gc"));
    assert_eq!(f.store.list(None, 100).await.expect("list").len(), 4);
    assert!(matches!(
        f.store.get(digests[0], None).await,
        Err(BlobError::NotFound(_))
    ));

    // Storing it again brings it back.
    f.store
        .put(body(&blobs[0].1, 1), opts())
        .await
        .expect("put again");
    assert_eq!(f.store.list(None, 100).await.expect("list").len(), 5);
}
