//! Proxying: OpenAI routes by model, prefix routes, headers, streaming bodies.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::support::{client, metric, target, Mode, TestRouter, Upstream};

#[tokio::test]
async fn chat_completion_is_routed_by_model_and_says_what_served() {
    let bot = Upstream::start("bot").await;
    let emb = Upstream::start("emb").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"support-bot\"\n{}\n[[routes]]\nname = \"embedder\"\n{}",
        target("bot-a", &bot.url(), "eu", "acme/support-bot/3"),
        target("emb-a", &format!("{}/base/", emb.url()), "us", "acme/embedder/1"),
    );
    let router = TestRouter::start("eu", &toml).await;

    let r = router
        .chat_with(
            "support-bot",
            &[("x-custom", "kept"), ("connection", "x-drop"), ("x-drop", "1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream(), "bot");
    assert_eq!(r.header("x-ballast-route"), "support-bot");
    assert_eq!(r.header("x-ballast-target"), "bot-a");
    assert_eq!(r.header("x-ballast-model-version"), "acme/support-bot/3");
    assert_eq!(r.header("x-ballast-region"), "eu");
    assert_eq!(r.header("x-ballast-attempts"), "1");
    assert_eq!(r.header("x-upstream"), "bot");
    {
        let seen = bot.seen.lock().unwrap();
        assert_eq!(seen.paths[0], "/v1/chat/completions");
        assert_eq!(seen.headers[0]["x-custom"], "kept");
        assert!(
            !seen.headers[0].contains_key("x-drop"),
            "headers named by Connection are hop-by-hop"
        );
        let body: serde_json::Value = serde_json::from_slice(&seen.bodies[0]).unwrap();
        assert_eq!(body["model"], "support-bot");
        assert_eq!(body["messages"][0]["content"], "hi");
    }

    let r = client()
        .post(router.url("/v1/embeddings?x=1"))
        .json(&serde_json::json!({"model": "embedder", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ballast-region"], "us");
    assert_eq!(emb.seen.lock().unwrap().paths[0], "/base/v1/embeddings?x=1");
}

#[tokio::test]
async fn unknown_models_and_bad_bodies_get_clear_errors() {
    let bot = Upstream::start("bot").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}",
        target("a", &bot.url(), "eu", "m/bot/1")
    );
    let router = TestRouter::start("eu", &toml).await;
    let r = router.chat("nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_route");
    assert_eq!(r.json()["error"]["source"], "client");
    let r = client()
        .post(router.url("/v1/completions"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    let r = client().get(router.url("/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(bot.hits(), 0);
}

#[tokio::test]
async fn prefix_routes_strip_their_prefix_and_keep_method_and_query() {
    let ocr = Upstream::start("ocr").await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"ocr\"\nkind = \"prefix\"\nprefix = \"/ocr\"\nstrip_prefix = true\n{}",
        target("ocr-a", &format!("{}/v2", ocr.url()), "eu", "acme/ocr/7")
    );
    let router = TestRouter::start("eu", &toml).await;
    let r = client()
        .put(router.url("/ocr/pages/1?lang=fr"))
        .body(vec![7u8; 3000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ballast-route"], "ocr");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/v2/pages/1?lang=fr");
    assert_eq!(body["len"], 3000);
    // Segment boundaries: /ocrx is not under /ocr.
    let r = client().get(router.url("/ocrx")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn server_sent_events_stream_through_as_they_come() {
    let sse = Upstream::start("sse").await;
    sse.set(Mode::Sse(5, Duration::from_millis(150)));
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}",
        target("a", &sse.url(), "eu", "m/bot/1")
    );
    let router = TestRouter::start("eu", &toml).await;
    let started = Instant::now();
    let r = client()
        .post(router.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": "bot", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut stream = r.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    let mut all = first.to_vec();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    let text = String::from_utf8(all).unwrap();
    assert_eq!(text.matches("data:").count(), 5, "{text}");
    // The first event arrived long before the last one was produced (no buffering).
    assert!(total >= Duration::from_millis(600), "{total:?}");
    assert!(
        first_at + Duration::from_millis(400) < total,
        "first {first_at:?}, total {total:?}"
    );
}

#[tokio::test]
async fn small_bodies_are_replayed_and_large_ones_are_not_retried_after_they_flowed() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    bad.set(Mode::Status(503));
    let toml = format!(
        "generation = 1\n[regions.eu]\nfailover = [\"us\"]\n[[routes]]\nname = \"up\"\nkind = \"prefix\"\nprefix = \"/up\"\nretry = {{ replay_buffer_bytes = 1024 }}\nhealth = {{ consecutive_failures = 100 }}\n{}{}",
        target("bad", &bad.url(), "eu", "m/up/1"),
        target("good", &good.url(), "us", "m/up/1"),
    );
    let router = TestRouter::start("eu", &toml).await;
    // Small: replayed to the second target byte for byte.
    let small = vec![1u8; 1000];
    let r = client()
        .post(router.url("/up/x"))
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ballast-attempts"], "2");
    assert_eq!(good.seen.lock().unwrap().bodies[0].as_ref(), small.as_slice());
    // Large (streamed, not from a fixed buffer): the first target consumed it, no retry.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..64).map(|_| Ok(vec![2u8; 1024])).collect();
    let r = client()
        .post(router.url("/up/x"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-ballast-attempts"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["attempts"][0]["target"], "bad");
    assert_eq!(bad.seen.lock().unwrap().bodies.last().unwrap().len(), 64 * 1024);
    assert_eq!(good.hits(), 1);
}

#[tokio::test]
async fn a_large_body_goes_to_the_next_target_when_the_first_refuses_the_connection() {
    let refused = crate::support::closed_port_url().await;
    let good = Upstream::start("good").await;
    let toml = format!(
        "generation = 1\n[regions.eu]\nfailover = [\"us\"]\n[[routes]]\nname = \"up\"\nkind = \"prefix\"\nprefix = \"/up\"\nretry = {{ replay_buffer_bytes = 1024 }}\nhealth = {{ consecutive_failures = 100 }}\n{}{}",
        target("refused", &refused, "eu", "m/up/1"),
        target("good", &good.url(), "us", "m/up/1"),
    );
    let router = TestRouter::start("eu", &toml).await;
    // 64 KiB streamed: nothing of it went anywhere when the first connection was refused.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..64u8).map(|i| Ok(vec![i; 1024])).collect();
    let expected: Vec<u8> = (0..64u8).flat_map(|i| vec![i; 1024]).collect();
    let r = client()
        .post(router.url("/up/x"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ballast-attempts"], "2");
    assert_eq!(r.headers()["x-ballast-target"], "good");
    assert_eq!(good.seen.lock().unwrap().bodies[0].as_ref(), expected.as_slice());
}

#[tokio::test]
async fn a_stream_that_goes_quiet_is_cut_after_the_idle_timeout_and_counts_against_the_target() {
    let quiet = Upstream::start("quiet").await;
    quiet.set(Mode::SseThenStall(2));
    let steady = Upstream::start("steady").await;
    // Gaps shorter than the idle timeout.
    steady.set(Mode::Sse(4, Duration::from_millis(100)));
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"bot\"\n{}[[routes]]\nname = \"steady\"\n{}",
        target("q", &quiet.url(), "eu", "m/bot/1"),
        target("s", &steady.url(), "eu", "m/steady/1"),
    );
    let router = TestRouter::start_with("eu", &toml, |c| {
        c.stream_idle_timeout = Duration::from_millis(400);
    })
    .await;

    let read_all = |model: &'static str| {
        let url = router.url("/v1/chat/completions");
        async move {
            let r = client()
                .post(url)
                .json(&serde_json::json!({"model": model, "stream": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let mut stream = r.bytes_stream();
            let mut text = String::new();
            let mut cut = false;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            (text, cut)
        }
    };

    let started = Instant::now();
    let (text, cut) = tokio::time::timeout(Duration::from_secs(10), read_all("bot"))
        .await
        .expect("the idle stream was never cut");
    let took = started.elapsed();
    assert!(cut, "the client must see a cut stream: {text}");
    assert_eq!(text.matches("data:").count(), 2, "{text}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    let m = router.metrics().await;
    assert_eq!(
        metric(&m, "ballast_router_stream_errors_total{target=\"q\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(router.target("q").await["consecutive_failures"], 1);

    // A stream that keeps talking is not cut, however long it lasts in total.
    let (text, cut) = tokio::time::timeout(Duration::from_secs(10), read_all("steady"))
        .await
        .unwrap();
    assert!(!cut, "{text}");
    assert_eq!(text.matches("data:").count(), 4, "{text}");
}

/// A raw HTTP/1.1 upstream that answers each request `200 {}` and counts the connections it
/// accepted; with `close_after_answer` it closes every connection right after its answer (as a
/// backend that drops idle keep-alive connections does), without saying so in the headers.
async fn raw_upstream(
    close_after_answer: bool,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let count = std::sync::Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then content-length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    let answer =
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if close_after_answer {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted, task)
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_a_closed_one_is_never_reused() {
    use std::sync::atomic::Ordering;
    let (keep_url, keep_conns, keep_task) = raw_upstream(false).await;
    let (close_url, close_conns, close_task) = raw_upstream(true).await;
    let toml = format!(
        "generation = 1\n[[routes]]\nname = \"keep\"\n{}\n[[routes]]\nname = \"close\"\n{}",
        target("keep-a", &keep_url, "eu", "m/keep/1"),
        target("close-a", &close_url, "eu", "m/close/1"),
    );
    // One worker: every request of this test goes through the same pool shard.
    let router = TestRouter::start_with("eu", &toml, |c| c.workers = 1).await;
    for _ in 0..6 {
        let r = router.chat("keep").await;
        assert_eq!((r.status, r.attempts()), (200, 1), "{}", r.body);
    }
    // Sequential requests reuse one kept-alive connection.
    assert_eq!(keep_conns.load(Ordering::SeqCst), 1);
    for i in 0..6 {
        let r = router.chat("close").await;
        assert_eq!((r.status, r.attempts()), (200, 1), "request {i}: {}", r.body);
    }
    // Each connection the upstream closed was dropped, not reused: a new one per request, and
    // no failure was counted against the target.
    assert_eq!(close_conns.load(Ordering::SeqCst), 6);
    let m = router.metrics().await;
    assert_eq!(
        metric(
            &m,
            "ballast_router_attempts_total{route=\"close\",target=\"close-a\",outcome=\"ok\"}"
        ),
        6.0,
        "{m}"
    );
    assert_eq!(router.target_phase("close-a").await, "healthy");
    keep_task.abort();
    close_task.abort();
}
