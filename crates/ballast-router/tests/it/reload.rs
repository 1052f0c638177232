//! Static configuration: reload on change, refusal of invalid or older snapshots, in-flight
//! requests keep their snapshot, start from last-known-good.

use std::time::Duration;

use ballast_router::lkg;

use crate::support::{client, eventually, metric, target, Mode, TestRouter, Upstream};

fn routes(generation: u64, url: &str, id: &str) -> String {
    format!(
        "generation = {generation}\n[[routes]]\nname = \"bot\"\n{}",
        target(id, url, "eu", "m/bot/1")
    )
}

async fn active_generation(router: &TestRouter) -> u64 {
    let v: serde_json::Value = client()
        .get(router.url("/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["generation"].as_u64().unwrap()
}

#[tokio::test]
async fn file_changes_reload_and_invalid_or_older_files_are_refused() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let router = TestRouter::start("eu", &routes(1, &a.url(), "a")).await;
    assert_eq!(router.chat("bot").await.upstream(), "a");

    std::fs::write(&router.routes_path, routes(2, &b.url(), "b")).unwrap();
    eventually(Duration::from_secs(5), "generation 2 active", || async {
        active_generation(&router).await == 2
    })
    .await;
    assert_eq!(router.chat("bot").await.upstream(), "b");
    let v: serde_json::Value = client()
        .get(router.url("/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["digest"].as_str().unwrap(), router.handle.snapshot().digest);
    assert_eq!(v["routes"][0]["name"], "bot");
    // The new snapshot is the last-known-good on disk.
    assert_eq!(lkg::load(&router.state_dir).unwrap().unwrap().generation, 2);

    // Invalid: refused, generation 2 stays.
    std::fs::write(&router.routes_path, routes(3, "ftp://nowhere", "c")).unwrap();
    eventually(Duration::from_secs(5), "invalid file counted", || async {
        metric(
            &router.metrics().await,
            "ballast_router_snapshot_loads_total{source=\"file\",result=\"invalid\"}",
        ) >= 1.0
    })
    .await;
    assert_eq!(active_generation(&router).await, 2);
    // Older: refused.
    std::fs::write(&router.routes_path, routes(1, &a.url(), "a")).unwrap();
    eventually(Duration::from_secs(5), "older file counted", || async {
        metric(
            &router.metrics().await,
            "ballast_router_snapshot_loads_total{source=\"file\",result=\"older\"}",
        ) >= 1.0
    })
    .await;
    assert_eq!(router.chat("bot").await.upstream(), "b");
    assert_eq!(lkg::load(&router.state_dir).unwrap().unwrap().generation, 2);
    // Same generation, other content: refused too (explicit reload, as SIGHUP does).
    std::fs::write(&router.routes_path, routes(2, &a.url(), "a2")).unwrap();
    assert!(router.handle.reload().is_err());
    assert_eq!(router.chat("bot").await.upstream(), "b");
}

#[tokio::test]
async fn in_flight_requests_keep_their_snapshot_across_a_reload() {
    let slow = Upstream::start("slow").await;
    let other = Upstream::start("other").await;
    slow.set(Mode::Delay(Duration::from_millis(700)));
    let router = TestRouter::start("eu", &routes(1, &slow.url(), "slow")).await;
    let url = router.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&serde_json::json!({"model": "bot"}))
            .send()
            .await
            .unwrap()
    });
    eventually(
        Duration::from_secs(2),
        "request reached the slow upstream",
        || async { slow.hits() == 1 },
    )
    .await;
    std::fs::write(&router.routes_path, routes(2, &other.url(), "other")).unwrap();
    assert!(router.handle.reload().is_ok());
    assert_eq!(router.chat("bot").await.upstream(), "other");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ballast-target"], "slow");
}

#[tokio::test]
async fn a_router_starts_from_last_known_good_when_its_file_is_unreadable() {
    let a = Upstream::start("a").await;
    let router = TestRouter::start("eu", &routes(3, &a.url(), "a")).await;
    assert_eq!(router.chat("bot").await.upstream(), "a");
    let routes_path = router.routes_path.clone();
    let state_dir = router.state_dir.clone();
    let dir = router.stop().await;

    // The file is broken: the last-known-good one serves.
    std::fs::write(&routes_path, "generation = \"oops").unwrap();
    let router = TestRouter::start_in(dir, routes_path.clone(), state_dir.clone(), "eu")
        .await
        .unwrap();
    assert_eq!(active_generation(&router).await, 3);
    let v: serde_json::Value = client()
        .get(router.url("/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["source"], "last_known_good");
    assert_eq!(router.chat("bot").await.upstream(), "a");
    let dir = router.stop().await;

    // An older file does not win over a newer last-known-good either.
    std::fs::write(&routes_path, routes(2, "http://127.0.0.1:9", "z")).unwrap();
    let router = TestRouter::start_in(dir, routes_path.clone(), state_dir.clone(), "eu")
        .await
        .unwrap();
    assert_eq!(active_generation(&router).await, 3);
    let dir = router.stop().await;

    // No file and a damaged last-known-good: refuse to start, with the reasons.
    std::fs::remove_file(&routes_path).unwrap();
    std::fs::write(lkg::lkg_path(&state_dir), "{").unwrap();
    let err = TestRouter::start_in(dir, routes_path, state_dir, "eu")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no usable routing snapshot"), "{err}");
}
