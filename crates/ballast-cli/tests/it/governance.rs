//! Governance through the CLI: a YAML policy, a move that waits for a reviewer, self-approval
//! refused, a failed gate named on stderr, and versions compared side by side.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::{authed_client, json_as, run_as, ServerProc};

/// A token for `principal` with admin on every namespace.
async fn token(data_dir: &Path, url: &str, principal: &str) -> String {
    let r = authed_client(data_dir)
        .post(format!("{url}/v1/tokens"))
        .json(&json!({ "principal": principal, "roles": [{ "namespace": "*", "role": "admin" }] }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "token: {}", r.status());
    let v: Value = r.json().await.unwrap();
    v["secret"].as_str().unwrap().to_owned()
}

fn fails(url: &str, token: &str, args: &[&str]) -> String {
    let out = run_as(url, token, args);
    assert_eq!(out.status.code(), Some(1), "ballast {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_requests_reviews_and_comparisons_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(&data).await;
    let url = server.url.as_str();
    let alice = token(&data, url, "alice").await;
    let bob = token(&data, url, "bob").await;

    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "risk: medium\napprovals:\n  medium: { staging: 1, production: 1 }\ngates:\n  production:\n    - accuracy >= 0.92\n",
    )
    .unwrap();
    let set = json_as(url, &alice, &["policy", "set", "acme", policy.to_str().unwrap()]);
    assert_eq!(set["revision"], 1);
    let got = json_as(url, &alice, &["policy", "get", "acme"]);
    assert_eq!(got["policy"]["gates"]["production"][0], "accuracy >= 0.92");
    // A malformed rule is refused with its text, and the stored policy stays.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"gates": {"staging": ["accuracy >> 1"]}}"#).unwrap();
    let err = fails(url, &alice, &["policy", "set", "acme", bad.to_str().unwrap()]);
    assert!(err.contains("accuracy >> 1"), "{err}");
    assert_eq!(json_as(url, &alice, &["policy", "get", "acme"])["revision"], 1);

    json_as(url, &alice, &["model", "create", "acme/bot"]);
    for acc in ["0.9", "0.95"] {
        let src = dir.path().join(format!("v{acc}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("weights.bin"), acc.as_bytes()).unwrap();
        let meta = dir.path().join(format!("meta{acc}.yaml"));
        std::fs::write(
            &meta,
            format!("metrics: {{ accuracy: {acc} }}\nhyperparameters: {{ lr: {acc} }}\n"),
        )
        .unwrap();
        json_as(
            url,
            &alice,
            &[
                "push",
                "acme/bot",
                src.to_str().unwrap(),
                "--meta",
                meta.to_str().unwrap(),
            ],
        );
    }

    // Staging waits for a reviewer other than the requester.
    let pending = json_as(url, &alice, &["version", "stage", "acme/bot/1", "staging"]);
    assert_eq!(pending["state"], "pending");
    let id = pending["id"].as_u64().unwrap().to_string();
    let err = fails(url, &alice, &["transition", "approve", "acme/bot", &id]);
    assert!(
        err.contains("permission_denied") && err.contains("cannot approve"),
        "{err}"
    );
    let done = json_as(
        url,
        &bob,
        &["transition", "approve", "acme/bot", &id, "-m", "looks good"],
    );
    assert_eq!(done["state"], "completed");
    assert_eq!(
        json_as(url, &bob, &["version", "get", "acme/bot/1"])["stage"],
        "staging"
    );

    // A failed gate is named with what was observed and what was required.
    let err = fails(url, &alice, &["version", "stage", "acme/bot/1", "production"]);
    assert!(
        err.contains("gate_failed") && err.contains("accuracy >= 0.92") && err.contains("observed 0.9"),
        "{err}"
    );

    let list = json_as(
        url,
        &bob,
        &["transition", "list", "acme/bot", "--state", "gates_failed"],
    );
    assert_eq!(list["requests"].as_array().unwrap().len(), 1);
    let all = json_as(url, &bob, &["transition", "list"]);
    assert_eq!(all["requests"].as_array().unwrap().len(), 2, "{all}");
    let shown = run_as(url, &bob, &["transition", "show", "acme/bot", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("bob") && text.contains("looks good"), "{text}");

    let c = json_as(url, &bob, &["version", "compare", "acme/bot", "1", "2"]);
    assert_eq!(c["versions"][0]["production_gates_passed"], false);
    assert_eq!(c["versions"][1]["production_gates_passed"], true);
    let delta = c["metrics"][0]["deltas"][1].as_f64().unwrap();
    assert!((delta - 0.05).abs() < 1e-9, "{c}");
    let table = run_as(url, &bob, &["version", "compare", "acme/bot", "1", "2"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("metric accuracy") && text.contains("+0.05"),
        "{text}"
    );

    let out = run_as(url, &alice, &["policy", "rm", "acme"]);
    assert!(out.status.success());
    // Without a policy, the move goes straight through.
    let moved = json_as(url, &alice, &["version", "stage", "acme/bot/2", "staging"]);
    assert_eq!(moved["version"]["stage"], "staging");
}
