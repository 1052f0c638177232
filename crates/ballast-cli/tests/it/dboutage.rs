//! The metadata database goes away and comes back while clients write: a private PostgreSQL
//! cluster (so stopping it disturbs no other test) under one server, writers creating versions
//! with an `Idempotency-Key` each and retrying on 503; PostgreSQL is stopped (`pg_ctl stop -m
//! fast`) and started again. The server answers 503 `unavailable` and reports not ready while
//! the database is gone, recovers without a restart, and afterwards every acknowledged write is
//! there exactly once.
//!
//! Needs PostgreSQL's programs (`/usr/lib/postgresql/*/bin`); without them the test passes
//! vacuously on a developer machine and fails under `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::multinode::{pg_program, required};
use crate::support::{admin_token, free_port, version_descriptions, wait_until, ServerProc};

/// A throwaway PostgreSQL cluster in a temporary directory, on a free loopback port.
pub(crate) struct PgCluster {
    dir: tempfile::TempDir,
    initdb: PathBuf,
    pg_ctl: PathBuf,
    port: u16,
    as_root: bool,
}

impl PgCluster {
    /// Creates the cluster (not started), or `None` when PostgreSQL is not installed here (a
    /// failure under `CI=true`).
    pub(crate) fn init() -> Option<Self> {
        let initdb = pg_program("initdb")?;
        let pg_ctl = pg_program("pg_ctl")?;
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL refuses to run as root: then it runs as the `postgres` user, who must own
        // the directory.
        let as_root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        if as_root {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok || !required(),
                "cannot hand the cluster directory to the postgres user"
            );
            if !ok {
                return None;
            }
        }
        let me = Self {
            dir,
            initdb,
            pg_ctl,
            port: free_port(),
            as_root,
        };
        let data = me.data();
        me.run(
            &me.initdb,
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        Some(me)
    }

    pub(crate) fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Hands a file the test wrote to the user the server runs as.
    pub(crate) fn give(&self, path: &Path) {
        if self.as_root {
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the postgres user", path.display());
        }
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &Path, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn start(&self) {
        let (data, log) = (self.data(), self.dir.path().join("server.log"));
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        self.run(
            &self.pg_ctl,
            &[
                "-D",
                &data,
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run(&self.pg_ctl, &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command(&self.pg_ctl)
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[derive(Default)]
struct Seen {
    /// Idempotency key → version of every create acknowledged (201, or 200 for a retry).
    acked: BTreeMap<String, u64>,
    /// 503 answers, and the last one's body.
    unavailable: u64,
    last_503: Option<Value>,
}

/// Creates versions until `stop`, one key at a time: a key is retried (503, connection error)
/// until it is acknowledged, so every key ends up acknowledged exactly once.
async fn writer(
    c: reqwest::Client,
    url: String,
    model: &'static str,
    w: usize,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut k = 0usize;
    while !stop.load(Ordering::SeqCst) {
        k += 1;
        let key = format!("w{w}-{k}");
        loop {
            assert!(Instant::now() < deadline, "the key {key} was never acknowledged");
            let sent = c
                .post(format!("{url}/v1/models/{model}/versions"))
                .header("idempotency-key", &key)
                .json(&json!({ "metadata": { "description": key } }))
                .send()
                .await;
            let Ok(r) = sent else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                200 | 201 => {
                    let n = body["version"].as_u64().expect("a version number");
                    let mut s = seen.lock().unwrap();
                    let before = s.acked.insert(key.clone(), n);
                    assert!(before.is_none(), "the key {key} was acknowledged twice");
                    break;
                }
                503 => {
                    {
                        let mut s = seen.lock().unwrap();
                        s.unavailable += 1;
                        s.last_503 = Some(body);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("create {key} answered {other}: {body}"),
            }
        }
    }
}

async fn get_json(c: &reqwest::Client, url: &str) -> (u16, Value) {
    match c.get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Polls `url` until it answers `status`; the body of that answer.
async fn wait_status(c: &reqwest::Client, url: &str, status: u16, within: Duration) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let (s, body) = get_json(c, url).await;
        if s == status {
            return (body, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{url} did not answer {status} within {within:?} (last: {s} {body})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_survives_a_database_outage_without_losing_writes() {
    const MODEL: &str = "outage/model";
    let Some(pg) = tokio::task::spawn_blocking(PgCluster::init).await.unwrap() else {
        eprintln!("skipped: PostgreSQL is not installed");
        return;
    };
    let pg = Arc::new(pg);
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.start()).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = pg.url();
    let mut server = ServerProc::start_with(
        &data,
        &["--database-url", &db],
        &[
            ("BALLAST_DATABASE_CONNECT_TIMEOUT_SECS", "2"),
            ("BALLAST_DATABASE_POOL_TIMEOUT_SECS", "2"),
            ("RUST_LOG", "error"),
        ],
    )
    .await;
    let url = server.url.clone();
    let token = admin_token(&data);
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let c = reqwest::Client::builder()
        .default_headers(h)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let r = c
        .post(format!("{url}/v1/models"))
        .json(&json!({ "name": MODEL }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(writer(
                c.clone(),
                url.clone(),
                MODEL,
                w,
                stop.clone(),
                seen.clone(),
            ))
        })
        .collect();
    let acked = || seen.lock().unwrap().acked.len();
    // Writes flow before the outage.
    wait_until(
        "20 writes acknowledged before the outage",
        Duration::from_secs(30),
        || acked() >= 20,
    )
    .await;

    // The database goes away.
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.stop()).await.unwrap();
    }
    let before_outage = acked();
    let (ready, _) = wait_status(&c, &format!("{url}/readyz"), 503, Duration::from_secs(15)).await;
    assert_eq!(ready["status"], json!("unavailable"), "{ready}");
    assert!(
        !ready["reason"].as_str().unwrap_or_default().is_empty(),
        "{ready}"
    );
    // Reads and writes answer 503 with the store's clear error.
    let (err, _) = wait_status(
        &c,
        &format!("{url}/v1/models/{MODEL}"),
        503,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(err["error"]["code"], json!("unavailable"), "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{err}");
    assert!(!message.contains(&token), "an error must not carry secrets");
    let outage_start = Instant::now();
    let deadline = outage_start + Duration::from_secs(15);
    while seen.lock().unwrap().unavailable == 0 {
        assert!(Instant::now() < deadline, "no writer saw a 503 during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = seen.lock().unwrap().last_503.clone().unwrap_or(Value::Null);
    assert_eq!(body["error"]["code"], json!("unavailable"), "{body}");
    let remaining = Duration::from_secs(2).saturating_sub(outage_start.elapsed());
    tokio::time::sleep(remaining).await;
    let during = acked();

    // It comes back; the same server process recovers by itself.
    {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.start()).await.unwrap();
    }
    let (_, recovery) = wait_status(&c, &format!("{url}/readyz"), 200, Duration::from_secs(30)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited during the outage"
    );
    // Writes flow again, on the same process.
    wait_until(
        "20 writes acknowledged after the database returned",
        Duration::from_secs(30),
        || acked() >= during + 20,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "outage: {} writes acknowledged ({} before the outage, {} until it ended), {} answers 503, ready again {:?} after the restart",
        seen.acked.len(),
        before_outage,
        during,
        seen.unavailable,
        recovery
    );

    // Every acknowledged write is there exactly once, numbers are gap-free, the audit chain holds.
    let listed = version_descriptions(&c, &url, MODEL).await;
    let n = listed.len() as u64;
    assert_eq!(
        listed.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "version numbers have a gap"
    );
    let keys: BTreeSet<&String> = listed.values().collect();
    assert_eq!(keys.len(), listed.len(), "a write landed twice");
    for (key, v) in &seen.acked {
        assert_eq!(
            listed.get(v),
            Some(key),
            "acknowledged write {key} (version {v}) is missing"
        );
    }
    assert_eq!(
        listed.len(),
        seen.acked.len(),
        "every key was retried until acknowledged, so nothing else may exist"
    );
    let (status, audit) = get_json(&c, &format!("{url}/v1/audit/verify")).await;
    assert_eq!(status, 200);
    assert_eq!(audit["ok"], json!(true), "{audit}");
    drop(server);
}
