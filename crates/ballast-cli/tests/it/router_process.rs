//! `ballast router` as a process: SIGHUP reloads the routes file, SIGTERM drains the request
//! under way and exits 0 within the shutdown grace period.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::bin;

/// A minimal upstream: answers every request with 200 and a JSON body after `delay_ms`, and
/// counts the requests it received.
struct Backend {
    url: String,
    delay_ms: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let delay_ms = Arc::new(AtomicU64::new(0));
        let hits = Arc::new(AtomicU64::new(0));
        let (d, h) = (Arc::clone(&delay_ms), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    return;
                };
                let (d, h) = (Arc::clone(&d), Arc::clone(&h));
                tokio::spawn(async move {
                    // Reads one request (head and Content-Length body), answers, closes.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body_end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap_or(0));
                            if buf.len() >= end + 4 + len {
                                break end + 4 + len;
                            }
                        }
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let _ = body_end;
                    h.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(d.load(Ordering::SeqCst))).await;
                    let body = br#"{"upstream":"backend"}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                    let _ = tcp.write_all(body).await;
                    let _ = tcp.shutdown().await;
                });
            }
        });
        Self {
            url,
            delay_ms,
            hits,
            task,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The routes file for `generation` (the same length for every one-digit generation).
fn routes(generation: u64, backend: &str) -> String {
    format!(
        "generation = {generation}\n[[routes]]\nname = \"bot\"\n[[routes.targets]]\nid = \"b\"\nurl = \"{backend}\"\nregion = \"eu\"\nmodel_version = \"m/bot/1\"\n"
    )
}

/// A running `ballast router` (killed if the test ends early).
struct RouterProc {
    child: Child,
    url: String,
}

impl RouterProc {
    /// Starts the router on a free port and reads its address from the JSON line it prints.
    fn start(routes: &Path, state_dir: &Path, grace_secs: u64) -> Self {
        let mut child = Command::new(bin())
            .args([
                "--json",
                "router",
                "--region",
                "eu",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(routes)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--shutdown-grace-secs", &grace_secs.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ballast router");
        let stdout = child.stdout.take().unwrap();
        // Killed on drop from here on, whatever happens next.
        let mut me = Self {
            child,
            url: String::new(),
        };
        // The start document is pretty-printed JSON: read until it parses.
        let mut reader = BufReader::new(stdout);
        let mut text = String::new();
        let started: serde_json::Value = loop {
            let n = reader.read_line(&mut text).unwrap();
            assert!(
                n > 0,
                "the router exited before saying where it listens: {text:?}"
            );
            if let Ok(v) = serde_json::from_str(&text) {
                break v;
            }
        };
        me.url = started["url"].as_str().unwrap().to_owned();
        me
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    }

    async fn generation(&self) -> u64 {
        let r: serde_json::Value = reqwest::get(format!("{}/routes", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["generation"].as_u64().unwrap()
    }
}

impl Drop for RouterProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chat(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "bot", "messages": []}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sighup_reloads_the_routes_file_and_sigterm_drains_then_exits_0() {
    let backend = Backend::start().await;
    let dir = tempfile::tempdir().unwrap();
    let routes_path = dir.path().join("routes.toml");
    std::fs::write(&routes_path, routes(1, &backend.url)).unwrap();
    let stamp = std::fs::metadata(&routes_path).unwrap().modified().unwrap();
    let grace = 10;
    let router = RouterProc::start(&routes_path, &dir.path().join("state"), grace);
    assert_eq!(router.generation().await, 1);
    let r = chat(&router.url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ballast-route"], "bot");

    // Generation 2, same size and modification time: the file watcher cannot see the change;
    // only SIGHUP loads it.
    let next = routes(2, &backend.url);
    assert_eq!(next.len(), routes(1, &backend.url).len());
    std::fs::write(&routes_path, &next).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&routes_path)
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(router.generation().await, 1, "reloaded without SIGHUP");
    router.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while router.generation().await != 2 {
        assert!(Instant::now() < deadline, "SIGHUP did not load generation 2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest::get(format!("{}/metrics", router.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "ballast_router_snapshot_generation 2"),
        "{metrics}"
    );

    // A slow request under way when SIGTERM arrives finishes; then the process exits 0.
    backend.delay_ms.store(1500, Ordering::SeqCst);
    let hits = backend.hits.load(Ordering::SeqCst);
    let url = router.url.clone();
    let slow = tokio::spawn(async move {
        let r = chat(&url).await;
        (r.status(), r.text().await.unwrap(), SystemTime::now())
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.hits.load(Ordering::SeqCst) == hits {
        assert!(
            Instant::now() < deadline,
            "the slow request did not reach the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut router = router;
    let sent = Instant::now();
    router.signal("-TERM");
    let (status, body, answered) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("backend"), "{body}");
    let exit = loop {
        if let Some(s) = router.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(grace),
            "the router did not exit within the {grace} s grace period"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exited = SystemTime::now();
    assert!(exit.success(), "exit status {exit}");
    assert!(answered <= exited);
    // New connections are refused once it stopped.
    assert!(reqwest::get(format!("{}/healthz", router.url)).await.is_err());
}
