//! The `ballast` CLI as a user runs it: against a real server process, through the whole
//! lifecycle, with `--json` output parsed as a script would.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{bin, ServerProc};

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BALLAST_URL", url)
        .env("BALLAST_ACTOR", "carol")
        .env("BALLAST_TOKEN", crate::support::token_for(url))
        .output()
        .unwrap()
}

/// Runs with `--json` and expects success.
fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(url, &all);
    assert!(
        out.status.success(),
        "ballast {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ballast {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("tokenizer")).unwrap();
    std::fs::write(root.join("config.json"), br#"{"layers": 2}"#).unwrap();
    std::fs::write(root.join("tokenizer/vocab.txt"), "a\nb\nc\n").unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("weights.bin"), big).unwrap();
}

fn tree_digests(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_promote_pull_rollback_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).await;
    let url = server.url.as_str();

    let m = json(
        url,
        &[
            "model",
            "create",
            "acme/bot",
            "--description",
            "support bot",
            "--tag",
            "team=support",
        ],
    );
    assert_eq!(m["name"], "acme/bot");
    assert_eq!(m["tags"]["team"], "support");

    let src = dir.path().join("src");
    write_tree(&src);
    let meta = dir.path().join("meta.yaml");
    std::fs::write(
        &meta,
        "description: first\nowner: ml\nmetrics:\n  accuracy: 0.91\nlineage:\n  source_run_id: run-1\nmodel_card: |\n  # Bot\n",
    )
    .unwrap();
    let p1 = json(
        url,
        &[
            "push",
            "acme/bot",
            src.to_str().unwrap(),
            "--meta",
            meta.to_str().unwrap(),
        ],
    );
    assert_eq!(p1["version"], 1);
    assert_eq!(p1["files"], 3);
    assert_eq!(p1["uploaded"], 3);

    // A second push of the same tree uploads nothing: every blob is already stored.
    let p2 = json(
        url,
        &["push", "acme/bot", src.to_str().unwrap(), "--alias", "challenger"],
    );
    assert_eq!(p2["version"], 2);
    assert_eq!(p2["reused"], 3);
    assert_eq!(p2["bytes_uploaded"], 0);
    assert_eq!(p2["digest"], p1["digest"], "same files, same manifest digest");

    let v = json(url, &["version", "get", "acme/bot/1"]);
    assert_eq!(v["state"], "sealed");
    assert_eq!(v["metadata"]["metrics"]["accuracy"], 0.91);
    assert_eq!(v["digest"], p1["digest"]);

    json(url, &["version", "stage", "acme/bot/1", "staging"]);
    let s = json(url, &["version", "stage", "acme/bot/1", "production"]);
    assert_eq!(s["version"]["stage"], "production");
    json(url, &["version", "stage", "acme/bot/2", "staging"]);
    let s = json(url, &["version", "stage", "acme/bot/2", "production"]);
    assert_eq!(s["demoted"], 1);
    assert_eq!(
        json(url, &["version", "get", "acme/bot:production"])["version"],
        2
    );
    let rb = json(url, &["version", "rollback", "acme/bot"]);
    assert_eq!(rb["version"]["version"], 1);
    assert_eq!(
        json(url, &["version", "get", "acme/bot:production"])["version"],
        1
    );

    json(url, &["alias", "set", "acme/bot", "champion", "1"]);
    assert_eq!(json(url, &["alias", "get", "acme/bot", "champion"])["version"], 1);
    assert_eq!(
        json(url, &["version", "get", "acme/bot@challenger"])["version"],
        2
    );

    // Pull by alias: identical tree, every digest checked.
    let dest = dir.path().join("pulled");
    json(url, &["pull", "acme/bot@champion", dest.to_str().unwrap()]);
    assert_eq!(tree_digests(&src), tree_digests(&dest));
    // A non-empty destination is refused unless --force, and is left as it was.
    let out = run(url, &["pull", "acme/bot/2", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(tree_digests(&src), tree_digests(&dest));
    json(
        url,
        &["pull", "acme/bot:production", dest.to_str().unwrap(), "--force"],
    );
    assert_eq!(tree_digests(&src), tree_digests(&dest));

    // A failed pull leaves nothing behind.
    let missing = dir.path().join("missing");
    let out = run(url, &["pull", "acme/bot/9", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
    assert!(!missing.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging directories left behind: {leftovers:?}"
    );

    let list = json(url, &["version", "list", "acme/bot", "--metric", "accuracy>=0.9"]);
    let numbers: Vec<u64> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1]);
    let models = json(url, &["model", "list"]);
    assert_eq!(models["models"].as_array().unwrap().len(), 1);

    let audit = json(url, &["audit", "list", "--model", "acme/bot"]);
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries.len() > 10, "{audit}");
    // With auth on, the actor is the token's principal (the header is ignored).
    assert!(entries.iter().all(|e| e["actor"] == "admin"));
    let out = run(url, &["audit", "verify"]);
    assert!(out.status.success());

    // Archive everything in staging/production, then delete the model.
    let out = run(url, &["model", "delete", "acme/bot"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "delete must be refused while a version is in production"
    );
    json(url, &["version", "stage", "acme/bot/1", "archived"]);
    let out = run(url, &["model", "delete", "acme/bot"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).await;
    let url = server.url.as_str();

    // Names are checked before anything is sent: a usage error naming the rule.
    let out = run(url, &["model", "create", "Acme/Bot"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lowercase"), "{err}");
    // What only the server can decide comes back as its error code.
    json(url, &["model", "create", "acme/bot"]);
    let out = run(url, &["model", "create", "acme/bot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already_exists"));

    // --json also prints the error body on stdout for scripts.
    let out = run(url, &["--json", "model", "get", "acme/nothing"]);
    assert_eq!(out.status.code(), Some(1));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    let out = run(
        url,
        &["pull", "not-a-ref", dir.path().join("x").to_str().unwrap()],
    );
    assert_ne!(out.status.code(), Some(0));

    // An unreachable registry says what to do next.
    let out = run("http://127.0.0.1:9", &["model", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BALLAST_URL"));

    let out = run(url, &["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["server", "model", "version", "alias", "push", "pull", "audit"] {
        assert!(help.contains(cmd), "--help does not mention {cmd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_event_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).await;
    let url = server.url.as_str();

    // A receiver that is not there: deliveries stay pending, which is what we inspect.
    let target = format!("http://127.0.0.1:{}/hook", crate::support::free_port());
    let hook = json(
        url,
        &[
            "webhook",
            "create",
            &target,
            "--event",
            "model.created",
            "--description",
            "ci",
        ],
    );
    let id = hook["id"].as_u64().unwrap();
    assert!(
        hook["secret"].as_str().unwrap().len() >= 16,
        "the secret is shown on create"
    );
    let out = run(url, &["webhook", "create", &target, "--event", "no.such.type"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown event type"));

    json(url, &["model", "create", "hooks/cli"]);
    let hooks = json(url, &["webhook", "list"]);
    assert_eq!(hooks[0]["id"], id);
    assert!(hooks[0].get("secret").is_none(), "the secret is never listed");

    let ping = json(url, &["webhook", "test", &id.to_string()]);
    let list = json(url, &["webhook", "deliveries", &id.to_string()]);
    let types: Vec<&str> = list["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["webhook.ping", "model.created"]);
    let one = json(
        url,
        &[
            "webhook",
            "deliveries",
            &id.to_string(),
            "--delivery",
            &ping["id"].to_string(),
        ],
    );
    assert_eq!(one["id"], ping["id"]);
    let out = run(
        url,
        &["webhook", "redeliver", &id.to_string(), &ping["id"].to_string()],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a pending delivery cannot be redelivered"
    );

    let events = json(url, &["events", "list", "--type", "model.created"]);
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
    assert_eq!(events["events"][0]["subject"], "hooks/cli");
    let types = json(url, &["events", "types"]);
    assert!(types.get("stage_transition.completed").is_some());

    json(url, &["webhook", "rm", &id.to_string()]);
    assert_eq!(json(url, &["webhook", "list"]).as_array().unwrap().len(), 0);
}

#[test]
fn server_environment_is_layered_and_strict() {
    let dir = tempfile::tempdir().unwrap();
    // A misspelt server variable is refused, naming it…
    let out = Command::new(bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("a"))
        .env("BALLAST_LISTN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listn"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // …while other commands' variables are left alone and server variables are read.
    let port = crate::support::free_port();
    let mut child = Command::new(bin())
        .args(["server", "--data-dir"])
        .arg(dir.path().join("b"))
        .env("BALLAST_LISTEN", format!("127.0.0.1:{port}"))
        .env("BALLAST_ROUTER_REGION", "eu-west")
        .env("BALLAST_WEBHOOK_SECRET", "0123456789abcdef0123")
        .env("BALLAST_URL", "http://127.0.0.1:1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not listen on BALLAST_LISTEN"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_and_route_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).await;
    let url = server.url.as_str();

    json(url, &["model", "create", "acme/bot"]);
    let src = dir.path().join("src");
    write_tree(&src);
    json(url, &["push", "acme/bot", src.to_str().unwrap()]);
    json(url, &["version", "stage", "acme/bot/1", "staging"]);
    json(url, &["version", "stage", "acme/bot/1", "production"]);

    let d = json(
        url,
        &[
            "deployment",
            "add",
            "acme/bot/1",
            "--region",
            "eu-west",
            "--endpoint",
            "http://127.0.0.1:8000",
            "--weight",
            "3",
        ],
    );
    assert_eq!((d["version"].as_u64(), d["weight"].as_u64()), (Some(1), Some(3)));
    let id = d["id"].as_u64().unwrap();
    // A duplicate and a bad URL fail with a message and exit code 1.
    let out = run(
        url,
        &[
            "deployment",
            "add",
            "acme/bot/1",
            "--region",
            "eu-west",
            "--endpoint",
            "http://127.0.0.1:8000",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already deployed"));
    let out = run(
        url,
        &[
            "deployment",
            "add",
            "acme/bot/1",
            "--region",
            "eu-west",
            "--endpoint",
            "ftp://x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let list = json(
        url,
        &["deployment", "list", "--model", "acme/bot", "--region", "eu-west"],
    );
    assert_eq!(list["deployments"].as_array().unwrap().len(), 1);
    let out = run(url, &["deployment", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("http://127.0.0.1:8000"));

    json(url, &["route", "set", "bot-small", "--target", "acme/bot@small"]);
    let r = json(
        url,
        &[
            "route",
            "set",
            "bot",
            "--target",
            "acme/bot:production",
            "--fallback",
            "bot-small",
            "--canary",
            "challenger=5",
            "--sticky-header",
            "x-user",
        ],
    );
    assert_eq!(r["revision"], 1);
    assert_eq!(r["canary"]["percent"], 5);
    let out = run(url, &["route", "set", "bot", "--target", "acme/bot"]);
    assert_eq!(out.status.code(), Some(1));
    let routes = json(url, &["route", "list"]);
    assert_eq!(routes["routes"].as_array().unwrap().len(), 2);
    let snap = json(url, &["route", "snapshot"]);
    let bot = snap["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "bot")
        .unwrap();
    assert_eq!(bot["targets"][0]["url"], "http://127.0.0.1:8000");
    assert_eq!(bot["sticky_header"], "x-user");

    let out = run(url, &["route", "rm", "bot-small"]);
    assert_eq!(out.status.code(), Some(1), "bot still falls back to it");
    json(url, &["route", "rm", "bot"]);
    json(url, &["route", "rm", "bot-small"]);
    json(url, &["deployment", "rm", &id.to_string()]);
    assert!(json(url, &["deployment", "list"])["deployments"]
        .as_array()
        .unwrap()
        .is_empty());
    let events = json(
        url,
        &[
            "events",
            "list",
            "--type",
            "deployment.added",
            "--type",
            "route.removed",
        ],
    );
    assert_eq!(events["events"].as_array().unwrap().len(), 3);
}

/// Runs as the holder of `token`.
fn run_as(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("BALLAST_URL", url)
        .env("BALLAST_TOKEN", token)
        .env_remove("BALLAST_ACTOR")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&dir.path().join("data")).await;
    let url = &server.url;
    let created = json(
        url,
        &[
            "token",
            "create",
            "bob",
            "--role",
            "acme=writer",
            "--expires-in-days",
            "30",
            "--description",
            "ci",
        ],
    );
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("blst_"));
    assert!(created["expires_at"].as_str().is_some());
    let listed = json(url, &["token", "list"]);
    assert!(!listed.to_string().contains(&secret));

    let out = run_as(url, &secret, &["--json", "whoami"]);
    assert!(out.status.success());
    let me: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["principal"], "bob");
    assert_eq!(me["roles"][0]["namespace"], "acme");

    assert!(run_as(url, &secret, &["model", "create", "acme/x"])
        .status
        .success());
    let denied = run_as(url, &secret, &["model", "create", "other/x"]);
    assert_eq!(denied.status.code(), Some(1));
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(
        err.contains("permission_denied") && err.contains("role grant"),
        "{err}"
    );

    json(url, &["role", "grant", "bob", "other", "writer"]);
    assert!(run_as(url, &secret, &["model", "create", "other/x"])
        .status
        .success());
    let roles = json(url, &["role", "list", "--principal", "bob"]);
    assert_eq!(roles["roles"].as_array().unwrap().len(), 2);
    json(url, &["role", "revoke", "bob", "other", "writer"]);
    assert_eq!(
        run_as(url, &secret, &["model", "create", "other/y"])
            .status
            .code(),
        Some(1)
    );
    // A bad role name is refused by the CLI before anything is sent.
    assert!(!run(url, &["role", "grant", "bob", "acme", "owner"])
        .status
        .success());

    let id = created["id"].as_u64().unwrap().to_string();
    json(url, &["token", "revoke", &id]);
    let gone = run_as(url, &secret, &["whoami"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("unauthenticated"));
    // Without any token the server says how to get one.
    let none = run_as(url, "", &["model", "list"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("admin.token"));
}
