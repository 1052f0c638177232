//! Starting and stopping real `ballast server` processes.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `ballast` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ballast")
}

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Bearer tokens of the servers started by the tests, by URL (for the CLI's `BALLAST_TOKEN`).
static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The token to use against the server at `url`.
pub fn token_for(url: &str) -> String {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(u, _)| u == url)
        .map(|(_, t)| t.clone())
        .unwrap_or_default()
}

/// The admin token the server wrote to `data_dir` on first start.
pub fn admin_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin.token"))
        .expect("the server writes admin.token on first start")
        .trim()
        .to_owned()
}

/// An HTTP client that sends the data dir's admin token.
pub fn authed_client(data_dir: &Path) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", admin_token(data_dir)).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A server process on a data dir.
pub struct ServerProc {
    pub child: Child,
    pub url: String,
}

impl ServerProc {
    /// Starts `ballast server` and waits until `/readyz` answers.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], &[]).await
    }

    /// Starts `ballast server` with extra flags and environment variables and waits until
    /// `/readyz` answers. A node joining a shared database that another node bootstrapped has
    /// no `admin.token` of its own: use the first node's token.
    pub async fn start_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(bin())
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ballast server");
        let url = format!("http://127.0.0.1:{port}");
        let mut me = Self { child, url };
        me.wait_ready().await;
        if data_dir.join("admin.token").is_file() {
            TOKENS
                .lock()
                .unwrap()
                .push((me.url.clone(), admin_token(data_dir)));
        }
        me
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "server did not become ready in 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every version of `model`, oldest first, read page by page (each listed once).
pub async fn list_all_versions(c: &reqwest::Client, url: &str, model: &str) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = vec![("order", "asc".to_owned()), ("limit", "1000".to_owned())];
        if let Some(cur) = &cursor {
            q.push(("cursor", cur.clone()));
        }
        let page: serde_json::Value = c
            .get(format!("{url}/v1/models/{model}/versions"))
            .query(&q)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(
            page["versions"]
                .as_array()
                .expect("a version list")
                .iter()
                .cloned(),
        );
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return out;
        }
    }
}

/// Version number → description of every version of `model`, checked to be listed once each.
pub async fn version_descriptions(
    c: &reqwest::Client,
    url: &str,
    model: &str,
) -> std::collections::BTreeMap<u64, String> {
    let mut seen = std::collections::BTreeMap::new();
    for v in list_all_versions(c, url, model).await {
        let n = v["version"].as_u64().unwrap();
        let d = v["metadata"]["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(seen.insert(n, d).is_none(), "version {n} listed twice");
    }
    seen
}

/// Waits until `cond` holds, checking every 20 ms; fails the test after `within`.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `ballast ARGS` against the server at `url` with `token` (and no actor from the
/// environment).
pub fn run_as(url: &str, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin())
        .args(args)
        .env("BALLAST_URL", url)
        .env("BALLAST_TOKEN", token)
        .env_remove("BALLAST_ACTOR")
        .output()
        .unwrap()
}

/// Runs `ballast --json ARGS` as [`run_as`] does; it must succeed and print JSON.
pub fn json_as(url: &str, token: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_as(url, token, &all);
    assert!(
        out.status.success(),
        "ballast {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ballast {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
