//! What `ballast server` tells its operator in its log: a loud warning when authentication is
//! off, and on first start where the admin token was written.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{bin, free_port};

/// A server process whose log (stderr) goes to a file.
struct Logged {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Logged {
    /// Starts `ballast [global…] server --data-dir DATA [args…]` from `cwd` (so no stray
    /// `ballast.toml` is read) with the default log level, and waits until it is ready.
    async fn start(cwd: &Path, name: &str, data: &Path, global: &[&str], args: &[&str]) -> Self {
        let port = free_port();
        let log = cwd.join(format!("{name}.log"));
        let child = Command::new(bin())
            .current_dir(cwd)
            .args(global)
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("BALLAST_AUTH")
            .env_remove("BALLAST_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start ballast server");
        let mut me = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", me.url)).send().await {
                if r.status().is_success() {
                    return me;
                }
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("server exited early ({status}): {}", me.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in 30 s: {}",
                me.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's JSON lines (for `--log-format json`).
    fn log_json(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
            .collect()
    }

    async fn status_without_token(&self, path: &str) -> reqwest::StatusCode {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .status()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_is_logged_as_a_loud_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Logged::start(dir.path(), "off", &data, &[], &["--auth", "off"]).await;
    // Really off: no token needed, and none written.
    assert_eq!(
        server.status_without_token("/v1/models").await,
        reqwest::StatusCode::OK
    );
    assert!(!data.join("admin.token").exists());
    let log = server.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("AUTHENTICATION IS OFF"))
        .unwrap_or_else(|| panic!("no warning that authentication is off in the log:\n{log}"));
    assert!(warning.contains("WARN"), "not a warning: {warning}");
    assert!(
        warning.contains("anyone who can reach this address") && warning.contains(&server.url[7..]),
        "the warning says what it means and where: {warning}"
    );
    assert!(!log.contains("admin token"), "{log}");

    // With auth on, the same server has no such warning.
    drop(server);
    let on = Logged::start(dir.path(), "on", &dir.path().join("data-on"), &[], &[]).await;
    let log = on.log_text();
    assert!(!log.contains("AUTHENTICATION IS OFF"), "{log}");
    assert_eq!(
        on.status_without_token("/v1/models").await,
        reqwest::StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_logs_where_the_admin_token_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = data.join("admin.token");
    let server = Logged::start(dir.path(), "first", &data, &["--log-format", "json"], &[]).await;
    let lines = server.log_json();
    let created: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("created the first admin token"))
        })
        .collect();
    assert_eq!(created.len(), 1, "one announcement: {lines:#?}");
    let line = created[0];
    assert_eq!(line["level"], "WARN", "{line}");
    let logged = PathBuf::from(line["fields"]["path"].as_str().expect("a path field"));
    assert_eq!(
        logged.canonicalize().unwrap(),
        file.canonicalize().unwrap(),
        "{line}"
    );
    let message = line["fields"]["message"].as_str().unwrap();
    assert!(
        message.contains(&logged.display().to_string()) && message.contains("BALLAST_TOKEN"),
        "{message}"
    );
    // The file it names holds a working admin token, readable by its owner only.
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let r = reqwest::Client::new()
        .get(format!("{}/v1/tokens", server.url))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(!server.log_text().contains("AUTHENTICATION IS OFF"));

    // Later starts find the token and say nothing more about creating one.
    drop(server);
    let again = Logged::start(dir.path(), "again", &data, &[], &[]).await;
    let log = again.log_text();
    assert!(log.contains("ballast server ready"), "{log}");
    assert!(!log.contains("created the first admin token"), "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), secret);
}
