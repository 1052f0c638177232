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

#[tokio::test]
async fn serving_on_the_callers_runtime_proxies_answers_own_endpoints_and_drains() {
    let slow = Upstream::start("slow").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}",
        target("slow", &slow.url(), "eu", "m/bot/1")
    );
    let mut router = TestRouter::start_with("eu", &toml, |c| c.workers = 0).await;
    assert_eq!(router.chat("bot").await.status, 200);
    let r = client().get(router.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // An own endpoint keeps its methods: no fall-through to the proxy.
    let r = client().post(router.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // Paths that only look like own endpoints are proxied (no prefix route here: 404).
    let r = client().get(router.url("/healthz/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_route");

    slow.set(Mode::Delay(Duration::from_millis(500)));
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
        slow.hits() == 2
    })
    .await;
    router.begin_shutdown();
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
}

async fn post(router: &TestRouter, path: &str) -> (u16, serde_json::Value) {
    let r = client().post(router.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn drained_targets_get_no_new_requests_while_in_flight_ones_finish() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set(Mode::Delay(Duration::from_millis(500)));
    let toml = format!(
        "generation = 1\n[regions.r0]\nfailover = [\"r1\"]\n[[routes]]\nname = \"bot\"\nfailover = {{ min_healthy_percent = 0 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let router = TestRouter::start("r0", &toml).await;
    assert_eq!(router.target("a").await["drained"], false);
    let url = router.url("/v1/chat/completions");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .json(&serde_json::json!({"model": "bot"}))
            .send()
            .await
            .unwrap()
    });
    eventually(Duration::from_secs(2), "request in flight on a", || async {
        a.hits() == 1
    })
    .await;

    let (status, body) = post(&router, "/admin/targets/a/drain").await;
    assert_eq!(
        (status, &body["drained"], &body["was_drained"]),
        (200, &true.into(), &false.into()),
        "{body}"
    );
    let t = router.target("a").await;
    // Drained is not a health state.
    assert_eq!(
        (&t["drained"], &t["phase"]),
        (&true.into(), &"healthy".into()),
        "{t}"
    );
    for _ in 0..5 {
        let r = router.chat("bot").await;
        assert_eq!((r.status, r.upstream().as_str(), r.attempts()), (200, "b", 1));
    }
    assert_eq!(a.hits(), 1);
    // The request that was under way finishes on a.
    let r = in_flight.await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["upstream"], "a");

    // Every target drained: rather than refuse, every target is tried (panic rules).
    a.set(Mode::Ok);
    assert_eq!(post(&router, "/admin/targets/b/drain").await.0, 200);
    let r = router.chat("bot").await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "a"));
    assert_eq!(a.hits(), 2);

    // Undrained: a (local) serves again.
    let (status, body) = post(&router, "/admin/targets/a/undrain").await;
    assert_eq!((status, &body["drained"]), (200, &false.into()), "{body}");
    assert_eq!(post(&router, "/admin/targets/b/undrain").await.0, 200);
    let r = router.chat("bot").await;
    assert_eq!((r.upstream().as_str(), r.attempts()), ("a", 1));
    assert_eq!(router.target("b").await["drained"], false);

    let (status, body) = post(&router, "/admin/targets/nope/drain").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &"unknown_target".into()),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_cover_requests_latency_attempts_fallbacks_ejections_failovers_and_the_snapshot() {
    let a = Upstream::start("a").await;
    let s = Upstream::start("s").await;
    a.set(Mode::Status(500));
    let toml = format!(
        "generation = 9\n[[routes]]\nname = \"bot\"\nfallbacks = [\"small\"]\nhealth = {{ consecutive_failures = 1, base_ejection_ms = 60000, max_ejection_ms = 60000, panic_threshold_percent = 0 }}\n{}[[routes]]\nname = \"small\"\n{}",
        target("a", &a.url(), "eu", "m/bot/1"),
        target("s", &s.url(), "eu", "m/small/1"),
    );
    let router = TestRouter::start("eu", &toml).await;
    // a fails and is ejected, the fallback route serves; the next request finds the local
    // region below its healthy share and fails over.
    for _ in 0..2 {
        let r = router.chat("bot").await;
        assert_eq!((r.status, r.upstream().as_str()), (200, "s"), "{}", r.body);
    }
    let m = router.metrics().await;
    for name in [
        "ballast_router_requests_total{",
        "ballast_router_request_duration_seconds_bucket{",
        "ballast_router_request_duration_seconds_count{",
        "ballast_router_attempts_total{",
        "ballast_router_target_latency_seconds_bucket{",
        "ballast_router_fallbacks_total{route=\"bot\",served_by=\"small\"}",
        "ballast_router_ejections_total{route=\"bot\",target=\"a\"}",
        "ballast_router_region_failovers_total{route=\"bot\",direction=\"out\"}",
        "ballast_router_snapshot_loads_total{",
        "ballast_router_snapshot_generation ",
        "ballast_router_snapshot_age_seconds ",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "no {name} sample in:\n{m}"
        );
    }
    for name in [
        "ballast_router_retry_budget_exhausted_total",
        "ballast_router_panic_routing_total",
        "ballast_router_stream_errors_total",
    ] {
        assert!(m.contains(&format!("# TYPE {name} counter")), "{name}: {m}");
    }
    assert_eq!(metric(&m, "ballast_router_snapshot_generation "), 9.0);
    assert_eq!(
        metric(
            &m,
            "ballast_router_fallbacks_total{route=\"bot\",served_by=\"small\"}"
        ),
        2.0
    );
}

/// `GET` or `POST` to `path` with an optional bearer token: (status, JSON body).
async fn admin_call(
    router: &TestRouter,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value, Option<String>) {
    let mut req = client().request(method, router.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap(), challenge)
}

#[tokio::test]
async fn with_an_admin_token_admin_endpoints_need_it_and_the_rest_stay_open() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let toml = format!(
        "generation = 1\n[regions.r0]\nfailover = [\"r1\"]\n[[routes]]\nname = \"bot\"\nfailover = {{ min_healthy_percent = 0 }}\n{}{}",
        target("a", &a.url(), "r0", "m/bot/1"),
        target("b", &b.url(), "r1", "m/bot/1"),
    );
    let token = "adm-7f3a9c";
    let router = TestRouter::start_with("r0", &toml, |c| {
        c.admin_token = Some(ballast_router::AdminToken::new(token).unwrap());
    })
    .await;
    use reqwest::Method;
    for (method, path) in [
        (Method::GET, "/admin/targets"),
        (Method::POST, "/admin/targets/a/drain"),
        (Method::POST, "/admin/targets/a/undrain"),
        (Method::POST, "/admin/targets/nope/drain"),
    ] {
        for wrong in [None, Some("adm-7f3a9d"), Some("adm-7f3a9c0"), Some("")] {
            let (status, body, challenge) = admin_call(&router, method.clone(), path, wrong).await;
            assert_eq!(status, 401, "{method} {path} {wrong:?}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
        }
    }
    // The refused drain changed nothing.
    let (status, body, _) = admin_call(&router, Method::GET, "/admin/targets", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["targets"][0]["id"], "a");
    assert_eq!(body["targets"][0]["drained"], false, "{body}");
    assert_eq!(router.chat("bot").await.upstream(), "a");

    let (status, body, _) = admin_call(&router, Method::POST, "/admin/targets/a/drain", Some(token)).await;
    assert_eq!((status, &body["drained"]), (200, &true.into()), "{body}");
    let r = router.chat("bot").await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "b"));

    // Liveness, readiness, metrics and the route summary need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/routes"] {
        let r = client().get(router.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn without_an_admin_token_loopback_clients_reach_admin_endpoints() {
    let a = Upstream::start("a").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}",
        target("a", &a.url(), "eu", "m/bot/1")
    );
    let router = TestRouter::start("eu", &toml).await;
    // Tests connect over loopback only; the refusal of other peers is unit-tested
    // (`admin::tests`). A bearer token is not needed, and an unexpected one is ignored.
    let (status, body, _) = admin_call(&router, reqwest::Method::GET, "/admin/targets", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = admin_call(&router, reqwest::Method::GET, "/admin/targets", Some("x")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn readyz_is_unavailable_without_routes() {
    let router = TestRouter::start("eu", "generation = 2\n").await;
    let r = client().get(router.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&body["ready"], &body["reason"], &body["generation"]),
        (&false.into(), &"no_routes".into(), &2.into()),
        "{body}"
    );
}

#[tokio::test]
async fn readyz_is_unavailable_while_the_router_shuts_down() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let a = Upstream::start("a").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}",
        target("a", &a.url(), "eu", "m/bot/1")
    );
    let mut router = TestRouter::start("eu", &toml).await;
    let r = client().get(router.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A load balancer's probe that is under way when shutdown starts: its head is half sent.
    let mut probe = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: r\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    router.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    probe.write_all(b"\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), probe.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    let body: serde_json::Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        (&body["ready"], &body["reason"]),
        (&false.into(), &"shutting_down".into()),
        "{body}"
    );
}
