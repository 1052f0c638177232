//! What governance needs from a store: policies on namespaces and models, and transition
//! requests whose gates are evaluated, whose reviews are counted and whose completion moves the
//! version, all decided under the store's single writer so that concurrent reviews count once and
//! a completing approval, the stage move and their audit entries commit together.

use async_trait::async_trait;
use ballast_api::governance::{
    Decision, EffectivePolicy, Policy, RequestState, StoredPolicy, TransitionList, TransitionOutcome,
    TransitionRequest,
};
use ballast_core::{ModelName, Stage};

use crate::{Ctx, Precondition, StoreResult};

/// Where a policy is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyTarget {
    /// A namespace (validated).
    Namespace(String),
    /// A model.
    Model(ModelName),
}

impl std::fmt::Display for PolicyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyTarget::Namespace(ns) => write!(f, "namespace {ns}"),
            PolicyTarget::Model(m) => write!(f, "model {m}"),
        }
    }
}

/// Filters for listing transition requests.
#[derive(Debug, Clone, Default)]
pub struct TransitionFilter {
    /// Only this model.
    pub model: Option<ModelName>,
    /// Only this version (with `model`).
    pub version: Option<u64>,
    /// Only requests in this state.
    pub state: Option<RequestState>,
    /// Only requests into this stage.
    pub to_stage: Option<Stage>,
    /// Page size (1–1000).
    pub limit: u32,
    /// Only requests with a smaller id (the next page of a newest-first listing).
    pub before: Option<u64>,
    /// Only models in these namespaces (`None`: every namespace).
    pub namespaces: Option<Vec<String>>,
}

/// A stage change asked of the governance flow.
#[derive(Debug, Clone)]
pub struct StageRequest {
    /// The model.
    pub model: ModelName,
    /// The version.
    pub number: u64,
    /// The target stage.
    pub to: Stage,
    /// Why.
    pub comment: Option<String>,
    /// `If-Match` on the version.
    pub pre: Precondition,
}

/// The governance part of a store.
#[async_trait]
pub trait GovernanceStore: Send + Sync + 'static {
    /// Reads the policy set on a namespace or model.
    async fn get_policy(&self, target: &PolicyTarget) -> StoreResult<StoredPolicy>;
    /// Creates or replaces a policy (already validated by the caller).
    async fn set_policy(
        &self,
        ctx: &Ctx,
        target: &PolicyTarget,
        policy: Policy,
        pre: Precondition,
    ) -> StoreResult<StoredPolicy>;
    /// Removes a policy.
    async fn delete_policy(&self, ctx: &Ctx, target: &PolicyTarget, pre: Precondition) -> StoreResult<()>;
    /// The policy in force for a model (its namespace's, overridden field by field by its own).
    async fn effective_policy(&self, name: &ModelName) -> StoreResult<EffectivePolicy>;
    /// The namespace's own policy, if any (for the naming rule of new models).
    async fn namespace_policy(&self, namespace: &str) -> StoreResult<Option<StoredPolicy>>;

    /// Asks for a stage change. Without a policy, or into an ungated stage, the version moves as
    /// with [`crate::Store::set_stage`]. Into a gated stage under a policy, a request is recorded
    /// with its gate verdicts: blocked when a gate fails, completed at once when no approval is
    /// needed, pending otherwise (an existing pending request for the same version and stage is
    /// returned instead of a new one).
    async fn request_transition(&self, ctx: &Ctx, req: StageRequest) -> StoreResult<TransitionOutcome>;
    /// Records a review. An approval that brings the count to what the policy needs completes the
    /// transition in the same transaction (after evaluating the gates again). The requester
    /// cannot review their own request; a reviewer reviews a request once.
    async fn review_transition(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        id: u64,
        decision: Decision,
        comment: Option<String>,
    ) -> StoreResult<TransitionRequest>;
    /// Completes a pending request without waiting for the remaining approvals (a maintainer's
    /// decision): the gates are evaluated again and must pass (otherwise the request is recorded
    /// as `gates_failed` and returned in that state), a high-risk model still needs one
    /// approval, and a requester cannot complete their own request while approvals are missing.
    async fn complete_transition(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        id: u64,
        comment: Option<String>,
    ) -> StoreResult<TransitionRequest>;
    /// Withdraws a pending request (its requester only).
    async fn cancel_transition(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        id: u64,
        comment: Option<String>,
    ) -> StoreResult<TransitionRequest>;
    /// Reads a request of a model.
    async fn get_transition(&self, name: &ModelName, id: u64) -> StoreResult<TransitionRequest>;
    /// Lists requests, newest first.
    async fn list_transitions(&self, filter: TransitionFilter) -> StoreResult<TransitionList>;
}
