//! The routing snapshot: the one format in which routes reach `ballast router`, whether they come
//! from a static `routes.toml` or from the registry's `GET /v1/routing/snapshot`.
//!
//! A snapshot is versioned by a `generation` that only grows and identified by a `digest`: the
//! SHA-256 of its canonical content ([`compute_digest`]). A router accepts a snapshot only when
//! [`RoutingSnapshot::validate`] passes and its generation is newer than the one it serves, so a
//! broken or stale snapshot never replaces a good one.
//!
//! A [`Route`] names a logical model (`support-bot`, the `model` of an OpenAI-style request) or a
//! path prefix, and lists its [`Target`]s: endpoints, each in a region and serving one model
//! version. Requests walk the targets in tiers (local region, other regions, fallback routes)
//! under the route's timeouts, retry budget and health settings.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa::ToSchema;

/// The routing table a router serves, as produced by the registry or read from a static file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingSnapshot {
    /// Grows with every change; a router never replaces a snapshot with an older generation.
    pub generation: u64,
    /// SHA-256 (64 lowercase hex characters) of the canonical content, see [`compute_digest`].
    pub digest: String,
    /// Per-region settings, keyed by region name (which other regions to spill to, in order).
    #[serde(default)]
    pub regions: BTreeMap<String, RegionPolicy>,
    /// The routes.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// Settings of one region, seen from a router running in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionPolicy {
    /// Other regions to spill to, nearest first. Regions not listed come after, in the order
    /// their targets first appear in a route.
    #[serde(default)]
    pub failover: Vec<String>,
}

/// How a route is selected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// OpenAI-compatible: `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`
    /// whose JSON body has `"model": "<route name>"`.
    #[default]
    Openai,
    /// Any HTTP request whose path starts with the route's `prefix`.
    Prefix,
}

/// A logical model (or HTTP API) and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The route's name: for `openai` routes the `model` clients send (e.g. `support-bot`).
    #[schema(example = "support-bot")]
    pub name: String,
    /// How requests are matched to this route.
    #[serde(default)]
    pub kind: RouteKind,
    /// For `prefix` routes: the path prefix (starts with `/`), matched on segment boundaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// For `prefix` routes: remove the prefix from the path sent upstream.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The endpoints serving this route.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Routes tried, in order, when every target of this one failed (e.g. the previous
    /// production version, or a smaller model). They must be of the same kind.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Traffic split between model versions (canary). Empty: one pool of all targets.
    #[serde(default)]
    pub split: Vec<Split>,
    /// Requests carrying this header are pinned (consistent hashing on its value) to one model
    /// version and target while they stay healthy.
    #[serde(default = "default_sticky_header")]
    pub sticky_header: String,
    /// Time limits.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Retry limits.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Outlier detection, active checks and panic mode.
    #[serde(default)]
    pub health: HealthPolicy,
    /// When to leave the local region and when to come back.
    #[serde(default)]
    pub failover: FailoverPolicy,
    /// This route's own region order, which replaces the snapshot's `regions` for it (absent:
    /// the snapshot's order, as seen from the router's region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<RouteRegions>,
}

/// The order in which a route's regions are tried, set on the route itself (registry routes
/// carry it this way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRegions {
    /// Regions, preferred first. Regions of the route's targets that are not listed come after,
    /// in the order they first appear.
    pub order: Vec<String>,
    /// Where the router's own region goes.
    #[serde(default)]
    pub local: LocalRegionPolicy,
}

/// Where a router puts its own region in a route's region order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocalRegionPolicy {
    /// The router's own region first, then `order` (without it): every router serves locally
    /// while its region is healthy.
    #[default]
    First,
    /// `order` exactly as listed, wherever the router runs: the first listed region is the home
    /// region for every router (active/passive), and failover protects it.
    Listed,
}

impl LocalRegionPolicy {
    /// The `snake_case` name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Listed => "listed",
        }
    }
}

fn default_sticky_header() -> String {
    "x-session-id".to_owned()
}

/// One endpoint serving a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Unique across the snapshot; health state follows it across reloads.
    #[schema(example = "eu-west-a")]
    pub id: String,
    /// Base URL (`http://` or `https://`, no query); the request path is appended to it.
    #[schema(example = "http://127.0.0.7:8000")]
    pub url: String,
    /// Region the endpoint runs in.
    #[schema(example = "eu-west")]
    pub region: String,
    /// The registry version it serves, `namespace/model/N`.
    #[schema(example = "acme/support-bot/3")]
    pub model_version: String,
    /// Relative share of traffic among the targets of the same version and region; 0 means
    /// standby (used only when the others are unavailable).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Rewrites the request body's `model` to this value (openai routes), for backends that
    /// know the model by another name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// A version's share of a route's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// `namespace/model/N`, as in the targets.
    pub model_version: String,
    /// Relative weight (e.g. 95 and 5).
    pub weight: u32,
}

/// Time limits of a request through a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Per attempt: establishing the connection.
    #[serde(default = "default_connect_ms")]
    pub connect_ms: u64,
    /// Per attempt: from sending the request to the first byte of the response body.
    #[serde(default = "default_first_byte_ms")]
    pub first_byte_ms: u64,
    /// Whole request, all attempts together, until the response starts to flow to the client.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Longest silence from an upstream once its response is flowing; the response is then cut
    /// and counted as a failure of the target. Absent: the router's own setting
    /// (`stream_idle_timeout`, 60 s by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_ms: Option<u64>,
}

fn default_connect_ms() -> u64 {
    1_000
}
fn default_first_byte_ms() -> u64 {
    30_000
}
fn default_deadline_ms() -> u64 {
    60_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: default_connect_ms(),
            first_byte_ms: default_first_byte_ms(),
            deadline_ms: default_deadline_ms(),
            stream_idle_ms: None,
        }
    }
}

/// How many attempts a request may make, and the budget that stops retry storms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included (1 = never retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Retries may be at most this percentage of the route's requests over the window.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries always allowed per second of window, whatever the percentage says.
    #[serde(default = "default_min_retries_per_second")]
    pub min_retries_per_second: u32,
    /// Length of the sliding window.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Request bodies up to this size are kept for replay; a larger body is streamed and not
    /// retried once it started to flow.
    #[serde(default = "default_replay_buffer_bytes")]
    pub replay_buffer_bytes: u64,
}

fn default_max_attempts() -> u32 {
    4
}
fn default_budget_percent() -> u32 {
    20
}
fn default_min_retries_per_second() -> u32 {
    5
}
fn default_window_ms() -> u64 {
    10_000
}
fn default_replay_buffer_bytes() -> u64 {
    1 << 20
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            budget_percent: default_budget_percent(),
            min_retries_per_second: default_min_retries_per_second(),
            window_ms: default_window_ms(),
            replay_buffer_bytes: default_replay_buffer_bytes(),
        }
    }
}

/// Passive outlier detection, optional active checks and panic mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthPolicy {
    /// Consecutive failed attempts (connect error, timeout, 5xx) that eject a target.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection length; doubles with each ejection in a row.
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// Longest ejection (and longest `Retry-After` honoured).
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// At most this percentage of a route's targets is ejected at once (at least one may be).
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// When fewer than this percentage of a route's targets is healthy, health is ignored and
    /// traffic goes across all targets (panic mode).
    #[serde(default = "default_panic_threshold_percent")]
    pub panic_threshold_percent: u32,
    /// Path the router probes (`GET`) when an ejection ends (half-open), unless real traffic
    /// probes first. Any answer below 500 counts as alive.
    #[serde(default = "default_probe_path")]
    pub probe_path: String,
    /// Optional periodic checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveCheck>,
    /// The failure-rate ejection rule of this route's targets. Absent: the router's own
    /// setting (window 10 s, 20 requests, 50 % by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
}

/// Failure-rate ejection: a target whose failed share of the attempts over the last `window_ms`
/// is above `failure_percent` — once the window holds at least `min_requests` attempts — is
/// ejected (same back-off and half-open return as the consecutive-failures rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// Length of the sliding window.
    #[serde(default = "default_failure_rate_window_ms")]
    pub window_ms: u64,
    /// Attempts the window must hold before the rule applies.
    #[serde(default = "default_failure_rate_min_requests")]
    pub min_requests: u32,
    /// Eject when the failed share is above this percentage (100 turns the rule off).
    #[serde(default = "default_failure_percent")]
    pub failure_percent: u32,
}

fn default_failure_rate_window_ms() -> u64 {
    10_000
}
fn default_failure_rate_min_requests() -> u32 {
    20
}
fn default_failure_percent() -> u32 {
    50
}

impl Default for FailureRate {
    fn default() -> Self {
        Self {
            window_ms: default_failure_rate_window_ms(),
            min_requests: default_failure_rate_min_requests(),
            failure_percent: default_failure_percent(),
        }
    }
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection_ms() -> u64 {
    1_000
}
fn default_max_ejection_ms() -> u64 {
    30_000
}
fn default_max_ejection_percent() -> u32 {
    50
}
fn default_panic_threshold_percent() -> u32 {
    30
}
fn default_probe_path() -> String {
    "/health".to_owned()
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
            panic_threshold_percent: default_panic_threshold_percent(),
            probe_path: default_probe_path(),
            active: None,
            failure_rate: None,
        }
    }
}

/// Periodic `GET` checks of every target of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheck {
    /// Path appended to the target URL.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Time between checks of one target.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Time a check may take.
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes (2xx) that bring a target back.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take it out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_interval_ms() -> u64 {
    5_000
}
fn default_check_timeout_ms() -> u64 {
    1_000
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Region failover: when the local region's healthy share drops below the threshold, traffic
/// spills to the other regions; it comes back after the local region stayed healthy for the
/// hold-down period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverPolicy {
    /// Percentage of the local region's targets that must be healthy for it to serve first.
    #[serde(default = "default_min_healthy_percent")]
    pub min_healthy_percent: u32,
    /// How long the local region must stay above the threshold before traffic returns.
    #[serde(default = "default_hold_down_ms")]
    pub hold_down_ms: u64,
}

fn default_min_healthy_percent() -> u32 {
    50
}
fn default_hold_down_ms() -> u64 {
    30_000
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            min_healthy_percent: default_min_healthy_percent(),
            hold_down_ms: default_hold_down_ms(),
        }
    }
}

/// Why an attempt failed, as listed in a final failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptErrorClass {
    /// The connection could not be established (refused, reset, unreachable).
    Connect,
    /// Establishing the connection took longer than `connect_ms`.
    ConnectTimeout,
    /// No response (headers and first body byte) within `first_byte_ms`.
    FirstByteTimeout,
    /// The request's deadline ran out during this attempt.
    Deadline,
    /// The upstream answered 5xx.
    UpstreamStatus,
    /// The upstream answered 429.
    RateLimited,
    /// The connection broke while sending the request or before the first body byte.
    UpstreamIo,
}

impl AttemptErrorClass {
    /// The `snake_case` name, as in JSON and metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::FirstByteTimeout => "first_byte_timeout",
            Self::Deadline => "deadline",
            Self::UpstreamStatus => "upstream_status",
            Self::RateLimited => "rate_limited",
            Self::UpstreamIo => "upstream_io",
        }
    }
}

/// One failed attempt of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttemptReport {
    /// The route whose target was tried (differs from the requested one after a fallback).
    pub route: String,
    /// Target id.
    pub target: String,
    /// Target region.
    pub region: String,
    /// What went wrong.
    pub error: AttemptErrorClass,
    /// The upstream's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time the attempt took.
    pub elapsed_ms: u64,
}

/// The body of an error answered by the router itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouterErrorBody {
    /// What went wrong.
    pub error: RouterErrorDetail,
}

/// What went wrong in the router.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouterErrorDetail {
    /// Stable code: `unknown_route`, `invalid_request`, `payload_too_large`,
    /// `no_healthy_target`, `upstream_failed`, `deadline_exceeded`, `retry_budget_exhausted`,
    /// `client_body`, `internal`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Where the error came from: `upstream`, `client` or `internal`.
    pub source: String,
    /// Every failed attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptReport>,
}

/// What is hashed into a snapshot's digest.
#[derive(Serialize)]
struct CanonicalContent<'a> {
    format: u32,
    generation: u64,
    regions: &'a BTreeMap<String, RegionPolicy>,
    routes: &'a [Route],
}

/// Version of the canonical form hashed by [`compute_digest`].
pub const SNAPSHOT_FORMAT: u32 = 1;

/// SHA-256 of the snapshot's canonical content: compact JSON of the format number, the
/// generation, the regions (sorted by name) and the routes (in order, every field present with
/// its resolved default), as 64 lowercase hex characters.
#[must_use]
pub fn compute_digest(generation: u64, regions: &BTreeMap<String, RegionPolicy>, routes: &[Route]) -> String {
    let content = CanonicalContent {
        format: SNAPSHOT_FORMAT,
        generation,
        regions,
        routes,
    };
    // Serializing plain structs, strings and integers to a Vec cannot fail; an empty input would
    // still give a digest that no valid snapshot matches.
    let bytes = serde_json::to_vec(&content).unwrap_or_default();
    let hash = Sha256::digest(&bytes);
    let mut out = String::with_capacity(64);
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One problem found by [`RoutingSnapshot::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotProblem {
    /// Where: `routes[2].targets[0].url`, `regions.eu-west.failover`, `digest`, ….
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for SnapshotProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of an invalid snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInvalid {
    /// The problems, in the order of the snapshot's fields.
    pub problems: Vec<SnapshotProblem>,
}

impl fmt::Display for SnapshotInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid routing snapshot: ")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SnapshotInvalid {}

/// The paths an `openai` route answers.
pub const OPENAI_PATHS: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

impl RoutingSnapshot {
    /// Builds a snapshot and computes its digest (not validated: call [`Self::validate`]).
    #[must_use]
    pub fn new(generation: u64, regions: BTreeMap<String, RegionPolicy>, routes: Vec<Route>) -> Self {
        let digest = compute_digest(generation, &regions, &routes);
        Self {
            generation,
            digest,
            regions,
            routes,
        }
    }

    /// The route with this name.
    #[must_use]
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// Checks everything a router relies on: the digest matches the content, names and ids are
    /// unique, URLs are usable, weights and percentages make sense, fallbacks exist, are of the
    /// same kind and form no cycle.
    ///
    /// # Errors
    /// Every problem found, each with the field at fault.
    pub fn validate(&self) -> Result<(), SnapshotInvalid> {
        let mut v = Problems::default();
        if self.generation == 0 {
            v.add("generation", "must be at least 1");
        }
        let expected = compute_digest(self.generation, &self.regions, &self.routes);
        if self.digest != expected {
            v.add(
                "digest",
                format!(
                    "does not match the content (expected {expected}, got {:?}); the snapshot was \
                     changed or damaged after it was made",
                    self.digest
                ),
            );
        }
        for (region, policy) in &self.regions {
            let field = format!("regions.{region}.failover");
            check_label(&mut v, &format!("regions.{region}"), region);
            let mut seen = BTreeSet::new();
            for other in &policy.failover {
                if other == region {
                    v.add(&field, format!("lists its own region {region:?}"));
                } else if !seen.insert(other) {
                    v.add(&field, format!("lists {other:?} twice"));
                }
            }
        }
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut prefixes: HashMap<&str, usize> = HashMap::new();
        let mut target_ids: HashMap<&str, String> = HashMap::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            validate_route(&mut v, &at, route);
            if let Some(prev) = names.insert(route.name.as_str(), i) {
                v.add(
                    format!("{at}.name"),
                    format!("{:?} is already the name of routes[{prev}]", route.name),
                );
            }
            if let (RouteKind::Prefix, Some(prefix)) = (route.kind, route.prefix.as_deref()) {
                if let Some(prev) = prefixes.insert(prefix, i) {
                    v.add(
                        format!("{at}.prefix"),
                        format!("{prefix:?} is already the prefix of routes[{prev}]"),
                    );
                }
            }
            for (j, t) in route.targets.iter().enumerate() {
                let here = format!("{at}.targets[{j}]");
                if let Some(prev) = target_ids.insert(t.id.as_str(), here.clone()) {
                    v.add(
                        format!("{here}.id"),
                        format!(
                            "{:?} is already the id of {prev}; target ids are unique across the snapshot",
                            t.id
                        ),
                    );
                }
            }
        }
        // Fallbacks: known, same kind, not itself.
        for (i, route) in self.routes.iter().enumerate() {
            for (j, fb) in route.fallbacks.iter().enumerate() {
                let field = format!("routes[{i}].fallbacks[{j}]");
                match names.get(fb.as_str()).map(|&k| &self.routes[k]) {
                    None => v.add(field, format!("unknown route {fb:?}")),
                    Some(other) if other.name == route.name => {
                        v.add(field, "a route cannot fall back to itself");
                    }
                    Some(other) if other.kind != route.kind => v.add(
                        field,
                        format!(
                            "{fb:?} is a {:?} route and {:?} a {:?} route; fallbacks must be of the same kind",
                            other.kind, route.name, route.kind
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        if let Some(cycle) = find_fallback_cycle(&self.routes, &names) {
            v.add(
                "routes",
                format!("fallbacks form a cycle: {}", cycle.join(" -> ")),
            );
        }
        v.finish()
    }
}

#[derive(Default)]
struct Problems(Vec<SnapshotProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SnapshotProblem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), SnapshotInvalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SnapshotInvalid { problems: self.0 })
        }
    }
}

/// Route names: printable ASCII without spaces (model names such as `meta-llama/Llama-3:8b`).
fn check_name(v: &mut Problems, field: &str, name: &str) {
    if name.is_empty() || name.len() > 200 {
        v.add(field, "must be 1 to 200 characters");
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        v.add(
            field,
            format!("{name:?} may hold only printable ASCII without spaces"),
        );
    }
}

/// Ids and regions: letters, digits, `-`, `_`, `.`.
fn check_label(v: &mut Problems, field: &str, label: &str) {
    if label.is_empty() || label.len() > 100 {
        v.add(field, "must be 1 to 100 characters");
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        v.add(
            field,
            format!("{label:?} may hold only letters, digits, '-', '_' and '.'"),
        );
    }
}

fn check_path(v: &mut Problems, field: &str, path: &str) {
    if !path.starts_with('/') {
        v.add(field, format!("{path:?} must start with '/'"));
    } else if !path.bytes().all(|b| b.is_ascii_graphic()) || path.contains(['?', '#']) {
        v.add(
            field,
            format!("{path:?} may hold only printable ASCII, without spaces, '?' or '#'"),
        );
    }
}

fn check_percent(v: &mut Problems, field: &str, value: u32) {
    if value > 100 {
        v.add(field, format!("{value} is not a percentage (0-100)"));
    }
}

fn validate_route(v: &mut Problems, at: &str, route: &Route) {
    check_name(v, &format!("{at}.name"), &route.name);
    match (route.kind, route.prefix.as_deref()) {
        (RouteKind::Prefix, None) => v.add(format!("{at}.prefix"), "a prefix route needs a prefix"),
        (RouteKind::Prefix, Some(p)) => check_path(v, &format!("{at}.prefix"), p),
        (RouteKind::Openai, Some(_)) => v.add(
            format!("{at}.prefix"),
            "only prefix routes have a prefix (openai routes are chosen by the body's model)",
        ),
        (RouteKind::Openai, None) => {
            if route.strip_prefix {
                v.add(format!("{at}.strip_prefix"), "only prefix routes strip a prefix");
            }
        }
    }
    if route.targets.is_empty() && route.fallbacks.is_empty() {
        v.add(
            format!("{at}.targets"),
            "a route needs at least one target or one fallback route",
        );
    }
    for (j, t) in route.targets.iter().enumerate() {
        let here = format!("{at}.targets[{j}]");
        check_label(v, &format!("{here}.id"), &t.id);
        check_label(v, &format!("{here}.region"), &t.region);
        if let Err(msg) = check_url(&t.url) {
            v.add(format!("{here}.url"), msg);
        }
        if t.model_version.trim().is_empty() {
            v.add(format!("{here}.model_version"), "must not be empty");
        }
        if t.weight > 1_000_000 {
            v.add(format!("{here}.weight"), "must be at most 1000000");
        }
        if let Some(m) = &t.upstream_model {
            if m.is_empty() {
                v.add(format!("{here}.upstream_model"), "must not be empty when given");
            }
            if route.kind != RouteKind::Openai {
                v.add(
                    format!("{here}.upstream_model"),
                    "only openai routes rewrite the body's model",
                );
            }
        }
    }
    if !route.split.is_empty() {
        let mut seen = BTreeSet::new();
        let mut total: u64 = 0;
        for (j, s) in route.split.iter().enumerate() {
            let here = format!("{at}.split[{j}]");
            if !seen.insert(s.model_version.as_str()) {
                v.add(
                    format!("{here}.model_version"),
                    format!("{:?} is listed twice", s.model_version),
                );
            }
            if !route.targets.iter().any(|t| t.model_version == s.model_version) {
                v.add(
                    format!("{here}.model_version"),
                    format!("no target of this route serves {:?}", s.model_version),
                );
            }
            if s.weight > 1_000_000 {
                v.add(format!("{here}.weight"), "must be at most 1000000");
            }
            total += u64::from(s.weight);
        }
        if total == 0 {
            v.add(
                format!("{at}.split"),
                "weights add up to 0; give at least one version a weight",
            );
        }
        for (j, t) in route.targets.iter().enumerate() {
            if !seen.contains(t.model_version.as_str()) {
                v.add(
                    format!("{at}.targets[{j}].model_version"),
                    format!(
                        "{:?} has no share in the route's split; add it (weight 0 keeps it as standby)",
                        t.model_version
                    ),
                );
            }
        }
    }
    if http_header_name_invalid(&route.sticky_header) {
        v.add(
            format!("{at}.sticky_header"),
            format!("{:?} is not a lowercase HTTP header name", route.sticky_header),
        );
    }
    let t = &route.timeouts;
    for (name, value) in [
        ("connect_ms", t.connect_ms),
        ("first_byte_ms", t.first_byte_ms),
        ("deadline_ms", t.deadline_ms),
    ] {
        if value == 0 {
            v.add(format!("{at}.timeouts.{name}"), "must be above 0");
        }
    }
    if t.stream_idle_ms == Some(0) {
        v.add(format!("{at}.timeouts.stream_idle_ms"), "must be above 0");
    }
    let r = &route.retry;
    if r.max_attempts == 0 || r.max_attempts > 10 {
        v.add(format!("{at}.retry.max_attempts"), "must be 1 to 10");
    }
    check_percent(v, &format!("{at}.retry.budget_percent"), r.budget_percent);
    if r.window_ms < 1_000 {
        v.add(format!("{at}.retry.window_ms"), "must be at least 1000");
    }
    if r.replay_buffer_bytes > 64 << 20 {
        v.add(
            format!("{at}.retry.replay_buffer_bytes"),
            "must be at most 64 MiB",
        );
    }
    let h = &route.health;
    if h.consecutive_failures == 0 {
        v.add(format!("{at}.health.consecutive_failures"), "must be at least 1");
    }
    if h.base_ejection_ms == 0 {
        v.add(format!("{at}.health.base_ejection_ms"), "must be above 0");
    }
    if h.max_ejection_ms < h.base_ejection_ms {
        v.add(
            format!("{at}.health.max_ejection_ms"),
            "must be at least base_ejection_ms",
        );
    }
    check_percent(
        v,
        &format!("{at}.health.max_ejection_percent"),
        h.max_ejection_percent,
    );
    check_percent(
        v,
        &format!("{at}.health.panic_threshold_percent"),
        h.panic_threshold_percent,
    );
    check_path(v, &format!("{at}.health.probe_path"), &h.probe_path);
    if let Some(a) = &h.active {
        check_path(v, &format!("{at}.health.active.path"), &a.path);
        if a.interval_ms < 10 {
            v.add(format!("{at}.health.active.interval_ms"), "must be at least 10");
        }
        if a.timeout_ms == 0 {
            v.add(format!("{at}.health.active.timeout_ms"), "must be above 0");
        }
        if a.healthy_threshold == 0 || a.unhealthy_threshold == 0 {
            v.add(
                format!("{at}.health.active"),
                "healthy_threshold and unhealthy_threshold must be at least 1",
            );
        }
    }
    if let Some(f) = &h.failure_rate {
        if f.window_ms < 100 {
            v.add(
                format!("{at}.health.failure_rate.window_ms"),
                "must be at least 100",
            );
        }
        if f.min_requests == 0 {
            v.add(
                format!("{at}.health.failure_rate.min_requests"),
                "must be at least 1",
            );
        }
        check_percent(
            v,
            &format!("{at}.health.failure_rate.failure_percent"),
            f.failure_percent,
        );
    }
    check_percent(
        v,
        &format!("{at}.failover.min_healthy_percent"),
        route.failover.min_healthy_percent,
    );
    if let Some(r) = &route.regions {
        let field = format!("{at}.regions.order");
        if r.order.is_empty() {
            v.add(&field, "must list at least one region");
        }
        let mut seen = BTreeSet::new();
        for (j, region) in r.order.iter().enumerate() {
            check_label(v, &format!("{field}[{j}]"), region);
            if !seen.insert(region.as_str()) {
                v.add(&field, format!("lists {region:?} twice"));
            }
        }
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'-' | b'_'
                        | b'.'
                        | b'!'
                        | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'^'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Checks a target URL: `http(s)://host[:port][/path]`, no user info, query or fragment.
///
/// # Errors
/// What is wrong with it.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{url:?} may hold only printable ASCII without spaces"));
    }
    if url.contains(['?', '#']) {
        return Err(format!("{url:?} must not have a query or fragment"));
    }
    let (authority, _path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(format!("{url:?} must not carry user information"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed IPv6 address"))?;
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(format!("{url:?} has an invalid IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{url:?} has junk after the IPv6 address")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if !authority.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!("{url:?} has an invalid host {host:?}"));
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("{url:?} has an invalid port {p:?} (1-65535)")),
        }
    }
    Ok(())
}

/// Finds a cycle in the fallback graph (by name), returned as the path that closes it.
fn find_fallback_cycle(routes: &[Route], names: &HashMap<&str, usize>) -> Option<Vec<String>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; routes.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        i: usize,
        routes: &[Route],
        names: &HashMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        state[i] = 1;
        stack.push(i);
        for fb in &routes[i].fallbacks {
            let Some(&j) = names.get(fb.as_str()) else {
                continue;
            };
            if j == i {
                continue; // reported as "falls back to itself"
            }
            if state[j] == 1 {
                let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                let mut path: Vec<String> = stack[start..].iter().map(|&k| routes[k].name.clone()).collect();
                path.push(routes[j].name.clone());
                return Some(path);
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, routes, names, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    for i in 0..routes.len() {
        if state[i] == 0 {
            if let Some(c) = visit(i, routes, names, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn target(id: &str, region: &str, version: &str) -> Target {
        Target {
            id: id.to_owned(),
            url: format!("http://127.0.0.1:9000/{id}"),
            region: region.to_owned(),
            model_version: version.to_owned(),
            weight: 1,
            upstream_model: None,
        }
    }

    fn route(name: &str, targets: Vec<Target>, fallbacks: &[&str]) -> Route {
        Route {
            name: name.to_owned(),
            kind: RouteKind::Openai,
            prefix: None,
            strip_prefix: false,
            targets,
            fallbacks: fallbacks.iter().map(|s| (*s).to_owned()).collect(),
            split: Vec::new(),
            sticky_header: default_sticky_header(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            health: HealthPolicy::default(),
            failover: FailoverPolicy::default(),
            regions: None,
        }
    }

    fn problems(s: &RoutingSnapshot) -> Vec<String> {
        match s.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.problems.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_good_snapshot_validates_and_its_digest_is_stable() {
        let routes = vec![
            route("bot", vec![target("a", "eu", "acme/bot/1")], &["small"]),
            route("small", vec![target("b", "us", "acme/small/1")], &[]),
        ];
        let s = RoutingSnapshot::new(3, BTreeMap::new(), routes.clone());
        assert_eq!(problems(&s), Vec::<String>::new());
        assert_eq!(s.digest.len(), 64);
        assert_eq!(s.digest, compute_digest(3, &BTreeMap::new(), &routes));
        // Round trip through JSON keeps the digest valid.
        let json = serde_json::to_string(&s).unwrap();
        let back: RoutingSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(back.validate().is_ok());
        // Any change of content changes the digest.
        let other = RoutingSnapshot::new(4, BTreeMap::new(), routes);
        assert_ne!(other.digest, s.digest);
    }

    #[test]
    fn per_route_health_idle_and_region_settings_validate_and_leave_old_digests_alone() {
        let plain = route("bot", vec![target("a", "eu", "acme/bot/1")], &[]);
        // Unset optional settings are not serialized: snapshots made before they existed keep
        // their digest.
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("regions").is_none(), "{json}");
        assert!(json["timeouts"].get("stream_idle_ms").is_none(), "{json}");
        assert!(json["health"].get("failure_rate").is_none(), "{json}");

        let mut r = plain.clone();
        r.timeouts.stream_idle_ms = Some(5_000);
        r.health.failure_rate = Some(FailureRate {
            window_ms: 2_000,
            min_requests: 4,
            failure_percent: 25,
        });
        r.regions = Some(RouteRegions {
            order: vec!["us".into(), "eu".into()],
            local: LocalRegionPolicy::Listed,
        });
        let s = RoutingSnapshot::new(1, BTreeMap::new(), vec![r.clone()]);
        assert_eq!(problems(&s), Vec::<String>::new());
        assert_ne!(
            s.digest,
            RoutingSnapshot::new(1, BTreeMap::new(), vec![plain]).digest
        );
        let back: Route = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // Partial failure-rate objects take the defaults for the rest.
        let f: FailureRate = serde_json::from_str(r#"{"failure_percent": 30}"#).unwrap();
        assert_eq!((f.window_ms, f.min_requests, f.failure_percent), (10_000, 20, 30));

        r.timeouts.stream_idle_ms = Some(0);
        r.health.failure_rate = Some(FailureRate {
            window_ms: 0,
            min_requests: 0,
            failure_percent: 101,
        });
        r.regions = Some(RouteRegions {
            order: vec!["us".into(), "us".into(), "bad region".into()],
            local: LocalRegionPolicy::First,
        });
        let p = problems(&RoutingSnapshot::new(1, BTreeMap::new(), vec![r.clone()]));
        for want in [
            "routes[0].timeouts.stream_idle_ms: must be above 0",
            "routes[0].health.failure_rate.window_ms",
            "routes[0].health.failure_rate.min_requests",
            "routes[0].health.failure_rate.failure_percent",
            "routes[0].regions.order: lists \"us\" twice",
            "routes[0].regions.order[2]",
        ] {
            assert!(p.iter().any(|m| m.starts_with(want)), "{want} not in {p:?}");
        }
        r.regions = Some(RouteRegions {
            order: Vec::new(),
            local: LocalRegionPolicy::First,
        });
        r.timeouts.stream_idle_ms = None;
        r.health.failure_rate = None;
        let p = problems(&RoutingSnapshot::new(1, BTreeMap::new(), vec![r]));
        assert_eq!(
            p,
            vec!["routes[0].regions.order: must list at least one region".to_owned()]
        );
    }

    #[test]
    fn tampered_content_fails_the_digest() {
        let mut s = RoutingSnapshot::new(
            1,
            BTreeMap::new(),
            vec![route("bot", vec![target("a", "eu", "acme/bot/1")], &[])],
        );
        s.routes[0].targets[0].weight = 7;
        let p = problems(&s);
        assert!(p.iter().any(|m| m.starts_with("digest:")), "{p:?}");
    }

    #[test]
    fn unknown_fallbacks_duplicates_and_bad_values_are_named() {
        let mut bad = target("a", "eu", "acme/bot/1");
        bad.url = "ftp://x".to_owned();
        let mut r1 = route("bot", vec![bad, target("a", "eu", "acme/bot/1")], &["nope"]);
        r1.retry.max_attempts = 0;
        r1.health.max_ejection_percent = 101;
        let r2 = route("bot", vec![target("b", "eu", "acme/bot/1")], &[]);
        let s = RoutingSnapshot::new(1, BTreeMap::new(), vec![r1, r2]);
        let p = problems(&s);
        let has = |needle: &str| p.iter().any(|m| m.contains(needle));
        assert!(has("routes[0].targets[0].url"), "{p:?}");
        assert!(has("routes[0].targets[1].id"), "{p:?}");
        assert!(has("unknown route \"nope\""), "{p:?}");
        assert!(has("routes[1].name"), "{p:?}");
        assert!(has("routes[0].retry.max_attempts"), "{p:?}");
        assert!(has("routes[0].health.max_ejection_percent"), "{p:?}");
    }

    #[test]
    fn fallback_cycles_are_found() {
        let s = RoutingSnapshot::new(
            1,
            BTreeMap::new(),
            vec![
                route("a", vec![target("t1", "eu", "m/a/1")], &["b"]),
                route("b", vec![target("t2", "eu", "m/b/1")], &["c"]),
                route("c", vec![target("t3", "eu", "m/c/1")], &["a"]),
                route("d", vec![target("t4", "eu", "m/d/1")], &["d"]),
            ],
        );
        let p = problems(&s);
        assert!(p.iter().any(|m| m.contains("cycle: a -> b -> c -> a")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("fall back to itself")), "{p:?}");
    }

    #[test]
    fn splits_must_cover_the_targets() {
        let mut r = route(
            "bot",
            vec![target("a", "eu", "m/bot/1"), target("b", "eu", "m/bot/2")],
            &[],
        );
        r.split = vec![
            Split {
                model_version: "m/bot/1".into(),
                weight: 95,
            },
            Split {
                model_version: "m/bot/9".into(),
                weight: 5,
            },
        ];
        let p = problems(&RoutingSnapshot::new(1, BTreeMap::new(), vec![r]));
        assert!(
            p.iter()
                .any(|m| m.contains("no target of this route serves \"m/bot/9\"")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("targets[1].model_version")), "{p:?}");
    }

    #[test]
    fn prefix_routes_need_a_prefix_and_regions_no_self_reference() {
        let mut r = route("api", vec![target("a", "eu", "m/api/1")], &[]);
        r.kind = RouteKind::Prefix;
        let mut regions = BTreeMap::new();
        regions.insert(
            "eu".to_owned(),
            RegionPolicy {
                failover: vec!["us".into(), "eu".into(), "us".into()],
            },
        );
        let p = problems(&RoutingSnapshot::new(1, regions, vec![r]));
        assert!(
            p.iter().any(|m| m.contains("a prefix route needs a prefix")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("lists its own region")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("lists \"us\" twice")), "{p:?}");
    }

    #[test]
    fn urls_are_checked() {
        for good in [
            "http://127.0.0.1:8000",
            "https://api.example.com/v1",
            "http://[::1]:9000/base",
            "http://backend",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "127.0.0.1:8000",
            "http://",
            "http://:80",
            "http://a b",
            "http://h:0",
            "http://h:70000",
            "http://u@h",
            "http://h/?q=1",
            "http://[::1",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
