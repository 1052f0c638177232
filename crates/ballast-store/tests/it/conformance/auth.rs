//! Tokens (kept as hashes) and role bindings, and the rule that the registry never loses its
//! last administrator.

use std::sync::Arc;
use std::time::Duration;

use ballast_api::auth::{CreateToken, GrantRole, GrantRoleIn, Role};
use ballast_core::ErrorCode;
use ballast_store::Store;

use super::{code, ctx, trail};

fn hash(seed: &str) -> String {
    ballast_core::Sha256Digest::of(seed.as_bytes()).to_hex()
}

fn token(principal: &str, roles: &[(&str, Role)]) -> CreateToken {
    CreateToken {
        principal: principal.to_owned(),
        description: format!("token of {principal}"),
        expires_at: None,
        roles: roles
            .iter()
            .map(|(ns, role)| GrantRoleIn {
                namespace: (*ns).to_owned(),
                role: *role,
            })
            .collect(),
    }
}

/// A token is found by its secret's hash (never by anything else), listed without secrets,
/// and revoked once; revoking again keeps the first revocation.
pub async fn tokens_are_found_by_hash_and_revoked(store: Arc<dyn Store>) {
    assert!(store.list_tokens().await.expect("list").is_empty());
    let t = store
        .create_token(
            &ctx("root"),
            token("ci", &[("acme", Role::Writer)]),
            "bal_ci".into(),
            hash("s1"),
        )
        .await
        .expect("create");
    assert_eq!(
        (t.principal.as_str(), t.prefix.as_str(), t.created_by.as_str()),
        ("ci", "bal_ci", "root")
    );
    assert!(t.revoked_at.is_none() && t.expires_at.is_none());
    let found = store
        .token_by_hash(&hash("s1"))
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.token, t);
    assert!(found.usable);
    assert!(store.token_by_hash(&hash("s2")).await.expect("lookup").is_none());
    assert!(store.token_by_hash("bal_ci").await.expect("lookup").is_none());
    assert_eq!(store.list_tokens().await.expect("list"), vec![t.clone()]);
    // Roles in the request are granted with the token.
    let roles = store.list_roles(Some("ci".into())).await.expect("roles");
    assert_eq!(roles.len(), 1);
    assert_eq!(
        (roles[0].namespace.as_str(), roles[0].role),
        ("acme", Role::Writer)
    );

    let revoked = store.revoke_token(&ctx("root"), t.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let found = store
        .token_by_hash(&hash("s1"))
        .await
        .expect("lookup")
        .expect("still found");
    assert!(!found.usable, "a revoked token is not usable");
    let t0 = trail(store.as_ref()).await;
    let again = store
        .revoke_token(&ctx("root"), t.id)
        .await
        .expect("revoke twice");
    assert_eq!(again.revoked_at, revoked.revoked_at);
    assert_eq!(
        trail(store.as_ref()).await,
        t0,
        "a second revocation records nothing"
    );
    assert_eq!(
        code(store.revoke_token(&ctx("root"), 999).await),
        ErrorCode::NotFound
    );

    // Bad input is refused.
    let bad = store
        .create_token(
            &ctx("root"),
            token("no spaces allowed", &[]),
            "p".into(),
            hash("s3"),
        )
        .await;
    assert_eq!(code(bad), ErrorCode::InvalidArgument);
    let mut past = token("ci", &[]);
    past.expires_at = Some("2001-01-01T00:00:00Z".into());
    assert_eq!(
        code(
            store
                .create_token(&ctx("root"), past, "p".into(), hash("s4"))
                .await
        ),
        ErrorCode::InvalidArgument
    );
    let mut garbage = token("ci", &[]);
    garbage.expires_at = Some("next tuesday".into());
    assert_eq!(
        code(
            store
                .create_token(&ctx("root"), garbage, "p".into(), hash("s5"))
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(store.list_tokens().await.expect("list").len(), 1);
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// A token stops being usable when its expiry passes.
pub async fn tokens_expire(store: Arc<dyn Store>) {
    let soon = time::OffsetDateTime::now_utc() + Duration::from_millis(1500);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let mut req = token("temp", &[]);
    req.expires_at = Some(soon);
    let t = store
        .create_token(&ctx("root"), req, "bal_t".into(), hash("temp"))
        .await
        .expect("create");
    assert!(t.expires_at.is_some());
    assert!(
        store
            .token_by_hash(&hash("temp"))
            .await
            .expect("lookup")
            .expect("found")
            .usable
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = store
            .token_by_hash(&hash("temp"))
            .await
            .expect("lookup")
            .expect("found");
        if !l.usable {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bootstrapping makes one admin token, once; the last usable admin token and the last admin
/// binding cannot be removed until another admin exists.
pub async fn the_last_admin_cannot_be_removed(store: Arc<dyn Store>) {
    let first = store
        .bootstrap_admin(&ctx("system"), "admin", "bal_adm".into(), hash("admin"))
        .await
        .expect("bootstrap")
        .expect("first start creates a token");
    assert_eq!(first.principal, "admin");
    assert!(store
        .bootstrap_admin(&ctx("system"), "admin", "bal_adm2".into(), hash("admin2"))
        .await
        .expect("bootstrap")
        .is_none());
    assert_eq!(store.list_tokens().await.expect("list").len(), 1);
    let roles = store.list_roles(Some("admin".into())).await.expect("roles");
    assert_eq!(roles.len(), 1);
    assert_eq!((roles[0].namespace.as_str(), roles[0].role), ("*", Role::Admin));

    let t0 = trail(store.as_ref()).await;
    assert_eq!(
        code(store.revoke_token(&ctx("admin"), first.id).await),
        ErrorCode::Conflict
    );
    let admin_binding = GrantRole {
        principal: "admin".into(),
        namespace: "*".into(),
        role: Role::Admin,
    };
    assert_eq!(
        code(store.revoke_role(&ctx("admin"), admin_binding.clone()).await),
        ErrorCode::Conflict
    );
    assert_eq!(trail(store.as_ref()).await, t0);
    assert!(
        store
            .token_by_hash(&hash("admin"))
            .await
            .expect("lookup")
            .expect("found")
            .usable
    );

    // An admin role without a usable token does not count.
    store
        .grant_role(&ctx("admin"), admin_binding_for("tokenless"))
        .await
        .expect("grant");
    assert_eq!(
        code(store.revoke_token(&ctx("admin"), first.id).await),
        ErrorCode::Conflict
    );

    // With a second admin token, the first can go.
    store
        .create_token(
            &ctx("admin"),
            token("ops", &[("*", Role::Admin)]),
            "bal_ops".into(),
            hash("ops"),
        )
        .await
        .expect("second admin");
    store
        .revoke_role(&ctx("admin"), admin_binding)
        .await
        .expect("revoke role");
    store
        .revoke_token(&ctx("ops"), first.id)
        .await
        .expect("revoke token");
    let ops = store
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.principal == "ops")
        .expect("ops");
    assert_eq!(
        code(store.revoke_token(&ctx("ops"), ops.id).await),
        ErrorCode::Conflict
    );
}

fn admin_binding_for(principal: &str) -> GrantRole {
    GrantRole {
        principal: principal.into(),
        namespace: "*".into(),
        role: Role::Admin,
    }
}

/// Grants are idempotent, revocations of roles not held are `not_found`, listings are ordered.
pub async fn roles_are_granted_and_revoked(store: Arc<dyn Store>) {
    let g = |p: &str, ns: &str, role: Role| GrantRole {
        principal: p.into(),
        namespace: ns.into(),
        role,
    };
    let b = store
        .grant_role(&ctx("root"), g("bob", "acme", Role::Reader))
        .await
        .expect("grant");
    assert_eq!(
        (
            b.principal.as_str(),
            b.namespace.as_str(),
            b.role,
            b.granted_by.as_str()
        ),
        ("bob", "acme", Role::Reader, "root")
    );
    let t0 = trail(store.as_ref()).await;
    let again = store
        .grant_role(&ctx("other"), g("bob", "acme", Role::Reader))
        .await
        .expect("grant again");
    assert_eq!(again, b, "granting a held role changes nothing");
    assert_eq!(trail(store.as_ref()).await, t0);
    store
        .grant_role(&ctx("root"), g("bob", "beta", Role::Maintainer))
        .await
        .expect("grant");
    store
        .grant_role(&ctx("root"), g("amy", "*", Role::Reviewer))
        .await
        .expect("grant");
    let all = store.list_roles(None).await.expect("roles");
    let keys: Vec<(String, String)> = all
        .iter()
        .map(|r| (r.principal.clone(), r.namespace.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            ("amy".into(), "*".into()),
            ("bob".into(), "acme".into()),
            ("bob".into(), "beta".into())
        ]
    );
    assert_eq!(
        store.list_roles(Some("bob".into())).await.expect("roles").len(),
        2
    );
    assert!(store
        .list_roles(Some("nobody".into()))
        .await
        .expect("roles")
        .is_empty());

    store
        .revoke_role(&ctx("root"), g("bob", "acme", Role::Reader))
        .await
        .expect("revoke");
    assert_eq!(
        code(
            store
                .revoke_role(&ctx("root"), g("bob", "acme", Role::Reader))
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            store
                .grant_role(&ctx("root"), g("bob", "Bad Namespace", Role::Reader))
                .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(store.grant_role(&ctx("root"), g("", "acme", Role::Reader)).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(store.list_roles(None).await.expect("roles").len(), 2);
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Nodes starting together bootstrap one admin token, not one each.
pub async fn bootstrap_happens_once_under_concurrency(store: Arc<dyn Store>) {
    const NODES: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(NODES));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..NODES {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .bootstrap_admin(
                    &ctx("system"),
                    "admin",
                    format!("bal_{n}"),
                    hash(&format!("node-{n}")),
                )
                .await
                .expect("bootstrap")
        });
    }
    let mut created = Vec::new();
    while let Some(r) = tasks.join_next().await {
        created.extend(r.expect("task"));
    }
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(store.list_tokens().await.expect("list"), created);
    assert_eq!(store.list_roles(None).await.expect("roles").len(), 1);
}
