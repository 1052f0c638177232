//! Stage moves: the state machine, preconditions, the production demotion and rollback.

use std::collections::BTreeMap;
use std::sync::Arc;

use ballast_core::{ErrorCode, Stage};
use ballast_store::{Precondition, Store};

use super::{code, ctx, draft, model, name, sealed};

async fn stage(
    store: &dyn Store,
    m: &ballast_core::ModelName,
    n: u64,
    to: Stage,
) -> ballast_api::StageChange {
    store
        .set_stage(
            &ctx("alice"),
            m,
            n,
            to,
            Some(format!("to {to}")),
            Precondition::None,
        )
        .await
        .unwrap_or_else(|e| panic!("move {m}/{n} to {to}: {e}"))
}

/// Moves the state machine forbids are `invalid_transition`; drafts are kept out of staging
/// and production (`conflict`); a version is never moved to the stage it is in.
pub async fn stage_moves_follow_the_state_machine(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let d = draft(store.as_ref(), &m, &[], &[]).await;
    assert_eq!(d.stage, Stage::Development);
    let mv = |n: u64, to: Stage| {
        let (store, m) = (Arc::clone(&store), m.clone());
        async move {
            store
                .set_stage(&ctx("alice"), &m, n, to, None, Precondition::None)
                .await
        }
    };
    assert_eq!(code(mv(d.version, Stage::Staging).await), ErrorCode::Conflict);
    assert_eq!(
        code(mv(d.version, Stage::Production).await),
        ErrorCode::InvalidTransition
    );
    assert_eq!(
        code(mv(d.version, Stage::Development).await),
        ErrorCode::InvalidTransition
    );
    assert_eq!(code(mv(99, Stage::Staging).await), ErrorCode::NotFound);
    assert_eq!(
        store.get_version(&m, d.version).await.expect("get").stage,
        Stage::Development
    );

    let v = sealed(store.as_ref(), &m, &[], &[]).await;
    assert_eq!(
        code(mv(v.version, Stage::Production).await),
        ErrorCode::InvalidTransition
    );
    let c = stage(store.as_ref(), &m, v.version, Stage::Staging).await;
    assert_eq!((c.version.stage, c.demoted), (Stage::Staging, None));
    assert!(c.version.revision > v.revision);
    assert_eq!(
        code(mv(v.version, Stage::Staging).await),
        ErrorCode::InvalidTransition
    );
    stage(store.as_ref(), &m, v.version, Stage::Development).await;
    stage(store.as_ref(), &m, v.version, Stage::Archived).await;
    assert_eq!(
        code(mv(v.version, Stage::Production).await),
        ErrorCode::InvalidTransition
    );
    assert_eq!(
        code(mv(v.version, Stage::Development).await),
        ErrorCode::InvalidTransition
    );
    stage(store.as_ref(), &m, v.version, Stage::Staging).await;
    // A draft may be archived.
    stage(store.as_ref(), &m, d.version, Stage::Archived).await;

    assert_eq!(
        store
            .version_in_stage(&m, Stage::Staging)
            .await
            .expect("in staging")
            .version,
        v.version
    );
    assert_eq!(
        code(store.version_in_stage(&m, Stage::Production).await),
        ErrorCode::NotFound
    );
}

/// A stage move conditioned on a stale revision moves nothing.
pub async fn stage_moves_check_preconditions(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = sealed(store.as_ref(), &m, &[], &[]).await;
    let c = store
        .set_stage(
            &ctx("alice"),
            &m,
            v.version,
            Stage::Staging,
            None,
            Precondition::Revision(v.revision),
        )
        .await
        .expect("move with the current revision");
    let r = store
        .set_stage(
            &ctx("alice"),
            &m,
            v.version,
            Stage::Production,
            None,
            Precondition::Revision(v.revision),
        )
        .await;
    assert_eq!(code(r), ErrorCode::PreconditionFailed);
    assert_eq!(
        store.get_version(&m, v.version).await.expect("get").stage,
        Stage::Staging
    );
    store
        .set_stage(
            &ctx("alice"),
            &m,
            v.version,
            Stage::Production,
            None,
            Precondition::Revision(c.version.revision),
        )
        .await
        .expect("move with the new revision");
}

/// Promoting to production archives the previous production version in the same change.
pub async fn promotion_demotes_the_previous_production_version(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v1 = sealed(store.as_ref(), &m, &[], &[]).await.version;
    let v2 = sealed(store.as_ref(), &m, &[], &[]).await.version;
    stage(store.as_ref(), &m, v1, Stage::Staging).await;
    let c1 = stage(store.as_ref(), &m, v1, Stage::Production).await;
    assert_eq!((c1.version.stage, c1.demoted), (Stage::Production, None));
    assert_eq!(
        store.get_model(&m).await.expect("model").production_version,
        Some(v1)
    );

    stage(store.as_ref(), &m, v2, Stage::Staging).await;
    let c2 = stage(store.as_ref(), &m, v2, Stage::Production).await;
    assert_eq!((c2.version.stage, c2.demoted), (Stage::Production, Some(v1)));
    assert_eq!(
        store.get_version(&m, v1).await.expect("v1").stage,
        Stage::Archived
    );
    assert_eq!(
        store.get_model(&m).await.expect("model").production_version,
        Some(v2)
    );
    assert_eq!(
        store
            .version_in_stage(&m, Stage::Production)
            .await
            .expect("prod")
            .version,
        v2
    );

    // The demotion is its own audited change with its own event.
    let events = super::all_events(store.as_ref()).await;
    let demoted: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == "version.demoted")
        .collect();
    assert_eq!(demoted.len(), 1);
    assert_eq!(
        (demoted[0].model.as_deref(), demoted[0].version),
        (Some("acme/bot"), Some(v1))
    );
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Rollback restores the production version the current one replaced, and only that one.
pub async fn rollback_restores_the_replaced_version(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    assert_eq!(
        code(store.rollback(&ctx("alice"), &m, None).await),
        ErrorCode::Conflict
    );
    let v1 = sealed(store.as_ref(), &m, &[], &[]).await.version;
    let v2 = sealed(store.as_ref(), &m, &[], &[]).await.version;
    stage(store.as_ref(), &m, v1, Stage::Staging).await;
    stage(store.as_ref(), &m, v1, Stage::Production).await;
    // v1 replaced nothing: nothing to roll back to.
    assert_eq!(
        code(store.rollback(&ctx("alice"), &m, None).await),
        ErrorCode::Conflict
    );
    stage(store.as_ref(), &m, v2, Stage::Staging).await;
    stage(store.as_ref(), &m, v2, Stage::Production).await;

    let before = super::trail(store.as_ref()).await;
    let r = store
        .rollback(&ctx("carol"), &m, Some("bad outputs".into()))
        .await
        .expect("rollback");
    assert_eq!(
        (r.version.version, r.version.stage, r.demoted),
        (v1, Stage::Production, Some(v2))
    );
    assert_eq!(
        store.get_version(&m, v2).await.expect("v2").stage,
        Stage::Archived
    );
    assert_eq!(
        store.get_model(&m).await.expect("model").production_version,
        Some(v1)
    );
    let after = super::trail(store.as_ref()).await;
    assert_eq!(after.audit, before.audit + 2, "a demotion and a rollback");
    let types: Vec<String> = store
        .list_events(before.last_event, 100, Vec::new())
        .await
        .expect("events")
        .events
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["version.demoted", "version.rolled_back"]);
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Concurrent promotions of different versions leave exactly one production version, and each
/// promotion demoted the one before it.
pub async fn concurrent_promotions_leave_one_production_version(store: Arc<dyn Store>) {
    const VERSIONS: u64 = 8;
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    for _ in 0..VERSIONS {
        let v = sealed(store.as_ref(), &m, &[], &[]).await;
        stage(store.as_ref(), &m, v.version, Stage::Staging).await;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(VERSIONS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=VERSIONS {
        let (store, m, barrier) = (Arc::clone(&store), m.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .set_stage(&ctx("alice"), &m, n, Stage::Production, None, Precondition::None)
                .await
                .expect("promote")
        });
    }
    let mut demoted = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let c = r.expect("task");
        if let Some(d) = c.demoted {
            *demoted.entry(d).or_insert(0) += 1;
        }
    }
    let prod = store
        .get_model(&m)
        .await
        .expect("model")
        .production_version
        .expect("one in production");
    let mut in_production = 0;
    for n in 1..=VERSIONS {
        let v = store.get_version(&m, n).await.expect("get");
        if v.stage == Stage::Production {
            in_production += 1;
        } else {
            assert_eq!(v.stage, Stage::Archived, "version {n}");
            assert_eq!(demoted.get(&n), Some(&1), "version {n} was demoted once");
        }
    }
    assert_eq!(in_production, 1);
    assert!(!demoted.contains_key(&prod));
    assert_eq!(demoted.len() as u64, VERSIONS - 1);
}

/// A model with a version in staging or production cannot be deleted; once archived it can.
pub async fn models_with_live_versions_cannot_be_deleted(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = sealed(store.as_ref(), &m, &[], &[]).await.version;
    stage(store.as_ref(), &m, v, Stage::Staging).await;
    assert_eq!(
        code(store.delete_model(&ctx("alice"), &m, Precondition::None).await),
        ErrorCode::Conflict
    );
    assert!(store.get_model(&m).await.is_ok());
    stage(store.as_ref(), &m, v, Stage::Archived).await;
    store
        .delete_model(&ctx("alice"), &m, Precondition::None)
        .await
        .expect("delete");
    assert_eq!(code(store.get_version(&m, v).await), ErrorCode::NotFound);
    // The name can be registered again.
    model(store.as_ref(), "acme/bot", &[]).await;
}
