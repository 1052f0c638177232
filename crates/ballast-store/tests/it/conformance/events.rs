//! The outbox as a change feed: ordered, paged without gaps, filtered by type, and watched.

use std::sync::Arc;
use std::time::Duration;

use ballast_api::auth::CreateToken;
use ballast_core::Stage;
use ballast_store::{Precondition, Store};

use super::{all_events, ctx, model, name, sealed};

/// Paging with `next_after` visits every event once, in increasing id order; an empty page
/// keeps the cursor where it was.
pub async fn the_change_feed_pages_without_gaps(store: Arc<dyn Store>) {
    let empty = store.list_events(0, 10, Vec::new()).await.expect("feed");
    assert!(empty.events.is_empty());
    assert_eq!(empty.next_after, 0);
    for i in 0..6 {
        let full = format!("acme/m{i}");
        model(store.as_ref(), &full, &[]).await;
        sealed(store.as_ref(), &name(&full), &[], &[]).await;
    }
    let all = all_events(store.as_ref()).await;
    assert_eq!(all.len(), 6 * 4);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    for limit in [1, 5, 7, 1000] {
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let page = store.list_events(after, limit, Vec::new()).await.expect("page");
            assert!(page.events.len() <= limit as usize);
            if page.events.is_empty() {
                assert_eq!(page.next_after, after);
                break;
            }
            assert_eq!(page.next_after, page.events.last().map_or(0, |e| e.id));
            after = page.next_after;
            seen.extend(page.events.into_iter().map(|e| e.id));
        }
        assert_eq!(
            seen,
            all.iter().map(|e| e.id).collect::<Vec<_>>(),
            "limit {limit}"
        );
    }
    // Resuming from the middle returns exactly the rest.
    let mid = all[10].id;
    let rest = store.list_events(mid, 1000, Vec::new()).await.expect("rest");
    assert_eq!(
        rest.events.iter().map(|e| e.id).collect::<Vec<_>>(),
        all[11..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

/// A type filter returns only those types, still in order and paged.
pub async fn the_change_feed_filters_by_type(store: Arc<dyn Store>) {
    for i in 0..4 {
        let full = format!("acme/m{i}");
        model(store.as_ref(), &full, &[]).await;
        sealed(store.as_ref(), &name(&full), &[], &[]).await;
    }
    let types = vec!["model.created".to_owned(), "version.sealed".to_owned()];
    let all = all_events(store.as_ref()).await;
    let want: Vec<u64> = all
        .iter()
        .filter(|e| types.contains(&e.event_type))
        .map(|e| e.id)
        .collect();
    assert_eq!(want.len(), 8);
    let mut after = 0;
    let mut got = Vec::new();
    loop {
        let page = store.list_events(after, 3, types.clone()).await.expect("page");
        if page.events.is_empty() {
            break;
        }
        assert!(page.events.iter().all(|e| types.contains(&e.event_type)));
        after = page.next_after;
        got.extend(page.events.into_iter().map(|e| e.id));
    }
    assert_eq!(got, want);
    let none = store
        .list_events(0, 100, vec!["route.removed".to_owned()])
        .await
        .expect("feed");
    assert!(none.events.is_empty());
}

/// Events say what changed: type, subject, model, version and alias, actor and request.
pub async fn events_describe_their_subject(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    let c = ctx("frank");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = sealed(store.as_ref(), &m, &[], &[]).await;
    store
        .set_alias(&c, &m, "champion", v.version, Precondition::None)
        .await
        .expect("alias");
    store
        .set_stage(&c, &m, v.version, Stage::Staging, None, Precondition::None)
        .await
        .expect("stage");
    let all = all_events(store.as_ref()).await;
    let types: Vec<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "model.created",
            "version.created",
            "version.file_added",
            "version.sealed",
            "alias.set",
            "stage_transition.completed"
        ]
    );
    for e in &all {
        assert_eq!(e.model.as_deref(), Some("acme/bot"), "{}", e.event_type);
        assert!(
            ballast_api::events::is_event_type(&e.event_type),
            "{} is in the catalogue",
            e.event_type
        );
    }
    assert_eq!((all[0].subject.as_str(), all[0].version), ("acme/bot", None));
    assert_eq!((all[1].subject.as_str(), all[1].version), ("acme/bot/1", Some(1)));
    let alias = &all[4];
    assert_eq!(
        (
            alias.subject.as_str(),
            alias.alias.as_deref(),
            alias.actor.as_str(),
            alias.request_id.as_str()
        ),
        (
            "acme/bot@champion",
            Some("champion"),
            "frank",
            c.request_id.as_str()
        )
    );
    assert_eq!(all[5].data["after"]["stage"], "staging");
    assert_eq!(all[5].data["before"]["stage"], "development");

    // Changes that concern no model name none.
    store
        .create_token(
            &ctx("admin"),
            CreateToken {
                principal: "ci".into(),
                ..CreateToken::default()
            },
            "bal_abc".into(),
            "0".repeat(64),
        )
        .await
        .expect("token");
    let token_event = all_events(store.as_ref()).await.pop().expect("an event");
    assert_eq!(token_event.event_type, "token.created");
    assert_eq!(
        token_event.model, None,
        "a token event concerns no model: {token_event:?}"
    );
    store
        .grant_role(
            &ctx("admin"),
            ballast_api::auth::GrantRole {
                principal: "ci".into(),
                namespace: "acme".into(),
                role: ballast_api::auth::Role::Reader,
            },
        )
        .await
        .expect("grant");
    let role_event = all_events(store.as_ref()).await.pop().expect("an event");
    assert_eq!(role_event.event_type, "role.granted");
    assert_eq!(
        role_event.model, None,
        "a role event concerns no model: {role_event:?}"
    );
}

/// The watch moves to the newest event id with every commit that wrote events, before the
/// writer hears back, and wakes waiters.
pub async fn the_watch_advances_with_every_commit(store: Arc<dyn Store>) {
    let mut rx = store.watch_events();
    assert_eq!(*rx.borrow_and_update(), 0);
    let waiter = {
        let mut rx = store.watch_events();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .expect("woken within 10 s")
                .expect("the store is alive");
            *rx.borrow()
        })
    };
    tokio::task::yield_now().await;
    model(store.as_ref(), "acme/bot", &[]).await;
    let newest = all_events(store.as_ref()).await.last().map_or(0, |e| e.id);
    assert!(newest > 0);
    assert!(
        *rx.borrow_and_update() >= newest,
        "the watch saw the commit before its reply"
    );
    assert!(waiter.await.expect("waiter") >= 1);
    for i in 0..5 {
        let v = store
            .create_version(
                &ctx("a"),
                &name("acme/bot"),
                ballast_api::CreateVersion::default(),
            )
            .await
            .expect("version");
        assert_eq!(v.version, i + 1);
        let seen = *rx.borrow_and_update();
        let newest = all_events(store.as_ref()).await.last().map_or(0, |e| e.id);
        assert_eq!(seen, newest, "after change {i}");
    }
    // A refused change writes no event and moves nothing.
    let before = *rx.borrow_and_update();
    let _ = store
        .create_version(
            &ctx("a"),
            &name("acme/ghost"),
            ballast_api::CreateVersion::default(),
        )
        .await;
    assert_eq!(*rx.borrow(), before);
}

/// A reader tailing the feed (`after` = the last id it saw) while many writers commit sees
/// every event exactly once: no event becomes visible behind a reader's cursor.
pub async fn a_tailing_reader_misses_nothing_under_concurrent_writes(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 15;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done) = (Arc::clone(&store), Arc::clone(&done));
        tokio::spawn(async move {
            let mut after = 0;
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = store.list_events(after, 7, Vec::new()).await.expect("page");
                let empty = page.events.is_empty();
                seen.extend(page.events.iter().map(|e| e.id));
                after = page.next_after;
                if empty && finished {
                    return seen;
                }
                assert!(tokio::time::Instant::now() < deadline, "the feed never drained");
                if empty {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            for i in 0..PER_WRITER {
                model(store.as_ref(), &format!("ns{w}/m{i}"), &[]).await;
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    let all: Vec<u64> = all_events(store.as_ref())
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all.len(), WRITERS * PER_WRITER);
    assert_eq!(seen, all, "the tailing reader saw a different feed");
}
