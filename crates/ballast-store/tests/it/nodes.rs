//! Several registry nodes on one PostgreSQL database: each node is its own [`SqlStore`] (own
//! writer, own readers) and they share nothing but the database. Webhook deliveries are claimed
//! by one node at a time, one node's events wake the others' watchers, the routing state read on
//! one node includes what another wrote, and nodes starting together bootstrap one admin token.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ballast_api::deployments::SetRoute;
use ballast_api::events::{CreateWebhook, DeliveryAttempt, DeliveryStatus};
use ballast_core::Stage;
use ballast_store::{unix_ms, AttemptOutcome, Claim, PgOptions, Precondition, SqlStore, Store};

use crate::conformance::{ctx, model, name, sealed};
use crate::postgres::{admin_url, fresh_database};

/// Drops a test database when it goes (also when the test failed).
pub struct DropDatabase {
    /// The administrative URL.
    pub admin: String,
    /// The test database's URL.
    pub url: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (admin, url) = (self.admin.clone(), self.url.clone());
        // A blocking client must not run on the runtime's threads.
        let _ = std::thread::spawn(move || {
            let db = url.rsplit('/').next().unwrap_or_default().to_owned();
            if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// Nodes on one fresh database; the database is dropped when this goes.
struct Cluster {
    nodes: Vec<Arc<dyn Store>>,
    _db: DropDatabase,
}

impl Cluster {
    /// `n` nodes on a new database, or `None` when PostgreSQL tests cannot run here.
    async fn start(n: usize) -> Option<Self> {
        let admin = admin_url()?;
        // Opened off the async threads (connecting blocks); each node still starts its event
        // poller on this runtime.
        let (admin, url, nodes) = tokio::task::spawn_blocking(move || {
            let url = fresh_database(&admin);
            let nodes: Vec<Arc<dyn Store>> = (0..n)
                .map(|_| {
                    let store = SqlStore::connect(&url, &PgOptions::default()).expect("open a node");
                    Arc::new(store) as Arc<dyn Store>
                })
                .collect();
            (admin, url, nodes)
        })
        .await
        .expect("open task");
        Some(Self {
            nodes,
            _db: DropDatabase { admin, url },
        })
    }

    async fn stop(self) {
        for n in &self.nodes {
            n.close().await;
        }
        tokio::task::spawn_blocking(move || drop(self))
            .await
            .expect("drop task");
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

fn delivered() -> DeliveryAttempt {
    DeliveryAttempt {
        at: "2030-01-01T00:00:00.000Z".into(),
        status: Some(200),
        latency_ms: 3,
        error: None,
        response_snippet: None,
    }
}

/// Claimers on two nodes split the due deliveries between them: none is held twice, all are
/// handed out, and only the node holding a lease can record its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_are_claimed_once_across_nodes() {
    const EVENTS: usize = 40;
    const CLAIMERS_PER_NODE: usize = 3;
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (Arc::clone(&cluster.nodes[0]), Arc::clone(&cluster.nodes[1]));
    let hook = a
        .create_webhook(
            &ctx("root"),
            CreateWebhook {
                url: "http://127.0.0.1:9/hook".into(),
                events: vec!["model.created".into()],
                ..CreateWebhook::default()
            },
        )
        .await
        .expect("create webhook");
    // Events are written through both nodes; each queues its delivery in its own transaction.
    for i in 0..EVENTS {
        let node = if i % 2 == 0 { &a } else { &b };
        model(node.as_ref(), &format!("acme/m{i}"), &[]).await;
    }
    let now = unix_ms() + 1_000;
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * CLAIMERS_PER_NODE));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in [&a, &b].into_iter().enumerate() {
        for c in 0..CLAIMERS_PER_NODE {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            let node = format!("node-{n}-{c}");
            tasks.spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_deliveries(claim(&node, now, 3)).await.expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    assert!(got.len() <= 3, "a claim returned more than asked for");
                    mine.extend(got.into_iter().map(|d| (d.id, node.clone(), d.webhook_id)));
                    assert!(
                        mine.len() <= EVENTS,
                        "{node} claimed {} deliveries of {EVENTS}: leased ones were handed out again",
                        mine.len()
                    );
                }
            });
        }
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("claimer"));
    }
    let ids: BTreeSet<u64> = all.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids.len(), all.len(), "a delivery was claimed twice");
    assert_eq!(ids.len(), EVENTS, "every due delivery was handed out");
    assert!(all.iter().all(|(_, _, w)| *w == hook.id));
    for store in [&a, &b] {
        assert!(
            store
                .claim_deliveries(claim("late", now, 100))
                .await
                .expect("claim")
                .is_empty(),
            "leased deliveries are not handed out again"
        );
    }

    // Only the lease holder records the outcome, whichever node it asks.
    let (id, holder, _) = all[0].clone();
    assert!(!b
        .finish_delivery("someone-else", id, delivered(), AttemptOutcome::Delivered)
        .await
        .expect("finish"));
    assert!(a
        .finish_delivery(&holder, id, delivered(), AttemptOutcome::Delivered)
        .await
        .expect("finish"));
    let got = b.get_delivery(hook.id, id).await.expect("get");
    assert_eq!((got.status, got.attempt_count), (DeliveryStatus::Delivered, 1));
    assert_eq!(
        b.get_webhook(hook.id).await.expect("get").pending,
        (EVENTS - 1) as u64
    );
    cluster.stop().await;
}

/// A watcher on one node wakes for events committed by another, and what one node writes is
/// read by the other at once (no per-node caches of shared state).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_see_each_others_changes() {
    let Some(cluster) = Cluster::start(2).await else {
        return;
    };
    let (a, b) = (Arc::clone(&cluster.nodes[0]), Arc::clone(&cluster.nodes[1]));
    let m = name("acme/bot");
    model(b.as_ref(), "acme/bot", &[]).await;
    let v = sealed(b.as_ref(), &m, &[], &[]).await.version;
    let newest = b
        .list_events(0, 1000, Vec::new())
        .await
        .expect("events")
        .next_after;
    let mut watch = a.watch_events();
    tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|last| *last >= newest))
        .await
        .expect("node a learns of node b's events within the poll interval")
        .expect("watch open");
    let seen = a.list_events(0, 1000, Vec::new()).await.expect("events");
    assert_eq!(seen.next_after, newest);

    // An alias set through node b and a route set through node a resolve on node b.
    b.set_alias(&ctx("a"), &m, "stable", v, Precondition::None)
        .await
        .expect("alias");
    a.set_route(
        &ctx("a"),
        "chat",
        serde_json::from_value::<SetRoute>(serde_json::json!({ "target": "acme/bot@stable" }))
            .expect("route spec"),
    )
    .await
    .expect("set route");
    let state = b.routing_state().await.expect("routing state");
    let chat = state
        .routes
        .iter()
        .find(|r| r.route.name == "chat")
        .expect("the route set on node a");
    assert_eq!(chat.version, Some(v));
    assert_eq!(
        state.last_event_id,
        a.list_events(0, 1000, Vec::new())
            .await
            .expect("events")
            .next_after
    );
    // Stage changes made through b show up in a's routing state too.
    b.set_stage(&ctx("a"), &m, v, Stage::Staging, None, Precondition::None)
        .await
        .expect("stage");
    a.set_route(
        &ctx("a"),
        "chat",
        serde_json::from_value::<SetRoute>(serde_json::json!({ "target": "acme/bot:staging" }))
            .expect("route spec"),
    )
    .await
    .expect("replace route");
    let chat = a
        .routing_state()
        .await
        .expect("routing state")
        .routes
        .into_iter()
        .find(|r| r.route.name == "chat")
        .expect("chat");
    assert_eq!((chat.route.revision, chat.version), (2, Some(v)));
    cluster.stop().await;
}

/// Nodes starting together on an empty database bootstrap exactly one admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_bootstrap_one_admin() {
    const NODES: usize = 3;
    let Some(cluster) = Cluster::start(NODES).await else {
        return;
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(NODES * 2));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, node) in cluster.nodes.iter().enumerate() {
        for k in 0..2 {
            let (node, barrier) = (Arc::clone(node), Arc::clone(&barrier));
            tasks.spawn(async move {
                barrier.wait().await;
                let seed = format!("node-{n}-{k}");
                node.bootstrap_admin(&ctx("system"), "admin", format!("bal_{n}{k}"), hex_sha256(&seed))
                    .await
                    .expect("bootstrap")
            });
        }
    }
    let mut created = Vec::new();
    while let Some(r) = tasks.join_next().await {
        created.extend(r.expect("task"));
    }
    assert_eq!(created.len(), 1, "{created:?}");
    for node in &cluster.nodes {
        assert_eq!(node.list_tokens().await.expect("tokens"), created);
        assert_eq!(node.list_roles(None).await.expect("roles").len(), 1);
    }
    cluster.stop().await;
}

fn hex_sha256(seed: &str) -> String {
    ballast_core::Sha256Digest::of(seed.as_bytes()).to_hex()
}
