//! The region drill: three regions of two backends under steady load; the local region dies and
//! comes back. No client request fails, traffic leaves the dead region within a second, and
//! returns only after the hold-down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{client, metric, target, TestRouter, Upstream};

#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    status: u16,
    region: String,
    attempts: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_drill_fails_over_without_errors_and_fails_back_after_the_hold_down() {
    let mut ups = Vec::new();
    let mut targets = String::new();
    for region in ["r0", "r1", "r2"] {
        for i in 0..2 {
            let id = format!("{region}-{i}");
            let u = Upstream::start(&id).await;
            targets.push_str(&target(&id, &u.url(), region, "m/bot/1"));
            ups.push(u);
        }
    }
    let hold_down = Duration::from_millis(1500);
    let toml = format!(
        "generation = 1\n[regions.r0]\nfailover = [\"r1\", \"r2\"]\n[[routes]]\nname = \"bot\"\n\
         timeouts = {{ connect_ms = 200, first_byte_ms = 2000, deadline_ms = 5000 }}\n\
         retry = {{ max_attempts = 4, min_retries_per_second = 50 }}\n\
         health = {{ consecutive_failures = 2, base_ejection_ms = 100, max_ejection_ms = 400 }}\n\
         failover = {{ min_healthy_percent = 50, hold_down_ms = {} }}\n{targets}",
        hold_down.as_millis()
    );
    let router = Arc::new(TestRouter::start("r0", &toml).await);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let origin = Instant::now();
    let stop_at = origin + Duration::from_secs(12);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let router = Arc::clone(&router);
        let samples = Arc::clone(&samples);
        let done = Arc::clone(&done);
        workers.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < stop_at && !done.load(std::sync::atomic::Ordering::Relaxed) {
                let at = origin.elapsed();
                let r = c
                    .post(router.url("/v1/chat/completions"))
                    .json(&serde_json::json!({"model": "bot"}))
                    .send()
                    .await;
                let s = match r {
                    Ok(r) => Sample {
                        at,
                        status: r.status().as_u16(),
                        region: r
                            .headers()
                            .get("x-ballast-region")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default(),
                        attempts: r
                            .headers()
                            .get("x-ballast-attempts")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(0),
                    },
                    Err(_) => Sample {
                        at,
                        status: 0,
                        region: String::new(),
                        attempts: 0,
                    },
                };
                samples.lock().unwrap().push(s);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let wait_until = |t: Duration| async move {
        let now = origin.elapsed();
        if t > now {
            tokio::time::sleep(t - now).await;
        }
    };
    wait_until(Duration::from_millis(700)).await;
    let killed_at = origin.elapsed();
    ups[0].kill();
    ups[1].kill();
    wait_until(killed_at + Duration::from_millis(2500)).await;
    let restored_at = origin.elapsed();
    ups[0].restore().await;
    ups[1].restore().await;
    // Run until r0 serves again (bounded by stop_at).
    loop {
        let back = samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at > restored_at && s.region == "r0")
            .count();
        if back >= 20 || Instant::now() >= stop_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let samples = samples.lock().unwrap().clone();
    assert!(samples.len() > 200, "too little load: {}", samples.len());
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(failed.is_empty(), "failed client requests: {failed:?}");
    // Before the kill, the local region serves (requests still in flight at the kill may have
    // been retried elsewhere, hence the margin).
    let before: Vec<_> = samples
        .iter()
        .filter(|s| s.at + Duration::from_millis(100) < killed_at)
        .collect();
    assert!(before.len() > 20);
    assert!(before.iter().all(|s| s.region == "r0" && s.attempts == 1));
    // One second after the kill, nothing goes near r0 any more (no attempt wasted on it).
    let late: Vec<_> = samples
        .iter()
        .filter(|s| s.at > killed_at + Duration::from_secs(1) && s.at < restored_at)
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|s| s.region != "r0" && s.attempts == 1),
        "{:?}",
        late.iter().find(|s| s.region == "r0" || s.attempts != 1)
    );
    assert!(
        late.iter().all(|s| s.region == "r1"),
        "the nearest region takes the traffic"
    );
    // After the restore, r0 serves again only after the hold-down.
    let first_back = samples
        .iter()
        .filter(|s| s.at > restored_at && s.region == "r0")
        .map(|s| s.at)
        .min()
        .expect("traffic never returned to r0");
    assert!(
        first_back >= restored_at + hold_down,
        "back after {:?}",
        first_back - restored_at
    );
    assert!(
        first_back <= restored_at + hold_down + Duration::from_secs(3),
        "back after {:?}",
        first_back - restored_at
    );
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "ballast_router_region_failovers_total{route=\"bot\",direction=\"out\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "ballast_router_region_failovers_total{route=\"bot\",direction=\"back\"}"
        ),
        1.0,
        "{m}"
    );
}

/// The local region r0 has four targets, r1 one; r0 fails over below 50 % healthy.
#[tokio::test]
async fn a_partly_degraded_local_region_spills_only_below_its_healthy_share() {
    let locals = [
        Upstream::start("l0").await,
        Upstream::start("l1").await,
        Upstream::start("l2").await,
        Upstream::start("l3").await,
    ];
    let remote = Upstream::start("r1-a").await;
    let mut targets: String = locals
        .iter()
        .enumerate()
        .map(|(i, u)| target(&format!("l{i}"), &u.url(), "r0", "m/bot/1"))
        .collect();
    targets.push_str(&target("r1-a", &remote.url(), "r1", "m/bot/1"));
    let toml = format!(
        "generation = 1\n[regions.r0]\nfailover = [\"r1\"]\n[[routes]]\nname = \"bot\"\n\
         failover = {{ min_healthy_percent = 50, hold_down_ms = 60000 }}\n\
         health = {{ panic_threshold_percent = 0, active = {{ interval_ms = 20, unhealthy_threshold = 1, healthy_threshold = 1 }} }}\n{targets}"
    );
    let router = TestRouter::start("r0", &toml).await;
    // Two of four local targets down: 50 %, not below the threshold — no spill.
    locals[0].set_health(500);
    locals[1].set_health(500);
    crate::support::eventually(Duration::from_secs(3), "two local targets down", || async {
        down_count(&router).await == 2
    })
    .await;
    for _ in 0..30 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ballast-region"), "r0", "{}", r.body);
        assert!(["l2", "l3"].contains(&r.upstream().as_str()), "{}", r.upstream());
    }
    assert_eq!(remote.hits(), 0);
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "ballast_router_region_failovers_total{route=\"bot\",direction=\"out\"}"
        ),
        0.0
    );

    // Three of four down: 25 % < 50 % — traffic spills to r1 though one local target is up.
    locals[2].set_health(500);
    crate::support::eventually(Duration::from_secs(3), "three local targets down", || async {
        down_count(&router).await == 3
    })
    .await;
    for _ in 0..10 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            (r.header("x-ballast-region").as_str(), r.upstream().as_str()),
            ("r1", "r1-a"),
            "{}",
            r.body
        );
    }
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "ballast_router_region_failovers_total{route=\"bot\",direction=\"out\"}"
        ),
        1.0
    );
}

/// How many targets active checks mark down.
async fn down_count(router: &TestRouter) -> usize {
    let t = router.targets().await;
    t["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["active_down"] == true)
        .count()
}
