//! Request and response bodies of proxied requests.
//!
//! A request body is read into memory up to the route's replay bound, so every attempt can send
//! it again. A larger body is streamed: the buffered head first, then the rest straight from the
//! client; an attempt that never started to send it leaves it for the next attempt, and once it
//! started to flow it cannot be retried. A response body is handed on frame by frame with the
//! first frame already read (the point after which the router no longer fails over).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

/// Boxed error of a body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What was read of a client's request body.
#[derive(Debug)]
pub enum RequestBody {
    /// The whole body (replayable).
    Full(Bytes),
    /// The head of a body larger than the bound, and the rest still to be streamed.
    Partial(StreamSource),
}

/// A body larger than the replay bound: its head and the shared rest.
#[derive(Debug, Clone)]
pub struct StreamSource {
    head: Bytes,
    rest: Arc<Mutex<Option<axum::body::Body>>>,
    started: Arc<AtomicBool>,
    client_failed: Arc<AtomicBool>,
}

impl StreamSource {
    /// Whether an attempt already sent part of the body (so it cannot be sent again).
    #[must_use]
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// Whether the client's body broke while being forwarded.
    #[must_use]
    pub fn client_failed(&self) -> bool {
        self.client_failed.load(Ordering::Acquire)
    }
}

/// Reads up to `limit` bytes of `body`. Errors are the client's.
///
/// # Errors
/// The client's body failed while it was read.
pub async fn read_bounded<B>(mut body: B, limit: usize) -> Result<RequestBody, BoxError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    // Most bodies arrive in one frame: no list of chunks, no copy.
    let mut first: Option<Bytes> = None;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        if len > limit {
            break;
        }
        if body.is_end_stream() {
            return Ok(RequestBody::Full(join(first, chunks, len)));
        }
        match body.frame().await {
            None => {
                return Ok(RequestBody::Full(join(first, chunks, len)));
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    match &first {
                        None => first = Some(data),
                        Some(_) => chunks.push(data),
                    }
                }
            }
        }
    }
    Ok(RequestBody::Partial(StreamSource {
        head: join(first, chunks, len),
        rest: Arc::new(Mutex::new(Some(axum::body::Body::new(body)))),
        started: Arc::new(AtomicBool::new(false)),
        client_failed: Arc::new(AtomicBool::new(false)),
    }))
}

fn join(first: Option<Bytes>, chunks: Vec<Bytes>, len: usize) -> Bytes {
    let Some(first) = first else {
        return Bytes::new();
    };
    if chunks.is_empty() {
        return first;
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&first);
    for c in chunks {
        v.extend_from_slice(&c);
    }
    Bytes::from(v)
}

/// The body of one upstream attempt.
#[derive(Debug)]
pub enum ProxyBody {
    /// A replayable copy (or nothing).
    Full(Option<Bytes>),
    /// A streamed body.
    Stream(StreamBody),
}

impl ProxyBody {
    /// A body for one attempt.
    #[must_use]
    pub fn for_attempt(body: &RequestBody) -> Self {
        match body {
            RequestBody::Full(b) if b.is_empty() => Self::Full(None),
            RequestBody::Full(b) => Self::Full(Some(b.clone())),
            RequestBody::Partial(src) => Self::Stream(StreamBody {
                head: Some(src.head.clone()).filter(|b| !b.is_empty()),
                inner: None,
                src: src.clone(),
                done: false,
            }),
        }
    }

    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

/// A streamed request body for one attempt.
#[derive(Debug)]
pub struct StreamBody {
    head: Option<Bytes>,
    inner: Option<axum::body::Body>,
    src: StreamSource,
    done: bool,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(s) => s.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Stream(s) => s.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

impl StreamBody {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        self.src.started.store(true, Ordering::Release);
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.inner.is_none() {
            self.inner = match self.src.rest.lock() {
                Ok(mut g) => g.take(),
                Err(p) => p.into_inner().take(),
            };
            if self.inner.is_none() {
                self.done = true;
                return Poll::Ready(Some(Err(
                    "the request body was already sent by an earlier attempt".into(),
                )));
            }
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                self.src.client_failed.store(true, Ordering::Release);
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Called once when a response that already started to flow breaks.
pub type OnStreamError = Box<dyn FnOnce() + Send + Sync>;

/// A response body with its first frame already read, cut when the upstream goes quiet.
pub struct UpstreamBody {
    first: Option<Frame<Bytes>>,
    inner: hyper::body::Incoming,
    /// The connection the body arrives on, driven while the body is read and returned to the
    /// pool once the body ended.
    conn: Option<(Box<crate::upstream::Conn>, crate::upstream::SharedPool)>,
    on_error: Option<OnStreamError>,
    idle: Duration,
    /// Armed while waiting for the upstream; measures the silence since the wait began (time
    /// the client spends not reading is not counted against the upstream).
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The upstream sent nothing for the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data from the upstream for {} ms; stream cut", .0.as_millis())]
pub struct StreamIdle(pub Duration);

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Wraps a response body whose first frame was read; `idle` is the longest silence allowed.
    #[must_use]
    pub fn new(
        first: Option<Frame<Bytes>>,
        inner: hyper::body::Incoming,
        idle: Duration,
        on_error: OnStreamError,
    ) -> Self {
        Self {
            first,
            inner,
            conn: None,
            on_error: Some(on_error),
            idle,
            idle_timer: None,
        }
    }
}

impl UpstreamBody {
    /// Drives `conn` while the body is read; returns it to `pool` when the body ended.
    #[must_use]
    pub fn with_conn(mut self, conn: Box<crate::upstream::Conn>, pool: crate::upstream::SharedPool) -> Self {
        self.conn = Some((conn, pool));
        self
    }

    /// Hands the connection back to its pool when the response was read to its end.
    fn release(&mut self) {
        if let Some((conn, pool)) = self.conn.take() {
            if self.inner.is_end_stream() && !conn.ended() {
                pool.checkin(conn);
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.release();
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        let conn = this.conn.as_mut().map(|(c, _)| &mut **c);
        match crate::upstream::poll_body_frame(conn, &mut this.inner, cx) {
            Poll::Ready(Some(Err(e))) => {
                this.idle_timer = None;
                this.conn = None;
                if let Some(cb) = this.on_error.take() {
                    cb();
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.idle_timer = None;
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(f))) => {
                this.idle_timer = None;
                if this.inner.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .idle_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    this.idle_timer = None;
                    if let Some(cb) = this.on_error.take() {
                        cb();
                    }
                    return Poll::Ready(Some(Err(Box::new(StreamIdle(idle)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let Some(len) = self.first.as_ref().and_then(Frame::data_ref).map(Bytes::len) else {
            return inner;
        };
        let len = len as u64;
        // Raise the upper bound first: SizeHint insists on lower <= upper at every step.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(len));
        }
        hint.set_lower(inner.lower().saturating_add(len));
        hint
    }
}

/// The body of every answer the router sends: a proxied response, one of its own (errors,
/// small documents) held in memory, or an answer of its admin endpoints.
pub enum ResponseBody {
    /// A proxied upstream response.
    Upstream(UpstreamBody),
    /// Bytes held in memory (`None` once sent).
    Full(Option<Bytes>),
    /// An admin endpoint's answer.
    Admin(axum::body::Body),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream(_) => f.write_str("ResponseBody::Upstream"),
            Self::Full(b) => f.debug_tuple("ResponseBody::Full").field(b).finish(),
            Self::Admin(_) => f.write_str("ResponseBody::Admin"),
        }
    }
}

impl ResponseBody {
    /// A body of these bytes.
    #[must_use]
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        Self::Full(Some(b).filter(|b| !b.is_empty()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(u) => Pin::new(u).poll_frame(cx),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Admin(a) => Pin::new(a).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(u) => u.is_end_stream(),
            Self::Full(b) => b.is_none(),
            Self::Admin(a) => a.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(u) => u.size_hint(),
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Admin(a) => a.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn small_bodies_are_replayable_and_large_ones_stream_once() {
        let body = read_bounded(axum::body::Body::from("hello"), 10).await.unwrap();
        let RequestBody::Full(b) = &body else {
            panic!("expected full")
        };
        assert_eq!(b.as_ref(), b"hello");
        for _ in 0..2 {
            let got = ProxyBody::for_attempt(&body).collect().await.unwrap().to_bytes();
            assert_eq!(got.as_ref(), b"hello");
        }

        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"aaaa")),
            Ok(Bytes::from_static(b"bbbb")),
            Ok(Bytes::from_static(b"cccc")),
        ];
        let stream = futures_util::stream::iter(chunks);
        let body = read_bounded(axum::body::Body::from_stream(stream), 5)
            .await
            .unwrap();
        let RequestBody::Partial(src) = &body else {
            panic!("expected partial")
        };
        assert!(!src.started());
        // An attempt that never polled its body leaves it for the next one.
        drop(ProxyBody::for_attempt(&body));
        assert!(!src.started());
        let got = ProxyBody::for_attempt(&body).collect().await.unwrap().to_bytes();
        assert_eq!(got.as_ref(), b"aaaabbbbcccc");
        assert!(src.started());
        // A second attempt cannot send it again.
        assert!(ProxyBody::for_attempt(&body).collect().await.is_err());
    }
}
