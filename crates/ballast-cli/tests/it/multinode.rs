//! Several `ballast server` processes on one PostgreSQL database and one blob store (an S3
//! bucket on the s3s-fs test server; a shared directory where it is not installed): concurrent
//! version creates and alias moves through different nodes while one node is SIGKILLed, then
//! the registry's guarantees are checked across nodes (gap-free numbers, one CAS winner per
//! revision, idempotent retries landing on another node, nothing acknowledged lost, an intact
//! audit chain); and webhook events dispatched by two nodes reach the receiver once each.
//!
//! The PostgreSQL server comes from `BALLAST_TEST_DATABASE_URL` (`eval "$(.ci/postgres.sh)"`);
//! each test creates its own database there with `psql`. Without the variable the tests pass
//! vacuously on a developer machine and fail under `CI=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::s3s::{S3Server, ACCESS_KEY, SECRET_KEY};
use crate::support::{admin_token, free_port, version_descriptions, wait_until, ServerProc};

/// Whether PostgreSQL tests must run (and so fail rather than skip when something is missing).
pub(crate) fn required() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The administrative URL of the test PostgreSQL server, or `None` when the tests cannot run
/// here (a failure under `CI=true`).
pub(crate) fn admin_url() -> Option<String> {
    match std::env::var("BALLAST_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !required(),
                "BALLAST_TEST_DATABASE_URL is not set but CI=true: start PostgreSQL with `eval \"$(.ci/postgres.sh)\"`"
            );
            eprintln!("skipped: BALLAST_TEST_DATABASE_URL is not set (eval \"$(.ci/postgres.sh)\")");
            None
        }
    }
}

/// A PostgreSQL program (`psql`, `initdb`, `pg_ctl`) from the newest installed version, or
/// `None` when PostgreSQL is not installed (a failure under `CI=true`).
pub(crate) fn pg_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().split('.').next()?.parse().ok()?;
            Some((version, e.path().join("bin").join(name)))
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    dirs.sort();
    let found = dirs.pop().map(|(_, p)| p);
    assert!(
        found.is_some() || !required(),
        "the PostgreSQL program {name} is not installed but CI=true: run .ci/postgres.sh (it installs PostgreSQL)"
    );
    found
}

/// A database of its own on the test server, dropped when the test ends.
pub(crate) struct TestDatabase {
    psql: PathBuf,
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl TestDatabase {
    /// Creates an empty database, or `None` when PostgreSQL tests cannot run here.
    pub fn create() -> Option<Self> {
        let admin = admin_url()?;
        let psql = pg_program("psql")?;
        let name = format!("ballast_cli_{:016x}", rand::random::<u64>());
        psql_run(&psql, &admin, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin.rsplit_once('/').expect("an admin URL ending in /DATABASE");
        let url = format!("{base}/{name}");
        Some(Self {
            psql,
            admin,
            name,
            url,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new(&self.psql)
            .args(["-X", "-q", "-d", &self.admin, "-c"])
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn psql_run(psql: &Path, url: &str, sql: &str) {
    let out = Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the nodes keep artifacts: one S3 bucket (s3s-fs), or one directory they all use.
enum SharedBlobs {
    Bucket(S3Server),
    Directory(PathBuf),
}

impl SharedBlobs {
    /// A bucket when the S3 test server is installed (required under `CI=true`), else a
    /// directory.
    fn new(dir: &Path) -> Self {
        match S3Server::start("registry") {
            Some(s3) => Self::Bucket(s3),
            None => Self::Directory(dir.join("blobs")),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Self::Bucket(s3) => vec![
                "--blob-url".into(),
                format!("s3://{}/models", s3.bucket),
                "--s3-endpoint".into(),
                s3.endpoint.clone(),
                "--s3-path-style".into(),
            ],
            Self::Directory(d) => vec!["--blob-url".into(), format!("file://{}", d.display())],
        }
    }
}

/// Starts a node on the shared database and blob store. The database URL goes in the
/// environment on even nodes and as a flag on odd ones, so both ways are covered.
async fn node(dir: &Path, i: usize, db: &str, blobs: &SharedBlobs) -> ServerProc {
    let data = dir.join(format!("node{i}"));
    let mut args: Vec<String> = blobs.args();
    let mut envs = vec![
        ("BALLAST_WEBHOOK_TIMEOUT_SECS", "2"),
        ("BALLAST_WEBHOOK_RETRY_BASE_MS", "100"),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    ];
    if i % 2 == 0 {
        envs.push(("BALLAST_DATABASE_URL", db));
    } else {
        args.extend(["--database-url".to_owned(), db.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProc::start_with(&data, &args, &envs).await
}

fn client(token: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn create_model(c: &reqwest::Client, url: &str, model: &str) {
    let r = c
        .post(format!("{url}/v1/models"))
        .json(&json!({ "name": model }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// A sealed version made across three nodes: draft on one, upload on the next, seal on the
/// third (the blob store and the database are shared).
async fn sealed_version(c: &reqwest::Client, urls: &[String], model: &str, seed: u64) -> u64 {
    let v: Value = c
        .post(format!("{}/v1/models/{model}/versions", urls[0]))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = v["version"].as_u64().expect("a version number");
    let r = c
        .put(format!(
            "{}/v1/models/{model}/versions/{n}/files/w.bin",
            urls[1 % urls.len()]
        ))
        .body(format!("weights {seed}").repeat(100))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = c
        .post(format!(
            "{}/v1/models/{model}/versions/{n}/seal",
            urls[2 % urls.len()]
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    n
}

async fn alias_revision(c: &reqwest::Client, url: &str, model: &str) -> u64 {
    let a: Value = c
        .get(format!("{url}/v1/models/{model}/aliases/champion"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    a["revision"].as_u64().expect("an alias revision")
}

/// Sets `champion` to `version` if it is still at `rev`: `Ok(new revision)` when this call won,
/// `Err(status)` otherwise (`None` for a connection error).
async fn move_alias(
    c: &reqwest::Client,
    url: &str,
    model: &str,
    rev: u64,
    version: u64,
) -> Result<u64, Option<u16>> {
    let r = c
        .put(format!("{url}/v1/models/{model}/aliases/champion"))
        .header("if-match", format!("\"{rev}\""))
        .json(&json!({ "version": version }))
        .send()
        .await
        .map_err(|_| None)?;
    if r.status() != 200 {
        return Err(Some(r.status().as_u16()));
    }
    let a: Value = r.json().await.map_err(|_| None)?;
    assert_eq!(a["version"].as_u64(), Some(version));
    a["revision"].as_u64().ok_or(None)
}

/// Creates a version with an idempotency key; the answer's status and version number.
async fn create_version(
    c: &reqwest::Client,
    url: &str,
    model: &str,
    key: &str,
    description: &str,
) -> Result<(u16, u64), reqwest::Error> {
    let r = c
        .post(format!("{url}/v1/models/{model}/versions"))
        .header("idempotency-key", key)
        .json(&json!({ "metadata": { "description": description } }))
        .send()
        .await?;
    let status = r.status().as_u16();
    let v: Value = r.json().await?;
    Ok((status, v["version"].as_u64().unwrap_or(0)))
}

async fn audit_intact(c: &reqwest::Client, url: &str) -> u64 {
    let v: Value = c
        .get(format!("{url}/v1/audit/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], json!(true), "audit chain broken as seen from {url}: {v}");
    v["entries"].as_u64().unwrap()
}

#[derive(Default)]
struct Acked {
    /// Version number → (node, idempotency key) of every create answered 201.
    versions: BTreeMap<u64, Vec<(usize, String)>>,
    /// Creates acknowledged after the node was killed, per surviving node.
    after_kill: BTreeMap<usize, usize>,
    /// Alias revision → (node, version) of every move answered 200.
    moves: BTreeMap<u64, Vec<(usize, u64)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_one_database_and_survive_a_killed_node() {
    const MODEL: &str = "mn/model";
    let Some(db) = tokio::task::spawn_blocking(TestDatabase::create).await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let blobs = SharedBlobs::new(dir.path());
    // The first node bootstraps the database (and writes the admin token); the others join it.
    let first = node(dir.path(), 0, &db.url, &blobs).await;
    let token = admin_token(&dir.path().join("node0"));
    let second = node(dir.path(), 1, &db.url, &blobs).await;
    let third = node(dir.path(), 2, &db.url, &blobs).await;
    assert!(
        !dir.path().join("node1/admin.token").exists(),
        "a node joining a bootstrapped database must not create another admin token"
    );
    let urls = vec![first.url.clone(), second.url.clone(), third.url.clone()];
    let c = client(&token);

    // A model created on one node is visible on the others at once.
    create_model(&c, &urls[0], MODEL).await;
    for url in &urls[1..] {
        let r = c.get(format!("{url}/v1/models/{MODEL}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "model not visible on {url}");
    }
    let mut sealed = Vec::new();
    for i in 0..3 {
        let rotated: Vec<String> = urls.iter().cycle().skip(i).take(3).cloned().collect();
        sealed.push(sealed_version(&c, &rotated, MODEL, i as u64).await);
    }
    assert_eq!(sealed, vec![1, 2, 3], "numbers are gap-free across nodes");

    // One CAS winner per round: three nodes race to move `champion` from the same revision.
    let r = c
        .put(format!("{}/v1/models/{MODEL}/aliases/champion", urls[0]))
        .header("if-none-match", "*")
        .json(&json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    for round in 0..15usize {
        let rev = alias_revision(&c, &urls[round % 3], MODEL).await;
        let attempts: Vec<_> = (0..3)
            .map(|i| {
                let (c, url, target) = (c.clone(), urls[i].clone(), sealed[i]);
                tokio::spawn(async move { move_alias(&c, &url, MODEL, rev, target).await })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, a) in attempts.into_iter().enumerate() {
            match a.await.unwrap() {
                Ok(new_rev) => winners.push((i, new_rev)),
                Err(status) => assert_eq!(status, Some(412), "round {round}: a losing move must be 412"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one CAS winner, got {winners:?}"
        );
        let (winner, new_rev) = winners[0];
        assert!(new_rev > rev);
        for url in &urls {
            let a: Value = c
                .get(format!("{url}/v1/models/{MODEL}/aliases/champion"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                a["version"].as_u64(),
                Some(sealed[winner]),
                "round {round} on {url}"
            );
            assert_eq!(a["revision"].as_u64(), Some(new_rev), "round {round} on {url}");
        }
    }

    // An idempotent create retried on other nodes returns the same version; the same key with
    // another request is refused.
    let (s, n) = create_version(&c, &urls[0], MODEL, "retry-me", "retried")
        .await
        .unwrap();
    assert_eq!(s, 201);
    for url in &urls[1..] {
        let (s, again) = create_version(&c, url, MODEL, "retry-me", "retried")
            .await
            .unwrap();
        assert!(s == 200 || s == 201, "retry answered {s}");
        assert_eq!(again, n, "a retry on {url} created another version");
    }
    let (s, _) = create_version(&c, &urls[1], MODEL, "retry-me", "something else")
        .await
        .unwrap();
    assert_eq!(s, 422, "a reused key with another request must be refused");
    // A create acknowledged by the node about to be killed, to be retried on a survivor.
    let (s, on_third) = create_version(&c, &urls[2], MODEL, "acked-by-third", "third")
        .await
        .unwrap();
    assert_eq!(s, 201);

    // Concurrent creates and alias moves through every node; the third node is SIGKILLed
    // mid-way.
    let acked = Arc::new(Mutex::new(Acked::default()));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for (node_i, url) in urls.iter().enumerate() {
        for w in 0..3usize {
            let (c, url, acked, killed) = (c.clone(), url.clone(), acked.clone(), killed.clone());
            tasks.push(tokio::spawn(async move {
                let mut k = 0usize;
                while Instant::now() < stop {
                    k += 1;
                    let key = format!("n{node_i}-w{w}-{k}");
                    let was_killed = killed.load(std::sync::atomic::Ordering::SeqCst);
                    match create_version(&c, &url, MODEL, &key, &key).await {
                        Ok((201, n)) => {
                            let mut a = acked.lock().unwrap();
                            a.versions.entry(n).or_default().push((node_i, key));
                            if was_killed {
                                *a.after_kill.entry(node_i).or_default() += 1;
                            }
                        }
                        Ok((status, _)) => panic!("create on node {node_i} answered {status}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        let (c, url, acked, sealed) = (c.clone(), url.clone(), acked.clone(), sealed.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = node_i;
            while Instant::now() < stop {
                i += 1;
                let Ok(r) = c
                    .get(format!("{url}/v1/models/{MODEL}/aliases/champion"))
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some(rev) = r.json::<Value>().await.ok().and_then(|a| a["revision"].as_u64()) else {
                    continue;
                };
                let target = sealed[i % sealed.len()];
                match move_alias(&c, &url, MODEL, rev, target).await {
                    Ok(new_rev) => acked
                        .lock()
                        .unwrap()
                        .moves
                        .entry(new_rev)
                        .or_default()
                        .push((node_i, target)),
                    Err(Some(412)) => {}
                    Err(Some(status)) => panic!("alias move on node {node_i} answered {status}"),
                    Err(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    // Kill the third node once the load is under way on every node.
    wait_until(
        "30 concurrent creates acknowledged",
        Duration::from_secs(30),
        || acked.lock().unwrap().versions.len() >= 30,
    )
    .await;
    killed.store(true, std::sync::atomic::Ordering::SeqCst);
    third.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    // The survivors kept serving.
    for survivor in 0..2 {
        assert!(
            acked.after_kill.get(&survivor).copied().unwrap_or(0) > 0,
            "node {survivor} acknowledged nothing after the third node was killed"
        );
    }
    // Each acknowledged number was handed out once, and one move won each alias revision.
    for (n, by) in &acked.versions {
        assert_eq!(by.len(), 1, "version {n} acknowledged to several creates: {by:?}");
    }
    for (rev, by) in &acked.moves {
        assert_eq!(by.len(), 1, "alias revision {rev} won by several moves: {by:?}");
    }
    for url in &urls[..2] {
        let listed = version_descriptions(&c, url, MODEL).await;
        let latest = *listed.keys().last().unwrap();
        // Gap-free: exactly 1..=latest, and the model agrees.
        assert_eq!(
            listed.keys().copied().collect::<Vec<_>>(),
            (1..=latest).collect::<Vec<_>>(),
            "version numbers have a gap as seen from {url}"
        );
        let model: Value = c
            .get(format!("{url}/v1/models/{MODEL}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(model["latest_version"].as_u64(), Some(latest));
        // Nothing acknowledged is lost, and each is the create that was acknowledged.
        for (n, by) in &acked.versions {
            assert_eq!(
                listed.get(n),
                Some(&by[0].1),
                "acknowledged version {n} missing or changed on {url}"
            );
        }
        // No create landed twice (each key is one version).
        let mut keys = BTreeSet::new();
        for d in listed.values().filter(|d| d.starts_with('n')) {
            assert!(keys.insert(d.clone()), "the create {d} landed twice");
        }
        // The alias is at or past the newest acknowledged move.
        let rev = alias_revision(&c, url, MODEL).await;
        assert!(rev >= acked.moves.keys().last().copied().unwrap_or(0));
        audit_intact(&c, url).await;
    }
    // The create acknowledged by the killed node is there, and a retry on a survivor finds it.
    let (s, again) = create_version(&c, &urls[1], MODEL, "acked-by-third", "third")
        .await
        .unwrap();
    assert!(s == 200 || s == 201);
    assert_eq!(again, on_third);
    assert!(
        acked.versions.len() > 20,
        "too little load: {} creates",
        acked.versions.len()
    );
    drop((first, second));
}

/// A minimal HTTP receiver answering 200 and recording (delivery id, event) of each request.
async fn receiver(listener: TcpListener, seen: Arc<Mutex<Vec<(u64, Value)>>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(sock);
            loop {
                let (mut delivery, mut len) = (None, 0usize);
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "x-ballast-delivery" => delivery = v.trim().parse::<u64>().ok(),
                            _ => {}
                        }
                    }
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                if let (Some(d), Ok(event)) = (delivery, serde_json::from_slice::<Value>(&body)) {
                    seen.lock().unwrap().push((d, event));
                }
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(ok).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_are_delivered_once_although_two_nodes_dispatch() {
    const MODEL: &str = "wh/model";
    const CREATES: u64 = 40;
    let Some(db) = tokio::task::spawn_blocking(TestDatabase::create).await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let blobs = SharedBlobs::new(dir.path());
    let first = node(dir.path(), 0, &db.url, &blobs).await;
    let token = admin_token(&dir.path().join("node0"));
    let second = node(dir.path(), 1, &db.url, &blobs).await;
    let urls = [first.url.clone(), second.url.clone()];
    let c = client(&token);

    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recv = tokio::spawn(receiver(listener, seen.clone()));
    create_model(&c, &urls[0], MODEL).await;
    let r = c
        .post(format!("{}/v1/webhooks", urls[1]))
        .json(&json!({
            "url": format!("http://127.0.0.1:{port}/hook"),
            "events": ["version.created"],
            "model": MODEL,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // Creates through both nodes at once; both nodes' dispatchers see every event.
    let tasks: Vec<_> = (0..4u64)
        .map(|w| {
            let (c, url) = (c.clone(), urls[(w % 2) as usize].clone());
            tokio::spawn(async move {
                for k in 0..CREATES / 4 {
                    let key = format!("wh-{w}-{k}");
                    let (s, _) = create_version(&c, &url, MODEL, &key, &key).await.unwrap();
                    assert_eq!(s, 201);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = seen.lock().unwrap().len();
        if n as u64 >= CREATES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {CREATES} events delivered in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a second dispatcher time to send a duplicate, were leases not respected.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen.lock().unwrap().clone();
    let mut per_event: BTreeMap<u64, usize> = BTreeMap::new();
    let mut versions = BTreeSet::new();
    for (_, e) in &seen {
        *per_event.entry(e["id"].as_u64().unwrap()).or_default() += 1;
        assert_eq!(e["type"], json!("version.created"));
        versions.insert(e["version"].as_u64().unwrap());
    }
    let repeated: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "events delivered more than once: {repeated:?}"
    );
    assert_eq!(versions, (1..=CREATES).collect::<BTreeSet<_>>());
    let deliveries: BTreeSet<u64> = seen.iter().map(|(d, _)| *d).collect();
    assert_eq!(deliveries.len(), seen.len(), "a delivery id was sent twice");
    recv.abort();
    drop((first, second));
}
