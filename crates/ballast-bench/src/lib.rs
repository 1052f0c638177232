//! Benchmarks for Ballast.
//!
//! `registry` starts the real server in-process on its own two-thread tokio runtime (so it gets
//! the same share of the machine as in production on a small box), drives it from a separate
//! runtime with plain keep-alive HTTP clients, compares the figures with the project's targets,
//! prints a table and writes the figures as JSON.
//!
//! `router` puts the inference router (preferably the real `ballast router` process) in front of
//! a fast local backend and measures its added latency at a fixed rate, its maximum throughput
//! against calling the backend directly and against HAProxy, and its memory with many routes.

mod backend;
mod cpu;
mod harness;
mod load;
mod machine;
mod mlflow;
mod rawhttp;
mod registry;
mod report;
mod router;
mod rss;
mod throughput;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Command line of `ballast-bench`.
#[derive(Debug, Parser)]
#[command(name = "ballast-bench", about = "Benchmarks for the Ballast model registry")]
pub struct Cli {
    /// Which benchmark to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Alias resolution, version creation and artifact throughput of the registry server.
    Registry(RegistryArgs),
    /// Overhead, throughput (against HAProxy) and memory of the inference router.
    Router(RouterArgs),
}

/// Settings of the `router` benchmark.
#[derive(Debug, Clone, Args)]
pub struct RouterArgs {
    /// Seconds each load phase is measured for, over all rounds together [default: 10, or 2 with
    /// --quick].
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Request rate of the fixed-rate (open-loop) latency phases, per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Routes in the generated routes file (each with one target: the backend).
    #[arg(long, default_value_t = 1000)]
    pub routes: usize,
    /// Keep-alive connections of the fixed-rate phases.
    #[arg(long, default_value_t = 32)]
    pub rate_connections: usize,
    /// Rounds the measurement is split into. Each round runs every phase once (latency and
    /// throughput; router and HAProxy take turns going first), so a change in the machine's
    /// load during the run meets both proxies alike; the figures pool every round
    /// [default: 3, or 1 with --quick].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Keep-alive connections (and in-flight requests) of the max-throughput phases.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Where to write the figures as JSON (parent directories are created).
    #[arg(long, default_value = "bench-results/router.json")]
    pub json_out: PathBuf,
    /// Short phases: a smoke run for CI.
    #[arg(long)]
    pub quick: bool,
    /// The `ballast` binary run as the router process [default: `ballast` next to this binary,
    /// i.e. target/release/ballast after `cargo build --release -p ballast-cli`].
    #[arg(long)]
    pub ballast_bin: Option<PathBuf>,
    /// Run the router in-process (on its own runtime) even when the `ballast` binary exists;
    /// its RSS then includes the backend and the load generator.
    #[arg(long)]
    pub in_process: bool,
    /// Worker threads of the in-process router's runtime.
    #[arg(long, default_value_t = 2)]
    pub router_threads: usize,
    /// Worker threads of the backend's runtime. One by default: the backend and the load
    /// generator share the machine with the proxy under test, and more runnable threads than
    /// cores turn the latency and throughput figures into run-queue waits (one thread each
    /// still drives about 80,000 req/s direct on 2 cores, well above what a proxy reaches).
    #[arg(long, default_value_t = 1)]
    pub backend_threads: usize,
    /// Worker threads of the load generator's runtime (one by default; see `--backend-threads`).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Skip HAProxy (no install attempt either).
    #[arg(long)]
    pub no_haproxy: bool,
    /// Directory for the routes file and state [default: the system temp dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Exit with an error when a target is missed (correctness failures always do).
    #[arg(long)]
    pub strict: bool,
}

impl RouterArgs {
    /// Measured time of each phase, over all rounds together.
    #[must_use]
    pub fn duration(&self) -> std::time::Duration {
        let secs = self.duration_secs.unwrap_or(if self.quick { 2.0 } else { 10.0 });
        std::time::Duration::from_secs_f64(secs.clamp(0.1, 3600.0))
    }

    /// How many rounds the phases are split into.
    #[must_use]
    pub fn rounds(&self) -> usize {
        self.rounds
            .unwrap_or(if self.quick { 1 } else { 3 })
            .clamp(1, 100)
    }

    /// Measured time of each phase in one round.
    #[must_use]
    pub fn round_duration(&self) -> std::time::Duration {
        #[allow(clippy::cast_possible_truncation)]
        let n = self.rounds() as u32;
        self.duration() / n
    }
}

/// Settings of the `registry` benchmark.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Seconds each load phase is measured for [default: 10, or 2 with --quick].
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Concurrent keep-alive connections (and in-flight requests) of the load phases.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Size of the uploaded/downloaded artifact in MiB [default: 1024, or 64 with --quick].
    #[arg(long)]
    pub upload_mib: Option<u64>,
    /// Where to write the figures as JSON (parent directories are created).
    #[arg(long, default_value = "bench-results/registry.json")]
    pub json_out: PathBuf,
    /// Short phases and a 64 MiB artifact: a smoke run for CI.
    #[arg(long)]
    pub quick: bool,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Directory for the server's data and the test artifact [default: the system temp dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Client of the request-rate phases: `raw` (a minimal keep-alive HTTP/1.1 client, cheap
    /// like `wrk`, leaving more of the shared CPU to the server) or `reqwest`.
    #[arg(long, value_enum, default_value_t = HttpClient::Raw)]
    pub http_client: HttpClient,
    /// Exit with an error when a target is missed (correctness failures always do).
    #[arg(long)]
    pub strict: bool,
    /// Models in the registry while the MLflow and native model searches run
    /// [default: 1000, or 200 with --quick].
    #[arg(long)]
    pub fleet_models: Option<usize>,
}

/// Which HTTP client drives the request-rate phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpClient {
    /// One hand-driven HTTP/1.1 keep-alive connection per worker.
    Raw,
    /// A shared `reqwest::Client` (its pool opens one connection per concurrent request).
    Reqwest,
}

impl RegistryArgs {
    /// Length of each measured load phase.
    #[must_use]
    pub fn duration(&self) -> std::time::Duration {
        let secs = self.duration_secs.unwrap_or(if self.quick { 2.0 } else { 10.0 });
        std::time::Duration::from_secs_f64(secs.clamp(0.1, 3600.0))
    }

    /// Artifact size in bytes.
    #[must_use]
    pub fn upload_bytes(&self) -> u64 {
        self.upload_mib
            .unwrap_or(if self.quick { 64 } else { 1024 })
            .max(1)
            << 20
    }
}

/// Runs the chosen benchmark.
///
/// # Errors
/// When the server cannot start, a phase cannot be set up, a correctness check fails (version
/// numbers with gaps, a corrupted download), the report cannot be written, or — with
/// `--strict` — a target is missed.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Registry(args) => registry::run(&args),
        Command::Router(args) => router::run(&args),
    }
}
