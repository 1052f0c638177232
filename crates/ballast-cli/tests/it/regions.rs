//! `ballast status` and `ballast fsck [--repair]` against a real server process with two
//! artifact regions on local disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{admin_token, bin, free_port, ServerProc};

fn run(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BALLAST_URL", url)
        .env("BALLAST_TOKEN", token)
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn blob(root: &Path, hex: &str) -> PathBuf {
    root.join("sha256").join(&hex[..2]).join(hex)
}

async fn start(data_dir: &Path, eu: &Path, us: &Path) -> ServerProc {
    let port = free_port();
    let child = Command::new(bin())
        .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .arg("--blob-region")
        .arg(format!("us-east=file://{}", us.display()))
        .arg("--blob-region")
        .arg(format!("eu-west=file://{}", eu.display()))
        .args(["--local-region", "eu-west"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ballast server");
    let mut server = ServerProc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/readyz", server.url)).await {
            if r.status().is_success() {
                return server;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "server did not become ready in 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_fsck_json_report_regions_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let (data, eu, us) = (
        dir.path().join("data"),
        dir.path().join("eu"),
        dir.path().join("us"),
    );
    let server = start(&data, &eu, &us).await;
    let token = admin_token(&data);
    let url = server.url.clone();

    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), vec![7u8; 100_000]).unwrap();
    let out = run(&url, &token, &["model", "create", "geo/cli"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&url, &token, &["push", "geo/cli", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(vec![7u8; 100_000]));

    // Replication drains: the status shows an empty queue and no lag.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = run(&url, &token, &["--json", "status"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s = json_of(&out);
        if s["regions"][1]["replication_queue"] == 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "replication did not drain: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["regions"][0]["name"], "eu-west");
    assert_eq!(status["regions"][0]["local"], true);
    assert_eq!(status["regions"][1]["name"], "us-east");
    assert_eq!(status["regions"][1]["reachable"], true);
    assert_eq!(status["regions"][1]["replication_lag_secs"], 0.0);
    assert!(blob(&us, &hex).is_file(), "replicated to us-east");
    let out = run(&url, &token, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("eu-west (local)") && text.contains("us-east"),
        "{text}"
    );

    let out = run(&url, &token, &["--json", "fsck"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_of(&out)["clean"], true);

    // A copy lost in us-east: fsck reports it and fails; --repair restores it.
    std::fs::remove_file(blob(&us, &hex)).unwrap();
    let out = run(&url, &token, &["--json", "fsck"]);
    assert!(!out.status.success(), "fsck passed with a missing copy");
    let report = json_of(&out);
    assert_eq!(report["clean"], false);
    assert_eq!(report["regions"][1]["missing"], 1, "{report}");
    assert_eq!(report["problems"][0]["sha256"], hex.as_str());
    assert_eq!(report["problems"][0]["state"], "missing");
    let out = run(&url, &token, &["--json", "fsck", "--repair"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["regions"][1]["repaired"], 1, "{report}");
    assert_eq!(std::fs::read(blob(&us, &hex)).unwrap(), vec![7u8; 100_000]);
    drop(server);
}
