//! One blob store per test, on local disk or on a throwaway S3-compatible server, plus direct
//! access to the bytes it stores (both keep the same layout: `sha256/ab/…`, `chunks/`, `tmp/`,
//! `quarantine/`) so tests can damage them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_blob::{BlobStore, LocalBlobStore, S3BlobStore, S3Options, MIN_PART_SIZE};
use ballast_core::Sha256Digest;

use crate::s3s::{S3Server, ACCESS_KEY, SECRET_KEY};

/// A store under test and a window on its bytes.
pub struct Fixture {
    pub store: Arc<dyn BlobStore>,
    /// The directory that mirrors the store's keys.
    root: PathBuf,
    /// Uploads larger than this are split into parts (on S3).
    pub part_size: usize,
    s3: Option<S3Server>,
    _dir: Option<tempfile::TempDir>,
}

/// A store in a fresh temporary directory.
pub fn local() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalBlobStore::open(dir.path()).expect("open local store");
    Fixture {
        store: Arc::new(store),
        root: dir.path().to_owned(),
        part_size: MIN_PART_SIZE,
        s3: None,
        _dir: Some(dir),
    }
}

/// Settings that reach `server`'s bucket under `prefix`.
pub fn s3_options(server: &S3Server, prefix: &str) -> S3Options {
    S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        path_style: true,
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        part_size: MIN_PART_SIZE,
        request_timeout: Duration::from_secs(30),
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..S3Options::new(server.bucket.clone(), prefix)
    }
}

/// A store on a fresh S3-compatible server, or `None` (the test is skipped) when the server is
/// not installed outside CI.
pub async fn s3() -> Option<Fixture> {
    let server = S3Server::start("ballast-blobs")?;
    let prefix = "registry/blobs";
    let store = S3BlobStore::open(s3_options(&server, prefix))
        .await
        .expect("open S3 store");
    Some(Fixture {
        store: Arc::new(store),
        root: server.object_file(prefix),
        part_size: MIN_PART_SIZE,
        s3: Some(server),
        _dir: None,
    })
}

impl Fixture {
    /// The file holding the blob's bytes.
    pub fn blob_file(&self, d: &Sha256Digest) -> PathBuf {
        let hex = d.to_hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    /// The directory that mirrors the store's keys.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Files below `<root>/<sub>`, relative to it, sorted.
    pub fn files(&self, sub: &str) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.display().to_string());
                }
            }
        }
        let root = self.root.join(sub);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// Waits until an upload is visibly in progress (a temporary object, or on S3 a multipart
    /// upload).
    pub async fn wait_for_upload_in_progress(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pending = self
                .s3
                .as_ref()
                .map(S3Server::pending_uploads)
                .unwrap_or_default();
            if !pending.is_empty() || !self.files("tmp").is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "no upload in progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no upload is left half-done: no temporary object, and on S3 no multipart
    /// upload that was neither completed nor aborted.
    pub async fn assert_no_leftovers(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let tmp = self.files("tmp");
            let pending = self
                .s3
                .as_ref()
                .map(S3Server::pending_uploads)
                .unwrap_or_default();
            if tmp.is_empty() && pending.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "leftovers of failed uploads: tmp {tmp:?}, multipart {pending:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
