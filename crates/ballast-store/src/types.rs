//! Parameters of store operations.

use ballast_core::Stage;

/// Who makes a change, in which request, and how a retry is recognised.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    /// The authenticated actor.
    pub actor: String,
    /// The request id (also in the response's `x-request-id`).
    pub request_id: String,
    /// Present when the client sent an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
}

/// An idempotency key and the fingerprint of the request that carried it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// A digest of method, path and body: the same key with another request is refused.
    pub fingerprint: String,
}

/// An `If-Match` / `If-None-Match` precondition on a resource's revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precondition {
    /// No precondition.
    #[default]
    None,
    /// The resource must exist with this revision.
    Revision(u64),
    /// `If-Match: *`: the resource must exist.
    Exists,
    /// `If-None-Match: *`: the resource must not exist.
    Absent,
}

/// Filters for listing models.
#[derive(Debug, Clone, Default)]
pub struct ModelFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only these namespaces (the caller's readable ones); `None` = no restriction.
    pub namespaces: Option<Vec<String>>,
    /// Only models whose `namespace/model` starts with this.
    pub prefix: Option<String>,
    /// Only models with this tag key (and value, when given).
    pub tag: Option<(String, Option<String>)>,
    /// Page size (1–1000).
    pub limit: u32,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// A metric threshold: `name op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFilter {
    /// Metric name.
    pub name: String,
    /// One of `>=`, `<=`, `>`, `<`, `=`, `!=`.
    pub op: &'static str,
    /// Threshold.
    pub value: f64,
}

/// How versions are ordered.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum VersionOrder {
    /// By number.
    #[default]
    Number,
    /// By creation time.
    CreatedAt,
    /// By a metric's value (versions without the metric are left out).
    Metric(String),
}

/// Filters for listing versions.
#[derive(Debug, Clone, Default)]
pub struct VersionFilter {
    /// Only versions in this stage.
    pub stage: Option<Stage>,
    /// Only versions with these tags (key, optional value), all of them.
    pub tags: Vec<(String, Option<String>)>,
    /// Only versions whose metrics pass all thresholds.
    pub metrics: Vec<MetricFilter>,
    /// Only sealed (true) or draft (false) versions.
    pub sealed: Option<bool>,
    /// Ordering key.
    pub order: VersionOrder,
    /// Descending order (the default for listings is newest first).
    pub descending: bool,
    /// Page size (1–1000).
    pub limit: u32,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// Filters for the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries after this id.
    pub after: Option<u64>,
    /// Only entries whose target is this model or one of its versions/aliases.
    pub model: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only entries at or after this time (RFC 3339, the store's form: `…T…Z` with milliseconds).
    pub since: Option<String>,
    /// Only entries before this time (same form).
    pub until: Option<String>,
    /// Page size (1–1000).
    pub limit: u32,
}

/// Counts for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Registered models.
    pub models: u64,
    /// Versions of all models.
    pub versions: u64,
    /// Distinct blobs referenced.
    pub blobs: u64,
    /// Bytes of distinct blobs referenced.
    pub blob_bytes: u64,
    /// Audit entries.
    pub audit_entries: u64,
}

/// A dispatcher's request for due deliveries.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The claiming node (lease owner).
    pub node: String,
    /// Now, in Unix milliseconds.
    pub now_ms: i64,
    /// How long the lease lasts.
    pub lease_ms: i64,
    /// Deliveries this node already has in flight, per webhook.
    pub in_flight: std::collections::HashMap<u64, usize>,
    /// The most deliveries in flight per webhook (a slow receiver never takes every slot).
    pub per_webhook: usize,
    /// The most deliveries to claim in all.
    pub max: usize,
}

/// A delivery this node holds the lease of.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// Delivery id (stable across attempts).
    pub id: u64,
    /// Webhook id.
    pub webhook_id: u64,
    /// Where to POST.
    pub url: String,
    /// HMAC secret.
    pub secret: String,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// When the delivery was created (or requeued), Unix milliseconds.
    pub created_ms: i64,
    /// The event to deliver.
    pub event: ballast_api::events::Event,
}

/// What became of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// Try again at this time (Unix milliseconds).
    Retry {
        /// When.
        next_attempt_ms: i64,
    },
    /// Give up; a person may redeliver.
    Dead,
}

/// A registry route with what its references resolve to right now.
#[derive(Debug, Clone)]
pub struct ResolvedRoute {
    /// The route.
    pub route: ballast_api::deployments::RegistryRoute,
    /// The version its target resolves to (none: no version in that stage, unknown alias or
    /// model).
    pub version: Option<u64>,
    /// For `:production` targets: the production version the current one replaced.
    pub previous_production: Option<u64>,
    /// The canary alias's version, when it differs from `version`.
    pub canary_version: Option<u64>,
    /// The deployments of those versions.
    pub deployments: Vec<ballast_api::deployments::Deployment>,
}

/// Everything the routing snapshot is compiled from, read consistently.
#[derive(Debug, Clone)]
pub struct RoutingState {
    /// Id of the newest committed event when this was read.
    pub last_event_id: u64,
    /// Every route, by name.
    pub routes: Vec<ResolvedRoute>,
}

/// Unix time in milliseconds: the time base of delivery schedules and leases ([`Claim`]).
#[must_use]
pub fn unix_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX)
}
