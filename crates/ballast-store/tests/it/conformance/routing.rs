//! Deployments (where sealed versions are served) and registry routes (which logical name
//! follows which stage or alias), and the routing state read from them in one piece.

use std::sync::Arc;

use ballast_api::deployments::{CreateDeployment, SetRoute};
use ballast_core::{ErrorCode, Stage};
use ballast_store::{Precondition, Store};

use super::{all_events, code, ctx, draft, model, name, sealed};

fn deployment(model: &str, version: u64, region: &str, url: &str) -> CreateDeployment {
    CreateDeployment {
        model: model.to_owned(),
        version,
        region: region.to_owned(),
        url: url.to_owned(),
        weight: 1,
        upstream_model: None,
    }
}

fn route(v: serde_json::Value) -> SetRoute {
    serde_json::from_value(v).expect("a valid route body")
}

/// Deployments need a sealed version, are unique per version, region and URL, and filter by
/// model and region.
pub async fn deployments_are_recorded_for_sealed_versions(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    model(store.as_ref(), "acme/other", &[]).await;
    let v = sealed(store.as_ref(), &m, &[], &[]).await.version;
    let d = draft(store.as_ref(), &m, &[], &[]).await.version;
    sealed(store.as_ref(), &name("acme/other"), &[], &[]).await;
    let add = |r: CreateDeployment| {
        let store = Arc::clone(&store);
        async move { store.add_deployment(&ctx("a"), r).await }
    };
    let eu = add(deployment("acme/bot", v, "eu-west", "http://127.0.0.1:8000"))
        .await
        .expect("add");
    assert_eq!(
        (eu.model.as_str(), eu.version, eu.region.as_str()),
        ("acme/bot", v, "eu-west")
    );
    let us = add(deployment("acme/bot", v, "us-east", "http://127.0.0.1:8001"))
        .await
        .expect("add");
    add(deployment("acme/other", 1, "eu-west", "http://127.0.0.1:8002"))
        .await
        .expect("add");
    assert_eq!(
        code(add(deployment("acme/bot", v, "eu-west", "http://127.0.0.1:8000")).await),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(add(deployment("acme/bot", d, "eu-west", "http://127.0.0.1:8000")).await),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(add(deployment("acme/bot", 99, "eu-west", "http://127.0.0.1:8000")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(add(deployment("acme/ghost", 1, "eu-west", "http://127.0.0.1:8000")).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(add(deployment("acme/bot", v, "eu west", "http://127.0.0.1:8000")).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(add(deployment("acme/bot", v, "eu-west", "not a url")).await),
        ErrorCode::InvalidArgument
    );
    let ids = |l: Vec<ballast_api::deployments::Deployment>| l.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_deployments(None, None).await.expect("list")).len(),
        3
    );
    assert_eq!(
        ids(store.list_deployments(Some(m.clone()), None).await.expect("list")),
        vec![eu.id, us.id]
    );
    assert_eq!(
        ids(store
            .list_deployments(Some(m.clone()), Some("us-east".into()))
            .await
            .expect("list")),
        vec![us.id]
    );
    store.remove_deployment(&ctx("a"), eu.id).await.expect("remove");
    assert_eq!(
        code(store.remove_deployment(&ctx("a"), eu.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        ids(store.list_deployments(Some(m), None).await.expect("list")),
        vec![us.id]
    );
    super::assert_audit_matches_events(store.as_ref()).await;
}

/// Routes are validated, versioned, refuse cycles and removal while used as a fallback, and
/// the routing state resolves them with the newest event id.
pub async fn routes_resolve_in_the_routing_state(store: Arc<dyn Store>) {
    let m = name("acme/bot");
    model(store.as_ref(), "acme/bot", &[]).await;
    let v1 = sealed(store.as_ref(), &m, &[], &[]).await.version;
    let v2 = sealed(store.as_ref(), &m, &[], &[]).await.version;
    for v in [v1, v2] {
        store
            .set_stage(&ctx("a"), &m, v, Stage::Staging, None, Precondition::None)
            .await
            .expect("stage");
        store
            .set_stage(&ctx("a"), &m, v, Stage::Production, None, Precondition::None)
            .await
            .expect("promote");
    }
    store
        .add_deployment(
            &ctx("a"),
            deployment("acme/bot", v2, "eu-west", "http://127.0.0.1:8000"),
        )
        .await
        .expect("deploy");

    let set = |n: &str, body: serde_json::Value| {
        let (store, n) = (Arc::clone(&store), n.to_owned());
        async move { store.set_route(&ctx("a"), &n, route(body)).await }
    };
    let backup = set("backup", serde_json::json!({ "target": "acme/bot@stable" }))
        .await
        .expect("set");
    assert_eq!(backup.revision, 1);
    let chat = set(
        "chat",
        serde_json::json!({ "target": "acme/bot:production", "fallbacks": ["backup"] }),
    )
    .await
    .expect("set");
    assert_eq!(
        code(set("bad", serde_json::json!({ "target": "acme/bot" })).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(set("bad", serde_json::json!({ "target": "acme/ghost:production" })).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            set(
                "bad",
                serde_json::json!({ "target": "acme/bot:production", "fallbacks": ["nope"] })
            )
            .await
        ),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(
            set(
                "backup",
                serde_json::json!({ "target": "acme/bot@stable", "fallbacks": ["chat"] })
            )
            .await
        ),
        ErrorCode::InvalidArgument,
        "a cycle is refused"
    );
    let again = set("backup", serde_json::json!({ "target": "acme/bot:staging" }))
        .await
        .expect("replace");
    assert_eq!(again.revision, backup.revision + 1);
    assert_eq!(
        code(store.delete_route(&ctx("a"), "backup").await),
        ErrorCode::Conflict
    );
    assert_eq!(
        code(store.delete_route(&ctx("a"), "nope").await),
        ErrorCode::NotFound
    );
    let names: Vec<String> = store
        .list_routes()
        .await
        .expect("routes")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["backup", "chat"]);

    let state = store.routing_state().await.expect("state");
    assert_eq!(
        state.last_event_id,
        all_events(store.as_ref()).await.last().map_or(0, |e| e.id)
    );
    let chat_state = state
        .routes
        .iter()
        .find(|r| r.route.name == "chat")
        .expect("chat");
    assert_eq!(chat_state.route, chat);
    assert_eq!(chat_state.version, Some(v2));
    assert_eq!(chat_state.previous_production, Some(v1));
    assert_eq!(
        chat_state
            .deployments
            .iter()
            .map(|d| (d.version, d.region.as_str()))
            .collect::<Vec<_>>(),
        vec![(v2, "eu-west")]
    );
    let backup_state = state
        .routes
        .iter()
        .find(|r| r.route.name == "backup")
        .expect("backup");
    assert_eq!(backup_state.version, None, "nothing in staging");

    store.delete_route(&ctx("a"), "chat").await.expect("delete");
    store.delete_route(&ctx("a"), "backup").await.expect("delete");
    assert!(store.list_routes().await.expect("routes").is_empty());
    super::assert_audit_matches_events(store.as_ref()).await;
}
