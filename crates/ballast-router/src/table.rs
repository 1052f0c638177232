//! The compiled routing table: a validated snapshot turned into what a request needs (routes by
//! name and by prefix, each target's parsed base URL, the tier order of regions for this
//! router's region), linked to the runtime state that outlives a reload (target health by id,
//! retry budget and failover state by route name).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ballast_api::routing::{LocalRegionPolicy, Route, RouteKind, RouteRegions, RoutingSnapshot, Target};
use http::uri::{Authority, Scheme};

use crate::budget::RetryBudget;
use crate::failover::FailoverState;
use crate::health::{FailureEffect, FailureRatePolicy, TargetHealth};
use crate::metrics::{Counter, Handle, Histogram};

/// A target ready to be called.
#[derive(Debug)]
pub struct TargetRt {
    /// As in the snapshot.
    pub spec: Target,
    /// The route it belongs to.
    pub route: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
    /// The `Host` header sent to it (`authority`, prepared once).
    pub host: Option<http::HeaderValue>,
    /// Path of the base URL without its trailing `/` (may be empty).
    pub base_path: String,
    /// Health, kept across reloads while the id and URL stay the same.
    pub health: Arc<TargetHealth>,
    /// The operator's drain flag, kept apart from health and across reloads (by id).
    pub drain: Arc<DrainFlag>,
    /// Its metric values, looked up on first use.
    pub metrics: TargetMetrics,
    /// The `x-ballast-*` values of answers it serves: route, target, model version, region.
    pub served_by: [http::HeaderValue; 4],
}

fn header_value(s: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(s).unwrap_or_else(|_| http::HeaderValue::from_static("invalid"))
}

/// Metric values of one target used on every request.
#[derive(Debug, Default)]
pub struct TargetMetrics {
    /// `ballast_router_attempts_total{route, target, outcome="ok"}`.
    pub attempts_ok: Handle<Counter>,
    /// `ballast_router_target_latency_seconds{target}`.
    pub latency: Handle<Histogram>,
}

/// Metric values of one route used on every request.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// `ballast_router_requests_total{route, status="200"}`.
    pub requests_ok: Handle<Counter>,
    /// `ballast_router_request_duration_seconds{route}`.
    pub duration: Handle<Histogram>,
}

/// An operator's decision to take a target out of service: a drained target gets no new
/// requests (except when nothing else is left, see [`crate::select`]); requests already under
/// way finish. Independent of health: draining neither ejects nor resets anything.
#[derive(Debug, Default)]
pub struct DrainFlag(std::sync::atomic::AtomicBool);

impl DrainFlag {
    /// Whether the target is drained.
    pub fn is_drained(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drains (`true`) or returns (`false`) the target; returns the previous value.
    pub fn set(&self, drained: bool) -> bool {
        self.0.swap(drained, std::sync::atomic::Ordering::AcqRel)
    }
}

/// Per-route state that survives reloads.
#[derive(Debug, Default)]
pub struct RouteState {
    /// Retry budget.
    pub budget: RetryBudget,
    /// Region failover.
    pub failover: Mutex<FailoverState>,
    /// Held while a failure decides whether its target is ejected, so that the count of
    /// ejected targets and the ejection itself form one step for the whole route.
    pub ejection: Mutex<()>,
}

/// A route ready to serve.
#[derive(Debug)]
pub struct RouteRt {
    /// As in the snapshot.
    pub spec: Route,
    /// Its targets.
    pub targets: Vec<Arc<TargetRt>>,
    /// Regions in tier order as seen from this router: local first, then the configured
    /// failover order (the route's own `regions`, else the snapshot's), then the rest in order
    /// of appearance. With a route's `local = "listed"` order, its first listed region leads
    /// wherever the router runs.
    pub region_order: Vec<String>,
    /// Whether any target is in the first region of `region_order` (the home region that region
    /// failover protects: the router's own, unless the route's order is `listed`).
    pub has_local: bool,
    /// State kept across reloads.
    pub state: Arc<RouteState>,
    /// Its metric values, looked up on first use.
    pub metrics: RouteMetrics,
}

impl RouteRt {
    /// Records a failed attempt on one of its targets and ejects it when due, unless the
    /// route's maximum ejection share is reached. The share is checked and taken under the
    /// route's lock: failures on several threads at once never eject more than the share.
    pub fn record_failure(&self, target: &TargetRt, now: Instant) -> FailureEffect {
        let policy = &self.spec.health;
        let _decision = lock(&self.state.ejection);
        let total = self.targets.len();
        let ejected = self.targets.iter().filter(|t| t.health.is_ejected()).count();
        let share = usize::try_from(policy.max_ejection_percent).unwrap_or(100);
        let cap = (total.saturating_mul(share) / 100).max(1);
        target.health.record_failure(now, policy, ejected < cap)
    }
}

/// The state that outlives snapshots.
#[derive(Debug, Default)]
pub struct Runtime {
    health: Mutex<HashMap<String, (String, Arc<TargetHealth>)>>,
    drains: Mutex<HashMap<String, Arc<DrainFlag>>>,
    routes: Mutex<HashMap<String, Arc<RouteState>>>,
    /// The failure-rate rule given to every new target's health.
    pub failure_rate: FailureRatePolicy,
}

impl Runtime {
    /// Empty state whose new targets are judged by this failure-rate rule.
    #[must_use]
    pub fn with_failure_rate(failure_rate: FailureRatePolicy) -> Self {
        Self {
            failure_rate,
            ..Self::default()
        }
    }

    /// Every target's health, by id (for the checker and `/admin/targets`).
    pub fn health_of(&self, id: &str) -> Option<Arc<TargetHealth>> {
        lock(&self.health).get(id).map(|(_, h)| Arc::clone(h))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// FNV-1a: a fast hash for looking route names up on every request. The table's keys come from
/// the validated snapshot, not from requests, so a keyed (flooding-resistant) hash buys nothing.
#[derive(Debug, Clone, Copy)]
pub struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

type NameMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<NameHasher>>;

/// The compiled table.
#[derive(Debug)]
pub struct Table {
    /// Routes in snapshot order.
    pub routes: Vec<Arc<RouteRt>>,
    by_name: NameMap<usize>,
    /// Prefix routes, longest prefix first.
    prefixes: Vec<(String, usize)>,
}

fn parse_base(url: &str) -> Option<(Scheme, Authority, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme()?.clone();
    let authority = uri.authority()?.clone();
    let path = uri.path().trim_end_matches('/').to_owned();
    Some((scheme, authority, path))
}

/// The tier order of a route's regions for a router in `region`.
fn region_order(snapshot: &RoutingSnapshot, route: &Route, region: &str) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut add = |r: &str| {
        if !order.iter().any(|o| o == r) {
            order.push(r.to_owned());
        }
    };
    match &route.regions {
        Some(RouteRegions {
            order: listed,
            local: LocalRegionPolicy::Listed,
        }) => listed.iter().for_each(|r| add(r)),
        Some(RouteRegions {
            order: listed,
            local: LocalRegionPolicy::First,
        }) => {
            add(region);
            listed.iter().for_each(|r| add(r));
        }
        None => {
            add(region);
            if let Some(policy) = snapshot.regions.get(region) {
                policy.failover.iter().for_each(|r| add(r));
            }
        }
    }
    for t in &route.targets {
        add(&t.region);
    }
    // The router's own region is always somewhere in the order (it has no targets here when
    // a listed order leaves it out).
    add(region);
    order
}

impl Table {
    /// Compiles a validated snapshot for a router in `region`, reusing `runtime` state.
    #[must_use]
    pub fn compile(snapshot: &RoutingSnapshot, region: &str, runtime: &Runtime) -> Self {
        let mut health = lock(&runtime.health);
        let mut drains = lock(&runtime.drains);
        let mut states = lock(&runtime.routes);
        let mut new_drains: HashMap<String, Arc<DrainFlag>> = HashMap::new();
        let mut new_health: HashMap<String, (String, Arc<TargetHealth>)> = HashMap::new();
        let mut new_states: HashMap<String, Arc<RouteState>> = HashMap::new();
        let mut routes = Vec::with_capacity(snapshot.routes.len());
        for route in &snapshot.routes {
            let failure_rate = route
                .health
                .failure_rate
                .as_ref()
                .map_or_else(|| runtime.failure_rate.clone(), FailureRatePolicy::from);
            let mut targets = Vec::with_capacity(route.targets.len());
            for t in &route.targets {
                let Some((scheme, authority, base_path)) = parse_base(&t.url) else {
                    tracing::warn!(target_id = %t.id, url = %t.url, "target URL cannot be used; skipped");
                    continue;
                };
                let h = match health.get(&t.id) {
                    Some((url, h)) if *url == t.url => {
                        h.set_failure_rate(&failure_rate);
                        Arc::clone(h)
                    }
                    _ => Arc::new(TargetHealth::with_failure_rate(failure_rate.clone())),
                };
                new_health.insert(t.id.clone(), (t.url.clone(), Arc::clone(&h)));
                let drain = drains.get(&t.id).map_or_else(Arc::default, Arc::clone);
                new_drains.insert(t.id.clone(), Arc::clone(&drain));
                targets.push(Arc::new(TargetRt {
                    spec: t.clone(),
                    route: route.name.clone(),
                    scheme,
                    host: http::HeaderValue::from_str(authority.as_str()).ok(),
                    authority,
                    base_path,
                    health: h,
                    drain,
                    metrics: TargetMetrics::default(),
                    served_by: [
                        header_value(&route.name),
                        header_value(&t.id),
                        header_value(&t.model_version),
                        header_value(&t.region),
                    ],
                }));
            }
            let state = states
                .get(&route.name)
                .map_or_else(|| Arc::new(RouteState::default()), Arc::clone);
            new_states.insert(route.name.clone(), Arc::clone(&state));
            let region_order = region_order(snapshot, route, region);
            let home = region_order.first().map_or(region, String::as_str);
            let has_local = route.targets.iter().any(|t| t.region == home);
            routes.push(Arc::new(RouteRt {
                spec: route.clone(),
                targets,
                region_order,
                has_local,
                state,
                metrics: RouteMetrics::default(),
            }));
        }
        *health = new_health;
        *drains = new_drains;
        *states = new_states;
        let by_name = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.spec.name.clone(), i))
            .collect();
        let mut prefixes: Vec<(String, usize)> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.spec.kind == RouteKind::Prefix)
            .filter_map(|(i, r)| r.spec.prefix.clone().map(|p| (p, i)))
            .collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            routes,
            by_name,
            prefixes,
        }
    }

    /// The route with this name.
    #[must_use]
    pub fn route(&self, name: &str) -> Option<&Arc<RouteRt>> {
        self.by_name.get(name).map(|&i| &self.routes[i])
    }

    /// The openai route for a request's `model`.
    #[must_use]
    pub fn openai(&self, model: &str) -> Option<&Arc<RouteRt>> {
        self.route(model).filter(|r| r.spec.kind == RouteKind::Openai)
    }

    /// The prefix route with the longest prefix matching `path` on a segment boundary.
    #[must_use]
    pub fn prefix_match(&self, path: &str) -> Option<&Arc<RouteRt>> {
        self.prefixes.iter().find_map(|(p, i)| {
            let p = p.trim_end_matches('/');
            let hit = p.is_empty()
                || (path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/')));
            hit.then(|| &self.routes[*i])
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::BTreeMap;

    use ballast_api::routing::{FailoverPolicy, HealthPolicy, RegionPolicy, RetryPolicy, Timeouts};

    use super::*;

    fn target(id: &str, region: &str) -> Target {
        Target {
            id: id.into(),
            url: format!("http://127.0.0.1:1/{id}/"),
            region: region.into(),
            model_version: "m/x/1".into(),
            weight: 1,
            upstream_model: None,
        }
    }

    fn route(name: &str, kind: RouteKind, prefix: Option<&str>, targets: Vec<Target>) -> Route {
        Route {
            name: name.into(),
            kind,
            prefix: prefix.map(str::to_owned),
            strip_prefix: false,
            targets,
            fallbacks: vec![],
            split: vec![],
            sticky_header: "x-session-id".into(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            health: HealthPolicy::default(),
            failover: FailoverPolicy::default(),
            regions: None,
        }
    }

    #[test]
    fn compiles_prefixes_regions_and_keeps_health_across_reloads() {
        let mut regions = BTreeMap::new();
        regions.insert(
            "eu".to_owned(),
            RegionPolicy {
                failover: vec!["ap".into(), "us".into()],
            },
        );
        let s1 = RoutingSnapshot::new(
            1,
            regions.clone(),
            vec![
                route(
                    "bot",
                    RouteKind::Openai,
                    None,
                    vec![target("a", "us"), target("b", "eu")],
                ),
                route("api", RouteKind::Prefix, Some("/api"), vec![target("c", "us")]),
                route(
                    "apiv2",
                    RouteKind::Prefix,
                    Some("/api/v2"),
                    vec![target("d", "us")],
                ),
            ],
        );
        let rt = Runtime::default();
        let t = Table::compile(&s1, "eu", &rt);
        let bot = t.openai("bot").unwrap();
        assert_eq!(bot.region_order, vec!["eu", "ap", "us"]);
        assert!(bot.has_local);
        assert_eq!(bot.targets[1].base_path, "/b");
        assert!(t.openai("api").is_none());
        assert_eq!(t.prefix_match("/api/v2/x").unwrap().spec.name, "apiv2");
        assert_eq!(t.prefix_match("/api/v3").unwrap().spec.name, "api");
        assert_eq!(t.prefix_match("/api").unwrap().spec.name, "api");
        assert!(t.prefix_match("/apix").is_none());
        let h = Arc::clone(&bot.targets[0].health);
        let t2 = Table::compile(&s1, "eu", &rt);
        assert!(Arc::ptr_eq(&h, &t2.openai("bot").unwrap().targets[0].health));
        // Same id, new URL: fresh health.
        let mut s2 = s1.clone();
        s2.routes[0].targets[0].url = "http://127.0.0.1:2".into();
        let t3 = Table::compile(&s2, "eu", &rt);
        assert!(!Arc::ptr_eq(&h, &t3.openai("bot").unwrap().targets[0].health));
    }

    #[test]
    fn a_routes_own_region_order_replaces_the_snapshots() {
        let mut regions = BTreeMap::new();
        regions.insert(
            "eu".to_owned(),
            RegionPolicy {
                failover: vec!["ap".into(), "us".into()],
            },
        );
        let targets = vec![
            target("a", "us"),
            target("b", "eu"),
            target("c", "ap"),
            target("d", "sa"),
        ];
        let mut first = route("first", RouteKind::Openai, None, targets.clone());
        first.regions = Some(RouteRegions {
            order: vec!["us".into(), "eu".into()],
            local: LocalRegionPolicy::First,
        });
        let mut listed = route("listed", RouteKind::Openai, None, targets.clone());
        listed.regions = Some(RouteRegions {
            order: vec!["us".into(), "ap".into()],
            local: LocalRegionPolicy::Listed,
        });
        let plain = route("plain", RouteKind::Openai, None, targets);
        let s = RoutingSnapshot::new(1, regions, vec![first, listed, plain]);
        let rt = Runtime::default();
        let t = Table::compile(&s, "eu", &rt);
        // Own region first, then the route's order, then the rest as they appear.
        assert_eq!(
            t.openai("first").unwrap().region_order,
            vec!["eu", "us", "ap", "sa"]
        );
        // Exactly as listed: us leads even for a router in eu, which comes after the listed ones.
        let l = t.openai("listed").unwrap();
        assert_eq!(l.region_order, vec!["us", "ap", "eu", "sa"]);
        assert!(l.has_local, "the home region is us, which has a target");
        // Without its own order, the snapshot's order for eu applies.
        assert_eq!(
            t.openai("plain").unwrap().region_order,
            vec!["eu", "ap", "us", "sa"]
        );
        // A router in a region without targets still has it in the order.
        let t = Table::compile(&s, "mars", &rt);
        assert_eq!(
            t.openai("listed").unwrap().region_order,
            vec!["us", "ap", "eu", "sa", "mars"]
        );
        assert_eq!(t.openai("first").unwrap().region_order[0], "mars");
        assert!(!t.openai("first").unwrap().has_local);
    }

    #[test]
    fn a_routes_failure_rate_rule_replaces_the_routers_default_and_follows_reloads() {
        let mut r = route("bot", RouteKind::Openai, None, vec![target("a", "eu")]);
        r.health.failure_rate = Some(ballast_api::routing::FailureRate {
            window_ms: 2_000,
            min_requests: 3,
            failure_percent: 10,
        });
        let s1 = RoutingSnapshot::new(1, BTreeMap::new(), vec![r.clone()]);
        let rt = Runtime::default();
        let t1 = Table::compile(&s1, "eu", &rt);
        let h = Arc::clone(&t1.openai("bot").unwrap().targets[0].health);
        assert_eq!(
            h.failure_rate(),
            FailureRatePolicy {
                window: std::time::Duration::from_secs(2),
                min_requests: 3,
                failure_percent: 10
            }
        );
        // The setting removed: the same health object, back on the router's default.
        r.health.failure_rate = None;
        let s2 = RoutingSnapshot::new(2, BTreeMap::new(), vec![r]);
        let t2 = Table::compile(&s2, "eu", &rt);
        assert!(Arc::ptr_eq(&h, &t2.openai("bot").unwrap().targets[0].health));
        assert_eq!(h.failure_rate(), FailureRatePolicy::default());
    }

    #[test]
    fn failures_on_many_threads_never_eject_more_than_the_routes_share() {
        const TARGETS: usize = 10;
        const THREADS: usize = 8;
        let mut r = route(
            "bot",
            RouteKind::Openai,
            None,
            (0..TARGETS).map(|i| target(&format!("t{i}"), "eu")).collect(),
        );
        r.health.consecutive_failures = 1;
        r.health.max_ejection_percent = 30;
        let s = RoutingSnapshot::new(1, BTreeMap::new(), vec![r]);
        let start = std::time::Instant::now();
        let mut rounds = 0u32;
        // Each round starts from fresh health; every thread fails its own targets at once.
        while rounds < 3_000 && start.elapsed() < std::time::Duration::from_secs(20) {
            rounds += 1;
            let rt = Runtime::default();
            let t = Table::compile(&s, "eu", &rt);
            let bot = Arc::clone(t.openai("bot").unwrap());
            let gate = std::sync::Barrier::new(THREADS);
            std::thread::scope(|sc| {
                for n in 0..THREADS {
                    let (bot, gate) = (&bot, &gate);
                    sc.spawn(move || {
                        gate.wait();
                        for k in (n..TARGETS).step_by(THREADS) {
                            bot.record_failure(&bot.targets[k], Instant::now());
                        }
                    });
                }
            });
            let ejected = bot.targets.iter().filter(|t| t.health.is_ejected()).count();
            assert_eq!(ejected, 3, "round {rounds}: 30 % of 10 targets may be ejected");
        }
    }
}
