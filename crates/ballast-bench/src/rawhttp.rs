//! A minimal HTTP/1.1 keep-alive client for the request-rate phases, in the spirit of `wrk`:
//! one connection per worker, a pre-encoded request written as is, and an answer read by its
//! `Content-Length`. It costs the shared CPU far less per request than a general-purpose client,
//! so more of the machine is left to the server being measured. Anything it does not handle
//! (chunked answers, `1xx`) is reported as an error rather than guessed at.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::load::OpError;

/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// A pre-encoded request.
#[derive(Debug, Clone)]
pub struct RawRequest(bytes::Bytes);

impl RawRequest {
    /// `GET path` to `addr`.
    pub fn get(addr: SocketAddr, path: &str) -> Self {
        Self(bytes::Bytes::from(format!(
            "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: */*\r\n\r\n"
        )))
    }

    /// A request already encoded as HTTP/1.1 bytes (with `content-length` when it has a body).
    pub fn encoded(bytes: bytes::Bytes) -> Self {
        Self(bytes)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> Self {
        let mut v = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\naccept: */*\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        v.extend_from_slice(body);
        Self(bytes::Bytes::from(v))
    }
}

/// One keep-alive connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn transport(e: impl std::fmt::Display) -> OpError {
    OpError::Transport(e.to_string())
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, OpError> {
        let stream = TcpStream::connect(addr).await.map_err(transport)?;
        stream.set_nodelay(true).map_err(transport)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `req` and reads the answer: `(status, body, keep_alive)`.
    pub async fn send(&mut self, req: &RawRequest) -> Result<(u16, Vec<u8>, bool), OpError> {
        self.stream.write_all(&req.0).await.map_err(transport)?;
        let (head_len, status, content_length, keep_alive) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(transport("answer head too large"));
            }
            self.fill().await?;
        };
        let total = head_len + content_length;
        while self.buf.len() < total {
            self.fill().await?;
        }
        let body = self.buf[head_len..total].to_vec();
        self.buf.drain(..total);
        Ok((status, body, keep_alive))
    }

    async fn fill(&mut self) -> Result<(), OpError> {
        self.buf.reserve(16 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await.map_err(transport)?;
        if n == 0 {
            return Err(transport("connection closed by the server"));
        }
        Ok(())
    }
}

/// Parses a complete answer head: `(head length, status, content length, keep-alive)`;
/// `Ok(None)` when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, usize, bool)>, OpError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| transport("answer head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| transport(format!("bad status line {status_line:?}")))?;
    let mut content_length = None;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| transport("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(transport(format!("unsupported transfer-encoding {value:?}")));
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    let content_length = content_length.ok_or_else(|| transport("answer without content-length"))?;
    Ok(Some((end + 4, status, content_length, keep_alive)))
}

/// One connection slot per worker, (re)connected on demand.
pub struct Pool {
    addr: SocketAddr,
    slots: Vec<tokio::sync::Mutex<Option<RawConn>>>,
}

impl Pool {
    /// `workers` empty slots.
    pub fn new(addr: SocketAddr, workers: usize) -> Self {
        Self {
            addr,
            slots: (0..workers.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
        }
    }

    /// Sends `req` on worker `w`'s connection; a 2xx answer's body is returned.
    pub async fn send(&self, w: usize, req: &RawRequest) -> Result<Vec<u8>, OpError> {
        let slot = self.slots.get(w).ok_or_else(|| transport("no such worker"))?;
        let mut conn = slot.lock().await;
        if conn.is_none() {
            *conn = Some(RawConn::connect(self.addr).await?);
        }
        let Some(c) = conn.as_mut() else {
            return Err(transport("not connected"));
        };
        match c.send(req).await {
            Ok((status, body, keep_alive)) => {
                if !keep_alive {
                    *conn = None;
                }
                if (200..300).contains(&status) {
                    Ok(body)
                } else {
                    Err(OpError::Status(
                        status,
                        String::from_utf8_lossy(&body).into_owned(),
                    ))
                }
            }
            Err(e) => {
                *conn = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() -> Result<(), String> {
        let a = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let got = parse_head(a).map_err(|e| format!("{e:?}"))?;
        assert_eq!(got, Some((a.len() - 2, 200, 2, true)));
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").map_err(|e| format!("{e:?}"))?,
            None
        );
        let close = b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            parse_head(close).map_err(|e| format!("{e:?}"))?,
            Some((close.len(), 404, 0, false))
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        Ok(())
    }
}
