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

/// A registry server on loopback, restartable on the same address and data directory.
struct Registry {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Registry {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            stop: None,
            task: None,
        };
        r.run().await;
        r
    }

    async fn run(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            let config = ballast_server::Config {
                listen: self.addr,
                data_dir: self.dir.path().to_owned(),
                shutdown_grace_secs: 1,
                ..ballast_server::Config::default()
            };
            match ballast_server::Server::bind(config).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "registry cannot bind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        self.addr = server.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(server.serve(async move {
            let _ = rx.await;
        })));
    }

    /// Graceful stop (long-polls end, the store closes); waits for it.
    async fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("registry did not stop")
                .unwrap()
                .unwrap();
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
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
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
    let mut registry = Registry::start().await;
    registry.post("/v1/models", json!({ "name": "acme/bot" })).await;
    let v1 = registry.sealed_version("one").await;
    let v2 = registry.sealed_version("two").await;
    for (v, up) in [(v1, &up1), (v2, &up2)] {
        registry
            .post(
                "/v1/deployments",
                json!({ "model": "acme/bot", "version": v, "region": "eu-west", "url": up.url() }),
            )
            .await;
    }
    registry.promote(v1).await;
    registry
        .call(
            reqwest::Method::PUT,
            "/v1/routes/bot",
            Some(json!({ "target": "acme/bot:production" })),
        )
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

    // The registry dies: the router keeps serving the active snapshot and says so.
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
        registry
            .post(
                "/v1/deployments",
                json!({ "model": "acme/bot", "version": v1, "region": region, "url": up.url() }),
            )
            .await;
    }
    registry.promote(v1).await;
    registry
        .call(
            reqwest::Method::PUT,
            "/v1/routes/bot",
            Some(json!({
                "target": "acme/bot:production",
                "regions": { "order": ["us-east", "ap-south"] },
                "timeouts": { "stream_idle_ms": 2500 },
                "health": { "consecutive_failures": 1, "failure_rate": { "failure_percent": 40 } },
            })),
        )
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
        .call(
            reqwest::Method::PUT,
            "/v1/routes/bot",
            Some(json!({
                "target": "acme/bot:production",
                "regions": { "order": ["ap-south", "us-east"], "local": "listed" },
            })),
        )
        .await;
    eventually(Duration::from_secs(10), "ap-south leads", || async {
        router.chat().await.upstream() == "ap-a"
    })
    .await;
    router.stop().await;
}
