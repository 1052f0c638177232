//! Webhook subscriptions and deliveries: matching events queue deliveries in the change's own
//! transaction; dispatchers claim them under leases, so no two hold the same one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ballast_api::events::{CreateWebhook, DeliveryAttempt, DeliveryStatus};
use ballast_core::ErrorCode;
use ballast_store::{unix_ms, AttemptOutcome, Claim, Store};

use super::{code, ctx, model, name, sealed};

fn hook(events: &[&str]) -> CreateWebhook {
    CreateWebhook {
        url: "http://127.0.0.1:9/hook?token=secret".into(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        ..CreateWebhook::default()
    }
}

fn claim(node: &str, now_ms: i64, max: usize) -> Claim {
    Claim {
        node: node.to_owned(),
        now_ms,
        lease_ms: 60_000,
        in_flight: HashMap::new(),
        per_webhook: 1000,
        max,
    }
}

fn attempt(status: Option<u16>) -> DeliveryAttempt {
    DeliveryAttempt {
        at: "2030-01-01T00:00:00.000Z".into(),
        status,
        latency_ms: 5,
        error: status.is_none().then(|| "connection refused".to_owned()),
        response_snippet: None,
    }
}

async fn pending(store: &dyn Store, webhook: u64) -> usize {
    store
        .list_deliveries(webhook, Some(DeliveryStatus::Pending), 1000)
        .await
        .expect("deliveries")
        .deliveries
        .len()
}

/// A subscription gets one delivery per matching event (by type, namespace and model), none
/// for others; secrets are shown once, at creation.
pub async fn subscriptions_queue_matching_deliveries(store: Arc<dyn Store>) {
    let all = store
        .create_webhook(&ctx("root"), hook(&[]))
        .await
        .expect("create");
    assert!(
        all.secret.as_deref().is_some_and(|s| s.len() >= 16),
        "the secret is shown at creation"
    );
    let created_only = store
        .create_webhook(&ctx("root"), hook(&["model.created"]))
        .await
        .expect("create");
    let acme_only = store
        .create_webhook(
            &ctx("root"),
            CreateWebhook {
                namespace: Some("acme".into()),
                ..hook(&[])
            },
        )
        .await
        .expect("create");
    let bot_only = store
        .create_webhook(
            &ctx("root"),
            CreateWebhook {
                model: Some("acme/bot".into()),
                ..hook(&["version.sealed"])
            },
        )
        .await
        .expect("create");
    assert!(store.get_webhook(all.id).await.expect("get").secret.is_none());
    assert!(store
        .list_webhooks()
        .await
        .expect("list")
        .iter()
        .all(|w| w.secret.is_none()));

    let before: HashMap<u64, usize> = {
        let mut m = HashMap::new();
        for w in [all.id, created_only.id, acme_only.id, bot_only.id] {
            m.insert(w, pending(store.as_ref(), w).await);
        }
        m
    };
    model(store.as_ref(), "acme/bot", &[]).await;
    sealed(store.as_ref(), &name("acme/bot"), &[], &[]).await;
    model(store.as_ref(), "other/bot", &[]).await;
    sealed(store.as_ref(), &name("other/bot"), &[], &[]).await;
    let added = |w: u64| {
        let store = Arc::clone(&store);
        let b = before[&w];
        async move { pending(store.as_ref(), w).await - b }
    };
    assert_eq!(added(all.id).await, 8, "every event");
    assert_eq!(added(created_only.id).await, 2, "model.created only");
    assert_eq!(added(acme_only.id).await, 4, "namespace acme only");
    assert_eq!(added(bot_only.id).await, 1, "version.sealed of acme/bot only");
    let w = store.get_webhook(created_only.id).await.expect("get");
    assert_eq!((w.pending, w.dead), (2, 0));

    // Bad subscriptions are refused.
    for bad in [
        CreateWebhook {
            url: "ftp://example.com".into(),
            ..CreateWebhook::default()
        },
        hook(&["no.such.event"]),
        CreateWebhook {
            namespace: Some("Bad NS".into()),
            ..hook(&[])
        },
        CreateWebhook {
            secret: Some("short".into()),
            ..hook(&[])
        },
    ] {
        let r = store.create_webhook(&ctx("root"), bad.clone()).await;
        assert!(
            matches!(code(r), ErrorCode::InvalidArgument | ErrorCode::InvalidName),
            "{bad:?} is refused as invalid"
        );
    }
    assert_eq!(store.list_webhooks().await.expect("list").len(), 4);

    // A ping queues one delivery to that webhook only.
    let ping = store
        .ping_webhook(&ctx("root"), created_only.id)
        .await
        .expect("ping");
    assert_eq!(
        (ping.event_type.as_str(), ping.status),
        ("webhook.ping", DeliveryStatus::Pending)
    );
    assert_eq!(added(created_only.id).await, 3);
    assert_eq!(
        code(store.ping_webhook(&ctx("root"), 999).await),
        ErrorCode::NotFound
    );

    // Deleting a webhook removes it and its deliveries.
    store.delete_webhook(&ctx("root"), all.id).await.expect("delete");
    assert_eq!(code(store.get_webhook(all.id).await), ErrorCode::NotFound);
    assert_eq!(
        code(store.delete_webhook(&ctx("root"), all.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(store.list_deliveries(all.id, None, 10).await),
        ErrorCode::NotFound
    );
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Concurrent claimers on different nodes split the due deliveries: none is held twice, and
/// together they get all of them.
pub async fn two_claimers_never_hold_the_same_delivery(store: Arc<dyn Store>) {
    const CLAIMERS: usize = 6;
    let w = store
        .create_webhook(&ctx("root"), hook(&["model.created"]))
        .await
        .expect("create");
    for i in 0..30 {
        model(store.as_ref(), &format!("acme/m{i}"), &[]).await;
    }
    let now = unix_ms() + 1_000;
    let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLAIMERS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_deliveries(claim(&format!("node-{c}"), now, 3))
                    .await
                    .expect("claim");
                if got.is_empty() {
                    return mine;
                }
                assert!(got.len() <= 3);
                mine.extend(got.into_iter().map(|d| (d.id, d.webhook_id, d.event.event_type)));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("task"));
    }
    let ids: BTreeSet<u64> = all.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), all.len(), "a delivery was claimed twice");
    assert_eq!(ids.len(), 30);
    assert!(all
        .iter()
        .all(|(_, hook, t)| *hook == w.id && t == "model.created"));
    // Under the lease, nobody else gets them.
    assert!(store
        .claim_deliveries(claim("late", now, 100))
        .await
        .expect("claim")
        .is_empty());

    // The per-webhook limit counts what a node already has in flight.
    for i in 30..40 {
        model(store.as_ref(), &format!("acme/m{i}"), &[]).await;
    }
    let mut limited = claim("node-x", unix_ms() + 1_000, 100);
    limited.per_webhook = 4;
    limited.in_flight.insert(w.id, 1);
    assert_eq!(store.claim_deliveries(limited).await.expect("claim").len(), 3);
}

/// An expired lease lets another node take the delivery; the first node can then no longer
/// record its attempt.
pub async fn leases_expire_and_lost_leases_cannot_finish(store: Arc<dyn Store>) {
    let w = store
        .create_webhook(&ctx("root"), hook(&["model.created"]))
        .await
        .expect("create");
    model(store.as_ref(), "acme/bot", &[]).await;
    let now = unix_ms() + 1_000;
    let a = store
        .claim_deliveries(claim("node-a", now, 10))
        .await
        .expect("claim");
    assert_eq!(a.len(), 1);
    let d = &a[0];
    assert_eq!((d.webhook_id, d.attempt_count), (w.id, 0));
    assert!(d.secret.len() >= 16);
    assert_eq!(d.event.model.as_deref(), Some("acme/bot"));
    assert!(store
        .claim_deliveries(claim("node-b", now + 59_000, 10))
        .await
        .expect("claim")
        .is_empty());
    let b = store
        .claim_deliveries(claim("node-b", now + 61_000, 10))
        .await
        .expect("claim after the lease");
    assert_eq!(b.iter().map(|x| x.id).collect::<Vec<_>>(), vec![d.id]);
    assert!(!store
        .finish_delivery("node-a", d.id, attempt(Some(200)), AttemptOutcome::Delivered)
        .await
        .expect("finish"));
    assert!(store
        .finish_delivery("node-b", d.id, attempt(Some(200)), AttemptOutcome::Delivered)
        .await
        .expect("finish"));
    let got = store.get_delivery(w.id, d.id).await.expect("get");
    assert_eq!(
        (got.status, got.attempt_count, got.attempts.len()),
        (DeliveryStatus::Delivered, 1, 1)
    );
    assert!(got.delivered_at.is_some());
    // Finished: nobody claims it again, and a late finish is refused.
    assert!(store
        .claim_deliveries(claim("node-c", now + 500_000, 10))
        .await
        .expect("claim")
        .is_empty());
    assert!(!store
        .finish_delivery("node-b", d.id, attempt(Some(200)), AttemptOutcome::Delivered)
        .await
        .expect("finish"));
    assert_eq!(code(store.get_delivery(w.id, 999).await), ErrorCode::NotFound);
    assert_eq!(
        code(store.get_delivery(w.id + 100, d.id).await),
        ErrorCode::NotFound
    );
}

/// A retry waits for its time, a dead delivery stays dead until redelivered, and each attempt is
/// recorded.
pub async fn attempts_retry_die_and_redeliver(store: Arc<dyn Store>) {
    let w = store
        .create_webhook(&ctx("root"), hook(&["model.created"]))
        .await
        .expect("create");
    model(store.as_ref(), "acme/bot", &[]).await;
    let now = unix_ms() + 1_000;
    let d = store.claim_deliveries(claim("n", now, 10)).await.expect("claim")[0].id;
    assert_eq!(
        code(store.redeliver(&ctx("root"), w.id, d).await),
        ErrorCode::Conflict,
        "a pending delivery is not redelivered"
    );
    let retry_at = now + 30_000;
    assert!(store
        .finish_delivery(
            "n",
            d,
            attempt(Some(503)),
            AttemptOutcome::Retry {
                next_attempt_ms: retry_at
            }
        )
        .await
        .expect("finish"));
    assert!(store
        .claim_deliveries(claim("n", retry_at - 1, 10))
        .await
        .expect("claim")
        .is_empty());
    let again = store
        .claim_deliveries(claim("n", retry_at, 10))
        .await
        .expect("claim");
    assert_eq!((again.len(), again[0].attempt_count), (1, 1));
    assert!(store
        .finish_delivery("n", d, attempt(None), AttemptOutcome::Dead)
        .await
        .expect("finish"));
    let dead = store.get_delivery(w.id, d).await.expect("get");
    assert_eq!(
        (dead.status, dead.attempt_count, dead.attempts.len()),
        (DeliveryStatus::Dead, 2, 2)
    );
    assert_eq!(dead.attempts[0].status, Some(503));
    assert_eq!(dead.attempts[1].error.as_deref(), Some("connection refused"));
    assert_eq!(store.get_webhook(w.id).await.expect("get").dead, 1);
    assert!(store
        .claim_deliveries(claim("n", now + 10_000_000, 10))
        .await
        .expect("claim")
        .is_empty());
    let listed = store
        .list_deliveries(w.id, Some(DeliveryStatus::Dead), 10)
        .await
        .expect("list");
    assert_eq!(
        listed.deliveries.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![d]
    );

    let re = store.redeliver(&ctx("root"), w.id, d).await.expect("redeliver");
    assert_eq!(re.status, DeliveryStatus::Pending);
    let back = store
        .claim_deliveries(claim("n", unix_ms() + 1_000, 10))
        .await
        .expect("claim");
    assert_eq!(back.iter().map(|x| x.id).collect::<Vec<_>>(), vec![d]);
    assert_eq!(
        code(store.redeliver(&ctx("root"), w.id, 999).await),
        ErrorCode::NotFound
    );
    super::assert_audit_matches_events(store.as_ref()).await;
}
