//! The router's HTTP/1.1 front end: accepts connections, hands each to a request-serving
//! worker, and answers every request on that connection from start to end on the worker's own
//! single-threaded runtime (no work stealing, no cross-thread wake-ups on the request path).
//!
//! A request for one of the router's own endpoints goes to the [`admin`](crate::admin)
//! handlers; every other request is proxied ([`crate::proxy::handle`]), with no routing layer
//! in between. Connections go to the worker with the fewest open connections, so a handful of
//! long-lived keep-alive clients spreads evenly over the workers.
//!
//! On shutdown the router stops accepting, lets every connection finish the request it is
//! serving (idle keep-alive connections are closed), and after the grace period closes what is
//! left.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::body::{ClientBody, RequestBody};
use crate::error::{ErrorKind, RouterError};
use crate::h1::{self, H1Error, RequestHead};
use crate::proxy::{ClientWire, Exchange};
use crate::state::Shared;
use crate::wire::Wire;

/// Whether `path` is one of the router's own endpoints (which take precedence over prefix
/// routes). Anything else is proxied.
#[must_use]
pub fn is_own_endpoint(path: &str) -> bool {
    match path {
        "/healthz" | "/readyz" | "/metrics" | "/routes" | "/admin/targets" => true,
        _ => path
            .strip_prefix("/admin/targets/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(id, action)| !id.is_empty() && matches!(action, "drain" | "undrain")),
    }
}

/// What every connection of a router shares.
struct Front {
    shared: Arc<Shared>,
    admin: axum::Router,
}

/// Largest request body the router's own endpoints read.
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// How long a closing connection waits for the client to stop sending (so the last answer is
/// not lost to a reset), and how much it reads meanwhile at most.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

impl Front {
    fn new(shared: Arc<Shared>) -> Arc<Self> {
        let admin = axum::Router::new()
            .route("/healthz", get(crate::admin::healthz))
            .route("/readyz", get(crate::admin::readyz))
            .route("/metrics", get(crate::admin::metrics))
            .route("/routes", get(crate::admin::routes))
            .route("/admin/targets", get(crate::admin::targets))
            .route("/admin/targets/{id}/drain", post(crate::admin::drain))
            .route("/admin/targets/{id}/undrain", post(crate::admin::undrain))
            .with_state(Arc::clone(&shared));
        Arc::new(Self { shared, admin })
    }

    /// Answers a request for one of the router's own endpoints (`/admin/*` only when
    /// [`crate::admin::authorize`] lets the `peer` in).
    async fn own_endpoint(
        &self,
        head: &RequestHead,
        body: &mut ClientBody,
        wire: &mut ClientWire,
        keep: bool,
        peer: Option<std::net::IpAddr>,
    ) -> bool {
        let bytes = match body.read_bounded(wire, MAX_ADMIN_BODY).await {
            Ok(RequestBody::Full(b)) => b,
            Ok(RequestBody::Partial(_)) => {
                let e = RouterError::new(
                    ErrorKind::BodyTooLarge,
                    format!("the request body is larger than {MAX_ADMIN_BODY} bytes"),
                );
                return refuse(wire, head.minor, e.http_status(), &e).await;
            }
            Err(e) => {
                let e = RouterError::new(
                    ErrorKind::ClientBody,
                    format!("cannot read the request body: {e}"),
                );
                return refuse(wire, head.minor, e.http_status(), &e).await;
            }
        };
        if head.path().starts_with("/admin/") {
            let token = self.shared.config.admin_token.as_ref();
            if let Err(refusal) = crate::admin::authorize(token, peer, head.fields.get("authorization")) {
                tracing::warn!(path = head.path(), peer = ?peer, ?refusal, "admin request refused");
                let mut fields: Vec<(&[u8], &[u8])> = vec![(b"content-type", b"application/json")];
                if refusal == crate::admin::AdminRefusal::Unauthorized {
                    fields.push((b"www-authenticate", b"Bearer"));
                }
                return crate::proxy::write_full(
                    wire,
                    head.minor,
                    keep,
                    refusal.status(),
                    &fields,
                    &refusal.body(),
                )
                .await;
            }
        }
        let mut req = http::Request::builder()
            .method(head.method.clone())
            .uri(head.target());
        for (name, value) in head.fields.iter() {
            req = req.header(name, value);
        }
        let req = match req.body(axum::body::Body::from(bytes)) {
            Ok(r) => r,
            Err(e) => {
                let e = RouterError::new(ErrorKind::InvalidRequest, format!("malformed request: {e}"));
                return refuse(wire, head.minor, e.http_status(), &e).await;
            }
        };
        let resp = match self.admin.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        let bytes = match http_body_util::BodyExt::collect(body).await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                let e = RouterError::new(ErrorKind::Internal, format!("cannot produce the answer: {e}"));
                return refuse(wire, head.minor, e.http_status(), &e).await;
            }
        };
        let fields: Vec<(&[u8], &[u8])> = parts
            .headers
            .iter()
            .filter(|(n, _)| !matches!(n.as_str(), "content-length" | "transfer-encoding" | "connection"))
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
            .collect();
        let body: &[u8] = if head.method == http::Method::HEAD {
            &[]
        } else {
            &bytes
        };
        crate::proxy::write_full(wire, head.minor, keep, parts.status, &fields, body).await
    }
}

/// Answers a request the router refuses before routing it, and ends the connection.
async fn refuse(wire: &mut ClientWire, minor: u8, status: http::StatusCode, err: &RouterError) -> bool {
    let body = crate::proxy::error_body(err, &[]);
    let fields: [(&[u8], &[u8]); 1] = [(b"content-type", b"application/json")];
    crate::proxy::write_full(wire, minor, false, status, &fields, &body).await
}

/// Reads the next request head; `None` when the connection closed, went idle too long, or the
/// router is draining and no request is under way.
async fn next_head(
    config: &crate::config::RouterConfig,
    wire: &mut ClientWire,
    drain: &mut watch::Receiver<bool>,
    timer: &mut std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<Option<RequestHead>, H1Error> {
    // Which timer is armed: `Some(true)` waiting for a request, `Some(false)` for the rest of a
    // head that started (armed once, so a client trickling bytes cannot extend it).
    let mut armed: Option<bool> = None;
    loop {
        if !wire.rbuf.is_empty() {
            if let Some(head) = h1::parse_request(&mut wire.rbuf)? {
                return Ok(Some(head));
            }
        }
        let idle = wire.rbuf.is_empty();
        if armed != Some(idle) {
            let wait = if idle {
                config.client_idle_timeout
            } else {
                config.client_head_timeout
            };
            timer.as_mut().reset(tokio::time::Instant::now() + wait);
            armed = Some(idle);
        }
        let read = tokio::select! {
            biased;
            r = wire.fill() => r,
            _ = drain.wait_for(|d| *d), if idle => return Ok(None),
            () = timer.as_mut() => return Ok(None),
        };
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Closes a client connection without losing the last answer: stops writing, then reads
/// (and discards) what the client still sends for a moment, so closing does not reset the
/// connection under an answer the client has not read yet.
async fn linger_close(mut wire: ClientWire) {
    use tokio::io::AsyncWriteExt as _;
    if wire.io.shutdown().await.is_err() {
        return;
    }
    let discard = async {
        let mut seen = 0usize;
        while seen < LINGER_BYTES {
            wire.rbuf.clear();
            match wire.fill().await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// Serves one connection until it closes, or until `drain` (then it finishes the request under
/// way and closes).
async fn serve_conn(front: Arc<Front>, tcp: tokio::net::TcpStream, mut drain: watch::Receiver<bool>) {
    // Answers go out at once (no Nagle delay behind a previous small write).
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok().map(|a| a.ip());
    let mut wire = Wire::new(tcp);
    let mut buf = Vec::with_capacity(1024);
    let timer = tokio::time::sleep(front.shared.config.client_idle_timeout);
    tokio::pin!(timer);
    loop {
        let head = match next_head(&front.shared.config, &mut wire, &mut drain, &mut timer).await {
            Ok(Some(h)) => h,
            Ok(None) => return,
            Err(e) => {
                let status = if e == H1Error::HeadTooLarge {
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                } else {
                    http::StatusCode::BAD_REQUEST
                };
                let err = RouterError::new(ErrorKind::InvalidRequest, e.to_string());
                refuse(&mut wire, 1, status, &err).await;
                return linger_close(wire).await;
            }
        };
        let framing = match head.framing() {
            Ok(f) => f,
            Err(e) => {
                let status = if e == H1Error::UnsupportedCoding {
                    http::StatusCode::NOT_IMPLEMENTED
                } else {
                    http::StatusCode::BAD_REQUEST
                };
                let err = RouterError::new(ErrorKind::InvalidRequest, e.to_string());
                refuse(&mut wire, head.minor, status, &err).await;
                return linger_close(wire).await;
            }
        };
        let keep_alive = head.keep_alive() && !*drain.borrow();
        let expect_continue = head.minor >= 1 && head.fields.has_token("expect", "100-continue");
        let mut body = ClientBody::new(framing, expect_continue, front.shared.config.client_head_timeout);
        let go_on = if is_own_endpoint(head.path()) {
            front
                .own_endpoint(&head, &mut body, &mut wire, keep_alive, peer)
                .await
        } else {
            let mut ex = Exchange {
                head: &head,
                body: &mut body,
                client: &mut wire,
                keep_alive,
                buf: &mut buf,
            };
            crate::proxy::handle(&front.shared, &mut ex).await
        };
        if !go_on {
            return linger_close(wire).await;
        }
    }
}

/// One of a worker's open connections (counted by the acceptor when it handed it over; the
/// count goes down when this is dropped).
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether an accept error concerns only the connection being accepted (retry at once) rather
/// than the process (e.g. out of file descriptors: back off).
fn per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}

/// Accepts until `stop`, giving each connection to `give`.
async fn accept_loop(
    listener: &tokio::net::TcpListener,
    stop: &mut watch::Receiver<bool>,
    mut give: impl FnMut(tokio::net::TcpStream),
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|d| *d) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, _)) => give(tcp),
            Err(e) if per_connection(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
                tokio::select! {
                    _ = stop.wait_for(|d| *d) => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Serves on the caller's runtime until `shutdown`, then drains for up to `grace`.
pub(crate) async fn serve_here<F>(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    grace: Duration,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let front = Front::new(shared);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    {
        let mut stop = drain_rx.clone();
        let accept = accept_loop(&listener, &mut stop, |tcp| {
            // Forget the connections that closed meanwhile.
            while conns.try_join_next().is_some() {}
            conns.spawn(serve_conn(Arc::clone(&front), tcp, drain_rx.clone()));
        });
        tokio::pin!(accept);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            () = &mut accept => {}
        }
    }
    front.shared.begin_shutdown();
    drop(listener);
    let _ = drain_tx.send(true);
    let finish = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, finish).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
        conns.shutdown().await;
    }
    Ok(())
}

/// Period of the timer each worker keeps armed (see `start_worker`); attempt timeouts longer
/// than this never wake the event loop just to be registered.
const TIMER_ANCHOR: Duration = Duration::from_millis(250);

/// One request-serving worker: a thread with a single-threaded runtime serving the
/// connections it is handed.
struct Worker {
    conns: mpsc::UnboundedSender<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<std::io::Result<()>>,
}

fn start_worker(
    i: usize,
    front: &Arc<Front>,
    drain: &watch::Receiver<bool>,
    abort: &watch::Receiver<bool>,
) -> std::io::Result<Worker> {
    let (tx, mut rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
    let (done_tx, done_rx) = oneshot::channel();
    let open = Arc::new(AtomicUsize::new(0));
    let (front, drain, abort, count) = (Arc::clone(front), drain.clone(), abort.clone(), Arc::clone(&open));
    std::thread::Builder::new()
        .name(format!("router-worker-{i}"))
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| {
                    rt.block_on(async move {
                        // Keeps a near timer in the runtime's wheel at all times. Without it,
                        // each request's attempt timeout, registered while the wheel is empty,
                        // would be "the next timer" and make the runtime write to its own
                        // wake-up descriptor (a system call and an extra turn of the event loop
                        // per request).
                        let _anchor = tokio::spawn(async {
                            loop {
                                tokio::time::sleep(TIMER_ANCHOR).await;
                            }
                        });
                        let mut conns = JoinSet::new();
                        let work = async {
                            loop {
                                tokio::select! {
                                    got = rx.recv() => match got {
                                        Some(std_tcp) => match (tokio::net::TcpStream::from_std(std_tcp), Open(Arc::clone(&count))) {
                                            (Ok(tcp), open) => {
                                                let conn = serve_conn(Arc::clone(&front), tcp, drain.clone());
                                                conns.spawn(async move {
                                                    conn.await;
                                                    drop(open);
                                                });
                                            }
                                            (Err(e), _) => tracing::warn!(error = %e, "cannot serve an accepted connection"),
                                        },
                                        // The acceptor stopped: finish what is open.
                                        None => break,
                                    },
                                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                                }
                            }
                            while conns.join_next().await.is_some() {}
                        };
                        let mut abort = abort;
                        tokio::select! {
                            () = work => {}
                            _ = abort.wait_for(|a| *a) => {}
                        }
                    });
                });
            let _ = done_tx.send(result);
        })?;
    Ok(Worker {
        conns: tx,
        open,
        done: done_rx,
    })
}

/// Serves on `workers` threads until `shutdown`, then drains for up to `grace`. Connections
/// are accepted here and handed to the worker with the fewest open connections.
pub(crate) async fn serve_on_workers<F>(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    workers: usize,
    grace: Duration,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let front = Front::new(shared);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (abort_tx, abort_rx) = watch::channel(false);
    let mut pool = Vec::with_capacity(workers);
    for i in 0..workers {
        pool.push(start_worker(i, &front, &drain_rx, &abort_rx)?);
    }
    let (senders, done): (Vec<_>, Vec<_>) = pool.into_iter().map(|w| ((w.conns, w.open), w.done)).unzip();
    let all_done = async move {
        let mut first_err = None;
        for d in done {
            if let Ok(Err(e)) = d.await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    };
    tokio::pin!(all_done);
    {
        let mut stop = drain_rx.clone();
        let accept = accept_loop(&listener, &mut stop, |tcp| {
            let mut std_tcp = match tcp.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand an accepted connection over");
                    return;
                }
            };
            // The least busy worker first; a worker that stopped is passed over.
            let mut order: Vec<&(mpsc::UnboundedSender<std::net::TcpStream>, Arc<AtomicUsize>)> =
                senders.iter().collect();
            order.sort_by_key(|(_, open)| open.load(Ordering::Relaxed));
            for (conns, open) in order {
                // Counted now, so a burst of connections spreads before the workers run; the
                // worker's `Open` takes the count down when the connection closes.
                open.fetch_add(1, Ordering::Relaxed);
                match conns.send(std_tcp) {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(back)) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        std_tcp = back;
                    }
                }
            }
            tracing::error!("no request worker is running; connection dropped");
        });
        tokio::pin!(accept);
        tokio::pin!(shutdown);
        tokio::select! {
            r = &mut all_done => return r,
            () = &mut shutdown => {}
            () = &mut accept => {}
        }
    }
    front.shared.begin_shutdown();
    drop(listener);
    drop(senders);
    let _ = drain_tx.send(true);
    match tokio::time::timeout(grace, &mut all_done).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
            let _ = abort_tx.send(true);
            all_done.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_own_endpoint;

    #[test]
    fn own_endpoints_are_recognised_exactly() {
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/routes",
            "/admin/targets",
            "/admin/targets/a/drain",
            "/admin/targets/a%2Fb/undrain",
        ] {
            assert!(is_own_endpoint(p), "{p}");
        }
        for p in [
            "/",
            "/healthz/",
            "/metricsx",
            "/admin/targets/",
            "/admin/targets//drain",
            "/admin/targets/a/drain/x",
            "/admin/targets/a/stop",
            "/v1/chat/completions",
        ] {
            assert!(!is_own_endpoint(p), "{p}");
        }
    }
}
