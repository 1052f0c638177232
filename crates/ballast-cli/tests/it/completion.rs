//! `ballast transition complete` as a maintainer runs it: the version moves with its audit
//! entries and the chain verifies; other roles are refused; a decided request stays decided.

use serde_json::Value;

use crate::support::{json_as, run_as, token_for, ServerProc};

/// Runs a command that must fail with exit code 1; returns its stderr and its JSON error.
fn refused(url: &str, token: &str, args: &[&str]) -> (String, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run_as(url, token, &all);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ballast {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ballast {args:?}: no JSON error ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (String::from_utf8_lossy(&out.stderr).into_owned(), body)
}

/// Everything a refused completion must leave alone: the audit trail (ids and hashes), the
/// version and the request.
fn state(url: &str, token: &str, id: &str) -> (Vec<(u64, String)>, Value, Value) {
    let audit = json_as(url, token, &["audit", "list", "--limit", "1000"]);
    let entries = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_u64().unwrap(), e["hash"].as_str().unwrap().to_owned()))
        .collect();
    let v = json_as(url, token, &["version", "get", "acme/bot/1"]);
    let r = json_as(url, token, &["transition", "show", "acme/bot", id]);
    (entries, v, r)
}

fn new_token(url: &str, admin: &str, principal: &str, role: &str) -> String {
    let created = json_as(
        url,
        admin,
        &["token", "create", principal, "--role", &format!("acme={role}")],
    );
    created["secret"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintainer_completes_a_transition_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(&data).await;
    let url = server.url.as_str();
    let admin = token_for(url);
    let alice = new_token(url, &admin, "alice", "maintainer");
    let mara = new_token(url, &admin, "mara", "maintainer");
    let bob = new_token(url, &admin, "bob", "reviewer");
    let wendy = new_token(url, &admin, "wendy", "writer");

    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "risk: medium\napprovals:\n  medium: { staging: 0, production: 2 }\n",
    )
    .unwrap();
    json_as(url, &alice, &["policy", "set", "acme", policy.to_str().unwrap()]);
    json_as(url, &alice, &["model", "create", "acme/bot"]);
    let src = dir.path().join("model");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("weights.bin"), b"weights").unwrap();
    json_as(url, &alice, &["push", "acme/bot", src.to_str().unwrap()]);
    json_as(url, &alice, &["version", "stage", "acme/bot/1", "staging"]);
    let pending = json_as(url, &alice, &["version", "stage", "acme/bot/1", "production"]);
    assert_eq!(
        (&pending["state"], &pending["required_approvals"]),
        (&Value::from("pending"), &Value::from(2)),
        "{pending}"
    );
    let id = pending["id"].as_u64().unwrap().to_string();
    let one = json_as(url, &bob, &["transition", "approve", "acme/bot", &id]);
    assert_eq!(
        (&one["state"], &one["approvals"]),
        (&Value::from("pending"), &Value::from(1))
    );

    // A reviewer and a writer may not complete it; nothing changes.
    let before = state(url, &admin, &id);
    for token in [&bob, &wendy] {
        let (stderr, body) = refused(url, token, &["transition", "complete", "acme/bot", &id]);
        assert_eq!(body["error"]["code"], "permission_denied", "{body}");
        assert!(
            stderr.contains("permission_denied") && stderr.contains("may not maintain"),
            "{stderr}"
        );
    }
    assert_eq!(state(url, &admin, &id), before);

    // The maintainer completes it with one approval of two.
    let out = run_as(
        url,
        &mara,
        &["transition", "complete", "acme/bot", &id, "-m", "release window"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "transition {id} completed: acme/bot/1 is now in production"
        )),
        "{text}"
    );
    let shown = json_as(url, &mara, &["transition", "show", "acme/bot", &id]);
    assert_eq!(shown["state"], "completed");
    assert_eq!(shown["closed_by"], "mara");
    assert_eq!(
        shown["resolution"],
        "completed by mara with 1 of 2 approval(s): release window"
    );
    assert_eq!(
        json_as(url, &mara, &["version", "get", "acme/bot/1"])["stage"],
        "production"
    );

    // The move and the completion are mara's, from the same request, one after the other.
    let by_mara = json_as(url, &admin, &["audit", "list", "--by", "mara"]);
    let entries = by_mara["entries"].as_array().unwrap();
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("version.stage", "acme/bot/1"),
            ("transition.completed", "acme/bot/1")
        ],
        "{by_mara}"
    );
    assert_eq!(entries[0]["request_id"], entries[1]["request_id"]);
    assert_eq!(
        entries[1]["id"].as_u64().unwrap(),
        entries[0]["id"].as_u64().unwrap() + 1
    );
    assert_eq!(entries[0]["after"]["stage"], "production");
    let out = run_as(url, &admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    // Completing it again is refused with the reason, and changes nothing.
    let before = state(url, &admin, &id);
    let (stderr, body) = refused(url, &mara, &["transition", "complete", "acme/bot", &id]);
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert!(
        stderr.contains("conflict")
            && stderr.contains(&format!("transition request {id} is completed"))
            && stderr.contains("only pending requests"),
        "{stderr}"
    );
    assert_eq!(state(url, &admin, &id), before);
    let out = run_as(url, &admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
