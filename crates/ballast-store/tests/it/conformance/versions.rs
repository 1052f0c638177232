//! Version numbering and the draft → sealed lifecycle.

use std::collections::BTreeSet;
use std::sync::Arc;

use ballast_api::{CreateVersion, UpdateVersion, VersionMetadata, VersionState};
use ballast_core::{ErrorCode, Sha256Digest};
use ballast_store::{Precondition, Store};

use super::{code, ctx, draft, file, json, model, name, sealed};

/// Many tasks creating versions of a few models at once get every number from 1 to N per
/// model exactly once; a creation that fails takes no number.
pub async fn numbers_are_gap_free_under_concurrent_creates(store: Arc<dyn Store>) {
    const MODELS: usize = 3;
    const TASKS: usize = 16;
    const PER_TASK: usize = 10;
    let names: Vec<_> = (0..MODELS).map(|i| name(&format!("acme/m{i}"))).collect();
    for n in &names {
        model(store.as_ref(), &n.to_string(), &[]).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        let names = names.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in 0..PER_TASK {
                let n = &names[(t + i) % MODELS];
                let v = store
                    .create_version(&super::ctx("bob"), n, CreateVersion::default())
                    .await
                    .expect("create version");
                assert_eq!(v.model, n.to_string());
                got.push((n.to_string(), v.version));
            }
            got
        });
    }
    let mut seen: Vec<(String, u64)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        seen.extend(r.expect("task"));
    }
    assert_eq!(seen.len(), TASKS * PER_TASK);
    for n in &names {
        let numbers: Vec<u64> = seen
            .iter()
            .filter(|(m, _)| *m == n.to_string())
            .map(|(_, v)| *v)
            .collect();
        let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            numbers.len(),
            "a number was given twice for {n}: {numbers:?}"
        );
        let want: BTreeSet<u64> = (1..=numbers.len() as u64).collect();
        assert_eq!(distinct, want, "numbers of {n} are not 1..=N");
        let m = store.get_model(n).await.expect("get model");
        assert_eq!(m.latest_version, numbers.len() as u64);
    }

    // A refused creation takes no number: the next one is still N+1.
    let n = &names[0];
    let latest = store.get_model(n).await.expect("get model").latest_version;
    let mut bad = VersionMetadata::default();
    bad.lineage.parent_version = Some(latest + 5);
    let r = store
        .create_version(
            &ctx("bob"),
            n,
            CreateVersion {
                metadata: bad,
                ..CreateVersion::default()
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::InvalidArgument);
    let next = draft(store.as_ref(), n, &[], &[]).await;
    assert_eq!(next.version, latest + 1);
}

/// A draft takes, replaces and loses files; sealing computes its digest once.
pub async fn drafts_take_files_and_seal_once(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = draft(store.as_ref(), &m, &[("accuracy", 0.5)], &[]).await;
    assert_eq!(v.version, 1);
    assert_eq!(v.state, VersionState::Draft);
    assert!(v.files.is_empty());
    assert!(v.digest.is_none());
    assert_eq!(v.metadata.metrics.get("accuracy"), Some(&0.5));

    let a = file("a.bin", b"aaa");
    let b = file("dir/b.json", b"{}");
    store
        .put_file(&ctx("alice"), &m, 1, a.clone())
        .await
        .expect("put a");
    store
        .put_file(&ctx("alice"), &m, 1, b.clone())
        .await
        .expect("put b");
    // The same path again replaces the file.
    let a2 = file("a.bin", b"aaaa");
    store
        .put_file(&ctx("alice"), &m, 1, a2.clone())
        .await
        .expect("replace a");
    let got = store.get_version(&m, 1).await.expect("get");
    assert_eq!(got.files, vec![a2.clone(), b.clone()]);
    assert_eq!(got.total_size, 4 + 2);
    assert!(got.revision > v.revision, "file changes bump the revision");

    store
        .delete_file(&ctx("alice"), &m, 1, "dir/b.json")
        .await
        .expect("delete b");
    assert_eq!(
        code(store.delete_file(&ctx("alice"), &m, 1, "dir/b.json").await),
        ErrorCode::NotFound
    );
    let s = store
        .seal_version(&ctx("alice"), &m, 1, None)
        .await
        .expect("seal");
    assert_eq!(s.state, VersionState::Sealed);
    assert_eq!(s.files, vec![a2]);
    let digest = s.digest.clone().expect("sealed versions have a digest");
    assert_eq!(digest.len(), 64);
    assert!(s.sealed_at.is_some());
    // Sealing twice is refused, and the digest stays.
    assert_eq!(
        code(store.seal_version(&ctx("alice"), &m, 1, None).await),
        ErrorCode::Conflict
    );
    assert_eq!(
        store.get_version(&m, 1).await.expect("get").digest,
        Some(digest.clone())
    );

    // The same files give the same manifest digest in another version.
    let v2 = draft(store.as_ref(), &m, &[], &[]).await;
    store
        .put_file(&ctx("alice"), &m, v2.version, file("a.bin", b"aaaa"))
        .await
        .expect("put");
    let s2 = store
        .seal_version(&ctx("alice"), &m, v2.version, None)
        .await
        .expect("seal");
    assert_eq!(s2.digest, Some(digest));

    // A version without files cannot be sealed.
    let empty = draft(store.as_ref(), &m, &[], &[]).await;
    assert_eq!(
        code(store.seal_version(&ctx("alice"), &m, empty.version, None).await),
        ErrorCode::Conflict
    );
}

/// A sealed version's files and metadata never change; its tags may.
pub async fn sealed_versions_are_immutable(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = sealed(store.as_ref(), &m, &[("accuracy", 0.9)], &[]).await;
    let before = store.get_version(&m, v.version).await.expect("get");
    assert_eq!(
        code(
            store
                .put_file(&ctx("alice"), &m, v.version, file("x.bin", b"x"))
                .await
        ),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(store.delete_file(&ctx("alice"), &m, v.version, "model.bin").await),
        ErrorCode::Conflict
    );
    let r = store
        .update_version(
            &ctx("alice"),
            &m,
            v.version,
            UpdateVersion {
                metadata: Some(VersionMetadata::default()),
                ..UpdateVersion::default()
            },
            Precondition::None,
        )
        .await;
    assert_eq!(code(r), ErrorCode::Conflict);
    assert_eq!(
        json(&store.get_version(&m, v.version).await.expect("get")),
        json(&before)
    );

    let tagged = store
        .update_version(
            &ctx("alice"),
            &m,
            v.version,
            UpdateVersion {
                set_tags: [("reviewed".to_owned(), "yes".to_owned())].into(),
                ..UpdateVersion::default()
            },
            Precondition::Revision(before.revision),
        )
        .await
        .expect("tags of a sealed version change");
    assert_eq!(tagged.tags.get("reviewed").map(String::as_str), Some("yes"));
    assert_eq!(tagged.revision, before.revision + 1);
    assert_eq!(tagged.files, before.files);
    assert_eq!(tagged.metadata, before.metadata);
    assert_eq!(tagged.digest, before.digest);
}

/// Sealing with an expected digest that differs from the server's is refused and leaves a draft.
pub async fn seal_checks_the_expected_digest(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v = draft(store.as_ref(), &m, &[], &[]).await;
    store
        .put_file(&ctx("alice"), &m, v.version, file("w.bin", b"weights"))
        .await
        .expect("put");
    let wrong = Sha256Digest::of(b"not the manifest");
    let r = store
        .seal_version(&ctx("alice"), &m, v.version, Some(wrong))
        .await;
    assert_eq!(code(r), ErrorCode::DigestMismatch);
    assert_eq!(
        store.get_version(&m, v.version).await.expect("get").state,
        VersionState::Draft
    );

    // Sealing without expectation reveals the digest; sealing another draft with it succeeds.
    let s = store
        .seal_version(&ctx("alice"), &m, v.version, None)
        .await
        .expect("seal");
    let digest: Sha256Digest = s.digest.expect("digest").parse().expect("hex digest");
    let v2 = draft(store.as_ref(), &m, &[], &[]).await;
    store
        .put_file(&ctx("alice"), &m, v2.version, file("w.bin", b"weights"))
        .await
        .expect("put");
    store
        .seal_version(&ctx("alice"), &m, v2.version, Some(digest))
        .await
        .expect("seal with the right digest");
}

/// Blobs are known (with their size) once a version references them.
pub async fn blobs_are_known_once_referenced(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let d = Sha256Digest::of(b"shared bytes");
    assert_eq!(store.blob_size(d).await.expect("blob size"), None);
    let v = draft(store.as_ref(), &m, &[], &[]).await;
    store
        .put_file(&ctx("alice"), &m, v.version, file("a", b"shared bytes"))
        .await
        .expect("put");
    let v2 = draft(store.as_ref(), &m, &[], &[]).await;
    store
        .put_file(&ctx("alice"), &m, v2.version, file("b", b"shared bytes"))
        .await
        .expect("put");
    assert_eq!(store.blob_size(d).await.expect("blob size"), Some(12));
    let refs = store.referenced_blobs().await.expect("referenced");
    assert_eq!(refs, vec![(d, 12)], "a blob shared by two files is listed once");
    let stats = store.stats().await.expect("stats");
    assert_eq!(
        (stats.models, stats.versions, stats.blobs, stats.blob_bytes),
        (1, 2, 1, 12)
    );
}

/// A deleted version's number is never given again; versions in staging or production cannot
/// be deleted.
pub async fn deleted_numbers_are_never_reused(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    for _ in 0..3 {
        sealed(store.as_ref(), &m, &[], &[]).await;
    }
    store
        .set_stage(
            &ctx("a"),
            &m,
            2,
            ballast_core::Stage::Staging,
            None,
            Precondition::None,
        )
        .await
        .expect("stage");
    assert_eq!(
        code(store.mlflow_delete_version(&ctx("a"), &m, 2).await),
        ErrorCode::Conflict
    );
    store
        .set_alias(&ctx("a"), &m, "latest", 3, Precondition::None)
        .await
        .expect("alias");
    store
        .mlflow_delete_version(&ctx("a"), &m, 3)
        .await
        .expect("delete");
    assert_eq!(code(store.get_version(&m, 3).await), ErrorCode::NotFound);
    assert_eq!(
        code(store.get_alias(&m, "latest").await),
        ErrorCode::NotFound,
        "its aliases go with it"
    );
    assert_eq!(
        code(store.mlflow_delete_version(&ctx("a"), &m, 3).await),
        ErrorCode::NotFound
    );
    let next = draft(store.as_ref(), &m, &[], &[]).await;
    assert_eq!(next.version, 4);
    assert_eq!(store.get_model(&m).await.expect("model").latest_version, 4);
    super::assert_audit_matches_events(store.as_ref()).await;
}
