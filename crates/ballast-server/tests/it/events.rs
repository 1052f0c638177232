//! Events and webhooks: deliveries to real HTTP receivers (retries, signatures, stable ids,
//! filters, dead deliveries and redelivery, isolation from a dead receiver under load, resume
//! after a restart) and the change feed (pages, type filters, SSE resume without gaps or repeats).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus, Uri};
use axum::response::{IntoResponse, Response as AxResponse};
use ballast_api::events::{is_event_type, Delivery, DeliveryList, DeliveryStatus, Event, EventList, Webhook};
use futures_util::{Stream, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use crate::app::{err, ok, spawn_app, spawn_app_with, TestApp};

/// Short timeouts and back-off so retries happen within a test's time.
fn fast(c: &mut ballast_server::Config) {
    c.webhook_timeout_secs = 1;
    c.webhook_retry_base_ms = 20;
    c.webhook_max_backoff_secs = 1;
}

// ---------------------------------------------------------------------------------------------
// A scripted webhook receiver.

/// What the receiver answers to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// Answer at once with this status.
    Status(u16),
    /// Answer only after 10 s (well past the dispatcher's timeout).
    Hang,
    /// Answer 200 at once with an endless body.
    Endless,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
    answer: Answer,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn delivery(&self) -> u64 {
        self.header("x-ballast-delivery")
            .parse()
            .expect("x-ballast-delivery is a number")
    }

    fn event_id(&self) -> u64 {
        self.json()["id"].as_u64().expect("event id")
    }

    /// Whether it was answered 2xx (the dispatcher saw it delivered).
    fn accepted(&self) -> bool {
        match self.answer {
            Answer::Status(s) => (200..300).contains(&s),
            Answer::Endless => true,
            Answer::Hang => false,
        }
    }
}

struct Script {
    first: VecDeque<Answer>,
    default: Answer,
    hits: Vec<Hit>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Script>>);

/// A small axum server recording every request and answering as scripted: the `first`
/// answers in order, then `default`.
struct Receiver {
    base: String,
    shared: Shared,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> AxResponse {
    let answer = {
        let mut g = s.0.lock().unwrap();
        let a = g.first.pop_front().unwrap_or(g.default);
        g.hits.push(Hit {
            path: uri.path().to_owned(),
            headers,
            body,
            answer: a,
            at: Instant::now(),
        });
        a
    };
    match answer {
        Answer::Status(code) => (AxStatus::from_u16(code).unwrap(), format!("answer {code}")).into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            (AxStatus::INTERNAL_SERVER_ERROR, "too late").into_response()
        }
        Answer::Endless => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let body =
                futures_util::stream::repeat_with(move || Ok::<_, std::convert::Infallible>(chunk.clone()));
            (AxStatus::OK, axum::body::Body::from_stream(body)).into_response()
        }
    }
}

impl Receiver {
    async fn start(default: Answer) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(l, default, &[])
    }

    fn serve(listener: TcpListener, default: Answer, first: &[Answer]) -> Self {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Shared(Arc::new(Mutex::new(Script {
            first: first.iter().copied().collect(),
            default,
            hits: Vec::new(),
        })));
        let router = axum::Router::new().fallback(receive).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { base, shared, task }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set_default(&self, a: Answer) {
        self.shared.0.lock().unwrap().default = a;
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.0.lock().unwrap().hits.clone()
    }

    /// Event ids answered 2xx.
    fn accepted_events(&self) -> BTreeSet<u64> {
        self.hits()
            .iter()
            .filter(|h| h.accepted())
            .map(Hit::event_id)
            .collect()
    }
}

/// A port bound but not listening: connections to it are refused until `listen`.
struct Reserved {
    socket: TcpSocket,
    port: u16,
}

impl Reserved {
    fn new() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        Self { socket, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn listen(self, default: Answer, first: &[Answer]) -> Receiver {
        Receiver::serve(self.socket.listen(1024).unwrap(), default, first)
    }
}

/// A port that accepts connections and never answers. Returns the URL and the accept count.
async fn black_hole() -> (String, Arc<AtomicUsize>, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hole", l.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (url, accepted, task)
}

// ---------------------------------------------------------------------------------------------
// API shortcuts.

async fn create_hook(app: &TestApp, body: Value) -> Webhook {
    let r = app.post("/v1/webhooks", &body).send().await.unwrap();
    ok(r, StatusCode::CREATED).await
}

async fn deliveries(app: &TestApp, hook: u64, query: &str) -> Vec<Delivery> {
    let l: DeliveryList = app
        .get_ok(&format!("/v1/webhooks/{hook}/deliveries{query}"))
        .await;
    l.deliveries
}

async fn delivery(app: &TestApp, hook: u64, id: u64) -> Delivery {
    app.get_ok(&format!("/v1/webhooks/{hook}/deliveries/{id}")).await
}

async fn redeliver(app: &TestApp, hook: u64, id: u64) -> reqwest::Response {
    app.req(
        Method::POST,
        &format!("/v1/webhooks/{hook}/deliveries/{id}/redeliver"),
    )
    .send()
    .await
    .unwrap()
}

/// The whole feed after `after`, restricted to `types` (all when empty).
async fn feed(app: &TestApp, after: u64, types: &[&str]) -> Vec<Event> {
    feed_paged(app, after, types, 1000).await
}

async fn feed_paged(app: &TestApp, mut after: u64, types: &[&str], limit: u32) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        let mut q = format!("/v1/events?after={after}&limit={limit}");
        for t in types {
            q += &format!("&type={t}");
        }
        let page: EventList = app.get_ok(&q).await;
        if page.events.is_empty() {
            assert_eq!(page.next_after, after, "an empty page keeps next_after");
            return out;
        }
        assert!(page.events.len() <= limit as usize);
        assert_eq!(page.next_after, page.events.last().unwrap().id);
        after = page.next_after;
        out.extend(page.events);
    }
}

async fn last_event_id(app: &TestApp) -> u64 {
    feed(app, 0, &[]).await.last().map_or(0, |e| e.id)
}

/// Polls `f` until it yields a value, failing after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until delivery `id` of `hook` has `status`, and returns it with its attempts.
async fn wait_status(app: &TestApp, hook: u64, id: u64, status: DeliveryStatus, limit: Duration) -> Delivery {
    wait_for(
        limit,
        &format!("delivery {id} of webhook {hook} {status:?}"),
        || async move {
            let d = delivery(app, hook, id).await;
            (d.status == status).then_some(d)
        },
    )
    .await
}

/// Checks `x-ballast-signature` against `secret` and the timestamp's freshness.
fn verify_signature(secret: &str, hit: &Hit) {
    let ts = hit.header("x-ballast-timestamp");
    let sig = hit
        .header("x-ballast-signature")
        .strip_prefix("sha256=")
        .unwrap_or_else(|| panic!("signature header {:?}", hit.header("x-ballast-signature")));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&hit.body);
    mac.verify_slice(&hex::decode(sig).unwrap())
        .expect("x-ballast-signature verifies");
    let ts: u64 = ts.parse().expect("timestamp is Unix seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ts.abs_diff(now) < 300, "timestamp {ts} is not current ({now})");
}

// ---------------------------------------------------------------------------------------------
// 1. Retries.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_receiver_gets_the_delivery_once_with_stable_id_and_valid_signature() {
    let app = spawn_app_with(fast).await;
    let port = Reserved::new();
    let secret = "s3cret-s3cret-s3cret-42";
    let hook = create_hook(
        &app,
        json!({ "url": port.url("/hook"), "events": ["model.created"], "secret": secret }),
    )
    .await;
    assert_eq!(hook.secret.as_deref(), Some(secret));
    app.create_model("retry/one").await;
    // Connection refused, at least twice.
    let first = wait_for(Duration::from_secs(10), "two refused attempts", || async {
        deliveries(&app, hook.id, "")
            .await
            .into_iter()
            .find(|d| d.attempt_count >= 2)
    })
    .await;
    assert_eq!(first.status, DeliveryStatus::Pending);
    assert_eq!(first.event_type, "model.created");
    // Then: a hang past the timeout, a 500, and finally 200.
    let rx = port.listen(Answer::Status(200), &[Answer::Hang, Answer::Status(500)]);
    let d = wait_status(
        &app,
        hook.id,
        first.id,
        DeliveryStatus::Delivered,
        Duration::from_secs(20),
    )
    .await;

    let hits = rx.hits();
    let answers: Vec<Answer> = hits.iter().map(|h| h.answer).collect();
    assert_eq!(
        answers,
        [Answer::Hang, Answer::Status(500), Answer::Status(200)],
        "exactly one accepted attempt after the hang and the 500"
    );
    let event = feed(&app, 0, &["model.created"]).await.pop().unwrap();
    for h in &hits {
        assert_eq!(h.path, "/hook");
        assert_eq!(h.delivery(), d.id, "the same delivery id on every attempt");
        assert_eq!(h.header("x-ballast-event"), h.json()["type"]);
        assert_eq!(h.header("x-ballast-event"), "model.created");
        assert!(h.header("content-type").starts_with("application/json"));
        verify_signature(secret, h);
        assert_eq!(
            h.json(),
            serde_json::to_value(&event).unwrap(),
            "the body is the feed's event"
        );
    }

    // Every attempt is kept: refusals, the timeout, the 500, the success.
    assert_eq!(d.attempt_count as usize, d.attempts.len());
    assert!(d.delivered_at.is_some() && d.next_attempt_at.is_none());
    let n = d.attempts.len();
    assert!(n >= 5, "{:#?}", d.attempts);
    for a in &d.attempts[..n - 3] {
        assert_eq!(a.status, None, "{a:?}");
        assert!(a.error.as_deref().is_some_and(|e| e.contains("connect")), "{a:?}");
    }
    let (hang, five, good) = (&d.attempts[n - 3], &d.attempts[n - 2], &d.attempts[n - 1]);
    assert_eq!(hang.status, None);
    assert!(
        hang.error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{hang:?}"
    );
    assert!(hang.latency_ms >= 900, "{hang:?}");
    assert_eq!(five.status, Some(500));
    assert_eq!(five.error, None);
    assert_eq!(five.response_snippet.as_deref(), Some("answer 500"));
    assert_eq!(good.status, Some(200));
    assert_eq!(good.response_snippet.as_deref(), Some("answer 200"));
    assert!(good.latency_ms < 900, "{good:?}");
    let w: Webhook = app.get_ok(&format!("/v1/webhooks/{}", hook.id)).await;
    assert_eq!((w.pending, w.dead), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// 2. Filters and the event shape.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filters_select_events_and_the_unfiltered_hook_gets_every_change_in_the_documented_shape() {
    let app = spawn_app_with(fast).await;
    let (ra, rb, rc) = (
        Receiver::start(Answer::Status(200)).await,
        Receiver::start(Answer::Status(204)).await,
        Receiver::start(Answer::Status(200)).await,
    );
    let stage_ab = create_hook(
        &app,
        json!({ "url": ra.url("/a"), "events": ["stage_transition.completed"], "model": "a/b" }),
    )
    .await;
    let ns_a = create_hook(&app, json!({ "url": rb.url("/b"), "namespace": "a" })).await;
    let all = create_hook(&app, json!({ "url": rc.url("/c"), "description": "everything" })).await;
    assert!(stage_ab.secret.as_deref().is_some_and(|s| s.len() >= 16));
    // The unfiltered hook subscribes from its own creation event on.
    let created = feed(&app, 0, &["webhook.created"]).await;
    assert_eq!(created.len(), 3);
    let from = created[2].id;
    assert_eq!(created[2].subject, format!("webhook/{}", all.id));

    // Changes in namespaces a and x.
    let r = app
        .post("/v1/models", &json!({ "name": "a/b" }))
        .header("x-request-id", "req-create-ab")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    app.create_model("a/c").await;
    app.create_model("x/y").await;
    let r = app
        .patch("/v1/models/a/b", &json!({ "description": "the b model" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v1 = app.sealed_version("a/b", b"one").await;
    app.set_stage("a/b", v1, "staging").await;
    app.set_stage("a/b", v1, "production").await;
    let v2 = app.sealed_version("a/b", b"two").await;
    app.set_stage("a/b", v2, "staging").await;
    let change = app.set_stage("a/b", v2, "production").await;
    assert_eq!(change.demoted, Some(v1));
    for v in [v1, v2] {
        let r = app
            .put_json("/v1/models/a/b/aliases/champion", &json!({ "version": v }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = app
        .delete("/v1/models/a/b/aliases/champion")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .post("/v1/models/a/b/rollback", &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let c1 = app.sealed_version("a/c", b"c").await;
    app.set_stage("a/c", c1, "staging").await;
    let y1 = app.sealed_version("x/y", b"y").await;
    app.set_stage("x/y", y1, "staging").await;
    app.set_stage("x/y", y1, "archived").await;
    let r = app.delete("/v1/models/x/y").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let events = feed(&app, from - 1, &[]).await;
    let want_all: BTreeSet<u64> = events.iter().map(|e| e.id).collect();
    let want_stage_ab: BTreeSet<u64> = events
        .iter()
        .filter(|e| e.event_type == "stage_transition.completed" && e.model.as_deref() == Some("a/b"))
        .map(|e| e.id)
        .collect();
    let want_ns_a: BTreeSet<u64> = events
        .iter()
        .filter(|e| e.model.as_deref().is_some_and(|m| m.starts_with("a/")))
        .map(|e| e.id)
        .collect();
    assert_eq!(want_stage_ab.len(), 4, "staging and production of v1 and v2");
    assert!(want_ns_a.len() > want_stage_ab.len() && want_all.len() > want_ns_a.len());
    let types: BTreeSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "webhook.created",
        "model.created",
        "model.updated",
        "model.deleted",
        "version.created",
        "version.file_added",
        "version.sealed",
        "stage_transition.completed",
        "version.demoted",
        "version.rolled_back",
        "alias.set",
        "alias.removed",
    ] {
        assert!(types.contains(t), "no {t} event in {types:?}");
    }
    assert!(types.iter().all(|t| is_event_type(t)), "{types:?}");

    wait_for(
        Duration::from_secs(15),
        "every receiver has its events",
        || async {
            let done = ra.accepted_events().len() >= want_stage_ab.len()
                && rb.accepted_events().len() >= want_ns_a.len()
                && rc.accepted_events().len() >= want_all.len();
            done.then_some(())
        },
    )
    .await;
    assert_eq!(ra.accepted_events(), want_stage_ab);
    assert_eq!(rb.accepted_events(), want_ns_a);
    assert_eq!(rc.accepted_events(), want_all);
    // No event was sent twice (every attempt succeeded at once) and deliveries agree.
    for (rx, hook, n) in [
        (&ra, &stage_ab, want_stage_ab.len()),
        (&rb, &ns_a, want_ns_a.len()),
        (&rc, &all, want_all.len()),
    ] {
        assert_eq!(rx.hits().len(), n);
        let ids: BTreeSet<u64> = rx.hits().iter().map(Hit::delivery).collect();
        assert_eq!(ids.len(), n, "one delivery id per event");
        let listed = wait_for(Duration::from_secs(5), "deliveries recorded", || async {
            let l = deliveries(&app, hook.id, "?status=delivered&limit=1000").await;
            (l.len() == n).then_some(l)
        })
        .await;
        assert_eq!(listed.iter().map(|d| d.id).collect::<BTreeSet<_>>(), ids);
        assert!(listed.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    }

    // The shape: bodies are the feed's events, with the documented fields.
    let by_id: BTreeMap<u64, &Event> = events.iter().map(|e| (e.id, e)).collect();
    for h in rc.hits() {
        let body = h.json();
        let e = by_id[&h.event_id()];
        assert_eq!(body, serde_json::to_value(e).unwrap());
        assert_eq!(h.header("x-ballast-event"), e.event_type);
        let obj = body.as_object().unwrap();
        for k in ["id", "type", "at", "actor", "subject", "data", "request_id"] {
            assert!(obj.contains_key(k), "{k} missing in {body}");
        }
        assert!(
            obj["data"].get("before").is_some() && obj["data"].get("after").is_some(),
            "{body}"
        );
        assert!(e.at.contains('T'), "{}", e.at);
        assert!(!e.request_id.is_empty());
        verify_signature(all.secret.as_deref().unwrap(), &h);
    }
    let find = |t: &str, pred: &dyn Fn(&Event) -> bool| -> Vec<&Event> {
        events.iter().filter(|e| e.event_type == t && pred(e)).collect()
    };
    let mc = find("model.created", &|e| e.subject == "a/b")[0];
    assert_eq!(mc.model.as_deref(), Some("a/b"));
    assert_eq!((mc.version, mc.alias.as_deref()), (None, None));
    assert_eq!(mc.actor, "tester");
    assert_eq!(mc.request_id, "req-create-ab");
    assert_eq!(mc.data["before"], Value::Null);
    assert_eq!(mc.data["after"]["revision"], 1);
    let vc = find("version.created", &|e| e.model.as_deref() == Some("a/b"))[0];
    assert_eq!((vc.subject.as_str(), vc.version), ("a/b/1", Some(1)));
    let fa = find("version.file_added", &|e| e.subject == "a/b/1")[0];
    assert_eq!(fa.data["after"]["path"], "model.bin");
    let sealed = find("version.sealed", &|e| e.subject == "a/b/2")[0];
    assert_eq!(sealed.data["before"]["state"], "draft");
    assert_eq!(sealed.data["after"]["state"], "sealed");
    let promo = find("stage_transition.completed", &|e| {
        e.subject == "a/b/2" && e.data["after"]["stage"] == "production"
    })[0];
    assert_eq!(promo.data["before"]["stage"], "staging");
    assert_eq!(promo.data["after"]["replaced"], 1);
    let demoted = find("version.demoted", &|e| e.subject == "a/b/1")[0];
    assert_eq!(demoted.data["before"]["stage"], "production");
    assert_eq!(demoted.data["after"]["stage"], "archived");
    assert!(demoted.id < promo.id, "the demotion precedes the promotion");
    let sets = find("alias.set", &|_| true);
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].subject, "a/b@champion");
    assert_eq!(sets[0].alias.as_deref(), Some("champion"));
    assert_eq!(sets[0].model.as_deref(), Some("a/b"));
    assert_eq!(sets[0].version, None);
    assert_eq!(sets[0].data["before"], Value::Null);
    assert_eq!(sets[0].data["after"]["version"], v1);
    assert_eq!(sets[1].data["before"]["version"], v1);
    assert_eq!(sets[1].data["after"]["version"], v2);
    let removed = find("alias.removed", &|_| true)[0];
    assert_eq!(removed.data["after"], Value::Null);
    let rolled = find("version.rolled_back", &|_| true)[0];
    assert_eq!(rolled.subject, "a/b/1");
    assert_eq!(rolled.data["after"]["stage"], "production");
    let deleted = find("model.deleted", &|_| true)[0];
    assert_eq!(
        (deleted.subject.as_str(), deleted.model.as_deref()),
        ("x/y", Some("x/y"))
    );
    let wc = find("webhook.created", &|_| true)[0];
    assert_eq!(wc.model, None);
    assert!(
        wc.data["after"].get("secret").is_none(),
        "no secret in events: {}",
        wc.data
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Dead deliveries, redelivery, test pings.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_and_expired_deliveries_die_and_redeliver_by_hand() {
    let app = spawn_app_with(|c| {
        fast(c);
        c.webhook_give_up_after_secs = 1;
    })
    .await;
    let refuse = Receiver::start(Answer::Status(400)).await;
    let flaky = Receiver::start(Answer::Status(503)).await;
    let busy = Receiver::start(Answer::Status(200)).await;
    busy.shared
        .0
        .lock()
        .unwrap()
        .first
        .extend([Answer::Status(429), Answer::Status(408)]);
    let everything = Receiver::start(Answer::Status(200)).await;
    let chatty = Receiver::start(Answer::Endless).await;
    let only = json!(["model.created"]);
    let h400 = create_hook(&app, json!({ "url": refuse.url("/"), "events": only })).await;
    let h503 = create_hook(&app, json!({ "url": flaky.url("/"), "events": only })).await;
    let h429 = create_hook(&app, json!({ "url": busy.url("/"), "events": only })).await;
    let hall = create_hook(&app, json!({ "url": everything.url("/") })).await;
    let hchat = create_hook(&app, json!({ "url": chatty.url("/"), "events": only })).await;
    app.create_model("dead/one").await;
    let one = |hook: u64| {
        let app = &app;
        async move {
            wait_for(Duration::from_secs(5), "the delivery exists", || async move {
                deliveries(app, hook, "").await.pop()
            })
            .await
        }
    };

    // 400: final at once.
    let d400 = one(h400.id).await;
    let d400 = wait_status(
        &app,
        h400.id,
        d400.id,
        DeliveryStatus::Dead,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(d400.attempt_count, 1);
    assert_eq!(d400.attempts.len(), 1);
    assert_eq!(d400.attempts[0].status, Some(400));
    assert_eq!(d400.attempts[0].response_snippet.as_deref(), Some("answer 400"));
    assert_eq!(refuse.hits().len(), 1);
    // 429 and 408 are retried.
    let d429 = one(h429.id).await;
    let d429 = wait_status(
        &app,
        h429.id,
        d429.id,
        DeliveryStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;
    let statuses: Vec<Option<u16>> = d429.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(429), Some(408), Some(200)]);
    // An endless answer is read only as far as the snippet: the attempt does not last until
    // the timeout.
    let dchat = one(hchat.id).await;
    let dchat = wait_status(
        &app,
        hchat.id,
        dchat.id,
        DeliveryStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(dchat.attempts.len(), 1);
    let a = &dchat.attempts[0];
    assert_eq!(a.status, Some(200));
    assert!(a.latency_ms < 900, "{} ms", a.latency_ms);
    assert_eq!(a.response_snippet.as_deref(), Some("x".repeat(512).as_str()));
    // 503: retried until the deadline, then dead.
    let d503 = one(h503.id).await;
    let d503 = wait_status(
        &app,
        h503.id,
        d503.id,
        DeliveryStatus::Dead,
        Duration::from_secs(15),
    )
    .await;
    assert!(d503.attempts.len() >= 3, "{:#?}", d503.attempts);
    assert!(d503.attempts.iter().all(|a| a.status == Some(503)));
    let hits = flaky.hits();
    assert_eq!(hits.len(), d503.attempts.len());
    let span = hits.last().unwrap().at - hits[0].at;
    assert!(
        span >= Duration::from_millis(700),
        "gave up after {span:?}, before the deadline"
    );
    assert!(hits.iter().all(|h| h.delivery() == d503.id));
    let w: Webhook = app.get_ok(&format!("/v1/webhooks/{}", h503.id)).await;
    assert_eq!((w.pending, w.dead), (0, 1));
    let dead = deliveries(&app, h503.id, "?status=dead").await;
    assert_eq!(dead.len(), 1);
    assert!(deliveries(&app, h503.id, "?status=pending").await.is_empty());

    // Redeliver by hand once the receivers are fixed.
    refuse.set_default(Answer::Status(200));
    flaky.set_default(Answer::Status(200));
    for (hook, d) in [(h400.id, d400.id), (h503.id, d503.id)] {
        let back: Delivery = ok(redeliver(&app, hook, d).await, StatusCode::ACCEPTED).await;
        assert_eq!(back.status, DeliveryStatus::Pending);
        assert_eq!(back.id, d);
        let done = wait_status(&app, hook, d, DeliveryStatus::Delivered, Duration::from_secs(10)).await;
        assert_eq!(done.attempts.last().unwrap().status, Some(200));
    }
    let hits = refuse.hits();
    assert_eq!(hits.len(), 2);
    assert!(hits.iter().all(|h| h.delivery() == d400.id));
    assert_eq!(hits[0].body, hits[1].body, "a redelivery sends the same event");
    let trail = app.audit_all().await;
    assert_eq!(
        trail.iter().filter(|e| e.action == "webhook.redeliver").count(),
        2
    );

    // `test` pings that webhook only.
    let r = app
        .req(Method::POST, &format!("/v1/webhooks/{}/test", h400.id))
        .send()
        .await
        .unwrap();
    let ping: Delivery = ok(r, StatusCode::ACCEPTED).await;
    assert_eq!(
        (ping.event_type.as_str(), ping.webhook_id),
        ("webhook.ping", h400.id)
    );
    wait_status(
        &app,
        h400.id,
        ping.id,
        DeliveryStatus::Delivered,
        Duration::from_secs(10),
    )
    .await;
    let last = refuse.hits().pop().unwrap();
    assert_eq!(last.header("x-ballast-event"), "webhook.ping");
    assert_eq!(last.delivery(), ping.id);
    assert_eq!(last.json()["subject"], format!("webhook/{}", h400.id));
    verify_signature(h400.secret.as_deref().unwrap(), &last);
    for hook in [&h503, &h429, &hall] {
        let l = deliveries(&app, hook.id, "?limit=1000").await;
        assert!(
            l.iter().all(|d| d.event_type != "webhook.ping"),
            "webhook {} got a ping",
            hook.id
        );
    }
    assert!(everything
        .hits()
        .iter()
        .all(|h| h.header("x-ballast-event") != "webhook.ping"));
}

// ---------------------------------------------------------------------------------------------
// 4. A dead receiver does not delay a healthy one, nor the API.

/// `n` alias moves on `model` with `conc` clients; returns each request's latency, sorted.
async fn alias_burst(app: &TestApp, model: &str, n: usize, conc: usize) -> Vec<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (client, next) = (app.client.clone(), Arc::clone(&next));
        let base = app.url(&format!("/v1/models/{model}/aliases"));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return lat;
                }
                let started = Instant::now();
                let r = client
                    .put(format!("{base}/a{}", i % 20))
                    .json(&json!({ "version": 1 + (i / 20) % 2 }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let _ = r.bytes().await;
                lat.push(started.elapsed());
                assert_eq!(status, StatusCode::OK);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all.len(), n);
    all
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_receiver_delays_neither_a_healthy_one_nor_the_api() {
    const N: usize = 1000;
    const CONC: usize = 16;
    let app = spawn_app_with(fast).await;
    app.create_model("load/m").await;
    app.sealed_version("load/m", b"one").await;
    app.sealed_version("load/m", b"two").await;
    alias_burst(&app, "load/m", 100, CONC).await; // warm up
    let baseline = alias_burst(&app, "load/m", N, CONC).await;

    let (hole, hole_hits, _hole_task) = black_hole().await;
    let healthy = Receiver::start(Answer::Status(200)).await;
    let only = json!(["alias.set"]);
    let dead = create_hook(&app, json!({ "url": hole, "events": only })).await;
    let good = create_hook(&app, json!({ "url": healthy.url("/ok"), "events": only })).await;
    let from = last_event_id(&app).await;

    let started = Instant::now();
    let loaded = alias_burst(&app, "load/m", N, CONC).await;
    let burst_time = started.elapsed();
    let want: BTreeSet<u64> = feed(&app, from, &["alias.set"])
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(want.len(), N);
    wait_for(
        Duration::from_secs(30),
        "the healthy receiver has every event",
        || async { (healthy.accepted_events().len() >= N).then_some(()) },
    )
    .await;
    let all_delivered = started.elapsed();
    assert_eq!(healthy.accepted_events(), want, "no event lost");
    let hits = healthy.hits();
    let by_delivery: BTreeMap<u64, u64> = hits.iter().map(|h| (h.delivery(), h.event_id())).collect();
    assert_eq!(by_delivery.len(), N, "one delivery per event");
    assert_eq!(by_delivery.values().copied().collect::<BTreeSet<_>>(), want);
    let dupes = hits.len() - N;
    // The dead receiver is still being tried, and nothing of it reached the healthy one.
    assert!(hole_hits.load(Ordering::SeqCst) > 0);
    let w: Webhook = app.get_ok(&format!("/v1/webhooks/{}", dead.id)).await;
    assert!(w.pending > (N as u64) / 2, "dead receiver deliveries: {w:?}");
    let g: Webhook = app.get_ok(&format!("/v1/webhooks/{}", good.id)).await;
    assert_eq!(g.dead, 0);

    let (b50, b99, l50, l99) = (
        pct(&baseline, 50),
        pct(&baseline, 99),
        pct(&loaded, 50),
        pct(&loaded, 99),
    );
    eprintln!(
        "webhook isolation: {N} alias moves x{CONC} clients; baseline p50 {b50:?} p99 {b99:?} max {:?}; \
         with a dead + a healthy webhook p50 {l50:?} p99 {l99:?} max {:?}; burst took {burst_time:?}; \
         healthy receiver had all {N} after {all_delivered:?} ({dupes} duplicate attempts)",
        baseline.last().unwrap(),
        loaded.last().unwrap(),
    );
    assert!(
        l99 < b99 * 3 + Duration::from_millis(50),
        "API p99 {l99:?} with webhooks vs {b99:?} without"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Deliveries resume after a restart.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undelivered_events_are_delivered_after_a_restart() {
    let mut app = spawn_app_with(fast).await;
    let down = Reserved::new();
    let hanging = Receiver::start(Answer::Hang).await;
    let types = json!(["model.created", "version.created"]);
    let h_down = create_hook(&app, json!({ "url": down.url("/down"), "events": types })).await;
    let h_hang = create_hook(&app, json!({ "url": hanging.url("/hang"), "events": types })).await;
    app.create_model("restart/m").await;
    for i in 0..29 {
        app.create_version("restart/m", &json!({ "tags": { "i": i.to_string() } }))
            .await;
    }
    let want: BTreeSet<u64> = feed(&app, 0, &["model.created", "version.created"])
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(want.len(), 30);
    // Attempts are failing (refused) and in flight (hanging, leased) when the server stops.
    wait_for(Duration::from_secs(10), "attempts under way", || async {
        let refused = deliveries(&app, h_down.id, "?limit=1000")
            .await
            .iter()
            .any(|d| d.attempt_count > 0);
        (refused && !hanging.hits().is_empty()).then_some(())
    })
    .await;
    for hook in [&h_down, &h_hang] {
        let pending = deliveries(&app, hook.id, "?status=pending&limit=1000").await;
        assert_eq!(pending.len(), 30, "webhook {}", hook.id);
    }
    app.stop().await;

    let up = down.listen(Answer::Status(200), &[]);
    hanging.set_default(Answer::Status(200));
    let app = app.restart().await;
    let started = Instant::now();
    wait_for(
        Duration::from_secs(15),
        "every event at both receivers",
        || async { (up.accepted_events() == want && hanging.accepted_events() == want).then_some(()) },
    )
    .await;
    eprintln!(
        "restart: all 30 events at both receivers {:?} after the restart",
        started.elapsed()
    );
    for hook in [&h_down, &h_hang] {
        wait_for(
            Duration::from_secs(5),
            "deliveries recorded as delivered",
            || async {
                let l = deliveries(&app, hook.id, "?status=delivered&limit=1000").await;
                (l.len() == 30).then_some(())
            },
        )
        .await;
    }
    for h in up.hits().iter().chain(hanging.hits().iter()) {
        let secret = if h.path == "/down" {
            &h_down.secret
        } else {
            &h_hang.secret
        };
        verify_signature(secret.as_deref().unwrap(), h);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The change feed.

/// One Server-Sent Event.
#[derive(Debug)]
struct SseMsg {
    id: u64,
    event: String,
    data: Value,
}

/// Reads the raw SSE stream.
struct SseClient {
    stream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
}

impl SseClient {
    async fn connect(app: &TestApp, query: &str, last_id: Option<u64>) -> Self {
        let mut req = app.get(&format!("/v1/events/stream{query}"));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id.to_string());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Self {
            stream: Box::pin(r.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when none comes within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<SseMsg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(block).unwrap();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse::<u64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                match id {
                    Some(id) => {
                        let data = serde_json::from_str(&data).unwrap();
                        return Some(SseMsg { id, event, data });
                    }
                    None => continue, // a keep-alive comment
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) | Ok(None) => return None,
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => panic!("event stream failed: {e}"),
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<SseMsg> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("only {} of {n} events arrived", out.len()));
            out.push(m);
        }
        out
    }
}

async fn versions(app: &TestApp, model: &str, n: usize, conc: usize) {
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (client, url) = (
            app.client.clone(),
            app.url(&format!("/v1/models/{model}/versions")),
        );
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(conc) {
                let r = client
                    .post(&url)
                    .json(&json!({ "tags": { "i": i.to_string() } }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn check_msgs(msgs: &[SseMsg], after: u64, feed: &BTreeMap<u64, Event>) {
    let mut prev = after;
    for m in msgs {
        assert!(m.id > prev, "ids increase: {} after {prev}", m.id);
        prev = m.id;
        let e = &feed[&m.id];
        assert_eq!(m.event, e.event_type);
        assert_eq!(m.data, serde_json::to_value(e).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_change_feed_pages_filters_and_resumes_without_gaps_or_repeats() {
    let mut app = spawn_app().await;
    app.create_model("feed/m").await;
    versions(&app, "feed/m", 120, 4).await;
    let v = app.sealed_version("feed/m", b"x").await;
    app.set_stage("feed/m", v, "staging").await;

    // Pages: small pages give the same events as one big one, ids strictly increasing.
    let small = feed_paged(&app, 0, &[], 7).await;
    let big = feed(&app, 0, &[]).await;
    assert_eq!(small, big);
    assert!(small.windows(2).all(|w| w[0].id < w[1].id));
    let setup = small
        .iter()
        .filter(|e| crate::app::is_access_setup(&e.event_type))
        .count();
    assert_eq!(small.len(), setup + 1 + 120 + 3 + 1);
    // Every committed change is there, once: each audit entry has its event.
    let trail = app.audit_everything().await;
    assert_eq!(trail.len(), small.len());
    for (a, e) in trail.iter().zip(&small) {
        assert_eq!(e.data["audit_id"], a.id, "{e:?} vs {a:?}");
        assert_eq!(
            (&e.subject, &e.actor, &e.request_id),
            (&a.target, &a.actor, &a.request_id)
        );
        assert_eq!((&e.data["before"], &e.data["after"]), (&a.before, &a.after));
    }
    // Type filters, alone, repeated, and with after=.
    let created = feed(&app, 0, &["model.created"]).await;
    assert_eq!(created.len(), 1);
    let two = feed_paged(&app, 0, &["model.created", "version.sealed"], 1).await;
    assert_eq!(
        two.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["model.created", "version.sealed"]
    );
    let mid = small[60].id;
    let tail = feed(&app, mid, &["version.created"]).await;
    let want: Vec<&Event> = small
        .iter()
        .filter(|e| e.id > mid && e.event_type == "version.created")
        .collect();
    assert_eq!(tail.iter().collect::<Vec<_>>(), want);
    let end = small.last().unwrap().id;
    let page: EventList = app.get_ok(&format!("/v1/events?after={end}")).await;
    assert!(page.events.is_empty());
    assert_eq!(page.next_after, end);
    let page: EventList = app.get_ok("/v1/events").await;
    assert_eq!(page.events.len(), 100, "default page size");
    let r = app
        .get("/v1/events?limit=1")
        .header("last-event-id", small[0].id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok::<EventList>(r, StatusCode::OK).await.events[0].id,
        small[1].id,
        "Last-Event-ID resumes a page"
    );
    let r = app
        .get(&format!("/v1/events?after={mid}&limit=1"))
        .header("last-event-id", end.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        ok::<EventList>(r, StatusCode::OK).await.events[0].id,
        small[61].id,
        "after= wins on pages"
    );
    assert_eq!(page.events[0].id, small[0].id);

    // SSE: read 20 of the 30 changes made while connected, disconnect, 10 more changes, resume
    // from the last id seen: exactly the other 20, then the next change.
    let start = end;
    let mut sse = SseClient::connect(&app, &format!("?after={start}"), None).await;
    let writer = {
        let app_client = (app.client.clone(), app.url("/v1/models/feed/m/versions"));
        tokio::spawn(async move {
            for i in 0..30 {
                let r = app_client
                    .0
                    .post(&app_client.1)
                    .json(&json!({ "tags": { "sse": i.to_string() } }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        })
    };
    let first = sse.take(20).await;
    drop(sse);
    writer.await.unwrap();
    versions(&app, "feed/m", 10, 2).await;
    let last_seen = first.last().unwrap().id;
    // As an EventSource does: the same URL again, with the last id seen in Last-Event-ID.
    let mut sse = SseClient::connect(&app, &format!("?after={start}"), Some(last_seen)).await;
    let rest = sse.take(20).await;
    app.create_model("feed/marker").await;
    let marker = sse.next(Duration::from_secs(10)).await.expect("the marker event");
    assert_eq!(
        (marker.event.as_str(), marker.data["subject"].as_str()),
        ("model.created", Some("feed/marker"))
    );
    let all: BTreeMap<u64, Event> = feed(&app, start, &[])
        .await
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    assert_eq!(all.len(), 41);
    check_msgs(&first, start, &all);
    check_msgs(&rest, last_seen, &all);
    let seen: Vec<u64> = first.iter().chain(&rest).chain([&marker]).map(|m| m.id).collect();
    assert_eq!(seen, all.keys().copied().collect::<Vec<_>>(), "no gap, no repeat");
    drop(sse);

    // ?after= resume with a type filter.
    let mut sse = SseClient::connect(&app, &format!("?after={last_seen}&type=model.created"), None).await;
    let m = sse.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(m.id, marker.id);
    app.create_model("feed/marker2").await;
    versions(&app, "feed/m", 3, 1).await;
    app.create_model("feed/marker3").await;
    let ms = sse.take(2).await;
    assert_eq!(ms[0].data["subject"], "feed/marker2");
    assert_eq!(ms[1].data["subject"], "feed/marker3");
    assert!(ms.iter().all(|m| m.event == "model.created"));

    // An open stream does not hold up a shutdown: it ends.
    let started = Instant::now();
    app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(
        sse.next(Duration::from_secs(5)).await.is_none(),
        "the stream ends"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Bad input.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_webhook_and_feed_requests_are_refused_with_the_field_at_fault() {
    let app = spawn_app().await;
    let good = "http://127.0.0.1:9/hook";
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({ "url": "ftp://example.com/x" }), "invalid_argument", "url"),
        (json!({ "url": "not a url" }), "invalid_argument", "url"),
        (json!({ "url": "http://" }), "invalid_argument", "url"),
        (json!({ "url": "" }), "invalid_argument", "url"),
        (
            json!({ "url": "http://exa mple.com/" }),
            "invalid_argument",
            "url",
        ),
        (
            json!({ "url": good, "events": ["model.exploded"] }),
            "invalid_argument",
            "events",
        ),
        (
            json!({ "url": good, "events": ["model.created", ""] }),
            "invalid_argument",
            "events",
        ),
        (
            json!({ "url": good, "namespace": "Bad NS" }),
            "invalid_name",
            "namespace",
        ),
        (
            json!({ "url": good, "model": "nonamespace" }),
            "invalid_name",
            "model",
        ),
        (json!({ "url": good, "model": "a/B C" }), "invalid_name", "model"),
        (json!({ "url": good, "model": "a/b/c" }), "invalid_name", "model"),
        (
            json!({ "url": good, "secret": "short" }),
            "invalid_argument",
            "secret",
        ),
        (
            json!({ "url": good, "secret": "sixteen chars with spaces" }),
            "invalid_argument",
            "secret",
        ),
        (json!({ "url": good, "evnts": [] }), "invalid_json", "evnts"),
        (
            json!({ "url": good, "events": "model.created" }),
            "invalid_json",
            "",
        ),
        (json!({ "events": [] }), "invalid_json", "url"),
    ];
    for (body, code, field) in cases {
        let r = app.post("/v1/webhooks", &body).send().await.unwrap();
        let e = err(r, StatusCode::BAD_REQUEST, code).await;
        if !field.is_empty() {
            assert_eq!(e["field"], field, "{body}: {e}");
        }
    }
    let list: Vec<Webhook> = app.get_ok("/v1/webhooks").await;
    assert!(list.is_empty(), "nothing was created: {list:?}");

    // The secret is shown on create only; a generated one is long.
    let h = create_hook(
        &app,
        json!({ "url": good, "events": ["model.created"], "namespace": "ok" }),
    )
    .await;
    let secret = h.secret.clone().unwrap();
    assert!(secret.len() >= 32, "{secret}");
    let raw: Value = app.get_ok(&format!("/v1/webhooks/{}", h.id)).await;
    assert!(raw.get("secret").is_none(), "{raw}");
    let raw: Value = app.get_ok("/v1/webhooks").await;
    assert_eq!(raw.as_array().unwrap().len(), 1);
    assert!(raw[0].get("secret").is_none(), "{raw}");
    assert_eq!(raw[0]["namespace"], "ok");
    assert!(!serde_json::to_string(&app.audit_all().await)
        .unwrap()
        .contains(&secret));
    assert!(!serde_json::to_string(&feed(&app, 0, &[]).await)
        .unwrap()
        .contains(&secret));

    // Unknown ids: 404; malformed ids: 400.
    let h2 = create_hook(&app, json!({ "url": good })).await;
    let missing = [
        (Method::GET, "/v1/webhooks/999".to_owned()),
        (Method::DELETE, "/v1/webhooks/999".to_owned()),
        (Method::POST, "/v1/webhooks/999/test".to_owned()),
        (Method::GET, "/v1/webhooks/999/deliveries".to_owned()),
        (Method::GET, "/v1/webhooks/999/deliveries/1".to_owned()),
        (Method::POST, "/v1/webhooks/999/deliveries/1/redeliver".to_owned()),
        (Method::GET, format!("/v1/webhooks/{}/deliveries/999", h.id)),
        (
            Method::POST,
            format!("/v1/webhooks/{}/deliveries/999/redeliver", h.id),
        ),
    ];
    for (m, path) in missing {
        let r = app.req(m, &path).send().await.unwrap();
        err(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    for (path, field) in [
        ("/v1/webhooks/abc".to_owned(), "id"),
        ("/v1/webhooks/0".to_owned(), "id"),
        (format!("/v1/webhooks/{}/deliveries/x", h.id), "delivery"),
        (format!("/v1/webhooks/{}/deliveries?status=lost", h.id), "status"),
        (format!("/v1/webhooks/{}/deliveries?limit=0", h.id), "limit"),
        (format!("/v1/webhooks/{}/deliveries?colour=red", h.id), "colour"),
    ] {
        let e = err(
            app.get(&path).send().await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        )
        .await;
        assert_eq!(e["field"], field, "{path}");
    }

    // A pending delivery (receiver down, first retry in a second) cannot be redelivered.
    app.create_model("ok/model").await;
    let d = wait_for(Duration::from_secs(5), "a delivery", || async {
        deliveries(&app, h.id, "").await.pop()
    })
    .await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    err(
        redeliver(&app, h.id, d.id).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    // A delivery belongs to its webhook.
    let r = app
        .get(&format!("/v1/webhooks/{}/deliveries/{}", h2.id, d.id))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;

    // Bad feed queries.
    for (q, field) in [
        ("?after=x", "after"),
        ("?after=-1", "after"),
        ("?type=model.exploded", "type"),
        ("?type=model.created&type=nope", "type"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?since=3", "since"),
    ] {
        for route in ["/v1/events", "/v1/events/stream"] {
            if route.ends_with("stream") && q.starts_with("?limit") {
                continue;
            }
            let e = err(
                app.get(&format!("{route}{q}")).send().await.unwrap(),
                StatusCode::BAD_REQUEST,
                "invalid_argument",
            )
            .await;
            assert_eq!(e["field"], field, "{route}{q}");
        }
    }
    let r = app
        .get("/v1/events")
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    let e = err(r, StatusCode::BAD_REQUEST, "invalid_argument").await;
    assert_eq!(e["field"], "after");

    // Deleting a webhook removes it and its deliveries; the deletion is an event.
    let r = app
        .delete(&format!("/v1/webhooks/{}", h.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app.get(&format!("/v1/webhooks/{}", h.id)).send().await.unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = app
        .get(&format!("/v1/webhooks/{}/deliveries/{}", h.id, d.id))
        .send()
        .await
        .unwrap();
    err(r, StatusCode::NOT_FOUND, "not_found").await;
    let gone = feed(&app, 0, &["webhook.deleted"]).await;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].subject, format!("webhook/{}", h.id));
}
