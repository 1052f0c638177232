//! The server's configuration: one documented struct, defaults for everything.
//! The CLI layers it: defaults < `ballast.toml` < `BALLAST_*` environment < flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Registry server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory holding `ballast.db` (SQLite metadata) and `blobs/` (artifacts).
    pub data_dir: PathBuf,
    /// Largest accepted artifact upload, in bytes.
    pub max_upload_bytes: u64,
    /// Largest accepted JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// Actor recorded for requests without an `x-ballast-actor` header.
    pub default_actor: String,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Seconds one webhook delivery attempt may take (connect, send, answer).
    pub webhook_timeout_secs: u64,
    /// Delay before the first retry of a failed delivery, in milliseconds; it doubles (with
    /// jitter) on each further failure.
    pub webhook_retry_base_ms: u64,
    /// Longest delay between two attempts, in seconds.
    pub webhook_max_backoff_secs: u64,
    /// A delivery still failing this many seconds after its event is marked dead.
    pub webhook_give_up_after_secs: u64,
    /// Deliveries in flight at once to one webhook (a slow receiver never delays the others).
    pub webhook_concurrency_per_target: usize,
    /// Namespace that MLflow model names without a `/` map to (the MLflow API always answers
    /// with the name the client used).
    pub mlflow_default_namespace: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_mlflow_namespace() -> String {
    "mlflow".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: PathBuf::from("ballast-data"),
            max_upload_bytes: 1 << 40,
            max_json_bytes: 8 << 20,
            default_actor: "anonymous".into(),
            shutdown_grace_secs: 30,
            webhook_timeout_secs: 10,
            webhook_retry_base_ms: 1000,
            webhook_max_backoff_secs: 600,
            webhook_give_up_after_secs: 24 * 3600,
            webhook_concurrency_per_target: 4,
            mlflow_default_namespace: default_mlflow_namespace(),
        }
    }
}
