//! The `registry` benchmark: alias resolution, version creation and artifact throughput of a
//! server running in-process, against the project's targets.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use ballast_api::{Model, Version, VersionList};
use serde::Serialize;
use serde_json::json;

use crate::harness::InProcessServer;
use crate::load::{self, send_checked, LoadSummary, OpError};
use crate::machine::Machine;
use crate::mlflow::{self, MlflowReport};
use crate::rawhttp;
use crate::report::{self, Check};
use crate::throughput::{self, Throughput};
use crate::{HttpClient, RegistryArgs};

/// Alias resolutions per second the registry must sustain.
const TARGET_ALIAS_RPS: f64 = 20_000.0;
/// Version creations per second.
const TARGET_CREATES_PER_SEC: f64 = 1_000.0;
/// Upload rate as a share of `cp` + `sha256sum`, in percent.
const TARGET_UPLOAD_PCT: f64 = 70.0;
/// Peak resident memory during the upload, MB (10^6 bytes).
const TARGET_PEAK_RSS_MB: f64 = 100.0;

/// Settings the run used.
#[derive(Debug, Serialize)]
struct RunConfig {
    quick: bool,
    duration_secs: f64,
    warmup_secs: f64,
    concurrency: usize,
    upload_bytes: u64,
    server_threads: usize,
    client_threads: usize,
    http_client: HttpClient,
    request_timeout_secs: f64,
    /// Whether requests carried the admin token (the server had authentication on).
    authenticated: bool,
}

/// How version numbering held up under concurrent creates.
#[derive(Debug, Serialize)]
struct NumberingCheck {
    /// Creates answered 201, warm-up included.
    created_total: u64,
    /// The model's `latest_version` afterwards.
    latest_version: u64,
    /// Versions listed.
    listed: u64,
    /// Listed numbers are exactly 1..=latest_version.
    listed_contiguous: bool,
    /// Every number handed out in the measured window was distinct.
    answered_unique: bool,
    /// `latest_version` equals the creates answered 201 (expected when nothing failed).
    latest_matches_created: bool,
    /// All of the above.
    gap_free: bool,
}

#[derive(Debug, Serialize)]
struct VersionCreates {
    #[serde(flatten)]
    load: LoadSummary,
    numbering: NumberingCheck,
}

/// Everything the run measured.
#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    config: RunConfig,
    alias_get: LoadSummary,
    alias_resolve: LoadSummary,
    version_create: VersionCreates,
    throughput: Throughput,
    /// The same operations through the MLflow REST routes, next to their native figures.
    mlflow: MlflowReport,
    targets: Vec<Check>,
    all_targets_met: bool,
    loadavg_at_end: Option<String>,
    rss_after_phase: Vec<RssMark>,
    notes: Vec<String>,
    /// The same operations on PostgreSQL (and S3 when `s3s-fs` is installed), one node and two.
    scale_out: ScaleOutOutcome,
}

/// `VmRSS` of the process after a phase.
#[derive(Debug, Serialize)]
struct RssMark {
    after: &'static str,
    rss_bytes: u64,
}

impl RssMark {
    fn now(after: &'static str) -> Self {
        Self {
            after,
            rss_bytes: crate::rss::current_rss_bytes().unwrap_or(0),
        }
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    addr: std::net::SocketAddr,
    /// The admin token, sent as `Authorization: Bearer` (the reqwest client sends it itself).
    token: Option<String>,
}

impl Api {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let bytes = send_checked(self.http.post(self.url(path)).json(&body))
            .await
            .map_err(|e| anyhow::anyhow!("POST {path}: {e:?}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("POST {path}: unexpected answer"))
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let bytes = send_checked(self.http.get(self.url(path)))
            .await
            .map_err(|e| anyhow::anyhow!("GET {path}: {e:?}"))?;
        serde_json::from_slice(&bytes).with_context(|| format!("GET {path}: unexpected answer"))
    }

    async fn create_model(&self, name: &str) -> anyhow::Result<Model> {
        self.post(
            "/v1/models",
            json!({ "name": name, "description": "ballast-bench" }),
        )
        .await
    }

    async fn create_version(&self, model: &str) -> anyhow::Result<Version> {
        self.post(
            &format!("/v1/models/{model}/versions"),
            json!({ "metadata": { "description": "bench" } }),
        )
        .await
    }
}

/// A model with a sealed version 1 holding one small file, aliased `champion`.
async fn set_up_alias(api: &Api, model: &str) -> anyhow::Result<()> {
    api.create_model(model).await?;
    let v = api.create_version(model).await?;
    let n = v.version;
    let file = b"{\"weights\": [0.1, 0.2, 0.3]}\n".to_vec();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file));
    send_checked(
        api.http
            .put(api.url(&format!("/v1/models/{model}/versions/{n}/files/weights.json")))
            .header("x-ballast-sha256", sha)
            .header("content-type", "application/json")
            .body(file),
    )
    .await
    .map_err(|e| anyhow::anyhow!("upload of the alias fixture: {e:?}"))?;
    let sealed: Version = api
        .post(&format!("/v1/models/{model}/versions/{n}/seal"), json!({}))
        .await?;
    ensure!(
        sealed.digest.is_some(),
        "version {n} of {model} is not sealed after sealing"
    );
    send_checked(
        api.http
            .put(api.url(&format!("/v1/models/{model}/aliases/champion")))
            .json(&json!({ "version": n })),
    )
    .await
    .map_err(|e| anyhow::anyhow!("setting the alias: {e:?}"))?;
    Ok(())
}

/// Hammers one GET path, worker `w` on node `w % nodes.len()`.
async fn hammer_get(
    nodes: &[&Api],
    path: &str,
    args: &RegistryArgs,
    warmup: Duration,
) -> anyhow::Result<LoadSummary> {
    let label = if nodes.len() > 1 {
        format!("GET {path} ({} nodes)", nodes.len())
    } else {
        format!("GET {path}")
    };
    let (summary, _) = match args.http_client {
        HttpClient::Reqwest => {
            let urls = nodes
                .iter()
                .map(|api| reqwest::Url::parse(&api.url(path)))
                .collect::<Result<Vec<_>, _>>()?;
            let http = nodes[0].http.clone();
            load::run(&label, args.concurrency, warmup, args.duration(), move |w, _| {
                let req = http.get(urls[w % urls.len()].clone());
                async move { send_checked(req).await.map(drop) }
            })
            .await?
        }
        HttpClient::Raw => {
            let targets = raw_targets(nodes, args.concurrency, "GET", path, None);
            load::run(&label, args.concurrency, warmup, args.duration(), move |w, _| {
                let targets = targets.clone();
                async move {
                    let (pool, req) = &targets[w % targets.len()];
                    pool.send(w, req).await.map(drop)
                }
            })
            .await?
        }
    };
    Ok(summary)
}

/// One raw connection pool and pre-encoded request per node.
fn raw_targets(
    nodes: &[&Api],
    concurrency: usize,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Arc<Vec<(rawhttp::Pool, rawhttp::RawRequest)>> {
    Arc::new(
        nodes
            .iter()
            .map(|api| {
                (
                    rawhttp::Pool::new(api.addr, concurrency),
                    mlflow::request(api.addr, method, path, api.token.as_deref(), body),
                )
            })
            .collect(),
    )
}

#[derive(serde::Deserialize)]
struct Numbered {
    version: u64,
}

/// Concurrent version creates, worker `w` through node `w % nodes.len()`, then checks that the
/// numbers came out gap-free.
async fn version_creates(
    nodes: &[&Api],
    model: &str,
    args: &RegistryArgs,
    warmup: Duration,
) -> anyhow::Result<VersionCreates> {
    let api = nodes[0];
    api.create_model(model).await?;
    let path = format!("/v1/models/{model}/versions");
    let urls = nodes
        .iter()
        .map(|api| reqwest::Url::parse(&api.url(&path)))
        .collect::<Result<Vec<_>, _>>()?;
    let body = bytes::Bytes::from(serde_json::to_vec(&json!({
        "metadata": {
            "description": "bench version",
            "owner": "bench",
            "metrics": { "accuracy": 0.91 },
            "frameworks": { "torch": "2.4.1" }
        },
        "tags": { "source": "ballast-bench" }
    }))?);
    let created = Arc::new(AtomicU64::new(0));
    let counter = created.clone();
    let label = if nodes.len() > 1 {
        format!("POST {path} ({} nodes)", nodes.len())
    } else {
        format!("POST {path}")
    };
    let numbered = |answer: &[u8]| {
        serde_json::from_slice::<Numbered>(answer)
            .map(|n| n.version)
            .map_err(|e| OpError::Transport(format!("unexpected answer: {e}")))
    };
    let (load, numbers) = match args.http_client {
        HttpClient::Reqwest => {
            let http = api.http.clone();
            load::run(&label, args.concurrency, warmup, args.duration(), move |w, _| {
                let req = http
                    .post(urls[w % urls.len()].clone())
                    .header("content-type", "application/json")
                    .body(body.clone());
                let counter = counter.clone();
                async move {
                    let answer = send_checked(req).await?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    numbered(&answer)
                }
            })
            .await?
        }
        HttpClient::Raw => {
            let targets = raw_targets(nodes, args.concurrency, "POST", &path, Some(&body));
            load::run(&label, args.concurrency, warmup, args.duration(), move |w, _| {
                let (targets, counter) = (targets.clone(), counter.clone());
                async move {
                    let (pool, req) = &targets[w % targets.len()];
                    let answer = pool.send(w, req).await?;
                    counter.fetch_add(1, Ordering::Relaxed);
                    numbered(&answer)
                }
            })
            .await?
        }
    };
    let created_total = created.load(Ordering::Relaxed);
    let latest_version = api
        .get::<Model>(&format!("/v1/models/{model}"))
        .await?
        .latest_version;
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100_000 {
        let mut q = format!("{path}?order_by=number&order=asc&limit=1000");
        if let Some(c) = &cursor {
            q.push_str("&cursor=");
            q.push_str(c);
        }
        let page: VersionList = api.get(&q).await?;
        listed.extend(page.versions.iter().map(|v| v.version));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    let listed_contiguous = listed.iter().copied().eq(1..=latest_version);
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    let answered_unique =
        distinct.len() == numbers.len() && distinct.last().is_none_or(|&m| m <= latest_version);
    let latest_matches_created = latest_version == created_total;
    Ok(VersionCreates {
        numbering: NumberingCheck {
            created_total,
            latest_version,
            listed: listed.len() as u64,
            listed_contiguous,
            answered_unique,
            latest_matches_created,
            gap_free: listed_contiguous && answered_unique && (latest_matches_created || load.errors() > 0),
        },
        load,
    })
}

async fn phases(
    api: &Api,
    args: &RegistryArgs,
    dir: PathBuf,
    config: RunConfig,
    machine: Machine,
) -> anyhow::Result<Report> {
    let warmup = Duration::from_secs_f64(config.warmup_secs);
    let mut rss = vec![RssMark::now("server started")];
    eprintln!("[1/5] alias resolution: setting up bench/alias …");
    set_up_alias(api, "bench/alias").await?;
    eprintln!(
        "      GET …/aliases/champion for {:?} × {} connections",
        args.duration(),
        args.concurrency
    );
    let alias_get = hammer_get(&[api], "/v1/models/bench/alias/aliases/champion", args, warmup).await?;
    eprintln!(
        "      {:.0} req/s, p99 {:.2} ms",
        alias_get.rate_per_sec, alias_get.latency.p99_ms
    );
    rss.push(RssMark::now("GET …/aliases/champion phase"));
    eprintln!("[2/5] GET …/aliases/champion/version");
    let alias_resolve = hammer_get(
        &[api],
        "/v1/models/bench/alias/aliases/champion/version",
        args,
        warmup,
    )
    .await?;
    eprintln!(
        "      {:.0} req/s, p99 {:.2} ms",
        alias_resolve.rate_per_sec, alias_resolve.latency.p99_ms
    );
    rss.push(RssMark::now("GET …/aliases/champion/version phase"));
    eprintln!("[3/5] version creates: POST …/versions for {:?}", args.duration());
    let version_create = version_creates(&[api], "bench/creates", args, warmup).await?;
    rss.push(RssMark::now("version creates and listing them"));
    eprintln!(
        "      {:.0} creates/s, p99 {:.2} ms, gap-free: {}",
        version_create.load.rate_per_sec,
        version_create.load.latency.p99_ms,
        version_create.numbering.gap_free
    );
    eprintln!(
        "[4/5] throughput: {} MiB artifact (generate, cp + sha256sum, upload, download)",
        config.upload_bytes >> 20
    );
    api.create_model("bench/blob").await?;
    let v = api.create_version("bench/blob").await?;
    let files_url = api.url(&format!("/v1/models/bench/blob/versions/{}/files", v.version));
    let throughput = throughput::run(&api.http, &files_url, &dir, config.upload_bytes).await?;
    rss.push(RssMark::now("upload and download"));
    eprintln!(
        "[5/5] MLflow REST routes against native ones: {:?} each × {} connections",
        args.duration(),
        args.concurrency
    );
    let target = mlflow::Target {
        http: &api.http,
        base: &api.base,
        addr: api.addr,
        token: api.token.as_deref(),
    };
    let settings = mlflow::Settings {
        concurrency: config.concurrency,
        warmup_secs: config.warmup_secs,
        duration_secs: config.duration_secs,
        fleet_models: args.fleet_models.unwrap_or(if args.quick { 200 } else { 1000 }),
    };
    let mlflow = mlflow::run(&target, settings).await?;
    for p in &mlflow.pairs {
        eprintln!(
            "      {}: native {:.0}/s, MLflow {:.0}/s ({:.0} %)",
            p.operation,
            p.native.rate_per_sec,
            p.mlflow.rate_per_sec,
            p.mlflow_to_native_rate * 100.0
        );
    }
    rss.push(RssMark::now("MLflow phases"));

    #[allow(clippy::cast_precision_loss)]
    let peak_mb = throughput.upload.rss.peak_bytes as f64 / 1e6;
    let mut targets = vec![
        Check::at_least(
            "alias resolution GET …/aliases/champion",
            alias_get.rate_per_sec,
            TARGET_ALIAS_RPS,
            "req/s",
        ),
        Check::at_least(
            "alias resolution GET …/aliases/champion/version",
            alias_resolve.rate_per_sec,
            TARGET_ALIAS_RPS,
            "req/s",
        ),
        Check::at_least(
            "version creates",
            version_create.load.rate_per_sec,
            TARGET_CREATES_PER_SEC,
            "/s",
        ),
        Check::holds(
            "version numbers gap-free 1..=N",
            version_create.numbering.gap_free,
        ),
        Check::at_least(
            "upload vs cp+sha256sum",
            throughput.upload.ratio_to_baseline * 100.0,
            TARGET_UPLOAD_PCT,
            "%",
        ),
        Check::below(
            "peak RSS during upload (server+loadgen)",
            peak_mb,
            TARGET_PEAK_RSS_MB,
            "MB",
        ),
        Check::holds("download digest verified", throughput.download.digest_ok),
        Check::holds("MLflow and native phases error-free", mlflow.error_free()),
    ];
    targets.extend(mlflow.checks());
    let all_targets_met = targets.iter().all(|c| c.pass);
    let sha_note = format!(
        "sha256sum ran at {:.0} MB/s here; the server hashes with the sha2 crate (SHA extensions \
         when the CPU has them), so the ratio to the baseline flatters the upload when sha256sum \
         is slow: upload / cp alone = {:.0} %",
        throughput.baseline.sha256sum.mb_per_sec,
        throughput.upload.timed.mb_per_sec / throughput.baseline.cp.mb_per_sec * 100.0
    );
    Ok(Report {
        benchmark: "registry",
        machine,
        config,
        alias_get,
        alias_resolve,
        version_create,
        throughput,
        mlflow,
        targets,
        all_targets_met,
        loadavg_at_end: crate::machine::loadavg(),
        scale_out: ScaleOutOutcome::Skipped {
            reason: "not run yet".into(),
        },
        rss_after_phase: rss,
        notes: vec![
            "server and load generator share this machine; the server runs in-process on its own runtime"
                .into(),
            "RSS is the VmRSS of the whole benchmark process (server + load generator), sampled every 50 ms"
                .into(),
            "MB = 10^6 bytes; upload time runs from sending the request to the server's 201 (after fsync)"
                .into(),
            "the cp + sha256sum baseline does not fsync; cp_sync_sha256sum is the durable variant".into(),
            "the request-rate phases use the client named in config.http_client; cpu_us_per_request \
             splits the machine between server and load generator"
                .into(),
            sha_note,
        ],
    })
}

/// `cpu: server runtime 1.62 s, load generator 1.80 s, … (wall 2.50 s)`.
fn cpu_line(cpu: &std::collections::BTreeMap<String, f64>) -> String {
    format!(
        "      cpu: {} (this process {:.2} s, whole machine {}, over {:.2} s wall)\n",
        crate::cpu::groups_line(cpu),
        cpu.get("total").copied().unwrap_or(0.0),
        crate::cpu::machine_line(cpu),
        cpu.get("wall").copied().unwrap_or(0.0)
    )
}

fn details(r: &Report) -> String {
    let load_line = |s: &LoadSummary| {
        format!(
            "  {:<58} {:>9.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.2} ms  ok {:>8}  errors {}{}\n",
            s.operation,
            s.rate_per_sec,
            s.latency.p50_ms,
            s.latency.p99_ms,
            s.latency.max_ms,
            s.ok,
            s.errors(),
            s.first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        )
    };
    let t = &r.throughput;
    let n = &r.version_create.numbering;
    let mut out = String::new();
    for s in [&r.alias_get, &r.alias_resolve, &r.version_create.load] {
        out.push_str(&load_line(s));
        out.push_str(&cpu_line(&s.cpu_secs));
        out.push_str(&format!(
            "      cpu per request: server {:.1} µs, load generator {:.1} µs\n",
            s.cpu_us_per_request.get("server").copied().unwrap_or(0.0),
            s.cpu_us_per_request.get("load generator").copied().unwrap_or(0.0)
        ));
    }
    out.push_str(&format!(
        "  numbering: {} created (warm-up included), latest_version {}, {} listed, contiguous {}, unique {}\n",
        n.created_total, n.latest_version, n.listed, n.listed_contiguous, n.answered_unique
    ));
    out.push_str(&format!(
        "  artifact {} MiB: cp {:.0} MB/s ({:.2} s), sha256sum {:.0} MB/s ({:.2} s), cp+sha256sum {:.0} MB/s ({:.2} s); \
         durable cp+sync+sha256sum {:.0} MB/s\n",
        t.bytes >> 20,
        t.baseline.cp.mb_per_sec,
        t.baseline.cp.secs,
        t.baseline.sha256sum.mb_per_sec,
        t.baseline.sha256sum.secs,
        t.baseline.cp_then_sha256sum.mb_per_sec,
        t.baseline.cp_then_sha256sum.secs,
        t.baseline.cp_sync_sha256sum.mb_per_sec,
    ));
    #[allow(clippy::cast_precision_loss)]
    let mb = |b: u64| b as f64 / 1e6;
    out.push_str(&format!(
        "  upload   {:.0} MB/s ({:.2} s, {:.0} % of baseline, {:.0} % of cp alone), peak RSS {:.1} MB \
         (before: {:.1} MB)\n",
        t.upload.timed.mb_per_sec,
        t.upload.timed.secs,
        t.upload.ratio_to_baseline * 100.0,
        t.upload.timed.mb_per_sec / t.baseline.cp.mb_per_sec * 100.0,
        mb(t.upload.rss.peak_bytes),
        mb(t.rss_before_upload_bytes)
    ));
    out.push_str(&cpu_line(&t.upload.cpu_secs));
    out.push_str(&format!(
        "  download {:.0} MB/s ({:.2} s, {:.0} % of baseline), peak RSS {:.1} MB, digest ok {}\n",
        t.download.timed.mb_per_sec,
        t.download.timed.secs,
        t.download.ratio_to_baseline * 100.0,
        mb(t.download.rss.peak_bytes),
        t.download.digest_ok
    ));
    out.push_str(&cpu_line(&t.download.cpu_secs));
    out.push_str("  MLflow REST routes next to the native ones (same client, concurrency and duration):\n");
    out.push_str(&r.mlflow.details());
    out.push_str("  (RSS includes the load generator's own memory: the server runs in-process)\n");
    let marks: Vec<String> = r
        .rss_after_phase
        .iter()
        .map(|m| format!("{} {:.1} MB", m.after, mb(m.rss_bytes)))
        .collect();
    out.push_str(&format!("  RSS after: {}\n", marks.join("; ")));
    out.push_str(&format!(
        "  load average: {} at start, {} at end\n",
        r.machine.loadavg_at_start.as_deref().unwrap_or("?"),
        r.loadavg_at_end.as_deref().unwrap_or("?")
    ));
    out
}

/// Runs the benchmark, prints the table and writes the JSON report.
pub fn run(args: &RegistryArgs) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let duration = args.duration();
    let config = RunConfig {
        quick: args.quick,
        duration_secs: duration.as_secs_f64(),
        warmup_secs: (duration.as_secs_f64() / 4.0).min(1.0),
        concurrency: args.concurrency.max(1),
        upload_bytes: args.upload_bytes(),
        server_threads: args.server_threads,
        client_threads: args.client_threads,
        http_client: args.http_client,
        request_timeout_secs: load::REQUEST_TIMEOUT.as_secs_f64(),
        authenticated: false,
    };
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("ballast-bench-")
        .tempdir_in(&parent)?;
    let server = InProcessServer::start(scratch.path(), args.server_threads)?;
    // With token authentication the server wrote an admin token into its data directory.
    let token = mlflow::admin_token(scratch.path())?;
    let mut config = config;
    config.authenticated = token.is_some();
    eprintln!(
        "server listening on {} ({} worker threads, {})",
        server.addr,
        args.server_threads,
        if token.is_some() {
            "requests carry the admin token"
        } else {
            "no authentication"
        }
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .context("the admin token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            // Bounds every set-up and check request; transfers set their own, longer limit.
            .timeout(Duration::from_secs(60))
            .build()?;
        let api = Api {
            http,
            base: server.base_url(),
            addr: server.addr,
            token: token.clone(),
        };
        phases(&api, args, scratch.path().to_path_buf(), config, machine).await
    });
    drop(rt);
    let stopped = server.stop();
    let mut report = outcome?;
    stopped?;
    report.scale_out = scale_out::run(args, scratch.path(), report.config.warmup_secs);
    if let ScaleOutOutcome::Measured(so) = &report.scale_out {
        report.targets.extend(so.checks());
        report.all_targets_met = report.targets.iter().all(|c| c.pass);
    }

    println!();
    print!("{}", report::table(&report.targets));
    println!();
    print!("{}", details(&report));
    match &report.scale_out {
        ScaleOutOutcome::Measured(so) => print!("{}", so.details()),
        ScaleOutOutcome::Skipped { reason } => println!("  scale-out (PostgreSQL) phases skipped: {reason}"),
        ScaleOutOutcome::Failed { error } => println!("  scale-out (PostgreSQL) phases FAILED: {error}"),
    }
    report::write_json(&args.json_out, &report)?;
    println!("\nwrote {}", args.json_out.display());

    if !report.version_create.numbering.gap_free {
        bail!(
            "version numbers are not gap-free: {:?}",
            report.version_create.numbering
        );
    }
    if !report.throughput.download.digest_ok {
        bail!("the downloaded artifact does not match what was uploaded");
    }
    match &report.scale_out {
        ScaleOutOutcome::Failed { error } => bail!("the scale-out phases failed: {error}"),
        ScaleOutOutcome::Measured(so) if !so.correct() => {
            bail!("on PostgreSQL, version numbers were not gap-free or the download did not verify")
        }
        _ => {}
    }
    if args.strict && !report.all_targets_met {
        bail!("targets missed (--strict)");
    }
    Ok(())
}

/// What became of the scale-out phases.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum ScaleOutOutcome {
    /// Figures.
    Measured(Box<scale_out::ScaleOut>),
    /// Not run (no PostgreSQL configured, or turned off).
    Skipped { reason: String },
    /// Set-up or a phase failed.
    Failed { error: String },
}

/// The scale-out configuration: registry nodes in-process on one PostgreSQL database and one
/// blob store (an `s3s-fs` bucket when the binary is installed, else a shared directory),
/// measured with one node and with two.
///
/// PostgreSQL comes from `BALLAST_BENCH_DATABASE_URL`, else `BALLAST_TEST_DATABASE_URL` (an
/// administrative URL: a fresh database is created there with `psql` and dropped afterwards);
/// `BALLAST_BENCH_SCALE_OUT=off` skips the phases.
mod scale_out {
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use serde::Serialize;

    use super::{hammer_get, set_up_alias, version_creates, Api, ScaleOutOutcome, VersionCreates};
    use crate::harness::InProcess;
    use crate::load::LoadSummary;
    use crate::report::Check;
    use crate::throughput::{self, Throughput};
    use crate::RegistryArgs;

    /// Credentials of the throwaway `s3s-fs` server.
    const S3_KEY: &str = "ballast-bench";
    const S3_SECRET: &str = "ballast-bench-secret";
    const S3_BUCKET: &str = "bench";
    /// Largest artifact moved in the scale-out phases.
    const MAX_TRANSFER: u64 = 256 << 20;

    /// Figures of one configuration (one node, or several sharing the database).
    #[derive(Debug, Serialize)]
    pub struct NodeFigures {
        pub nodes: usize,
        pub alias_get: LoadSummary,
        pub version_create: VersionCreates,
        /// Alias GETs per second and node.
        pub alias_get_per_node: f64,
        /// Version creates per second and node.
        pub version_create_per_node: f64,
    }

    /// Everything the scale-out phases measured.
    #[derive(Debug, Serialize)]
    pub struct ScaleOut {
        /// Engine, host and database (no credentials).
        pub database: String,
        /// `s3 (s3s-fs)` or `file (shared directory)`.
        pub blobs: String,
        pub one_node: NodeFigures,
        pub two_nodes: NodeFigures,
        /// Upload and download of one artifact through the first node.
        pub throughput: Throughput,
        pub notes: Vec<String>,
    }

    impl ScaleOut {
        /// Whether the correctness checks held (numbering, digests).
        pub fn correct(&self) -> bool {
            self.one_node.version_create.numbering.gap_free
                && self.two_nodes.version_create.numbering.gap_free
                && self.throughput.download.digest_ok
        }

        /// The figures as table rows: rates for context, correctness as must-hold checks.
        pub fn checks(&self) -> Vec<Check> {
            let mut out = Vec::new();
            for f in [&self.one_node, &self.two_nodes] {
                let n = f.nodes;
                out.push(Check::info(
                    format!("PostgreSQL, {n} node(s): alias GET, total"),
                    f.alias_get.rate_per_sec,
                    "req/s",
                ));
                out.push(Check::info(
                    format!("PostgreSQL, {n} node(s): alias GET per node"),
                    f.alias_get_per_node,
                    "req/s",
                ));
                out.push(Check::info(
                    format!("PostgreSQL, {n} node(s): version creates, total"),
                    f.version_create.load.rate_per_sec,
                    "/s",
                ));
                out.push(Check::info(
                    format!("PostgreSQL, {n} node(s): version creates per node"),
                    f.version_create_per_node,
                    "/s",
                ));
                out.push(Check::holds(
                    format!("PostgreSQL, {n} node(s): version numbers gap-free 1..=N"),
                    f.version_create.numbering.gap_free,
                ));
            }
            out.push(Check::info(
                format!("PostgreSQL + {}: upload", self.blobs),
                self.throughput.upload.timed.mb_per_sec,
                "MB/s",
            ));
            out.push(Check::info(
                format!("PostgreSQL + {}: download", self.blobs),
                self.throughput.download.timed.mb_per_sec,
                "MB/s",
            ));
            out.push(Check::holds(
                format!("PostgreSQL + {}: download digest verified", self.blobs),
                self.throughput.download.digest_ok,
            ));
            out
        }

        /// Lines for the details section.
        pub fn details(&self) -> String {
            let mut out = format!(
                "  scale-out: metadata in {}, artifacts in {}\n",
                self.database, self.blobs
            );
            for f in [&self.one_node, &self.two_nodes] {
                for s in [&f.alias_get, &f.version_create.load] {
                    out.push_str(&format!(
                        "  {:<58} {:>9.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ok {:>8}  errors {}{}\n",
                        s.operation,
                        s.rate_per_sec,
                        s.latency.p50_ms,
                        s.latency.p99_ms,
                        s.ok,
                        s.errors(),
                        s.first_error
                            .as_deref()
                            .map(|e| format!(" (first: {e})"))
                            .unwrap_or_default()
                    ));
                }
                let n = &f.version_create.numbering;
                out.push_str(&format!(
                    "      {} node(s): numbering {} created, latest_version {}, gap-free {}\n",
                    f.nodes, n.created_total, n.latest_version, n.gap_free
                ));
            }
            let t = &self.throughput;
            out.push_str(&format!(
                "  artifact {} MiB through node 1: upload {:.0} MB/s ({:.2} s), download {:.0} MB/s ({:.2} s), digest ok {}\n",
                t.bytes >> 20,
                t.upload.timed.mb_per_sec,
                t.upload.timed.secs,
                t.download.timed.mb_per_sec,
                t.download.timed.secs,
                t.download.digest_ok
            ));
            for n in &self.notes {
                out.push_str(&format!("  note: {n}\n"));
            }
            out
        }
    }

    /// Runs the phases when PostgreSQL is configured; never fails the SQLite figures.
    pub fn run(args: &RegistryArgs, scratch: &Path, warmup_secs: f64) -> ScaleOutOutcome {
        if std::env::var("BALLAST_BENCH_SCALE_OUT").as_deref() == Ok("off") {
            return ScaleOutOutcome::Skipped {
                reason: "BALLAST_BENCH_SCALE_OUT=off".into(),
            };
        }
        let admin = ["BALLAST_BENCH_DATABASE_URL", "BALLAST_TEST_DATABASE_URL"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()));
        let Some(admin) = admin else {
            return ScaleOutOutcome::Skipped {
                reason: "no PostgreSQL: set BALLAST_BENCH_DATABASE_URL (or eval \"$(.ci/postgres.sh)\")"
                    .into(),
            };
        };
        eprintln!("[scale-out] {}", ballast_server::describe_database_url(&admin));
        match measure(args, scratch, &admin, warmup_secs) {
            Ok(so) => ScaleOutOutcome::Measured(Box::new(so)),
            Err(e) => ScaleOutOutcome::Failed {
                error: format!("{e:#}"),
            },
        }
    }

    /// A database of its own on the PostgreSQL server, dropped afterwards.
    struct Database {
        psql: PathBuf,
        admin: String,
        name: String,
        url: String,
    }

    impl Database {
        fn create(admin: &str) -> anyhow::Result<Self> {
            let psql = program("psql").context("psql is needed to create the benchmark database")?;
            let name = format!("ballast_bench_{}", std::process::id());
            let me = Self {
                url: match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => bail!("the PostgreSQL URL must end in /DATABASE"),
                },
                psql,
                admin: admin.to_owned(),
                name,
            };
            me.sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", me.name))?;
            me.sql(&format!("CREATE DATABASE {}", me.name))?;
            Ok(me)
        }

        fn sql(&self, sql: &str) -> anyhow::Result<()> {
            let out = Command::new(&self.psql)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.admin, "-c", sql])
                .stdin(Stdio::null())
                .output()
                .context("cannot run psql")?;
            if !out.status.success() {
                bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(())
        }
    }

    impl Drop for Database {
        fn drop(&mut self) {
            let _ = self.sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }

    /// A PostgreSQL program from the newest installed version, else from `PATH`.
    fn program(name: &str) -> Option<PathBuf> {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().split('.').next()?.parse().ok()?;
                Some((v, e.path().join("bin").join(name)))
            })
            .filter(|(_, p)| p.is_file())
            .collect();
        versions.sort();
        versions.pop().map(|(_, p)| p).or_else(|| on_path(name))
    }

    fn on_path(name: &str) -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        if let Some(home) = std::env::var_os("HOME") {
            dirs.push(PathBuf::from(home).join(".cargo/bin"));
        }
        dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
    }

    /// A throwaway `s3s-fs` with one bucket, stopped when dropped.
    struct S3sFs {
        child: Child,
        endpoint: String,
    }

    impl S3sFs {
        fn start(dir: &Path) -> anyhow::Result<Option<Self>> {
            let bin = std::env::var_os("BALLAST_S3S_FS")
                .map(PathBuf::from)
                .or_else(|| on_path("s3s-fs"));
            let Some(bin) = bin else {
                return Ok(None);
            };
            std::fs::create_dir_all(dir.join(S3_BUCKET))?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg(dir)
                .env("RUST_LOG", "error")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            let mut me = Self {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = me.child.try_wait() {
                    bail!("s3s-fs exited with {status}");
                }
                if Instant::now() > deadline {
                    bail!("s3s-fs did not accept connections within 15 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Some(me))
        }
    }

    impl Drop for S3sFs {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Starts a registry node in-process on its own runtime.
    fn start_node(name: &str, threads: usize, config: ballast_server::Config) -> anyhow::Result<InProcess> {
        InProcess::spawn(name, threads, move |addr_tx, stop| async move {
            let server = match ballast_server::Server::bind(config).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = addr_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            match server.local_addr() {
                Ok(a) => {
                    let _ = addr_tx.send(Ok(a));
                }
                Err(e) => {
                    let _ = addr_tx.send(Err(e.to_string()));
                    return Err(e.into());
                }
            }
            server
                .serve(async move {
                    let _ = stop.await;
                })
                .await
        })
    }

    fn measure(
        args: &RegistryArgs,
        scratch: &Path,
        admin: &str,
        warmup_secs: f64,
    ) -> anyhow::Result<ScaleOut> {
        let db = Database::create(admin)?;
        let s3 = S3sFs::start(&scratch.join("s3"))?;
        let shared_blobs = scratch.join("shared-blobs");
        let (blobs, blob_url) = match &s3 {
            Some(_) => ("s3 (s3s-fs)".to_owned(), format!("s3://{S3_BUCKET}/blobs")),
            None => (
                "file (shared directory)".to_owned(),
                format!("file://{}", shared_blobs.display()),
            ),
        };
        let config = |i: usize| ballast_server::Config {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: scratch.join(format!("pg-node{i}")),
            database_url: Some(ballast_server::Secret::new(db.url.clone())),
            blob_url: Some(blob_url.clone()),
            s3_endpoint: s3.as_ref().map(|s| s.endpoint.clone()),
            s3_path_style: true,
            s3_region: Some("us-east-1".into()),
            s3_access_key_id: s3.as_ref().map(|_| S3_KEY.to_owned()),
            s3_secret_access_key: s3.as_ref().map(|_| ballast_server::Secret::new(S3_SECRET)),
            shutdown_grace_secs: 5,
            ..Default::default()
        };
        // The first node bootstraps the database and writes the admin token; the second joins.
        let first = start_node("pg-node1", args.server_threads, config(1))?;
        let second = start_node("pg-node2", args.server_threads, config(2))?;
        let token = std::fs::read_to_string(
            scratch
                .join("pg-node1")
                .join(ballast_server::auth::ADMIN_TOKEN_FILE),
        )
        .ok()
        .map(|t| t.trim().to_owned());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads.max(1))
            .thread_name("loadgen")
            .enable_all()
            .build()?;
        let measured = rt.block_on(async {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(t) = &token {
                let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?;
                value.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
            let http = reqwest::Client::builder()
                .default_headers(headers)
                .no_proxy()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .build()?;
            let api = |addr: std::net::SocketAddr| Api {
                http: http.clone(),
                base: format!("http://{addr}"),
                addr,
                token: token.clone(),
            };
            let (a, b) = (api(first.addr), api(second.addr));
            phases(args, scratch, &a, &b, Duration::from_secs_f64(warmup_secs)).await
        });
        drop(rt);
        let stopped = (second.stop(), first.stop());
        let (one_node, two_nodes, throughput) = measured?;
        stopped.0?;
        stopped.1?;
        drop(db);
        Ok(ScaleOut {
            database: ballast_server::describe_database_url(admin)
                .rsplit_once('/')
                .map_or_else(
                    || "PostgreSQL".to_owned(),
                    |(host, _)| format!("{host}/<fresh database>"),
                ),
            blobs,
            one_node,
            two_nodes,
            throughput,
            notes: vec![
                "every node runs in this process on its own runtime of --server-threads workers; \
                 PostgreSQL, s3s-fs and the load generator share the machine"
                    .into(),
                "with two nodes, worker w of the load generator talks to node w % 2; per-node rates are \
                 the totals divided by the node count"
                    .into(),
            ],
        })
    }

    async fn phases(
        args: &RegistryArgs,
        scratch: &Path,
        a: &Api,
        b: &Api,
        warmup: Duration,
    ) -> anyhow::Result<(NodeFigures, NodeFigures, Throughput)> {
        set_up_alias(a, "bench/alias").await?;
        let alias = "/v1/models/bench/alias/aliases/champion";
        let mut figures = Vec::new();
        for nodes in [vec![a], vec![a, b]] {
            let n = nodes.len();
            eprintln!(
                "[scale-out] {n} node(s): GET …/aliases/champion for {:?}",
                args.duration()
            );
            let alias_get = hammer_get(&nodes, alias, args, warmup).await?;
            eprintln!("      {:.0} req/s", alias_get.rate_per_sec);
            eprintln!(
                "[scale-out] {n} node(s): version creates for {:?}",
                args.duration()
            );
            let version_create = version_creates(&nodes, &format!("bench/creates-{n}"), args, warmup).await?;
            eprintln!(
                "      {:.0} creates/s, gap-free: {}",
                version_create.load.rate_per_sec, version_create.numbering.gap_free
            );
            #[allow(clippy::cast_precision_loss)]
            let per = n as f64;
            figures.push(NodeFigures {
                nodes: n,
                alias_get_per_node: alias_get.rate_per_sec / per,
                version_create_per_node: version_create.load.rate_per_sec / per,
                alias_get,
                version_create,
            });
        }
        let bytes = args.upload_bytes().min(MAX_TRANSFER);
        eprintln!(
            "[scale-out] throughput: {} MiB artifact through node 1",
            bytes >> 20
        );
        a.create_model("bench/blob").await?;
        let v = a.create_version("bench/blob").await?;
        let files_url = a.url(&format!("/v1/models/bench/blob/versions/{}/files", v.version));
        let dir = scratch.join("scale-out-transfer");
        std::fs::create_dir_all(&dir)?;
        let t = throughput::run(&a.http, &files_url, &dir, bytes).await?;
        let _ = std::fs::remove_dir_all(&dir);
        let two = figures.pop().context("two-node figures")?;
        let one = figures.pop().context("one-node figures")?;
        Ok((one, two, t))
    }
}
