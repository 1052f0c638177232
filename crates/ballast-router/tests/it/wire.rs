//! HTTP/1.1 on the wire: what raw clients and raw upstreams see of the router — refused
//! malformed or ambiguous requests, request bodies in both framings, pipelining, `100 Continue`,
//! answers of unknown length, `HEAD`, interim answers, and kept-alive upstream connections that
//! the upstream closed while they sat in the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{target, TestRouter};

/// A request as a scripted upstream received it: its head (lowercased) and decoded body.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

/// A raw upstream answering each request with what `answer` returns for it (bytes, and whether
/// to close the connection afterwards).
struct Scripted {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    conns: Arc<AtomicU64>,
    /// Connections the upstream has closed (after an answer, or idle).
    closed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = Arc<dyn Fn(&Received) -> (Vec<u8>, bool) + Send + Sync>;

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// Reads one request (head, then a Content-Length or chunked body) off `s`.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(s, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    buf.drain(..head_end);
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(s, buf).await {
                    return None;
                }
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?.trim(), 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !fill(s, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            if !fill(s, buf).await {
                return None;
            }
        }
        body = buf.drain(..len).collect();
    }
    Some(Received { head, body })
}

async fn scripted(answer: impl Fn(&Received) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Scripted {
    scripted_closing_idle(None, answer).await
}

/// Like [`scripted`]; with `idle_close`, a connection that sat idle that long is closed
/// without notice (as a keep-alive timeout does).
async fn scripted_closing_idle(
    idle_close: Option<Duration>,
    answer: impl Fn(&Received) -> (Vec<u8>, bool) + Send + Sync + 'static,
) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let conns = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let answer: Answer = Arc::new(answer);
    let (rec, count, ended) = (Arc::clone(&received), Arc::clone(&conns), Arc::clone(&closed));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (rec, answer, ended) = (Arc::clone(&rec), Arc::clone(&answer), Arc::clone(&ended));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                // Counted when this block ends, however it ends.
                let _closed = CountOnDrop(ended);
                loop {
                    let next = read_request(&mut s, &mut buf);
                    let req = match idle_close {
                        Some(idle) => match tokio::time::timeout(idle, next).await {
                            Ok(r) => r,
                            Err(_) => return,
                        },
                        None => next.await,
                    };
                    let Some(req) = req else { return };
                    rec.lock().unwrap().push(req.clone());
                    let (bytes, close) = answer(&req);
                    if s.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        url,
        received,
        conns,
        closed,
        task,
    }
}

/// Adds one to its counter when dropped.
struct CountOnDrop(Arc<AtomicU64>);

impl Drop for CountOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn prefix_routes(up: &Scripted, replay: usize) -> String {
    format!(
        "generation = 1\n[[routes]]\nname = \"p\"\nkind = \"prefix\"\nprefix = \"/p\"\nretry = {{ replay_buffer_bytes = {replay} }}\n{}",
        target("p-a", &up.url, "eu", "m/p/1")
    )
}

/// Sends `bytes` on a new connection and reads until the router closes it.
async fn exchange_until_close(router: &TestRouter, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_close(&mut s).await
}

/// Everything the router sends until it closes the connection (within 10 s).
async fn read_until_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the router closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_and_ambiguous_requests_are_refused_and_the_connection_closed() {
    let up = scripted(|_| (ok("{}"), false)).await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let big = format!("GET /p HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    let cases: [(&[u8], &str); 6] = [
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400 "),
        (
            b"GET http://elsewhere/p HTTP/1.1\r\nhost: x\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (
            b"POST /p HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 400 ",
        ),
        (
            b"POST /p HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
            "HTTP/1.1 400 ",
        ),
        (
            b"POST /p HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 501 ",
        ),
        (big.as_bytes(), "HTTP/1.1 431 "),
    ];
    for (bytes, status) in cases {
        let answer = exchange_until_close(&router, bytes).await;
        assert!(answer.starts_with(status), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.contains("\"code\":\"invalid_request\""), "{answer}");
    }
    // Nothing reached the upstream, and the router still serves.
    assert!(up.received.lock().unwrap().is_empty());
    let r = crate::support::client()
        .get(router.url("/p/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn request_bodies_arrive_whole_in_either_framing_replayable_or_streamed() {
    let up = scripted(|r| (ok(&r.body.len().to_string()), false)).await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let small: Vec<u8> = (0..700u32).map(|i| b"abcdefghij"[(i % 10) as usize]).collect();
    let large: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    for body in [&small, &large] {
        // Chunked by the client, in uneven chunks.
        let mut req =
            b"POST /p/up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
                .to_vec();
        for piece in body.chunks(333) {
            req.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\ntrailer-x: 1\r\n\r\n");
        let answer = exchange_until_close(&router, &req).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with(&format!("\r\n\r\n{}", body.len())), "{answer}");
        // With a Content-Length.
        let mut req = format!(
            "PUT /p/up HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let answer = exchange_until_close(&router, &req).await;
        assert!(answer.ends_with(&format!("\r\n\r\n{}", body.len())), "{answer}");
    }
    let got = up.received.lock().unwrap().clone();
    assert_eq!(got.len(), 4);
    for (r, body) in got.iter().zip([&small, &small, &large, &large]) {
        assert_eq!(&r.body, body, "{}", r.head);
        // Hop-by-hop fields never travel on, the Host is the target's.
        assert!(!r.head.contains("connection:"), "{}", r.head);
        assert!(!r.head.contains("host: x\r"), "{}", r.head);
    }
    // A replayable body goes on with a length; a streamed one keeps the client's framing.
    assert!(got[0].head.contains("content-length: 700"), "{}", got[0].head);
    assert!(
        got[2].head.contains("transfer-encoding: chunked"),
        "{}",
        got[2].head
    );
    assert!(got[3].head.contains("content-length: 50000"), "{}", got[3].head);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_continue_is_sent_when_asked() {
    let up = scripted(|r| (ok(&String::from_utf8_lossy(&r.body)), false)).await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let answer = exchange_until_close(
        &router,
        b"POST /p/a HTTP/1.1\r\ncontent-length: 5\r\n\r\nfirstPOST /p/b HTTP/1.1\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecond",
    )
    .await;
    let first = answer.find("first").expect(&answer);
    let second = answer.find("second").expect(&answer);
    assert!(first < second, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");

    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(
        b"POST /p/c HTTP/1.1\r\ncontent-length: 4\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"body").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.starts_with("HTTP/1.1 200 ") && rest.ends_with("body"),
        "{rest}"
    );
    // The expectation is the router's business: the upstream never sees it.
    assert!(up
        .received
        .lock()
        .unwrap()
        .iter()
        .all(|r| !r.head.contains("expect")));
}

#[tokio::test]
async fn answers_of_unknown_length_are_chunked_for_http_1_1_and_end_with_the_connection_for_1_0() {
    // An upstream that frames nothing: its answer lasts until it closes the connection.
    let up = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it".to_vec(),
            true,
        )
    })
    .await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let answer = exchange_until_close(&router, b"GET /p/x HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert!(answer.contains("transfer-encoding: chunked\r\n"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n9\r\nall of it\r\n0\r\n\r\n"),
        "{answer}"
    );
    let answer = exchange_until_close(&router, b"GET /p/x HTTP/1.0\r\n\r\n").await;
    assert!(!answer.contains("transfer-encoding"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nall of it"), "{answer}");
    // A kept-alive HTTP/1.1 client gets the same answer and can go on.
    let r = crate::support::client()
        .get(router.url("/p/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "all of it");
    let r = crate::support::client()
        .get(router.url("/p/z"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "all of it");
}

#[tokio::test]
async fn head_requests_and_interim_answers_pass_without_confusing_the_connection() {
    let up = scripted(|r| {
        if r.head.starts_with("head ") {
            (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n".to_vec(), false)
        } else {
            let mut a = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n".to_vec();
            a.extend_from_slice(&ok("after hints"));
            (a, false)
        }
    })
    .await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let answer = exchange_until_close(
        &router,
        b"HEAD /p/a HTTP/1.1\r\n\r\nGET /p/b HTTP/1.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (head_answer, get_answer) = answer.split_once("\r\n\r\n").expect(&answer);
    assert!(head_answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(head_answer.contains("content-length: 10"), "{answer}");
    assert!(get_answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(!get_answer.contains("103"), "{answer}");
    assert!(get_answer.ends_with("after hints"), "{answer}");
    // Both went over one upstream connection.
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_while_idle_is_replaced_without_a_failure() {
    let up = scripted_closing_idle(Some(Duration::from_millis(100)), |_| (ok("{}"), false)).await;
    // One worker: both requests go through the same pool shard.
    let router = TestRouter::start_with("eu", &prefix_routes(&up, 1024), |c| c.workers = 1).await;
    let client = crate::support::client();
    for i in 0..3u64 {
        let r = client.get(router.url(&format!("/p/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["x-ballast-attempts"], "1", "request {i}");
        // The upstream drops the pooled connection once it has been idle for a while.
        let closed = &up.closed;
        crate::support::eventually(
            Duration::from_secs(5),
            "the upstream closed the idle connection",
            || async move { closed.load(Ordering::SeqCst) == i + 1 },
        )
        .await;
    }
    assert_eq!(up.conns.load(Ordering::SeqCst), 3);
    assert_eq!(
        up.received.lock().unwrap().len(),
        3,
        "each request reached the upstream once"
    );
    assert_eq!(router.target("p-a").await["consecutive_failures"], 0);
    assert_eq!(router.target_phase("p-a").await, "healthy");
}

#[tokio::test]
async fn empty_bodies_keep_their_length_and_the_routers_own_fields_are_not_doubled() {
    // An upstream that is itself behind a router says what served it; this router says it anew.
    let up = scripted(|_| {
        (
            b"HTTP/1.1 200 OK\r\nx-ballast-route: inner\r\nx-ballast-attempts: 3\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
            false,
        )
    })
    .await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let answer = exchange_until_close(
        &router,
        b"POST /p/empty HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /p/none HTTP/1.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("x-ballast-route: ").count(), 2, "{answer}");
    assert_eq!(answer.matches("x-ballast-route: p\r\n").count(), 2, "{answer}");
    assert_eq!(answer.matches("x-ballast-attempts: 1\r\n").count(), 2, "{answer}");
    assert!(!answer.contains("inner"), "{answer}");
    let got = up.received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert!(got[0].head.contains("content-length: 0\r\n"), "{}", got[0].head);
    assert!(!got[1].head.contains("content-length"), "{}", got[1].head);
}

#[tokio::test]
async fn idle_clients_and_clients_that_never_finish_a_head_are_let_go() {
    let up = scripted(|_| (ok("{}"), false)).await;
    let router = TestRouter::start_with("eu", &prefix_routes(&up, 1024), |c| {
        c.client_idle_timeout = Duration::from_millis(300);
        c.client_head_timeout = Duration::from_millis(500);
    })
    .await;
    let closed_within = |mut s: TcpStream, within: Duration| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(within, s.read_to_end(&mut rest))
            .await
            .is_ok_and(|r| r.is_ok())
    };
    // Silent from the start.
    let s = TcpStream::connect(router.addr).await.unwrap();
    assert!(
        closed_within(s, Duration::from_secs(3)).await,
        "an idle connection is closed"
    );
    // Idle after a request.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET /p/a HTTP/1.1\r\n\r\n").await.unwrap();
    let mut got = vec![0u8; 12];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"HTTP/1.1 200");
    assert!(
        closed_within(s, Duration::from_secs(3)).await,
        "an idle kept-alive connection is closed"
    );
    // A head trickled byte by byte never completes: the head's own time limit ends it, however
    // often a byte arrives.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"GET /p/slow HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a head that never ends is cut");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A body that stops coming is the client's failure: answered and closed, never forwarded.
    let started = std::time::Instant::now();
    let answer = exchange_until_close(
        &router,
        b"POST /p/stalled HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("no byte of its request body"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(up
        .received
        .lock()
        .unwrap()
        .iter()
        .all(|r| !r.head.contains("/p/slow") && !r.head.contains("/p/stalled")));
}

#[tokio::test]
async fn garbage_on_the_wire_never_takes_the_router_down() {
    use rand::{Rng as _, SeedableRng as _};
    let up = scripted(|_| (ok("{}"), false)).await;
    let router = TestRouter::start_with("eu", &prefix_routes(&up, 64), |c| {
        c.client_head_timeout = Duration::from_millis(200);
        c.client_idle_timeout = Duration::from_millis(200);
    })
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let pieces: [&[u8]; 8] = [
        b"GET /p/x HTTP/1.1\r\n",
        b"POST /p/y HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        b"content-length: 5\r\n",
        b"\r\n",
        b"ffffffff\r\n",
        b"0\r\n\r\n",
        b"expect: 100-continue\r\n",
        b"\x00\xff:\r\n",
    ];
    for _ in 0..150 {
        let mut bytes = Vec::new();
        for _ in 0..rng.gen_range(1..8) {
            if rng.gen_bool(0.5) {
                bytes.extend_from_slice(pieces[rng.gen_range(0..pieces.len())]);
            } else {
                let n = rng.gen_range(1..64);
                bytes.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
        let Ok(mut s) = TcpStream::connect(router.addr).await else {
            panic!("the router stopped accepting connections");
        };
        let _ = s.write_all(&bytes).await;
        let mut sink = Vec::new();
        // Whatever it answers, it ends the exchange by itself (answer, error or time limit).
        let ended = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        assert!(
            ended.is_ok(),
            "the router held a connection of garbage open: {bytes:?}"
        );
    }
    let r = crate::support::client()
        .get(router.url("/p/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = crate::support::client()
        .get(router.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A raw upstream that answers the first request of each connection and then times the
/// connection out with an unasked `408`: at once when the next request arrives
/// (`spontaneous == false`), or after 100 ms idle without waiting for one.
async fn timing_out_upstream(spontaneous: bool) -> (String, Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let conns = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&conns);
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if read_request(&mut s, &mut buf).await.is_none() {
                    return;
                }
                if s.write_all(&ok(&format!("conn{n}"))).await.is_err() {
                    return;
                }
                if spontaneous {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else if read_request(&mut s, &mut buf).await.is_none() {
                    return;
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
                    )
                    .await;
                let _ = s.shutdown().await;
                // Linger so that the close is orderly.
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
        }
    });
    (url, conns, task)
}

#[tokio::test]
async fn an_unasked_408_on_a_reused_connection_is_not_taken_as_the_answer() {
    for spontaneous in [false, true] {
        let (url, conns, task) = timing_out_upstream(spontaneous).await;
        let routes = format!(
            "generation = 1\n[[routes]]\nname = \"p\"\nkind = \"prefix\"\nprefix = \"/p\"\n{}",
            target("p-a", &url, "eu", "m/p/1")
        );
        // One worker: both requests go through the same pool shard.
        let router = TestRouter::start_with("eu", &routes, |c| c.workers = 1).await;
        let client = crate::support::client();
        let first = client.get(router.url("/p/1")).send().await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.text().await.unwrap(), "conn0");
        if spontaneous {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let second = client.get(router.url("/p/2")).send().await.unwrap();
        assert_eq!(second.status(), 200, "spontaneous={spontaneous}");
        assert_eq!(second.headers()["x-ballast-attempts"], "1");
        assert_eq!(
            second.text().await.unwrap(),
            "conn1",
            "sent again on a new connection"
        );
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        assert_eq!(router.target("p-a").await["consecutive_failures"], 0);
        assert_eq!(router.target_phase("p-a").await, "healthy");
        task.abort();
    }
}

#[tokio::test]
async fn hop_by_hop_fields_stop_at_the_router_but_connection_never_strips_framing_or_host() {
    let up = scripted(|r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nconnection: content-length, transfer-encoding, x-hop\r\nkeep-alive: timeout=5\r\n\
             proxy-connection: keep-alive\r\nupgrade: h2c\r\ntrailer: x-sum\r\nproxy-authenticate: Basic\r\n\
             x-hop: 1\r\nx-end: kept\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        (answer.into_bytes(), false)
    })
    .await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    let answer = exchange_until_close(
        &router,
        b"POST /p/a HTTP/1.1\r\nhost: x\r\nconnection: keep-alive, content-length, host, x-hop-req\r\n\
          te: trailers\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\n\
          proxy-authorization: Basic eDp5\r\ntrailer: x-sum\r\nupgrade: websocket\r\nx-hop-req: 1\r\n\
          x-end-req: kept\r\n\
          content-length: 5\r\n\r\nhello\
          GET /p/b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let lower = answer.to_ascii_lowercase();
    // Both answers framed by their length: the kept-alive client can tell where each ends.
    assert_eq!(lower.matches("content-length: 5\r\n").count(), 1, "{answer}");
    assert_eq!(lower.matches("content-length: 0\r\n").count(), 1, "{answer}");
    assert_eq!(
        lower
            .matches("HTTP/1.1 200 ".to_ascii_lowercase().as_str())
            .count(),
        2,
        "{answer}"
    );
    assert!(lower.contains("\r\n\r\nhello"), "{answer}");
    assert_eq!(lower.matches("x-end: kept\r\n").count(), 2, "{answer}");
    for hop in [
        "keep-alive:",
        "proxy-connection:",
        "upgrade:",
        "trailer:",
        "x-hop:",
        "proxy-authenticate:",
    ] {
        assert!(!lower.contains(hop), "{hop} passed back: {answer}");
    }
    let got = up.received.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let first = &got[0];
    assert_eq!(first.body, b"hello");
    assert!(first.head.contains("content-length: 5\r\n"), "{}", first.head);
    assert!(first.head.contains("\r\nhost: 127.0.0.1:"), "{}", first.head);
    assert!(first.head.contains("x-end-req: kept\r\n"), "{}", first.head);
    for hop in [
        "connection:",
        "te:",
        "keep-alive:",
        "proxy-connection:",
        "proxy-authorization:",
        "trailer:",
        "upgrade:",
        "x-hop-req:",
    ] {
        assert!(!first.head.contains(hop), "{hop} forwarded: {}", first.head);
    }
}

#[tokio::test]
async fn paths_with_dot_segments_are_refused_before_routing() {
    let up = scripted(|_| (ok("{}"), false)).await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 1024)).await;
    for path in [
        "/p/../x",
        "/p/./x",
        "/p/%2e%2e/x",
        "/p/%2E./x",
        "/p/a/..",
        "/p/..%2Fx",
    ] {
        let answer = exchange_until_close(
            &router,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "invalid_request", "{path}: {body}");
        assert!(
            json["error"]["message"].as_str().unwrap().contains("segment"),
            "{path}: {body}"
        );
    }
    assert!(
        up.received.lock().unwrap().is_empty(),
        "nothing reached the upstream"
    );
    // Dots inside a segment are fine.
    let answer = exchange_until_close(
        &router,
        b"GET /p/v1.2/..x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test]
async fn a_slow_upload_is_not_the_targets_fault_but_a_silent_target_still_times_out() {
    let up = scripted(|r| (ok(&r.body.len().to_string()), false)).await;
    let hung = crate::support::Upstream::start("hung").await;
    hung.set(crate::support::Mode::Hang);
    let timeouts = "timeouts = { connect_ms = 1000, first_byte_ms = 300, deadline_ms = 10000 }";
    let routes = format!(
        "generation = 1\n[[routes]]\nname = \"p\"\nkind = \"prefix\"\nprefix = \"/p\"\n{timeouts}\n\
         retry = {{ replay_buffer_bytes = 16 }}\nhealth = {{ consecutive_failures = 1 }}\n{}\
         [[routes]]\nname = \"h\"\nkind = \"prefix\"\nprefix = \"/h\"\n{timeouts}\n{}",
        target("p-a", &up.url, "eu", "m/p/1"),
        target("h-a", &hung.url(), "eu", "m/h/1"),
    );
    let router = TestRouter::start("eu", &routes).await;
    // 64 bytes, sent 8 at a time 150 ms apart: the upload takes about 1.2 s, four times the
    // first-byte limit, and the upstream answers as soon as it has the whole body.
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"POST /p/up HTTP/1.1\r\nhost: x\r\ncontent-length: 64\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..8 {
        s.write_all(b"abcdefgh").await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let answer = read_until_close(&mut s).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\n64"), "{answer}");
    assert_eq!(router.target("p-a").await["consecutive_failures"], 0);
    assert_eq!(router.target_phase("p-a").await, "healthy");

    // A whole request that gets no answer still fails after the first-byte limit.
    let started = std::time::Instant::now();
    let answer = exchange_until_close(
        &router,
        b"POST /h/x HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 504 "), "{answer}");
    assert!(answer.contains("\"first_byte_timeout\""), "{answer}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2000),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_request_body_that_breaks_lists_the_attempt_it_counts() {
    let up = scripted(|r| (ok(&r.body.len().to_string()), false)).await;
    let router = TestRouter::start("eu", &prefix_routes(&up, 16)).await;
    let mut s = TcpStream::connect(router.addr).await.unwrap();
    s.write_all(b"POST /p/up HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'a'; 40]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The client stops sending 60 bytes short, and waits for the answer.
    s.shutdown().await.unwrap();
    let answer = read_until_close(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let attempts: usize = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-ballast-attempts: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    let listed = json["error"]["attempts"].as_array().unwrap();
    assert_eq!(attempts, 1, "{answer}");
    assert_eq!(listed.len(), attempts, "{answer}");
    assert_eq!(listed[0]["target"], "p-a");
}
