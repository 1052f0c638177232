//! Events and webhooks: the stable JSON shape of every event, the catalogue of event types, and
//! the webhook subscription and delivery resources.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every event type, with what it means. Subscriptions may name any of these.
pub const EVENT_TYPES: &[(&str, &str)] = &[
    ("model.created", "a model was registered"),
    ("model.updated", "a model's description or tags changed"),
    ("model.deleted", "a model and its versions were deleted"),
    ("version.created", "a draft version was created"),
    ("version.updated", "a version's metadata (draft) or tags changed"),
    (
        "version.file_added",
        "a file was added to (or replaced in) a draft",
    ),
    ("version.file_removed", "a file was removed from a draft"),
    (
        "version.sealed",
        "a draft was sealed; its files and metadata are now immutable",
    ),
    ("stage_transition.completed", "a version moved to another stage"),
    (
        "version.demoted",
        "the previous production version was archived by a promotion or rollback",
    ),
    (
        "version.rolled_back",
        "production was restored to the version the current one replaced",
    ),
    (
        "model.renamed",
        "a model's MLflow name changed (its Ballast name stays)",
    ),
    (
        "version.deleted",
        "a version was deleted (MLflow API, or garbage collection under a retention policy)",
    ),
    ("alias.set", "an alias was created or moved"),
    ("alias.removed", "an alias was deleted"),
    (
        "deployment.added",
        "a deployment (where a version is served) was recorded",
    ),
    ("deployment.removed", "a deployment was removed"),
    ("route.set", "a registry route was created or changed"),
    ("route.removed", "a registry route was deleted"),
    (
        "token.created",
        "an API token was created (its secret is never sent)",
    ),
    ("token.revoked", "an API token was revoked"),
    ("role.granted", "a role was granted to a principal in a namespace"),
    ("role.revoked", "a role was taken from a principal in a namespace"),
    (
        "policy.updated",
        "a namespace's or model's policy was created or replaced",
    ),
    ("policy.deleted", "a namespace's or model's policy was removed"),
    (
        "transition.requested",
        "a move into staging or production was requested; its gates were evaluated",
    ),
    (
        "transition.blocked",
        "a transition request failed its gates; nothing moved",
    ),
    ("transition.approved", "a reviewer approved a transition request"),
    ("transition.rejected", "a reviewer rejected a transition request"),
    (
        "transition.completed",
        "a transition request completed: the version moved",
    ),
    (
        "transition.cancelled",
        "the requester withdrew a transition request",
    ),
    (
        "transition.superseded",
        "a pending transition request no longer applies: the version moved by other means",
    ),
    (
        "retention.set",
        "a retention policy was set on a namespace or model",
    ),
    (
        "retention.delete",
        "a retention policy was removed from a namespace or model",
    ),
    ("webhook.created", "a webhook subscription was created"),
    ("webhook.deleted", "a webhook subscription was deleted"),
    (
        "webhook.ping",
        "a test delivery requested with `ballast webhook test`",
    ),
];

/// Whether `t` is a known event type.
#[must_use]
pub fn is_event_type(t: &str) -> bool {
    EVENT_TYPES.iter().any(|(name, _)| *name == t)
}

/// One change, as delivered to webhooks and streamed by the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing id; resume the feed with `after=<id>` or `Last-Event-ID`.
    pub id: u64,
    /// Event type (see the catalogue).
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the change committed.
    pub at: String,
    /// Who made it.
    pub actor: String,
    /// What changed: `ns/model`, `ns/model/3` or `ns/model@alias` (or `webhook/ID`).
    pub subject: String,
    /// The model concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The version concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The alias concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// State before and after (`{"before": …, "after": …}`).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// The request that made the change.
    pub request_id: String,
}

/// A page of the change feed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    /// Events, oldest first.
    pub events: Vec<Event>,
    /// Pass as `after` for the next page (the last id, or the given `after` when empty).
    pub next_after: u64,
}

/// Subscribe a URL to events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST events (`http://` or `https://`).
    pub url: String,
    /// Event types to deliver; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Only events of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only events of this model (`ns/model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The HMAC secret (at least 16 characters); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A note for people.
    #[serde(default)]
    pub description: String,
}

/// A webhook subscription. The secret is shown only in the answer to its creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Id.
    pub id: u64,
    /// Target URL.
    pub url: String,
    /// Event types delivered (empty: all).
    pub events: Vec<String>,
    /// Namespace filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Model filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A note for people.
    pub description: String,
    /// The HMAC secret: present only when the webhook is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// Deliveries waiting to be sent or retried.
    pub pending: u64,
    /// Deliveries that gave up.
    pub dead: u64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Gave up (too old, or refused with a 4xx); can be redelivered by hand.
    Dead,
}

/// One attempt to deliver.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAttempt {
    /// When it started.
    pub at: String,
    /// HTTP status answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Time to the answer (or the failure), in milliseconds.
    pub latency_ms: u64,
    /// Connection error or timeout, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first bytes of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_snippet: Option<String>,
}

/// The delivery of one event to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Stable id, sent as `x-ballast-delivery` on every attempt (for de-duplication).
    pub id: u64,
    /// The webhook.
    pub webhook_id: u64,
    /// The event.
    pub event_id: u64,
    /// The event type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempt_count: u32,
    /// When the next attempt is due (pending only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// When it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// Every attempt, oldest first (only when one delivery is read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<DeliveryAttempt>,
}

/// A page of deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    /// Deliveries, newest first.
    pub deliveries: Vec<Delivery>,
}
