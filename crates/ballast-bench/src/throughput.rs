//! Artifact throughput: a file of pseudo-random bytes is copied and hashed with `cp` and
//! `sha256sum` (the baseline), then uploaded to the server (streamed from the file, with the
//! digest precomputed) and downloaded again (streamed into a file, hashed while receiving).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::rss::{RssPeak, RssSampler};

/// Read and write buffer size of the client side.
const CHUNK: usize = 1 << 20;

/// Longest a transfer of `bytes` may take: a floor of 2 minutes, or 10 MB/s.
fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(120.max(bytes / 10_000_000))
}

/// How often memory is sampled during transfers.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// Throughput of a transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    /// Seconds taken.
    pub secs: f64,
    /// Bytes per second, in MB/s (10^6 bytes).
    pub mb_per_sec: f64,
}

impl Timed {
    fn new(bytes: u64, took: Duration) -> Self {
        let secs = took.as_secs_f64().max(1e-9);
        #[allow(clippy::cast_precision_loss)]
        let mb_per_sec = bytes as f64 / 1e6 / secs;
        Self { secs, mb_per_sec }
    }
}

/// The `cp` + `sha256sum` baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// `cp FILE COPY` alone.
    pub cp: Timed,
    /// `sha256sum COPY` alone.
    pub sha256sum: Timed,
    /// Both, one after the other: the reference the upload is compared with.
    pub cp_then_sha256sum: Timed,
    /// `sync` after the `cp` (informational: the server fsyncs every blob, `cp` does not).
    pub sync_after_cp: Timed,
    /// `cp` + `sync` + `sha256sum` (informational, a durable baseline).
    pub cp_sync_sha256sum: Timed,
}

/// One transfer through the server.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    /// Time and rate.
    #[serde(flatten)]
    pub timed: Timed,
    /// Rate relative to the `cp` + `sha256sum` baseline.
    pub ratio_to_baseline: f64,
    /// Peak `VmRSS` of the whole process (server and load generator) while it ran.
    pub rss: RssPeak,
    /// Whether the digest checked out (the server's for uploads, ours for downloads).
    pub digest_ok: bool,
    /// CPU seconds of this process's thread groups during the transfer.
    pub cpu_secs: BTreeMap<String, f64>,
}

/// What the throughput phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Artifact size in bytes.
    pub bytes: u64,
    /// Its SHA-256.
    pub sha256: String,
    /// Reference figures.
    pub baseline: Baseline,
    /// `PUT …/files/model.bin`, from the start of the request to the server's 201 (which comes
    /// after the blob is fsynced and recorded).
    pub upload: Transfer,
    /// `GET …/files/model.bin` into a file, hashed while receiving.
    pub download: Transfer,
    /// `VmRSS` right before the upload started, bytes.
    pub rss_before_upload_bytes: u64,
    /// How to read the RSS figures.
    pub rss_note: &'static str,
}

/// Writes `bytes` pseudo-random bytes to `path` and returns their SHA-256 in hex.
fn write_random_file(path: &Path, bytes: u64) -> anyhow::Result<String> {
    let mut f = std::io::BufWriter::with_capacity(CHUNK, std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        let n = usize::try_from(left.min(CHUNK as u64))?;
        f.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    f.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}

fn timed_command(program: &str, args: &[&Path]) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "{program} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn baseline(file: &Path, copy: &Path, bytes: u64, sha256: &str) -> anyhow::Result<Baseline> {
    let (cp, _) = timed_command("cp", &[file, copy])?;
    let (sync, _) = timed_command("sync", &[])?;
    let (sum, out) = timed_command("sha256sum", &[copy])?;
    ensure!(
        out.split_whitespace().next() == Some(sha256),
        "sha256sum of the copy disagrees with the generator: {out}"
    );
    std::fs::remove_file(copy)?;
    Ok(Baseline {
        cp: Timed::new(bytes, cp),
        sha256sum: Timed::new(bytes, sum),
        cp_then_sha256sum: Timed::new(bytes, cp + sum),
        sync_after_cp: Timed::new(bytes, sync),
        cp_sync_sha256sum: Timed::new(bytes, cp + sync + sum),
    })
}

async fn upload(
    http: &reqwest::Client,
    url: &str,
    file: &Path,
    bytes: u64,
    sha256: &str,
) -> anyhow::Result<Duration> {
    let f = tokio::fs::File::open(file).await?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, CHUNK));
    let started = Instant::now();
    let resp = http
        .put(url)
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes)
        .header("x-ballast-sha256", sha256)
        .body(body)
        .timeout(transfer_timeout(bytes))
        .send()
        .await?;
    let status = resp.status();
    let answer = resp.bytes().await?;
    let took = started.elapsed();
    if status != reqwest::StatusCode::CREATED {
        bail!("upload answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    let entry: ballast_api::FileEntry = serde_json::from_slice(&answer)?;
    ensure!(
        entry.size == bytes && entry.sha256 == sha256,
        "the server recorded {entry:?}"
    );
    Ok(took)
}

/// Streams `url` into the file `into`. The async side only receives; a writer thread hashes
/// each piece and writes it as it arrives, so hashing overlaps with receiving.
/// Returns the time taken, the bytes and digest received, and the writer thread's CPU seconds.
async fn download(
    http: &reqwest::Client,
    url: &str,
    into: &Path,
    expected: u64,
) -> anyhow::Result<(Duration, u64, String, f64)> {
    let started = Instant::now();
    let resp = http.get(url).timeout(transfer_timeout(expected)).send().await?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "download answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let out = std::fs::File::create(into)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
    let writer = std::thread::Builder::new().name("download-writer".into()).spawn(
        move || -> std::io::Result<(u64, String, f64)> {
            let mut out = std::io::BufWriter::with_capacity(CHUNK, out);
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            while let Some(piece) = rx.blocking_recv() {
                hasher.update(&piece);
                out.write_all(&piece)?;
                got += piece.len() as u64;
            }
            out.flush()?;
            let sha = hex::encode(hasher.finalize());
            Ok((got, sha, crate::cpu::this_thread_secs().unwrap_or(0.0)))
        },
    )?;
    let mut body = resp.bytes_stream();
    let mut received = Ok(());
    while let Some(piece) = body.next().await {
        match piece {
            Ok(piece) => {
                if tx.send(piece).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                received = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the download writer panicked"))?;
    received?;
    let (got, sha, writer_cpu) = written?;
    Ok((started.elapsed(), got, sha, writer_cpu))
}

/// Runs the throughput phase. `files_url` is the `…/versions/{n}/files` URL of a draft.
pub async fn run(
    http: &reqwest::Client,
    files_url: &str,
    dir: &Path,
    bytes: u64,
) -> anyhow::Result<Throughput> {
    let file: PathBuf = dir.join("artifact.bin");
    let copy = dir.join("artifact.copy");
    let fetched = dir.join("artifact.download");
    let sha256 = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || write_random_file(&file, bytes)).await??
    };
    let baseline = {
        let (file, copy, sha) = (file.clone(), copy.clone(), sha256.clone());
        tokio::task::spawn_blocking(move || baseline(&file, &copy, bytes, &sha)).await??
    };
    // Start the upload with no dirty pages of the baseline left to write back.
    tokio::task::spawn_blocking(|| timed_command("sync", &[])).await??;
    let reference = baseline.cp_then_sha256sum.mb_per_sec;

    let url = format!("{files_url}/model.bin");
    let rss_before = crate::rss::current_rss_bytes().unwrap_or(0);
    let cpu = crate::cpu::Snapshot::take();
    let sampler = RssSampler::start(RSS_EVERY);
    let up = upload(http, &url, &file, bytes, &sha256).await;
    let up_rss = sampler.finish();
    let up_cpu = crate::cpu::Snapshot::take().since(&cpu);
    let up = up.context("upload")?;
    let up = Timed::new(bytes, up);

    let cpu = crate::cpu::Snapshot::take();
    let sampler = RssSampler::start(RSS_EVERY);
    let down = download(http, &url, &fetched, bytes).await;
    let down_rss = sampler.finish();
    let mut down_cpu = crate::cpu::Snapshot::take().since(&cpu);
    let (down, got, got_sha, writer_cpu) = down.context("download")?;
    down_cpu.insert("download writer (hash + write)".into(), writer_cpu);
    *down_cpu.entry("total".into()).or_default() += writer_cpu;
    let down_ok = got == bytes && got_sha == sha256;
    let _ = std::fs::remove_file(&fetched);
    let _ = std::fs::remove_file(&file);
    let down = Timed::new(bytes, down);
    Ok(Throughput {
        bytes,
        sha256,
        upload: Transfer {
            ratio_to_baseline: up.mb_per_sec / reference,
            timed: up,
            rss: up_rss,
            digest_ok: true,
            cpu_secs: up_cpu,
        },
        download: Transfer {
            ratio_to_baseline: down.mb_per_sec / reference,
            timed: down,
            rss: down_rss,
            digest_ok: down_ok,
            cpu_secs: down_cpu,
        },
        baseline,
        rss_before_upload_bytes: rss_before,
        rss_note: "VmRSS of the benchmark process: the in-process server plus the load generator",
    })
}
