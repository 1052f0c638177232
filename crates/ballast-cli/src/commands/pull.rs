//! `ballast pull REF DIR`: download a version's files into a hidden staging directory next to
//! DIR, verifying each file's size and SHA-256 while it streams (resuming a broken transfer with
//! `Range`), fsync everything, then rename the staging directory to DIR in one step.
//!
//! A failed or interrupted pull removes the staging directory: DIR is either untouched or
//! complete. With `--force` an existing DIR is renamed aside first and removed only once the new
//! one is in place.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use ballast_api::Version;
use ballast_client::{ByteRange, Client, ClientError};
use ballast_core::{validate_artifact_path, Manifest, ManifestEntry, ModelName, Sha256Digest};
use futures_util::{stream, StreamExt as _, TryStreamExt as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use super::Ctx;
use crate::cli::PullArgs;
use crate::output::{self, Interrupted};
use crate::progress::{FileProgress, Progress};
use crate::tree;

/// Attempts per file before giving up on a broken connection.
const MAX_ATTEMPTS: u32 = 4;

/// A transfer that receives nothing for this long is treated as broken and resumed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct PullReport {
    model: String,
    version: u64,
    digest: Option<String>,
    dir: String,
    files: usize,
    total_size: u64,
}

/// A staging directory removed on drop unless kept.
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What is at the destination now.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// Nothing.
    Missing,
    /// An empty directory (replaced by the rename itself).
    EmptyDir,
    /// Something that only `--force` replaces.
    Occupied,
}

fn destination(dest: &Path) -> anyhow::Result<Destination> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Destination::Missing),
        Err(e) => Err(anyhow!(e).context(format!("cannot inspect {}", dest.display()))),
        Ok(m) if m.is_dir() => {
            let mut entries =
                std::fs::read_dir(dest).with_context(|| format!("cannot list {}", dest.display()))?;
            Ok(if entries.next().is_none() {
                Destination::EmptyDir
            } else {
                Destination::Occupied
            })
        }
        Ok(_) => Ok(Destination::Occupied),
    }
}

fn occupied(dest: &Path) -> anyhow::Error {
    anyhow!(
        "{} already exists and is not an empty directory; pull into a new directory, or pass --force to replace it",
        dest.display()
    )
}

/// The parent directory and the last component of `dest`.
fn split_destination(dest: &Path) -> anyhow::Result<(PathBuf, String)> {
    let base = dest
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{} must end in a directory name (not '.', '..' or '/')",
                dest.display()
            )
        })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, base.to_owned()))
}

/// Checks what the registry listed before anything is written: safe, unique paths, no path
/// that is both a file and a directory, parseable digests, and a manifest that hashes to the
/// version digest.
fn check_manifest(
    version: &Version,
    files: &[ballast_api::FileEntry],
    digest: Option<&str>,
) -> anyhow::Result<Vec<ManifestEntry>> {
    let mut seen = BTreeSet::new();
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        validate_artifact_path(&f.path)
            .map_err(|e| anyhow!("the registry listed an unsafe file path: {}", e.message))?;
        if !seen.insert(f.path.as_str()) {
            bail!("the registry listed {:?} twice", f.path);
        }
        let sha256: Sha256Digest = f
            .sha256
            .parse()
            .map_err(|e: ballast_core::ValidationError| anyhow!("{}: {}", f.path, e.message))?;
        entries.push(ManifestEntry {
            path: f.path.clone(),
            size: f.size,
            sha256,
            media_type: f.media_type.clone(),
        });
    }
    if let Some(dir) = tree::parent_dirs(seen.iter().copied())
        .into_iter()
        .find(|d| seen.contains(d.as_str()))
    {
        bail!("the registry listed {dir:?} both as a file and as a directory");
    }
    let manifest = Manifest::new(entries);
    for claimed in [digest, version.digest.as_deref()].into_iter().flatten() {
        let actual = manifest.digest().to_hex();
        if actual != claimed {
            bail!(
                "the manifest of {}/{} hashes to {actual}, not to its digest {claimed}; the registry's metadata is inconsistent",
                version.model,
                version.version
            );
        }
    }
    Ok(manifest.files)
}

/// Runs `ballast pull`.
///
/// # Errors
/// An unresolvable reference, an occupied destination, a file that fails verification
/// (naming it), or a transport error.
pub async fn run(ctx: &Ctx, args: PullArgs) -> anyhow::Result<()> {
    let dest = args.dir.clone();
    let (parent, base) = split_destination(&dest)?;
    if destination(&dest)? == Destination::Occupied && !args.force {
        return Err(occupied(&dest));
    }
    let name = args.reference.model.clone();
    let version = args
        .reference
        .resolve(&ctx.client)
        .await
        .with_context(|| format!("resolving {}", args.reference))?;
    let manifest = ctx.client.manifest(&name, version.version).await?;
    let files = check_manifest(&version, &manifest.files, manifest.digest.as_deref())?;
    if version.digest.is_none() {
        eprintln!(
            "warning: {}/{} is an unsealed draft: its files may still change",
            version.model, version.version
        );
    }

    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging_path = parent.join(format!(".{base}.ballast-pull-{:08x}", rand::random::<u32>()));
    std::fs::create_dir(&staging_path)
        .with_context(|| format!("cannot create the staging directory {}", staging_path.display()))?;
    let mut staging = Staging {
        path: staging_path,
        keep: false,
    };
    let dirs = tree::parent_dirs(files.iter().map(|f| f.path.as_str()));
    for d in &dirs {
        let p = staging.path.join(d);
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
    }

    let total: u64 = files.iter().map(|f| f.size).sum();
    let progress = Progress::new("downloading", total);
    let work = download_all(
        &ctx.client,
        &name,
        version.version,
        &files,
        &staging.path,
        args.parallel,
        &progress,
    );
    let result = tokio::select! {
        r = work => r,
        () = crate::signals::interrupted() => Err(Interrupted.into()),
    };
    progress.finish();
    result?;

    let root = staging.path.clone();
    let dir_list: Vec<PathBuf> = dirs
        .iter()
        .rev()
        .map(|d| root.join(d))
        .chain([root.clone()])
        .collect();
    tokio::task::spawn_blocking(move || {
        for d in &dir_list {
            sync_dir(d)?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    install(&staging.path, &dest, &parent, args.force)?;
    staging.keep = true;

    let report = PullReport {
        model: version.model.clone(),
        version: version.version,
        digest: version.digest.clone(),
        dir: std::fs::canonicalize(&dest).unwrap_or(dest).display().to_string(),
        files: files.len(),
        total_size: total,
    };
    if ctx.json {
        output::json(&report)?;
    } else {
        outln!(
            "pulled {}/{} ({} files, {}) into {}",
            report.model,
            report.version,
            report.files,
            output::size(report.total_size),
            report.dir
        );
        if let Some(d) = &report.digest {
            outln!("digest: {d}");
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot flush {} to disk", dir.display()))
}

/// Moves the staging directory to `dest` in one rename; with `force`, an occupied `dest` is
/// renamed aside first, put back if the swap fails, and removed after it succeeds.
fn install(staging: &Path, dest: &Path, parent: &Path, force: bool) -> anyhow::Result<()> {
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
    };
    match destination(dest)? {
        // rename(2) replaces an empty directory atomically.
        Destination::Missing | Destination::EmptyDir => rename(staging, dest)?,
        Destination::Occupied if !force => return Err(occupied(dest)),
        Destination::Occupied => {
            let base = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = parent.join(format!(".{base}.ballast-old-{:08x}", rand::random::<u32>()));
            rename(dest, &aside)?;
            if let Err(e) = rename(staging, dest) {
                let _ = std::fs::rename(&aside, dest);
                return Err(e);
            }
            let removed = if std::fs::symlink_metadata(&aside).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&aside)
            } else {
                std::fs::remove_file(&aside)
            };
            if let Err(e) = removed {
                eprintln!(
                    "warning: the previous {} was moved to {} but could not be removed: {e}",
                    dest.display(),
                    aside.display()
                );
            }
        }
    }
    sync_dir(parent)
}

/// Downloads every file, `parallel` at a time; the first failure stops the rest.
async fn download_all(
    client: &Client,
    name: &ModelName,
    number: u64,
    files: &[ManifestEntry],
    root: &Path,
    parallel: NonZeroUsize,
    progress: &Progress,
) -> anyhow::Result<()> {
    stream::iter(files)
        .map(|f| async move {
            let bar = progress.file(&f.path, f.size);
            fetch(client, name, number, f, &root.join(&f.path), &bar)
                .await
                .with_context(|| format!("downloading {}", f.path))
        })
        .buffer_unordered(parallel.get())
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// Why one attempt at a file failed.
enum AttemptError {
    /// The connection broke: try again from where it stopped.
    Retry(ClientError),
    /// Anything else.
    Fatal(anyhow::Error),
}

fn classify(e: ClientError) -> AttemptError {
    if e.is_retryable() {
        AttemptError::Retry(e)
    } else {
        AttemptError::Fatal(e.into())
    }
}

/// The state of one file's download across attempts.
struct Transfer<'a> {
    file: tokio::fs::File,
    hasher: Sha256,
    written: u64,
    entry: &'a ManifestEntry,
    dest: &'a Path,
    bar: &'a FileProgress,
}

impl Transfer<'_> {
    async fn restart(&mut self) -> Result<(), AttemptError> {
        let io = |e: std::io::Error| AttemptError::Fatal(anyhow!(e).context("cannot rewrite the file"));
        self.file.set_len(0).await.map_err(io)?;
        self.file.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
        self.hasher = Sha256::new();
        self.written = 0;
        self.bar.set(0);
        Ok(())
    }

    async fn attempt(&mut self, client: &Client, name: &ModelName, number: u64) -> Result<(), AttemptError> {
        let range = (self.written > 0).then(|| ByteRange::from(self.written));
        let mut dl = client
            .download_file(name, number, &self.entry.path, range)
            .await
            .map_err(classify)?;
        if range.is_some() && !dl.partial {
            self.restart().await?;
        }
        if let Some(served) = dl.sha256.as_deref() {
            if served != self.entry.sha256.to_hex() {
                return Err(AttemptError::Fatal(anyhow!(
                    "the registry serves SHA-256 {served}, but the manifest says {}",
                    self.entry.sha256
                )));
            }
        }
        loop {
            let next = tokio::time::timeout(IDLE_TIMEOUT, dl.next()).await.map_err(|_| {
                AttemptError::Retry(ClientError::Transport {
                    method: "GET".into(),
                    url: self.entry.path.clone(),
                    cause: format!("no data received for {} s", IDLE_TIMEOUT.as_secs()),
                })
            })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(classify)?;
            self.written += chunk.len() as u64;
            if self.written > self.entry.size {
                return Err(AttemptError::Fatal(anyhow!(
                    "the registry sent more than the {} bytes the manifest lists",
                    self.entry.size
                )));
            }
            self.hasher.update(&chunk);
            self.file.write_all(&chunk).await.map_err(|e| {
                AttemptError::Fatal(anyhow!(e).context(format!("cannot write {}", self.dest.display())))
            })?;
            self.bar.set(self.written);
        }
        Ok(())
    }
}

/// Downloads one file to `dest`, resuming after a broken connection, and checks its size and
/// SHA-256 before flushing it to disk.
async fn fetch(
    client: &Client,
    name: &ModelName,
    number: u64,
    entry: &ManifestEntry,
    dest: &Path,
    bar: &FileProgress,
) -> anyhow::Result<()> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let mut t = Transfer {
        file,
        hasher: Sha256::new(),
        written: 0,
        entry,
        dest,
        bar,
    };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        if attempt > 1 && t.written == entry.size {
            break;
        }
        match t.attempt(client, name, number).await {
            Ok(()) => break,
            Err(AttemptError::Retry(e)) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(path = %entry.path, attempt, error = %e, "download interrupted; resuming");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            Err(AttemptError::Retry(e)) => return Err(e.into()),
            Err(AttemptError::Fatal(e)) => return Err(e),
        }
    }
    if t.written != entry.size {
        bail!(
            "received {} bytes, but the manifest lists {}; the download was discarded",
            t.written,
            entry.size
        );
    }
    let got = Sha256Digest::from_bytes(t.hasher.finalize().into());
    if got != entry.sha256 {
        bail!(
            "the bytes received have SHA-256 {got}, but the manifest says {}; the download was discarded",
            entry.sha256
        );
    }
    t.file
        .flush()
        .await
        .with_context(|| format!("cannot write {}", dest.display()))?;
    t.file
        .sync_all()
        .await
        .with_context(|| format!("cannot flush {} to disk", dest.display()))?;
    bar.done(entry.size);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn destinations_are_classified() {
        let d = tmp();
        assert_eq!(destination(&d.path().join("x")).ok(), Some(Destination::Missing));
        assert_eq!(destination(d.path()).ok(), Some(Destination::EmptyDir));
        std::fs::write(d.path().join("f"), b"").unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(destination(d.path()).ok(), Some(Destination::Occupied));
        assert_eq!(destination(&d.path().join("f")).ok(), Some(Destination::Occupied));
    }

    #[test]
    fn destination_must_name_a_directory() {
        assert!(split_destination(Path::new(".")).is_err());
        assert!(split_destination(Path::new("a/..")).is_err());
        assert!(split_destination(Path::new("/")).is_err());
        let (p, b) = split_destination(Path::new("model")).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((p, b.as_str()), (PathBuf::from("."), "model"));
        let (p, b) = split_destination(Path::new("out/model/")).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((p, b.as_str()), (PathBuf::from("out"), "model"));
    }

    fn staged(parent: &Path, content: &str) -> PathBuf {
        let s = parent.join(".staging");
        std::fs::create_dir_all(s.join("sub")).unwrap_or_else(|e| unreachable!("{e}"));
        std::fs::write(s.join("sub/f"), content).unwrap_or_else(|e| unreachable!("{e}"));
        s
    }

    #[test]
    fn install_renames_into_place_and_force_replaces() {
        let d = tmp();
        let dest = d.path().join("model");
        install(&staged(d.path(), "one"), &dest, d.path(), false).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(
            std::fs::read_to_string(dest.join("sub/f")).ok().as_deref(),
            Some("one")
        );

        let err = install(&staged(d.path(), "two"), &dest, d.path(), false).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("--force"));
        assert_eq!(
            std::fs::read_to_string(dest.join("sub/f")).ok().as_deref(),
            Some("one")
        );

        install(&staged(d.path(), "two"), &dest, d.path(), true).unwrap_or_else(|e| unreachable!("{e:#}"));
        assert_eq!(
            std::fs::read_to_string(dest.join("sub/f")).ok().as_deref(),
            Some("two")
        );
        let names: Vec<String> = std::fs::read_dir(d.path())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names, ["model"], "no staging or old directory is left behind");
    }

    #[test]
    fn staging_is_removed_unless_kept() {
        let d = tmp();
        let p = staged(d.path(), "x");
        drop(Staging {
            path: p.clone(),
            keep: false,
        });
        assert!(!p.exists());
        let p = staged(d.path(), "x");
        drop(Staging {
            path: p.clone(),
            keep: true,
        });
        assert!(p.exists());
    }

    fn version(digest: Option<String>) -> Version {
        serde_json::from_value(serde_json::json!({
            "model": "acme/bot", "version": 1, "state": "sealed", "stage": "development",
            "metadata": {}, "tags": {}, "files": [], "total_size": 0, "digest": digest,
            "aliases": [], "created_by": "a", "created_at": "t", "stage_changed_at": "t", "revision": 1
        }))
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn entry(path: &str, data: &[u8]) -> ballast_api::FileEntry {
        ballast_api::FileEntry {
            path: path.into(),
            size: data.len() as u64,
            sha256: Sha256Digest::of(data).to_hex(),
            media_type: None,
        }
    }

    #[test]
    fn manifests_are_checked_before_writing() {
        let files = vec![entry("b", b"1"), entry("a/c", b"22")];
        let digest = Manifest::new(check_manifest(&version(None), &files, None).unwrap_or_default())
            .digest()
            .to_hex();
        assert!(check_manifest(&version(Some(digest.clone())), &files, Some(&digest)).is_ok());
        let wrong = Sha256Digest::of(b"x").to_hex();
        assert!(check_manifest(&version(None), &files, Some(&wrong)).is_err());
        for bad in [
            vec![entry("../x", b"")],
            vec![entry("a", b""), entry("a", b"")],
            vec![entry("a", b""), entry("a/b", b"")],
        ] {
            assert!(check_manifest(&version(None), &bad, None).is_err());
        }
    }
}
