//! The registry with its artifacts on S3 (a throwaway `s3s-fs` server): upload (multipart),
//! seal, download whole and by ranges, survive a restart, detect and quarantine damaged objects;
//! and refuse to start on an unusable blob URL or an unreachable bucket. Skipped with a message
//! when `s3s-fs` is not installed, a failure when `CI=true`.

#[path = "../../../ballast-blob/tests/it/s3s.rs"]
mod s3s;

use ballast_server::{Config, Secret, Server};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::app::{data, err, sha_hex, spawn_app_with, TestApp};
use s3s::{S3Server, ACCESS_KEY, SECRET_KEY};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "ballast-artifacts";
const PREFIX: &str = "registry/blobs";

fn use_s3(c: &mut Config, s3: &S3Server) {
    c.blob_url = Some(format!("s3://{BUCKET}/{PREFIX}/"));
    c.s3_endpoint = Some(s3.endpoint.clone());
    c.s3_region = Some("us-east-1".into());
    c.s3_path_style = true;
    c.s3_access_key_id = Some(ACCESS_KEY.into());
    c.s3_secret_access_key = Some(Secret::new(SECRET_KEY));
    c.s3_part_size_bytes = 5 * MIB;
    c.s3_timeout_secs = 30;
}

fn object(s3: &S3Server, hex: &str) -> std::path::PathBuf {
    s3.object_file(&format!("{PREFIX}/sha256/{}/{hex}", &hex[..2]))
}

async fn range(app: &TestApp, path: &str, spec: &str) -> reqwest::Response {
    app.get(path).header("range", spec).send().await.unwrap()
}

fn flip_byte(path: &std::path::Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x20;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn artifacts_on_s3_end_to_end() {
    let Some(s3) = S3Server::start(BUCKET) else { return };
    let app = spawn_app_with(|c| use_s3(c, &s3)).await;
    app.create_model("s3/model").await;
    let v = app.create_version("s3/model", &json!({})).await.version;
    // Larger than two parts: goes up as a multipart upload.
    let big = data(12 * MIB + 4321, 21);
    let small = b"{\"layers\": 12}".to_vec();
    let (big_hex, small_hex) = (sha_hex(&big), sha_hex(&small));
    app.upload("s3/model", v, "weights/model.bin", &big).await;
    app.upload("s3/model", v, "config.json", &small).await;
    app.seal("s3/model", v).await;

    // The bytes are in the bucket, not in the data directory.
    for hex in [&big_hex, &small_hex] {
        assert!(object(&s3, hex).is_file(), "{hex} is not in the bucket");
        assert!(!app.blob_path(hex).exists(), "{hex} was stored locally");
    }
    assert_eq!(std::fs::read(object(&s3, &big_hex)).unwrap(), big);

    let path = format!("/v1/models/s3/model/versions/{v}/files/weights/model.bin");
    let r = app.get(&path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], big.len().to_string().as_str());
    assert_eq!(r.headers()["x-ballast-sha256"], big_hex.as_str());
    assert!(r.bytes().await.unwrap() == big, "whole download differs");
    let r = app.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let chunk = 4 * MIB;
    for (a, z) in [
        (0, 0),
        (chunk - 10, chunk + 10),
        (2 * chunk, 3 * chunk - 1),
        (big.len() - 100, big.len() - 1),
    ] {
        let r = range(&app, &path, &format!("bytes={a}-{z}")).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "range {a}-{z}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {a}-{z}/{}", big.len()).as_str()
        );
        assert!(r.bytes().await.unwrap() == big[a..=z], "range {a}-{z} differs");
    }
    let r = range(&app, &path, &format!("bytes={}-", big.len())).await;
    err(r, StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable").await;
    let info: serde_json::Value = app.get_ok(&format!("/v1/blobs/sha256/{small_hex}")).await;
    assert_eq!(info["size"], small.len());

    // The bucket is the source of truth: a restarted server serves the same bytes.
    let app = app.restart().await;
    let r = app.get(&path).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == big, "download after restart differs");

    // Damaged bytes in the bucket are never served whole, and are quarantined.
    flip_byte(&object(&s3, &big_hex), 9 * MIB as u64 + 3);
    let r = app.get(&path).send().await.unwrap();
    if let Ok(body) = r.bytes().await {
        assert_ne!(body.len(), big.len(), "a corrupt blob was delivered complete");
    }
    let r = app.get(&path).send().await.unwrap();
    err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
    assert!(
        !object(&s3, &big_hex).exists(),
        "the corrupt object was not moved aside"
    );
    let quarantined = std::fs::read_dir(s3.object_file(&format!("{PREFIX}/quarantine")))
        .unwrap()
        .count();
    assert_eq!(quarantined, 1);

    // Uploading the bytes again repairs it for every version that uses it.
    let v2 = app.create_version("s3/model", &json!({})).await.version;
    app.upload("s3/model", v2, "again.bin", &big).await;
    let r = range(&app, &path, &format!("bytes={}-{}", 9 * MIB, 9 * MIB + 99)).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == big[9 * MIB..9 * MIB + 100]);
    assert_eq!(
        s3.pending_uploads(),
        Vec::<String>::new(),
        "unfinished multipart uploads"
    );

    // The bucket goes away: reads and writes answer 503 `unavailable` after the bounded
    // retries, and the metadata keeps answering.
    drop(s3);
    let started = std::time::Instant::now();
    let r = app.get(&path).send().await.unwrap();
    err(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let v3 = app.create_version("s3/model", &json!({})).await.version;
    let r = app
        .req(
            Method::PUT,
            &format!("/v1/models/s3/model/versions/{v3}/files/x.bin"),
        )
        .body(b"bytes".to_vec())
        .send()
        .await
        .unwrap();
    err(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let files: serde_json::Value = app.get_ok(&format!("/v1/models/s3/model/versions/{v3}")).await;
    assert_eq!(files["files"], json!([]), "a file was recorded without its bytes");
}

#[tokio::test]
async fn unusable_blob_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    for (url, want) in [
        ("s3://No_Such/x", "bucket name"),
        ("file://relative", "absolute path"),
        ("ftp://host/x", "unknown scheme"),
    ] {
        let config = Config {
            blob_url: Some(url.into()),
            ..base.clone()
        };
        let e = Server::bind(config).await.err().map(|e| format!("{e:#}"));
        assert!(e.as_deref().is_some_and(|m| m.contains(want)), "{url}: {e:?}");
    }

    let config = Config {
        blob_url: Some("s3://some-bucket/x".into()),
        s3_part_size_bytes: 1024 * 1024,
        ..base.clone()
    };
    let e = Server::bind(config).await.err().map(|e| format!("{e:#}"));
    assert!(e.as_deref().is_some_and(|m| m.contains("part size")), "{e:?}");

    // A bucket nobody answers for: refused at start, within the bounded retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        blob_url: Some("s3://missing-bucket/x".into()),
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        s3_path_style: true,
        s3_access_key_id: Some("k".into()),
        s3_secret_access_key: Some(Secret::new("do-not-print-me")),
        s3_max_retries: 1,
        s3_timeout_secs: 5,
        ..base.clone()
    };
    assert!(
        !format!("{config:?}").contains("do-not-print-me"),
        "the secret was printed"
    );
    let started = std::time::Instant::now();
    let e = Server::bind(config).await.err().map(|e| format!("{e:#}"));
    assert!(
        e.as_deref().is_some_and(|m| m.contains("cannot reach bucket")),
        "{e:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
