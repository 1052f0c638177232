//! Static routing configuration: a `routes.toml` file (or a JSON snapshot as the registry serves
//! it) turned into a validated [`RoutingSnapshot`], and the router process's own settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_api::routing::{RegionPolicy, Route, RoutingSnapshot, SnapshotInvalid};
use serde::Deserialize;

use crate::health::FailureRatePolicy;

/// Settings of one router process.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The region this router runs in; its targets form the first tier.
    pub region: String,
    /// The static routes file, watched for changes.
    pub routes_file: Option<PathBuf>,
    /// Where the last-known-good snapshot is kept (none: not persisted).
    pub state_dir: Option<PathBuf>,
    /// The registry to watch for snapshots (`http://host:port`); excludes `routes_file`.
    pub registry: Option<String>,
    /// How long one long-poll of the registry waits for a change.
    pub registry_wait: Duration,
    /// First retry delay after a failed registry poll (doubles up to `registry_retry_max`).
    pub registry_retry_min: Duration,
    /// Longest retry delay after failed registry polls.
    pub registry_retry_max: Duration,
    /// How often the routes file's modification time is checked.
    pub watch_interval: Duration,
    /// Largest request body of an OpenAI-style request (read whole to find the `model`).
    pub max_openai_body_bytes: usize,
    /// Time in-flight requests get to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// The failure-rate rule of passive outlier detection, for routes that set none
    /// (`health.failure_rate`).
    pub failure_rate: FailureRatePolicy,
    /// A response that started to flow is cut when no byte arrives from the upstream for this
    /// long (and counts as a failure of that target), for routes that set none
    /// (`timeouts.stream_idle_ms`).
    pub stream_idle_timeout: Duration,
    /// Bearer token sent to the registry (`--registry`), when it requires one.
    pub registry_token: Option<RegistryToken>,
    /// Threads serving requests, each with a single-threaded runtime of its own and its own
    /// upstream connections (a request never changes threads). 0 serves on the runtime that
    /// calls [`crate::Router::serve`].
    pub workers: usize,
    /// A PEM file of extra CA certificates trusted for `https` targets (beside the Web PKI roots).
    pub upstream_ca: Option<PathBuf>,
    /// A client connection with no request under way is closed after this long.
    pub client_idle_timeout: Duration,
    /// A client that started a request head has this long to finish it, and a request body
    /// may pause this long at most between two reads (slow clients, and clients that never
    /// finish, do not hold a connection forever).
    pub client_head_timeout: Duration,
    /// The token `/admin/*` requests must present as `Authorization: Bearer <token>`. Without
    /// one, `/admin/*` answers loopback peers only.
    pub admin_token: Option<AdminToken>,
}

impl RouterConfig {
    /// Defaults for a router in `region`.
    #[must_use]
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            region: region.into(),
            routes_file: None,
            state_dir: None,
            registry: None,
            registry_wait: Duration::from_secs(30),
            registry_retry_min: Duration::from_millis(500),
            registry_retry_max: Duration::from_secs(30),
            watch_interval: Duration::from_secs(1),
            max_openai_body_bytes: 16 << 20,
            shutdown_grace: Duration::from_secs(30),
            failure_rate: FailureRatePolicy::default(),
            stream_idle_timeout: Duration::from_secs(60),
            upstream_ca: None,
            registry_token: None,
            workers: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            client_idle_timeout: Duration::from_secs(300),
            client_head_timeout: Duration::from_secs(30),
            admin_token: None,
        }
    }
}

/// A registry API token: never printed (its `Debug` shows only that it is set).
#[derive(Clone)]
pub struct RegistryToken(String);

impl RegistryToken {
    /// Wraps a token.
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the `Authorization` header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RegistryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryToken(****)")
    }
}

/// The token guarding the router's `/admin/*` endpoints: never printed (its `Debug` shows
/// only that it is set) and compared in constant time.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token (surrounding whitespace, such as a file's final newline, is dropped).
    ///
    /// # Errors
    /// An empty token, or one with characters a header cannot carry (spaces, control
    /// characters, non-ASCII).
    pub fn new(token: &str) -> Result<Self, String> {
        let t = token.trim();
        if t.is_empty() {
            return Err("the admin token is empty".to_owned());
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".to_owned());
        }
        Ok(Self(t.to_owned()))
    }

    /// Reads the token from the first line of a file.
    ///
    /// # Errors
    /// The file cannot be read or holds no usable token.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the admin token file {}: {e}", path.display()))?;
        Self::new(text.lines().next().unwrap_or("")).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    #[must_use]
    pub fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        let mut diff = u8::from(want.len() != presented.len());
        for (i, w) in want.iter().enumerate() {
            diff |= w ^ presented.get(i).copied().unwrap_or(0);
        }
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(****)")
    }
}

/// Why a routes file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the routes file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML/JSON of the expected shape.
    #[error("cannot parse the routes file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The content breaks a routing rule.
    #[error("the routes file {path} is not a valid routing snapshot: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem.
        source: SnapshotInvalid,
    },
}

/// The shape of `routes.toml`: a snapshot without its digest (the router computes it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    generation: u64,
    #[serde(default)]
    regions: BTreeMap<String, RegionPolicy>,
    #[serde(default)]
    routes: Vec<Route>,
}

/// Parses the text of a routes file. TOML unless `json` (then a full snapshot with digest).
///
/// # Errors
/// Unparsable text or an invalid snapshot.
pub fn parse_routes(path: &Path, text: &str, json: bool) -> Result<RoutingSnapshot, ConfigError> {
    let snapshot = if json {
        serde_json::from_str::<RoutingSnapshot>(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    } else {
        let file: RoutesFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        RoutingSnapshot::new(file.generation, file.regions, file.routes)
    };
    snapshot.validate().map_err(|source| ConfigError::Invalid {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(snapshot)
}

/// Reads and validates a routes file (`.json`: a snapshot; anything else: TOML).
///
/// # Errors
/// Unreadable, unparsable or invalid.
pub fn load_routes_file(path: &Path) -> Result<RoutingSnapshot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse_routes(path, &text, json)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use ballast_api::routing::RouteKind;

    use super::*;

    const EXAMPLE: &str = r#"
generation = 3

[regions.eu-west]
failover = ["eu-central", "us-east"]

[[routes]]
name = "support-bot"
fallbacks = ["support-bot-small"]
split = [
  { model_version = "acme/support-bot/3", weight = 95 },
  { model_version = "acme/support-bot/4", weight = 5 },
]
timeouts = { connect_ms = 500, first_byte_ms = 10000, deadline_ms = 30000 }
retry = { max_attempts = 3 }
health = { consecutive_failures = 3, active = { path = "/health", interval_ms = 2000 } }
failover = { min_healthy_percent = 50, hold_down_ms = 60000 }

[[routes.targets]]
id = "sb3-euw-a"
url = "http://127.0.1.10:8000"
region = "eu-west"
model_version = "acme/support-bot/3"

[[routes.targets]]
id = "sb4-euw-a"
url = "http://127.0.1.11:8000"
region = "eu-west"
model_version = "acme/support-bot/4"

[[routes]]
name = "support-bot-small"
[[routes.targets]]
id = "small-use-a"
url = "http://127.2.0.5:8000"
region = "us-east"
model_version = "acme/support-bot-small/1"
upstream_model = "small"

[[routes]]
name = "ocr"
kind = "prefix"
prefix = "/ocr"
strip_prefix = true
[[routes.targets]]
id = "ocr-a"
url = "http://127.0.3.1:9000/v2"
region = "eu-west"
model_version = "acme/ocr/7"
"#;

    #[test]
    fn the_documented_example_parses_and_validates() {
        let s = parse_routes(Path::new("routes.toml"), EXAMPLE, false).unwrap();
        assert_eq!(s.generation, 3);
        assert_eq!(s.routes.len(), 3);
        assert_eq!(s.routes[0].retry.max_attempts, 3);
        assert_eq!(s.routes[0].retry.budget_percent, 20);
        assert_eq!(s.routes[0].health.active.as_ref().unwrap().interval_ms, 2000);
        assert_eq!(s.routes[2].kind, RouteKind::Prefix);
        assert_eq!(s.routes[0].sticky_header, "x-session-id");
        // The same snapshot as JSON (as the registry would serve it) parses to the same digest.
        let json = serde_json::to_string(&s).unwrap();
        let back = parse_routes(Path::new("snap.json"), &json, true).unwrap();
        assert_eq!(back.digest, s.digest);
    }

    #[test]
    fn unknown_keys_and_rule_violations_are_clear_errors() {
        let err = parse_routes(
            Path::new("r.toml"),
            "generation = 1\n[[routes]]\nnme = \"x\"\n",
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nme"), "{err}");
        let bad = EXAMPLE.replace("fallbacks = [\"support-bot-small\"]", "fallbacks = [\"nope\"]");
        let err = parse_routes(Path::new("r.toml"), &bad, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[0].fallbacks[0]: unknown route \"nope\""),
            "{err}"
        );
    }
}
