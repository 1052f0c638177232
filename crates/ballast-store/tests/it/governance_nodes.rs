//! Governance and retention with several registry nodes on one PostgreSQL database: reviews sent
//! to different nodes count once per reviewer, the final approval completes a request once, and
//! garbage collection run on every node at once removes each version once.

use std::sync::Arc;

use ballast_api::governance::{
    ApprovalTable, Decision, Policy, RequestState, RiskLevel, StageApprovals, TransitionOutcome,
};
use ballast_api::retention::RetentionPolicy;
use ballast_core::{ErrorCode, Stage};
use ballast_store::governance::{PolicyTarget, StageRequest};
use ballast_store::{unix_ms, PgOptions, Precondition, RetentionTarget, SqlStore, Store};

use crate::conformance::{assert_audit_matches_events, ctx, draft, model, name, sealed};
use crate::nodes::DropDatabase;
use crate::postgres::{admin_url, fresh_database};

/// `n` nodes on a new database (dropped with the guard), or `None` when PostgreSQL tests
/// cannot run here.
async fn nodes(n: usize) -> Option<(Vec<Arc<dyn Store>>, DropDatabase)> {
    let admin = admin_url()?;
    let (nodes, guard) = tokio::task::spawn_blocking(move || {
        let url = fresh_database(&admin);
        let nodes: Vec<Arc<dyn Store>> = (0..n)
            .map(|_| {
                let store = SqlStore::connect(&url, &PgOptions::default()).expect("open a node");
                Arc::new(store) as Arc<dyn Store>
            })
            .collect();
        (nodes, DropDatabase { admin, url })
    })
    .await
    .expect("open task");
    Some((nodes, guard))
}

async fn stop(nodes: Vec<Arc<dyn Store>>, guard: DropDatabase) {
    for n in &nodes {
        n.close().await;
    }
    tokio::task::spawn_blocking(move || drop((nodes, guard)))
        .await
        .expect("drop task");
}

/// One reviewer approving through every node at once counts once; four reviewers racing for
/// the last approval through different nodes complete the request once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reviews_through_different_nodes_count_once() {
    let Some((nodes, guard)) = nodes(3).await else {
        return;
    };
    let first = nodes[0].as_ref();
    let m = name("acme/bot");
    model(first, "acme/bot", &[]).await;
    let v = sealed(first, &m, &[], &[]).await.version;
    first
        .set_stage(&ctx("alice"), &m, v, Stage::Staging, None, Precondition::None)
        .await
        .expect("to staging");
    let policy = Policy {
        risk: Some(RiskLevel::Medium),
        approvals: Some(ApprovalTable {
            medium: Some(StageApprovals {
                staging: 0,
                production: 2,
            }),
            ..ApprovalTable::default()
        }),
        ..Policy::default()
    };
    nodes[1]
        .set_policy(
            &ctx("admin"),
            &PolicyTarget::Namespace("acme".into()),
            policy,
            Precondition::None,
        )
        .await
        .expect("policy");
    let outcome = nodes[2]
        .request_transition(
            &ctx("alice"),
            StageRequest {
                model: m.clone(),
                number: v,
                to: Stage::Production,
                comment: None,
                pre: Precondition::None,
            },
        )
        .await
        .expect("request");
    let TransitionOutcome::Pending { request } = outcome else {
        panic!("expected a pending request, got {outcome:?}");
    };
    let id = request.id;

    let review = |node: usize, actor: &str| {
        let (store, m, actor) = (
            Arc::clone(&nodes[node % nodes.len()]),
            m.clone(),
            actor.to_owned(),
        );
        tokio::spawn(async move {
            store
                .review_transition(&ctx(&actor), &m, id, Decision::Approve, None)
                .await
        })
    };
    let same: Vec<_> = (0..9).map(|i| review(i, "bob")).collect();
    let mut ok = 0;
    for t in same {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::Conflict, "{e}"),
        }
    }
    assert_eq!(ok, 1, "a reviewer counts once across nodes");

    let last: Vec<_> = ["carol", "dave", "erin", "frank"]
        .iter()
        .enumerate()
        .map(|(i, a)| review(i, a))
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
    assert_eq!(completed, 1, "the request completes once across nodes");
    for node in &nodes {
        let r = node.get_transition(&m, id).await.expect("get");
        assert_eq!((r.state, r.approvals), (RequestState::Completed, 2));
        assert_eq!(
            node.get_version(&m, v).await.expect("version").stage,
            Stage::Production
        );
    }
    assert_audit_matches_events(first).await;
    stop(nodes, guard).await;
}

/// Garbage collection started on every node at once removes each version once, with one audit
/// entry and one event each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_on_every_node_remove_each_version_once() {
    let Some((nodes, guard)) = nodes(3).await else {
        return;
    };
    let first = nodes[0].as_ref();
    let m = name("acme/bot");
    model(first, "acme/bot", &[]).await;
    for _ in 0..8 {
        draft(first, &m, &[], &[]).await;
    }
    nodes[1]
        .set_retention(
            &ctx("admin"),
            &RetentionTarget::Namespace("acme".into()),
            RetentionPolicy {
                keep_last_dev: 2,
                keep_days: 1,
                enabled: true,
            },
        )
        .await
        .expect("retention policy");
    let later = unix_ms() + 7 * 86_400_000;
    let runs: Vec<_> = nodes
        .iter()
        .flat_map(|n| [Arc::clone(n), Arc::clone(n)])
        .map(|store| {
            let m = m.clone();
            tokio::spawn(async move { store.apply_retention(&ctx("gc"), &m, later).await })
        })
        .collect();
    let mut removed = Vec::new();
    for r in runs {
        removed.extend(
            r.await
                .expect("task")
                .expect("apply")
                .remove
                .iter()
                .map(|v| v.version),
        );
    }
    removed.sort_unstable();
    assert_eq!(removed, vec![1, 2, 3, 4, 5, 6]);
    for n in 1..=6 {
        assert_eq!(
            nodes[2].get_version(&m, n).await.map(|_| ()).unwrap_err().code,
            ErrorCode::NotFound
        );
    }
    assert_audit_matches_events(first).await;
    stop(nodes, guard).await;
}
