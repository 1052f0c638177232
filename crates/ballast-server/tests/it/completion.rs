//! Explicit completion of a transition request by a maintainer: the version moves in the same
//! transaction as its audit entries, other roles are refused, and a request already decided
//! cannot be completed again.

use ballast_api::governance::{RequestState, TransitionRequest};
use ballast_api::{AuditEntry, Version};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::app::{create_token, err, ok, spawn_app, TestApp};

/// Posts `verb` on request `id` of `model` with `token`, tagged with `request_id`.
async fn act(
    app: &TestApp,
    token: &str,
    model: &str,
    id: u64,
    verb: &str,
    request_id: &str,
) -> reqwest::Response {
    app.client
        .request(
            Method::POST,
            app.url(&format!("/v1/models/{model}/transition-requests/{id}/{verb}")),
        )
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json(&json!({ "comment": format!("{verb} ({request_id})") }))
        .send()
        .await
        .unwrap()
}

async fn stage_with(app: &TestApp, token: &str, model: &str, n: u64, stage: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/models/{model}/versions/{n}/stage")))
        .bearer_auth(token)
        .json(&json!({ "stage": stage }))
        .send()
        .await
        .unwrap()
}

async fn version(app: &TestApp, model: &str, n: u64) -> Version {
    app.get_ok(&format!("/v1/models/{model}/versions/{n}")).await
}

async fn request(app: &TestApp, model: &str, id: u64) -> TransitionRequest {
    app.get_ok(&format!("/v1/models/{model}/transition-requests/{id}"))
        .await
}

async fn verify(app: &TestApp) -> Value {
    app.get_ok("/v1/audit/verify").await
}

/// What must not change when a completion is refused.
#[derive(Debug, PartialEq)]
struct Snapshot {
    audit: Vec<(u64, String)>,
    version: (String, u64, String),
    request: (RequestState, u32, Option<String>, String),
}

async fn snapshot(app: &TestApp, model: &str, n: u64, id: u64) -> Snapshot {
    let audit = app
        .audit_everything()
        .await
        .into_iter()
        .map(|e| (e.id, e.hash))
        .collect();
    let v = version(app, model, n).await;
    let r = request(app, model, id).await;
    Snapshot {
        audit,
        version: (v.stage.to_string(), v.revision, v.stage_changed_at),
        request: (r.state, r.approvals, r.resolution, r.updated_at),
    }
}

#[tokio::test]
async fn a_maintainer_completes_a_request_explicitly_and_only_once() {
    let app = spawn_app().await;
    let m = "acme/bot";
    app.create_model(m).await;
    let r = app
        .put_json(
            "/v1/policies/acme",
            &json!({
                "risk": "medium",
                "approvals": { "medium": { "staging": 0, "production": 2 } },
                "gates": { "production": ["accuracy >= 0.9"] }
            }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok = |who: &'static str, role: &'static str| {
        let (base, admin) = (app.base.clone(), app.admin_token.clone());
        async move { create_token(&base, &admin, who, &[("acme", role)]).await }
    };
    let alice = tok("alice", "maintainer").await;
    let mara = tok("mara", "maintainer").await;
    let bob = tok("bob", "reviewer").await;
    let wendy = tok("wendy", "writer").await;
    let rita = tok("rita", "reader").await;
    let admin_elsewhere = create_token(&app.base, &app.admin_token, "olga", &[("other", "admin")]).await;

    let mut requests = Vec::new();
    for n in 1..=2u64 {
        let v = app
            .create_version(m, &json!({ "metadata": { "metrics": { "accuracy": 0.95 } } }))
            .await;
        assert_eq!(v.version, n);
        app.upload(m, n, "model.bin", format!("weights {n}").as_bytes())
            .await;
        app.seal(m, n).await;
        let _: Value = ok(stage_with(&app, &alice, m, n, "staging").await, StatusCode::OK).await;
        let req: TransitionRequest = ok(
            stage_with(&app, &alice, m, n, "production").await,
            StatusCode::ACCEPTED,
        )
        .await;
        assert_eq!(
            (req.state, req.required_approvals, req.gates_passed),
            (RequestState::Pending, 2, true)
        );
        requests.push(req.id);
    }
    let (id, other) = (requests[0], requests[1]);
    // One approval of the two the policy asks for.
    let r: TransitionRequest = ok(
        act(&app, &bob, m, id, "approve", "approve-1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!((r.state, r.approvals), (RequestState::Pending, 1));

    // Nobody without `maintainer` on the namespace may complete it, and trying changes nothing.
    let before = snapshot(&app, m, 1, id).await;
    for (who, token) in [
        ("reviewer", &bob),
        ("writer", &wendy),
        ("reader", &rita),
        ("admin of another namespace", &admin_elsewhere),
    ] {
        let e = err(
            act(&app, token, m, id, "complete", "refused").await,
            StatusCode::FORBIDDEN,
            "permission_denied",
        )
        .await;
        assert!(
            e["message"].as_str().unwrap().contains("may not maintain"),
            "{who}: {e}"
        );
    }
    assert_eq!(snapshot(&app, m, 1, id).await, before);

    // A maintainer completes it: the version moves, and the move and the completion are
    // recorded by the same request, next to each other in the chain.
    let done = act(&app, &mara, m, id, "complete", "complete-by-mara").await;
    assert_eq!(done.headers()["x-request-id"], "complete-by-mara");
    let done: TransitionRequest = ok(done, StatusCode::OK).await;
    assert_eq!(done.state, RequestState::Completed);
    assert_eq!(done.closed_by.as_deref(), Some("mara"));
    let resolution = done.resolution.clone().unwrap();
    assert!(
        resolution.contains("completed by mara with 1 of 2 approval(s)"),
        "{resolution}"
    );
    let v = version(&app, m, 1).await;
    assert_eq!(v.stage.to_string(), "production");
    let stored = request(&app, m, id).await;
    assert_eq!(stored.state, RequestState::Completed);

    let audit = app.audit_everything().await;
    let mine: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.request_id == "complete-by-mara")
        .collect();
    assert_eq!(
        mine.iter()
            .map(|e| (e.action.as_str(), e.target.as_str(), e.actor.as_str()))
            .collect::<Vec<_>>(),
        [
            ("version.stage", "acme/bot/1", "mara"),
            ("transition.completed", "acme/bot/1", "mara"),
        ],
        "{audit:#?}"
    );
    assert_eq!(mine[1].id, mine[0].id + 1, "nothing in between: {audit:#?}");
    assert_eq!(mine[0].before["stage"], "staging");
    assert_eq!(mine[0].after["stage"], "production");
    assert_eq!(mine[1].before["state"], "pending");
    assert_eq!(mine[1].after["state"], "completed");
    assert_eq!(mine[1].after["resolution"], resolution.as_str());
    let chain = verify(&app).await;
    assert_eq!(chain["ok"], true, "{chain}");
    assert_eq!(chain["entries"], audit.len() as u64, "{chain}");

    // Completing it again is refused, says why, and changes nothing; so is an approval now.
    let before = snapshot(&app, m, 1, id).await;
    for (token, verb) in [(&mara, "complete"), (&alice, "complete"), (&bob, "approve")] {
        let e = err(
            act(&app, token, m, id, verb, "again").await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("transition request {id} is completed"))
                && msg.contains("only pending requests"),
            "{msg}"
        );
    }
    assert_eq!(snapshot(&app, m, 1, id).await, before);

    // A rejected request cannot be completed either: version 2 stays in staging.
    let r: TransitionRequest = ok(
        act(&app, &bob, m, other, "reject", "reject-2").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r.state, RequestState::Rejected);
    let before = snapshot(&app, m, 2, other).await;
    let e = err(
        act(&app, &mara, m, other, "complete", "late").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("is rejected") && msg.contains("rejected by bob"),
        "{msg}"
    );
    assert_eq!(snapshot(&app, m, 2, other).await, before);
    assert_eq!(version(&app, m, 2).await.stage.to_string(), "staging");
    assert_eq!(version(&app, m, 1).await.stage.to_string(), "production");
    assert!(app
        .audit_everything()
        .await
        .iter()
        .all(|e| e.request_id != "refused" && e.request_id != "again" && e.request_id != "late"));
    assert_eq!(verify(&app).await["ok"], true);
}
