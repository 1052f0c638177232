//! Governance: policies (`/v1/policies/{ns}`, `…/policy`), stage changes that may wait for
//! approval, transition requests and their reviews, and version comparisons.

use ballast_api::governance::{
    Comparison, EffectivePolicy, Policy, RequestState, ReviewBody, StoredPolicy, TransitionList,
    TransitionRequest,
};
use ballast_api::{SetStage, StageChange};
use ballast_core::{ModelName, Stage};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::error::ClientError;
use crate::http::Client;
use crate::types::{Pairs, Precondition};

/// Where a policy is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyScope {
    /// A namespace.
    Namespace(String),
    /// A model.
    Model(ModelName),
}

/// What a stage change led to.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum StageOutcome {
    /// The version moved.
    Moved(StageChange),
    /// A transition request waits for approvals.
    Pending(TransitionRequest),
}

/// Filters for listing transition requests.
#[derive(Debug, Clone, Default)]
pub struct TransitionQuery {
    /// Only this version (with a model).
    pub version: Option<u64>,
    /// Only requests in this state.
    pub state: Option<RequestState>,
    /// Only requests into this stage.
    pub stage: Option<Stage>,
    /// Page size (1–1000).
    pub limit: Option<u32>,
    /// Only requests with a smaller id.
    pub before: Option<u64>,
}

impl TransitionQuery {
    fn pairs(&self) -> Pairs {
        let mut p = Pairs::new();
        if let Some(v) = self.version {
            p.push(("version", v.to_string()));
        }
        if let Some(s) = self.state {
            p.push(("state", s.as_str().to_owned()));
        }
        if let Some(s) = self.stage {
            p.push(("stage", s.as_str().to_owned()));
        }
        if let Some(l) = self.limit {
            p.push(("limit", l.to_string()));
        }
        if let Some(b) = self.before {
            p.push(("before", b.to_string()));
        }
        p
    }
}

async fn decode<T: DeserializeOwned>(url: &Url, resp: reqwest::Response) -> Result<T, ClientError> {
    let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
        method: "reading the answer of".into(),
        url: url.to_string(),
        cause: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        cause: e.to_string(),
    })
}

impl Client {
    fn policy_url(&self, scope: &PolicyScope, rest: &[&str]) -> Result<Url, ClientError> {
        match scope {
            PolicyScope::Namespace(ns) => {
                let mut segments = vec!["v1", "policies", ns.as_str()];
                segments.extend_from_slice(rest);
                self.url(&segments, &Pairs::new())
            }
            PolicyScope::Model(m) => {
                let mut segments = vec!["policy"];
                segments.extend_from_slice(rest);
                self.model_url(m, &segments, &Pairs::new())
            }
        }
    }

    /// `GET /v1/policies/{ns}` or `…/policy`: the policy set there.
    ///
    /// # Errors
    /// `not_found` when none is set, or a transport error.
    pub async fn get_policy(&self, scope: &PolicyScope) -> Result<StoredPolicy, ClientError> {
        let url = self.policy_url(scope, &[])?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `PUT /v1/policies/{ns}` or `…/policy`: creates or replaces a policy.
    ///
    /// # Errors
    /// `invalid_argument` naming a malformed rule, `precondition_failed`, or a transport error.
    pub async fn set_policy(
        &self,
        scope: &PolicyScope,
        policy: &Policy,
        precondition: Option<Precondition>,
    ) -> Result<StoredPolicy, ClientError> {
        let url = self.policy_url(scope, &[])?;
        let call = self
            .call(Method::PUT, url)
            .precondition(precondition)
            .json(policy)?;
        self.send_json(call).await
    }

    /// `DELETE /v1/policies/{ns}` or `…/policy`.
    ///
    /// # Errors
    /// `not_found`, `precondition_failed`, or a transport error.
    pub async fn delete_policy(
        &self,
        scope: &PolicyScope,
        precondition: Option<Precondition>,
    ) -> Result<(), ClientError> {
        let url = self.policy_url(scope, &[])?;
        self.send_empty(self.call(Method::DELETE, url).precondition(precondition))
            .await
    }

    /// `GET …/policy/effective`: the policy in force for a model.
    ///
    /// # Errors
    /// `not_found` for an unknown model, or a transport error.
    pub async fn effective_policy(&self, name: &ModelName) -> Result<EffectivePolicy, ClientError> {
        let url = self.model_url(name, &["policy", "effective"], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `POST …/versions/{n}/stage` under governance: the version moves, or a transition request
    /// waits for approvals (202). A failed gate is an error (`gate_failed`) whose message lists
    /// every failed rule.
    ///
    /// # Errors
    /// `gate_failed`, `invalid_transition`, `precondition_failed`, or a transport error.
    pub async fn request_stage(
        &self,
        name: &ModelName,
        number: u64,
        body: &SetStage,
        precondition: Option<Precondition>,
    ) -> Result<StageOutcome, ClientError> {
        let n = number.to_string();
        let url = self.model_url(name, &["versions", &n, "stage"], &Pairs::new())?;
        let call = self
            .call(Method::POST, url.clone())
            .precondition(precondition)
            .json(body)?;
        let resp = self.send(call).await?;
        if resp.status() == StatusCode::ACCEPTED {
            Ok(StageOutcome::Pending(decode(&url, resp).await?))
        } else {
            Ok(StageOutcome::Moved(decode(&url, resp).await?))
        }
    }

    /// `GET /v1/transition-requests` (every readable model) or `…/transition-requests`.
    ///
    /// # Errors
    /// `invalid_argument` for a bad filter, or a transport error.
    pub async fn list_transitions(
        &self,
        model: Option<&ModelName>,
        query: &TransitionQuery,
    ) -> Result<TransitionList, ClientError> {
        let url = match model {
            Some(m) => self.model_url(m, &["transition-requests"], &query.pairs())?,
            None => self.url(&["v1", "transition-requests"], &query.pairs())?,
        };
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `GET …/transition-requests/{id}`.
    ///
    /// # Errors
    /// `not_found`, or a transport error.
    pub async fn get_transition(&self, name: &ModelName, id: u64) -> Result<TransitionRequest, ClientError> {
        let id = id.to_string();
        let url = self.model_url(name, &["transition-requests", &id], &Pairs::new())?;
        self.send_json(self.call(Method::GET, url)).await
    }

    /// `POST …/transition-requests/{id}/{approve|reject|complete|cancel}`.
    ///
    /// # Errors
    /// `permission_denied` (own request), `conflict` (already reviewed, not pending, high risk
    /// without approval), `gate_failed` (complete), or a transport error.
    pub async fn decide_transition(
        &self,
        name: &ModelName,
        id: u64,
        verb: TransitionVerb,
        comment: Option<String>,
    ) -> Result<TransitionRequest, ClientError> {
        let id = id.to_string();
        let url = self.model_url(name, &["transition-requests", &id, verb.as_str()], &Pairs::new())?;
        let call = self.call(Method::POST, url).json(&ReviewBody { comment })?;
        self.send_json(call).await
    }

    /// `GET …/compare?versions=…`: versions side by side.
    ///
    /// # Errors
    /// `invalid_argument` (fewer than 2 or more than 10 versions), `not_found`, or a transport
    /// error.
    pub async fn compare_versions(
        &self,
        name: &ModelName,
        versions: &[u64],
    ) -> Result<Comparison, ClientError> {
        let list: Vec<String> = versions.iter().map(u64::to_string).collect();
        let url = self.model_url(name, &["compare"], &vec![("versions", list.join(","))])?;
        self.send_json(self.call(Method::GET, url)).await
    }
}

/// A decision on a transition request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionVerb {
    /// Approve (reviewers other than the requester).
    Approve,
    /// Reject.
    Reject,
    /// Complete without the remaining approvals (maintainers).
    Complete,
    /// Withdraw (the requester).
    Cancel,
}

impl TransitionVerb {
    /// The path segment.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TransitionVerb::Approve => "approve",
            TransitionVerb::Reject => "reject",
            TransitionVerb::Complete => "complete",
            TransitionVerb::Cancel => "cancel",
        }
    }
}
