//! Fallback: which failures move on, which go back unchanged, timeouts, Retry-After, fallback
//! routes, retry budget, and the final failure listing every attempt.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::support::{client, closed_port_url, eventually, metric, target, Mode, TestRouter, Upstream};

/// Regions r0 (local), r1, r2, r3 in that order, so the attempt order is known.
const REGIONS: &str = "[regions.r0]\nfailover = [\"r1\", \"r2\", \"r3\"]\n";

#[tokio::test]
async fn server_errors_move_on_and_client_errors_come_back_unchanged() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set(Mode::Status(500));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nhealth = {{ consecutive_failures = 100 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    let r = router.chat("bot").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream(), "b");
    assert_eq!(r.attempts(), 2);
    assert_eq!(r.header("x-ballast-region"), "r1");

    a.set(Mode::Status(404));
    let r = router.chat("bot").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.attempts(), 1);
    assert_eq!(r.header("x-upstream"), "a");
    assert_eq!(r.json()["status"], 404, "the upstream's own body comes back");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn refused_reset_hung_and_stalled_targets_are_skipped() {
    let reset = Upstream::start("reset").await;
    reset.set(Mode::Reset);
    let hang = Upstream::start("hang").await;
    hang.set(Mode::Hang);
    let good = Upstream::start("good").await;
    let refused = closed_port_url().await;
    let toml = format!(
        "generation = 1\n[regions.r0]\nfailover = [\"r1\", \"r2\", \"r3\", \"r4\"]\n[[routes]]\nname = \"bot\"\ntimeouts = {{ connect_ms = 300, first_byte_ms = 300, deadline_ms = 5000 }}\nretry = {{ max_attempts = 5 }}\nhealth = {{ consecutive_failures = 100 }}\n{}{}{}{}",
        target("refused", &refused, "r0", "m/bot/1"),
        target("reset", &reset.url(), "r1", "m/bot/1"),
        target("hang", &hang.url(), "r2", "m/bot/1"),
        target("good", &good.url(), "r3", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    let started = Instant::now();
    let r = router.chat("bot").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream(), "good");
    assert_eq!(r.attempts(), 4);
    assert!(started.elapsed() < Duration::from_secs(3));
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "ballast_router_attempts_total{route=\"bot\",target=\"refused\",outcome=\"connect\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ballast_router_attempts_total{route=\"bot\",target=\"reset\",outcome=\"upstream_io\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ballast_router_attempts_total{route=\"bot\",target=\"hang\",outcome=\"first_byte_timeout\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn rate_limited_targets_are_skipped_until_retry_after() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set(Mode::RateLimited(1));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nfailover = {{ min_healthy_percent = 0 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    let r = router.chat("bot").await;
    assert_eq!((r.status, r.attempts(), r.upstream().as_str()), (200, 2, "b"));
    let t0 = Instant::now();
    // While the Retry-After lasts, a is not tried at all.
    while t0.elapsed() < Duration::from_millis(700) {
        let r = router.chat("bot").await;
        assert_eq!((r.status, r.attempts()), (200, 1));
        assert_eq!(r.upstream(), "b");
    }
    assert_eq!(a.hits(), 1);
    a.set(Mode::Ok);
    eventually(
        Duration::from_secs(3),
        "a serves again after Retry-After",
        || async { router.chat("bot").await.upstream() == "a" },
    )
    .await;
    assert!(t0.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_retry_after_date_keeps_the_target_out_until_then() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // HTTP dates have whole seconds: "until" lies between 2 and 3 s from now.
    let until = std::time::SystemTime::now() + Duration::from_secs(3);
    let until_secs = until.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let until_whole = std::time::UNIX_EPOCH + Duration::from_secs(until_secs);
    a.set(Mode::RateLimitedUntil(until));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nfailover = {{ min_healthy_percent = 0 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    let r = router.chat("bot").await;
    assert_eq!((r.status, r.attempts(), r.upstream().as_str()), (200, 2, "b"));
    a.set(Mode::Ok);
    // Until the date, a is left out of every plan.
    let out_until = until_whole - Duration::from_millis(200);
    while std::time::SystemTime::now() < out_until {
        let r = router.chat("bot").await;
        assert_eq!((r.status, r.attempts(), r.upstream().as_str()), (200, 1, "b"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.hits(), 1);
    eventually(
        Duration::from_secs(3),
        "a serves again after the date",
        || async { router.chat("bot").await.upstream() == "a" },
    )
    .await;
    assert!(std::time::SystemTime::now() >= until_whole - Duration::from_millis(50));
}

#[tokio::test]
async fn fallback_routes_serve_when_every_target_fails_with_the_model_they_know() {
    let big = Upstream::start("big").await;
    let small = Upstream::start("small").await;
    big.set(Mode::Status(503));
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\nfallbacks = [\"bot-small\"]\n{}\n[[routes]]\nname = \"bot-small\"\n{}upstream_model = \"tiny-v1\"\n",
        target("big", &big.url(), "eu", "m/bot/3"),
        target("small", &small.url(), "us", "m/bot-small/1"),
    );
    let router = TestRouter::start("eu", &toml).await;
    let r = router.chat("bot").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ballast-route"), "bot-small");
    assert_eq!(r.header("x-ballast-model-version"), "m/bot-small/1");
    assert_eq!(r.attempts(), 2);
    assert_eq!(r.json()["model"], "tiny-v1");
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "ballast_router_fallbacks_total{route=\"bot\",served_by=\"bot-small\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn final_failures_list_every_attempt_with_502_or_504() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set(Mode::Status(500));
    b.set(Mode::RateLimited(0));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\ntimeouts = {{ deadline_ms = 400 }}\nhealth = {{ consecutive_failures = 100 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    let r = router.chat("bot").await;
    assert_eq!(r.status, 502, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "upstream_failed");
    assert_eq!(r.header("x-ballast-route"), "bot");
    assert_eq!(r.attempts(), 2);
    assert_eq!(e["source"], "upstream");
    assert_eq!(e["attempts"][0]["target"], "a");
    assert_eq!(e["attempts"][0]["error"], "upstream_status");
    assert_eq!(e["attempts"][0]["status"], 500);
    assert_eq!(e["attempts"][1]["target"], "b");
    assert_eq!(e["attempts"][1]["error"], "rate_limited");
    assert_eq!(e["attempts"][1]["status"], 429);

    a.set(Mode::Hang);
    b.set(Mode::Hang);
    let started = Instant::now();
    let r = router.chat("bot").await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "deadline_exceeded");
    assert_eq!(r.json()["error"]["attempts"][0]["error"], "deadline");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn streams_fail_over_before_the_first_byte_only() {
    let stall = Upstream::start("stall").await;
    let good = Upstream::start("good").await;
    stall.set(Mode::StallBody(Duration::from_secs(5)));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\ntimeouts = {{ first_byte_ms = 300 }}\nhealth = {{ consecutive_failures = 100 }}\n{}{}",
        target("stall", &stall.url(), "r0", "m/bot/1"),
        target("good", &good.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    // Headers came, the first byte did not: still safe to fail over.
    let r = router.chat("bot").await;
    assert_eq!((r.status, r.attempts(), r.upstream().as_str()), (200, 2, "good"));

    // The stream broke after its first byte reached the client: no failover, the client sees
    // the break.
    stall.set(Mode::CutMidStream);
    let resp = client()
        .post(router.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "bot", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-target"], "stall");
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    let mut broke = false;
    while let Some(chunk) = stream.next().await {
        if chunk.is_err() {
            broke = true;
        }
    }
    assert!(broke, "the client must see the stream break");
    assert_eq!(good.hits(), 1);
    eventually(Duration::from_secs(2), "stream error counted", || async {
        metric(
            &router.metrics().await,
            "ballast_router_stream_errors_total{target=\"stall\"}",
        ) == 1.0
    })
    .await;
}

#[tokio::test]
async fn the_retry_budget_stops_retry_storms() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set(Mode::Status(500));
    b.set(Mode::Status(500));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nretry = {{ max_attempts = 2, budget_percent = 20, min_retries_per_second = 0, window_ms = 10000 }}\nhealth = {{ consecutive_failures = 1000 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    // No ejection at all (neither rule), so every request reaches the upstreams.
    let router = TestRouter::start_with("r0", &toml, |c| {
        c.failure_rate.failure_percent = 100;
    })
    .await;
    let mut refused = 0;
    for _ in 0..50 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 502);
        if r.json()["error"]["code"] == "retry_budget_exhausted" {
            refused += 1;
        }
    }
    let upstream_calls = a.hits() + b.hits();
    // 50 requests, at most 20 % of them retried.
    assert!(upstream_calls <= 60, "{upstream_calls} upstream calls");
    assert!(refused >= 35, "{refused} refused retries");
    let m = router.metrics().await;
    assert!(metric(&m, "ballast_router_retry_budget_exhausted_total{route=\"bot\"}") >= 35.0);
}
