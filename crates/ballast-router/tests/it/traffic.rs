//! Traffic shaping: weighted canary splits and sticky sessions.

use std::collections::{HashMap, HashSet};

use crate::support::{target, TestRouter, Upstream};

#[tokio::test]
async fn canary_split_and_sticky_sessions() {
    let v1a = Upstream::start("v1a").await;
    let v1b = Upstream::start("v1b").await;
    let v2 = Upstream::start("v2").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\nsplit = [{{ model_version = \"m/bot/1\", weight = 90 }}, {{ model_version = \"m/bot/2\", weight = 10 }}]\n{}{}{}",
        target("v1a", &v1a.url(), "eu", "m/bot/1"),
        target("v1b", &v1b.url(), "eu", "m/bot/1"),
        target("v2", &v2.url(), "eu", "m/bot/2"),
    );
    let router = TestRouter::start("eu", &toml).await;
    let mut by_version: HashMap<String, u32> = HashMap::new();
    for _ in 0..400 {
        let r = router.chat("bot").await;
        assert_eq!(r.status, 200);
        *by_version.entry(r.header("x-ballast-model-version")).or_default() += 1;
    }
    let canary = by_version.get("m/bot/2").copied().unwrap_or(0);
    assert!(
        (16..=72).contains(&canary),
        "canary got {canary}/400: {by_version:?}"
    );
    assert!(
        v1a.hits() > 100 && v1b.hits() > 100,
        "v1 traffic spreads over its targets"
    );

    // A conversation stays on one target.
    let first = router
        .chat_with("bot", &[("x-session-id", "conv-1")])
        .await
        .header("x-ballast-target");
    for _ in 0..20 {
        assert_eq!(
            router
                .chat_with("bot", &[("x-session-id", "conv-1")])
                .await
                .header("x-ballast-target"),
            first
        );
    }
    // Different conversations spread over versions and targets.
    let mut seen = HashSet::new();
    for i in 0..100 {
        seen.insert(
            router
                .chat_with("bot", &[("x-session-id", &format!("conv-{i}"))])
                .await
                .header("x-ballast-target"),
        );
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn a_five_percent_canary_gets_five_percent_of_many_requests() {
    use futures_util::StreamExt as _;
    let v1 = Upstream::start("v1").await;
    let v2 = Upstream::start("v2").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\nsplit = [{{ model_version = \"m/bot/1\", weight = 95 }}, {{ model_version = \"m/bot/2\", weight = 5 }}]\n{}{}",
        target("v1", &v1.url(), "eu", "m/bot/1"),
        target("v2", &v2.url(), "eu", "m/bot/2"),
    );
    let router = TestRouter::start("eu", &toml).await;
    const N: u32 = 4_000;
    // One client for all (building one per request costs more than the request).
    let client = crate::support::client();
    let url = router.url("/v1/chat/completions");
    let body = serde_json::json!({"model": "bot", "messages": [{"role": "user", "content": "hi"}]});
    let canary: u32 = futures_util::stream::iter(0..N)
        .map(|_| async {
            let r = client.post(&url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let canary = r.headers()["x-ballast-model-version"] == "m/bot/2";
            r.bytes().await.unwrap();
            u32::from(canary)
        })
        .buffer_unordered(16)
        .fold(0, |a, b| async move { a + b })
        .await;
    // Binomial(4000, 0.05): mean 200, standard deviation 13.8; the two-sided 99.99 % interval
    // (±3.89 σ) is [146, 254].
    assert!((146..=254).contains(&canary), "canary got {canary}/{N}");
    assert_eq!(u64::from(canary), v2.hits());
    assert_eq!(u64::from(N - canary), v1.hits());
}

#[tokio::test]
async fn adding_a_target_moves_only_the_sessions_it_takes_over() {
    let ups = [
        Upstream::start("t0").await,
        Upstream::start("t1").await,
        Upstream::start("t2").await,
        Upstream::start("t3").await,
    ];
    let routes = |n: usize, generation: u32| {
        let mut toml = format!("generation = {generation}\n[[routes]]\nname = \"bot\"\n");
        for (i, u) in ups.iter().take(n).enumerate() {
            toml.push_str(&target(&format!("t{i}"), &u.url(), "eu", "m/bot/1"));
        }
        toml
    };
    let router = TestRouter::start("eu", &routes(3, 1)).await;
    let client = crate::support::client();
    const SESSIONS: usize = 300;
    let mut before = Vec::new();
    for i in 0..SESSIONS {
        before.push(session_target(&client, &router, i).await);
    }
    std::fs::write(&router.routes_path, routes(4, 2)).unwrap();
    assert!(router.handle.reload().is_ok());
    let mut moved = 0;
    for (i, was) in before.iter().enumerate() {
        let now = session_target(&client, &router, i).await;
        if &now != was {
            moved += 1;
            assert_eq!(now, "t3", "conv-{i} moved from {was} to an old target");
        }
    }
    // Rendezvous hashing: the new target takes about a quarter of the sessions (75 of 300,
    // σ 7.5); everything else stays where it was. A modulo hash would move about three quarters.
    assert!(
        (30..=120).contains(&moved),
        "{moved} of {SESSIONS} sessions moved"
    );
}

/// The target that serves session `conv-{i}`.
async fn session_target(client: &reqwest::Client, router: &TestRouter, i: usize) -> String {
    let r = client
        .post(router.url("/v1/chat/completions"))
        .header("x-session-id", format!("conv-{i}"))
        .json(&serde_json::json!({"model": "bot", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-ballast-target"].to_str().unwrap().to_owned()
}
