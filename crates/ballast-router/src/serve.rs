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

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::body::ResponseBody;
use crate::state::Shared;

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

    async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Response<ResponseBody> {
        if is_own_endpoint(req.uri().path()) {
            return match self.admin.clone().oneshot(req).await {
                Ok(resp) => resp.map(ResponseBody::Admin),
                Err(never) => match never {},
            };
        }
        crate::proxy::handle(Arc::clone(&self.shared), req).await
    }
}

/// Resolves once `rx` says "drain" (never, if its sender is gone without saying so).
async fn drained(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves one connection until it closes, or until `drain` (then it finishes the request under
/// way and closes).
async fn serve_conn(front: Arc<Front>, tcp: tokio::net::TcpStream, drain: watch::Receiver<bool>) {
    // Answers go out at once (no Nagle delay behind a previous small write).
    let _ = tcp.set_nodelay(true);
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let front = Arc::clone(&front);
        async move { Ok::<_, Infallible>(front.answer(req).await) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        }
        () = drained(drain) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
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
