//! Upstream HTTP/1.1 connections, kept alive in a pool per scheme and authority and driven by
//! the request that uses them.
//!
//! A pooled client that runs each connection in a task of its own hands every request and
//! response across tasks (and often threads): a channel send, a wake-up, a second task poll, and
//! the same on the way back. Here the request's own task polls the connection while it waits
//! for the response, and the response body polls it while the body streams to the client; when
//! the body has been read to its end the connection goes back to the pool. A pooled connection is
//! checked before reuse (closed by the peer, not ready: dropped), and a request that a reused
//! connection could not even start to send is sent again on a new connection.

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower::ServiceExt as _;

use crate::body::ProxyBody;
use crate::error::{ErrorKind, RouterError};

/// The transport of an upstream connection: plain TCP or TLS over TCP.
pub type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Idle connections kept per scheme and authority at most.
const MAX_IDLE_PER_KEY: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Which connections may serve a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    scheme: Scheme,
    authority: Authority,
}

impl PoolKey {
    /// The key of a target.
    #[must_use]
    pub fn new(scheme: &Scheme, authority: &Authority) -> Self {
        Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
        }
    }
}

/// One HTTP/1.1 connection to an upstream.
pub struct Conn {
    sender: http1::SendRequest<ProxyBody>,
    conn: http1::Connection<Io, ProxyBody>,
    key: PoolKey,
    /// The connection ended (closed by the peer, or failed): never polled or reused again.
    ended: bool,
    /// Taken from the pool (it served requests before).
    reused: bool,
    idle_since: Instant,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("key", &self.key)
            .field("ended", &self.ended)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Drives the connection's reads and writes. `Ready` once it has ended.
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ended {
            return Poll::Ready(());
        }
        match self.conn.poll_without_shutdown(cx) {
            Poll::Ready(_) => {
                self.ended = true;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the connection has ended.
    #[must_use]
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether a pooled connection can take a request now (driving it once first).
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        if self.poll_io(cx).is_ready() {
            return false;
        }
        matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }
}

/// Why a request could not be sent or answered on a connection.
#[derive(Debug)]
pub enum SendError {
    /// The request was never started: safe to send again elsewhere.
    NotSent(RouterError),
    /// The request may have reached the upstream.
    Failed(RouterError),
}

/// Shards of the idle lists: each thread takes and returns connections in its own shard, so a
/// connection stays with the worker (and runtime) that opened it.
const SHARDS: usize = 16;

type IdleMap = HashMap<PoolKey, Vec<Box<Conn>>>;

fn shard_of_thread() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// The pool of idle upstream connections, shared by every request.
#[derive(Debug)]
pub struct Pool {
    idle: Vec<Mutex<IdleMap>>,
    connectors: Mutex<HashMap<u64, HttpsConnector<HttpConnector>>>,
    tls: rustls::ClientConfig,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Pool {
    /// An empty pool whose `https` connections use this TLS configuration.
    #[must_use]
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self {
            idle: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            connectors: Mutex::new(HashMap::new()),
            tls,
        }
    }

    fn connector(&self, connect_ms: u64) -> HttpsConnector<HttpConnector> {
        lock(&self.connectors)
            .entry(connect_ms)
            .or_insert_with(|| {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(Duration::from_millis(connect_ms)));
                http.set_nodelay(true);
                http.set_keepalive(Some(Duration::from_secs(60)));
                http.enforce_http(false);
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(self.tls.clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            })
            .clone()
    }

    /// An idle connection for `key` that can take a request now, if the pool has one.
    async fn take_idle(&self, key: &PoolKey) -> Option<Box<Conn>> {
        loop {
            let mut conn = {
                let mut idle = lock(&self.idle[shard_of_thread()]);
                let list = idle.get_mut(key)?;
                let c = list.pop();
                if list.is_empty() {
                    idle.remove(key);
                }
                c?
            };
            if conn.idle_since.elapsed() >= IDLE_TIMEOUT {
                continue;
            }
            let usable = std::future::poll_fn(|cx| Poll::Ready(conn.usable(cx))).await;
            if usable {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// A new connection to `uri`'s scheme and authority.
    ///
    /// # Errors
    /// The connection (or its TLS handshake) failed or timed out.
    async fn connect(&self, key: &PoolKey, connect_ms: u64) -> Result<Box<Conn>, RouterError> {
        let uri = Uri::builder()
            .scheme(key.scheme.clone())
            .authority(key.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| {
                RouterError::new(ErrorKind::Internal, format!("cannot build the upstream URI: {e}"))
            })?;
        let io = self
            .connector(connect_ms)
            .oneshot(uri)
            .await
            .map_err(|e| classify_connect_error(e.as_ref()))?;
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| RouterError::new(ErrorKind::Connect, format!("cannot connect: {e}")))?;
        Ok(Box::new(Conn {
            sender,
            conn,
            key: key.clone(),
            ended: false,
            reused: false,
            idle_since: Instant::now(),
        }))
    }

    /// Returns a connection whose last response was read to its end.
    pub fn checkin(&self, mut conn: Box<Conn>) {
        if conn.ended || conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = lock(&self.idle[shard_of_thread()]);
        let list = idle.entry(conn.key.clone()).or_default();
        list.retain(|c| now.saturating_duration_since(c.idle_since) < IDLE_TIMEOUT);
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(conn);
        }
    }

    /// Sends `req` on a pooled connection (or a new one) and waits for the response head,
    /// driving the connection meanwhile. A request that a reused connection could not start to
    /// send is sent once more on a new connection (when `replayable`).
    ///
    /// # Errors
    /// Connecting failed, or the upstream failed before answering.
    pub async fn send(
        &self,
        key: &PoolKey,
        connect_ms: u64,
        req: Request<ProxyBody>,
        replay: impl FnOnce() -> Option<Request<ProxyBody>>,
    ) -> Result<(Response<Incoming>, Box<Conn>), RouterError> {
        if let Some(conn) = self.take_idle(key).await {
            match send_on(conn, req).await {
                Ok(r) => return Ok(r),
                Err(SendError::Failed(e)) => return Err(e),
                Err(SendError::NotSent(e)) => match replay() {
                    // The kept-alive connection was closed under us: try a fresh one.
                    Some(again) => {
                        let conn = Box::pin(self.connect(key, connect_ms)).await?;
                        return send_on(conn, again).await.map_err(SendError::into_error);
                    }
                    None => return Err(e),
                },
            }
        }
        // Boxed: connecting is rare on a warm pool, and its (large) state would otherwise be part
        // of every request's future.
        let conn = Box::pin(self.connect(key, connect_ms)).await?;
        send_on(conn, req).await.map_err(SendError::into_error)
    }
}

impl SendError {
    fn into_error(self) -> RouterError {
        match self {
            Self::NotSent(e) | Self::Failed(e) => e,
        }
    }
}

/// Sends one request on `conn`, driving it until the response head arrives.
async fn send_on(
    mut conn: Box<Conn>,
    req: Request<ProxyBody>,
) -> Result<(Response<Incoming>, Box<Conn>), SendError> {
    let mut fut = pin!(conn.sender.send_request(req));
    let reused = conn.reused;
    let result = std::future::poll_fn(|cx| {
        let ended = conn.poll_io(cx).is_ready();
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r.map_err(Some)),
            // The connection is gone and nothing will answer the request any more.
            Poll::Pending if ended => Poll::Ready(Err(None)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match result {
        Ok(resp) => Ok((resp, conn)),
        Err(Some(e)) if e.is_canceled() && reused => Err(SendError::NotSent(RouterError::new(
            ErrorKind::UpstreamIo,
            format!("the kept-alive connection closed before the request was sent: {e}"),
        ))),
        Err(Some(e)) => Err(SendError::Failed(RouterError::new(
            ErrorKind::UpstreamIo,
            format!("connection failed: {e}"),
        ))),
        Err(None) if reused => Err(SendError::NotSent(RouterError::new(
            ErrorKind::UpstreamIo,
            "the kept-alive connection closed before the request was answered",
        ))),
        Err(None) => Err(SendError::Failed(RouterError::new(
            ErrorKind::UpstreamIo,
            "the connection closed before the request was answered",
        ))),
    }
}

/// Polls `body` for a frame while driving `conn`; a connection that ended while the body still
/// waits is an error (nothing would ever arrive).
pub fn poll_body_frame(
    conn: Option<&mut Conn>,
    body: &mut Incoming,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, crate::body::BoxError>>> {
    use http_body::Body as _;
    let ended = conn.is_some_and(|c| c.poll_io(cx).is_ready());
    match std::pin::Pin::new(body).poll_frame(cx) {
        Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
        Poll::Pending if ended => Poll::Ready(Some(Err(
            "the upstream connection closed before the response ended".into(),
        ))),
        Poll::Pending => Poll::Pending,
    }
}

/// Classifies a connector failure by its type (never its text).
fn classify_connect_error(err: &(dyn std::error::Error + Send + Sync + 'static)) -> RouterError {
    let mut timed_out = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                timed_out = true;
            }
        }
        cur = e.source();
    }
    if timed_out {
        RouterError::new(ErrorKind::ConnectTimeout, format!("connect timed out: {err}"))
    } else {
        RouterError::new(ErrorKind::Connect, format!("cannot connect: {}", chain(err)))
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = inner.source();
    }
    s
}

/// Shared handle used by response bodies to return their connection.
pub type SharedPool = Arc<Pool>;
