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

/// Hammers one GET URL.
async fn hammer_get(
    api: &Api,
    path: &str,
    args: &RegistryArgs,
    warmup: Duration,
) -> anyhow::Result<LoadSummary> {
    let label = format!("GET {path}");
    let (summary, _) = match args.http_client {
        HttpClient::Reqwest => {
            let url = reqwest::Url::parse(&api.url(path))?;
            let http = api.http.clone();
            load::run(&label, args.concurrency, warmup, args.duration(), move |_, _| {
                let req = http.get(url.clone());
                async move { send_checked(req).await.map(drop) }
            })
            .await?
        }
        HttpClient::Raw => {
            let pool = Arc::new(rawhttp::Pool::new(api.addr, args.concurrency));
            let req = Arc::new(mlflow::request(api.addr, "GET", path, api.token.as_deref(), None));
            load::run(&label, args.concurrency, warmup, args.duration(), move |w, _| {
                let (pool, req) = (pool.clone(), req.clone());
                async move { pool.send(w, &req).await.map(drop) }
            })
            .await?
        }
    };
    Ok(summary)
}

#[derive(serde::Deserialize)]
struct Numbered {
    version: u64,
}

async fn version_creates(
    api: &Api,
    model: &str,
    args: &RegistryArgs,
    warmup: Duration,
) -> anyhow::Result<VersionCreates> {
    api.create_model(model).await?;
    let path = format!("/v1/models/{model}/versions");
    let url = reqwest::Url::parse(&api.url(&path))?;
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
    let label = format!("POST {path}");
    let numbered = |answer: &[u8]| {
        serde_json::from_slice::<Numbered>(answer)
            .map(|n| n.version)
            .map_err(|e| OpError::Transport(format!("unexpected answer: {e}")))
    };
    let (load, numbers) = match args.http_client {
        HttpClient::Reqwest => {
            let http = api.http.clone();
            load::run(&label, args.concurrency, warmup, args.duration(), move |_, _| {
                let req = http
                    .post(url.clone())
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
            let pool = Arc::new(rawhttp::Pool::new(api.addr, args.concurrency));
            let req = Arc::new(mlflow::request(
                api.addr,
                "POST",
                &path,
                api.token.as_deref(),
                Some(&body),
            ));
            load::run(&label, args.concurrency, warmup, args.duration(), move |w, _| {
                let (pool, req, counter) = (pool.clone(), req.clone(), counter.clone());
                async move {
                    let answer = pool.send(w, &req).await?;
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
    let alias_get = hammer_get(api, "/v1/models/bench/alias/aliases/champion", args, warmup).await?;
    eprintln!(
        "      {:.0} req/s, p99 {:.2} ms",
        alias_get.rate_per_sec, alias_get.latency.p99_ms
    );
    rss.push(RssMark::now("GET …/aliases/champion phase"));
    eprintln!("[2/5] GET …/aliases/champion/version");
    let alias_resolve = hammer_get(
        api,
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
    let version_create = version_creates(api, "bench/creates", args, warmup).await?;
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
    let parts: Vec<String> = cpu
        .iter()
        .filter(|(k, v)| {
            !matches!(k.as_str(), "wall" | "total" | "machine busy" | "machine idle") && **v >= 0.01
        })
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect();
    let get = |k: &str| cpu.get(k).copied().unwrap_or(0.0);
    format!(
        "      cpu: {} (this process {:.2} s, whole machine busy {:.2} s / idle {:.2} s, over {:.2} s wall)\n",
        parts.join(", "),
        get("total"),
        get("machine busy"),
        get("machine idle"),
        get("wall")
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
    let report = outcome?;
    stopped?;

    println!();
    print!("{}", report::table(&report.targets));
    println!();
    print!("{}", details(&report));
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
    if args.strict && !report.all_targets_met {
        bail!("targets missed (--strict)");
    }
    Ok(())
}
