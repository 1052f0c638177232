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
    /// Metadata database: `postgres://user:password@host:port/db` (several nodes may share it)
    /// or `sqlite:///path/to/ballast.db`. Unset: SQLite at `<data_dir>/ballast.db`. Never
    /// printed (it may hold a password); logs name the host and database only.
    pub database_url: Option<Secret>,
    /// Most PostgreSQL connections used for reads at once (the writer has its own).
    pub database_max_connections: usize,
    /// Seconds allowed to open a PostgreSQL connection.
    pub database_connect_timeout_secs: u64,
    /// Seconds a PostgreSQL statement may run before the database cancels it.
    pub database_statement_timeout_secs: u64,
    /// Seconds a read waits for a free PostgreSQL connection before answering `unavailable`.
    pub database_pool_timeout_secs: u64,
    /// Where artifacts live: `s3://bucket/prefix` (an S3-compatible bucket, see the `s3_*`
    /// settings) or `file:///absolute/path`. Unset: `<data_dir>/blobs`.
    pub blob_url: Option<String>,
    /// Artifact regions, each `NAME=URL` (`eu-west=s3://bucket/prefix`,
    /// `backup=file:///srv/blobs`): blobs are written to the local region and replicated to the
    /// others in the background; reads fall back to them in this order. Not with `blob_url`. The
    /// `s3_*` settings apply to every S3 region.
    pub blob_regions: Vec<String>,
    /// Which of `blob_regions` is local (written and read first). Unset: the first one.
    pub local_region: Option<String>,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`). Unset: AWS (or
    /// `AWS_ENDPOINT_URL`).
    pub s3_endpoint: Option<String>,
    /// S3 region. Unset: `AWS_REGION`, else `us-east-1`.
    pub s3_region: Option<String>,
    /// Path-style S3 requests (`endpoint/bucket/key`), as most S3-compatible servers expect.
    pub s3_path_style: bool,
    /// S3 access key id. Unset: `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (never printed). Unset: `AWS_SECRET_ACCESS_KEY`.
    pub s3_secret_access_key: Option<Secret>,
    /// Size of the parts of multipart uploads to S3, in bytes (at least 5 MiB).
    pub s3_part_size_bytes: usize,
    /// Seconds one S3 request may take before it is retried.
    pub s3_timeout_secs: u64,
    /// Retries of a failed S3 request (timeouts, connection errors, 5xx, throttling).
    pub s3_max_retries: usize,
    /// Largest accepted artifact upload, in bytes.
    pub max_upload_bytes: u64,
    /// Largest accepted JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// `on`: every request except health, metrics and the OpenAPI document needs a bearer token
    /// (an admin token is written to `<data_dir>/admin.token` on first start). `off`: no checks
    /// at all — for local experiments only.
    pub auth: crate::auth::AuthMode,
    /// Actor recorded, with auth off, for requests without an `x-ballast-actor` header.
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
    /// Seconds between scheduled garbage collections (retention policies, then unreferenced
    /// blobs); 0 turns the schedule off (`POST /v1/gc` still works).
    pub gc_interval_secs: u64,
    /// An unreferenced blob stays while it was stored, attached or checked within this many
    /// seconds (and while any change that started before it is still running).
    pub gc_blob_grace_secs: u64,
}

impl Config {
    /// Where the blob store lives.
    ///
    /// # Errors
    /// When `blob_url` is not a usable URL.
    pub fn blob_location(&self) -> Result<ballast_blob::BlobLocation, ballast_blob::BlobUrlError> {
        match &self.blob_url {
            Some(url) => url.parse(),
            None => Ok(ballast_blob::BlobLocation::Local(self.data_dir.join("blobs"))),
        }
    }

    /// The metadata database URL: `database_url`, else SQLite at `<data_dir>/ballast.db`.
    #[must_use]
    pub fn database(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}", self.data_dir.join("ballast.db").display()),
        }
    }

    /// The metadata database for logs and errors: engine, host and database, never credentials.
    #[must_use]
    pub fn database_description(&self) -> String {
        describe_database_url(&self.database())
    }

    /// Pool and timeout settings toward PostgreSQL.
    #[must_use]
    pub fn pg_options(&self) -> ballast_store::PgOptions {
        ballast_store::PgOptions {
            connect_timeout: std::time::Duration::from_secs(self.database_connect_timeout_secs.max(1)),
            statement_timeout: std::time::Duration::from_secs(self.database_statement_timeout_secs.max(1)),
            max_connections: self.database_max_connections.max(1),
            pool_timeout: std::time::Duration::from_secs(self.database_pool_timeout_secs.max(1)),
        }
    }

    /// The S3 connection settings (the bucket and prefix come from `blob_url`).
    #[must_use]
    pub fn s3_options(&self) -> ballast_blob::S3Options {
        ballast_blob::S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.as_ref().map(|s| s.expose().to_owned()),
            part_size: self.s3_part_size_bytes,
            request_timeout: std::time::Duration::from_secs(self.s3_timeout_secs),
            max_retries: self.s3_max_retries,
            ..ballast_blob::S3Options::default()
        }
    }
}

/// A database URL without its credentials and parameters: `PostgreSQL at host:port/db` or
/// `SQLite at /path`.
#[must_use]
pub fn describe_database_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("SQLite at {url}");
    };
    if scheme == "sqlite" {
        return format!("SQLite at {rest}");
    }
    if scheme != "postgres" && scheme != "postgresql" {
        return format!("a {scheme} database");
    }
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    if rest.is_empty() {
        "PostgreSQL (default host)".to_owned()
    } else {
        format!("PostgreSQL at {rest}")
    }
}

/// A secret setting: read as a plain string, but printed and serialized as `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
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
            database_url: None,
            database_max_connections: ballast_store::PgOptions::default().max_connections,
            database_connect_timeout_secs: ballast_store::PgOptions::default().connect_timeout.as_secs(),
            database_statement_timeout_secs: ballast_store::PgOptions::default().statement_timeout.as_secs(),
            database_pool_timeout_secs: ballast_store::PgOptions::default().pool_timeout.as_secs(),
            blob_url: None,
            blob_regions: Vec::new(),
            local_region: None,
            s3_endpoint: None,
            s3_region: None,
            s3_path_style: false,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_part_size_bytes: ballast_blob::DEFAULT_PART_SIZE,
            s3_timeout_secs: 60,
            s3_max_retries: 3,
            max_upload_bytes: 1 << 40,
            max_json_bytes: 8 << 20,
            auth: crate::auth::AuthMode::On,
            default_actor: "anonymous".into(),
            shutdown_grace_secs: 30,
            webhook_timeout_secs: 10,
            webhook_retry_base_ms: 1000,
            webhook_max_backoff_secs: 600,
            webhook_give_up_after_secs: 24 * 3600,
            webhook_concurrency_per_target: 4,
            mlflow_default_namespace: default_mlflow_namespace(),
            gc_interval_secs: 0,
            gc_blob_grace_secs: 3600,
        }
    }
}
