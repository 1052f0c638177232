//! The registry source: a real registry (`ballast_server::Server` on 127.0.0.1:0) feeding a
//! real router in front of fake upstreams. A promotion shifts traffic; a dead registry leaves
//! the router serving; a router restarted while the registry is down serves from
//! last-known-good; a change made after the registry returns reaches the router.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ballast_router::{RegistryToken, Router, RouterConfig, RouterHandle, StartError};
use serde_json::{json, Value};

use crate::support::{client, eventually, Upstream};

/// A registry server on loopback, restartable on the same address and data directory. It runs
/// on a runtime of its own, so it can be killed abruptly: the runtime is dropped with every
/// task on it (listener, open connections and long-polls under way, background work).
struct Registry {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Registry {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            runtime: None,
        };
        r.run().await;
        r
    }

    async fn run(&mut self) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (addr, data_dir) = (self.addr, self.dir.path().to_owned());
        runtime.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let server = loop {
                let config = ballast_server::Config {
                    listen: addr,
                    data_dir: data_dir.clone(),
                    shutdown_grace_secs: 1,
                    ..ballast_server::Config::default()
                };
                match ballast_server::Server::bind(config).await {
                    Ok(s) => break s,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "registry cannot bind {addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            };
            let _ = bound_tx.send(server.local_addr().unwrap());
            // Serves until its runtime is dropped.
            let _ = server.serve(std::future::pending()).await;
        });
        self.addr = tokio::time::timeout(Duration::from_secs(20), bound_rx)
            .await
            .expect("registry did not start")
            .expect("registry failed to start");
        self.runtime = Some(runtime);
    }

    /// Abrupt stop: the listener closes and every connection (long-polls under way included)
    /// is cut with no answer, as when the process dies.
    async fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        // The address is free again once the listener is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the registry still accepts connections"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The admin token the registry wrote on its first start (none when it runs without auth).
    fn token(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("admin.token"))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token() {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.authed(client().request(method, format!("{}{path}", self.base())));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn sealed_version(&self, content: &str) -> u64 {
        let v = self.post("/v1/models/acme/bot/versions", json!({})).await;
        let n = v["version"].as_u64().unwrap();
        let r = self
            .authed(client().put(format!(
                "{}/v1/models/acme/bot/versions/{n}/files/model.bin",
                self.base()
            )))
            .body(content.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "upload: {}", r.status());
        self.post(&format!("/v1/models/acme/bot/versions/{n}/seal"), json!({}))
            .await;
        n
    }

    async fn promote(&self, n: u64) {
        for stage in ["staging", "production"] {
            self.post(
                &format!("/v1/models/acme/bot/versions/{n}/stage"),
                json!({ "stage": stage }),
            )
            .await;
        }
    }

    /// Records that version `n` of `acme/bot` is served by `up` in `region`.
    async fn deploy(&self, n: u64, region: &str, up: &Upstream) {
        self.post(
            "/v1/deployments",
            json!({ "model": "acme/bot", "version": n, "region": region, "url": up.url() }),
        )
        .await;
    }

    /// Sets route `bot` (a `target` and its settings).
    async fn route_bot(&self, route: Value) {
        self.call(reqwest::Method::PUT, "/v1/routes/bot", Some(route))
            .await;
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

struct RegistryRouter {
    addr: SocketAddr,
    handle: RouterHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RegistryRouter {
    async fn start(registry: &str, state_dir: PathBuf) -> Result<Self, StartError> {
        Self::start_with_token(registry, state_dir, None).await
    }

    async fn start_with_token(
        registry: &str,
        state_dir: PathBuf,
        token: Option<String>,
    ) -> Result<Self, StartError> {
        let mut config = RouterConfig::new("eu-west");
        config.registry_token = token.map(RegistryToken::new);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.registry = Some(registry.to_owned());
        config.state_dir = Some(state_dir);
        config.registry_wait = Duration::from_secs(5);
        config.registry_retry_min = Duration::from_millis(20);
        config.registry_retry_max = Duration::from_millis(200);
        config.shutdown_grace = Duration::from_secs(2);
        let router = Router::bind(config).await?;
        let addr = router.local_addr().unwrap();
        let handle = router.handle();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(router.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            handle,
            stop: Some(tx),
            task: Some(task),
        })
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    async fn chat(&self) -> crate::support::Reply {
        let r = client()
            .post(format!("http://{}/v1/chat/completions", self.addr))
            .json(&json!({"model": "bot", "messages": []}))
            .send()
            .await
            .unwrap();
        crate::support::Reply::from(r).await
    }

    async fn routes(&self) -> Value {
        client()
            .get(format!("http://{}/routes", self.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for RegistryRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[tokio::test]
async fn registry_feeds_router_through_promotion_outage_and_restart() {
    let up1 = Upstream::start("v1-a").await;
    let up2 = Upstream::start("v2-a").await;
    let up3 = Upstream::start("v3-a").await;
    let mut registry = Registry::start().await;
    registry.post("/v1/models", json!({ "name": "acme/bot" })).await;
    let v1 = registry.sealed_version("one").await;
    let v2 = registry.sealed_version("two").await;
    for (v, up) in [(v1, &up1), (v2, &up2)] {
        registry.deploy(v, "eu-west", up).await;
    }
    registry.promote(v1).await;
    registry
        .route_bot(json!({ "target": "acme/bot:production" }))
        .await;

    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    if registry.token().is_some() {
        // A registry that requires a token refuses a router without one, which then has
        // nothing to serve.
        let e = RegistryRouter::start(&registry.base(), state_dir.clone())
            .await
            .err()
            .expect("no token, no snapshot");
        assert!(e.to_string().contains("401"), "{e}");
    }
    let router = RegistryRouter::start_with_token(&registry.base(), state_dir.clone(), registry.token())
        .await
        .unwrap();
    let r = router.chat().await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "v1-a"), "{}", r.body);
    assert_eq!(r.header("x-ballast-model-version"), format!("acme/bot/{v1}"));
    let routes = router.routes().await;
    assert_eq!(routes["source"], "registry");
    assert_eq!(routes["registry"]["url"], registry.base());

    // A promotion reaches the router: traffic shifts to v2's deployment, v1 stays as fallback.
    registry.promote(v2).await;
    eventually(Duration::from_secs(10), "traffic shifts to v2", || async {
        router.chat().await.upstream() == "v2-a"
    })
    .await;
    let snap = router.handle.snapshot();
    assert_eq!(
        snap.route("bot").unwrap().fallbacks,
        vec!["bot~previous".to_owned()]
    );
    let r = router.chat().await;
    assert_eq!(r.header("x-ballast-model-version"), format!("acme/bot/{v2}"));
    let generation = snap.generation;

    // The registry dies mid-poll: the router keeps serving the active snapshot and says so.
    eventually(Duration::from_secs(5), "a long-poll is under way", || async {
        router.routes().await["registry"]["last_ok_unix_ms"].is_u64()
    })
    .await;
    registry.kill().await;
    for _ in 0..5 {
        let r = router.chat().await;
        assert_eq!((r.status, r.upstream().as_str()), (200, "v2-a"));
    }
    eventually(
        Duration::from_secs(10),
        "the router notices the dead registry",
        || async { router.routes().await["registry"]["last_error"].is_string() },
    )
    .await;
    assert_eq!(router.handle.snapshot().generation, generation);
    router.stop().await;

    // Restarted with the registry still down: it serves from last-known-good.
    let router = RegistryRouter::start_with_token(&registry.base(), state_dir.clone(), registry.token())
        .await
        .unwrap();
    let routes = router.routes().await;
    assert_eq!(routes["source"], "last_known_good");
    assert_eq!(routes["generation"], generation);
    let r = router.chat().await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "v2-a"), "{}", r.body);

    // The registry returns; a rollback made then reaches the router.
    registry.run().await;
    registry.post("/v1/models/acme/bot/rollback", json!({})).await;
    eventually(
        Duration::from_secs(15),
        "the rollback reaches the router",
        || async { router.chat().await.upstream() == "v1-a" },
    )
    .await;
    assert_eq!(router.routes().await["source"], "registry");
    assert!(router.handle.snapshot().generation > generation);

    // A new version promoted to production after the registry returned reaches the router.
    let v3 = registry.sealed_version("three").await;
    registry.deploy(v3, "eu-west", &up3).await;
    let before = router.handle.snapshot().generation;
    registry.promote(v3).await;
    eventually(
        Duration::from_secs(15),
        "the promotion reaches the router",
        || async { router.chat().await.upstream() == "v3-a" },
    )
    .await;
    let r = router.chat().await;
    assert_eq!(r.header("x-ballast-model-version"), format!("acme/bot/{v3}"));
    assert!(router.handle.snapshot().generation > before);
    router.stop().await;
    registry.kill().await;
}

#[tokio::test]
async fn registry_source_refuses_bad_starts() {
    // Both a routes file and a registry: a clear error.
    let dir = tempfile::tempdir().unwrap();
    let mut config = RouterConfig::new("eu-west");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.routes_file = Some(dir.path().join("routes.toml"));
    config.registry = Some("http://127.0.0.1:1".into());
    let e = Router::bind(config).await.unwrap_err();
    assert!(matches!(e, StartError::BothSources), "{e}");
    assert!(e.to_string().contains("not both"));

    // Registry down and no last-known-good: nothing to serve, and it says why.
    let url = crate::support::closed_port_url().await;
    let e = RegistryRouter::start(&url, dir.path().join("state"))
        .await
        .err()
        .expect("no snapshot to serve");
    assert!(e.to_string().contains("unreachable"), "{e}");
    assert!(e.to_string().contains("last-known-good"), "{e}");

    // Not an http URL.
    let e = RegistryRouter::start("ftp://x", dir.path().join("state"))
        .await
        .err()
        .expect("bad URL");
    assert!(matches!(e, StartError::Registry(_)), "{e}");
}

#[tokio::test]
async fn a_registry_routes_region_order_and_health_settings_reach_the_router() {
    let near = Upstream::start("us-a").await;
    let far = Upstream::start("ap-a").await;
    let local = Upstream::start("eu-a").await;
    let registry = Registry::start().await;
    registry.post("/v1/models", json!({ "name": "acme/bot" })).await;
    let v1 = registry.sealed_version("one").await;
    for (region, up) in [("ap-south", &far), ("us-east", &near), ("eu-west", &local)] {
        registry.deploy(v1, region, up).await;
    }
    registry.promote(v1).await;
    registry
        .route_bot(json!({
            "target": "acme/bot:production",
            "regions": { "order": ["us-east", "ap-south"] },
            "timeouts": { "stream_idle_ms": 2500 },
            "health": { "consecutive_failures": 1, "failure_rate": { "failure_percent": 40 } },
        }))
        .await;
    let state = tempfile::tempdir().unwrap();
    let router = RegistryRouter::start_with_token(&registry.base(), state.path().join("s"), registry.token())
        .await
        .unwrap();
    let snap = router.handle.snapshot();
    let route = snap.route("bot").unwrap();
    let regions = route
        .regions
        .as_ref()
        .expect("the route's region order is compiled in");
    assert_eq!(regions.order, vec!["us-east", "ap-south"]);
    assert_eq!(route.timeouts.stream_idle_ms, Some(2500));
    assert_eq!(
        route.health.failure_rate.as_ref().map(|f| f.failure_percent),
        Some(40)
    );
    // The local region serves first; when it fails, us-east (listed first) is next, not
    // ap-south (which comes first in the deployments).
    let r = router.chat().await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "eu-a"), "{}", r.body);
    local.set(crate::support::Mode::Status(500));
    let r = router.chat().await;
    assert_eq!(
        (r.status, r.upstream().as_str(), r.attempts()),
        (200, "us-a", 2),
        "{}",
        r.body
    );

    // `listed`: the route's first region leads for every router, even in eu-west.
    local.set(crate::support::Mode::Ok);
    registry
        .route_bot(json!({
            "target": "acme/bot:production",
            "regions": { "order": ["ap-south", "us-east"], "local": "listed" },
        }))
        .await;
    eventually(Duration::from_secs(10), "ap-south leads", || async {
        router.chat().await.upstream() == "ap-a"
    })
    .await;
    router.stop().await;
}

/// A registry serving route `bot` → `acme/bot:production` (one version, deployed on `up`).
async fn registry_with_bot(up: &Upstream) -> Registry {
    let registry = Registry::start().await;
    registry.post("/v1/models", json!({ "name": "acme/bot" })).await;
    let v1 = registry.sealed_version("one").await;
    registry.deploy(v1, "eu-west", up).await;
    registry.promote(v1).await;
    registry
        .route_bot(json!({ "target": "acme/bot:production" }))
        .await;
    registry
}

/// A last-known-good snapshot of generation 100 (far ahead of the test registry) routing `bot`
/// to `up`, recorded as written by `origin`.
fn stale_lkg(state_dir: &std::path::Path, up: &Upstream, origin: &str) {
    let toml = format!(
        "generation = 100\n[[routes]]\nname = \"bot\"\n{}",
        crate::support::target("stale", &up.url(), "eu-west", "acme/bot/0")
    );
    let snap = ballast_router::config::parse_routes(std::path::Path::new("r.toml"), &toml, false).unwrap();
    ballast_router::lkg::save(state_dir, &snap, origin).unwrap();
}

#[tokio::test]
async fn a_last_known_good_from_another_source_gives_way_to_the_registry() {
    let up = Upstream::start("v1-a").await;
    let old = Upstream::start("stale").await;
    let registry = registry_with_bot(&up).await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    // The state directory was used by a `--config` router before.
    stale_lkg(&state_dir, &old, "file /etc/ballast/routes.toml");
    let router = RegistryRouter::start_with_token(&registry.base(), state_dir.clone(), registry.token())
        .await
        .unwrap();
    let routes = router.routes().await;
    assert_eq!(routes["source"], "registry", "{routes}");
    assert!(routes["generation"].as_u64().unwrap() < 100, "{routes}");
    let r = router.chat().await;
    assert_eq!((r.status, r.upstream().as_str()), (200, "v1-a"), "{}", r.body);
    // The registry's snapshot is now the last-known-good, recorded as this registry's.
    let (snap, origin) = ballast_router::lkg::load_with_origin(&state_dir)
        .unwrap()
        .unwrap();
    assert_eq!(snap.generation, routes["generation"].as_u64().unwrap());
    assert_eq!(origin.unwrap(), format!("registry {}", registry.base()));
    router.stop().await;
}

#[tokio::test]
async fn a_registry_behind_the_last_known_good_is_reported() {
    let up = Upstream::start("v1-a").await;
    let old = Upstream::start("stale").await;
    let registry = registry_with_bot(&up).await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    // Written by this registry's router before the registry's database was restored from an
    // older backup: the registry's generation is now far lower.
    stale_lkg(&state_dir, &old, &format!("registry {}", registry.base()));
    let router = RegistryRouter::start_with_token(&registry.base(), state_dir.clone(), registry.token())
        .await
        .unwrap();
    assert_eq!(router.routes().await["source"], "last_known_good");
    eventually(
        Duration::from_secs(10),
        "the stale registry is reported",
        || async {
            let r = router.routes().await;
            r["registry"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("lower than the active generation 100"))
                && r["registry"]["behind"].is_string()
                && r["registry"]["registry_generation"]
                    .as_u64()
                    .is_some_and(|g| g < 100)
        },
    )
    .await;
    let m = client()
        .get(format!("http://{}/metrics", router.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        crate::support::metric(&m, "ballast_router_registry_behind "),
        1.0,
        "{m}"
    );
    // It keeps serving the active snapshot (a lower generation never replaces it), and the
    // report stays while the registry answers (a successful poll does not clear it).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = router.routes().await;
    assert_eq!(r["generation"], 100);
    assert!(r["registry"]["last_error"].is_string(), "{r}");
    assert_eq!(router.chat().await.upstream(), "stale");
    router.stop().await;
}

/// A stand-in registry that answers the first (full) request with `snapshot` and every
/// long-poll at once with 304, recording each request's target.
async fn eager_304_registry(snapshot: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (log, snapshot) = (std::sync::Arc::clone(&log), snapshot.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                        let answer = if target.contains("after_generation") {
                            "HTTP/1.1 304 Not Modified\r\ncontent-length: 0\r\n\r\n".to_owned()
                        } else {
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{snapshot}",
                                snapshot.len()
                            )
                        };
                        log.lock().unwrap().push(target);
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (base, seen)
}

#[tokio::test]
async fn long_polls_are_capped_and_an_early_304_is_not_re_polled_at_once() {
    let up = Upstream::start("a").await;
    let toml = format!(
        "generation = 3\n[[routes]]\nname = \"bot\"\n{}",
        crate::support::target("a", &up.url(), "eu-west", "acme/bot/1")
    );
    let snap = ballast_router::config::parse_routes(std::path::Path::new("r.toml"), &toml, false).unwrap();
    // Longer than the registry grants (capped at 300 s), and no long-poll at all.
    for (wait, sent) in [
        (Duration::from_secs(3600), "wait=300&"),
        (Duration::ZERO, "wait=0&"),
    ] {
        let (base, seen) = eager_304_registry(serde_json::to_string(&snap).unwrap()).await;
        let state = tempfile::tempdir().unwrap();
        let mut config = RouterConfig::new("eu-west");
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.registry = Some(base);
        config.state_dir = Some(state.path().join("s"));
        config.registry_wait = wait;
        config.registry_retry_min = Duration::from_millis(250);
        let router = Router::bind(config).await.unwrap();
        let handle = router.handle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(router.serve(async move {
            let _ = rx.await;
        }));
        assert_eq!(handle.snapshot().generation, 3);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        let seen = seen.lock().unwrap().clone();
        let polls: Vec<&String> = seen.iter().filter(|t| t.contains("after_generation")).collect();
        assert!(!polls.is_empty(), "{seen:?}");
        for p in &polls {
            assert!(p.contains(sent), "asked with {p}, not {sent}");
        }
        // The registry answers each poll at once: the router waits between them rather than
        // asking again immediately (about 1.2 s / 250 ms, not hundreds).
        assert!(
            polls.len() <= 7,
            "{} polls in 1.2 s with wait {wait:?}: {seen:?}",
            polls.len()
        );
    }
}
