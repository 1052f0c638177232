//! Artifact regions: the registry over two throwaway `s3s-fs` servers as two regions. Pushed
//! blobs are replicated (the status shows the lag drop to 0); a local copy deleted or corrupted
//! is served from the other region and repaired; `fsck` reports and repairs; with the local
//! region unreachable, downloads still succeed. Skipped with a message when `s3s-fs` is not
//! installed, a failure when `CI=true`.

// The S3 tests' copy of this helper is private to them; this one is compiled apart.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../../../ballast-blob/tests/it/s3s.rs"]
mod s3s;

use std::path::PathBuf;
use std::time::Duration;

use ballast_server::{Config, Secret};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{create_token, data, err, eventually, ok, sha_hex, spawn_app_with, TestApp};
use s3s::{S3Server, ACCESS_KEY, SECRET_KEY};

const MIB: usize = 1024 * 1024;
const PREFIX: &str = "blobs";

/// Two regions, each on its own server (its endpoint given per region); the local one is
/// listed second to show `local_region` decides.
fn use_regions(c: &mut Config, local: &S3Server, remote: &S3Server) {
    c.blob_regions = vec![
        format!(
            "us-east=s3://{}/{PREFIX}?endpoint={}",
            remote.bucket, remote.endpoint
        ),
        format!(
            "eu-west=s3://{}/{PREFIX}?endpoint={}",
            local.bucket, local.endpoint
        ),
    ];
    c.local_region = Some("eu-west".into());
    c.s3_region = Some("us-east-1".into());
    c.s3_path_style = true;
    c.s3_access_key_id = Some(ACCESS_KEY.into());
    c.s3_secret_access_key = Some(Secret::new(SECRET_KEY));
    c.s3_part_size_bytes = 5 * MIB;
    c.s3_timeout_secs = 10;
    c.s3_max_retries = 1;
}

fn object(s3: &S3Server, hex: &str) -> PathBuf {
    s3.object_file(&format!("{PREFIX}/sha256/{}/{hex}", &hex[..2]))
}

fn flip_byte(path: &std::path::Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

async fn status(app: &TestApp) -> Value {
    app.get_ok("/v1/status").await
}

async fn download(app: &TestApp, path: &str) -> Vec<u8> {
    let r = app.get(path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.bytes().await.unwrap().to_vec()
}

async fn fsck(app: &TestApp, repair: bool) -> Value {
    let r = app
        .post("/v1/fsck", &json!({ "repair": repair }))
        .send()
        .await
        .unwrap();
    ok(r, StatusCode::OK).await
}

async fn wait_for(what: &str, check: impl Fn() -> bool) {
    eventually(Duration::from_secs(30), what, || {
        let done = check();
        async move { done }
    })
    .await;
}

#[tokio::test]
async fn two_regions_replicate_fall_back_repair_and_fsck() {
    let Some(eu) = S3Server::start("ballast-eu") else {
        return;
    };
    let Some(us) = S3Server::start("ballast-us") else {
        return;
    };
    let app = spawn_app_with(|c| use_regions(c, &eu, &us)).await;
    app.create_model("geo/model").await;
    let v = app.create_version("geo/model", &json!({})).await.version;
    // Three 4 MiB chunks: a damaged last chunk is served from the other region mid-stream.
    let big = data(9 * MIB + 77, 5);
    let small = b"{\"layers\": 2}".to_vec();
    let (big_hex, small_hex) = (sha_hex(&big), sha_hex(&small));
    app.upload("geo/model", v, "weights.bin", &big).await;
    app.upload("geo/model", v, "config.json", &small).await;
    app.seal("geo/model", v).await;
    assert!(object(&eu, &big_hex).is_file(), "written to the local region");

    // Replication drains the queue; the status shows lag 0.
    eventually(Duration::from_secs(30), "replication to us-east", || async {
        let s = status(&app).await;
        s["regions"][1]["replication_queue"] == json!(0)
    })
    .await;
    let s = status(&app).await;
    assert_eq!(s["regions"][0]["name"], "eu-west");
    assert_eq!(s["regions"][0]["local"], true);
    assert_eq!(s["regions"][1]["name"], "us-east");
    assert_eq!(s["regions"][1]["reachable"], true);
    assert_eq!(s["regions"][1]["replication_lag_secs"], json!(0.0));
    assert!(s["replication"]["replicated"].as_u64().unwrap() >= 2, "{s}");
    assert_eq!(std::fs::read(object(&us, &big_hex)).unwrap(), big);
    assert_eq!(std::fs::read(object(&us, &small_hex)).unwrap(), small);

    let path = format!("/v1/models/geo/model/versions/{v}/files/weights.bin");
    // The local copy deleted: served from us-east, then repaired.
    std::fs::remove_file(object(&eu, &big_hex)).unwrap();
    assert!(
        download(&app, &path).await == big,
        "download after the local copy was deleted"
    );
    wait_for("the deleted local copy to be repaired", || {
        std::fs::read(object(&eu, &big_hex)).is_ok_and(|b| b == big)
    })
    .await;

    // The local copy corrupted in its last chunk: the download is still whole and right.
    flip_byte(&object(&eu, &big_hex), 9 * MIB as u64 + 3);
    assert!(
        download(&app, &path).await == big,
        "download after the local copy was corrupted"
    );
    wait_for("the corrupt local copy to be repaired", || {
        std::fs::read(object(&eu, &big_hex)).is_ok_and(|b| b == big)
    })
    .await;
    // A range read of a damaged copy too.
    flip_byte(&object(&eu, &big_hex), 10);
    let r = app.get(&path).header("range", "bytes=5-20").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == big[5..=20]);
    wait_for("the corrupt local copy to be repaired after a range read", || {
        std::fs::read(object(&eu, &big_hex)).is_ok_and(|b| b == big)
    })
    .await;
    let s = status(&app).await;
    assert!(s["replication"]["fallback_reads"].as_u64().unwrap() >= 3, "{s}");
    eventually(Duration::from_secs(30), "three repairs counted", || async {
        status(&app).await["replication"]["repairs"].as_u64().unwrap() >= 3
    })
    .await;
    let metrics = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    for name in [
        "ballast_replication_queue{region=\"us-east\"}",
        "ballast_replication_lag_seconds{region=\"us-east\"}",
        "ballast_blob_fallback_reads_total",
        "ballast_blob_repairs_total",
        "ballast_replication_copies_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // fsck: everything good, then a missing remote copy and a corrupt local one.
    let report = fsck(&app, false).await;
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["blobs"], 2);
    std::fs::remove_file(object(&us, &small_hex)).unwrap();
    flip_byte(&object(&eu, &big_hex), 100);
    let report = fsck(&app, false).await;
    assert_eq!(report["clean"], false, "{report}");
    assert_eq!(report["regions"][0]["name"], "eu-west");
    assert_eq!(report["regions"][0]["corrupt"], 1, "{report}");
    assert_eq!(report["regions"][1]["missing"], 1, "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["sha256"] == small_hex.as_str()
        && p["region"] == "us-east"
        && p["state"] == "missing"
        && p["repaired"] == false));
    let report = fsck(&app, true).await;
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(std::fs::read(object(&us, &small_hex)).unwrap(), small);
    assert_eq!(std::fs::read(object(&eu, &big_hex)).unwrap(), big);
    let report = fsck(&app, false).await;
    assert_eq!(report["problems"], json!([]), "{report}");

    // fsck needs admin on *; status needs read.
    let reader = create_token(&app.base, &app.admin_token, "reader", &[("*", "reader")]).await;
    let r = reqwest::Client::new()
        .post(app.url("/v1/fsck"))
        .bearer_auth(&reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::FORBIDDEN, "permission_denied").await;
    let r = reqwest::Client::new()
        .get(app.url("/v1/status"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .post("/v1/fsck", &json!({ "repair": "yes" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The local region unreachable: downloads still succeed, from us-east.
    drop(eu);
    for _ in 0..2 {
        assert!(
            download(&app, &path).await == big,
            "download with the local region down"
        );
    }
    let small_path = format!("/v1/models/geo/model/versions/{v}/files/config.json");
    assert!(download(&app, &small_path).await == small);
    let s = status(&app).await;
    assert_eq!(s["regions"][0]["reachable"], false, "{s}");
    assert_eq!(s["regions"][1]["reachable"], true, "{s}");
}

#[tokio::test]
async fn a_remote_region_down_at_start_does_not_stop_the_registry() {
    let Some(eu) = S3Server::start("ballast-eu") else {
        return;
    };
    // us-east is a port nobody answers on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(|c| {
        c.blob_regions = vec![
            format!("eu-west=s3://{}/{PREFIX}?endpoint={}", eu.bucket, eu.endpoint),
            format!("us-east=s3://ballast-us/{PREFIX}?endpoint=http://127.0.0.1:{port}"),
        ];
        c.s3_region = Some("us-east-1".into());
        c.s3_path_style = true;
        c.s3_access_key_id = Some(ACCESS_KEY.into());
        c.s3_secret_access_key = Some(Secret::new(SECRET_KEY));
        c.s3_timeout_secs = 5;
        c.s3_max_retries = 0;
    })
    .await;
    app.create_model("geo/late").await;
    let v = app.sealed_version("geo/late", b"late bytes").await;
    let s = status(&app).await;
    assert_eq!(s["regions"][1]["reachable"], false, "{s}");
    assert_eq!(s["regions"][1]["replication_queue"], 1, "{s}");
    let path = format!("/v1/models/geo/late/versions/{v}/files/model.bin");
    let r = app.get(&path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = fsck(&app, false).await;
    assert_eq!(report["regions"][1]["unreachable"], 1, "{report}");
    assert_eq!(report["clean"], false);
}
