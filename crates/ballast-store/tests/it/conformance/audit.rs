//! The audit trail: a verifiable hash chain with one entry per change, matched by one event.

use std::sync::Arc;

use ballast_api::{UpdateModel, UpdateVersion};
use ballast_core::Stage;
use ballast_store::{AuditFilter, Precondition, Store};

use super::{all_audit, ctx, file, model, name, sealed};

/// Many changes of every kind, some concurrent: the chain verifies and counts every entry.
pub async fn the_chain_verifies_after_many_changes(store: Arc<dyn Store>) {
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let full = format!("ns{}/model-{i}", i % 2);
            let m = name(&full);
            model(store.as_ref(), &full, &[("i", &i.to_string())]).await;
            for _ in 0..3 {
                let v = sealed(store.as_ref(), &m, &[("acc", f64::from(i))], &[]).await;
                store
                    .set_alias(&ctx("bob"), &m, "latest", v.version, Precondition::None)
                    .await
                    .expect("alias");
            }
            store
                .set_stage(&ctx("bob"), &m, 1, Stage::Staging, None, Precondition::None)
                .await
                .expect("stage");
            store
                .update_model(
                    &ctx("bob"),
                    &m,
                    UpdateModel {
                        description: Some("changed".into()),
                        ..UpdateModel::default()
                    },
                    Precondition::None,
                )
                .await
                .expect("update");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    let n = all_audit(store.as_ref()).await.len() as u64;
    // Per model: create, 3 × (create version, put file, seal, alias), stage, update.
    assert_eq!(n, 8 * (1 + 3 * 4 + 1 + 1));
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(n));
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Each successful mutation adds exactly one audit entry (by its actor, in its request) and one
/// event naming it.
pub async fn every_change_has_one_audit_entry_and_one_event(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    let mut last = super::trail(store.as_ref()).await;
    let mut check = |what: &str, now: super::Trail| {
        assert_eq!(now.audit, last.audit + 1, "{what}: one audit entry");
        assert!(now.last_event > last.last_event, "{what}: an event");
        last = now;
    };
    let c = ctx("dave");
    store
        .create_model(
            &c,
            ballast_api::CreateModel {
                name: "acme/bot".into(),
                ..ballast_api::CreateModel::default()
            },
        )
        .await
        .expect("create");
    check("create model", super::trail(store.as_ref()).await);
    let v = store
        .create_version(&c, &m, ballast_api::CreateVersion::default())
        .await
        .expect("version");
    check("create version", super::trail(store.as_ref()).await);
    store
        .put_file(&c, &m, v.version, file("a", b"a"))
        .await
        .expect("put");
    check("put file", super::trail(store.as_ref()).await);
    store
        .put_file(&c, &m, v.version, file("b", b"b"))
        .await
        .expect("put");
    check("put file", super::trail(store.as_ref()).await);
    store
        .delete_file(&c, &m, v.version, "b")
        .await
        .expect("delete file");
    check("delete file", super::trail(store.as_ref()).await);
    store
        .update_version(
            &c,
            &m,
            v.version,
            UpdateVersion {
                set_tags: [("k".to_owned(), "v".to_owned())].into(),
                ..UpdateVersion::default()
            },
            Precondition::None,
        )
        .await
        .expect("update version");
    check("update version", super::trail(store.as_ref()).await);
    store.seal_version(&c, &m, v.version, None).await.expect("seal");
    check("seal", super::trail(store.as_ref()).await);
    store
        .set_stage(&c, &m, v.version, Stage::Staging, None, Precondition::None)
        .await
        .expect("stage");
    check("stage", super::trail(store.as_ref()).await);
    store
        .set_alias(&c, &m, "a", v.version, Precondition::None)
        .await
        .expect("alias");
    check("set alias", super::trail(store.as_ref()).await);
    store
        .delete_alias(&c, &m, "a", Precondition::None)
        .await
        .expect("delete alias");
    check("delete alias", super::trail(store.as_ref()).await);
    store
        .update_model(&c, &m, UpdateModel::default(), Precondition::None)
        .await
        .expect("update model");
    check("update model", super::trail(store.as_ref()).await);

    let entries = all_audit(store.as_ref()).await;
    for e in &entries {
        assert_eq!(e.actor, "dave");
        assert_eq!(e.request_id, c.request_id);
        assert_eq!(e.hash.len(), 64, "entry {} has a SHA-256 hash", e.id);
    }
    let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "audit ids increase: {ids:?}");
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// The trail filters by model (its versions and aliases included), actor and action, and pages
/// with `next_after` without gaps or repeats.
pub async fn audit_filters_and_paging(store: Arc<dyn Store>) {
    let a = name("acme/bot");
    let b = name("acme/bot-two");
    model(store.as_ref(), "acme/bot", &[]).await;
    model(store.as_ref(), "acme/bot-two", &[]).await;
    let v = sealed(store.as_ref(), &a, &[], &[]).await;
    sealed(store.as_ref(), &b, &[], &[]).await;
    store
        .set_alias(&ctx("erin"), &a, "x", v.version, Precondition::None)
        .await
        .expect("alias");

    let list = |f: AuditFilter| {
        let store = Arc::clone(&store);
        async move { store.list_audit(f).await.expect("list audit") }
    };
    let of_a = list(AuditFilter {
        model: Some("acme/bot".into()),
        limit: 100,
        ..AuditFilter::default()
    })
    .await;
    // create, version, file, seal, alias — and nothing of acme/bot-two.
    assert_eq!(
        of_a.entries.len(),
        5,
        "{:?}",
        of_a.entries.iter().map(|e| &e.target).collect::<Vec<_>>()
    );
    assert!(of_a.entries.iter().all(|e| e.target == "acme/bot"
        || e.target.starts_with("acme/bot/")
        || e.target.starts_with("acme/bot@")));
    let by_erin = list(AuditFilter {
        actor: Some("erin".into()),
        limit: 100,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(by_erin.entries.len(), 1);
    assert_eq!(by_erin.entries[0].target, "acme/bot@x");
    let seals = list(AuditFilter {
        action: Some(by_erin.entries[0].action.clone()),
        limit: 100,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seals.entries.len(), 1);

    let all = all_audit(store.as_ref()).await;
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list(AuditFilter {
            after,
            limit: 3,
            ..AuditFilter::default()
        })
        .await;
        assert!(page.entries.len() <= 3);
        paged.extend(page.entries.iter().map(|e| e.id));
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(paged, all.iter().map(|e| e.id).collect::<Vec<_>>());

    // Time window: everything is at or after the first entry's time and before the far future.
    let windowed = list(AuditFilter {
        since: Some(all[0].at.clone()),
        until: Some("9999-01-01T00:00:00.000Z".into()),
        limit: 1000,
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(windowed.entries.len(), all.len());
    let none = list(AuditFilter {
        until: Some(all[0].at.clone()),
        limit: 1000,
        ..AuditFilter::default()
    })
    .await;
    assert!(none.entries.is_empty());
}
