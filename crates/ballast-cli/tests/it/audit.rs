//! `ballast audit` as a user runs it: listing filtered by actor, action and time, and `verify`
//! naming the entry that was altered in the database behind the server's back.

use std::path::Path;

use serde_json::Value;

use crate::support::{json_as, run_as, token_for, ServerProc};

/// `(id, actor, action, target)` of every listed entry.
fn entries(list: &Value) -> Vec<(u64, String, String, String)> {
    list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap(),
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Runs SQL against the server's SQLite database from outside, as someone with access to the
/// file could; exactly one row must change.
fn tamper(db: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    assert_eq!(conn.execute(sql, []).unwrap(), 1, "{sql}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_list_filters_and_verify_names_the_altered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProc::start(&data).await;
    let url = server.url.as_str();
    let admin = token_for(url);

    // Two actors: the admin, and dana with a token of her own.
    let created = json_as(url, &admin, &["token", "create", "dana", "--role", "acme=writer"]);
    let dana = created["secret"].as_str().unwrap().to_owned();
    json_as(url, &admin, &["model", "create", "acme/one"]);
    json_as(url, &admin, &["model", "create", "acme/two"]);
    json_as(url, &dana, &["model", "create", "acme/three"]);
    let out = run_as(
        url,
        &dana,
        &["model", "update", "acme/three", "--description", "by dana"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // --by: only dana's entries.
    let by_dana = entries(&json_as(url, &admin, &["audit", "list", "--by", "dana"]));
    assert_eq!(
        by_dana
            .iter()
            .map(|(_, a, act, t)| (a.as_str(), act.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        [
            ("dana", "model.create", "acme/three"),
            ("dana", "model.update", "acme/three")
        ],
        "{by_dana:?}"
    );
    // --action: every model creation, by whoever made it.
    let creates = entries(&json_as(
        url,
        &admin,
        &["audit", "list", "--action", "model.create"],
    ));
    let targets: Vec<&str> = creates.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(targets, ["acme/one", "acme/two", "acme/three"]);
    assert!(creates.iter().all(|e| e.2 == "model.create"));
    // Filters combine.
    let both = entries(&json_as(
        url,
        &admin,
        &["audit", "list", "--by", "dana", "--action", "model.create"],
    ));
    assert_eq!(both.len(), 1);
    assert_eq!(both[0].3, "acme/three");
    // --until: entries before a time only.
    let past = entries(&json_as(
        url,
        &admin,
        &["audit", "list", "--until", "2000-01-01T00:00:00Z"],
    ));
    assert!(past.is_empty(), "{past:?}");
    let all = entries(&json_as(url, &admin, &["audit", "list"]));
    let until_future = entries(&json_as(
        url,
        &admin,
        &["audit", "list", "--until", "2999-01-01T00:00:00Z"],
    ));
    assert_eq!(until_future, all);
    let full = json_as(url, &admin, &["audit", "list", "--action", "model.update"]);
    let update_at = full["entries"][0]["at"].as_str().unwrap().to_owned();
    let before_update = entries(&json_as(url, &admin, &["audit", "list", "--until", &update_at]));
    assert!(
        before_update.iter().all(|e| e.2 != "model.update"),
        "--until is exclusive: {before_update:?}"
    );
    assert!(before_update.iter().any(|e| e.3 == "acme/three"));
    // A bad time is refused with a clear message and a non-zero exit.
    let out = run_as(url, &admin, &["audit", "list", "--until", "yesterday"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("until"), "{err}");

    // Intact, then altered behind the server's back: verify names the entry and fails.
    let out = run_as(url, &admin, &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    let victim = by_dana[0].0;
    tamper(
        &data.join("ballast.db"),
        &format!("UPDATE audit SET actor = 'mallory' WHERE id = {victim}"),
    );
    let out = run_as(url, &admin, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "a broken chain exits with 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("entry {victim}")), "names the entry: {err}");
    let out = run_as(url, &admin, &["--json", "audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_id"], victim);
}
