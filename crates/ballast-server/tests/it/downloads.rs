//! Downloads: whole files, byte ranges across 4 MiB chunks, unsatisfiable ranges, and what
//! happens when the bytes on disk rot (never served complete, reported, repaired by re-upload).

use reqwest::{Method, StatusCode};

use crate::app::{data, err, sha_hex, spawn_app, TestApp};

const MIB: usize = 1024 * 1024;

async fn range(app: &TestApp, path: &str, spec: &str) -> reqwest::Response {
    app.get(path).header("range", spec).send().await.unwrap()
}

/// Flips bits of one byte in place, keeping the size (bit rot).
fn flip_byte(path: &std::path::Path, offset: u64, mask: u8) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= mask;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
    f.sync_all().unwrap();
}

async fn metric_value(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn full_and_ranged_downloads() {
    let app = spawn_app().await;
    app.create_model("dl/model").await;
    let v = app.create_version("dl/model", &serde_json::json!({})).await;
    let bytes = data(10 * MIB + 12_345, 7);
    let size = bytes.len() as u64;
    let hex = sha_hex(&bytes);
    app.upload("dl/model", v.version, "weights/model.bin", &bytes)
        .await;
    let path = format!(
        "/v1/models/dl/model/versions/{}/files/weights/model.bin",
        v.version
    );

    let r = app.get(&path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["content-length"], size.to_string().as_str());
    assert_eq!(h["x-ballast-sha256"], hex.as_str());
    assert_eq!(h["etag"], format!("\"{hex}\"").as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-type"], "application/octet-stream");
    let body = r.bytes().await.unwrap();
    assert!(body == bytes, "full body differs");

    let r = app.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], size.to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());

    let chunk = 4 * MIB as u64;
    let cases: Vec<(String, u64, u64)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=100-199".into(), 100, 199),
        (
            format!("bytes={}-{}", chunk - 10, chunk + 10),
            chunk - 10,
            chunk + 10,
        ),
        (format!("bytes={}-{}", chunk, 2 * chunk - 1), chunk, 2 * chunk - 1),
        (format!("bytes={}-{}", 1000, 2 * chunk + 5), 1000, 2 * chunk + 5),
        (format!("bytes={}-", chunk + 3), chunk + 3, size - 1),
        ("bytes=0-".into(), 0, size - 1),
        ("bytes=-1000".into(), size - 1000, size - 1),
        (format!("bytes=-{}", size - 5), 5, size - 1),
        (format!("bytes=-{}", size + 50), 0, size - 1),
        (format!("bytes={}-{}", size - 2, size + 1000), size - 2, size - 1),
    ];
    for (spec, a, b) in cases {
        let r = range(&app, &path, &spec).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {a}-{b}/{size}").as_str(),
            "{spec}"
        );
        assert_eq!(
            r.headers()["content-length"],
            (b - a + 1).to_string().as_str(),
            "{spec}"
        );
        let got = r.bytes().await.unwrap();
        assert!(got == bytes[a as usize..=b as usize], "{spec}: wrong bytes");
    }

    for spec in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 10, size + 20),
        "bytes=-0".into(),
        "bytes=9-3".into(),
    ] {
        let r = range(&app, &path, &spec).await;
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes */{size}").as_str(),
            "{spec}"
        );
        err(r, StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable").await;
    }
}

#[tokio::test]
async fn corrupt_blob_is_never_served_and_reupload_repairs_it() {
    let app = spawn_app().await;
    app.create_model("dl/rot").await;
    let bytes = data(9 * MIB + 777, 11);
    let hex = sha_hex(&bytes);
    let v1 = app.create_version("dl/rot", &serde_json::json!({})).await.version;
    app.upload("dl/rot", v1, "model.bin", &bytes).await;
    app.seal("dl/rot", v1).await;
    let path = format!("/v1/models/dl/rot/versions/{v1}/files/model.bin");
    // A range read first, so the chunk index exists before the damage.
    let r = range(&app, &path, "bytes=0-9").await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == bytes[..10]);
    let corrupt_before = metric_value(&app, "ballast_blob_corrupt_total").await;

    // Flip one byte in the last chunk, keeping the size.
    let on_disk = app.blob_path(&hex);
    flip_byte(&on_disk, 8 * MIB as u64 + 100, 0x40);

    let r = app.get(&path).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "headers go out before the bytes are checked"
    );
    // Either the transfer is aborted (the client sees an error) or the body is short.
    if let Ok(body) = r.bytes().await {
        assert_ne!(body.len(), bytes.len(), "a corrupt blob was delivered complete");
    }

    // Now the server knows: the blob was quarantined and every read answers blob_corrupt.
    let r = app.get(&path).send().await.unwrap();
    err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
    let r = range(&app, &path, "bytes=0-9").await;
    err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
    let r = app.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!on_disk.exists(), "the corrupt bytes were moved aside");
    assert_eq!(app.files_under("quarantine").len(), 1);
    let r = app.get(&format!("/v1/blobs/sha256/{hex}")).send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    assert!(metric_value(&app, "ballast_blob_corrupt_total").await > corrupt_before);

    // Uploading the same bytes again (to any draft) repairs the blob for every version.
    let v2 = app.create_version("dl/rot", &serde_json::json!({})).await.version;
    app.upload("dl/rot", v2, "again.bin", &bytes).await;
    let r = app.get(&path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap() == bytes);
    let r = range(&app, &path, &format!("bytes={}-{}", 8 * MIB, 8 * MIB + 200)).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == bytes[8 * MIB..=8 * MIB + 200]);
}

#[tokio::test]
async fn corrupt_chunk_fails_a_range_read() {
    let app = spawn_app().await;
    app.create_model("dl/rot2").await;
    let bytes = data(5 * MIB, 12);
    let hex = sha_hex(&bytes);
    let v = app
        .create_version("dl/rot2", &serde_json::json!({}))
        .await
        .version;
    app.upload("dl/rot2", v, "m.bin", &bytes).await;
    let path = format!("/v1/models/dl/rot2/versions/{v}/files/m.bin");
    let r = range(&app, &path, "bytes=0-0").await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == bytes[..1]);

    flip_byte(&app.blob_path(&hex), 10, 1);

    // A range entirely inside the intact second chunk is still served (verified by its chunk).
    let r = range(&app, &path, &format!("bytes={}-{}", 4 * MIB + 1, 4 * MIB + 100)).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert!(r.bytes().await.unwrap() == bytes[4 * MIB + 1..=4 * MIB + 100]);
    // A range touching the damaged chunk never delivers its bytes: the connection is cut (before
    // or after the headers, depending on timing) or the answer is a blob_corrupt error.
    match app.get(&path).header("range", "bytes=0-99").send().await {
        Err(_) => {}
        Ok(r) if r.status() == StatusCode::PARTIAL_CONTENT => {
            if let Ok(b) = r.bytes().await {
                assert_ne!(b.len(), 100, "bytes of a damaged chunk were served");
            }
        }
        Ok(r) => {
            err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
        }
    }
    let r = app.get(&path).send().await.unwrap();
    err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
}

#[tokio::test]
async fn truncated_blob_is_reported_corrupt_not_as_a_bad_range() {
    let app = spawn_app().await;
    app.create_model("dl/short").await;
    app.create_version("dl/short", &serde_json::json!({})).await;
    let bytes = data(1000, 4);
    app.upload("dl/short", 1, "a.bin", &bytes).await;
    std::fs::write(app.blob_path(&sha_hex(&bytes)), &bytes[..990]).unwrap();
    // The range is valid for the recorded size; the stored bytes are what is wrong.
    let r = range(
        &app,
        "/v1/models/dl/short/versions/1/files/a.bin",
        "bytes=995-999",
    )
    .await;
    err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
    assert_eq!(app.files_under("quarantine").len(), 1);
    let r = app
        .get("/v1/models/dl/short/versions/1/files/a.bin")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::INTERNAL_SERVER_ERROR, "blob_corrupt").await;
}

#[tokio::test]
async fn empty_and_chunked_uploads() {
    let app = spawn_app().await;
    app.create_model("dl/edge").await;
    app.create_version("dl/edge", &serde_json::json!({})).await;
    let e = app.upload("dl/edge", 1, "empty", b"").await;
    assert_eq!((e.size, e.sha256.as_str()), (0, sha_hex(b"").as_str()));
    let r = app
        .get("/v1/models/dl/edge/versions/1/files/empty")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = range(&app, "/v1/models/dl/edge/versions/1/files/empty", "bytes=0-").await;
    err(r, StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable").await;

    // Without Content-Length (chunked transfer), the digest is still checked.
    let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 100_000]).collect();
    let whole = parts.concat();
    let stream = |parts: Vec<Vec<u8>>| {
        reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts.into_iter().map(Ok::<_, std::io::Error>),
        ))
    };
    let r = app
        .req(Method::PUT, "/v1/models/dl/edge/versions/1/files/chunked")
        .header("x-ballast-sha256", sha_hex(b"not these"))
        .body(stream(parts.clone()))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch").await;
    let r = app
        .req(Method::PUT, "/v1/models/dl/edge/versions/1/files/chunked")
        .header("x-ballast-sha256", sha_hex(&whole))
        .body(stream(parts))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .get("/v1/models/dl/edge/versions/1/files/chunked")
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap() == whole);
    assert!(app.files_under("tmp").is_empty());
}

#[tokio::test]
async fn attaching_a_corrupt_blob_is_refused_and_counted() {
    let app = spawn_app().await;
    app.create_model("dl/attach").await;
    app.create_version("dl/attach", &serde_json::json!({})).await;
    let bytes = data(2000, 9);
    let hex = sha_hex(&bytes);
    app.upload("dl/attach", 1, "a.bin", &bytes).await;
    flip_byte(&app.blob_path(&hex), 5, 0x10);
    let before = metric_value(&app, "ballast_blob_corrupt_total").await;
    let r = app
        .post(
            "/v1/models/dl/attach/versions/1/files",
            &serde_json::json!({ "path": "b.bin", "sha256": hex }),
        )
        .send()
        .await
        .unwrap();
    let e = err(r, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(e["field"], "sha256");
    assert_eq!(app.files_under("quarantine").len(), 1);
    assert!(metric_value(&app, "ballast_blob_corrupt_total").await > before);
    let v: ballast_api::Version = app.get_ok("/v1/models/dl/attach/versions/1").await;
    assert_eq!(v.files.len(), 1, "nothing was attached");
}

#[tokio::test]
async fn unusual_valid_paths_round_trip() {
    let app = spawn_app().await;
    app.create_model("dl/paths").await;
    app.create_version("dl/paths", &serde_json::json!({})).await;
    // (path as stored, path as written in the URL)
    let paths = [
        ("x y/ü.bin", "x%20y/%C3%BC.bin"),
        ("weights/..hidden", "weights/..hidden"),
        (".env", ".env"),
        ("a%b", "a%25b"),
        ("q?x#y", "q%3Fx%23y"),
        ("deep/er/still/file.json", "deep/er/still/file.json"),
    ];
    for (i, (stored, url)) in paths.iter().enumerate() {
        let body = format!("content {i}");
        let r = app
            .req(
                Method::PUT,
                &format!("/v1/models/dl/paths/versions/1/files/{url}"),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let f: ballast_api::FileEntry = crate::app::ok(r, StatusCode::CREATED).await;
        assert_eq!(f.path, *stored);
        let r = app
            .get(&format!("/v1/models/dl/paths/versions/1/files/{url}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{stored}");
        assert_eq!(r.text().await.unwrap(), body);
    }
    let hex = sha_hex(b"content 0");
    let r = app
        .post(
            "/v1/models/dl/paths/versions/1/files",
            &serde_json::json!({ "path": "typed.bin", "sha256": hex, "media_type": "tëxt/plain; charset=ü" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app
        .get("/v1/models/dl/paths/versions/1/files/typed.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "content 0");
    let v: ballast_api::Version = app.get_ok("/v1/models/dl/paths/versions/1").await;
    assert_eq!(v.files.len(), paths.len() + 1);
    app.seal("dl/paths", 1).await;
}
