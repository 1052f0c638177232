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
