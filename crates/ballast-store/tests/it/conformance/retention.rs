//! Retention: policies on namespaces and models (validated, with revisions, audited), the plan
//! that says which versions garbage collection may remove and why the others stay, its
//! application (each removal audited with its event, decided again at write time), and the
//! reference checks blob collection relies on.

use std::sync::Arc;

use ballast_api::deployments::CreateDeployment;
use ballast_api::governance::{Policy, RiskLevel};
use ballast_api::retention::{RetentionPolicy, MAX_KEEP_DAYS, MAX_KEEP_LAST_DEV};
use ballast_api::{CreateVersion, Lineage, VersionMetadata};
use ballast_core::{ErrorCode, ModelName, Sha256Digest, Stage};
use ballast_store::governance::{PolicyTarget, StageRequest};
use ballast_store::{unix_ms, GcScope, ModelPlan, Precondition, RetentionTarget, Store};

use super::{all_audit, assert_audit_matches_events, code, ctx, draft, model, name, sealed, trail};

const DAY_MS: i64 = 86_400_000;

fn keep(keep_last_dev: u32, keep_days: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last_dev,
        keep_days,
        enabled: true,
    }
}

fn ns(s: &str) -> RetentionTarget {
    RetentionTarget::Namespace(s.to_owned())
}

fn of_model(s: &str) -> RetentionTarget {
    RetentionTarget::Model(name(s))
}

/// The digest of the one file `sealed` gives version `n` of `m`.
fn digest_of(m: &ModelName, n: u64) -> Sha256Digest {
    Sha256Digest::of(format!("weights of {m}/{n}").as_bytes())
}

async fn move_to(store: &dyn Store, m: &ModelName, n: u64, to: Stage) {
    store
        .set_stage(&ctx("alice"), m, n, to, None, Precondition::None)
        .await
        .unwrap_or_else(|e| panic!("move {m}/{n} to {to}: {e}"));
}

/// A sealed version with the given lineage (one file, like `sealed`).
async fn sealed_with_lineage(store: &dyn Store, m: &ModelName, lineage: Lineage) -> u64 {
    let v = store
        .create_version(
            &ctx("alice"),
            m,
            CreateVersion {
                metadata: VersionMetadata {
                    lineage,
                    ..VersionMetadata::default()
                },
                tags: std::collections::BTreeMap::new(),
            },
        )
        .await
        .expect("create version")
        .version;
    let bytes = format!("weights of {m}/{v}");
    store
        .put_file(&ctx("alice"), m, v, super::file("model.bin", bytes.as_bytes()))
        .await
        .expect("put file");
    store.seal_version(&ctx("alice"), m, v, None).await.expect("seal");
    v
}

fn removed(plan: &ModelPlan) -> Vec<u64> {
    plan.remove.iter().map(|v| v.version).collect()
}

fn reasons(plan: &ModelPlan, n: u64) -> Vec<String> {
    plan.kept
        .iter()
        .find(|k| k.version == n)
        .map(|k| k.reasons.clone())
        .unwrap_or_default()
}

/// Retention policies: validated (nothing changes on a refusal), revised on every change, one
/// per namespace or model, the model's own replacing its namespace's, audited with events.
pub async fn retention_policies_are_validated_and_revised(store: Arc<dyn Store>) {
    let s = store.as_ref();
    model(s, "acme/bot", &[]).await;
    model(s, "acme/other", &[]).await;
    let before = trail(s).await;
    let e = s
        .set_retention(&ctx("alice"), &ns("acme"), keep(MAX_KEEP_LAST_DEV + 1, 1))
        .await
        .expect_err("too many");
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidArgument, Some("keep_last_dev"))
    );
    let e = s
        .set_retention(&ctx("alice"), &ns("acme"), keep(1, MAX_KEEP_DAYS + 1))
        .await
        .expect_err("too long");
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::InvalidArgument, Some("keep_days"))
    );
    assert_eq!(
        code(s.set_retention(&ctx("alice"), &ns("Bad NS"), keep(1, 1)).await),
        ErrorCode::InvalidName
    );
    assert_eq!(
        code(
            s.set_retention(&ctx("alice"), &of_model("acme/ghost"), keep(1, 1))
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(code(s.get_retention(&ns("acme")).await), ErrorCode::NotFound);
    assert_eq!(
        code(s.delete_retention(&ctx("alice"), &ns("acme")).await),
        ErrorCode::NotFound
    );
    assert!(s
        .effective_retention(&name("acme/bot"))
        .await
        .expect("effective")
        .is_none());
    assert_eq!(trail(s).await, before, "refused changes leave no trace");

    let r = s
        .set_retention(&ctx("alice"), &ns("acme"), keep(3, 7))
        .await
        .expect("set");
    assert_eq!(
        (
            r.namespace.as_str(),
            r.model.as_deref(),
            r.revision,
            r.updated_by.as_str()
        ),
        ("acme", None, 1, "alice")
    );
    assert_eq!(r.policy, keep(3, 7));
    let r = s
        .set_retention(&ctx("bob"), &ns("acme"), keep(3, 8))
        .await
        .expect("replace");
    assert_eq!(
        (r.revision, r.policy.keep_days, r.updated_by.as_str()),
        (2, 8, "bob")
    );
    assert_eq!(s.get_retention(&ns("acme")).await.expect("get"), r);

    let own = RetentionPolicy {
        enabled: false,
        ..keep(1, 1)
    };
    let m = s
        .set_retention(&ctx("alice"), &of_model("acme/bot"), own)
        .await
        .expect("model policy");
    assert_eq!((m.model.as_deref(), m.revision), (Some("acme/bot"), 1));
    assert_eq!(m.namespace, "acme");
    assert_eq!(s.get_retention(&of_model("acme/bot")).await.expect("get"), m);
    let (rule, is_own) = s
        .effective_retention(&name("acme/bot"))
        .await
        .expect("effective")
        .expect("a policy applies");
    assert!(is_own);
    assert_eq!(rule.policy, own);
    let (rule, is_own) = s
        .effective_retention(&name("acme/other"))
        .await
        .expect("effective")
        .expect("a policy applies");
    assert!(!is_own);
    assert_eq!(rule.policy, keep(3, 8));
    assert_eq!(
        code(s.effective_retention(&name("acme/ghost")).await),
        ErrorCode::NotFound
    );

    s.delete_retention(&ctx("alice"), &of_model("acme/bot"))
        .await
        .expect("delete");
    assert_eq!(
        code(s.get_retention(&of_model("acme/bot")).await),
        ErrorCode::NotFound
    );
    let (rule, is_own) = s
        .effective_retention(&name("acme/bot"))
        .await
        .expect("effective")
        .expect("the namespace's policy applies");
    assert!(!is_own);
    assert_eq!(rule.revision, 2);
    assert_eq!(
        code(s.delete_retention(&ctx("alice"), &of_model("acme/bot")).await),
        ErrorCode::NotFound
    );

    let actions: Vec<(String, String)> = all_audit(s)
        .await
        .into_iter()
        .filter(|a| a.action.starts_with("retention."))
        .map(|a| (a.action, a.target))
        .collect();
    let expected = [
        ("retention.set", "acme"),
        ("retention.set", "acme"),
        ("retention.set", "acme/bot"),
        ("retention.delete", "acme/bot"),
    ];
    assert_eq!(
        actions,
        expected
            .iter()
            .map(|(a, t)| ((*a).to_owned(), (*t).to_owned()))
            .collect::<Vec<_>>()
    );
    assert_audit_matches_events(s).await;
}

/// Which models a collection looks at: those a policy applies to, by name (bytewise), within
/// the scope asked for.
pub async fn retention_applies_to_the_models_in_scope(store: Arc<dyn Store>) {
    let s = store.as_ref();
    for m in [
        "acme/ab", "acme/a_b", "acme/a.b", "acme/a-b", "other/x", "other/y", "third/z",
    ] {
        model(s, m, &[]).await;
    }
    assert!(s.retention_models(GcScope::All).await.expect("models").is_empty());
    s.set_retention(&ctx("alice"), &ns("acme"), keep(1, 1))
        .await
        .expect("set");
    s.set_retention(&ctx("alice"), &of_model("other/y"), keep(1, 1))
        .await
        .expect("set");
    let names = |scope: GcScope| {
        let store = Arc::clone(&store);
        async move {
            store
                .retention_models(scope)
                .await
                .expect("models")
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        names(GcScope::All).await,
        vec!["acme/a-b", "acme/a.b", "acme/a_b", "acme/ab", "other/y"]
    );
    assert_eq!(names(GcScope::Namespace("other".into())).await, vec!["other/y"]);
    assert_eq!(names(GcScope::Model(name("acme/ab"))).await, vec!["acme/ab"]);
    assert!(names(GcScope::Model(name("other/x"))).await.is_empty());
    assert!(names(GcScope::Namespace("third".into())).await.is_empty());
    assert_eq!(
        code(s.retention_models(GcScope::Model(name("acme/ghost"))).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(s.retention_models(GcScope::Namespace("Bad NS".into())).await),
        ErrorCode::InvalidName
    );
}

/// The plan keeps every protected version (with its reasons) and lets the others go; applying
/// it removes exactly those, each with its audit entry and event, frees their blobs, never
/// reuses their numbers, and concurrent applications remove each version once.
pub async fn the_plan_keeps_protected_versions_and_apply_removes_the_rest(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let m = name("acme/bot");
    model(s, "acme/bot", &[]).await;
    // 1: was in production (demoted by 2). 2: in production.
    for _ in 0..2 {
        let v = sealed(s, &m, &[], &[]).await.version;
        move_to(s, &m, v, Stage::Staging).await;
        move_to(s, &m, v, Stage::Production).await;
    }
    // 3: alias. 4: a draft.
    let v3 = sealed(s, &m, &[], &[]).await.version;
    s.set_alias(&ctx("alice"), &m, "champion", v3, Precondition::None)
        .await
        .expect("alias");
    let v4 = draft(s, &m, &[], &[]).await.version;
    // 5: lineage parent of 13. 6: deployed. 7: in staging. 8: parent of another model's version.
    let v5 = sealed(s, &m, &[], &[]).await.version;
    let v6 = sealed(s, &m, &[], &[]).await.version;
    s.add_deployment(
        &ctx("alice"),
        CreateDeployment {
            model: m.to_string(),
            version: v6,
            region: "eu-west".into(),
            url: "http://127.0.0.1:8000".into(),
            weight: 1,
            upstream_model: None,
        },
    )
    .await
    .expect("deploy");
    let v7 = sealed(s, &m, &[], &[]).await.version;
    move_to(s, &m, v7, Stage::Staging).await;
    let v8 = sealed(s, &m, &[], &[]).await.version;
    model(s, "other/child", &[]).await;
    let child = name("other/child");
    sealed_with_lineage(
        s,
        &child,
        Lineage {
            parent: Some(format!("{m}/{v8}")),
            ..Lineage::default()
        },
    )
    .await;
    // 9: nothing protects it. 10: a pending transition request.
    let v9 = sealed(s, &m, &[], &[]).await.version;
    let v10 = sealed(s, &m, &[], &[]).await.version;
    // 11: archived without ever being in production. 12: nothing. 13: the newest development
    // version, child of 5.
    let v11 = sealed(s, &m, &[], &[]).await.version;
    move_to(s, &m, v11, Stage::Staging).await;
    move_to(s, &m, v11, Stage::Archived).await;
    let v12 = sealed(s, &m, &[], &[]).await.version;
    let v13 = sealed_with_lineage(
        s,
        &m,
        Lineage {
            parent_version: Some(v5),
            ..Lineage::default()
        },
    )
    .await;
    assert_eq!(
        [v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13],
        [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    );
    s.set_policy(
        &ctx("admin"),
        &PolicyTarget::Model(m.clone()),
        Policy {
            risk: Some(RiskLevel::High),
            ..Policy::default()
        },
        Precondition::None,
    )
    .await
    .expect("governance policy");
    s.request_transition(
        &ctx("alice"),
        StageRequest {
            model: m.clone(),
            number: v10,
            to: Stage::Staging,
            comment: None,
            pre: Precondition::None,
        },
    )
    .await
    .expect("request");

    // Without a policy nothing goes, and the plan says why.
    let later = unix_ms() + 60 * DAY_MS;
    let none = s.plan_retention(&m, later, true).await.expect("plan");
    assert!(none.remove.is_empty());
    assert_eq!(none.kept.len(), 13);
    assert_eq!(
        reasons(&none, 9),
        vec!["no retention policy applies to this model".to_owned()]
    );
    assert!(s
        .apply_retention(&ctx("gc"), &m, later)
        .await
        .expect("apply")
        .remove
        .is_empty());

    s.set_retention(&ctx("alice"), &ns("acme"), keep(1, 30))
        .await
        .expect("retention policy");
    // Everything is young now.
    assert!(s
        .plan_retention(&m, unix_ms(), false)
        .await
        .expect("plan")
        .remove
        .is_empty());

    let plan = s.plan_retention(&m, later, true).await.expect("plan");
    assert_eq!(plan.model, "acme/bot");
    assert_eq!(removed(&plan), vec![4, 9, 11, 12]);
    let expect = [
        (1, "was in production"),
        (2, "in production"),
        (3, "alias champion"),
        (5, "lineage parent of kept version 13"),
        (6, "deployed in eu-west"),
        (7, "in staging"),
        (8, "lineage parent of other/child/1"),
        (10, "pending transition request to staging"),
        (13, "among the newest 1 development version"),
    ];
    for (n, why) in expect {
        assert!(
            reasons(&plan, n).iter().any(|r| r == why),
            "version {n}: expected {why:?}, got {:?}",
            reasons(&plan, n)
        );
    }
    assert_eq!(plan.kept.len(), expect.len());
    let draft_plan = &plan.remove[0];
    assert_eq!((draft_plan.state.as_str(), draft_plan.size), ("draft", 0));
    assert!(
        draft_plan.reason.starts_with("draft (never sealed)"),
        "{}",
        draft_plan.reason
    );
    assert!(
        plan.remove[2].reason.starts_with("archived"),
        "{}",
        plan.remove[2].reason
    );
    let mut blobs: Vec<Sha256Digest> = plan.blobs.iter().map(|(d, _)| *d).collect();
    blobs.sort();
    let mut expected_blobs = vec![digest_of(&m, 9), digest_of(&m, 11), digest_of(&m, 12)];
    expected_blobs.sort();
    assert_eq!(blobs, expected_blobs);
    let sizes: u64 = plan.remove.iter().map(|v| v.size).sum();
    assert_eq!(sizes, plan.blobs.iter().map(|(_, n)| n).sum::<u64>());
    // A plan without `explain` lists no kept versions, and the same removals.
    let quiet = s.plan_retention(&m, later, false).await.expect("plan");
    assert!(quiet.kept.is_empty());
    assert_eq!(removed(&quiet), removed(&plan));

    // Blob references: a dry run may leave aside the versions it plans to remove.
    let (gone, kept) = (digest_of(&m, 9), digest_of(&m, 3));
    assert!(s
        .unreferenced_blobs(vec![gone, kept], Vec::new())
        .await
        .expect("check")
        .is_empty());
    assert_eq!(
        s.unreferenced_blobs(vec![gone, kept], vec![(m.clone(), 9), (name("acme/ghost"), 1)])
            .await
            .expect("check"),
        vec![gone]
    );

    // A version that gained an alias since the dry run stays.
    s.set_alias(&ctx("alice"), &m, "late", v12, Precondition::None)
        .await
        .expect("alias");
    // Two collections at once remove each version once.
    let apply = || {
        let (store, m) = (Arc::clone(&store), m.clone());
        tokio::spawn(async move { store.apply_retention(&ctx("gc"), &m, later).await })
    };
    let (a, b) = (apply(), apply());
    let mut done: Vec<u64> = removed(&a.await.expect("task").expect("apply"));
    done.extend(removed(&b.await.expect("task").expect("apply")));
    done.sort_unstable();
    assert_eq!(done, vec![4, 9, 11]);
    for n in [4, 9, 11] {
        assert_eq!(code(s.get_version(&m, n).await), ErrorCode::NotFound);
    }
    s.get_version(&m, 12).await.expect("12 stays");
    assert!(s
        .plan_retention(&m, later, false)
        .await
        .expect("plan")
        .remove
        .is_empty());
    let deletions: Vec<String> = all_audit(s)
        .await
        .into_iter()
        .filter(|a| a.action == "version.delete")
        .map(|a| a.target)
        .collect();
    assert_eq!(deletions, vec!["acme/bot/4", "acme/bot/9", "acme/bot/11"]);
    assert_audit_matches_events(s).await;
    assert_eq!(
        s.unreferenced_blobs(vec![gone, kept], Vec::new())
            .await
            .expect("check"),
        vec![gone]
    );
    // Numbers of removed versions are never handed out again.
    assert_eq!(draft(s, &m, &[], &[]).await.version, 14);

    // A disabled model policy exempts the model.
    s.set_retention(
        &ctx("alice"),
        &of_model("other/child"),
        RetentionPolicy {
            enabled: false,
            ..keep(0, 0)
        },
    )
    .await
    .expect("exempt");
    let exempt = s.plan_retention(&child, later, true).await.expect("plan");
    assert!(exempt.remove.is_empty());
    assert_eq!(
        reasons(&exempt, 1),
        vec!["retention is disabled for this model".to_owned()]
    );

    // A blob sweep is audited, without an event.
    let before = trail(s).await;
    s.record_blob_sweep(&ctx("gc"), 3, 300).await.expect("sweep");
    let after = trail(s).await;
    assert_eq!(
        (after.audit, after.last_event),
        (before.audit + 1, before.last_event)
    );
    let last = all_audit(s).await.pop().expect("an entry");
    assert_eq!((last.action.as_str(), last.target.as_str()), ("blob.gc", "blobs"));
}
