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
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
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
        }
    }
}
