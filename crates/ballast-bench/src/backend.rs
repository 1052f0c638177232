//! A fast local backend for the router benchmark: a minimal HTTP/1.1 keep-alive server that
//! answers every request with one fixed chat-completion JSON body, the way `nginx` answering a
//! static file would. It reads request bodies by `Content-Length` or chunked encoding and
//! handles pipelined requests; anything else closes the connection.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::InProcess;

/// The fixed answer body.
pub const BODY: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Starts the backend on `127.0.0.1:0` on its own runtime with `threads` workers.
pub fn start(threads: usize) -> anyhow::Result<InProcess> {
    InProcess::spawn("backend", threads, |addr_tx, stop| async move {
        let listener = match TcpListener::bind(("127.0.0.1", 0)).await {
            Ok(l) => l,
            Err(e) => {
                let _ = addr_tx.send(Err(e.to_string()));
                return Err(e).context("cannot bind the backend");
            }
        };
        let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
        let response = std::sync::Arc::new(response());
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let response = response.clone();
                tokio::spawn(async move {
                    let _ = serve_conn(stream, &response).await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stop => {}
        }
        Ok(())
    })
}

fn response() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// How a request body is framed.
enum Framing {
    Length(usize),
    Chunked,
}

async fn serve_conn(mut stream: TcpStream, response: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        // Head.
        let (head_len, framing, close) = loop {
            if let Some(parsed) = parse_request_head(&buf) {
                break parsed?;
            }
            if buf.len() > MAX_HEAD || !fill(&mut stream, &mut buf).await? {
                return Ok(());
            }
        };
        buf.drain(..head_len);
        // Body.
        match framing {
            Framing::Length(n) => {
                while buf.len() < n {
                    if !fill(&mut stream, &mut buf).await? {
                        return Ok(());
                    }
                }
                buf.drain(..n);
            }
            Framing::Chunked => loop {
                let Some(line_end) = find(&buf, b"\r\n") else {
                    if !fill(&mut stream, &mut buf).await? {
                        return Ok(());
                    }
                    continue;
                };
                let size_text = std::str::from_utf8(&buf[..line_end]).unwrap_or("x");
                let size_text = size_text.split(';').next().unwrap_or("x").trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
                // The chunk, its CRLF; the last chunk (0) is followed by an empty trailer line.
                let need = line_end + 2 + size + 2;
                while buf.len() < need {
                    if !fill(&mut stream, &mut buf).await? {
                        return Ok(());
                    }
                }
                buf.drain(..need);
                if size == 0 {
                    break;
                }
            },
        }
        stream.write_all(response).await?;
        if close {
            return Ok(());
        }
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.reserve(8 * 1024);
    Ok(stream.read_buf(buf).await? > 0)
}

/// `(head length, body framing, connection: close)` once the head is complete.
fn parse_request_head(buf: &[u8]) -> Option<std::io::Result<(usize, Framing, bool)>> {
    let end = find(buf, b"\r\n\r\n")?;
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Some(Err(bad("request head is not UTF-8")));
    };
    let mut framing = Framing::Length(0);
    let mut close = false;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => framing = Framing::Length(n),
                Err(_) => return Some(Err(bad("bad content-length"))),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        }
    }
    Some(Ok((end + 4, framing, close)))
}

/// The backend's address, for the routes file and HAProxy's config.
pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rawhttp::{RawConn, RawRequest};

    #[tokio::test]
    async fn answers_keep_alive_and_chunked_requests() -> anyhow::Result<()> {
        let backend = start(1)?;
        let mut conn = RawConn::connect(backend.addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let req = RawRequest::post_json(backend.addr, "/v1/chat/completions", b"{\"model\":\"m\"}");
        for _ in 0..3 {
            let (status, body, keep) = conn.send(&req).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            assert_eq!((status, keep), (200, true));
            assert_eq!(body, BODY.as_bytes());
        }
        let mut s = TcpStream::connect(backend.addr).await?;
        s.write_all(
            b"POST /x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await?;
        let mut got = vec![0u8; response().len()];
        s.read_exact(&mut got).await?;
        assert_eq!(got, response());
        backend.stop()
    }
}
