//! Upstream HTTP/1.1 connections, kept alive in a pool per scheme and authority and used by
//! the request that holds them: the request's own task writes the request, reads the response
//! head and streams the body (no connection task, no channel, no cross-task wake-up). When the
//! response was read to its end the connection goes back to the pool.
//!
//! A pooled connection is checked before reuse (closed by the peer, or holding unexpected
//! bytes: dropped), and a request that a reused connection failed before any byte of an answer
//! came back — or answered with a `408 Request Timeout` the upstream wrote as it closed the idle
//! connection — is sent once more on a new connection when its body can be sent again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::ClientBody;
use crate::error::{ErrorKind, RouterError};
use crate::h1::{self, BodyDecoder, Piece, ResponseHead};
use crate::wire::Wire;

/// Idle connections kept per scheme and authority at most (per pool shard).
const MAX_IDLE_PER_KEY: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The transport of an upstream connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Io {
    /// `http`.
    Plain(TcpStream),
    /// `https`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

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
#[derive(Debug)]
pub struct Conn {
    /// The stream and its read buffer.
    pub wire: Wire<Io>,
    key: PoolKey,
    /// Taken from the pool (it served requests before).
    reused: bool,
    idle_since: Instant,
}

impl Conn {
    /// Whether a pooled connection is still open (a system call on plain TCP).
    async fn still_open(&mut self) -> bool {
        match &self.wire.io {
            Io::Plain(tcp) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            Io::Tls(_) => {
                std::future::poll_fn(|cx| {
                    let mut probe = [0u8; 1];
                    let mut rb = ReadBuf::new(&mut probe);
                    Poll::Ready(Pin::new(&mut self.wire.io).poll_read(cx, &mut rb).is_pending())
                })
                .await
            }
        }
    }

    /// Reads the head of the response (skipping interim `1xx` answers).
    ///
    /// # Errors
    /// The connection failed or closed first, or the head is malformed.
    async fn read_head(&mut self) -> Result<ResponseHead, ReadError> {
        let mut any = false;
        loop {
            match h1::parse_response(&mut self.wire.rbuf) {
                Ok(Some(head)) if head.status == 101 => {
                    return Err(ReadError::Answered(RouterError::new(
                        ErrorKind::UpstreamIo,
                        "the upstream switched protocols, which the router does not proxy",
                    )))
                }
                Ok(Some(head)) if head.status < 200 => {
                    // An interim answer: the final one may already be in the buffer.
                    any = true;
                    continue;
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(e) => {
                    return Err(ReadError::Answered(RouterError::new(
                        ErrorKind::UpstreamIo,
                        format!("the upstream's answer is not valid HTTP/1.1: {e}"),
                    )))
                }
            }
            any |= !self.wire.rbuf.is_empty();
            match self.wire.fill().await {
                Ok(0) if any => {
                    return Err(ReadError::Answered(RouterError::new(
                        ErrorKind::UpstreamIo,
                        "the connection closed in the middle of the response head",
                    )))
                }
                Ok(0) => {
                    return Err(ReadError::Nothing(
                        "the connection closed before the request was answered".to_owned(),
                    ))
                }
                Ok(_) => {}
                Err(e) if any => {
                    return Err(ReadError::Answered(RouterError::new(
                        ErrorKind::UpstreamIo,
                        format!("connection failed: {e}"),
                    )))
                }
                Err(e) => return Err(ReadError::Nothing(format!("connection failed: {e}"))),
            }
        }
    }
}

/// Why a response head could not be read.
enum ReadError {
    /// Nothing came back: the request may be sent again on a fresh connection.
    Nothing(String),
    /// Part of an answer came back (or it was not HTTP).
    Answered(RouterError),
}

/// The next piece of a response body arriving on `conn`.
///
/// # Errors
/// The connection failed, closed before the body ended, or the body is malformed.
pub async fn next_piece(conn: &mut Conn, decoder: &mut BodyDecoder) -> Result<Piece, String> {
    loop {
        match decoder.decode(&mut conn.wire.rbuf) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        match conn.wire.fill().await {
            Ok(0) if decoder.until_close() => return Ok(Piece::End),
            Ok(0) => return Err("the upstream connection closed before the response ended".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("the upstream connection failed: {e}")),
        }
    }
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
pub struct Pool {
    idle: Vec<Mutex<IdleMap>>,
    tls: tokio_rustls::TlsConnector,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A request ready to go: its head (and its whole body, or the buffered start of it) in one
/// buffer, and the rest of a streamed body still on the client connection.
pub struct Outgoing<'a, S> {
    /// Head and buffered body, encoded.
    pub bytes: &'a [u8],
    /// The rest of a body larger than the replay buffer, and whether it is sent chunked.
    pub rest: Option<(&'a mut ClientBody, &'a mut Wire<S>, bool)>,
}

/// A response head and the connection its body arrives on.
#[derive(Debug)]
pub struct Answer {
    /// The head.
    pub head: ResponseHead,
    /// The connection.
    pub conn: Box<Conn>,
    /// The whole request went out (else the connection cannot be reused).
    pub request_sent: bool,
    /// When the first-byte limit runs out: `first_byte` after the request was written (or after
    /// the upstream answered before the end of a streamed body).
    pub first_byte_by: tokio::time::Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool whose `https` connections use this TLS configuration.
    #[must_use]
    pub fn new(mut tls: rustls::ClientConfig) -> Self {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            idle: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        }
    }

    /// An idle connection for `key` that can take a request now, if the pool has one. With
    /// `probe`, the connection is checked for a close by the peer first (a system call); without,
    /// a closed one shows when the request is sent, and the caller sends it again elsewhere.
    async fn take_idle(&self, key: &PoolKey, probe: bool) -> Option<Box<Conn>> {
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
            if conn.idle_since.elapsed() < IDLE_TIMEOUT
                && conn.wire.rbuf.is_empty()
                && (!probe || conn.still_open().await)
            {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    /// A new connection to `key`, given up after `connect_ms` (TCP and TLS together).
    ///
    /// # Errors
    /// Connecting (or the TLS handshake) failed or timed out.
    async fn connect(&self, key: &PoolKey, connect_ms: u64) -> Result<Box<Conn>, RouterError> {
        let limit = Duration::from_millis(connect_ms);
        let work = async {
            let host = key.authority.host().trim_start_matches('[').trim_end_matches(']');
            let https = key.scheme == Scheme::HTTPS;
            let port = key.authority.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = TcpStream::connect((host, port)).await.map_err(|e| {
                RouterError::new(
                    ErrorKind::Connect,
                    format!("cannot connect to {}: {e}", key.authority),
                )
            })?;
            let _ = tcp.set_nodelay(true);
            let io = if https {
                let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                    RouterError::new(
                        ErrorKind::Connect,
                        format!("cannot use {host:?} as a TLS server name: {e}"),
                    )
                })?;
                let tls = self.tls.connect(name, tcp).await.map_err(|e| {
                    RouterError::new(
                        ErrorKind::Connect,
                        format!("TLS handshake with {} failed: {e}", key.authority),
                    )
                })?;
                Io::Tls(Box::new(tls))
            } else {
                Io::Plain(tcp)
            };
            Ok(Box::new(Conn {
                wire: Wire::new(io),
                key: key.clone(),
                reused: false,
                idle_since: Instant::now(),
            }))
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(RouterError::new(
                ErrorKind::ConnectTimeout,
                format!("connect to {} timed out after {connect_ms} ms", key.authority),
            )),
        }
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn checkin(&self, mut conn: Box<Conn>) {
        if !conn.wire.rbuf.is_empty() {
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

    /// Sends a request on a pooled connection (or a new one) and reads the response head. A
    /// request that a reused connection failed before any answer came back is sent once more on
    /// a new connection, unless part of a streamed body was already read from the client.
    ///
    /// Connecting may take `connect_ms`; the head must arrive within `first_byte` of the
    /// request being written (the time a client takes to upload its body is not the target's).
    ///
    /// # Errors
    /// Connecting failed or timed out, the upstream failed before answering, or its answer did
    /// not start within `first_byte`.
    pub async fn exchange<S>(
        &self,
        key: &PoolKey,
        connect_ms: u64,
        first_byte: Duration,
        mut out: Outgoing<'_, S>,
    ) -> Result<Answer, RouterError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // A body that can be sent again needs no check of the connection beforehand.
        let replayable = out.rest.is_none();
        if let Some(conn) = self.take_idle(key, !replayable).await {
            match send_on(conn, &mut out, first_byte).await {
                Ok(a) => return Ok(a),
                Err(SendError::Failed(e)) => return Err(e),
                Err(SendError::NotSent(e)) => {
                    if out.rest.as_ref().is_some_and(|(b, _, _)| b.started()) {
                        return Err(e);
                    }
                }
            }
        }
        // Boxed: connecting is rare on a warm pool, and its state would otherwise be part of
        // every request's future.
        let conn = Box::pin(self.connect(key, connect_ms)).await?;
        send_on(conn, &mut out, first_byte).await.map_err(|e| match e {
            SendError::NotSent(e) | SendError::Failed(e) => e,
        })
    }
}

/// Why a request could not be sent or answered on a connection.
enum SendError {
    /// A reused connection failed before anything came back: may be sent again elsewhere.
    NotSent(RouterError),
    /// The request may have been acted on.
    Failed(RouterError),
}

/// Writes the request (streaming the rest of a large body while watching for an early answer)
/// and reads the response head.
async fn send_on<S>(
    mut conn: Box<Conn>,
    out: &mut Outgoing<'_, S>,
    first_byte: Duration,
) -> Result<Answer, SendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reused = conn.reused;
    let io_error = |what: String| {
        let e = RouterError::new(ErrorKind::UpstreamIo, what);
        if reused {
            SendError::NotSent(e)
        } else {
            SendError::Failed(e)
        }
    };
    if let Err(e) = conn.wire.write_all(out.bytes).await {
        return Err(io_error(format!("cannot send the request: {e}")));
    }
    let mut request_sent = true;
    if let Some((body, client, chunked)) = out.rest.as_mut() {
        request_sent = false;
        let mut chunk = Vec::new();
        loop {
            // An upstream that answers before the body is complete (e.g. refusing it) is heard.
            let step = tokio::select! {
                biased;
                r = conn.wire.fill() => Step::Upstream(r),
                p = body.next_rest(client) => Step::Body(p),
            };
            match step {
                Step::Upstream(Ok(0) | Err(_)) => {
                    return Err(SendError::Failed(RouterError::new(
                        ErrorKind::UpstreamIo,
                        "the upstream closed the connection while the request body was sent",
                    )))
                }
                Step::Upstream(Ok(_)) => break,
                Step::Body(Err(e)) => {
                    return Err(SendError::Failed(RouterError::new(
                        ErrorKind::ClientBody,
                        format!("the request body broke while it was forwarded: {e}"),
                    )))
                }
                Step::Body(Ok(piece)) => {
                    chunk.clear();
                    match (&piece, *chunked) {
                        (Some(data), true) if !data.is_empty() => h1::put_chunk(&mut chunk, data),
                        (Some(data), false) => chunk.extend_from_slice(data),
                        (Some(_), true) => {}
                        (None, true) => chunk.extend_from_slice(h1::LAST_CHUNK),
                        (None, false) => {}
                    }
                    if let Err(e) = conn.wire.write_all(&chunk).await {
                        return Err(SendError::Failed(RouterError::new(
                            ErrorKind::UpstreamIo,
                            format!("cannot send the request body: {e}"),
                        )));
                    }
                    if piece.is_none() {
                        request_sent = true;
                        break;
                    }
                }
            }
        }
    }
    // The first-byte limit starts once the request is out (or the upstream spoke early).
    let first_byte_by = tokio::time::Instant::now() + first_byte;
    let Ok(read) = tokio::time::timeout_at(first_byte_by, conn.read_head()).await else {
        return Err(SendError::Failed(RouterError::new(
            ErrorKind::FirstByteTimeout,
            format!(
                "no response within {} ms of the request being sent",
                first_byte.as_millis()
            ),
        )));
    };
    match read {
        // An upstream closing an idle connection may first say `408 Request Timeout` (RFC 9110
        // §15.5.9) unasked: on a reused connection, for a request that can be sent again, that
        // is no answer to this request.
        Ok(head) if reused && head.status == 408 && out.rest.is_none() => {
            Err(SendError::NotSent(RouterError::new(
                ErrorKind::UpstreamIo,
                "the reused connection was timed out by the upstream (408)",
            )))
        }
        Ok(head) => Ok(Answer {
            head,
            conn,
            request_sent,
            first_byte_by,
        }),
        Err(ReadError::Nothing(why)) => Err(io_error(why)),
        Err(ReadError::Answered(e)) => Err(SendError::Failed(e)),
    }
}

enum Step {
    Upstream(std::io::Result<usize>),
    Body(Result<Option<Bytes>, crate::body::BodyError>),
}
