//! The usual mistakes get stable codes, and a refused mutation leaves no trace.

use std::sync::Arc;

use ballast_api::{CreateModel, CreateVersion, UpdateModel, UpdateVersion, VersionMetadata};
use ballast_core::{ErrorCode, Sha256Digest, Stage};
use ballast_store::{Precondition, Store};

use super::{code, ctx, draft, file, json, model, name, sealed, trail};

/// `not_found`, `already_exists`, `conflict` and validation codes where a user expects them.
pub async fn usual_mistakes_have_stable_codes(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    let ghost = name("acme/ghost");
    assert_eq!(code(store.get_model(&ghost).await), ErrorCode::NotFound);
    assert_eq!(code(store.get_version(&ghost, 1).await), ErrorCode::NotFound);
    assert_eq!(code(store.get_alias(&ghost, "a").await), ErrorCode::NotFound);
    assert_eq!(
        code(
            store
                .list_versions(&ghost, ballast_store::VersionFilter::default())
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            store
                .create_version(&ctx("a"), &ghost, CreateVersion::default())
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(store.delete_model(&ctx("a"), &ghost, Precondition::None).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(store.rollback(&ctx("a"), &ghost, None).await),
        ErrorCode::NotFound
    );

    model(store.as_ref(), "acme/bot", &[]).await;
    let dup = store
        .create_model(
            &ctx("a"),
            CreateModel {
                name: "acme/bot".into(),
                ..CreateModel::default()
            },
        )
        .await;
    assert_eq!(code(dup), ErrorCode::AlreadyExists);
    let bad_name = store
        .create_model(
            &ctx("a"),
            CreateModel {
                name: "Not A Name".into(),
                ..CreateModel::default()
            },
        )
        .await;
    assert_eq!(code(bad_name), ErrorCode::InvalidName);
    assert_eq!(code(store.get_version(&m, 1).await), ErrorCode::NotFound);
    assert_eq!(code(store.get_version(&m, 0).await), ErrorCode::NotFound);
    assert_eq!(
        code(
            store
                .set_stage(&ctx("a"), &m, 7, Stage::Staging, None, Precondition::None)
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(store.put_file(&ctx("a"), &m, 7, file("a", b"a")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(store.version_in_stage(&m, Stage::Staging).await),
        ErrorCode::NotFound
    );

    let d = draft(store.as_ref(), &m, &[], &[]).await;
    let bad_path = store
        .put_file(&ctx("a"), &m, d.version, file("../escape", b"x"))
        .await;
    assert_eq!(code(bad_path), ErrorCode::InvalidPath);
    let mut bad_digest = file("ok.bin", b"x");
    bad_digest.sha256 = "not-hex".into();
    assert_eq!(
        code(store.put_file(&ctx("a"), &m, d.version, bad_digest).await),
        ErrorCode::InvalidArgument
    );
    let bad_alias = store
        .set_alias(&ctx("a"), &m, "Bad Alias!", 1, Precondition::None)
        .await;
    assert!(
        matches!(
            code(bad_alias),
            ErrorCode::InvalidArgument | ErrorCode::InvalidName
        ),
        "an invalid alias is a validation error"
    );
    let mut nan = VersionMetadata::default();
    nan.metrics.insert("loss".into(), f64::NAN);
    let r = store
        .create_version(
            &ctx("a"),
            &m,
            CreateVersion {
                metadata: nan,
                ..CreateVersion::default()
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::InvalidArgument);
    let r = store
        .update_model(
            &ctx("a"),
            &m,
            UpdateModel {
                set_tags: [("bad key!".to_owned(), "v".to_owned())].into(),
                ..UpdateModel::default()
            },
            Precondition::None,
        )
        .await;
    assert!(
        matches!(code(r), ErrorCode::InvalidArgument | ErrorCode::InvalidName),
        "an invalid tag key is a validation error"
    );
}

/// Every refused mutation leaves the audit trail, the change feed and the resource unchanged.
pub async fn failed_mutations_change_nothing(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[("team", "a")]).await;
    let v = sealed(store.as_ref(), &m, &[], &[]).await;
    let d = draft(store.as_ref(), &m, &[], &[]).await;
    store
        .put_file(&ctx("a"), &m, d.version, file("w", b"w"))
        .await
        .expect("put");
    let alias = store
        .set_alias(&ctx("a"), &m, "live", v.version, Precondition::None)
        .await
        .expect("alias");
    store
        .set_stage(&ctx("a"), &m, v.version, Stage::Staging, None, Precondition::None)
        .await
        .expect("stage");

    let before = trail(store.as_ref()).await;
    let model_before = store.get_model(&m).await.expect("model");
    let v_before = store.get_version(&m, v.version).await.expect("v");
    let d_before = store.get_version(&m, d.version).await.expect("d");

    let c = ctx("mallory");
    let mut failures: Vec<(&str, ErrorCode)> = Vec::new();
    let mut record = |what: &'static str, r: ballast_store::StoreResult<()>| match r {
        Ok(()) => panic!("{what} should have been refused"),
        Err(e) => failures.push((what, e.code)),
    };
    let dup = CreateModel {
        name: "acme/bot".into(),
        ..CreateModel::default()
    };
    record("duplicate model", store.create_model(&c, dup).await.map(drop));
    record(
        "stale model update",
        store
            .update_model(
                &c,
                &m,
                UpdateModel {
                    description: Some("x".into()),
                    ..UpdateModel::default()
                },
                Precondition::Revision(model_before.revision + 7),
            )
            .await
            .map(drop),
    );
    record(
        "delete with staging version",
        store.delete_model(&c, &m, Precondition::None).await,
    );
    record(
        "invalid parent",
        store
            .create_version(
                &c,
                &m,
                CreateVersion {
                    metadata: VersionMetadata {
                        lineage: ballast_api::Lineage {
                            parent_version: Some(99),
                            ..ballast_api::Lineage::default()
                        },
                        ..VersionMetadata::default()
                    },
                    ..CreateVersion::default()
                },
            )
            .await
            .map(drop),
    );
    record(
        "file on sealed",
        store.put_file(&c, &m, v.version, file("x", b"x")).await.map(drop),
    );
    record(
        "metadata of sealed",
        store
            .update_version(
                &c,
                &m,
                v.version,
                UpdateVersion {
                    metadata: Some(VersionMetadata::default()),
                    set_tags: [("t".to_owned(), "1".to_owned())].into(),
                    ..UpdateVersion::default()
                },
                Precondition::None,
            )
            .await
            .map(drop),
    );
    record(
        "wrong seal digest",
        store
            .seal_version(&c, &m, d.version, Some(Sha256Digest::of(b"other")))
            .await
            .map(drop),
    );
    record(
        "stale alias move",
        store
            .set_alias(
                &c,
                &m,
                "live",
                v.version,
                Precondition::Revision(alias.revision + 1),
            )
            .await
            .map(drop),
    );
    record(
        "alias to draft",
        store
            .set_alias(&c, &m, "other", d.version, Precondition::None)
            .await
            .map(drop),
    );
    record(
        "draft to staging",
        store
            .set_stage(&c, &m, d.version, Stage::Staging, None, Precondition::None)
            .await
            .map(drop),
    );
    record(
        "stale stage move",
        store
            .set_stage(
                &c,
                &m,
                v.version,
                Stage::Production,
                None,
                Precondition::Revision(v_before.revision + 1),
            )
            .await
            .map(drop),
    );
    record(
        "rollback without history",
        store.rollback(&c, &m, None).await.map(drop),
    );
    record("missing file", store.delete_file(&c, &m, d.version, "nope").await);
    record(
        "missing alias",
        store.delete_alias(&c, &m, "nope", Precondition::None).await,
    );
    assert_eq!(failures.len(), 14, "{failures:?}");

    assert_eq!(
        trail(store.as_ref()).await,
        before,
        "refusals left a trace: {failures:?}"
    );
    assert_eq!(
        json(&store.get_model(&m).await.expect("model")),
        json(&model_before)
    );
    assert_eq!(
        json(&store.get_version(&m, v.version).await.expect("v")),
        json(&v_before)
    );
    assert_eq!(
        json(&store.get_version(&m, d.version).await.expect("d")),
        json(&d_before)
    );
    assert_eq!(
        json(&store.get_alias(&m, "live").await.expect("alias")),
        json(&alias)
    );
    assert_eq!(code(store.get_alias(&m, "other").await), ErrorCode::NotFound);
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(before.audit));
}

/// Refused and accepted changes racing each other: every accepted one is applied and audited,
/// no refused one leaves anything behind.
pub async fn failures_among_concurrent_changes_leave_no_trace(store: Arc<dyn Store>) {
    const TASKS: usize = 24;
    model(store.as_ref(), "acme/taken", &[]).await;
    let before = trail(store.as_ref()).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            let full = if t % 2 == 0 {
                format!("acme/new-{t}")
            } else {
                "acme/taken".to_owned()
            };
            let r = store
                .create_model(
                    &ctx("racer"),
                    CreateModel {
                        name: full,
                        ..CreateModel::default()
                    },
                )
                .await;
            (t, r.map(|m| m.name).map_err(|e| e.code))
        });
    }
    let mut ok = 0u64;
    while let Some(r) = tasks.join_next().await {
        let (t, r) = r.expect("task");
        if t % 2 == 0 {
            assert_eq!(r, Ok(format!("acme/new-{t}")));
            ok += 1;
        } else {
            assert_eq!(r, Err(ErrorCode::AlreadyExists));
        }
    }
    let after = trail(store.as_ref()).await;
    assert_eq!(after.audit, before.audit + ok);
    assert_eq!(store.stats().await.expect("stats").models, 1 + ok);
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Text no database can hold (NUL) is refused wherever a user can send it, changing nothing;
/// text that merely looks like an escaped NUL is kept as sent and stays searchable.
pub async fn nul_characters_are_refused(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    let bad_model = CreateModel {
        name: "acme/bot".into(),
        description: "a\0b".into(),
        ..CreateModel::default()
    };
    assert_eq!(
        code(store.create_model(&ctx("a"), bad_model).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(store.get_model(&m).await), ErrorCode::NotFound);
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = sealed(store.as_ref(), &m, &[("acc", 0.5)], &[]).await;
    let before = trail(store.as_ref()).await;
    let model_before = store.get_model(&m).await.expect("model");

    let update = UpdateModel {
        description: Some("\0".into()),
        ..UpdateModel::default()
    };
    assert_eq!(
        code(
            store
                .update_model(&ctx("a"), &m, update, Precondition::None)
                .await
        ),
        ErrorCode::InvalidArgument
    );
    let nul_metadata = [
        VersionMetadata {
            description: "x\0".into(),
            ..VersionMetadata::default()
        },
        VersionMetadata {
            hyperparameters: [("lr".to_owned(), serde_json::json!(["ok", "x\0y"]))].into(),
            ..VersionMetadata::default()
        },
        VersionMetadata {
            hyperparameters: [("l\0r".to_owned(), serde_json::json!(1))].into(),
            ..VersionMetadata::default()
        },
        VersionMetadata {
            model_card: Some("# card\0".into()),
            ..VersionMetadata::default()
        },
    ];
    for metadata in nul_metadata {
        let req = CreateVersion {
            metadata: metadata.clone(),
            ..CreateVersion::default()
        };
        assert_eq!(
            code(store.create_version(&ctx("a"), &m, req).await),
            ErrorCode::InvalidArgument,
            "{metadata:?}"
        );
    }
    assert_eq!(
        code(
            store
                .set_stage(
                    &ctx("a"),
                    &m,
                    v.version,
                    Stage::Staging,
                    Some("ship\0it".into()),
                    Precondition::None
                )
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        trail(store.as_ref()).await,
        before,
        "refused changes leave no trace"
    );
    assert_eq!(
        json(&store.get_model(&m).await.expect("model")),
        json(&model_before)
    );

    // A backslash followed by "u0000" is ordinary text.
    let req = CreateVersion {
        metadata: VersionMetadata {
            description: "escaped: \\u0000".into(),
            metrics: [("acc".to_owned(), 0.9)].into(),
            ..VersionMetadata::default()
        },
        ..CreateVersion::default()
    };
    let created = store.create_version(&ctx("a"), &m, req).await.expect("create");
    assert_eq!(created.version, v.version + 1, "refused creates used no number");
    let got = store.get_version(&m, created.version).await.expect("get");
    assert_eq!(got.metadata.description, "escaped: \\u0000");
    let by_metric = store
        .list_versions(
            &m,
            ballast_store::VersionFilter {
                order: ballast_store::VersionOrder::Metric("acc".into()),
                descending: true,
                limit: 10,
                ..ballast_store::VersionFilter::default()
            },
        )
        .await
        .expect("list by metric");
    let numbers: Vec<u64> = by_metric.versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, [created.version, v.version]);
    let audit = store.stats().await.expect("stats").audit_entries;
    assert_eq!(store.verify_audit().await.expect("verify"), Ok(audit));
}
