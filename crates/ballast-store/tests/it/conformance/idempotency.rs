//! Idempotency keys: a retry (same actor, key and request) returns the first result and applies
//! nothing; the same key with another request is refused; keys are per actor.

use std::sync::Arc;

use ballast_api::{CreateModel, CreateVersion, UpdateModel};
use ballast_core::ErrorCode;
use ballast_store::{Precondition, Store};

use super::{code, ctx, json, keyed, model, name, trail};

fn create(full: &str) -> CreateModel {
    CreateModel {
        name: full.to_owned(),
        description: "keyed".into(),
        ..CreateModel::default()
    }
}

/// A repeated create with the same key and fingerprint returns the same model or version, and
/// neither the state, the audit trail nor the feed changes.
pub async fn retries_return_the_first_result_and_apply_once(store: Arc<dyn Store>) {
    let first = store
        .create_model(&keyed("alice", "k-model", "fp-1"), create("acme/bot"))
        .await
        .expect("create");
    let t = trail(store.as_ref()).await;
    let again = store
        .create_model(&keyed("alice", "k-model", "fp-1"), create("acme/bot"))
        .await
        .expect("a retry succeeds");
    assert_eq!(json(&again), json(&first));
    assert_eq!(trail(store.as_ref()).await, t);
    // Without the key, the same request is a real second attempt.
    assert_eq!(
        code(store.create_model(&ctx("alice"), create("acme/bot")).await),
        ErrorCode::AlreadyExists
    );

    let m = name("acme/bot");
    let v = store
        .create_version(&keyed("alice", "k-version", "fp-v"), &m, CreateVersion::default())
        .await
        .expect("create version");
    let t = trail(store.as_ref()).await;
    for _ in 0..3 {
        let r = store
            .create_version(&keyed("alice", "k-version", "fp-v"), &m, CreateVersion::default())
            .await
            .expect("retry");
        assert_eq!(r.version, v.version);
        assert_eq!(json(&r), json(&v));
    }
    assert_eq!(trail(store.as_ref()).await, t);
    assert_eq!(store.get_model(&m).await.expect("get").latest_version, v.version);
    let next = store
        .create_version(&ctx("alice"), &m, CreateVersion::default())
        .await
        .expect("create");
    assert_eq!(next.version, v.version + 1);

    // A keyed update is applied once: the revision moves by one.
    let before = store.get_model(&m).await.expect("get");
    let up = UpdateModel {
        description: Some("updated once".into()),
        ..UpdateModel::default()
    };
    for _ in 0..3 {
        let r = store
            .update_model(
                &keyed("alice", "k-update", "fp-u"),
                &m,
                up.clone(),
                Precondition::Revision(before.revision),
            )
            .await
            .expect("a keyed retry returns the first result, even though the revision moved");
        assert_eq!(r.revision, before.revision + 1);
    }
    assert_eq!(
        store.get_model(&m).await.expect("get").revision,
        before.revision + 1
    );
}

/// The same key with another request fingerprint is `idempotency_key_reused` and changes nothing.
pub async fn a_key_with_another_request_is_refused(store: Arc<dyn Store>) {
    store
        .create_model(&keyed("alice", "k", "fp-1"), create("acme/bot"))
        .await
        .expect("create");
    let t = trail(store.as_ref()).await;
    let r = store
        .create_model(&keyed("alice", "k", "fp-2"), create("acme/other"))
        .await;
    assert_eq!(code(r), ErrorCode::IdempotencyKeyReused);
    assert_eq!(
        code(store.get_model(&name("acme/other")).await),
        ErrorCode::NotFound
    );
    // The same key on another operation is another request too.
    let r = store
        .create_version(
            &keyed("alice", "k", "fp-3"),
            &name("acme/bot"),
            CreateVersion::default(),
        )
        .await;
    assert_eq!(code(r), ErrorCode::IdempotencyKeyReused);
    assert_eq!(
        store
            .get_model(&name("acme/bot"))
            .await
            .expect("get")
            .latest_version,
        0
    );
    assert_eq!(trail(store.as_ref()).await, t);
}

/// Two actors may use the same key for their own requests.
pub async fn keys_belong_to_their_actor(store: Arc<dyn Store>) {
    let a = store
        .create_model(&keyed("alice", "shared-key", "fp"), create("acme/a"))
        .await
        .expect("alice");
    let b = store
        .create_model(&keyed("bob", "shared-key", "fp"), create("acme/b"))
        .await
        .expect("bob's request is his own, not a retry of alice's");
    assert_eq!((a.name.as_str(), b.name.as_str()), ("acme/a", "acme/b"));
    assert_eq!((a.created_by.as_str(), b.created_by.as_str()), ("alice", "bob"));
    assert_eq!(store.stats().await.expect("stats").models, 2);
}

/// Concurrent retries of one keyed request create exactly one version.
pub async fn concurrent_retries_apply_once(store: Arc<dyn Store>) {
    const RETRIES: usize = 12;
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(RETRIES));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RETRIES {
        let (store, m, barrier) = (Arc::clone(&store), m.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .create_version(&keyed("alice", "once", "fp"), &m, CreateVersion::default())
                .await
                .expect("every retry succeeds")
                .version
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.expect("task"), 1);
    }
    assert_eq!(store.get_model(&m).await.expect("get").latest_version, 1);
    let created = super::all_events(store.as_ref())
        .await
        .into_iter()
        .filter(|e| e.event_type == "version.created")
        .count();
    assert_eq!(created, 1);
}

/// A request that failed recorded nothing under its key: the corrected retry with the same key
/// and request is applied.
pub async fn a_failed_request_does_not_consume_its_key(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    let r = store
        .create_version(&keyed("alice", "k", "fp"), &m, CreateVersion::default())
        .await;
    assert_eq!(code(r), ErrorCode::NotFound);
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = store
        .create_version(&keyed("alice", "k", "fp"), &m, CreateVersion::default())
        .await
        .expect("the same request succeeds once the model exists");
    assert_eq!(v.version, 1);
}
