//! The whole life of a model through HTTP: create, register a version with full metadata,
//! upload and share blobs, seal, stage, promote with demotion, roll back, aliases with
//! compare-and-swap, delete — and an audit trail that has every mutation and nothing else.

use ballast_api::{Alias, FileEntry, Model, StageChange, Version, VersionMetadata, VersionState};
use ballast_core::{Manifest, ManifestEntry, Sha256Digest, Stage};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{data, err, etag, ok, sha_hex, spawn_app};

fn full_metadata(description: &str) -> Value {
    json!({
        "description": description,
        "owner": "alice@acme.example",
        "training_data": "s3://acme/data/tickets-2024-06",
        "code_commit": "0123456789abcdef0123456789abcdef01234567",
        "hyperparameters": { "lr": 0.0003, "layers": [4, 8, 8], "optimizer": "adamw", "warmup": true, "sched": { "kind": "cosine" } },
        "metrics": { "accuracy": 0.91, "f1": 0.875, "latency_ms": 42.0 },
        "frameworks": { "torch": "2.4.1", "transformers": "4.44.0" },
        "resources": { "cpu": 2.5, "memory_mib": 4096, "gpu_count": 1, "gpu_type": "nvidia-a100-80gb", "gpu_memory_mib": 81920 },
        "lineage": {
            "source_run_id": "run-42",
            "source_experiment_id": "exp-7",
            "datasets": ["s3://acme/ds/train", "s3://acme/ds/eval"],
            "parent": "acme/base/3"
        },
        "model_card": "# Support bot\n\n## Intended use\nAnswering tickets.\n"
    })
}

#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn full_lifecycle_through_http() {
    let mut app = spawn_app().await;
    app.act_as("alice").await;
    // Every mutation that succeeds, in order: (action, target).
    let mut exp: Vec<(&str, &str)> = Vec::new();

    // --- model ---
    let r = app
        .post(
            "/v1/models",
            &json!({ "name": "acme/bot", "description": "support bot", "tags": { "team": "nlp" } }),
        )
        .header("x-request-id", "req-create-model-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-create-model-1");
    assert_eq!(etag(&r), "\"1\"");
    let m: Model = ok(r, StatusCode::CREATED).await;
    exp.push(("model.create", "acme/bot"));
    assert_eq!(
        (m.name.as_str(), m.namespace.as_str(), m.created_by.as_str()),
        ("acme/bot", "acme", "alice")
    );
    assert_eq!((m.latest_version, m.revision, m.production_version), (0, 1, None));
    assert_eq!(m.tags["team"], "nlp");

    let r = app
        .patch(
            "/v1/models/acme/bot",
            &json!({ "description": "support bot v2", "set_tags": { "owner": "ml" } }),
        )
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(etag(&r), "\"2\"");
    let m: Model = ok(r, StatusCode::OK).await;
    exp.push(("model.update", "acme/bot"));
    assert_eq!(m.description, "support bot v2");
    assert_eq!(m.tags.len(), 2);
    let r = app
        .patch("/v1/models/acme/bot", &json!({ "description": "x" }))
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;

    // --- version 1 with every metadata field ---
    let meta = full_metadata("first cut");
    let v1 = app
        .create_version("acme/bot", &json!({ "metadata": meta, "tags": { "run": "42" } }))
        .await;
    exp.push(("version.create", "acme/bot/1"));
    assert_eq!(
        (v1.version, v1.state, v1.stage),
        (1, VersionState::Draft, Stage::Development)
    );
    assert_eq!(
        serde_json::to_value(&v1.metadata).unwrap(),
        meta,
        "every metadata field round-trips"
    );
    let meta: VersionMetadata = serde_json::from_value(full_metadata("first cut, revised")).unwrap();
    let r = app
        .patch("/v1/models/acme/bot/versions/1", &json!({ "metadata": meta }))
        .send()
        .await
        .unwrap();
    let v: Version = ok(r, StatusCode::OK).await;
    exp.push(("version.update", "acme/bot/1"));
    assert_eq!(v.metadata, meta);
    let got: Version = app.get_ok("/v1/models/acme/bot/versions/1").await;
    assert_eq!(got.metadata, meta);

    // --- files ---
    let weights = data(300_000, 1);
    let config = br#"{"hidden": 768}"#.to_vec();
    let vocab = b"a\nb\nc\n".to_vec();
    let w = app.upload("acme/bot", 1, "model.safetensors", &weights).await;
    exp.push(("version.file_put", "acme/bot/1"));
    assert_eq!(
        (w.size, w.sha256.clone(), w.media_type.clone()),
        (300_000, sha_hex(&weights), None)
    );
    let r = app
        .req(Method::PUT, "/v1/models/acme/bot/versions/1/files/config.json")
        .header("x-ballast-sha256", sha_hex(&config))
        .header("content-type", "application/json")
        .body(config.clone())
        .send()
        .await
        .unwrap();
    let c: FileEntry = ok(r, StatusCode::CREATED).await;
    exp.push(("version.file_put", "acme/bot/1"));
    assert_eq!(c.media_type.as_deref(), Some("application/json"));
    app.upload("acme/bot", 1, "tokenizer/vocab.txt", &vocab).await;
    exp.push(("version.file_put", "acme/bot/1"));

    // The blob endpoint says the bytes are stored, with their size.
    let info: Value = app.get_ok(&format!("/v1/blobs/sha256/{}", w.sha256)).await;
    assert_eq!(info, json!({ "sha256": w.sha256, "size": 300_000 }));
    let r = app
        .req(Method::HEAD, &format!("/v1/blobs/sha256/{}", w.sha256))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ballast-blob-size"], "300000");
    let unknown = sha_hex(b"never uploaded");
    let r = app
        .get(&format!("/v1/blobs/sha256/{unknown}"))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .req(Method::HEAD, &format!("/v1/blobs/sha256/{unknown}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A file that is added and removed again while the version is a draft.
    app.upload("acme/bot", 1, "scratch.txt", b"scratch").await;
    exp.push(("version.file_put", "acme/bot/1"));
    let r = app
        .delete("/v1/models/acme/bot/versions/1/files/scratch.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    exp.push(("version.file_delete", "acme/bot/1"));
    let r = app
        .get("/v1/models/acme/bot/versions/1/files/scratch.txt")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    // Attach the stored blob to another path, and to a version of another model (dedup).
    let attach = json!({ "path": "copies/model.safetensors", "sha256": w.sha256, "size": 300_000 });
    let r = app
        .post("/v1/models/acme/bot/versions/1/files", &attach)
        .send()
        .await
        .unwrap();
    let a: FileEntry = ok(r, StatusCode::CREATED).await;
    exp.push(("version.file_put", "acme/bot/1"));
    assert_eq!((a.sha256.as_str(), a.size), (w.sha256.as_str(), 300_000));
    let wrong_size = json!({ "path": "x.bin", "sha256": w.sha256, "size": 7 });
    let r = app
        .post("/v1/models/acme/bot/versions/1/files", &wrong_size)
        .send()
        .await
        .unwrap();
    err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
    app.create_model("acme/bot-distilled").await;
    exp.push(("model.create", "acme/bot-distilled"));
    let d1 = app
        .create_version(
            "acme/bot-distilled",
            &json!({ "metadata": { "lineage": { "parent": "acme/bot/1" } } }),
        )
        .await;
    exp.push(("version.create", "acme/bot-distilled/1"));
    let r = app
        .post(
            &format!("/v1/models/acme/bot-distilled/versions/{}/files", d1.version),
            &json!({ "path": "base/model.safetensors", "sha256": w.sha256 }),
        )
        .send()
        .await
        .unwrap();
    let f: FileEntry = ok(r, StatusCode::CREATED).await;
    exp.push(("version.file_put", "acme/bot-distilled/1"));
    assert_eq!(f.size, 300_000);
    // One copy on disk per distinct content (weights, config, vocab, scratch).
    assert_eq!(
        app.files_under("sha256").len(),
        4,
        "{:?}",
        app.files_under("sha256")
    );
    assert!(app.blob_path(&w.sha256).is_file());

    // --- seal ---
    let mut expected_files = [
        ("model.safetensors", &weights, None),
        ("config.json", &config, Some("application/json")),
        ("tokenizer/vocab.txt", &vocab, None),
        ("copies/model.safetensors", &weights, None),
    ];
    expected_files.sort_by_key(|f| f.0);
    let manifest = Manifest::new(
        expected_files
            .iter()
            .map(|(p, b, mt)| ManifestEntry {
                path: (*p).to_owned(),
                size: b.len() as u64,
                sha256: Sha256Digest::of(b),
                media_type: mt.map(str::to_owned),
            })
            .collect(),
    );
    let digest = manifest.digest().to_hex();
    let before_seal: Version = app.get_ok("/v1/models/acme/bot/versions/1").await;
    let paths: Vec<&str> = before_seal.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, expected_files.iter().map(|f| f.0).collect::<Vec<_>>());
    assert_eq!(before_seal.total_size, manifest.total_size());
    let mf: Value = app.get_ok("/v1/models/acme/bot/versions/1/manifest").await;
    assert_eq!(mf["digest"], Value::Null);
    assert_eq!(mf["files"], serde_json::to_value(&manifest.files).unwrap());

    let r = app
        .post(
            "/v1/models/acme/bot/versions/1/seal",
            &json!({ "expected_digest": sha_hex(b"something else") }),
        )
        .send()
        .await
        .unwrap();
    err(r, StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch").await;
    let r = app
        .post(
            "/v1/models/acme/bot/versions/1/seal",
            &json!({ "expected_digest": digest }),
        )
        .send()
        .await
        .unwrap();
    let sealed: Version = ok(r, StatusCode::OK).await;
    exp.push(("version.seal", "acme/bot/1"));
    assert_eq!(sealed.state, VersionState::Sealed);
    assert_eq!(sealed.digest.as_deref(), Some(digest.as_str()));
    assert!(sealed.sealed_at.is_some());
    let mf: Value = app.get_ok("/v1/models/acme/bot/versions/1/manifest").await;
    assert_eq!(mf["digest"], digest.as_str());

    // --- sealed: content is immutable, tags are not ---
    let r = app
        .req(Method::PUT, "/v1/models/acme/bot/versions/1/files/new.bin")
        .body("new")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .req(
            Method::PUT,
            "/v1/models/acme/bot/versions/1/files/model.safetensors",
        )
        .body("replaced")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .post(
            "/v1/models/acme/bot/versions/1/files",
            &json!({ "path": "again.bin", "sha256": w.sha256 }),
        )
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .delete("/v1/models/acme/bot/versions/1/files/config.json")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .patch(
            "/v1/models/acme/bot/versions/1",
            &json!({ "metadata": { "description": "sneaky" } }),
        )
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .post("/v1/models/acme/bot/versions/1/seal", &json!({}))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .patch(
            "/v1/models/acme/bot/versions/1",
            &json!({ "set_tags": { "reviewed": "yes" }, "remove_tags": ["run"] }),
        )
        .send()
        .await
        .unwrap();
    let v: Version = ok(r, StatusCode::OK).await;
    exp.push(("version.update", "acme/bot/1"));
    assert_eq!(
        v.tags.into_iter().collect::<Vec<_>>(),
        vec![("reviewed".to_owned(), "yes".to_owned())]
    );
    assert_eq!(
        (v.metadata, v.digest.as_deref(), v.files.len()),
        (meta.clone(), Some(digest.as_str()), 4)
    );

    // --- stages ---
    let ch = app.set_stage("acme/bot", 1, "staging").await;
    exp.push(("version.stage", "acme/bot/1"));
    assert_eq!((ch.version.stage, ch.demoted), (Stage::Staging, None));
    let ch = app.set_stage("acme/bot", 1, "production").await;
    exp.push(("version.stage", "acme/bot/1"));
    assert_eq!((ch.version.stage, ch.demoted), (Stage::Production, None));
    let m: Model = app.get_ok("/v1/models/acme/bot").await;
    assert_eq!(m.production_version, Some(1));

    // A second version replaces the first in production, which is archived in the same change.
    let mut meta2 = full_metadata("second");
    meta2["lineage"]["parent_version"] = json!(1);
    let v2 = app
        .create_version("acme/bot", &json!({ "metadata": meta2 }))
        .await;
    exp.push(("version.create", "acme/bot/2"));
    assert_eq!(v2.version, 2);
    assert_eq!(v2.metadata.lineage.parent_version, Some(1));
    app.upload("acme/bot", 2, "model.safetensors", &data(1000, 2))
        .await;
    exp.push(("version.file_put", "acme/bot/2"));
    app.seal("acme/bot", 2).await;
    exp.push(("version.seal", "acme/bot/2"));
    app.set_stage("acme/bot", 2, "staging").await;
    exp.push(("version.stage", "acme/bot/2"));
    let r = app
        .post(
            "/v1/models/acme/bot/versions/2/stage",
            &json!({ "stage": "production", "comment": "better f1" }),
        )
        .send()
        .await
        .unwrap();
    let ch: StageChange = ok(r, StatusCode::OK).await;
    exp.push(("version.demote", "acme/bot/1"));
    exp.push(("version.stage", "acme/bot/2"));
    assert_eq!(
        (ch.version.version, ch.version.stage, ch.demoted),
        (2, Stage::Production, Some(1))
    );
    let v: Version = app.get_ok("/v1/models/acme/bot/versions/1").await;
    assert_eq!(v.stage, Stage::Archived);

    // Rollback restores the first and archives the second.
    let r = app
        .post(
            "/v1/models/acme/bot/rollback",
            &json!({ "comment": "regression" }),
        )
        .send()
        .await
        .unwrap();
    let ch: StageChange = ok(r, StatusCode::OK).await;
    exp.push(("version.demote", "acme/bot/2"));
    exp.push(("version.rollback", "acme/bot/1"));
    assert_eq!(
        (ch.version.version, ch.version.stage, ch.demoted),
        (1, Stage::Production, Some(2))
    );
    let v: Version = app.get_ok("/v1/models/acme/bot/versions/2").await;
    assert_eq!(v.stage, Stage::Archived);
    let v: Version = app.get_ok("/v1/models/acme/bot/stages/production").await;
    assert_eq!(v.version, 1);
    let v: Version = app.get_ok("/v1/models/acme/bot/stages/archived").await;
    assert_eq!(v.version, 2);
    let r = app
        .get("/v1/models/acme/bot/stages/staging")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    let m: Model = app.get_ok("/v1/models/acme/bot").await;
    assert_eq!((m.production_version, m.latest_version), (Some(1), 2));

    // --- aliases ---
    let r = app
        .put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": 1 }))
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    assert_eq!(etag(&r), "\"1\"");
    let a: Alias = ok(r, StatusCode::OK).await;
    exp.push(("alias.set", "acme/bot@champion"));
    assert_eq!((a.alias.as_str(), a.version, a.revision), ("champion", 1, 1));
    let a: Alias = app.get_ok("/v1/models/acme/bot/aliases/champion").await;
    assert_eq!(a.version, 1);
    let v: Version = app.get_ok("/v1/models/acme/bot/aliases/champion/version").await;
    assert_eq!((v.version, v.aliases.clone()), (1, vec!["champion".to_owned()]));
    let r = app
        .put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": 2 }))
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    let a: Alias = ok(r, StatusCode::OK).await;
    exp.push(("alias.set", "acme/bot@champion"));
    assert_eq!((a.version, a.revision), (2, 2));
    let r = app
        .put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": 1 }))
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let r = app
        .put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": 1 }))
        .header("if-none-match", "*")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let v: Version = app.get_ok("/v1/models/acme/bot/aliases/champion/version").await;
    assert_eq!(v.version, 2);
    let r = app
        .put_json("/v1/models/acme/bot/aliases/challenger", &json!({ "version": 1 }))
        .header("if-match", "*")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let r = app
        .put_json("/v1/models/acme/bot/aliases/challenger", &json!({ "version": 1 }))
        .send()
        .await
        .unwrap();
    ok::<Alias>(r, StatusCode::OK).await;
    exp.push(("alias.set", "acme/bot@challenger"));
    let m: Model = app.get_ok("/v1/models/acme/bot").await;
    assert_eq!(
        m.aliases.into_iter().collect::<Vec<_>>(),
        vec![("challenger".into(), 1), ("champion".into(), 2)]
    );
    let v3 = app.create_version("acme/bot", &json!({})).await;
    exp.push(("version.create", "acme/bot/3"));
    let r = app
        .put_json(
            "/v1/models/acme/bot/aliases/challenger",
            &json!({ "version": v3.version }),
        )
        .send()
        .await
        .unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let r = app
        .delete("/v1/models/acme/bot/aliases/champion")
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let r = app
        .delete("/v1/models/acme/bot/aliases/champion")
        .header("if-match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    exp.push(("alias.delete", "acme/bot@champion"));
    let r = app
        .get("/v1/models/acme/bot/aliases/champion")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .delete("/v1/models/acme/bot/aliases/champion")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    // --- delete: refused while in production, allowed once archived ---
    let r = app.delete("/v1/models/acme/bot").send().await.unwrap();
    let e = err(r, StatusCode::CONFLICT, "conflict").await;
    assert!(e["message"].as_str().unwrap().contains("production"), "{e}");
    app.set_stage("acme/bot", 1, "archived").await;
    exp.push(("version.stage", "acme/bot/1"));
    let r = app.delete("/v1/models/acme/bot").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    exp.push(("model.delete", "acme/bot"));
    let r = app.get("/v1/models/acme/bot").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app.get("/v1/models/acme/bot/versions/1").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    // The shared blob still serves the other model.
    let r = app
        .get("/v1/models/acme/bot-distilled/versions/1/files/base/model.safetensors")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), weights);

    // --- audit: every mutation, nothing else, attributed and chained ---
    let trail = app.audit_all().await;
    let got: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(got, exp);
    assert!(trail
        .iter()
        .all(|e| e.actor == "alice" && !e.request_id.is_empty() && e.hash.len() == 64));
    assert!(trail.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(trail[0].request_id, "req-create-model-1");
    assert_eq!(trail[0].before, Value::Null);
    let last = trail.last().unwrap();
    assert_eq!(last.after, Value::Null, "a delete has no after state");

    // Paging with `after` and the filters.
    let mut paged = Vec::new();
    let mut after = trail[0].id - 1;
    loop {
        let page: ballast_api::AuditList = app.get_ok(&format!("/v1/audit?limit=4&after={after}")).await;
        assert!(page.entries.len() <= 4);
        paged.extend(page.entries.into_iter().map(|e| e.id));
        match page.next_after {
            Some(a) => after = a,
            None => break,
        }
    }
    assert_eq!(paged, trail.iter().map(|e| e.id).collect::<Vec<_>>());
    let page: ballast_api::AuditList = app.get_ok("/v1/audit?model=acme/bot-distilled").await;
    let got: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(got, ["model.create", "version.create", "version.file_put"]);
    let page: ballast_api::AuditList = app.get_ok("/v1/audit?action=alias.set").await;
    assert_eq!(page.entries.len(), 3);
    let page: ballast_api::AuditList = app.get_ok("/v1/audit?actor=alice").await;
    assert_eq!(page.entries.len(), exp.len());
    let page: ballast_api::AuditList = app.get_ok("/v1/audit?actor=bob").await;
    assert!(page.entries.is_empty());

    let verify: Value = app.get_ok("/v1/audit/verify").await;
    assert_eq!(
        verify,
        json!({ "ok": true, "entries": app.audit_everything().await.len(), "first_bad_id": null })
    );
}
