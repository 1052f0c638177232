//! A connection with its read buffer: the one shape both the client side and the upstream side
//! of the router read messages from (heads are parsed straight out of the buffer, bodies taken
//! off it piece by piece).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Bytes read at least per read call once the buffer runs low.
const READ_CHUNK: usize = 16 * 1024;

/// A byte stream and what was read from it but not consumed yet.
#[derive(Debug)]
pub struct Wire<S> {
    /// The stream.
    pub io: S,
    /// Read, not yet consumed.
    pub rbuf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Wraps a stream.
    pub fn new(io: S) -> Self {
        Self {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream. Cancel-safe.
    ///
    /// # Errors
    /// The read failed.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.rbuf).await
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    /// The write failed.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await
    }
}
