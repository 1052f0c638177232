//! `spawn_app()`: the real registry server on `127.0.0.1:0` over a fresh temporary data
//! directory, a client to talk to it, and typed shortcuts for the calls most tests make.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_api::{AuditEntry, AuditList, FileEntry, Model, StageChange, Version};
use ballast_server::{Config, Server};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and what a test needs to reach it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Client whose only default header is the test principal's bearer token (none with auth off).
    pub client: reqwest::Client,
    /// The principal the request shortcuts act as (a token's principal with auth on, the
    /// `x-ballast-actor` header with auth off); change it with [`TestApp::act_as`].
    pub actor: String,
    /// The admin token written on first start (empty with auth off).
    pub admin_token: String,
    /// The bearer token of `actor` (empty with auth off).
    pub token: String,
    dir: TempDir,
    config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Starts a server with the default configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server after letting the test adjust the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_owned(),
        shutdown_grace_secs: 5,
        ..Config::default()
    };
    adjust(&mut config);
    start(dir, config).await
}

async fn start(dir: TempDir, config: Config) -> TestApp {
    start_with_token(dir, config, None).await
}

async fn start_with_token(dir: TempDir, config: Config, token: Option<String>) -> TestApp {
    let server = Server::bind(config.clone()).await.expect("bind");
    let addr = server.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let base = format!("http://{addr}");
    let auth_on = config.auth == ballast_server::auth::AuthMode::On;
    let admin_token = if auth_on {
        std::fs::read_to_string(dir.path().join("admin.token"))
            .expect("the server writes admin.token on first start")
            .trim()
            .to_owned()
    } else {
        String::new()
    };
    let token = match token {
        Some(t) => t,
        None if auth_on => create_token(&base, &admin_token, "tester", &[("*", "admin")]).await,
        None => String::new(),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if auth_on {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .expect("client");
    TestApp {
        base,
        client,
        actor: "tester".into(),
        admin_token,
        token,
        dir,
        config,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Creates a token for `principal` with `(namespace, role)` grants, using `admin_token`.
pub async fn create_token(base: &str, admin_token: &str, principal: &str, roles: &[(&str, &str)]) -> String {
    let roles: Vec<Value> = roles
        .iter()
        .map(|(ns, role)| json!({ "namespace": ns, "role": role }))
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/tokens"))
        .bearer_auth(admin_token)
        .json(&json!({ "principal": principal, "roles": roles }))
        .send()
        .await
        .expect("send");
    let created: Value = ok(r, StatusCode::CREATED).await;
    created["secret"].as_str().expect("secret").to_owned()
}

impl TestApp {
    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the blob with this hex digest lives on disk.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.data_dir().join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// Every file below `blobs/<sub>`, relative to it, sorted.
    pub fn files_under(&self, sub: &str) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let root = self.data_dir().join("blobs").join(sub);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }

    /// Graceful shutdown: signals, then waits for `serve` to drain and close the store.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server did not stop within 20 s")
                .expect("server task panicked");
            r.expect("serve returned an error");
        }
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let TestApp {
            dir,
            config,
            actor,
            token,
            ..
        } = self;
        let mut app = start_with_token(dir, config, (!token.is_empty()).then_some(token)).await;
        app.actor = actor;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Acts as `principal` from now on (with auth on: a new token holding admin on `*`).
    pub async fn act_as(&mut self, principal: &str) {
        if !self.admin_token.is_empty() {
            self.token = create_token(&self.base, &self.admin_token, principal, &[("*", "admin")]).await;
        }
        principal.clone_into(&mut self.actor);
    }

    /// A request as the test's actor.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        if self.token.is_empty() {
            rb.header("x-ballast-actor", &self.actor)
        } else {
            rb.bearer_auth(&self.token)
        }
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }

    pub fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(Method::POST, path).json(body)
    }

    pub fn put_json(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(Method::PUT, path).json(body)
    }

    pub fn patch(&self, path: &str, body: &Value) -> RequestBuilder {
        self.req(Method::PATCH, path).json(body)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.req(Method::DELETE, path)
    }

    /// GET and decode a 200 answer.
    pub async fn get_ok<T: DeserializeOwned>(&self, path: &str) -> T {
        ok(self.get(path).send().await.expect("send"), StatusCode::OK).await
    }

    pub async fn create_model(&self, name: &str) -> Model {
        let r = self
            .post("/v1/models", &json!({ "name": name }))
            .send()
            .await
            .expect("send");
        ok(r, StatusCode::CREATED).await
    }

    pub async fn create_version(&self, model: &str, body: &Value) -> Version {
        let r = self
            .post(&format!("/v1/models/{model}/versions"), body)
            .send()
            .await
            .expect("send");
        ok(r, StatusCode::CREATED).await
    }

    /// Uploads `bytes` with their digest announced.
    pub async fn upload(&self, model: &str, n: u64, path: &str, bytes: &[u8]) -> FileEntry {
        let r = self
            .req(
                Method::PUT,
                &format!("/v1/models/{model}/versions/{n}/files/{path}"),
            )
            .header("x-ballast-sha256", sha_hex(bytes))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("send");
        ok(r, StatusCode::CREATED).await
    }

    pub async fn seal(&self, model: &str, n: u64) -> Version {
        let r = self
            .post(&format!("/v1/models/{model}/versions/{n}/seal"), &json!({}))
            .send()
            .await
            .expect("send");
        ok(r, StatusCode::OK).await
    }

    pub async fn set_stage(&self, model: &str, n: u64, stage: &str) -> StageChange {
        let r = self
            .post(
                &format!("/v1/models/{model}/versions/{n}/stage"),
                &json!({ "stage": stage }),
            )
            .send()
            .await
            .expect("send");
        ok(r, StatusCode::OK).await
    }

    /// Creates a version with one file and seals it; returns its number.
    pub async fn sealed_version(&self, model: &str, content: &[u8]) -> u64 {
        let v = self.create_version(model, &json!({})).await;
        self.upload(model, v.version, "model.bin", content).await;
        self.seal(model, v.version).await;
        v.version
    }

    /// The whole audit trail, read page by page.
    /// The whole audit trail, without the access-control entries (tokens, roles) that the
    /// harness itself creates.
    pub async fn audit_all(&self) -> Vec<AuditEntry> {
        let mut all = self.audit_everything().await;
        all.retain(|e| !is_access_setup(&e.action));
        all
    }

    /// The whole audit trail.
    pub async fn audit_everything(&self) -> Vec<AuditEntry> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let page: AuditList = self.get_ok(&format!("/v1/audit?limit=1000&after={after}")).await;
            out.extend(page.entries);
            match page.next_after {
                Some(a) => after = a,
                None => return out,
            }
        }
    }
}

/// Whether an audit action or event type is the harness's access-control setup.
pub fn is_access_setup(action: &str) -> bool {
    action.starts_with("token.") || action.starts_with("role.")
}

/// Asserts the status and decodes the JSON body, showing the body when either fails.
pub async fn ok<T: DeserializeOwned>(r: Response, want: StatusCode) -> T {
    let status = r.status();
    let url = r.url().clone();
    let text = r.text().await.expect("body");
    assert_eq!(status, want, "{url}: unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: cannot decode {text}: {e}"))
}

/// Asserts an error answer: status, JSON error body and code. Returns the `error` object.
pub async fn err(r: Response, want: StatusCode, code: &str) -> Value {
    let status = r.status();
    let url = r.url().clone();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let text = r.text().await.expect("body");
    assert_eq!(status, want, "{url}: unexpected status; body: {text}");
    assert!(
        ct.starts_with("application/json"),
        "{url}: error content-type {ct:?}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: error body {text}: {e}"));
    let e = body
        .get("error")
        .cloned()
        .unwrap_or_else(|| panic!("{url}: no error object in {text}"));
    assert_eq!(e["code"], code, "{url}: unexpected error code; body: {text}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{url}: empty message"
    );
    e
}

/// Lowercase hex SHA-256.
pub fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Waits until `check` holds, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ETag header of a response.
pub fn etag(r: &Response) -> String {
    r.headers()
        .get("etag")
        .map(|v| v.to_str().expect("ascii etag").to_owned())
        .unwrap_or_default()
}
