//! Test support: fault-injecting upstream servers on loopback and a router started on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_router::{Router, RouterConfig, RouterHandle};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What an upstream does with the next requests.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 with a JSON body naming the upstream.
    Ok,
    /// This status with a small body.
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// 429 with `Retry-After` as an HTTP date.
    RateLimitedUntil(std::time::SystemTime),
    /// Never answers.
    Hang,
    /// Waits before sending the headers.
    Delay(Duration),
    /// Sends headers at once, then waits before the first body byte.
    StallBody(Duration),
    /// Server-sent events: `n` events, `every` apart.
    Sse(usize, Duration),
    /// Sends one chunk, then breaks the connection.
    CutMidStream,
    /// Closes each new connection without answering.
    Reset,
    /// Every second request (the 2nd, 4th, …) answers this status; the others 200.
    EveryOther(u16),
    /// Server-sent events: `n` events at once, then silence with the stream left open.
    SseThenStall(usize),
}

#[derive(Debug, Default)]
pub struct Seen {
    pub bodies: Vec<Bytes>,
    pub paths: Vec<String>,
    pub headers: Vec<http::HeaderMap>,
}

/// A fault-injecting upstream.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    health: Arc<Mutex<u16>>,
    pub hits: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Seen>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut u = Self {
            name: name.to_owned(),
            addr,
            mode: Arc::new(Mutex::new(Mode::Ok)),
            health: Arc::new(Mutex::new(200)),
            hits: Arc::new(AtomicU64::new(0)),
            seen: Arc::new(Mutex::new(Seen::default())),
            task: None,
        };
        u.task = Some(u.spawn(listener));
        u
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn set_health(&self, status: u16) {
        *self.health.lock().unwrap() = status;
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every open connection.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.task = Some(self.spawn(listener));
    }

    fn spawn(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let name = self.name.clone();
        let mode = Arc::clone(&self.mode);
        let health = Arc::clone(&self.health);
        let hits = Arc::clone(&self.hits);
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            // Connections live in this set: aborting the task drops them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        if matches!(*mode.lock().unwrap(), Mode::Reset) {
                            drop(stream);
                            continue;
                        }
                        let name = name.clone();
                        let mode = Arc::clone(&mode);
                        let health = Arc::clone(&health);
                        let hits = Arc::clone(&hits);
                        let seen = Arc::clone(&seen);
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                answer(name.clone(), Arc::clone(&mode), Arc::clone(&health), Arc::clone(&hits), Arc::clone(&seen), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn full(b: impl Into<Bytes>) -> BoxBody<Bytes, BoxError> {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn answer(
    name: String,
    mode: Arc<Mutex<Mode>>,
    health: Arc<Mutex<u16>>,
    hits: Arc<AtomicU64>,
    seen: Arc<Mutex<Seen>>,
    req: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, BoxError>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/health" {
        let status = *health.lock().unwrap();
        let mut r = Response::new(full("health"));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        return Ok(r);
    }
    let hit = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let mode_now = mode.lock().unwrap().clone();
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let model = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_owned));
    {
        let mut s = seen.lock().unwrap();
        s.bodies.push(body.clone());
        s.paths.push(parts.uri.to_string());
        s.headers.push(parts.headers.clone());
    }
    let ok_body = serde_json::json!({"upstream": name, "model": model, "path": parts.uri.to_string(), "len": body.len()}).to_string();
    let resp = match mode_now {
        Mode::Ok | Mode::Reset => Response::new(full(ok_body)),
        Mode::EveryOther(s) if hit % 2 == 0 => {
            let mut r = Response::new(full(format!("{{\"upstream\":\"{name}\",\"status\":{s}}}")));
            *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
            r
        }
        Mode::EveryOther(_) => Response::new(full(ok_body)),
        Mode::SseThenStall(n) => {
            let name = name.clone();
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let name = name.clone();
                async move {
                    if i >= n {
                        std::future::pending::<()>().await;
                    }
                    let ev = format!("data: {{\"upstream\":\"{name}\",\"i\":{i}}}\n\n");
                    Some((Ok::<_, BoxError>(Frame::data(Bytes::from(ev))), i + 1))
                }
            });
            let mut r = Response::new(BoxBody::new(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        Mode::Status(s) => {
            let mut r = Response::new(full(format!("{{\"upstream\":\"{name}\",\"status\":{s}}}")));
            *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
            r
        }
        Mode::RateLimited(secs) => {
            let mut r = Response::new(full("slow down"));
            *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
            r.headers_mut().insert("retry-after", secs.into());
            r
        }
        Mode::RateLimitedUntil(at) => {
            let mut r = Response::new(full("slow down"));
            *r.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
            r.headers_mut()
                .insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
            r
        }
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            Response::new(full(ok_body))
        }
        Mode::StallBody(d) => {
            let stream = futures_util::stream::unfold(0u8, move |n| async move {
                if n == 0 {
                    tokio::time::sleep(d).await;
                    Some((Ok::<_, BoxError>(Frame::data(Bytes::from("late"))), 1))
                } else {
                    None
                }
            });
            Response::new(BoxBody::new(StreamBody::new(stream)))
        }
        Mode::Sse(n, every) => {
            let name = name.clone();
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let name = name.clone();
                async move {
                    if i >= n {
                        return None;
                    }
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    let ev = format!("data: {{\"upstream\":\"{name}\",\"i\":{i}}}\n\n");
                    Some((Ok::<_, BoxError>(Frame::data(Bytes::from(ev))), i + 1))
                }
            });
            let mut r = Response::new(BoxBody::new(StreamBody::new(stream)));
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        Mode::CutMidStream => {
            let stream = futures_util::stream::unfold(0u8, |n| async move {
                match n {
                    0 => Some((Ok::<_, BoxError>(Frame::data(Bytes::from("data: first\n\n"))), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Err::<Frame<Bytes>, BoxError>("cut".into()), 2))
                    }
                    _ => None,
                }
            });
            Response::new(BoxBody::new(StreamBody::new(stream)))
        }
    };
    let mut resp = resp;
    resp.headers_mut().insert("x-upstream", name.parse().unwrap());
    Ok(resp)
}

/// A port nothing listens on.
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// A router started on port 0 from a routes file in a temporary directory.
pub struct TestRouter {
    pub addr: SocketAddr,
    pub handle: RouterHandle,
    pub dir: tempfile::TempDir,
    pub routes_path: PathBuf,
    pub state_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestRouter {
    pub async fn start(region: &str, routes_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let routes_path = dir.path().join("routes.toml");
        std::fs::write(&routes_path, routes_toml).unwrap();
        let state_dir = dir.path().join("state");
        Self::start_in(dir, routes_path, state_dir, region).await.unwrap()
    }

    /// Like [`Self::start`], with the router's settings adjusted by `configure`.
    pub async fn start_with(
        region: &str,
        routes_toml: &str,
        configure: impl FnOnce(&mut RouterConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let routes_path = dir.path().join("routes.toml");
        std::fs::write(&routes_path, routes_toml).unwrap();
        let state_dir = dir.path().join("state");
        Self::start_configured(dir, routes_path, state_dir, region, configure)
            .await
            .unwrap()
    }

    pub async fn start_in(
        dir: tempfile::TempDir,
        routes_path: PathBuf,
        state_dir: PathBuf,
        region: &str,
    ) -> Result<Self, ballast_router::StartError> {
        Self::start_configured(dir, routes_path, state_dir, region, |_| {}).await
    }

    pub async fn start_configured(
        dir: tempfile::TempDir,
        routes_path: PathBuf,
        state_dir: PathBuf,
        region: &str,
        configure: impl FnOnce(&mut RouterConfig),
    ) -> Result<Self, ballast_router::StartError> {
        let mut config = RouterConfig::new(region);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.routes_file = Some(routes_path.clone());
        config.state_dir = Some(state_dir.clone());
        config.watch_interval = Duration::from_millis(50);
        config.shutdown_grace = Duration::from_secs(5);
        configure(&mut config);
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
            dir,
            routes_path,
            state_dir,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts a graceful shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn targets(&self) -> serde_json::Value {
        client()
            .get(self.url("/admin/targets"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn target_phase(&self, id: &str) -> String {
        self.target(id).await["phase"].as_str().unwrap().to_owned()
    }

    /// One target's entry in `/admin/targets`.
    pub async fn target(&self, id: &str) -> serde_json::Value {
        let t = self.targets().await;
        t["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    }

    /// POSTs a chat completion for `model`.
    pub async fn chat(&self, model: &str) -> Reply {
        self.chat_with(model, &[]).await
    }

    pub async fn chat_with(&self, model: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = client()
            .post(self.url("/v1/chat/completions"))
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Reply::from(req.send().await.unwrap()).await
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    pub fn attempts(&self) -> u32 {
        self.header("x-ballast-attempts").parse().unwrap_or(0)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The upstream that answered (from its JSON body).
    pub fn upstream(&self) -> String {
        self.json()["upstream"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Waits until `check` holds, polling, or fails after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `[[routes.targets]]` block.
pub fn target(id: &str, url: &str, region: &str, version: &str) -> String {
    format!(
        "[[routes.targets]]\nid = \"{id}\"\nurl = \"{url}\"\nregion = \"{region}\"\nmodel_version = \"{version}\"\n"
    )
}

/// Reads a metric's value (sum of every line that starts with `prefix`).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
