//! The MLflow side of the `registry` benchmark: the client-visible operations an MLflow user
//! performs — create a version, set an alias, get a version by alias, search versions, search
//! models — driven through the MLflow REST routes (`/api/2.0/mlflow/…`) and, back to back under
//! the same conditions, through the native routes, so the cost of the MLflow layer shows as a
//! ratio. Both sides of a pair use the same raw keep-alive client, concurrency and duration.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::load::{self, send_checked, LoadSummary, OpError};
use crate::rawhttp::{Pool, RawRequest};
use crate::report::Check;

/// The model both sides resolve and move aliases on (`bench/alias`: native name and, outside
/// the default namespace, MLflow name alike).
const ALIAS_MODEL: &str = "bench/alias";
/// A model with [`SEARCH_VERSIONS`] versions, searched by name.
const SEARCH_MODEL: &str = "bench/search";
/// Versions of [`SEARCH_MODEL`] (one page of each search).
const SEARCH_VERSIONS: u64 = 20;
/// Models per page of the model searches.
const SEARCH_PAGE: usize = 20;
/// Source recorded by the MLflow creates (a reference Ballast does not hold: sealed as
/// unverified, which costs no artifact copy, like a native draft).
const SOURCE: &str = "s3://ballast-bench/model";

/// Finds the admin token the server wrote into its data directory (a `ballast-bench-data-*`
/// directory under `scratch`) when token authentication is on.
///
/// # Errors
/// When the directory cannot be listed or the token file exists but cannot be read.
pub fn admin_token(scratch: &Path) -> anyhow::Result<Option<String>> {
    let entries = std::fs::read_dir(scratch).with_context(|| format!("cannot list {}", scratch.display()))?;
    for entry in entries {
        let entry = entry?;
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("ballast-bench-data-")
        {
            continue;
        }
        let path = entry.path().join(ballast_server::auth::ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => return Ok(Some(t.trim().to_owned())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(None)
}

/// Encodes one HTTP/1.1 request, with `authorization: Bearer` when there is a token.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> RawRequest {
    if method == "GET" && token.is_none() && body.is_none() {
        return RawRequest::get(addr, path);
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\naccept: */*\r\n");
    if let Some(t) = token {
        head.push_str("authorization: Bearer ");
        head.push_str(t);
        head.push_str("\r\n");
    }
    let mut v = match body {
        Some(b) => {
            head.push_str(&format!(
                "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
                b.len()
            ));
            let mut v = head.into_bytes();
            v.extend_from_slice(b);
            v
        }
        None => {
            head.push_str("\r\n");
            head.into_bytes()
        }
    };
    v.shrink_to_fit();
    RawRequest::encoded(bytes::Bytes::from(v))
}

/// `path?k=v&…` with the values percent-encoded.
fn with_query(path: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
    let url = reqwest::Url::parse_with_params(&format!("http://localhost{path}"), params)?;
    Ok(format!("{}?{}", url.path(), url.query().unwrap_or_default()))
}

/// The server under test, as the set-up calls and the load phases see it.
pub struct Target<'a> {
    /// Client for set-up calls (sends the token itself when there is one).
    pub http: &'a reqwest::Client,
    /// `http://127.0.0.1:port`.
    pub base: &'a str,
    /// The server's address, for the raw load client.
    pub addr: SocketAddr,
    /// Bearer token, when authentication is on.
    pub token: Option<&'a str>,
}

impl Target<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let bytes = send_checked(
            self.http
                .request(method.clone(), format!("{}{path}", self.base))
                .json(&body),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{method} {path}: {e:?}"))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: unexpected answer"))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

/// Settings of the MLflow phases.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Concurrent keep-alive connections per phase.
    pub concurrency: usize,
    /// Warm-up before each measured phase.
    pub warmup_secs: f64,
    /// Measured seconds per phase.
    pub duration_secs: f64,
    /// Models in the registry during the model searches (besides the benchmark's own).
    pub fleet_models: usize,
}

/// One operation measured natively and through MLflow.
#[derive(Debug, Serialize)]
pub struct Pair {
    /// What the client does.
    pub operation: &'static str,
    /// Through the native API.
    pub native: LoadSummary,
    /// Through the MLflow REST routes.
    pub mlflow: LoadSummary,
    /// MLflow throughput as a share of native throughput (1.0 = no overhead).
    pub mlflow_to_native_rate: f64,
    /// MLflow median latency over native median latency.
    pub mlflow_to_native_p50: f64,
    /// What differs between the two sides beyond the API layer.
    pub note: &'static str,
}

impl Pair {
    fn new(operation: &'static str, native: LoadSummary, mlflow: LoadSummary, note: &'static str) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Self {
            operation,
            mlflow_to_native_rate: ratio(mlflow.rate_per_sec, native.rate_per_sec),
            mlflow_to_native_p50: ratio(mlflow.latency.p50_ms, native.latency.p50_ms),
            native,
            mlflow,
            note,
        }
    }
}

/// What the MLflow phases measured.
#[derive(Debug, Serialize)]
pub struct MlflowReport {
    /// How they ran.
    pub settings: Settings,
    /// One entry per operation.
    pub pairs: Vec<Pair>,
}

impl MlflowReport {
    /// Table rows: each side's throughput and the ratio.
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        for p in &self.pairs {
            out.push(Check::info(
                format!("{}: native", p.operation),
                p.native.rate_per_sec,
                "req/s",
            ));
            out.push(Check::info(
                format!("{}: MLflow", p.operation),
                p.mlflow.rate_per_sec,
                "req/s",
            ));
            out.push(Check::info(
                format!("{}: MLflow / native", p.operation),
                p.mlflow_to_native_rate * 100.0,
                "%",
            ));
        }
        out
    }

    /// Every request of every phase succeeded.
    pub fn error_free(&self) -> bool {
        self.pairs
            .iter()
            .all(|p| p.native.errors() == 0 && p.mlflow.errors() == 0)
    }

    /// One line per side of each pair, for the details after the table.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for p in &self.pairs {
            for s in [&p.native, &p.mlflow] {
                out.push_str(&format!(
                    "  {:<96} {:>8.0}/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}{}\n",
                    s.operation,
                    s.rate_per_sec,
                    s.latency.p50_ms,
                    s.latency.p99_ms,
                    s.errors(),
                    s.first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                ));
            }
            out.push_str(&format!(
                "      MLflow/native: throughput {:.0} %, p50 ×{:.2} — {}\n",
                p.mlflow_to_native_rate * 100.0,
                p.mlflow_to_native_p50,
                p.note
            ));
        }
        out
    }
}

/// Runs `reqs[w][seq % len]` from every worker `w` (cycling over the workers' lists when there
/// are fewer lists than workers).
async fn hammer(
    t: &Target<'_>,
    label: String,
    s: &Settings,
    reqs: Vec<Vec<RawRequest>>,
) -> anyhow::Result<LoadSummary> {
    ensure!(
        reqs.iter().all(|r| !r.is_empty()) && !reqs.is_empty(),
        "no requests for {label}"
    );
    let pool = Arc::new(Pool::new(t.addr, s.concurrency));
    let reqs = Arc::new(reqs);
    let (summary, _) = load::run(
        &label,
        s.concurrency,
        Duration::from_secs_f64(s.warmup_secs),
        Duration::from_secs_f64(s.duration_secs),
        move |w, seq| {
            let (pool, reqs) = (pool.clone(), reqs.clone());
            async move {
                let list = &reqs[w % reqs.len()];
                let i = usize::try_from(seq).unwrap_or(0) % list.len();
                pool.send(w, &list[i]).await.map(drop)
            }
        },
    )
    .await?;
    Ok(summary)
}

/// The native way to register a sealed version holding one small file: create the draft, put
/// the file (digest checked), seal. One operation is all three requests.
async fn create_sealed(
    t: &Target<'_>,
    versions_path: &str,
    body: &[u8],
    s: &Settings,
) -> anyhow::Result<LoadSummary> {
    let (addr, token) = (t.addr, t.token.map(str::to_owned));
    let file = serde_json::to_vec(&json!({ "source": SOURCE, "verified": false }))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file));
    let create = Arc::new(request(addr, "POST", versions_path, token.as_deref(), Some(body)));
    let pool = Arc::new(Pool::new(addr, s.concurrency));
    let label = format!("POST {versions_path}, PUT …/files/source.json, POST …/seal");
    let (file, sha, versions_path) = (Arc::new(file), Arc::new(sha), Arc::new(versions_path.to_owned()));
    let (summary, _) = load::run(
        &label,
        s.concurrency,
        Duration::from_secs_f64(s.warmup_secs),
        Duration::from_secs_f64(s.duration_secs),
        move |w, _| {
            let (pool, create, file, sha, path, token) = (
                pool.clone(),
                create.clone(),
                file.clone(),
                sha.clone(),
                versions_path.clone(),
                token.clone(),
            );
            async move {
                let answer = pool.send(w, &create).await?;
                let n = serde_json::from_slice::<Value>(&answer)
                    .ok()
                    .and_then(|v| v["version"].as_u64())
                    .ok_or_else(|| OpError::Transport("create answered without a version".into()))?;
                let put = put_file(
                    addr,
                    &format!("{path}/{n}/files/source.json"),
                    token.as_deref(),
                    &sha,
                    &file,
                );
                pool.send(w, &put).await?;
                let seal = request(
                    addr,
                    "POST",
                    &format!("{path}/{n}/seal"),
                    token.as_deref(),
                    Some(b"{}"),
                );
                pool.send(w, &seal).await.map(drop)
            }
        },
    )
    .await?;
    Ok(summary)
}

/// `PUT path` of raw bytes with their promised SHA-256.
fn put_file(addr: SocketAddr, path: &str, token: Option<&str>, sha: &str, bytes: &[u8]) -> RawRequest {
    let mut head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {addr}\r\naccept: */*\r\ncontent-type: application/octet-stream\r\n\
         x-ballast-sha256: {sha}\r\ncontent-length: {}\r\n",
        bytes.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    let mut v = head.into_bytes();
    v.extend_from_slice(bytes);
    RawRequest::encoded(bytes::Bytes::from(v))
}

/// A model created through MLflow (`registered-models/create`).
async fn mlflow_model(t: &Target<'_>, name: &str) -> anyhow::Result<()> {
    t.post(
        "/api/2.0/mlflow/registered-models/create",
        json!({ "name": name }),
    )
    .await
    .map(drop)
}

/// A version created through MLflow: registered, filled and sealed in one call.
async fn mlflow_version(t: &Target<'_>, name: &str) -> anyhow::Result<u64> {
    let v = t
        .post(
            "/api/2.0/mlflow/model-versions/create",
            json!({ "name": name, "source": SOURCE, "description": "ballast-bench" }),
        )
        .await?;
    v["model_version"]["version"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("model-versions/create answered without a version: {v}"))
}

/// Fills the registry: `bench/alias` gets a second sealed version, `bench/search` its versions,
/// and `fleet` models `bench/fleet-NNNNN` exist (created 32 at a time).
async fn set_up(t: &Target<'_>, fleet: usize) -> anyhow::Result<()> {
    let second = mlflow_version(t, ALIAS_MODEL).await?;
    ensure!(second == 2, "{ALIAS_MODEL} got version {second}, expected 2");
    mlflow_model(t, SEARCH_MODEL).await?;
    for _ in 0..SEARCH_VERSIONS {
        mlflow_version(t, SEARCH_MODEL).await?;
    }
    mlflow_model(t, "bench/create-mlflow").await?;
    t.post(
        "/v1/models",
        json!({ "name": "bench/create-native", "description": "ballast-bench" }),
    )
    .await?;
    let created: Vec<anyhow::Result<Value>> = futures_util::stream::iter(0..fleet)
        .map(|i| {
            t.post(
                "/v1/models",
                json!({ "name": format!("bench/fleet-{i:05}"), "tags": { "fleet": "yes" } }),
            )
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for c in created {
        c.context("creating the model fleet")?;
    }
    Ok(())
}

/// Runs every pair: set-up first, then native and MLflow back to back for each operation.
///
/// # Errors
/// When the set-up fails or a phase cannot run (request failures during a phase are counted in
/// its summary instead).
pub async fn run(t: &Target<'_>, s: Settings) -> anyhow::Result<MlflowReport> {
    eprintln!(
        "      setting up: {SEARCH_VERSIONS} versions of {SEARCH_MODEL}, {} models bench/fleet-*",
        s.fleet_models
    );
    set_up(t, s.fleet_models).await?;
    let (addr, token) = (t.addr, t.token);
    let get = |path: &str| vec![vec![request(addr, "GET", path, token, None)]];
    let mut pairs = Vec::new();

    // Create a usable version: natively a draft, its one file and the seal (three requests, as
    // a client registering an external reference does); through MLflow one call that does all
    // three in one transaction.
    let native_body = serde_json::to_vec(&json!({ "metadata": { "description": "ballast-bench" } }))?;
    let mlflow_body = serde_json::to_vec(
        &json!({ "name": "bench/create-mlflow", "source": SOURCE, "description": "ballast-bench" }),
    )?;
    let native_path = "/v1/models/bench/create-native/versions";
    let mlflow_path = "/api/2.0/mlflow/model-versions/create";
    eprintln!("      create version");
    let native = create_sealed(t, native_path, &native_body, &s).await?;
    let mlflow = hammer(
        t,
        format!("POST {mlflow_path} (source {SOURCE})"),
        &s,
        vec![vec![request(
            addr,
            "POST",
            mlflow_path,
            token,
            Some(&mlflow_body),
        )]],
    )
    .await?;
    pairs.push(Pair::new(
        "create version",
        native,
        mlflow,
        "a sealed version holding one small file: natively draft + file + seal (three requests, \
         three commits), through MLflow one request and one commit",
    ));

    // Set an alias: each worker moves its own alias between versions 1 and 2.
    eprintln!("      set alias");
    let mut native_reqs = Vec::new();
    let mut mlflow_reqs = Vec::new();
    for w in 0..s.concurrency.max(1) {
        let alias = format!("bench-{w}");
        let path = format!("/v1/models/{ALIAS_MODEL}/aliases/{alias}");
        native_reqs.push(
            [1, 2]
                .iter()
                .map(|v| {
                    let body = serde_json::to_vec(&json!({ "version": v }))?;
                    Ok(request(addr, "PUT", &path, token, Some(&body)))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
        mlflow_reqs.push(
            ["1", "2"]
                .iter()
                .map(|v| {
                    let body =
                        serde_json::to_vec(&json!({ "name": ALIAS_MODEL, "alias": alias, "version": v }))?;
                    Ok(request(
                        addr,
                        "POST",
                        "/api/2.0/mlflow/registered-models/alias",
                        token,
                        Some(&body),
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
    }
    let native = hammer(
        t,
        format!("PUT /v1/models/{ALIAS_MODEL}/aliases/bench-<worker> (versions 1, 2 in turn)"),
        &s,
        native_reqs,
    )
    .await?;
    let mlflow = hammer(
        t,
        "POST /api/2.0/mlflow/registered-models/alias (versions 1, 2 in turn)".into(),
        &s,
        mlflow_reqs,
    )
    .await?;
    pairs.push(Pair::new("set alias", native, mlflow, "same model, same moves"));

    // Get a version by alias.
    eprintln!("      get version by alias");
    let native_path = format!("/v1/models/{ALIAS_MODEL}/aliases/champion/version");
    let mlflow_path = with_query(
        "/api/2.0/mlflow/registered-models/alias",
        &[("name", ALIAS_MODEL), ("alias", "champion")],
    )?;
    let native = hammer(t, format!("GET {native_path}"), &s, get(&native_path)).await?;
    let mlflow = hammer(t, format!("GET {mlflow_path}"), &s, get(&mlflow_path)).await?;
    pairs.push(Pair::new(
        "get version by alias",
        native,
        mlflow,
        "native answers from the read-through cache; MLflow adds the name mapping and its fields",
    ));

    // Search the versions of one model.
    eprintln!("      search versions");
    let limit = SEARCH_VERSIONS.to_string();
    let native_path = with_query(
        &format!("/v1/models/{SEARCH_MODEL}/versions"),
        &[("limit", limit.as_str())],
    )?;
    let filter = format!("name = '{SEARCH_MODEL}'");
    let mlflow_path = with_query(
        "/api/2.0/mlflow/model-versions/search",
        &[("filter", filter.as_str()), ("max_results", limit.as_str())],
    )?;
    let native = hammer(t, format!("GET {native_path}"), &s, get(&native_path)).await?;
    let mlflow = hammer(t, format!("GET {mlflow_path}"), &s, get(&mlflow_path)).await?;
    pairs.push(Pair::new(
        "search versions of a model",
        native,
        mlflow,
        "one page of the model's versions",
    ));

    // Search models by name among the fleet.
    eprintln!("      search models");
    let page = SEARCH_PAGE.to_string();
    let native_path = with_query(
        "/v1/models",
        &[("prefix", "bench/fleet-"), ("limit", page.as_str())],
    )?;
    let mlflow_path = with_query(
        "/api/2.0/mlflow/registered-models/search",
        &[
            ("filter", "name LIKE 'bench/fleet-%'"),
            ("max_results", page.as_str()),
        ],
    )?;
    let native = hammer(t, format!("GET {native_path}"), &s, get(&native_path)).await?;
    let mlflow = hammer(t, format!("GET {mlflow_path}"), &s, get(&mlflow_path)).await?;
    pairs.push(Pair::new(
        "search models by name",
        native,
        mlflow,
        "first page of the matching models; MLflow's answer also carries each model's latest versions",
    ));

    Ok(MlflowReport { settings: s, pairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_token_and_body() {
        let addr: SocketAddr = ([127, 0, 0, 1], 8080).into();
        let r = request(addr, "POST", "/x", Some("tok"), Some(b"{}"));
        let text = format!("{r:?}");
        assert!(text.contains("authorization: Bearer tok"), "{text}");
        assert!(text.contains("content-length: 2"), "{text}");
        let r = request(addr, "GET", "/y", None, None);
        let text = format!("{r:?}");
        assert!(!text.contains("authorization"), "{text}");
    }

    #[test]
    fn queries_are_encoded() -> anyhow::Result<()> {
        let q = with_query("/a/b", &[("filter", "name = 'x/y'"), ("n", "2")])?;
        assert_eq!(q, "/a/b?filter=name+%3D+%27x%2Fy%27&n=2");
        Ok(())
    }

    #[test]
    fn finds_the_admin_token() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        assert_eq!(admin_token(dir.path())?, None);
        let data = dir.path().join("ballast-bench-data-x");
        std::fs::create_dir(&data)?;
        assert_eq!(admin_token(dir.path())?, None);
        std::fs::write(data.join(ballast_server::auth::ADMIN_TOKEN_FILE), "secret\n")?;
        assert_eq!(admin_token(dir.path())?, Some("secret".into()));
        Ok(())
    }
}
