//! Crash safety: the server is SIGKILLed while uploads, version creates and alias moves are in
//! flight, restarted on the same data dir, and the invariants are checked:
//! every acknowledged write is there, nothing unacknowledged is half-there, version numbers have
//! no gap, every blob matches its digest, and the audit chain is intact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{list_all_versions, ServerProc};

const MODEL: &str = "crash/model";

#[derive(Default)]
struct Acked {
    /// Version numbers whose create was answered 201.
    versions: BTreeSet<u64>,
    /// (version, path) → sha256 of uploads answered 201.
    files: BTreeMap<(u64, String), String>,
    /// Alias moves answered 200: (revision, version).
    alias: Vec<(u64, u64)>,
    /// Every version an alias move asked for (answered or not).
    alias_tried: BTreeSet<u64>,
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn sealed_version(c: &reqwest::Client, url: &str, seed: u64) -> u64 {
    let v: Value = c
        .post(format!("{url}/v1/models/{MODEL}/versions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n = v["version"].as_u64().unwrap();
    let body = pseudo_random(seed, 1000);
    let r = c
        .put(format!("{url}/v1/models/{MODEL}/versions/{n}/files/w.bin"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .post(format!("{url}/v1/models/{MODEL}/versions/{n}/seal"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    n
}

/// Runs the writers until `stop`, recording what the server acknowledged.
async fn load(url: String, acked: Arc<Mutex<Acked>>, sealed: Vec<u64>, stop: Instant) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(auth_headers(&url))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    // Version creators.
    for _ in 0..4 {
        let (c, url, acked) = (c.clone(), url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let Ok(r) = c
                    .post(format!("{url}/v1/models/{MODEL}/versions"))
                    .json(&json!({"metadata": {"description": "crash"}}))
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 201 {
                    if let Ok(v) = r.json::<Value>().await {
                        acked
                            .lock()
                            .unwrap()
                            .versions
                            .insert(v["version"].as_u64().unwrap());
                    }
                }
            }
        }));
    }
    // Uploaders: a draft each, then files of 64 KiB – 3 MiB.
    for w in 0..2u64 {
        let (c, url, acked) = (c.clone(), url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(r) = c
                .post(format!("{url}/v1/models/{MODEL}/versions"))
                .json(&json!({}))
                .send()
                .await
            else {
                return;
            };
            let Ok(v) = r.json::<Value>().await else { return };
            let n = v["version"].as_u64().unwrap();
            acked.lock().unwrap().versions.insert(n);
            let mut i = 0u64;
            while Instant::now() < stop {
                i += 1;
                let len = 65_536 + ((w * 7919 + i * 104_729) % (3 << 20)) as usize;
                let body = pseudo_random(w * 1_000_000 + i, len);
                let sha = hex::encode(Sha256::digest(&body));
                let path = format!("part-{i}.bin");
                let Ok(r) = c
                    .put(format!("{url}/v1/models/{MODEL}/versions/{n}/files/{path}"))
                    .header("x-ballast-sha256", &sha)
                    .body(body)
                    .send()
                    .await
                else {
                    return;
                };
                if r.status() == 201 {
                    acked.lock().unwrap().files.insert((n, path), sha);
                }
            }
        }));
    }
    // Alias mover: compare-and-swap `champion` across the sealed versions.
    {
        let (c, url, acked) = (c.clone(), url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < stop {
                i += 1;
                let target = sealed[i % sealed.len()];
                let rev = match c
                    .get(format!("{url}/v1/models/{MODEL}/aliases/champion"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        r.json::<Value>().await.ok().and_then(|v| v["revision"].as_u64())
                    }
                    Ok(_) => None,
                    Err(_) => return,
                };
                let mut req = c
                    .put(format!("{url}/v1/models/{MODEL}/aliases/champion"))
                    .json(&json!({ "version": target }));
                req = match rev {
                    Some(r) => req.header("if-match", format!("\"{r}\"")),
                    None => req.header("if-none-match", "*"),
                };
                acked.lock().unwrap().alias_tried.insert(target);
                let Ok(r) = req.send().await else { return };
                if r.status() == 200 {
                    if let Ok(a) = r.json::<Value>().await {
                        let entry = (a["revision"].as_u64().unwrap(), a["version"].as_u64().unwrap());
                        acked.lock().unwrap().alias.push(entry);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn hash_file(p: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// Every blob on disk hashes to its name, and no upload temp file survived the restart.
fn check_blob_dir(data: &std::path::Path) {
    let root = data.join("blobs/sha256");
    let mut n = 0;
    for fan in std::fs::read_dir(&root).unwrap() {
        for blob in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let p = blob.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(
                hash_file(&p),
                name,
                "blob {} does not match its digest",
                p.display()
            );
            n += 1;
        }
    }
    assert!(n > 0);
    assert_eq!(
        std::fs::read_dir(data.join("blobs/tmp")).unwrap().count(),
        0,
        "temp files survived"
    );
}

fn auth_headers(url: &str) -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", crate::support::token_for(url))
            .parse()
            .unwrap(),
    );
    h
}

async fn check_invariants(url: &str, data: &std::path::Path, acked: &Acked) {
    let c = crate::support::authed_client(data);
    let model: Value = c
        .get(format!("{url}/v1/models/{MODEL}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let latest = model["latest_version"].as_u64().unwrap();

    // Gap-free numbers: exactly 1..=latest exist.
    let mut seen = BTreeSet::new();
    for v in list_all_versions(&c, url, MODEL).await {
        let n = v["version"].as_u64().unwrap();
        assert!(seen.insert(n), "version {n} listed twice");
        // Nothing half-there: every file of every version (acknowledged or not) has its blob.
        for f in v["files"].as_array().unwrap() {
            let p = f["path"].as_str().unwrap();
            let r = c
                .get(format!("{url}/v1/models/{MODEL}/versions/{n}/files/{p}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "file {p} of version {n}");
            let body = r.bytes().await.unwrap();
            assert_eq!(hex::encode(Sha256::digest(&body)), f["sha256"].as_str().unwrap());
            assert_eq!(body.len() as u64, f["size"].as_u64().unwrap());
        }
    }
    let expected: BTreeSet<u64> = (1..=latest).collect();
    assert_eq!(seen, expected, "version numbers must be exactly 1..={latest}");

    // Every acknowledged create and upload survived.
    for n in &acked.versions {
        assert!(seen.contains(n), "acknowledged version {n} is missing");
    }
    for ((n, path), sha) in &acked.files {
        let v: Value = c
            .get(format!("{url}/v1/models/{MODEL}/versions/{n}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let f = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path.as_str());
        let f = f.unwrap_or_else(|| panic!("acknowledged upload {path} of version {n} is missing"));
        assert_eq!(f["sha256"].as_str().unwrap(), sha);
    }

    // The alias is at least as new as the last acknowledged move, and points at a version some
    // request asked for.
    if let Some(&(rev, _)) = acked.alias.iter().max() {
        let a: Value = c
            .get(format!("{url}/v1/models/{MODEL}/aliases/champion"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now_rev = a["revision"].as_u64().unwrap();
        assert!(now_rev >= rev, "alias revision went back from {rev} to {now_rev}");
        if now_rev == rev {
            let acked_version = acked.alias.iter().find(|(r, _)| *r == rev).map(|(_, v)| *v);
            assert_eq!(a["version"].as_u64(), acked_version);
        }
        assert!(acked.alias_tried.contains(&a["version"].as_u64().unwrap()));
    }

    let verify: Value = c
        .get(format!("{url}/v1/audit/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["ok"], true, "audit chain broken: {verify}");
    check_blob_dir(data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_write_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(&data).await;
    let c = crate::support::authed_client(&data);
    let r = c
        .post(format!("{}/v1/models", server.url))
        .json(&json!({"name": MODEL}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut sealed = Vec::new();
    for i in 0..3 {
        sealed.push(sealed_version(&c, &server.url, i).await);
    }
    let acked = Arc::new(Mutex::new(Acked::default()));
    acked.lock().unwrap().versions.extend(sealed.iter().copied());

    let mut server = Some(server);
    for round in 0..3u64 {
        let s = server.take().unwrap();
        let stop = Instant::now() + Duration::from_secs(10);
        let loader = tokio::spawn(load(s.url.clone(), acked.clone(), sealed.clone(), stop));
        // Let real work be in flight, then kill without warning.
        let (v0, f0, a0) = {
            let a = acked.lock().unwrap();
            (a.versions.len(), a.files.len(), a.alias.len())
        };
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            let progressed = {
                let a = acked.lock().unwrap();
                a.versions.len() >= v0 + 20 + (round as usize) * 7
                    && a.files.len() >= f0 + 3
                    && a.alias.len() > a0
            };
            if progressed {
                break;
            }
            assert!(Instant::now() < deadline, "no progress before the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.kill9();
        loader.await.unwrap();
        {
            let a = acked.lock().unwrap();
            eprintln!(
                "round {round}: killed after {} version creates, {} uploads, {} alias moves acknowledged",
                a.versions.len() - v0,
                a.files.len() - f0,
                a.alias.len() - a0
            );
        }

        let restarted = ServerProc::start(&data).await;
        {
            let snapshot = std::mem::take(&mut *acked.lock().unwrap());
            check_invariants(&restarted.url, &data, &snapshot).await;
            *acked.lock().unwrap() = snapshot;
        }
        server = Some(restarted);
    }
    let status = server.take().unwrap().terminate();
    assert!(status.success(), "graceful shutdown failed: {status}");
}
