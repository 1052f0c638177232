//! `ballast retention …` and `ballast gc` against a real server process.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{bin, token_for, ServerProc};

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BALLAST_URL", url)
        .env("BALLAST_ACTOR", "carol")
        .env("BALLAST_TOKEN", token_for(url))
        .output()
        .unwrap()
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(url, &all);
    assert!(
        out.status.success(),
        "ballast {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ballast {all:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn removed(report: &Value) -> Vec<u64> {
    report["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_dry_run_json_lists_what_would_go_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).await;
    let url = server.url.clone();
    json(&url, &["model", "create", "ret/m"]);
    let model_dir = dir.path().join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    for i in 0..3 {
        std::fs::write(model_dir.join("weights.bin"), format!("weights {i}")).unwrap();
        json(&url, &["push", "ret/m", model_dir.to_str().unwrap()]);
    }

    let rule = json(
        &url,
        &[
            "retention",
            "set",
            "ret",
            "--keep-last-dev",
            "1",
            "--keep-days",
            "0",
        ],
    );
    assert_eq!(rule["policy"]["keep_last_dev"], 1);
    let eff = json(&url, &["retention", "get", "ret/m"]);
    assert_eq!(eff["source"], "namespace");

    let dry = json(&url, &["gc", "--dry-run", "--explain"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(removed(&dry), vec![1, 2]);
    assert_eq!(dry["versions_removed"], 0);
    assert!(dry["versions"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not among the newest 1 development version"));
    assert_eq!(
        dry["kept"][0]["reasons"][0],
        "among the newest 1 development version"
    );
    // Nothing changed.
    let v1 = json(&url, &["version", "get", "ret/m/1"]);
    assert_eq!(v1["version"], 1);

    // The human form says the same.
    let out = run(&url, &["gc", "--dry-run"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ret/m/1") && text.contains("would remove 2 version(s)"),
        "{text}"
    );

    let done = json(&url, &["gc", "--model", "ret/m"]);
    assert_eq!(removed(&done), vec![1, 2]);
    assert_eq!(done["versions_removed"], 2);
    let out = run(&url, &["version", "get", "ret/m/1"]);
    assert!(!out.status.success());

    // Bad input is refused before anything runs.
    let out = run(&url, &["gc", "--namespace", "Bad NS"]);
    assert!(!out.status.success());
    let out = run(&url, &["gc", "--namespace", "ret", "--model", "ret/m"]);
    assert!(!out.status.success());
    let out = run(
        &url,
        &[
            "retention",
            "set",
            "ret",
            "--keep-last-dev",
            "x",
            "--keep-days",
            "1",
        ],
    );
    assert!(!out.status.success());
    let out = run(
        &url,
        &[
            "retention",
            "set",
            "ret",
            "--keep-last-dev",
            "1",
            "--keep-days",
            "99999",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep_days"));

    json(&url, &["retention", "rm", "ret"]);
    let out = run(&url, &["retention", "get", "ret"]);
    assert!(!out.status.success());
}
