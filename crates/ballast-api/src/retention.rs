//! Retention and garbage collection: the retention policy of a namespace or model, the request
//! that runs a collection, and its report (what was or would be removed, and why versions were
//! kept).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most versions `keep_last_dev` may name, and the most days `keep_days` may name.
pub const MAX_KEEP_LAST_DEV: u32 = 1_000_000;
/// The most days `keep_days` may name (100 years).
pub const MAX_KEEP_DAYS: u32 = 36_500;

fn default_true() -> bool {
    true
}

/// What garbage collection may remove from a namespace or model. A version is removed only when
/// it is a development version (or an archived one that never was in production) that is
/// neither among the newest `keep_last_dev` development versions nor younger than `keep_days`,
/// and nothing protects it (a stage, an alias, production history, a deployment, a pending
/// transition request, or being the lineage parent of a kept version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the newest N development versions (drafts included), whatever their age.
    pub keep_last_dev: u32,
    /// Keep every version younger than D days (age counts from the version's last lifecycle
    /// change: creation, seal or stage move).
    pub keep_days: u32,
    /// `false` exempts the namespace or model from version removal (a model policy with
    /// `enabled: false` exempts one model of a namespace that has a policy).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// A stored retention policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetentionRule {
    /// The namespace the policy belongs to.
    pub namespace: String,
    /// `namespace/model` for a model's own policy; absent for a namespace policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The policy.
    pub policy: RetentionPolicy,
    /// Increased on each change.
    pub revision: u64,
    /// Who last changed it.
    pub updated_by: String,
    /// When it last changed.
    pub updated_at: String,
}

/// The policy that applies to a model: its own, or else its namespace's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveRetention {
    /// `namespace/model`.
    pub model: String,
    /// `model` when the model has its own policy, `namespace` when it inherits its namespace's.
    pub source: String,
    /// The stored policy that applies.
    pub rule: RetentionRule,
}

/// Run garbage collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// `true`: report what would be removed and change nothing.
    pub dry_run: bool,
    /// Only versions of this namespace (and only blobs that those versions' removal frees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only versions of this model, `namespace/model` (and only blobs their removal frees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Also list every kept version with the reasons it is kept.
    #[serde(default)]
    pub explain: bool,
}

/// A version that was (or, in a dry run, would be) removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcVersion {
    /// `namespace/model`.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Its stage.
    pub stage: String,
    /// `draft` or `sealed`.
    pub state: String,
    /// When it was created.
    pub created_at: String,
    /// Sum of its file sizes (bytes its removal may free, when no other version shares them).
    pub size: u64,
    /// Why it qualifies.
    pub reason: String,
}

/// A version that garbage collection keeps, with every reason that keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcKept {
    /// `namespace/model`.
    pub model: String,
    /// Version number.
    pub version: u64,
    /// Why it stays (`in production`, `alias champion`, `lineage parent of version 7`, …).
    pub reasons: Vec<String>,
}

/// A blob that was (or would be) removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcBlob {
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A part of the collection that failed (the rest went on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcError {
    /// What it concerned (`acme/bot`, `blob <sha256>`).
    pub target: String,
    /// What went wrong.
    pub message: String,
}

/// The outcome of a garbage collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The namespace or model the run was limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the run started.
    pub started_at: String,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// Versions removed (or that would be).
    pub versions: Vec<GcVersion>,
    /// Kept versions and why (only when `explain` was asked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<GcKept>,
    /// Blobs removed (or that would be).
    pub blobs: Vec<GcBlob>,
    /// Number of versions removed.
    pub versions_removed: u64,
    /// Number of blobs removed.
    pub blobs_removed: u64,
    /// Bytes of blob storage freed.
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they were stored or used within the grace period (or
    /// while a change that may reference them was in flight).
    pub blobs_in_grace: u64,
    /// The blob grace period applied, in seconds.
    pub blob_grace_secs: u64,
    /// Failures; the collection skips what failed and goes on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<GcError>,
}
