//! The router's own endpoints and graceful shutdown.

use std::time::Duration;

use crate::support::{client, eventually, metric, target, Mode, TestRouter, Upstream};

#[tokio::test]
async fn health_readiness_routes_targets_and_metrics() {
    let a = Upstream::start("a").await;
    let toml = format!(
        "generation = 4\n[[routes]]\nname = \"bot\"\n{}",
        target("a", &a.url(), "eu", "m/bot/1")
    );
    let router = TestRouter::start("eu", &toml).await;
    let r = client().get(router.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r: serde_json::Value = client()
        .get(router.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["generation"], 4);
    let r: serde_json::Value = client()
        .get(router.url("/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["generation"], 4);
    assert_eq!(r["digest"].as_str().unwrap().len(), 64);
    assert_eq!(r["region"], "eu");
    let t = router.targets().await;
    assert_eq!(t["targets"][0]["id"], "a");
    assert_eq!(t["targets"][0]["phase"], "healthy");
    assert_eq!(t["targets"][0]["model_version"], "m/bot/1");

    assert_eq!(router.chat("bot").await.status, 200);
    let m = router.metrics().await;
    assert_eq!(
        metric(&m, "ballast_router_requests_total{route=\"bot\",status=\"200\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ballast_router_attempts_total{route=\"bot\",target=\"a\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "ballast_router_target_latency_seconds_count{target=\"a\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "ballast_router_request_duration_seconds_count{route=\"bot\"}"),
        1.0
    );
    assert_eq!(metric(&m, "ballast_router_snapshot_generation"), 4.0);
    assert!(m.contains("ballast_router_snapshot_age_seconds"));
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let slow = Upstream::start("slow").await;
    slow.set(Mode::Delay(Duration::from_millis(500)));
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}",
        target("slow", &slow.url(), "eu", "m/bot/1")
    );
    let mut router = TestRouter::start("eu", &toml).await;
    let url = router.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&serde_json::json!({"model": "bot"}))
            .send()
            .await
            .unwrap()
    });
    eventually(Duration::from_secs(2), "request in flight", || async {
        slow.hits() == 1
    })
    .await;
    router.begin_shutdown();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["upstream"], "slow");
}
