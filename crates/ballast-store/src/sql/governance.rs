//! [`GovernanceStore`] on the SQL store (SQLite or PostgreSQL). Every decision (a request's
//! gates, a review, a completion) is taken inside the writer's transaction: reviews are unique
//! per (request, reviewer), so concurrent approvals count once, and the approval that completes
//! a request moves the version in the same savepoint as its own audit entry and event. On
//! PostgreSQL the writers of all nodes take turns, so this holds across nodes too.

use async_trait::async_trait;
use ballast_api::governance::{
    evaluate, Decision, EffectivePolicy, GateVerdict, Policy, PolicyScope, RequestState, Review, RiskLevel,
    StoredPolicy, TransitionList, TransitionOutcome, TransitionRequest,
};
use ballast_api::{StageChange, Version};
use ballast_core::{name::validate_namespace, ErrorCode, ModelName, Stage};
use serde_json::{json, Value};

use super::ops::{record_change, set_stage};
use super::query::{self, model_id, now, parse_stage, to_i64, to_u64};
use super::SqlStore;
use crate::db::{Db, Row, Value as SqlValue};
use crate::governance::{GovernanceStore, PolicyTarget, StageRequest, TransitionFilter};
use crate::{Ctx, Precondition, StoreError, StoreResult};

const MAX_COMMENT: usize = 4096;

fn conflict(message: impl Into<String>) -> StoreError {
    StoreError::new(ErrorCode::Conflict, message)
}

fn denied(message: impl Into<String>) -> StoreError {
    StoreError::new(ErrorCode::PermissionDenied, message)
}

fn check_comment(comment: Option<&str>) -> StoreResult<()> {
    if comment.is_some_and(|c| c.len() > MAX_COMMENT) {
        return Err(StoreError {
            code: ErrorCode::InvalidArgument,
            message: format!("comments are at most {MAX_COMMENT} bytes"),
            field: Some("comment".into()),
        });
    }
    Ok(())
}

fn check_revision(pre: Precondition, current: Option<u64>, what: &str) -> StoreResult<()> {
    let fail = |message: String| StoreError {
        code: ErrorCode::PreconditionFailed,
        message,
        field: Some("If-Match".into()),
    };
    match (pre, current) {
        (Precondition::None, _) | (Precondition::Exists, Some(_)) | (Precondition::Absent, None) => Ok(()),
        (Precondition::Revision(w), Some(h)) if w == h => Ok(()),
        (Precondition::Revision(w), Some(h)) => Err(fail(format!(
            "{what} changed: If-Match asked for revision {w} but it is at revision {h}; read it again and retry"
        ))),
        (Precondition::Revision(_) | Precondition::Exists, None) => {
            Err(fail(format!("{what} does not exist, so If-Match cannot hold")))
        }
        (Precondition::Absent, Some(h)) => Err(fail(format!(
            "{what} already exists (revision {h}) and If-None-Match: * was given"
        ))),
    }
}

/// The `(namespace, model_id)` key of a policy target, and its subject in audit and events.
fn target_key(db: &dyn Db, target: &PolicyTarget) -> StoreResult<(String, Option<i64>, String)> {
    match target {
        PolicyTarget::Namespace(ns) => {
            validate_namespace(ns)?;
            Ok((ns.clone(), None, ns.clone()))
        }
        PolicyTarget::Model(m) => Ok((m.namespace().to_owned(), Some(model_id(db, m)?), m.to_string())),
    }
}

fn load_policy(
    db: &dyn Db,
    ns: &str,
    model: Option<i64>,
    target: String,
) -> StoreResult<Option<StoredPolicy>> {
    let row = db.query_row_opt(
        "SELECT body, revision, updated_by, updated_at FROM policies
         WHERE namespace = ?1 AND coalesce(model_id, 0) = coalesce(CAST(?2 AS BIGINT), 0)",
        crate::params![ns, model],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<i64>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
            ))
        },
    )?;
    row.map(|(body, revision, updated_by, updated_at)| {
        Ok(StoredPolicy {
            scope: if model.is_some() {
                PolicyScope::Model
            } else {
                PolicyScope::Namespace
            },
            target,
            policy: serde_json::from_str(&body)?,
            revision: to_u64(revision),
            updated_by,
            updated_at,
        })
    })
    .transpose()
}

fn get_policy(db: &dyn Db, target: &PolicyTarget) -> StoreResult<StoredPolicy> {
    let (ns, model, subject) = target_key(db, target)?;
    load_policy(db, &ns, model, subject)?
        .ok_or_else(|| StoreError::not_found(format!("a policy on {target}")))
}

fn set_policy(
    db: &dyn Db,
    ctx: &Ctx,
    target: &PolicyTarget,
    policy: &Policy,
    pre: Precondition,
) -> StoreResult<StoredPolicy> {
    let (ns, model, subject) = target_key(db, target)?;
    let before = load_policy(db, &ns, model, subject.clone())?;
    check_revision(
        pre,
        before.as_ref().map(|p| p.revision),
        &format!("the policy on {target}"),
    )?;
    let body = serde_json::to_string(policy)?;
    let at = now();
    if before.is_some() {
        db.execute(
            "UPDATE policies SET body = ?3, revision = revision + 1, updated_by = ?4, updated_at = ?5
             WHERE namespace = ?1 AND coalesce(model_id, 0) = coalesce(CAST(?2 AS BIGINT), 0)",
            crate::params![ns, model, body, ctx.actor, at],
        )?;
    } else {
        db.execute(
            "INSERT INTO policies (namespace, model_id, body, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            crate::params![ns, model, body, ctx.actor, at],
        )?;
    }
    let after = load_policy(db, &ns, model, subject.clone())?
        .ok_or_else(|| StoreError::internal("the policy just written cannot be read"))?;
    record_change(
        db,
        ctx,
        "policy.updated",
        &subject,
        &before.map_or(
            Value::Null,
            |p| json!({ "policy": p.policy, "revision": p.revision }),
        ),
        &json!({ "policy": after.policy, "revision": after.revision }),
    )?;
    Ok(after)
}

fn delete_policy(db: &dyn Db, ctx: &Ctx, target: &PolicyTarget, pre: Precondition) -> StoreResult<()> {
    let (ns, model, subject) = target_key(db, target)?;
    let before = load_policy(db, &ns, model, subject.clone())?
        .ok_or_else(|| StoreError::not_found(format!("a policy on {target}")))?;
    check_revision(pre, Some(before.revision), &format!("the policy on {target}"))?;
    db.execute(
        "DELETE FROM policies WHERE namespace = ?1 AND coalesce(model_id, 0) = coalesce(CAST(?2 AS BIGINT), 0)",
        crate::params![ns, model],
    )?;
    record_change(
        db,
        ctx,
        "policy.deleted",
        &subject,
        &json!({ "policy": before.policy, "revision": before.revision }),
        &Value::Null,
    )
}

fn effective(db: &dyn Db, name: &ModelName) -> StoreResult<EffectivePolicy> {
    let id = model_id(db, name)?;
    let ns = load_policy(db, name.namespace(), None, name.namespace().to_owned())?;
    let m = load_policy(db, name.namespace(), Some(id), name.to_string())?;
    Ok(EffectivePolicy::from_parts(name.to_string(), ns, m))
}

fn production(db: &dyn Db, id: i64, name: &ModelName) -> StoreResult<Option<Version>> {
    query::newest_in_stage(db, id, Stage::Production)?
        .map(|n| query::load_version(db, id, name, n))
        .transpose()
}

fn load_reviews(db: &dyn Db, id: i64) -> StoreResult<Vec<Review>> {
    let c = query::bytewise(db);
    let sql = format!(
        "SELECT reviewer, decision, comment, at FROM transition_reviews WHERE request_id = ?1
         ORDER BY at{c}, reviewer{c}"
    );
    let rows = db.query_map(&sql, crate::params![id], |r| {
        Ok((
            r.get::<String>(0)?,
            r.get::<String>(1)?,
            r.get::<Option<String>>(2)?,
            r.get::<String>(3)?,
        ))
    })?;
    let mut out = Vec::with_capacity(rows.len());
    for (reviewer, decision, comment, at) in rows {
        let decision = match decision.as_str() {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            other => return Err(StoreError::internal(format!("unknown review decision {other:?}"))),
        };
        out.push(Review {
            reviewer,
            decision,
            comment,
            at,
        });
    }
    Ok(out)
}

const REQUEST_COLUMNS: &str =
    "r.id, m.namespace, m.name, r.number, r.from_stage, r.to_stage, r.state, r.requested_by,
    r.comment, r.risk, r.policy_source, r.gates_passed, r.verdicts, r.baseline_version, r.required_approvals,
    r.created_at, r.updated_at, r.closed_by, r.resolution, r.model_id";

struct RawRequest {
    id: i64,
    ns: String,
    model: String,
    number: i64,
    from: String,
    to: String,
    state: String,
    requested_by: String,
    comment: Option<String>,
    risk: String,
    policy_source: String,
    gates_passed: bool,
    verdicts: String,
    baseline: Option<i64>,
    required: i64,
    created_at: String,
    updated_at: String,
    closed_by: Option<String>,
    resolution: Option<String>,
}

fn raw(r: &Row) -> StoreResult<RawRequest> {
    Ok(RawRequest {
        id: r.get(0)?,
        ns: r.get(1)?,
        model: r.get(2)?,
        number: r.get(3)?,
        from: r.get(4)?,
        to: r.get(5)?,
        state: r.get(6)?,
        requested_by: r.get(7)?,
        comment: r.get(8)?,
        risk: r.get(9)?,
        policy_source: r.get(10)?,
        gates_passed: r.get(11)?,
        verdicts: r.get(12)?,
        baseline: r.get(13)?,
        required: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
        closed_by: r.get(17)?,
        resolution: r.get(18)?,
    })
}

fn parse_state(s: &str) -> StoreResult<RequestState> {
    s.parse()
        .map_err(|_| StoreError::internal(format!("unknown request state {s:?} in the database")))
}

fn parse_risk(s: &str) -> StoreResult<RiskLevel> {
    serde_json::from_value(Value::String(s.to_owned()))
        .map_err(|_| StoreError::internal(format!("unknown risk level {s:?} in the database")))
}

fn finish_request(db: &dyn Db, raw: RawRequest) -> StoreResult<TransitionRequest> {
    let reviews = load_reviews(db, raw.id)?;
    let approvals = reviews.iter().filter(|r| r.decision == Decision::Approve).count();
    let verdicts: Vec<GateVerdict> = serde_json::from_str(&raw.verdicts)?;
    Ok(TransitionRequest {
        id: to_u64(raw.id),
        model: format!("{}/{}", raw.ns, raw.model),
        version: to_u64(raw.number),
        from_stage: parse_stage(&raw.from)?,
        to_stage: parse_stage(&raw.to)?,
        state: parse_state(&raw.state)?,
        requested_by: raw.requested_by,
        comment: raw.comment,
        risk: parse_risk(&raw.risk)?,
        policy_source: raw.policy_source,
        gates_passed: raw.gates_passed,
        verdicts,
        baseline_version: raw.baseline.map(to_u64),
        required_approvals: u32::try_from(raw.required).unwrap_or(u32::MAX),
        approvals: u32::try_from(approvals).unwrap_or(u32::MAX),
        reviews,
        created_at: raw.created_at,
        updated_at: raw.updated_at,
        closed_by: raw.closed_by,
        resolution: raw.resolution,
    })
}

fn load_request(db: &dyn Db, id: u64) -> StoreResult<Option<TransitionRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM transition_requests r JOIN models m ON m.id = r.model_id WHERE r.id = ?1"
    );
    let row = db.query_row_opt(&sql, crate::params![to_i64(id)], raw)?;
    row.map(|r| finish_request(db, r)).transpose()
}

/// A request of this model (another model's request is not found here).
fn request_of(db: &dyn Db, name: &ModelName, id: u64) -> StoreResult<TransitionRequest> {
    load_request(db, id)?
        .filter(|r| r.model == name.to_string())
        .ok_or_else(|| StoreError::not_found(format!("transition request {id} of {name}")))
}

fn request_json(r: &TransitionRequest) -> Value {
    json!({
        "id": r.id,
        "from_stage": r.from_stage,
        "to_stage": r.to_stage,
        "state": r.state,
        "gates_passed": r.gates_passed,
        "failed": r.failed().map(GateVerdict::describe).collect::<Vec<_>>(),
        "baseline_version": r.baseline_version,
        "required_approvals": r.required_approvals,
        "approvals": r.approvals,
        "resolution": r.resolution,
    })
}

fn subject(r: &TransitionRequest) -> String {
    format!("{}/{}", r.model, r.version)
}

/// Sets a request's state (and who closed it, and why), recording the change as `action`.
fn close(
    db: &dyn Db,
    ctx: &Ctx,
    before: &TransitionRequest,
    state: RequestState,
    resolution: &str,
    action: &str,
) -> StoreResult<TransitionRequest> {
    db.execute(
        "UPDATE transition_requests SET state = ?2, updated_at = ?3, closed_by = ?4, resolution = ?5 WHERE id = ?1",
        crate::params![to_i64(before.id), state.as_str(), now(), ctx.actor, resolution],
    )?;
    let after =
        load_request(db, before.id)?.ok_or_else(|| StoreError::internal("a transition request vanished"))?;
    record_change(
        db,
        ctx,
        action,
        &subject(&after),
        &request_json(before),
        &request_json(&after),
    )?;
    Ok(after)
}

/// Marks pending requests of a model whose version is no longer in the stage it was requested
/// from (it moved by other means) as superseded.
fn supersede_stale(db: &dyn Db, ctx: &Ctx, model: i64) -> StoreResult<()> {
    let stale = db.query_map(
        "SELECT r.id, v.stage FROM transition_requests r
         JOIN versions v ON v.model_id = r.model_id AND v.number = r.number
         WHERE r.model_id = ?1 AND r.state = 'pending' AND v.stage <> r.from_stage ORDER BY r.id",
        crate::params![model],
        |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
    )?;
    for (id, stage) in stale {
        if let Some(before) = load_request(db, to_u64(id))? {
            close(
                db,
                ctx,
                &before,
                RequestState::Superseded,
                &format!(
                    "the version moved from {} to {stage} by other means",
                    before.from_stage
                ),
                "transition.superseded",
            )?;
        }
    }
    Ok(())
}

/// The gates and approvals of a request under the policy in force now.
struct Evaluation {
    verdicts: Vec<GateVerdict>,
    passed: bool,
    baseline: Option<u64>,
    required: u32,
    risk: RiskLevel,
    source: String,
}

fn evaluate_now(
    db: &dyn Db,
    id: i64,
    name: &ModelName,
    version: &Version,
    to: Stage,
    policy: &EffectivePolicy,
) -> StoreResult<Evaluation> {
    let prod = production(db, id, name)?;
    let Some(p) = &policy.policy else {
        return Ok(Evaluation {
            verdicts: Vec::new(),
            passed: true,
            baseline: prod.as_ref().map(|v| v.version),
            required: 0,
            risk: RiskLevel::Low,
            source: policy.source(),
        });
    };
    let verdicts = evaluate(p, version, prod.as_ref(), to);
    Ok(Evaluation {
        passed: verdicts.iter().all(|v| v.passed),
        verdicts,
        baseline: prod.as_ref().map(|v| v.version),
        required: p.required_approvals(to),
        risk: p.risk_level(),
        source: policy.source(),
    })
}

fn store_evaluation(db: &dyn Db, id: u64, e: &Evaluation) -> StoreResult<()> {
    db.execute(
        "UPDATE transition_requests SET verdicts = ?2, gates_passed = ?3, baseline_version = ?4,
            required_approvals = ?5, risk = ?6, policy_source = ?7, updated_at = ?8 WHERE id = ?1",
        crate::params![
            to_i64(id),
            serde_json::to_string(&e.verdicts)?,
            e.passed,
            e.baseline.map(to_i64),
            i64::from(e.required),
            e.risk.as_str(),
            e.source,
            now()
        ],
    )?;
    Ok(())
}

fn failed_summary(verdicts: &[GateVerdict]) -> String {
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(GateVerdict::describe)
        .collect();
    format!("gates failed: {}", failed.join("; "))
}

/// Moves the version of a pending request and marks it completed, in the caller's savepoint.
fn complete(
    db: &dyn Db,
    ctx: &Ctx,
    before: &TransitionRequest,
    comment: Option<&str>,
    resolution: &str,
) -> StoreResult<(StageChange, TransitionRequest)> {
    let name = ModelName::parse(&before.model)?;
    let comment = comment.or(before.comment.as_deref());
    let change = set_stage(
        db,
        ctx,
        &name,
        before.version,
        before.to_stage,
        comment,
        Precondition::None,
    )?;
    let after = close(
        db,
        ctx,
        before,
        RequestState::Completed,
        resolution,
        "transition.completed",
    )?;
    supersede_stale(db, ctx, model_id(db, &name)?)?;
    Ok((change, after))
}

/// Evaluates the gates again and completes the request when they pass; records it as
/// `gates_failed` otherwise.
fn complete_if_gates_pass(
    db: &dyn Db,
    ctx: &Ctx,
    before: &TransitionRequest,
    comment: Option<&str>,
    resolution: &str,
) -> StoreResult<(Option<StageChange>, TransitionRequest)> {
    let name = ModelName::parse(&before.model)?;
    let id = model_id(db, &name)?;
    let version = query::load_version(db, id, &name, before.version)?;
    let eval = evaluate_now(db, id, &name, &version, before.to_stage, &effective(db, &name)?)?;
    store_evaluation(db, before.id, &eval)?;
    let current =
        load_request(db, before.id)?.ok_or_else(|| StoreError::internal("a transition request vanished"))?;
    if !eval.passed {
        let after = close(
            db,
            ctx,
            &current,
            RequestState::GatesFailed,
            &failed_summary(&eval.verdicts),
            "transition.blocked",
        )?;
        return Ok((None, after));
    }
    let (change, after) = complete(db, ctx, &current, comment, resolution)?;
    Ok((Some(change), after))
}

fn pending_for(db: &dyn Db, model: i64, number: u64, to: Stage) -> StoreResult<Option<TransitionRequest>> {
    let id = db.query_value::<i64>(
        "SELECT id FROM transition_requests WHERE model_id = ?1 AND number = ?2 AND to_stage = ?3 AND state = 'pending'",
        crate::params![model, to_i64(number), to.as_str()],
    )?;
    id.map(|id| load_request(db, to_u64(id)))
        .transpose()
        .map(Option::flatten)
}

fn request_transition(db: &dyn Db, ctx: &Ctx, req: &StageRequest) -> StoreResult<TransitionOutcome> {
    check_comment(req.comment.as_deref())?;
    let name = &req.model;
    let id = model_id(db, name)?;
    let version = query::load_version(db, id, name, req.number)?;
    check_revision(
        req.pre,
        Some(version.revision),
        &format!("version {} of {name}", req.number),
    )?;
    version
        .stage
        .check_move(req.to, version.state == ballast_api::VersionState::Sealed)?;
    supersede_stale(db, ctx, id)?;
    let policy = effective(db, name)?;
    if policy.policy.is_none() || !req.to.is_gated() {
        let change = set_stage(
            db,
            ctx,
            name,
            req.number,
            req.to,
            req.comment.as_deref(),
            Precondition::None,
        )?;
        supersede_stale(db, ctx, id)?;
        return Ok(TransitionOutcome::Moved {
            change,
            request: None,
        });
    }
    if let Some(existing) = pending_for(db, id, req.number, req.to)? {
        return Ok(TransitionOutcome::Pending { request: existing });
    }
    let eval = evaluate_now(db, id, name, &version, req.to, &policy)?;
    let at = now();
    let new_id = db
        .query_one(
            "INSERT INTO transition_requests (model_id, number, from_stage, to_stage, state, requested_by, comment,
            risk, policy_source, gates_passed, verdicts, baseline_version, required_approvals, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13) RETURNING id",
            crate::params![
        id,
        to_i64(req.number),
        version.stage.as_str(),
        req.to.as_str(),
        ctx.actor,
        req.comment,
        eval.risk.as_str(),
        eval.source,
        eval.passed,
        serde_json::to_string(&eval.verdicts)?,
        eval.baseline.map(to_i64),
        i64::from(eval.required),
        at
            ],
        )?
        .get::<i64>(0)?;
    let request = load_request(db, to_u64(new_id))?
        .ok_or_else(|| StoreError::internal("the transition request just written cannot be read"))?;
    record_change(
        db,
        ctx,
        "transition.requested",
        &subject(&request),
        &Value::Null,
        &request_json(&request),
    )?;
    if !eval.passed {
        let request = close(
            db,
            ctx,
            &request,
            RequestState::GatesFailed,
            &failed_summary(&eval.verdicts),
            "transition.blocked",
        )?;
        return Ok(TransitionOutcome::Blocked { request });
    }
    if eval.required == 0 {
        let (change, request) = complete(
            db,
            ctx,
            &request,
            None,
            "the gates passed and the policy needs no approval",
        )?;
        return Ok(TransitionOutcome::Moved {
            change,
            request: Some(request),
        });
    }
    Ok(TransitionOutcome::Pending { request })
}

/// Loads a request for a decision: it must be this model's and still pending (after stale
/// requests were superseded).
fn pending_request(db: &dyn Db, ctx: &Ctx, name: &ModelName, id: u64) -> StoreResult<TransitionRequest> {
    let mid = model_id(db, name)?;
    request_of(db, name, id)?;
    supersede_stale(db, ctx, mid)?;
    let r = request_of(db, name, id)?;
    if r.state != RequestState::Pending {
        return Err(conflict(format!(
            "transition request {id} is {}{}; only pending requests can be reviewed, completed or cancelled",
            r.state,
            r.resolution
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        )));
    }
    Ok(r)
}

fn review(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    id: u64,
    decision: Decision,
    comment: Option<&str>,
) -> StoreResult<TransitionRequest> {
    check_comment(comment)?;
    let before = pending_request(db, ctx, name, id)?;
    if before.requested_by == ctx.actor {
        return Err(denied(match decision {
            Decision::Approve => format!(
                "{} requested transition {id} and cannot approve it: another reviewer must",
                ctx.actor
            ),
            Decision::Reject => format!(
                "{} requested transition {id} and cannot reject it; cancel it instead",
                ctx.actor
            ),
        }));
    }
    if let Some(prev) = before.reviews.iter().find(|r| r.reviewer == ctx.actor) {
        return Err(conflict(format!(
            "{} already reviewed transition {id} ({} at {}); a reviewer counts once",
            ctx.actor,
            match prev.decision {
                Decision::Approve => "approved",
                Decision::Reject => "rejected",
            },
            prev.at
        )));
    }
    let inserted = db.execute(
        "INSERT INTO transition_reviews (request_id, reviewer, decision, comment, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
        crate::params![
            to_i64(id),
            ctx.actor,
            match decision {
                Decision::Approve => "approve",
                Decision::Reject => "reject",
            },
            comment,
            now()
        ],
    )?;
    if inserted == 0 {
        return Err(conflict(format!(
            "{} already reviewed transition {id}; a reviewer counts once",
            ctx.actor
        )));
    }
    db.execute(
        "UPDATE transition_requests SET updated_at = ?2 WHERE id = ?1",
        crate::params![to_i64(id), now()],
    )?;
    let reviewed =
        load_request(db, id)?.ok_or_else(|| StoreError::internal("a transition request vanished"))?;
    match decision {
        Decision::Reject => close(
            db,
            ctx,
            &reviewed,
            RequestState::Rejected,
            &format!(
                "rejected by {}{}",
                ctx.actor,
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            ),
            "transition.rejected",
        ),
        Decision::Approve => {
            record_change(
                db,
                ctx,
                "transition.approved",
                &subject(&reviewed),
                &request_json(&before),
                &json!({ "id": id, "reviewer": ctx.actor, "comment": comment, "approvals": reviewed.approvals }),
            )?;
            // The policy in force now decides how many approvals are needed.
            let policy = effective(db, name)?;
            let required = policy
                .policy
                .as_ref()
                .map_or(0, |p| p.required_approvals(reviewed.to_stage));
            if reviewed.approvals < required {
                if required != reviewed.required_approvals {
                    db.execute(
                        "UPDATE transition_requests SET required_approvals = ?2 WHERE id = ?1",
                        crate::params![to_i64(id), i64::from(required)],
                    )?;
                    return load_request(db, id)?
                        .ok_or_else(|| StoreError::internal("a transition request vanished"));
                }
                return Ok(reviewed);
            }
            let resolution = format!("approved by {} reviewer(s)", reviewed.approvals);
            Ok(complete_if_gates_pass(db, ctx, &reviewed, None, &resolution)?.1)
        }
    }
}

fn complete_explicitly(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    id: u64,
    comment: Option<&str>,
) -> StoreResult<TransitionRequest> {
    check_comment(comment)?;
    let before = pending_request(db, ctx, name, id)?;
    let policy = effective(db, name)?;
    let (required, risk) = policy.policy.as_ref().map_or((0, RiskLevel::Low), |p| {
        (p.required_approvals(before.to_stage), p.risk_level())
    });
    if before.approvals < required {
        if before.requested_by == ctx.actor {
            return Err(denied(format!(
                "{} requested transition {id} and cannot complete it while approvals are missing ({} of {required})",
                ctx.actor, before.approvals
            )));
        }
        if risk == RiskLevel::High && before.approvals == 0 {
            return Err(conflict(format!(
                "{name} is a high-risk model: transition {id} needs at least one reviewer's approval before it can be completed"
            )));
        }
    }
    let resolution = format!(
        "completed by {} with {} of {required} approval(s){}",
        ctx.actor,
        before.approvals,
        comment.map(|c| format!(": {c}")).unwrap_or_default()
    );
    Ok(complete_if_gates_pass(db, ctx, &before, comment, &resolution)?.1)
}

fn cancel(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    id: u64,
    comment: Option<&str>,
) -> StoreResult<TransitionRequest> {
    check_comment(comment)?;
    let before = pending_request(db, ctx, name, id)?;
    if before.requested_by != ctx.actor {
        return Err(denied(format!(
            "only {} (who requested transition {id}) can cancel it; reviewers reject instead",
            before.requested_by
        )));
    }
    close(
        db,
        ctx,
        &before,
        RequestState::Cancelled,
        &format!(
            "cancelled by {}{}",
            ctx.actor,
            comment.map(|c| format!(": {c}")).unwrap_or_default()
        ),
        "transition.cancelled",
    )
}

/// Appends a parameter and returns its numbered placeholder.
fn arg(args: &mut Vec<SqlValue>, v: SqlValue) -> String {
    args.push(v);
    format!("?{}", args.len())
}

fn list(db: &dyn Db, f: &TransitionFilter) -> StoreResult<TransitionList> {
    let mut sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM transition_requests r JOIN models m ON m.id = r.model_id WHERE 1 = 1"
    );
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(m) = &f.model {
        let id = model_id(db, m)?;
        sql.push_str(&format!(
            " AND r.model_id = {}",
            arg(&mut args, SqlValue::Integer(id))
        ));
        if let Some(n) = f.version {
            sql.push_str(&format!(
                " AND r.number = {}",
                arg(&mut args, SqlValue::Integer(to_i64(n)))
            ));
        }
    }
    if let Some(nss) = &f.namespaces {
        if nss.is_empty() {
            return Ok(TransitionList { requests: Vec::new() });
        }
        let list: Vec<String> = nss
            .iter()
            .map(|n| arg(&mut args, SqlValue::Text(n.clone())))
            .collect();
        sql.push_str(&format!(" AND m.namespace IN ({})", list.join(", ")));
    }
    if let Some(s) = f.state {
        sql.push_str(&format!(" AND r.state = {}", arg(&mut args, s.as_str().into())));
    }
    if let Some(s) = f.to_stage {
        sql.push_str(&format!(
            " AND r.to_stage = {}",
            arg(&mut args, s.as_str().into())
        ));
    }
    if let Some(b) = f.before {
        sql.push_str(&format!(
            " AND r.id < {}",
            arg(&mut args, SqlValue::Integer(to_i64(b)))
        ));
    }
    let limit = arg(&mut args, SqlValue::Integer(i64::from(f.limit.clamp(1, 1000))));
    sql.push_str(&format!(" ORDER BY r.id DESC LIMIT {limit}"));
    let raws = db.query_map(&sql, &args, raw)?;
    let requests = raws
        .into_iter()
        .map(|r| finish_request(db, r))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(TransitionList { requests })
}

#[async_trait]
impl GovernanceStore for SqlStore {
    async fn get_policy(&self, target: &PolicyTarget) -> StoreResult<StoredPolicy> {
        let target = target.clone();
        self.read(move |db| get_policy(db, &target)).await
    }

    async fn set_policy(
        &self,
        ctx: &Ctx,
        target: &PolicyTarget,
        policy: Policy,
        pre: Precondition,
    ) -> StoreResult<StoredPolicy> {
        let (c, target) = (ctx.clone(), target.clone());
        self.write(ctx, move |db| set_policy(db, &c, &target, &policy, pre))
            .await
    }

    async fn delete_policy(&self, ctx: &Ctx, target: &PolicyTarget, pre: Precondition) -> StoreResult<()> {
        let (c, target) = (ctx.clone(), target.clone());
        self.write(ctx, move |db| delete_policy(db, &c, &target, pre))
            .await
    }

    async fn effective_policy(&self, name: &ModelName) -> StoreResult<EffectivePolicy> {
        let name = name.clone();
        self.read(move |db| effective(db, &name)).await
    }

    async fn namespace_policy(&self, namespace: &str) -> StoreResult<Option<StoredPolicy>> {
        let ns = namespace.to_owned();
        self.read(move |db| {
            validate_namespace(&ns)?;
            load_policy(db, &ns, None, ns.clone())
        })
        .await
    }

    async fn request_transition(&self, ctx: &Ctx, req: StageRequest) -> StoreResult<TransitionOutcome> {
        let c = ctx.clone();
        self.write(ctx, move |db| request_transition(db, &c, &req)).await
    }

    async fn review_transition(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        id: u64,
        decision: Decision,
        comment: Option<String>,
    ) -> StoreResult<TransitionRequest> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |db| {
            review(db, &c, &name, id, decision, comment.as_deref())
        })
        .await
    }

    async fn complete_transition(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        id: u64,
        comment: Option<String>,
    ) -> StoreResult<TransitionRequest> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |db| {
            complete_explicitly(db, &c, &name, id, comment.as_deref())
        })
        .await
    }

    async fn cancel_transition(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        id: u64,
        comment: Option<String>,
    ) -> StoreResult<TransitionRequest> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |db| cancel(db, &c, &name, id, comment.as_deref()))
            .await
    }

    async fn get_transition(&self, name: &ModelName, id: u64) -> StoreResult<TransitionRequest> {
        let name = name.clone();
        self.read(move |db| {
            model_id(db, &name)?;
            request_of(db, &name, id)
        })
        .await
    }

    async fn list_transitions(&self, filter: TransitionFilter) -> StoreResult<TransitionList> {
        self.read(move |db| list(db, &filter)).await
    }
}
