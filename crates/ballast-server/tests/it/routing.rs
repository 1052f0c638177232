//! Deployments, registry routes and the compiled routing snapshot: CRUD, validation, audit and
//! events; compilation from stage and alias references (previous-production fallback tier,
//! canary split); the long-poll watch (wake-up on promotion, 304 on timeout, ETag).

use std::time::{Duration, Instant};

use ballast_api::deployments::{Deployment, DeploymentList, RegistryRoute, RouteList};
use ballast_api::events::EventList;
use ballast_api::routing::RoutingSnapshot;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::app::{err, ok, spawn_app, TestApp};

async fn promote(app: &TestApp, model: &str, n: u64) {
    app.set_stage(model, n, "staging").await;
    app.set_stage(model, n, "production").await;
}

async fn deploy(app: &TestApp, model: &str, version: u64, region: &str, url: &str) -> Deployment {
    let r = app
        .post(
            "/v1/deployments",
            &json!({ "model": model, "version": version, "region": region, "url": url }),
        )
        .send()
        .await
        .unwrap();
    ok(r, StatusCode::CREATED).await
}

async fn set_route(app: &TestApp, name: &str, body: &Value) -> RegistryRoute {
    let r = app
        .put_json(&format!("/v1/routes/{name}"), body)
        .send()
        .await
        .unwrap();
    ok(r, StatusCode::OK).await
}

async fn snapshot(app: &TestApp) -> RoutingSnapshot {
    let s: RoutingSnapshot = app.get_ok("/v1/routing/snapshot").await;
    s.validate().unwrap();
    s
}

fn versions_of(s: &RoutingSnapshot, route: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .route(route)
        .unwrap_or_else(|| panic!("no route {route} in {s:?}"))
        .targets
        .iter()
        .map(|t| t.model_version.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

async fn event_types(app: &TestApp) -> Vec<String> {
    let page: EventList = app.get_ok("/v1/events?limit=1000").await;
    page.events.into_iter().map(|e| e.event_type).collect()
}

#[tokio::test]
async fn deployments_crud_validation_and_events() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    let v1 = app.sealed_version("acme/bot", b"one").await;
    let draft = app.create_version("acme/bot", &json!({})).await.version;

    let d = deploy(&app, "acme/bot", v1, "eu-west", "http://127.0.0.1:8000").await;
    assert_eq!((d.version, d.weight, d.region.as_str()), (v1, 1, "eu-west"));
    let d2 = deploy(&app, "acme/bot", v1, "us-east", "http://127.0.0.2:8000").await;

    // Validation: each refusal changes nothing.
    let cases = [
        (
            json!({"model": "acme/bot", "version": draft, "region": "eu-west", "url": "http://h:1"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"model": "acme/bot", "version": 99, "region": "eu-west", "url": "http://h:1"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"model": "acme/nope", "version": 1, "region": "eu-west", "url": "http://h:1"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"model": "acme/bot", "version": v1, "region": "eu-west", "url": "ftp://h:1"}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            json!({"model": "acme/bot", "version": v1, "region": "eu west", "url": "http://h:1"}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            json!({"model": "acme/bot", "version": v1, "region": "eu-west", "url": "http://h:1", "weight": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            json!({"model": "acme/bot", "version": v1, "region": "eu-west", "url": "http://h:1", "weight": 10001}),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            json!({"model": "acme/bot", "version": v1, "region": "eu-west", "url": "http://127.0.0.1:8000"}),
            StatusCode::CONFLICT,
            "already_exists",
        ),
    ];
    for (body, status, code) in cases {
        let r = app.post("/v1/deployments", &body).send().await.unwrap();
        err(r, status, code).await;
    }

    let all: DeploymentList = app.get_ok("/v1/deployments").await;
    assert_eq!(all.deployments.len(), 2);
    let eu: DeploymentList = app.get_ok("/v1/deployments?model=acme/bot&region=eu-west").await;
    assert_eq!(eu.deployments, vec![d.clone()]);
    let none: DeploymentList = app.get_ok("/v1/deployments?model=acme/other").await;
    assert!(none.deployments.is_empty());

    let r = app
        .delete(&format!("/v1/deployments/{}", d2.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .delete(&format!("/v1/deployments/{}", d2.id))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    let types = event_types(&app).await;
    assert_eq!(types.iter().filter(|t| *t == "deployment.added").count(), 2);
    assert_eq!(types.iter().filter(|t| *t == "deployment.removed").count(), 1);
    let audit = app.audit_all().await;
    assert!(audit
        .iter()
        .any(|e| e.action == "deployment.add" && e.target == format!("acme/bot/{v1}")));
    assert!(audit.iter().any(|e| e.action == "deployment.remove"));
}

#[tokio::test]
async fn routes_crud_validation_and_events() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    let r = set_route(&app, "bot", &json!({ "target": "acme/bot:production" })).await;
    assert_eq!((r.name.as_str(), r.revision), ("bot", 1));
    let small = set_route(&app, "bot-small", &json!({ "target": "acme/bot@small" })).await;
    assert_eq!(small.spec.sticky_header, None);
    let r = set_route(
        &app,
        "bot",
        &json!({ "target": "acme/bot:production", "fallbacks": ["bot-small"],
                 "canary": {"alias": "challenger", "percent": 10}, "sticky_header": "x-user" }),
    )
    .await;
    assert_eq!(r.revision, 2);
    assert_eq!(r.spec.fallbacks, vec!["bot-small".to_owned()]);

    let bad = [
        ("bot", json!({ "target": "acme/bot" })),
        ("bot", json!({ "target": "acme/bot:nowhere" })),
        (
            "bot",
            json!({ "target": "acme/bot:production", "fallbacks": ["missing"] }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "fallbacks": ["bot"] }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "canary": {"alias": "challenger", "percent": 101} }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "sticky_header": "X Bad" }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "retry": {"max_attempts": 0} }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "regions": {"order": []} }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "regions": {"order": ["eu", "eu"]} }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "timeouts": {"stream_idle_ms": 0} }),
        ),
        (
            "bot",
            json!({ "target": "acme/bot:production", "health": {"failure_rate": {"failure_percent": 101}} }),
        ),
        ("bad name!", json!({ "target": "acme/bot:production" })),
        // A cycle: bot-small -> bot -> bot-small.
        (
            "bot-small",
            json!({ "target": "acme/bot@small", "fallbacks": ["bot"] }),
        ),
    ];
    for (name, body) in bad {
        let r = app
            .put_json(&format!("/v1/routes/{}", name.replace(' ', "%20")), &body)
            .send()
            .await
            .unwrap();
        err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
    }
    let r = app
        .put_json(
            "/v1/routes/bot",
            &json!({ "target": "acme/bot:production", "regions": {"order": ["eu"], "local": "last"} }),
        )
        .send()
        .await
        .unwrap();
    err(r, StatusCode::BAD_REQUEST, "invalid_json").await;
    let r = app
        .put_json("/v1/routes/bot", &json!({ "target": "acme/bot@Bad-Alias" }))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::BAD_REQUEST, "invalid_name").await;
    let r = app
        .put_json("/v1/routes/x", &json!({ "target": "acme/none:production" }))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    // A route another one falls back to cannot go.
    let r = app.delete("/v1/routes/bot-small").send().await.unwrap();
    err(r, StatusCode::CONFLICT, "conflict").await;
    let list: RouteList = app.get_ok("/v1/routes").await;
    assert_eq!(
        list.routes.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        vec!["bot", "bot-small"]
    );
    assert_eq!(list.routes[0].revision, 2, "refused changes change nothing");
    assert_eq!(list.routes[0].spec.regions, None);
    let r = app.delete("/v1/routes/bot").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.delete("/v1/routes/bot").send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    let types = event_types(&app).await;
    assert_eq!(types.iter().filter(|t| *t == "route.set").count(), 3);
    assert_eq!(types.iter().filter(|t| *t == "route.removed").count(), 1);
    let page: EventList = app.get_ok("/v1/events?type=route.set").await;
    assert_eq!(page.events[0].subject, "route/bot");
    assert_eq!(page.events[0].model, None, "route events concern no model");
    assert!(app.audit_all().await.iter().any(|e| e.action == "route.delete"));
}

#[tokio::test]
async fn snapshot_follows_stages_aliases_with_previous_production_and_canary() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    let v1 = app.sealed_version("acme/bot", b"one").await;
    let v2 = app.sealed_version("acme/bot", b"two").await;
    let v3 = app.sealed_version("acme/bot", b"three").await;
    deploy(&app, "acme/bot", v1, "eu-west", "http://127.0.0.1:8000").await;
    deploy(&app, "acme/bot", v1, "us-east", "http://127.1.0.1:8000").await;
    deploy(&app, "acme/bot", v2, "eu-west", "http://127.0.0.2:8000").await;
    deploy(&app, "acme/bot", v3, "eu-west", "http://127.0.0.3:8000").await;

    // No production yet: the route has nothing to serve and is left out.
    set_route(&app, "bot", &json!({ "target": "acme/bot:production" })).await;
    let s = snapshot(&app).await;
    assert!(s.route("bot").is_none(), "{s:?}");
    let g0 = s.generation;

    promote(&app, "acme/bot", v1).await;
    let s = snapshot(&app).await;
    assert!(s.generation > g0);
    assert_eq!(versions_of(&s, "bot"), vec![format!("acme/bot/{v1}")]);
    assert_eq!(s.route("bot").unwrap().targets.len(), 2, "all regions");
    assert!(s.route("bot").unwrap().fallbacks.is_empty());

    // v2 replaces v1: v1 becomes the automatic fallback tier.
    promote(&app, "acme/bot", v2).await;
    let s = snapshot(&app).await;
    assert_eq!(versions_of(&s, "bot"), vec![format!("acme/bot/{v2}")]);
    let bot = s.route("bot").unwrap();
    assert_eq!(bot.fallbacks, vec!["bot~previous".to_owned()]);
    assert_eq!(versions_of(&s, "bot~previous"), vec![format!("acme/bot/{v1}")]);

    // Alias routes follow the alias; a canary splits between two versions.
    let r = app
        .put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": v2 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = app
        .put_json(
            "/v1/models/acme/bot/aliases/challenger",
            &json!({ "version": v3 }),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    set_route(
        &app,
        "bot-ab",
        &json!({ "target": "acme/bot@champion", "canary": {"alias": "challenger", "percent": 5},
                 "fallbacks": ["bot"], "timeouts": {"deadline_ms": 5000} }),
    )
    .await;
    let s = snapshot(&app).await;
    let ab = s.route("bot-ab").unwrap();
    assert_eq!(
        versions_of(&s, "bot-ab"),
        vec![format!("acme/bot/{v2}"), format!("acme/bot/{v3}")]
    );
    let split: Vec<(String, u32)> = ab
        .split
        .iter()
        .map(|p| (p.model_version.clone(), p.weight))
        .collect();
    assert_eq!(
        split,
        vec![(format!("acme/bot/{v2}"), 95), (format!("acme/bot/{v3}"), 5)]
    );
    assert_eq!(ab.fallbacks, vec!["bot".to_owned()]);
    assert_eq!(ab.timeouts.deadline_ms, 5000);
    assert_eq!(ab.timeouts.connect_ms, 1000, "defaults for the rest");

    // Moving the alias moves the route.
    let r = app
        .put_json("/v1/models/acme/bot/aliases/champion", &json!({ "version": v3 }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let s = snapshot(&app).await;
    assert_eq!(
        versions_of(&s, "bot-ab"),
        vec![format!("acme/bot/{v3}")],
        "canary = champion: no split"
    );
    assert!(s.route("bot-ab").unwrap().split.is_empty());

    // Removing the previous version's deployments removes the fallback tier.
    let deps: DeploymentList = app.get_ok("/v1/deployments?model=acme/bot").await;
    for d in deps.deployments.iter().filter(|d| d.version == v1) {
        let r = app
            .delete(&format!("/v1/deployments/{}", d.id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
    let s = snapshot(&app).await;
    assert!(s.route("bot~previous").is_none());
    assert!(s.route("bot").unwrap().fallbacks.is_empty());
}

#[tokio::test]
async fn long_poll_wakes_on_promotion_and_times_out_with_304() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    let v1 = app.sealed_version("acme/bot", b"one").await;
    let v2 = app.sealed_version("acme/bot", b"two").await;
    deploy(&app, "acme/bot", v1, "eu-west", "http://127.0.0.1:8000").await;
    deploy(&app, "acme/bot", v2, "eu-west", "http://127.0.0.2:8000").await;
    promote(&app, "acme/bot", v1).await;
    set_route(&app, "bot", &json!({ "target": "acme/bot:production" })).await;

    let r = app.get("/v1/routing/snapshot").send().await.unwrap();
    let tag = crate::app::etag(&r);
    let s: RoutingSnapshot = ok(r, StatusCode::OK).await;
    assert_eq!(tag, format!("\"{}\"", s.digest));

    // If-None-Match with the current digest: 304 at once.
    let r = app
        .get("/v1/routing/snapshot")
        .header("if-none-match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Nothing changes: 304 once the wait is over.
    let started = Instant::now();
    let r = app
        .get(&format!(
            "/v1/routing/snapshot?wait=1&after_generation={}",
            s.generation
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A promotion wakes a waiting watcher; it follows generations (every change, the move to
    // staging included) until the route serves the new version, as a router does.
    let watcher = async {
        let mut after = s.generation;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "the promotion never reached the watcher"
            );
            let url = format!("/v1/routing/snapshot?wait=30&after_generation={after}");
            let next: RoutingSnapshot = ok(app.get(&url).send().await.unwrap(), StatusCode::OK).await;
            assert!(next.generation > after);
            next.validate().unwrap();
            if versions_of(&next, "bot") == vec![format!("acme/bot/{v2}")] {
                return next;
            }
            after = next.generation;
        }
    };
    let promoter = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        promote(&app, "acme/bot", v2).await;
    };
    let started = Instant::now();
    let (next, ()) = tokio::join!(watcher, promoter);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        next.route("bot").unwrap().fallbacks,
        vec!["bot~previous".to_owned()]
    );

    // Bad parameters are refused.
    let r = app.get("/v1/routing/snapshot?wait=9999").send().await.unwrap();
    err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
    let r = app.get("/v1/routing/snapshot?bogus=1").send().await.unwrap();
    err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
}

#[tokio::test]
async fn a_routes_region_order_and_health_settings_are_compiled_into_the_snapshot() {
    let app = spawn_app().await;
    app.create_model("acme/bot").await;
    let v1 = app.sealed_version("acme/bot", b"one").await;
    promote(&app, "acme/bot", v1).await;
    deploy(&app, "acme/bot", v1, "ap-south", "http://127.0.0.3:8000").await;
    deploy(&app, "acme/bot", v1, "eu-west", "http://127.0.0.1:8000").await;
    let r = set_route(
        &app,
        "bot",
        &json!({
            "target": "acme/bot:production",
            "regions": { "order": ["eu-west", "us-east"], "local": "listed" },
            "timeouts": { "stream_idle_ms": 1500 },
            "health": { "failure_rate": { "window_ms": 5000, "min_requests": 10, "failure_percent": 30 } },
        }),
    )
    .await;
    let regions = r.spec.regions.clone().unwrap();
    assert_eq!(regions.order, vec!["eu-west", "us-east"]);
    assert_eq!(regions.local, ballast_api::routing::LocalRegionPolicy::Listed);
    let s = snapshot(&app).await;
    let route = s.route("bot").unwrap();
    assert_eq!(route.regions, r.spec.regions);
    assert_eq!(route.timeouts.stream_idle_ms, Some(1500));
    let f = route.health.failure_rate.clone().unwrap();
    assert_eq!((f.window_ms, f.min_requests, f.failure_percent), (5000, 10, 30));

    // Without the fields: nothing in the snapshot (each router's own region first, router-wide
    // health settings), and an older snapshot's digest rules are unchanged.
    set_route(&app, "bot", &json!({ "target": "acme/bot:production" })).await;
    let s = snapshot(&app).await;
    let route = s.route("bot").unwrap();
    assert_eq!(route.regions, None);
    assert_eq!(route.timeouts.stream_idle_ms, None);
    assert_eq!(route.health.failure_rate, None);
    let text = app
        .get("/v1/routing/snapshot")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("stream_idle_ms") && !text.contains("failure_rate") && !text.contains("\"order\""),
        "{text}"
    );
}
