//! Compare-and-swap on aliases and models: of writers that read the same revision, one wins.

use std::sync::Arc;

use ballast_api::UpdateModel;
use ballast_core::ErrorCode;
use ballast_store::{Precondition, Store};

use super::{code, ctx, draft, model, name, sealed};

/// Many concurrent moves of one alias, all conditioned on the revision they read: exactly one
/// succeeds, the rest fail with `precondition_failed`, and the alias points at the winner's
/// version with the next revision.
pub async fn one_alias_move_wins_per_revision(store: Arc<dyn Store>) {
    const WRITERS: u64 = 12;
    const ROUNDS: usize = 5;
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    for _ in 0..WRITERS {
        sealed(store.as_ref(), &m, &[], &[]).await;
    }
    let first = store
        .set_alias(&ctx("alice"), &m, "champion", 1, Precondition::Absent)
        .await
        .expect("create alias");
    let mut revision = first.revision;
    for round in 0..ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
        let mut tasks = tokio::task::JoinSet::new();
        for w in 1..=WRITERS {
            let (store, m, barrier) = (Arc::clone(&store), m.clone(), Arc::clone(&barrier));
            tasks.spawn(async move {
                barrier.wait().await;
                let r = store
                    .set_alias(
                        &ctx(&format!("w{w}")),
                        &m,
                        "champion",
                        w,
                        Precondition::Revision(revision),
                    )
                    .await;
                (w, r)
            });
        }
        let mut winners = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (w, r) = r.expect("task");
            match r {
                Ok(a) => winners.push((w, a)),
                Err(e) => assert_eq!(e.code, ErrorCode::PreconditionFailed, "round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (w, a) = &winners[0];
        assert_eq!(a.version, *w);
        assert_eq!(a.revision, revision + 1, "round {round}");
        let now = store.get_alias(&m, "champion").await.expect("get alias");
        assert_eq!((now.version, now.revision), (*w, revision + 1), "round {round}");
        assert_eq!(
            store.get_model(&m).await.expect("model").aliases.get("champion"),
            Some(w)
        );
        revision = now.revision;
    }
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// `If-None-Match: *` creates only, `If-Match: *` moves only, a stale revision moves nothing;
/// deletion checks the revision too; aliases point at sealed versions only.
pub async fn alias_preconditions(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    sealed(store.as_ref(), &m, &[], &[]).await;
    sealed(store.as_ref(), &m, &[], &[]).await;
    let d = draft(store.as_ref(), &m, &[], &[]).await;

    assert_eq!(
        code(
            store
                .set_alias(&ctx("alice"), &m, "prod", 1, Precondition::Exists)
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(
        code(
            store
                .set_alias(&ctx("alice"), &m, "prod", 1, Precondition::Revision(1))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(code(store.get_alias(&m, "prod").await), ErrorCode::NotFound);
    let a = store
        .set_alias(&ctx("alice"), &m, "prod", 1, Precondition::Absent)
        .await
        .expect("create");
    assert_eq!(
        (a.alias.as_str(), a.version, a.model.as_str()),
        ("prod", 1, "acme/bot")
    );
    assert_eq!(
        code(
            store
                .set_alias(&ctx("alice"), &m, "prod", 2, Precondition::Absent)
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    let b = store
        .set_alias(&ctx("alice"), &m, "prod", 2, Precondition::Exists)
        .await
        .expect("move");
    assert_eq!((b.version, b.revision), (2, a.revision + 1));
    assert_eq!(
        code(
            store
                .set_alias(&ctx("alice"), &m, "prod", 1, Precondition::Revision(a.revision))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(store.get_alias(&m, "prod").await.expect("get").version, 2);
    assert_eq!(
        store.get_version(&m, 2).await.expect("v2").aliases,
        vec!["prod".to_owned()]
    );
    assert!(store.get_version(&m, 1).await.expect("v1").aliases.is_empty());

    // Drafts and missing versions cannot be aliased.
    assert_eq!(
        code(
            store
                .set_alias(&ctx("alice"), &m, "prod", d.version, Precondition::None)
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(
            store
                .set_alias(&ctx("alice"), &m, "prod", 99, Precondition::None)
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(store.get_alias(&m, "prod").await.expect("get").version, 2);

    assert_eq!(
        code(
            store
                .delete_alias(&ctx("alice"), &m, "prod", Precondition::Revision(a.revision))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    store
        .delete_alias(&ctx("alice"), &m, "prod", Precondition::Revision(b.revision))
        .await
        .expect("delete");
    assert_eq!(code(store.get_alias(&m, "prod").await), ErrorCode::NotFound);
    assert_eq!(
        code(
            store
                .delete_alias(&ctx("alice"), &m, "prod", Precondition::None)
                .await
        ),
        ErrorCode::NotFound
    );
    assert!(store.get_model(&m).await.expect("model").aliases.is_empty());
}

/// Model updates check the revision and bump it.
pub async fn model_update_preconditions(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    let created = model(store.as_ref(), "acme/bot", &[("team", "a")]).await;
    let req = |d: &str| UpdateModel {
        description: Some(d.to_owned()),
        set_tags: [("tier".to_owned(), "1".to_owned())].into(),
        remove_tags: vec!["team".to_owned()],
    };
    let updated = store
        .update_model(
            &ctx("alice"),
            &m,
            req("new"),
            Precondition::Revision(created.revision),
        )
        .await
        .expect("update");
    assert_eq!(updated.revision, created.revision + 1);
    assert_eq!(updated.description, "new");
    assert_eq!(updated.tags, [("tier".to_owned(), "1".to_owned())].into());
    assert_eq!(
        code(
            store
                .update_model(
                    &ctx("alice"),
                    &m,
                    req("stale"),
                    Precondition::Revision(created.revision)
                )
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    assert_eq!(store.get_model(&m).await.expect("get").description, "new");
    assert_eq!(
        code(
            store
                .delete_model(&ctx("alice"), &m, Precondition::Revision(created.revision))
                .await
        ),
        ErrorCode::PreconditionFailed
    );
    store
        .delete_model(&ctx("alice"), &m, Precondition::Revision(updated.revision))
        .await
        .expect("delete");
    assert_eq!(code(store.get_model(&m).await), ErrorCode::NotFound);
}

/// Concurrent model updates conditioned on the same revision: one winner.
pub async fn concurrent_model_updates_with_one_revision_have_one_winner(store: Arc<dyn Store>) {
    const WRITERS: usize = 10;
    let m = name("acme/bot");
    let created = model(store.as_ref(), "acme/bot", &[]).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, m, barrier) = (Arc::clone(&store), m.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .update_model(
                    &ctx("alice"),
                    &m,
                    UpdateModel {
                        description: Some(format!("writer {w}")),
                        ..UpdateModel::default()
                    },
                    Precondition::Revision(created.revision),
                )
                .await
        });
    }
    let mut won = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(m) => won.push(m),
            Err(e) => assert_eq!(e.code, ErrorCode::PreconditionFailed, "{e}"),
        }
    }
    assert_eq!(won.len(), 1);
    let now = store.get_model(&m).await.expect("get");
    assert_eq!(now.description, won[0].description);
    assert_eq!(now.revision, created.revision + 1);
}

/// Concurrent creations of one alias with `If-None-Match: *`: one creates it, the rest are
/// refused.
pub async fn concurrent_alias_creation_has_one_winner(store: Arc<dyn Store>) {
    const WRITERS: u64 = 10;
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    for _ in 0..WRITERS {
        sealed(store.as_ref(), &m, &[], &[]).await;
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 1..=WRITERS {
        let (store, m, barrier) = (Arc::clone(&store), m.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .set_alias(&ctx("alice"), &m, "first", w, Precondition::Absent)
                .await
        });
    }
    let mut won = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(a) => won.push(a),
            Err(e) => assert_eq!(e.code, ErrorCode::PreconditionFailed, "{e}"),
        }
    }
    assert_eq!(won.len(), 1);
    let now = store.get_alias(&m, "first").await.expect("get");
    assert_eq!((now.version, now.revision), (won[0].version, won[0].revision));
    let sets = super::all_events(store.as_ref())
        .await
        .into_iter()
        .filter(|e| e.event_type == "alias.set")
        .count();
    assert_eq!(sets, 1);
}
