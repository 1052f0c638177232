//! Governance: policies with revisions and compare-and-swap, transition requests whose gates are
//! evaluated, whose reviews count once per reviewer and whose last approval moves the version,
//! and the ways a request ends (rejected, cancelled, blocked, superseded, completed early).

use std::sync::Arc;

use ballast_api::governance::{
    ApprovalTable, Decision, PerStage, Policy, PolicyScope, RequestState, RiskLevel, StageApprovals,
    TransitionOutcome, TransitionRequest,
};
use ballast_core::{ErrorCode, ModelName, Stage};
use ballast_store::governance::{PolicyTarget, StageRequest, TransitionFilter};
use ballast_store::{Precondition, Store};

use super::{all_audit, assert_audit_matches_events, code, ctx, model, name, sealed, trail};

fn ns(s: &str) -> PolicyTarget {
    PolicyTarget::Namespace(s.to_owned())
}

fn of_model(s: &str) -> PolicyTarget {
    PolicyTarget::Model(name(s))
}

/// A medium-risk policy: `production` approvals needed for production, none for staging, and
/// the production gate `accuracy >= 0.9`.
fn medium(production: u32) -> Policy {
    Policy {
        risk: Some(RiskLevel::Medium),
        approvals: Some(ApprovalTable {
            medium: Some(StageApprovals {
                staging: 0,
                production,
            }),
            ..ApprovalTable::default()
        }),
        gates: Some(PerStage {
            staging: Vec::new(),
            production: vec!["accuracy >= 0.9".to_owned()],
        }),
        ..Policy::default()
    }
}

fn stage_request(m: &ModelName, number: u64, to: Stage) -> StageRequest {
    StageRequest {
        model: m.clone(),
        number,
        to,
        comment: Some(format!("to {to}")),
        pre: Precondition::None,
    }
}

async fn request(store: &dyn Store, actor: &str, m: &ModelName, number: u64, to: Stage) -> TransitionOutcome {
    store
        .request_transition(&ctx(actor), stage_request(m, number, to))
        .await
        .unwrap_or_else(|e| panic!("request {m}/{number} to {to}: {e}"))
}

fn pending(outcome: TransitionOutcome) -> TransitionRequest {
    match outcome {
        TransitionOutcome::Pending { request } => request,
        other => panic!("expected a pending request, got {other:?}"),
    }
}

async fn approve(store: &dyn Store, actor: &str, m: &ModelName, id: u64) -> TransitionRequest {
    store
        .review_transition(&ctx(actor), m, id, Decision::Approve, None)
        .await
        .unwrap_or_else(|e| panic!("{actor} approves {id}: {e}"))
}

/// A model with one sealed version of accuracy `accuracy`, moved to staging (no policy yet).
async fn in_staging(store: &dyn Store, full: &str, accuracy: f64) -> (ModelName, u64) {
    let m = name(full);
    model(store, full, &[]).await;
    let v = sealed(store, &m, &[("accuracy", accuracy)], &[]).await.version;
    store
        .set_stage(&ctx("alice"), &m, v, Stage::Staging, None, Precondition::None)
        .await
        .expect("to staging");
    (m, v)
}

async fn stage_of(store: &dyn Store, m: &ModelName, n: u64) -> Stage {
    store.get_version(m, n).await.expect("get version").stage
}

/// Policies on namespaces and models: revisions count every change, `If-Match` and
/// `If-None-Match` decide races, the model's policy overrides its namespace's field by field,
/// every change is audited with its event, and refused changes leave nothing behind.
pub async fn policies_have_revisions_and_preconditions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    model(s, "acme/bot", &[]).await;
    assert_eq!(code(s.get_policy(&ns("acme")).await), ErrorCode::NotFound);
    assert!(s.namespace_policy("acme").await.expect("read").is_none());
    let before = trail(s).await;
    assert_eq!(
        code(
            s.set_policy(&ctx("alice"), &ns("Bad NS"), medium(1), Precondition::None)
                .await
        ),
        ErrorCode::InvalidName
    );
    assert_eq!(
        code(
            s.set_policy(
                &ctx("alice"),
                &of_model("acme/ghost"),
                medium(1),
                Precondition::None
            )
            .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            s.set_policy(&ctx("alice"), &ns("acme"), medium(1), Precondition::Exists)
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        code(
            s.set_policy(&ctx("alice"), &ns("acme"), medium(1), Precondition::Revision(1))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(trail(s).await, before, "refused changes leave no trace");

    let p = s
        .set_policy(&ctx("alice"), &ns("acme"), medium(1), Precondition::Absent)
        .await
        .expect("create");
    assert_eq!(
        (p.scope, p.target.as_str(), p.revision, p.updated_by.as_str()),
        (PolicyScope::Namespace, "acme", 1, "alice")
    );
    assert_eq!(p.policy, medium(1));
    assert_eq!(
        code(
            s.set_policy(&ctx("bob"), &ns("acme"), medium(2), Precondition::Absent)
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    let p = s
        .set_policy(&ctx("bob"), &ns("acme"), medium(2), Precondition::Revision(1))
        .await
        .expect("replace");
    assert_eq!((p.revision, p.updated_by.as_str()), (2, "bob"));
    assert_eq!(
        code(
            s.set_policy(&ctx("carol"), &ns("acme"), medium(3), Precondition::Revision(1))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    let p = s
        .set_policy(&ctx("carol"), &ns("acme"), medium(3), Precondition::None)
        .await
        .expect("replace");
    assert_eq!(p.revision, 3);
    assert_eq!(s.get_policy(&ns("acme")).await.expect("get"), p);
    assert_eq!(s.namespace_policy("acme").await.expect("read"), Some(p.clone()));
    assert!(s.namespace_policy("other").await.expect("read").is_none());
    assert_eq!(code(s.namespace_policy("Bad NS").await), ErrorCode::InvalidName);

    // The model's own policy overrides its namespace's risk, and inherits its gates.
    let own = Policy {
        risk: Some(RiskLevel::High),
        ..Policy::default()
    };
    let mp = s
        .set_policy(
            &ctx("alice"),
            &of_model("acme/bot"),
            own.clone(),
            Precondition::Absent,
        )
        .await
        .expect("model policy");
    assert_eq!(
        (mp.scope, mp.target.as_str(), mp.revision),
        (PolicyScope::Model, "acme/bot", 1)
    );
    let eff = s.effective_policy(&name("acme/bot")).await.expect("effective");
    let merged = eff.policy.clone().expect("a policy applies");
    assert_eq!(merged.risk, Some(RiskLevel::High));
    assert_eq!(merged.gates, medium(3).gates);
    assert_eq!(merged.required_approvals(Stage::Staging), 1);
    assert_eq!(eff.namespace_policy.as_ref().map(|p| p.revision), Some(3));
    assert_eq!(eff.model_policy.as_ref().map(|p| p.revision), Some(1));
    assert_eq!(eff.source(), "namespace acme + model acme/bot");
    assert_eq!(
        code(s.effective_policy(&name("acme/ghost")).await),
        ErrorCode::NotFound
    );
    // Another model of the namespace only has the namespace's policy.
    model(s, "acme/other", &[]).await;
    let eff = s.effective_policy(&name("acme/other")).await.expect("effective");
    assert_eq!(eff.policy, Some(medium(3)));
    assert!(eff.model_policy.is_none());

    let before = trail(s).await;
    assert_eq!(
        code(
            s.delete_policy(&ctx("alice"), &of_model("acme/bot"), Precondition::Revision(2))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        code(
            s.delete_policy(&ctx("alice"), &of_model("acme/other"), Precondition::None)
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(trail(s).await, before);
    s.delete_policy(&ctx("alice"), &of_model("acme/bot"), Precondition::Revision(1))
        .await
        .expect("delete");
    assert_eq!(
        code(s.get_policy(&of_model("acme/bot")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            s.delete_policy(&ctx("alice"), &of_model("acme/bot"), Precondition::None)
                .await
        ),
        ErrorCode::NotFound
    );
    let eff = s.effective_policy(&name("acme/bot")).await.expect("effective");
    assert_eq!(eff.policy, Some(medium(3)));

    // A policy set again after deletion starts over at revision 1.
    let again = s
        .set_policy(&ctx("alice"), &of_model("acme/bot"), own, Precondition::Absent)
        .await
        .expect("again");
    assert_eq!(again.revision, 1);

    let actions: Vec<(String, String)> = all_audit(s)
        .await
        .into_iter()
        .filter(|a| a.action.starts_with("policy."))
        .map(|a| (a.action, a.target))
        .collect();
    let expected = [
        ("policy.updated", "acme"),
        ("policy.updated", "acme"),
        ("policy.updated", "acme"),
        ("policy.updated", "acme/bot"),
        ("policy.deleted", "acme/bot"),
        ("policy.updated", "acme/bot"),
    ];
    assert_eq!(
        actions,
        expected
            .iter()
            .map(|(a, t)| ((*a).to_owned(), (*t).to_owned()))
            .collect::<Vec<_>>()
    );
    assert_audit_matches_events(s).await;
}

/// Into a gated stage under a policy, a request waits for its approvals (the requester cannot
/// approve, a reviewer counts once), asking again returns the pending request, and the approval
/// that completes it moves the version in the same change; requests list newest first.
pub async fn a_transition_waits_for_approvals_then_moves(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = name("acme/bot");
    model(s, "acme/bot", &[]).await;
    let v = sealed(s, &m, &[("accuracy", 0.95)], &[]).await.version;
    s.set_policy(&ctx("admin"), &ns("acme"), medium(2), Precondition::None)
        .await
        .expect("policy");

    // Staging needs no approval under this policy: the move happens at once, with its request.
    let staged = match request(s, "alice", &m, v, Stage::Staging).await {
        TransitionOutcome::Moved {
            change,
            request: Some(r),
        } => {
            assert_eq!(change.version.stage, Stage::Staging);
            r
        }
        other => panic!("expected a completed move, got {other:?}"),
    };
    assert_eq!(staged.state, RequestState::Completed);
    assert_eq!(stage_of(s, &m, v).await, Stage::Staging);

    let r = pending(request(s, "alice", &m, v, Stage::Production).await);
    assert!(r.id > staged.id, "request ids grow: {} then {}", staged.id, r.id);
    assert_eq!(
        (r.model.as_str(), r.version, r.from_stage, r.to_stage),
        ("acme/bot", v, Stage::Staging, Stage::Production)
    );
    assert_eq!((r.required_approvals, r.approvals), (2, 0));
    assert_eq!(r.risk, RiskLevel::Medium);
    assert_eq!(r.policy_source, "namespace acme");
    assert_eq!(r.requested_by, "alice");
    assert_eq!(r.comment.as_deref(), Some("to production"));
    assert!(r.gates_passed);
    assert_eq!(r.verdicts.len(), 1);
    assert!(r.verdicts[0].passed);
    // Asking again returns the same pending request.
    let again = pending(request(s, "alice", &m, v, Stage::Production).await);
    assert_eq!(again.id, r.id);

    let before = trail(s).await;
    let own = s
        .review_transition(&ctx("alice"), &m, r.id, Decision::Approve, None)
        .await;
    assert_eq!(code(own), ErrorCode::PermissionDenied);
    assert_eq!(trail(s).await, before);

    let once = approve(s, "bob", &m, r.id).await;
    assert_eq!((once.state, once.approvals), (RequestState::Pending, 1));
    assert_eq!(stage_of(s, &m, v).await, Stage::Staging);
    let before = trail(s).await;
    assert_eq!(
        code(
            s.review_transition(&ctx("bob"), &m, r.id, Decision::Approve, None)
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(
            s.review_transition(&ctx("bob"), &m, r.id, Decision::Reject, None)
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(trail(s).await, before);

    let done = s
        .review_transition(
            &ctx("carol"),
            &m,
            r.id,
            Decision::Approve,
            Some("looks good".into()),
        )
        .await
        .expect("approve");
    assert_eq!(done.state, RequestState::Completed);
    assert_eq!(done.approvals, 2);
    assert_eq!(done.closed_by.as_deref(), Some("carol"));
    let reviewers: Vec<(&str, Decision, Option<&str>)> = done
        .reviews
        .iter()
        .map(|r| (r.reviewer.as_str(), r.decision, r.comment.as_deref()))
        .collect();
    assert_eq!(
        reviewers,
        vec![
            ("bob", Decision::Approve, None),
            ("carol", Decision::Approve, Some("looks good"))
        ]
    );
    assert_eq!(stage_of(s, &m, v).await, Stage::Production);
    assert_eq!(
        s.version_in_stage(&m, Stage::Production)
            .await
            .expect("production")
            .version,
        v
    );
    // The request reads back as it was returned.
    let read = s.get_transition(&m, r.id).await.expect("get");
    assert_eq!(super::json(&read), super::json(&done));
    assert_eq!(
        code(
            s.review_transition(&ctx("dave"), &m, r.id, Decision::Approve, None)
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(code(s.get_transition(&m, 999).await), ErrorCode::NotFound);
    model(s, "acme/other", &[]).await;
    assert_eq!(
        code(s.get_transition(&name("acme/other"), r.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(s.get_transition(&name("acme/ghost"), r.id).await),
        ErrorCode::NotFound
    );

    let list = |f: TransitionFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_transitions(TransitionFilter { limit: 100, ..f })
                .await
                .expect("list")
                .requests
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(TransitionFilter::default()).await, vec![r.id, staged.id]);
    let of_bot = TransitionFilter {
        model: Some(m.clone()),
        ..TransitionFilter::default()
    };
    assert_eq!(list(of_bot.clone()).await, vec![r.id, staged.id]);
    assert_eq!(
        list(TransitionFilter {
            to_stage: Some(Stage::Production),
            ..of_bot.clone()
        })
        .await,
        vec![r.id]
    );
    assert!(list(TransitionFilter {
        state: Some(RequestState::Pending),
        ..of_bot.clone()
    })
    .await
    .is_empty());
    assert_eq!(
        list(TransitionFilter {
            before: Some(r.id),
            ..of_bot.clone()
        })
        .await,
        vec![staged.id]
    );
    assert_eq!(
        list(TransitionFilter {
            version: Some(v + 1),
            ..of_bot.clone()
        })
        .await,
        Vec::<u64>::new()
    );
    assert_eq!(
        list(TransitionFilter {
            namespaces: Some(vec!["other".into(), "acme".into()]),
            ..TransitionFilter::default()
        })
        .await,
        vec![r.id, staged.id]
    );
    assert!(list(TransitionFilter {
        namespaces: Some(Vec::new()),
        ..TransitionFilter::default()
    })
    .await
    .is_empty());
    assert_eq!(
        code(
            s.list_transitions(TransitionFilter {
                model: Some(name("acme/ghost")),
                limit: 10,
                ..TransitionFilter::default()
            })
            .await
        ),
        ErrorCode::NotFound
    );

    let actions: Vec<String> = all_audit(s)
        .await
        .into_iter()
        .filter(|a| a.action.starts_with("transition."))
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        vec![
            "transition.requested",
            "transition.completed",
            "transition.requested",
            "transition.approved",
            "transition.approved",
            "transition.completed",
        ]
    );
    assert_audit_matches_events(s).await;
}

/// Concurrent reviews by one reviewer count once; concurrent final approvals complete the
/// request once and move the version once.
pub async fn concurrent_reviews_count_once(store: Arc<dyn Store>) {
    let (m, v) = in_staging(store.as_ref(), "acme/bot", 0.95).await;
    store
        .set_policy(&ctx("admin"), &ns("acme"), medium(2), Precondition::None)
        .await
        .expect("policy");
    let r = pending(request(store.as_ref(), "alice", &m, v, Stage::Production).await);

    let review = |actor: String| {
        let (store, m) = (Arc::clone(&store), m.clone());
        tokio::spawn(async move {
            store
                .review_transition(&ctx(&actor), &m, r.id, Decision::Approve, None)
                .await
        })
    };
    let same: Vec<_> = (0..8).map(|_| review("bob".to_owned())).collect();
    let mut ok = 0;
    for t in same {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::Conflict, "{e}"),
        }
    }
    assert_eq!(ok, 1, "one reviewer counts once");
    let now = store.get_transition(&m, r.id).await.expect("get");
    assert_eq!((now.state, now.approvals), (RequestState::Pending, 1));

    let last: Vec<_> = ["carol", "dave", "erin", "frank"]
        .iter()
        .map(|a| review((*a).to_owned()))
        .collect();
    let mut completed = 0;
    for t in last {
        match t.await.expect("task") {
            Ok(r) => {
                assert_eq!(r.state, RequestState::Completed);
                completed += 1;
            }
            Err(e) => assert_eq!(e.code, ErrorCode::Conflict, "{e}"),
        }
    }
    assert_eq!(completed, 1, "one approval completes the request");
    let done = store.get_transition(&m, r.id).await.expect("get");
    assert_eq!((done.state, done.approvals), (RequestState::Completed, 2));
    assert_eq!(stage_of(store.as_ref(), &m, v).await, Stage::Production);
    let audit = all_audit(store.as_ref()).await;
    let count = |action: &str| audit.iter().filter(|a| a.action == action).count();
    assert_eq!(count("transition.approved"), 2);
    assert_eq!(count("transition.completed"), 1);
    assert_audit_matches_events(store.as_ref()).await;
}

/// Requests end other ways too: a failing gate blocks at once (nothing moves), the requester
/// cancels (only they may), a reviewer rejects, a maintainer completes early (not a high-risk
/// model without any approval), and a version moved by other means supersedes its requests.
pub async fn requests_end_rejected_cancelled_blocked_or_superseded(store: Arc<dyn Store>) {
    let s = store.as_ref();
    s.set_policy(&ctx("admin"), &ns("acme"), medium(2), Precondition::None)
        .await
        .expect("policy");
    let (weak, wv) = in_staging(s, "acme/weak", 0.5).await;
    let (m, v) = in_staging(s, "acme/bot", 0.95).await;

    // A failing gate: recorded with its verdicts, nothing moves.
    let blocked = match request(s, "alice", &weak, wv, Stage::Production).await {
        TransitionOutcome::Blocked { request } => request,
        other => panic!("expected a blocked request, got {other:?}"),
    };
    assert_eq!(blocked.state, RequestState::GatesFailed);
    assert!(!blocked.gates_passed);
    assert_eq!(blocked.failed().count(), 1);
    assert!(
        blocked
            .resolution
            .as_deref()
            .is_some_and(|r| r.contains("accuracy")),
        "{:?}",
        blocked.resolution
    );
    assert_eq!(stage_of(s, &weak, wv).await, Stage::Staging);

    // Cancelled by its requester only.
    let r = pending(request(s, "alice", &m, v, Stage::Production).await);
    assert_eq!(
        code(s.cancel_transition(&ctx("bob"), &m, r.id, None).await),
        ErrorCode::PermissionDenied
    );
    let long = "x".repeat(5000);
    assert_eq!(
        code(s.cancel_transition(&ctx("alice"), &m, r.id, Some(long)).await),
        ErrorCode::InvalidArgument
    );
    let c = s
        .cancel_transition(&ctx("alice"), &m, r.id, Some("not yet".into()))
        .await
        .expect("cancel");
    assert_eq!(c.state, RequestState::Cancelled);
    assert_eq!(c.closed_by.as_deref(), Some("alice"));
    assert_eq!(
        code(s.cancel_transition(&ctx("alice"), &m, r.id, None).await),
        ErrorCode::Conflict
    );

    // Rejected by a reviewer; a new request is a new one.
    let r2 = pending(request(s, "alice", &m, v, Stage::Production).await);
    assert_ne!(r2.id, r.id);
    assert_eq!(
        code(
            s.review_transition(&ctx("alice"), &m, r2.id, Decision::Reject, None)
                .await
        ),
        ErrorCode::PermissionDenied
    );
    let rej = s
        .review_transition(&ctx("bob"), &m, r2.id, Decision::Reject, Some("no".into()))
        .await
        .expect("reject");
    assert_eq!(rej.state, RequestState::Rejected);
    assert!(
        rej.resolution.as_deref().is_some_and(|r| r.contains("bob")),
        "{:?}",
        rej.resolution
    );
    assert_eq!(stage_of(s, &m, v).await, Stage::Staging);

    // Completed early by a maintainer, with one of two approvals missing; the requester cannot.
    let r3 = pending(request(s, "alice", &m, v, Stage::Production).await);
    approve(s, "bob", &m, r3.id).await;
    assert_eq!(
        code(s.complete_transition(&ctx("alice"), &m, r3.id, None).await),
        ErrorCode::PermissionDenied
    );
    let early = s
        .complete_transition(&ctx("maintainer"), &m, r3.id, Some("hotfix".into()))
        .await
        .expect("complete");
    assert_eq!(early.state, RequestState::Completed);
    assert_eq!(early.approvals, 1);
    assert_eq!(stage_of(s, &m, v).await, Stage::Production);

    // A high-risk model needs at least one approval even to complete early.
    let (risky, rv) = in_staging(s, "acme/risky", 0.95).await;
    s.set_policy(
        &ctx("admin"),
        &of_model("acme/risky"),
        Policy {
            risk: Some(RiskLevel::High),
            ..Policy::default()
        },
        Precondition::None,
    )
    .await
    .expect("model policy");
    let r4 = pending(request(s, "alice", &risky, rv, Stage::Production).await);
    assert_eq!(r4.risk, RiskLevel::High);
    assert_eq!(r4.required_approvals, 2);
    let before = trail(s).await;
    assert_eq!(
        code(
            s.complete_transition(&ctx("maintainer"), &risky, r4.id, None)
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(trail(s).await, before);

    // Moved by other means: the pending request is superseded and can no longer be reviewed.
    s.set_stage(
        &ctx("alice"),
        &risky,
        rv,
        Stage::Archived,
        None,
        Precondition::None,
    )
    .await
    .expect("archive");
    assert_eq!(
        code(
            s.review_transition(&ctx("bob"), &risky, r4.id, Decision::Approve, None)
                .await
        ),
        ErrorCode::Conflict
    );
    let r5 = pending(request(s, "alice", &risky, rv, Stage::Staging).await);
    assert_eq!((r5.from_stage, r5.required_approvals), (Stage::Archived, 1));
    let sup = s.get_transition(&risky, r4.id).await.expect("get");
    assert_eq!(sup.state, RequestState::Superseded);
    assert!(
        sup.resolution.as_deref().is_some_and(|r| r.contains("archived")),
        "{:?}",
        sup.resolution
    );
    assert_eq!(stage_of(s, &risky, rv).await, Stage::Archived);

    let states: Vec<(u64, RequestState)> = s
        .list_transitions(TransitionFilter {
            limit: 100,
            ..TransitionFilter::default()
        })
        .await
        .expect("list")
        .requests
        .iter()
        .map(|r| (r.id, r.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (r5.id, RequestState::Pending),
            (r4.id, RequestState::Superseded),
            (r3.id, RequestState::Completed),
            (r2.id, RequestState::Rejected),
            (r.id, RequestState::Cancelled),
            (blocked.id, RequestState::GatesFailed),
        ]
    );
    assert_eq!(
        s.list_transitions(TransitionFilter {
            state: Some(RequestState::Rejected),
            limit: 1,
            ..TransitionFilter::default()
        })
        .await
        .expect("list")
        .requests
        .len(),
        1
    );
    // Without a policy, a request is a plain stage move.
    let (free, fv) = in_staging(s, "other/free", 0.1).await;
    match request(s, "alice", &free, fv, Stage::Production).await {
        TransitionOutcome::Moved { request: None, .. } => {}
        other => panic!("expected a plain move, got {other:?}"),
    }
    assert_eq!(stage_of(s, &free, fv).await, Stage::Production);
    assert_audit_matches_events(s).await;
}
