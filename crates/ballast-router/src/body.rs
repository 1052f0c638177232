//! The client's request body.
//!
//! A request body is read into memory up to the route's replay bound, so every attempt can send
//! it again. A larger body is streamed: the buffered head first, then the rest straight from the
//! client connection; once a byte of the rest was read it cannot be sent again, so that request
//! is not retried after its body started to flow.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::h1::{BodyDecoder, Framing, H1Error, Piece};
use crate::wire::Wire;

/// What was read of a client's request body.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// The whole body (replayable).
    Full(Bytes),
    /// The head of a body larger than the bound; the rest is still on the client connection.
    Partial(Bytes),
}

/// Why the client's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or closed before the body ended.
    #[error("the client connection ended before the request body did: {0}")]
    Io(#[from] std::io::Error),
    /// The body is malformed.
    #[error(transparent)]
    Framing(#[from] H1Error),
    /// The client sent nothing of the rest of its body for too long.
    #[error("the client sent no byte of its request body for {} ms", .0.as_millis())]
    Stalled(Duration),
}

/// The reading state of one request's body on its client connection.
#[derive(Debug)]
pub struct ClientBody {
    framing: Framing,
    decoder: BodyDecoder,
    /// The client asked for `100 Continue` and has not been told yet.
    continue_pending: bool,
    /// A byte past the replay buffer was read (the body can no longer be sent again).
    started: bool,
    /// Longest wait for the next bytes of the body.
    stall: Duration,
    /// Reading the body failed.
    failed: bool,
}

impl ClientBody {
    /// A body framed as `framing`; `expect_continue` when the client sent
    /// `Expect: 100-continue` (answered when the body is first read). A client that sends no
    /// byte of its body for `stall` has failed it.
    #[must_use]
    pub fn new(framing: Framing, expect_continue: bool, stall: Duration) -> Self {
        Self {
            framing,
            decoder: BodyDecoder::new(framing),
            continue_pending: expect_continue,
            started: false,
            stall,
            failed: false,
        }
    }

    /// How the client framed the body.
    #[must_use]
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether the body was read to its end (the connection can take another request).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Whether bytes past the replay buffer were read.
    #[must_use]
    pub fn started(&self) -> bool {
        self.started
    }

    /// Whether reading the body failed (the client's fault).
    #[must_use]
    pub fn client_failed(&self) -> bool {
        self.failed
    }

    /// The next piece of the body; `None` at its end.
    ///
    /// # Errors
    /// The connection ended early or the body is malformed.
    pub async fn next<S>(&mut self, wire: &mut Wire<S>) -> Result<Option<Bytes>, BodyError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let r = self.next_inner(wire).await;
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    async fn next_inner<S>(&mut self, wire: &mut Wire<S>) -> Result<Option<Bytes>, BodyError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            match self.decoder.decode(&mut wire.rbuf)? {
                Some(Piece::Data(b)) => return Ok(Some(b)),
                Some(Piece::End) => return Ok(None),
                None => {}
            }
            if self.continue_pending {
                self.continue_pending = false;
                wire.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            match tokio::time::timeout(self.stall, wire.fill()).await {
                Err(_) => return Err(BodyError::Stalled(self.stall)),
                Ok(Ok(0)) => return Err(BodyError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(r) => {
                    r?;
                }
            }
        }
    }

    /// The next piece of the part of the body past the replay buffer (marks the body as
    /// started).
    ///
    /// # Errors
    /// As [`Self::next`].
    pub async fn next_rest<S>(&mut self, wire: &mut Wire<S>) -> Result<Option<Bytes>, BodyError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.started = true;
        self.next(wire).await
    }

    /// Reads up to `limit` bytes of the body: all of it when it fits, else its first bytes
    /// (a little over `limit`) with the rest left on the connection.
    ///
    /// # Errors
    /// As [`Self::next`].
    pub async fn read_bounded<S>(
        &mut self,
        wire: &mut Wire<S>,
        limit: usize,
    ) -> Result<RequestBody, BodyError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut first: Option<Bytes> = None;
        let mut more: Vec<u8> = Vec::new();
        let mut len = 0usize;
        loop {
            if len > limit {
                return Ok(RequestBody::Partial(join(first, more)));
            }
            match self.next(wire).await? {
                None => return Ok(RequestBody::Full(join(first, more))),
                Some(data) => {
                    len += data.len();
                    match &first {
                        // Most bodies arrive in one piece: no copy.
                        None => first = Some(data),
                        Some(f) => {
                            if more.is_empty() {
                                more.extend_from_slice(f);
                            }
                            more.extend_from_slice(&data);
                        }
                    }
                }
            }
        }
    }
}

fn join(first: Option<Bytes>, more: Vec<u8>) -> Bytes {
    if more.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(more)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    const STALL: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_body_that_stops_coming_fails_after_the_stall_limit() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut wire = Wire::new(ours);
        peer.write_all(b"abc").await.unwrap();
        let mut body = ClientBody::new(Framing::Length(10), false, Duration::from_millis(50));
        let err = body.read_bounded(&mut wire, 100).await.unwrap_err();
        assert!(matches!(err, BodyError::Stalled(_)), "{err}");
        assert!(body.client_failed());
        drop(peer);
    }

    #[tokio::test]
    async fn small_bodies_are_whole_and_large_ones_leave_their_rest() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut wire = Wire::new(ours);
        peer.write_all(b"hello").await.unwrap();
        let mut body = ClientBody::new(Framing::Length(5), false, STALL);
        let RequestBody::Full(b) = body.read_bounded(&mut wire, 10).await.unwrap() else {
            panic!("expected full")
        };
        assert_eq!(b.as_ref(), b"hello");
        assert!(body.is_done());

        peer.write_all(b"4\r\naaaa\r\n4\r\nbbbb\r\n").await.unwrap();
        let mut body = ClientBody::new(Framing::Chunked, false, STALL);
        let RequestBody::Partial(head) = body.read_bounded(&mut wire, 5).await.unwrap() else {
            panic!("expected partial")
        };
        assert_eq!(head.as_ref(), b"aaaabbbb");
        assert!(!body.started());
        peer.write_all(b"4\r\ncccc\r\n0\r\n\r\n").await.unwrap();
        assert_eq!(
            body.next_rest(&mut wire).await.unwrap().unwrap().as_ref(),
            b"cccc"
        );
        assert!(body.started());
        assert!(body.next_rest(&mut wire).await.unwrap().is_none());
        assert!(body.is_done());
    }

    #[tokio::test]
    async fn a_body_cut_short_is_the_clients_failure_and_continue_is_sent_once() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut wire = Wire::new(ours);
        let mut body = ClientBody::new(Framing::Length(10), true, STALL);
        let reader = tokio::spawn(async move {
            let r = body.read_bounded(&mut wire, 100).await;
            (r.is_err(), body.client_failed())
        });
        let mut got = [0u8; 25];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
        peer.write_all(b"abc").await.unwrap();
        drop(peer);
        assert_eq!(reader.await.unwrap(), (true, true));
    }
}
