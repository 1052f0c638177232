//! Retention storage: retention policies per namespace and model, the retention plan (which
//! versions garbage collection may remove and why the others stay), version removal, and the
//! reference checks that blob garbage collection makes.
//!
//! The plan is decided by one rule set ([`RetentionStore::apply_retention`] re-decides it inside
//! the write transaction that removes versions, so a version that gained an alias or a stage
//! since a dry run is never removed).

use async_trait::async_trait;
use ballast_api::retention::{GcKept, GcVersion, RetentionPolicy, RetentionRule};
use ballast_core::{ModelName, Sha256Digest};

use crate::{Ctx, StoreResult};

/// What a retention policy is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RetentionTarget {
    /// Every model of a namespace (unless a model has its own policy).
    Namespace(String),
    /// One model.
    Model(ModelName),
}

impl std::fmt::Display for RetentionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionTarget::Namespace(ns) => write!(f, "namespace {ns}"),
            RetentionTarget::Model(m) => write!(f, "model {m}"),
        }
    }
}

/// Which models a garbage collection looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GcScope {
    /// Every model.
    #[default]
    All,
    /// The models of one namespace.
    Namespace(String),
    /// One model.
    Model(ModelName),
}

/// The retention decisions for one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelPlan {
    /// `namespace/model`.
    pub model: String,
    /// Versions that qualify for removal.
    pub remove: Vec<GcVersion>,
    /// Versions that stay, with their reasons (only when asked for).
    pub kept: Vec<GcKept>,
    /// Digests of the files of the versions in `remove`, with their sizes.
    pub blobs: Vec<(Sha256Digest, u64)>,
}

/// Retention policies and version garbage collection.
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Creates or replaces the policy of a namespace or model (audited, with its event).
    async fn set_retention(
        &self,
        ctx: &Ctx,
        target: &RetentionTarget,
        policy: RetentionPolicy,
    ) -> StoreResult<RetentionRule>;
    /// The policy stored on exactly this namespace or model; `not_found` when there is none.
    async fn get_retention(&self, target: &RetentionTarget) -> StoreResult<RetentionRule>;
    /// Removes the policy of exactly this namespace or model; `not_found` when there is none.
    async fn delete_retention(&self, ctx: &Ctx, target: &RetentionTarget) -> StoreResult<()>;
    /// The policy that applies to a model (its own, else its namespace's) and whether it is the
    /// model's own; `None` when neither exists. `not_found` when the model does not exist.
    async fn effective_retention(&self, model: &ModelName) -> StoreResult<Option<(RetentionRule, bool)>>;
    /// Every model in scope that a policy applies to, by name.
    async fn retention_models(&self, scope: GcScope) -> StoreResult<Vec<ModelName>>;
    /// Decides, without changing anything, which versions of `model` the policy lets go at
    /// `now_ms` (Unix milliseconds) and, with `explain`, why the others stay.
    async fn plan_retention(&self, model: &ModelName, now_ms: i64, explain: bool) -> StoreResult<ModelPlan>;
    /// Decides again and removes the versions that qualify, each with its audit entry and
    /// `version.deleted` event, in one transaction. Returns what was removed.
    async fn apply_retention(&self, ctx: &Ctx, model: &ModelName, now_ms: i64) -> StoreResult<ModelPlan>;
    /// Of `digests`, those that no version references (leaving aside the versions in
    /// `ignoring`, which a dry run plans to remove) and no MLflow artifact maps to.
    async fn unreferenced_blobs(
        &self,
        digests: Vec<Sha256Digest>,
        ignoring: Vec<(ModelName, u64)>,
    ) -> StoreResult<Vec<Sha256Digest>>;
    /// Records a blob sweep in the audit trail (no event: blobs are not registry resources).
    async fn record_blob_sweep(&self, ctx: &Ctx, blobs: u64, bytes: u64) -> StoreResult<()>;
}
