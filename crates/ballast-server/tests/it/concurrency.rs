//! Races are decided, not lost: gap-free version numbers under concurrent creates, alias
//! compare-and-swap with exactly one winner per round, and one production version at a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use ballast_api::{Alias, Model, StageChange, Version};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Barrier;

use crate::app::{err, etag, ok, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_get_gap_free_numbers() {
    let app = spawn_app().await;
    app.create_model("race/numbers").await;
    let start = Arc::new(Barrier::new(16));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let client = app.client.clone();
        let url = app.url("/v1/models/race/numbers/versions");
        let start = Arc::clone(&start);
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            for i in 0..20 {
                let r = client
                    .post(&url)
                    .json(&json!({ "tags": { "task": t.to_string(), "i": i.to_string() } }))
                    .send()
                    .await
                    .unwrap();
                got.push(ok::<Version>(r, StatusCode::CREATED).await.version);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "one task's numbers increase: {got:?}"
        );
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=320).collect::<Vec<u64>>());
    let m: Model = app.get_ok("/v1/models/race/numbers").await;
    assert_eq!(m.latest_version, 320);
    let listed = crate::listing::walk_versions(&app, "race/numbers", &[], 1000).await;
    assert_eq!(listed, (1..=320).rev().collect::<Vec<u64>>());
    // Changes are recorded as the token's principal.
    let trail = app.audit_all().await;
    let creates: Vec<_> = trail.iter().filter(|e| e.action == "version.create").collect();
    assert_eq!(creates.len(), 320);
    assert!(creates.iter().all(|e| e.actor == "tester"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alias_compare_and_swap_has_one_winner() {
    let app = spawn_app().await;
    app.create_model("race/alias").await;
    let a = app.sealed_version("race/alias", b"one").await;
    let b = app.sealed_version("race/alias", b"two").await;
    let r = app
        .put_json("/v1/models/race/alias/aliases/champion", &json!({ "version": a }))
        .send()
        .await
        .unwrap();
    ok::<Alias>(r, StatusCode::OK).await;
    const N: usize = 8;
    for round in 0..6u64 {
        let read_all = Arc::new(Barrier::new(N));
        let mut tasks = Vec::new();
        for i in 0..N {
            let client = app.client.clone();
            let url = app.url("/v1/models/race/alias/aliases/champion");
            let read_all = Arc::clone(&read_all);
            let target = if i % 2 == 0 { a } else { b };
            tasks.push(tokio::spawn(async move {
                let r = client.get(&url).send().await.unwrap();
                let tag = etag(&r);
                let seen: Alias = ok(r, StatusCode::OK).await;
                assert_eq!(tag, format!("\"{}\"", seen.revision));
                // Everyone has read the same revision before anyone writes.
                read_all.wait().await;
                let r = client
                    .put(&url)
                    .header("if-match", tag)
                    .json(&json!({ "version": target }))
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::OK {
                    let won: Alias = ok(r, StatusCode::OK).await;
                    assert_eq!(won.revision, seen.revision + 1);
                    true
                } else {
                    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
                    false
                }
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
        let now: Alias = app.get_ok("/v1/models/race/alias/aliases/champion").await;
        assert_eq!(now.revision, round + 2);
    }
    let sets = app
        .audit_all()
        .await
        .iter()
        .filter(|e| e.action == "alias.set")
        .count();
    assert_eq!(sets, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_promotions_leave_one_production_version() {
    let app = spawn_app().await;
    app.create_model("race/prod").await;
    let mut numbers = Vec::new();
    for i in 0..8u8 {
        let n = app.sealed_version("race/prod", &[i; 16]).await;
        app.set_stage("race/prod", n, "staging").await;
        numbers.push(n);
    }
    let go = Arc::new(Barrier::new(numbers.len()));
    let mut tasks = Vec::new();
    for n in numbers.clone() {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/models/race/prod/versions/{n}/stage"));
        let go = Arc::clone(&go);
        tasks.push(tokio::spawn(async move {
            go.wait().await;
            let r = client
                .post(&url)
                .json(&json!({ "stage": "production" }))
                .send()
                .await
                .unwrap();
            ok::<StageChange>(r, StatusCode::OK).await
        }));
    }
    let mut changes = Vec::new();
    for t in tasks {
        changes.push(t.await.unwrap());
    }
    // Each promotion demoted exactly the previous winner: one started from nothing, and every
    // version but the final one was demoted exactly once.
    let m: Model = app.get_ok("/v1/models/race/prod").await;
    let last = m.production_version.expect("a production version");
    assert_eq!(changes.iter().filter(|c| c.demoted.is_none()).count(), 1);
    let demoted: BTreeSet<u64> = changes.iter().filter_map(|c| c.demoted).collect();
    assert_eq!(demoted.len(), numbers.len() - 1);
    assert!(!demoted.contains(&last));
    let prod = crate::listing::walk_versions(&app, "race/prod", &[("stage", "production")], 100).await;
    assert_eq!(prod, [last]);
    let archived = crate::listing::walk_versions(&app, "race/prod", &[("stage", "archived")], 100).await;
    assert_eq!(archived.len(), numbers.len() - 1);
}
