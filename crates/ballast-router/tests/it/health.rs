//! Health: passive ejection with back-off and half-open return, active checks, panic mode.

use std::time::Duration;

use ballast_router::health::FailureRatePolicy;

use crate::support::{eventually, metric, target, Mode, TestRouter, Upstream};

const REGIONS: &str = "[regions.r0]\nfailover = [\"r1\"]\n";

#[tokio::test]
async fn failing_targets_are_ejected_and_return_after_a_half_open_probe() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    a.set(Mode::Status(500));
    // Its probe path fails too.
    a.set_health(500);
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nhealth = {{ consecutive_failures = 2, base_ejection_ms = 3000, max_ejection_ms = 12000, max_ejection_percent = 50 }}\nfailover = {{ min_healthy_percent = 0 }}\n{}{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
        target("c", &c.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    for _ in 0..2 {
        let r = router.chat("bot").await;
        assert_eq!((r.status, r.attempts()), (200, 2));
    }
    assert_eq!(router.target_phase("a").await, "ejected");
    // Ejected: no more attempts on a.
    for _ in 0..5 {
        let r = router.chat("bot").await;
        assert_eq!((r.status, r.attempts()), (200, 1));
    }
    assert_eq!(a.hits(), 2);
    let m = router.metrics().await;
    assert_eq!(
        metric(&m, "ballast_router_ejections_total{route=\"bot\",target=\"a\"}"),
        1.0,
        "{m}"
    );
    // Still failing when the back-off ends: the probe fails and the ejection doubles.
    eventually(
        Duration::from_secs(10),
        "a re-ejected after a failed probe",
        || async { router.targets().await["targets"][0]["total_ejections"] == 2 },
    )
    .await;
    let t = router.targets().await;
    assert!(t["targets"][0]["ejected_for_ms"].as_u64().unwrap() > 3000, "{t}");
    // It recovers: the next probe brings it back and it serves local traffic again.
    a.set(Mode::Ok);
    a.set_health(200);
    eventually(Duration::from_secs(20), "a healthy again", || async {
        router.target_phase("a").await == "healthy"
    })
    .await;
    let r = router.chat("bot").await;
    assert_eq!((r.upstream().as_str(), r.attempts()), ("a", 1));
}

#[tokio::test]
async fn at_most_the_maximum_share_of_targets_is_ejected() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set(Mode::Status(500));
    b.set(Mode::Status(500));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nhealth = {{ consecutive_failures = 1, base_ejection_ms = 60000, max_ejection_ms = 60000, max_ejection_percent = 50, panic_threshold_percent = 0 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    for _ in 0..4 {
        assert_eq!(router.chat("bot").await.status, 502);
    }
    let t = router.targets().await;
    let phases: Vec<&str> = t["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.iter().filter(|p| **p == "ejected").count(), 1, "{t}");
}

#[tokio::test]
async fn active_checks_take_targets_out_and_bring_them_back() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nfailover = {{ min_healthy_percent = 50, hold_down_ms = 200 }}\nhealth = {{ active = {{ path = \"/health\", interval_ms = 30, timeout_ms = 200, healthy_threshold = 2, unhealthy_threshold = 2 }} }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    assert_eq!(router.chat("bot").await.upstream(), "a");
    a.set_health(503);
    eventually(
        Duration::from_secs(3),
        "a marked down by active checks",
        || async { router.targets().await["targets"][0]["active_down"] == true },
    )
    .await;
    // No request tries a while it is down: no failed attempt at all.
    let before = a.hits();
    for _ in 0..5 {
        let r = router.chat("bot").await;
        assert_eq!((r.upstream().as_str(), r.attempts()), ("b", 1));
    }
    assert_eq!(a.hits(), before);
    a.set_health(200);
    eventually(
        Duration::from_secs(3),
        "a back after healthy checks and the hold-down",
        || async { router.chat("bot").await.upstream() == "a" },
    )
    .await;
}

#[tokio::test]
async fn panic_mode_routes_across_all_targets_when_too_few_look_healthy() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // The health endpoints lie: both look down, but both serve.
    a.set_health(500);
    b.set_health(500);
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nhealth = {{ panic_threshold_percent = 50, active = {{ interval_ms = 20, unhealthy_threshold = 1 }} }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    eventually(Duration::from_secs(3), "both targets marked down", || async {
        let t = router.targets().await;
        t["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["active_down"] == true)
    })
    .await;
    for _ in 0..5 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200);
    }
    let m = router.metrics().await;
    assert!(
        metric(&m, "ballast_router_panic_routing_total{route=\"bot\"}") >= 5.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_target_failing_half_its_requests_is_ejected_by_its_failure_rate() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    // Fails every second request: never two failures in a row.
    a.set(Mode::EveryOther(500));
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nhealth = {{ consecutive_failures = 3, base_ejection_ms = 2000, max_ejection_ms = 4000, max_ejection_percent = 50 }}\nfailover = {{ min_healthy_percent = 0 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start_with("r0", &toml, |c| {
        c.failure_rate = FailureRatePolicy {
            window: Duration::from_secs(30),
            min_requests: 10,
            failure_percent: 40,
        };
    })
    .await;
    let mut sent = 0;
    while router.target("a").await["total_ejections"] == 0 {
        assert!(sent < 30, "a never ejected: {}", router.targets().await);
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200, "{}", r.body);
        sent += 1;
        let t = router.target("a").await;
        assert!(
            t["consecutive_failures"].as_u64().unwrap() < 2,
            "the consecutive rule must never be the one that fires: {t}"
        );
    }
    // The 10th attempt was the 5th failure (5 of 10 > 40 %).
    assert_eq!(a.hits(), 10);
    assert_eq!(sent, 10);
    let m = router.metrics().await;
    assert_eq!(
        metric(&m, "ballast_router_ejections_total{route=\"bot\",target=\"a\"}"),
        1.0,
        "{m}"
    );
    // Ejected: no more attempts on a.
    for _ in 0..3 {
        let r = router.chat("bot").await;
        assert_eq!((r.upstream().as_str(), r.attempts()), ("b", 1));
    }
    assert_eq!(a.hits(), 10);
    // Same return path as the consecutive rule: after the back-off, a half-open probe.
    a.set(Mode::Ok);
    eventually(Duration::from_secs(8), "a healthy again", || async {
        router.target_phase("a").await == "healthy"
    })
    .await;
    let r = router.chat("bot").await;
    assert_eq!((r.upstream().as_str(), r.attempts()), ("a", 1));
}

#[tokio::test]
async fn panic_mode_with_some_healthy_targets_tries_the_ejected_ones_again() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
    ];
    let targets: String = ups
        .iter()
        .zip(["a", "b", "c", "d"])
        .map(|(u, id)| target(id, &u.url(), "r0", "m/bot/1"))
        .collect();
    let toml = format!(
        "generation = 1\n{REGIONS}[[routes]]\nname = \"bot\"\nfailover = {{ min_healthy_percent = 0 }}\nhealth = {{ panic_threshold_percent = 50, active = {{ interval_ms = 20, unhealthy_threshold = 1, healthy_threshold = 1 }} }}\n{targets}",
    );
    let router = TestRouter::start("r0", &toml).await;
    // Two of four look down (50 %, not below the threshold): only the healthy two serve.
    ups[2].set_health(500);
    ups[3].set_health(500);
    eventually(Duration::from_secs(3), "c and d marked down", || {
        down_exactly(&router, &["c", "d"])
    })
    .await;
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200);
        served.insert(r.upstream());
    }
    assert_eq!(served, ["a", "b"].into_iter().map(str::to_owned).collect());
    let before = metric(
        &router.metrics().await,
        "ballast_router_panic_routing_total{route=\"bot\"}",
    );
    assert_eq!(before, 0.0);

    // Three of four look down (25 % < 50 %): panic mode — the down ones (which do serve) get
    // requests again rather than the one healthy target taking everything.
    ups[1].set_health(500);
    eventually(Duration::from_secs(3), "b, c and d marked down", || {
        down_exactly(&router, &["b", "c", "d"])
    })
    .await;
    let mut served = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..40 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200);
        *served.entry(r.upstream()).or_default() += 1;
    }
    assert!(
        served.keys().filter(|k| *k != "a").count() >= 2,
        "panic mode should spread over the down targets too: {served:?}"
    );
    let m = router.metrics().await;
    assert!(
        metric(&m, "ballast_router_panic_routing_total{route=\"bot\"}") >= 40.0,
        "{m}"
    );
}

/// Whether exactly the targets `ids` are marked down by active checks.
async fn down_exactly(router: &TestRouter, ids: &[&str]) -> bool {
    let t = router.targets().await;
    t["targets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| (t["active_down"] == true) == ids.contains(&t["id"].as_str().unwrap()))
}
