//! Governance: policies, gates, transition requests, approvals and comparisons.

use ballast_api::governance::{
    Comparison, EffectivePolicy, RequestState, StoredPolicy, TransitionList, TransitionRequest,
};
use ballast_api::{AuditList, Version};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

use crate::app::{create_token, err, ok, spawn_app, TestApp};

/// A principal acting on the test server.
struct Who {
    name: String,
    token: String,
}

async fn who(app: &TestApp, name: &str) -> Who {
    let token = if app.admin_token.is_empty() {
        String::new()
    } else {
        create_token(&app.base, &app.admin_token, name, &[("*", "admin")]).await
    };
    Who {
        name: name.to_owned(),
        token,
    }
}

fn rq(app: &TestApp, w: &Who, method: Method, path: &str) -> RequestBuilder {
    let rb = app.client.request(method, app.url(path));
    if w.token.is_empty() {
        rb.header("x-ballast-actor", &w.name)
    } else {
        rb.bearer_auth(&w.token)
    }
}

async fn put_policy(app: &TestApp, path: &str, policy: &Value) -> StoredPolicy {
    let r = app.put_json(path, policy).send().await.unwrap();
    ok(r, StatusCode::OK).await
}

/// A sealed version with these metadata fields.
async fn version_with(app: &TestApp, model: &str, metadata: Value) -> u64 {
    let v = app.create_version(model, &json!({ "metadata": metadata })).await;
    app.upload(
        model,
        v.version,
        "model.bin",
        format!("{model}/{metadata}").as_bytes(),
    )
    .await;
    app.seal(model, v.version).await;
    v.version
}

async fn stage_as(app: &TestApp, w: &Who, model: &str, n: u64, stage: &str) -> reqwest::Response {
    rq(
        app,
        w,
        Method::POST,
        &format!("/v1/models/{model}/versions/{n}/stage"),
    )
    .json(&json!({ "stage": stage }))
    .send()
    .await
    .unwrap()
}

async fn review_as(app: &TestApp, w: &Who, model: &str, id: u64, verb: &str) -> reqwest::Response {
    rq(
        app,
        w,
        Method::POST,
        &format!("/v1/models/{model}/transition-requests/{id}/{verb}"),
    )
    .json(&json!({ "comment": format!("{verb} by {}", w.name) }))
    .send()
    .await
    .unwrap()
}

async fn stage_of(app: &TestApp, model: &str, n: u64) -> String {
    let v: Version = app.get_ok(&format!("/v1/models/{model}/versions/{n}")).await;
    v.stage.to_string()
}

#[tokio::test]
async fn policies_are_validated_stored_merged_and_removed() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    // A malformed rule is refused by name, and nothing is stored.
    let r = app
        .put_json(
            "/v1/policies/acme",
            &json!({ "gates": { "production": ["accuracy >= 0.9", "latency <<= 3"] } }),
        )
        .send()
        .await
        .unwrap();
    let e = err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
    assert!(e["message"].as_str().unwrap().contains("latency <<= 3"), "{e}");
    assert_eq!(e["field"], "gates");
    for bad in [
        json!({ "naming_rule": "([a-z" }),
        json!({ "required_metadata": { "staging": ["ownr"] } }),
        json!({ "risk": "extreme" }),
        json!({ "gatez": {} }),
    ] {
        let r = app.put_json("/v1/policies/acme", &bad).send().await.unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
    let r = app.get("/v1/policies/acme").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    let ns = put_policy(
        &app,
        "/v1/policies/acme",
        &json!({ "risk": "medium", "gates": { "production": ["accuracy >= 0.9"] } }),
    )
    .await;
    assert_eq!(ns.revision, 1);
    // YAML is accepted too.
    let r = app
        .req(Method::PUT, "/v1/models/acme/bot/policy")
        .header("content-type", "application/yaml")
        .body("risk: high\nrequired_metadata:\n  production: [owner]\n")
        .send()
        .await
        .unwrap();
    let m: StoredPolicy = ok(r, StatusCode::OK).await;
    assert_eq!(m.target, "acme/bot");
    let eff: EffectivePolicy = app.get_ok("/v1/models/acme/bot/policy/effective").await;
    let p = eff.policy.unwrap();
    // Field by field: the model's risk and metadata, the namespace's gates.
    assert_eq!(p.risk.unwrap().as_str(), "high");
    assert_eq!(p.gates.unwrap().production, vec!["accuracy >= 0.9".to_owned()]);
    assert_eq!(p.required_metadata.unwrap().production, vec!["owner".to_owned()]);
    // Compare-and-swap on the revision.
    let r = app
        .put_json("/v1/policies/acme", &json!({}))
        .header("if-match", "\"7\"")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    let r = app.delete("/v1/models/acme/bot/policy").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let eff: EffectivePolicy = app.get_ok("/v1/models/acme/bot/policy/effective").await;
    assert!(eff.policy.unwrap().risk.unwrap().as_str() == "medium");
    // Every change is audited.
    let audit: AuditList = app.get_ok("/v1/audit?action=policy.updated").await;
    assert_eq!(audit.entries.len(), 2);
}

#[tokio::test]
async fn without_a_policy_stage_moves_are_unchanged() {
    let app = spawn_app().await;
    put_policy(
        &app,
        "/v1/policies/other",
        &json!({ "gates": { "staging": ["accuracy >= 0.99"] } }),
    )
    .await;
    app.create_model("acme/free").await;
    let n = version_with(&app, "acme/free", json!({})).await;
    let change = app.set_stage("acme/free", n, "staging").await;
    assert_eq!(change.version.stage.to_string(), "staging");
    app.set_stage("acme/free", n, "production").await;
    let list: TransitionList = app.get_ok("/v1/transition-requests").await;
    assert!(list.requests.is_empty());
}

#[tokio::test]
async fn failing_gates_block_and_record_their_verdicts() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    put_policy(
        &app,
        "/v1/policies/acme",
        &json!({
            "required_metadata": { "staging": ["owner"] },
            "required_card_sections": { "production": ["Intended use"] },
            "gates": { "production": ["accuracy >= 0.92", "p99_latency_ms <= 300"] }
        }),
    )
    .await;
    let n = version_with(&app, "acme/bot", json!({ "metrics": { "accuracy": 0.9 } })).await;
    let r = app
        .post(
            &format!("/v1/models/acme/bot/versions/{n}/stage"),
            &json!({ "stage": "staging" }),
        )
        .send()
        .await
        .unwrap();
    let e = err(r, StatusCode::UNPROCESSABLE_ENTITY, "gate_failed").await;
    assert!(e["message"].as_str().unwrap().contains("metadata owner"), "{e}");
    let details = e["details"].as_array().unwrap();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0]["observed"], "missing");
    assert_eq!(stage_of(&app, "acme/bot", n).await, "development");

    // The blocked request is kept with its verdicts.
    let list: TransitionList = app
        .get_ok("/v1/models/acme/bot/transition-requests?state=gates_failed")
        .await;
    assert_eq!(list.requests.len(), 1);
    assert!(!list.requests[0].gates_passed);

    let n = version_with(
        &app,
        "acme/bot",
        json!({ "owner": "ml", "metrics": { "accuracy": 0.91, "p99_latency_ms": 250 }, "model_card": "# Bot\n## Intended use\nSupport.\n" }),
    )
    .await;
    // Staging: gates pass, no approval needed: 200 and a completed request.
    let r = app
        .post(
            &format!("/v1/models/acme/bot/versions/{n}/stage"),
            &json!({ "stage": "staging" }),
        )
        .send()
        .await
        .unwrap();
    let id: u64 = r.headers()["x-ballast-transition-request"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let _: Value = ok(r, StatusCode::OK).await;
    let req: TransitionRequest = app
        .get_ok(&format!("/v1/models/acme/bot/transition-requests/{id}"))
        .await;
    assert_eq!(req.state, RequestState::Completed);
    assert_eq!(req.verdicts.len(), 1);
    // Production: accuracy is short; observed and required are both reported.
    let r = app
        .post(
            &format!("/v1/models/acme/bot/versions/{n}/stage"),
            &json!({ "stage": "production" }),
        )
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let failed = body["error"]["details"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{body}");
    assert_eq!(failed[0]["rule"], "accuracy >= 0.92");
    assert_eq!(failed[0]["observed"], "0.91");
    assert_eq!(failed[0]["required"], ">= 0.92");
    assert_eq!(body["transition_request"]["state"], "gates_failed");
    assert_eq!(stage_of(&app, "acme/bot", n).await, "staging");
}

#[tokio::test]
async fn relative_gates_compare_against_the_production_version_of_the_moment() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    put_policy(
        &app,
        "/v1/models/acme/bot/policy",
        &json!({ "risk": "medium", "gates": { "production": ["accuracy >= production.accuracy - 0.005"] } }),
    )
    .await;
    let alice = who(&app, "alice").await;
    let bob = who(&app, "bob").await;
    let mut ids = Vec::new();
    for acc in [0.90, 0.93, 0.95] {
        let n = version_with(&app, "acme/bot", json!({ "metrics": { "accuracy": acc } })).await;
        let r = stage_as(&app, &alice, "acme/bot", n, "staging").await;
        let _: Value = ok(r, StatusCode::OK).await;
        let r = stage_as(&app, &alice, "acme/bot", n, "production").await;
        let req: TransitionRequest = ok(r, StatusCode::ACCEPTED).await;
        assert_eq!(req.required_approvals, 1);
        ids.push(req.id);
        if n == 1 {
            // No production version yet: the relative rule passes, and says why.
            assert!(req.gates_passed);
            assert!(req.verdicts[0]
                .note
                .as_deref()
                .unwrap()
                .contains("no production baseline"));
            let done: TransitionRequest = ok(
                review_as(&app, &bob, "acme/bot", req.id, "approve").await,
                StatusCode::OK,
            )
            .await;
            assert_eq!(done.state, RequestState::Completed);
        } else {
            assert_eq!(req.baseline_version, Some(1));
            assert!(req.gates_passed, "{req:?}");
        }
    }
    assert_eq!(stage_of(&app, "acme/bot", 1).await, "production");
    // Version 3 goes first and becomes the baseline.
    let done: TransitionRequest = ok(
        review_as(&app, &bob, "acme/bot", ids[2], "approve").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(done.state, RequestState::Completed);
    assert_eq!(stage_of(&app, "acme/bot", 3).await, "production");
    // Version 2 (0.93) passed against version 1 (0.90) but not against version 3 (0.95 - 0.005).
    let late: TransitionRequest = ok(
        review_as(&app, &bob, "acme/bot", ids[1], "approve").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(late.state, RequestState::GatesFailed, "{late:?}");
    assert_eq!(late.baseline_version, Some(3));
    assert!(late.verdicts[0].required.contains("0.945"), "{:?}", late.verdicts);
    assert_eq!(stage_of(&app, "acme/bot", 2).await, "staging");
    assert_eq!(stage_of(&app, "acme/bot", 3).await, "production");
}

#[tokio::test]
async fn the_requester_cannot_approve_and_a_reviewer_counts_once() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    put_policy(
        &app,
        "/v1/policies/acme",
        &json!({ "approvals": { "low": { "staging": 2, "production": 0 } } }),
    )
    .await;
    let (alice, bob, carol) = (
        who(&app, "alice").await,
        who(&app, "bob").await,
        who(&app, "carol").await,
    );
    let n = version_with(&app, "acme/bot", json!({})).await;
    let req: TransitionRequest = ok(
        stage_as(&app, &alice, "acme/bot", n, "staging").await,
        StatusCode::ACCEPTED,
    )
    .await;
    // Asking again returns the same pending request.
    let again: TransitionRequest = ok(
        stage_as(&app, &bob, "acme/bot", n, "staging").await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(again.id, req.id);

    let e = err(
        review_as(&app, &alice, "acme/bot", req.id, "approve").await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("cannot approve"), "{e}");
    let r: TransitionRequest = ok(
        review_as(&app, &bob, "acme/bot", req.id, "approve").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!((r.approvals, r.state), (1, RequestState::Pending));
    err(
        review_as(&app, &bob, "acme/bot", req.id, "approve").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    let r: TransitionRequest = app
        .get_ok(&format!("/v1/models/acme/bot/transition-requests/{}", req.id))
        .await;
    assert_eq!(r.approvals, 1);
    assert_eq!(stage_of(&app, "acme/bot", n).await, "development");
    // The requester cannot force it through either.
    err(
        review_as(&app, &alice, "acme/bot", req.id, "complete").await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    )
    .await;
    let r: TransitionRequest = ok(
        review_as(&app, &carol, "acme/bot", req.id, "approve").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r.state, RequestState::Completed);
    assert_eq!(stage_of(&app, "acme/bot", n).await, "staging");
    // Closed requests take no more reviews.
    err(
        review_as(&app, &carol, "acme/bot", req.id, "reject").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // The approval, the move and the completion share one request id in the audit trail.
    let audit = app.audit_all().await;
    let approval = audit
        .iter()
        .rev()
        .find(|e| e.action == "transition.approved")
        .unwrap();
    let same: Vec<&str> = audit
        .iter()
        .filter(|e| e.request_id == approval.request_id)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        same,
        ["transition.approved", "version.stage", "transition.completed"]
    );
}

#[tokio::test]
async fn high_risk_models_always_need_a_reviewer() {
    let app = spawn_app().await;
    app.create_model("acme/risky").await;
    put_policy(
        &app,
        "/v1/models/acme/risky/policy",
        &json!({ "risk": "high", "approvals": { "high": { "staging": 0, "production": 0 } } }),
    )
    .await;
    let (alice, bob, carol) = (
        who(&app, "alice").await,
        who(&app, "bob").await,
        who(&app, "carol").await,
    );
    let n = version_with(&app, "acme/risky", json!({})).await;
    // Configured 0, yet a human must approve: the request waits.
    let req: TransitionRequest = ok(
        stage_as(&app, &alice, "acme/risky", n, "staging").await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(req.required_approvals, 1);
    // A maintainer cannot complete it on gates alone.
    let e = err(
        review_as(&app, &carol, "acme/risky", req.id, "complete").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("high-risk"), "{e}");
    assert_eq!(stage_of(&app, "acme/risky", n).await, "development");
    let r: TransitionRequest = ok(
        review_as(&app, &bob, "acme/risky", req.id, "approve").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r.state, RequestState::Completed);
    // Production likewise; a rejection closes the request and nothing moves.
    let req: TransitionRequest = ok(
        stage_as(&app, &alice, "acme/risky", n, "production").await,
        StatusCode::ACCEPTED,
    )
    .await;
    let r: TransitionRequest = ok(
        review_as(&app, &bob, "acme/risky", req.id, "reject").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r.state, RequestState::Rejected);
    assert!(r.resolution.unwrap().contains("rejected by bob"));
    assert_eq!(stage_of(&app, "acme/risky", n).await, "staging");
    // A new request, cancelled by its requester only.
    let req: TransitionRequest = ok(
        stage_as(&app, &alice, "acme/risky", n, "production").await,
        StatusCode::ACCEPTED,
    )
    .await;
    err(
        review_as(&app, &bob, "acme/risky", req.id, "cancel").await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    )
    .await;
    let r: TransitionRequest = ok(
        review_as(&app, &alice, "acme/risky", req.id, "cancel").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(r.state, RequestState::Cancelled);
}

#[tokio::test]
async fn concurrent_approvals_count_once_and_move_the_version_once() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    put_policy(
        &app,
        "/v1/policies/acme",
        &json!({ "approvals": { "low": { "staging": 0, "production": 3 } } }),
    )
    .await;
    let alice = who(&app, "alice").await;
    let n = version_with(&app, "acme/bot", json!({})).await;
    let _: Value = ok(
        stage_as(&app, &alice, "acme/bot", n, "staging").await,
        StatusCode::OK,
    )
    .await;
    let req: TransitionRequest = ok(
        stage_as(&app, &alice, "acme/bot", n, "production").await,
        StatusCode::ACCEPTED,
    )
    .await;

    // One reviewer, many concurrent approvals: one counts.
    let bob = who(&app, "bob").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        tasks.push(review_as(&app, &bob, "acme/bot", req.id, "approve"));
    }
    let statuses: Vec<StatusCode> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT));
    let r: TransitionRequest = app
        .get_ok(&format!("/v1/models/acme/bot/transition-requests/{}", req.id))
        .await;
    assert_eq!((r.approvals, r.state), (1, RequestState::Pending));

    // Many reviewers at once: the version moves exactly once, by the approval that sufficed.
    let mut reviewers = Vec::new();
    for i in 0..8 {
        reviewers.push(who(&app, &format!("reviewer-{i}")).await);
    }
    let tasks: Vec<_> = reviewers
        .iter()
        .map(|w| review_as(&app, w, "acme/bot", req.id, "approve"))
        .collect();
    let statuses: Vec<StatusCode> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        2,
        "{statuses:?}"
    );
    let r: TransitionRequest = app
        .get_ok(&format!("/v1/models/acme/bot/transition-requests/{}", req.id))
        .await;
    assert_eq!((r.approvals, r.state), (3, RequestState::Completed));
    assert_eq!(stage_of(&app, "acme/bot", n).await, "production");
    let moves = app
        .audit_all()
        .await
        .into_iter()
        .filter(|e| {
            e.action == "version.stage"
                && e.target == format!("acme/bot/{n}")
                && e.after["stage"] == "production"
        })
        .count();
    assert_eq!(moves, 1);
}

#[tokio::test]
async fn versions_compare_side_by_side_with_gate_verdicts() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    put_policy(
        &app,
        "/v1/policies/acme",
        &json!({ "gates": { "staging": ["accuracy >= 0.9"], "production": ["accuracy >= 0.92"] } }),
    )
    .await;
    let a = version_with(&app, "acme/bot", json!({ "owner": "a", "hyperparameters": { "lr": 0.1 }, "metrics": { "accuracy": 0.91, "loss": 0.5 } })).await;
    let b = version_with(
        &app,
        "acme/bot",
        json!({ "owner": "b", "hyperparameters": { "lr": 0.2 }, "metrics": { "accuracy": 0.95 } }),
    )
    .await;
    let c: Comparison = app
        .get_ok(&format!("/v1/models/acme/bot/compare?versions={a},{b}"))
        .await;
    assert_eq!(c.versions.len(), 2);
    assert!(c.versions[0].staging_gates_passed && !c.versions[0].production_gates_passed);
    assert!(c.versions[1].staging_gates_passed && c.versions[1].production_gates_passed);
    let acc = c.metrics.iter().find(|m| m.name == "accuracy").unwrap();
    assert_eq!(acc.values, vec![Some(0.91), Some(0.95)]);
    assert!((acc.deltas[1].unwrap() - 0.04).abs() < 1e-9);
    let loss = c.metrics.iter().find(|m| m.name == "loss").unwrap();
    assert_eq!(loss.deltas, vec![Some(0.0), None]);
    let lr = c.params.iter().find(|p| p.name == "lr").unwrap();
    assert!(lr.differs);
    let owner = c.metadata.iter().find(|p| p.name == "owner").unwrap();
    assert_eq!(owner.values, vec![json!("a"), json!("b")]);
    for bad in [
        "versions=1",
        "versions=1,1",
        "versions=1,x",
        "",
        "versions=1,2,3,4,5,6,7,8,9,10,11",
    ] {
        let r = app
            .get(&format!("/v1/models/acme/bot/compare?{bad}"))
            .send()
            .await
            .unwrap();
        err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
    }
    let r = app
        .get("/v1/models/acme/bot/compare?versions=1,99")
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_naming_rule_applies_to_new_models() {
    let app = spawn_app().await;
    put_policy(&app, "/v1/policies/acme", &json!({ "naming_rule": "[a-z]+-bot" })).await;
    app.create_model("acme/support-bot").await;
    let r = app
        .post("/v1/models", &json!({ "name": "acme/support" }))
        .send()
        .await
        .unwrap();
    let e = err(r, StatusCode::BAD_REQUEST, "invalid_name").await;
    assert!(e["message"].as_str().unwrap().contains("[a-z]+-bot"), "{e}");
    let r = app.get("/v1/models/acme/support").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    app.create_model("other/support").await;
}

#[tokio::test]
async fn mlflow_stage_moves_pass_the_policy() {
    let app = spawn_app().await;
    let post = |path: &str, body: Value| app.post(&format!("/api/2.0/mlflow/{path}"), &body).send();
    let r = post("registered-models/create", json!({ "name": "gated" }))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = post(
        "model-versions/create",
        json!({ "name": "gated", "source": "s3://x" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let model: Value = app
        .get_ok("/api/2.0/mlflow/registered-models/get?name=gated")
        .await;
    let _ = model;
    // MLflow models live in the default namespace.
    let list: Value = app.get_ok("/v1/models").await;
    let full = list["models"][0]["name"].as_str().unwrap().to_owned();
    put_policy(
        &app,
        &format!("/v1/models/{full}/policy"),
        &json!({ "gates": { "production": ["accuracy >= 0.9"] }, "risk": "medium" }),
    )
    .await;
    let r = post(
        "model-versions/transition-stage",
        json!({ "name": "gated", "version": "1", "stage": "Production" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "INVALID_STATE");
    assert!(v["message"].as_str().unwrap().contains("accuracy >= 0.9"), "{v}");
    // Staging needs no approval and has no gate: it goes through.
    let r = post(
        "model-versions/transition-stage",
        json!({ "name": "gated", "version": "1", "stage": "Staging" }),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Without gates, production now waits for an approval: the refusal names the request.
    put_policy(
        &app,
        &format!("/v1/models/{full}/policy"),
        &json!({ "risk": "medium" }),
    )
    .await;
    let r = post(
        "model-versions/transition-stage",
        json!({ "name": "gated", "version": "1", "stage": "Production" }),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "INVALID_STATE");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("approval required") && msg.contains("transition request"),
        "{msg}"
    );
    let list: TransitionList = app.get_ok("/v1/transition-requests?state=pending").await;
    assert_eq!(list.requests.len(), 1);
    assert_eq!(list.requests[0].to_stage.to_string(), "production");
}

#[tokio::test]
async fn a_pending_request_is_superseded_when_its_version_moves_by_other_means() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    put_policy(
        &app,
        "/v1/policies/acme",
        &json!({ "approvals": { "low": { "staging": 0, "production": 1 } } }),
    )
    .await;
    let (alice, bob) = (who(&app, "alice").await, who(&app, "bob").await);
    let n = version_with(&app, "acme/bot", json!({})).await;
    let _: Value = ok(
        stage_as(&app, &alice, "acme/bot", n, "staging").await,
        StatusCode::OK,
    )
    .await;
    let req: TransitionRequest = ok(
        stage_as(&app, &alice, "acme/bot", n, "production").await,
        StatusCode::ACCEPTED,
    )
    .await;
    // Archiving is not gated: it goes through, and the request no longer applies.
    let _: Value = ok(
        stage_as(&app, &alice, "acme/bot", n, "archived").await,
        StatusCode::OK,
    )
    .await;
    let r: TransitionRequest = app
        .get_ok(&format!("/v1/models/acme/bot/transition-requests/{}", req.id))
        .await;
    assert_eq!(r.state, RequestState::Superseded);
    let e = err(
        review_as(&app, &bob, "acme/bot", req.id, "approve").await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("superseded"), "{e}");
    assert_eq!(stage_of(&app, "acme/bot", n).await, "archived");
    // Another model's request is not found under this model.
    app.create_model("acme/other").await;
    let r = app
        .get(&format!("/v1/models/acme/other/transition-requests/{}", req.id))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
}
