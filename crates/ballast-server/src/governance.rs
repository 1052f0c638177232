//! Governance in the server: every stage change goes through [`change_stage`], which runs the
//! pluggable [`TransitionGate`] hook and then the store's policy flow (gates, transition
//! requests, approvals); policies are validated here (including the naming rule's regular
//! expression) before they are stored; new model names are checked against their namespace's
//! naming rule; a failed gate is answered with [`GateFailure`], which lists every failed rule.

use async_trait::async_trait;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ballast_api::governance::{Policy, TransitionOutcome, TransitionRequest};
use ballast_api::{ErrorDetail, Version};
use ballast_core::{ErrorCode, ModelName, Stage};
use ballast_store::governance::StageRequest;
use ballast_store::{Ctx, Precondition};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// Header naming the transition request a stage change created or completed.
pub const TRANSITION_HEADER: &str = "x-ballast-transition-request";

/// The largest compiled naming rule, in bytes of the regular-expression program.
const NAMING_RULE_SIZE_LIMIT: usize = 256 * 1024;

/// An extra check on every move into a gated stage, run before the policy (for example a change
/// freeze). The default, [`OpenGate`], allows everything; policies, gates and approvals are
/// decided by the store's governance flow after it.
#[async_trait]
pub trait TransitionGate: Send + Sync + 'static {
    /// `Ok(())` lets the move proceed; an error is answered to the client and nothing moves.
    async fn check(&self, ctx: &Ctx, version: &Version, to: Stage) -> Result<(), ApiError>;
}

/// Allows every move that the stage state machine allows.
pub struct OpenGate;

#[async_trait]
impl TransitionGate for OpenGate {
    async fn check(&self, _ctx: &Ctx, _version: &Version, _to: Stage) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Asks for a stage change: the hook first, then the policy flow in the store.
///
/// # Errors
/// The hook's refusal, or the store's (unknown version, disallowed move, precondition).
pub async fn change_stage(
    state: &AppState,
    ctx: &Ctx,
    model: &ModelName,
    number: u64,
    to: Stage,
    comment: Option<String>,
    pre: Precondition,
) -> Result<TransitionOutcome, ApiError> {
    let current = state.store.get_version(model, number).await?;
    if to.is_gated() {
        state.gate.check(ctx, &current, to).await?;
    }
    Ok(state
        .store
        .request_transition(
            ctx,
            StageRequest {
                model: model.clone(),
                number,
                to,
                comment,
                pre,
            },
        )
        .await?)
}

/// What a stage move along several steps (the MLflow API moves any stage to any stage) may do
/// under the policy in force.
#[derive(Debug)]
pub enum PathDecision {
    /// No approval is needed and every gate passes (or no policy applies): move along the path.
    Proceed,
    /// The move was a single gated step and went through the transition flow: it is done.
    Done,
}

fn stage_title(s: Stage) -> &'static str {
    match s {
        Stage::Development => "None",
        Stage::Staging => "Staging",
        Stage::Production => "Production",
        Stage::Archived => "Archived",
    }
}

/// Applies the policy to a move through `path` (MLflow stage names in messages): every gated
/// step's gates must pass; a step that needs approvals must be the only step, and then a
/// transition request is created (or the pending one reused) and the refusal names it.
///
/// # Errors
/// `gate_failed` naming each failed gate, or `conflict` naming the missing approvals and the
/// pending request; nothing moved.
pub async fn govern_path(
    state: &AppState,
    ctx: &Ctx,
    model: &ModelName,
    version: &Version,
    path: &[Stage],
) -> Result<PathDecision, ApiError> {
    if !path.iter().any(|s| s.is_gated()) {
        return Ok(PathDecision::Proceed);
    }
    let effective = state.store.effective_policy(model).await?;
    let Some(policy) = &effective.policy else {
        return Ok(PathDecision::Proceed);
    };
    let production = match state.store.version_in_stage(model, Stage::Production).await {
        Ok(v) => Some(v),
        Err(e) if e.code == ErrorCode::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let source = effective.source();
    for step in path.iter().copied().filter(|s| s.is_gated()) {
        let verdicts = ballast_api::governance::evaluate(policy, version, production.as_ref(), step);
        let failed: Vec<String> = verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(ballast_api::governance::GateVerdict::describe)
            .collect();
        if !failed.is_empty() {
            return Err(ApiError::new(
                ErrorCode::GateFailed,
                format!(
                    "stage move to {} refused: {} gate(s) failed under the policy of {source}: {}",
                    stage_title(step),
                    failed.len(),
                    failed.join("; ")
                ),
            ));
        }
    }
    let needing: Vec<(Stage, u32)> = path
        .iter()
        .map(|s| (*s, policy.required_approvals(*s)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let Some((step, needed)) = needing.first().copied() else {
        return Ok(PathDecision::Proceed);
    };
    if path.len() > 1 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "stage move to {} refused: the move passes through {} and {} needs {needed} approval(s) (risk {}) under the policy of {source}; move the version one stage at a time",
                stage_title(path[path.len() - 1]),
                path.iter().map(|s| stage_title(*s)).collect::<Vec<_>>().join(" then "),
                stage_title(step),
                policy.risk_level()
            ),
        ));
    }
    let outcome = state
        .store
        .request_transition(
            ctx,
            StageRequest {
                model: model.clone(),
                number: version.version,
                to: step,
                comment: None,
                pre: Precondition::None,
            },
        )
        .await?;
    match outcome {
        TransitionOutcome::Moved { .. } => Ok(PathDecision::Done),
        TransitionOutcome::Blocked { request } => Err(ApiError::new(
            ErrorCode::GateFailed,
            format!(
                "stage move to {} refused: {}",
                stage_title(step),
                GateFailure { request }.message()
            ),
        )),
        TransitionOutcome::Pending { request } => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "stage move to {} refused: approval required: {} needs {} approval(s) (risk {}) under the policy of {source}; transition request {} is pending with {} approval(s); a reviewer approves it with `ballast transition approve {} {}`",
                stage_title(step),
                model,
                request.required_approvals,
                request.risk,
                request.id,
                request.approvals,
                model,
                request.id
            ),
        )),
    }
}

/// The answer of the native stage endpoint: 200 with the change, 202 with the pending request,
/// or 422 `gate_failed`.
#[must_use]
pub fn stage_response(outcome: TransitionOutcome) -> Response {
    match outcome {
        TransitionOutcome::Moved { change, request } => {
            let mut resp = (StatusCode::OK, Json(change)).into_response();
            if let Some(r) = request {
                set_request_header(&mut resp, r.id);
            }
            resp
        }
        TransitionOutcome::Pending { request } => {
            let id = request.id;
            let mut resp = (StatusCode::ACCEPTED, Json(request)).into_response();
            set_request_header(&mut resp, id);
            resp
        }
        TransitionOutcome::Blocked { request } => GateFailure { request }.into_response(),
    }
}

fn set_request_header(resp: &mut Response, id: u64) {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert(TRANSITION_HEADER, v);
    }
}

/// A move refused by failed gates. The request is stored with its verdicts; the answer is
/// `{"error": {"code": "gate_failed", "message", "field": "stage", "details": [failed
/// verdicts]}, "transition_request": {…}}`.
#[derive(Debug, Clone)]
pub struct GateFailure {
    /// The request, in state `gates_failed`.
    pub request: TransitionRequest,
}

impl GateFailure {
    /// A message naming every failed rule.
    #[must_use]
    pub fn message(&self) -> String {
        let r = &self.request;
        let failed: Vec<String> = r
            .failed()
            .map(ballast_api::governance::GateVerdict::describe)
            .collect();
        format!(
            "version {} of {} cannot move to {}: {} gate(s) failed under the policy of {}: {}; transition request {} records every verdict",
            r.version,
            r.model,
            r.to_stage,
            failed.len(),
            r.policy_source,
            failed.join("; "),
            r.id
        )
    }
}

#[derive(Serialize)]
struct GateFailureDetail<'a> {
    #[serde(flatten)]
    error: ErrorDetail,
    details: Vec<&'a ballast_api::governance::GateVerdict>,
}

#[derive(Serialize)]
struct GateFailureBody<'a> {
    error: GateFailureDetail<'a>,
    transition_request: &'a TransitionRequest,
}

impl IntoResponse for GateFailure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(ErrorCode::GateFailed.http_status())
            .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        let body = GateFailureBody {
            error: GateFailureDetail {
                error: ErrorDetail {
                    code: ErrorCode::GateFailed,
                    message: self.message(),
                    field: Some("stage".into()),
                },
                details: self.request.failed().collect(),
            },
            transition_request: &self.request,
        };
        let mut resp = (status, Json(&body)).into_response();
        set_request_header(&mut resp, self.request.id);
        resp
    }
}

/// Compiles a naming rule; the whole model name must match.
fn naming_regex(rule: &str) -> Result<regex::Regex, ApiError> {
    regex::RegexBuilder::new(&format!("^(?:{rule})$"))
        .size_limit(NAMING_RULE_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            ApiError::invalid(
                "naming_rule",
                format!("naming_rule {rule:?} is not a valid regular expression: {e}"),
            )
        })
}

/// Checks a policy before it is stored: every gate rule parses, every field is known, the naming
/// rule compiles.
///
/// # Errors
/// `invalid_argument` naming the rule at fault; nothing is stored.
pub fn validate_policy(policy: &Policy) -> Result<(), ApiError> {
    policy.validate()?;
    if let Some(rule) = &policy.naming_rule {
        naming_regex(rule)?;
    }
    Ok(())
}

/// Checks a new model's name against its namespace's naming rule.
///
/// # Errors
/// `invalid_name` naming the rule, or a store error.
pub async fn check_model_name(state: &AppState, name: &ModelName) -> Result<(), ApiError> {
    let Some(stored) = state.store.namespace_policy(name.namespace()).await? else {
        return Ok(());
    };
    let Some(rule) = &stored.policy.naming_rule else {
        return Ok(());
    };
    let re = naming_regex(rule)?;
    if re.is_match(name.model()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidName,
            format!(
                "model name {:?} does not match the naming rule {rule:?} of namespace {}",
                name.model(),
                name.namespace()
            ),
        )
        .field("name"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn naming_rules_are_anchored_and_checked() {
        let re = naming_regex("[a-z]+-bot").unwrap_or_else(|e| unreachable!("{e:?}"));
        assert!(re.is_match("support-bot"));
        assert!(!re.is_match("support-bot-2"));
        assert!(!re.is_match("x support-bot"));
        let bad = Policy {
            naming_rule: Some("([a-z".into()),
            ..Policy::default()
        };
        let e = validate_policy(&bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("naming_rule"));
        assert!(e.message.contains("([a-z"), "{}", e.message);
    }
}
