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
    // The new snapshot is the last-known-good on disk (written on a blocking thread).
    eventually(Duration::from_secs(5), "generation 2 persisted", || async {
        lkg::load(&router.state_dir).unwrap().unwrap().generation == 2
    })
    .await;

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

#[tokio::test]
async fn a_snapshot_offered_outside_the_runtime_applies_without_panicking() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // No file watcher in the way: only the calls below change the snapshot.
    let router = TestRouter::start_with("eu", &routes(1, &a.url(), "a"), |c| {
        c.watch_interval = Duration::from_secs(3600);
    })
    .await;
    std::fs::write(&router.routes_path, routes(2, &b.url(), "b")).unwrap();
    let next = ballast_router::load_routes_file(&router.routes_path).unwrap();
    let (handle, state_dir) = (router.handle.clone(), router.state_dir.clone());
    // A plain thread, as an embedding program might use: no Tokio runtime there.
    let outcome = std::thread::spawn(move || {
        let outcome = handle.offer(next).map_err(|e| e.to_string());
        // Outside a runtime the last-known-good is written before `offer` returns.
        let persisted = lkg::load(&state_dir).unwrap().unwrap().generation;
        (outcome, persisted)
    })
    .join()
    .expect("offer panicked outside a runtime");
    assert_eq!(
        outcome,
        (Ok(ballast_router::OfferOutcome::Applied { generation: 2 }), 2)
    );
    assert_eq!(router.chat("bot").await.upstream(), "b");
    let handle = router.handle.clone();
    std::fs::write(&router.routes_path, routes(3, &a.url(), "a")).unwrap();
    let reloaded = std::thread::spawn(move || handle.reload().map_err(|e| e.to_string()))
        .join()
        .expect("reload panicked outside a runtime");
    assert_eq!(
        reloaded,
        Ok(ballast_router::OfferOutcome::Applied { generation: 3 })
    );
    assert_eq!(router.chat("bot").await.upstream(), "a");
}

#[tokio::test]
async fn a_failed_last_known_good_write_is_counted() {
    let a = Upstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let routes_path = dir.path().join("routes.toml");
    std::fs::write(&routes_path, routes(1, &a.url(), "a")).unwrap();
    // The state directory's path is taken by a file: nothing can be written there.
    let state_dir = dir.path().join("state");
    std::fs::write(&state_dir, "not a directory").unwrap();
    let router = TestRouter::start_in(dir, routes_path, state_dir, "eu")
        .await
        .unwrap();
    let failures = |m: &str| metric(m, "ballast_router_lkg_write_failures_total ");
    assert_eq!(failures(&router.metrics().await), 1.0);
    // It serves regardless, and counts every failed write.
    assert_eq!(router.chat("bot").await.upstream(), "a");
    std::fs::write(&router.routes_path, routes(2, &a.url(), "a2")).unwrap();
    assert!(router.handle.reload().is_ok());
    eventually(Duration::from_secs(5), "second failure counted", || async {
        failures(&router.metrics().await) == 2.0
    })
    .await;
}

#[tokio::test]
async fn a_redeployment_removes_the_metric_series_of_routes_and_targets_it_dropped() {
    let a = Upstream::start("a").await;
    let o = Upstream::start("o").await;
    let n = Upstream::start("n").await;
    let two = |generation: u64, second: &str, id: &str, url: &str| {
        format!(
            "generation = {generation}\n[[routes]]\nname = \"bot\"\n{}[[routes]]\nname = \"{second}\"\n{}",
            target("a", &a.url(), "eu", "m/bot/1"),
            target(id, url, "eu", "m/x/1"),
        )
    };
    let router = TestRouter::start_with("eu", &two(1, "old", "o", &o.url()), |c| {
        c.watch_interval = Duration::from_secs(3600);
    })
    .await;
    assert_eq!(router.chat("bot").await.status, 200);
    assert_eq!(router.chat("old").await.upstream(), "o");
    let m = router.metrics().await;
    assert!(m.contains("route=\"old\""), "{m}");
    assert!(m.contains("target=\"o\""), "{m}");

    std::fs::write(&router.routes_path, two(2, "new", "n", &n.url())).unwrap();
    assert!(router.handle.reload().is_ok());
    assert_eq!(router.chat("new").await.upstream(), "n");
    let m = router.metrics().await;
    assert!(!m.contains("route=\"old\""), "{m}");
    assert!(!m.contains("target=\"o\""), "{m}");
    assert!(m.contains("route=\"new\""), "{m}");
    assert!(m.contains("target=\"n\""), "{m}");
    // What stays keeps counting from where it was.
    assert_eq!(
        metric(&m, "ballast_router_requests_total{route=\"bot\",status=\"200\"}"),
        1.0,
        "{m}"
    );
}
