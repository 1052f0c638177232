//! Builds a request's attempt plan: the ordered list of targets to try.
//!
//! For the route and then each fallback route (depth first, each once): regions in tier order
//! (local first, unless the route failed over, then the configured order), and within a region
//! the preferred model version first (weighted split, or pinned by the sticky header), and the
//! targets of a version ordered by weighted rendezvous hashing — on a random key (a weighted
//! random pick) or on the sticky header's value (the same target while it stays healthy).
//! Unavailable targets are left out, unless too few are healthy (panic mode: all are tried).
//! Targets an operator drained are left out even in panic mode, unless no target of the route or
//! its fallbacks is left to try at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::failover::Transition;
use crate::health::Availability;
use crate::table::{RouteRt, Table, TargetRt};

/// One target to try.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The target.
    pub target: Arc<TargetRt>,
    /// The route it belongs to (differs from the requested route after a fallback).
    pub route: Arc<RouteRt>,
    /// The target is half-open: claim its probe slot before trying it.
    pub probe: bool,
}

/// The outcome of planning.
#[derive(Debug, Default)]
pub struct Plan {
    /// Targets in the order to try them.
    pub candidates: Vec<Candidate>,
    /// Routes planned in panic mode.
    pub panic_routes: Vec<String>,
    /// Region failover transitions decided while planning, by route.
    pub transitions: Vec<(String, Transition)>,
}

/// 64-bit FNV-1a followed by a `SplitMix64` finaliser: stable across builds and platforms.
#[must_use]
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Weighted rendezvous score (lower wins): `-ln(u) / weight`, with `u` uniform in (0, 1) from
/// the hash of key and item. Weight 0 never wins against a positive weight.
#[must_use]
pub fn rendezvous_score(key: u64, item: &str, weight: u32) -> f64 {
    if weight == 0 {
        return f64::INFINITY;
    }
    let h = hash64(&[&key.to_le_bytes(), item.as_bytes()]);
    #[allow(clippy::cast_precision_loss)]
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -u.ln() / f64::from(weight)
}

fn order_by_score<T>(items: &mut [T], score: impl Fn(&T) -> f64) {
    items.sort_by(|a, b| score(a).total_cmp(&score(b)));
}

/// The key that orders targets for one route: the sticky header's hash, or a random one.
fn route_key(route: &RouteRt, headers: &dyn HeaderLookup, random: u64) -> u64 {
    headers
        .header(route.spec.sticky_header.as_str())
        .map_or(random, |v| hash64(&[route.spec.name.as_bytes(), v]))
}

/// A request's header fields, as planning reads them (the sticky-session header).
pub trait HeaderLookup {
    /// The first value of `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl HeaderLookup for HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(http::HeaderValue::as_bytes)
    }
}

impl HeaderLookup for crate::h1::Fields {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name)
    }
}

/// Builds the plan for a request to `route`.
pub fn plan(
    table: &Table,
    route: &Arc<RouteRt>,
    region: &str,
    headers: &dyn HeaderLookup,
    random: u64,
    now: Instant,
) -> Plan {
    let mut out = Plan::default();
    if route.spec.fallbacks.is_empty() {
        // The common case: one route, nothing to walk.
        plan_route(route, region, headers, random, now, false, &mut out);
        if out.candidates.is_empty() {
            plan_route(route, region, headers, random, now, true, &mut out);
        }
        return out;
    }
    let mut stack = vec![Arc::clone(route)];
    let mut order: Vec<Arc<RouteRt>> = Vec::new();
    // Depth-first over fallbacks, each route once (routes have few fallbacks: a linear scan).
    while let Some(r) = stack.pop() {
        if order.iter().any(|o| Arc::ptr_eq(o, &r)) {
            continue;
        }
        for fb in r.spec.fallbacks.iter().rev() {
            if let Some(f) = table.route(fb) {
                stack.push(Arc::clone(f));
            }
        }
        order.push(r);
    }
    for r in &order {
        plan_route(r, region, headers, random, now, false, &mut out);
    }
    if out.candidates.is_empty() {
        // Nothing looks available anywhere: try everything rather than refuse (panic mode).
        for r in &order {
            plan_route(r, region, headers, random, now, true, &mut out);
        }
    }
    out
}

fn plan_route(
    route: &Arc<RouteRt>,
    region: &str,
    headers: &dyn HeaderLookup,
    random: u64,
    now: Instant,
    force_all: bool,
    out: &mut Plan,
) {
    let spec = &route.spec;
    let total = route.targets.len();
    if total == 0 {
        return;
    }
    // Drained targets are not capacity: they count as unhealthy for panic mode and failover.
    let serving = |t: &TargetRt| !t.drain.is_drained() && t.health.is_healthy(now);
    let healthy = route.targets.iter().filter(|t| serving(t)).count();
    let panic = force_all
        || healthy * 100 < total * usize::try_from(spec.health.panic_threshold_percent).unwrap_or(100);
    if panic && !out.panic_routes.contains(&spec.name) {
        out.panic_routes.push(spec.name.clone());
    }
    // The home region: the router's own, unless the route's order is `listed`.
    let home = route.region_order.first().map_or(region, String::as_str);
    let mut failed_over = false;
    if route.has_local {
        let (local, local_healthy) = route
            .targets
            .iter()
            .filter(|t| t.spec.region == home)
            .fold((0usize, 0usize), |(n, h), t| (n + 1, h + usize::from(serving(t))));
        let local_ok =
            local_healthy * 100 >= local * usize::try_from(spec.failover.min_healthy_percent).unwrap_or(100);
        let hold = Duration::from_millis(spec.failover.hold_down_ms);
        let transition;
        (transition, failed_over) = match route.state.failover.lock() {
            Ok(mut f) => {
                f.set_home(home);
                let t = f.update(now, local_ok, hold);
                (t, f.failed_over())
            }
            Err(_) => (None, false),
        };
        if let Some(t) = transition {
            out.transitions.push((spec.name.clone(), t));
        }
    }
    // Failed over: the home region goes last.
    let rotate = usize::from(failed_over && !route.region_order.is_empty());
    let regions = route
        .region_order
        .iter()
        .skip(rotate)
        .chain(route.region_order.iter().take(rotate));
    let key = route_key(route, headers, random);
    let split_versions: Vec<Option<&str>>;
    let versions: &[Option<&str>] = if spec.split.is_empty() {
        &[None]
    } else {
        let mut split: Vec<_> = spec.split.iter().collect();
        order_by_score(&mut split, |s| rendezvous_score(key, &s.model_version, s.weight));
        let mut v: Vec<Option<&str>> = split
            .into_iter()
            .map(|s| Some(s.model_version.as_str()))
            .collect();
        v.dedup();
        split_versions = v;
        &split_versions
    };
    let mut tier: Vec<&Arc<TargetRt>> = Vec::with_capacity(route.targets.len());
    for reg in regions {
        for version in versions {
            tier.clear();
            tier.extend(
                route
                    .targets
                    .iter()
                    .filter(|t| t.spec.region == *reg && version.is_none_or(|v| t.spec.model_version == v)),
            );
            order_by_score(&mut tier, |t| rendezvous_score(key, &t.spec.id, t.spec.weight));
            for t in tier.drain(..) {
                // The operator's drain holds even in panic mode; only "nothing else at all"
                // (`force_all`) overrides it.
                if !force_all && t.drain.is_drained() {
                    continue;
                }
                let availability = if panic {
                    Availability::Available
                } else {
                    t.health.availability(now)
                };
                match availability {
                    Availability::Available | Availability::Probe => out.candidates.push(Candidate {
                        target: Arc::clone(t),
                        route: Arc::clone(route),
                        probe: availability == Availability::Probe,
                    }),
                    Availability::Unavailable => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::collections::{BTreeMap, HashMap, HashSet};

    use ballast_api::routing::{
        FailoverPolicy, HealthPolicy, RetryPolicy, Route, RouteKind, RoutingSnapshot, Split, Target, Timeouts,
    };

    use super::*;
    use crate::table::Runtime;

    fn target(id: &str, region: &str, version: &str, weight: u32) -> Target {
        Target {
            id: id.into(),
            url: format!("http://127.0.0.1:1/{id}"),
            region: region.into(),
            model_version: version.into(),
            weight,
            upstream_model: None,
        }
    }

    fn route(name: &str, targets: Vec<Target>, fallbacks: &[&str]) -> Route {
        Route {
            name: name.into(),
            kind: RouteKind::Openai,
            prefix: None,
            strip_prefix: false,
            targets,
            fallbacks: fallbacks.iter().map(|s| (*s).to_owned()).collect(),
            split: vec![],
            sticky_header: "x-session-id".into(),
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            health: HealthPolicy {
                consecutive_failures: 1,
                ..HealthPolicy::default()
            },
            failover: FailoverPolicy {
                min_healthy_percent: 50,
                hold_down_ms: 1_000,
            },
            regions: None,
        }
    }

    fn ids(p: &Plan) -> Vec<String> {
        p.candidates.iter().map(|c| c.target.spec.id.clone()).collect()
    }

    #[test]
    fn drained_targets_get_no_requests_unless_nothing_else_is_left() {
        let s = RoutingSnapshot::new(
            1,
            BTreeMap::new(),
            vec![route(
                "bot",
                vec![
                    target("eu1", "eu", "m/bot/1", 1),
                    target("us1", "us", "m/bot/1", 1),
                ],
                &[],
            )],
        );
        let rt = Runtime::default();
        let table = Table::compile(&s, "eu", &rt);
        let bot = table.route("bot").unwrap();
        let now = Instant::now();
        let headers = HeaderMap::new();
        assert!(!bot.targets[0].drain.set(true));
        let p = plan(&table, bot, "eu", &headers, 7, now);
        assert_eq!(ids(&p), vec!["us1"]);
        // Drained and healthy state are independent.
        assert!(bot.targets[0].health.is_healthy(now));
        // The other one ejected: panic mode ignores its health, not the drain.
        bot.targets[1].health.record_failure(now, &bot.spec.health, true);
        let p = plan(&table, bot, "eu", &headers, 7, now);
        assert_eq!(ids(&p), vec!["us1"]);
        assert_eq!(p.panic_routes, vec!["bot".to_owned()]);
        // Every target drained: nothing is left, so everything is tried.
        bot.targets[1].drain.set(true);
        let p = plan(&table, bot, "eu", &headers, 7, now);
        let mut all = ids(&p);
        all.sort();
        assert_eq!(all, vec!["eu1", "us1"]);
        // The flag survives a reload (by target id).
        let again = Table::compile(&s, "eu", &rt);
        assert!(again.route("bot").unwrap().targets[0].drain.is_drained());
        assert!(bot.targets[0].drain.set(false));
    }

    #[test]
    fn tiers_are_local_then_other_regions_then_fallbacks_and_failover_has_hysteresis() {
        let s = RoutingSnapshot::new(
            1,
            BTreeMap::new(),
            vec![
                route(
                    "bot",
                    vec![
                        target("us1", "us", "m/1", 1),
                        target("eu1", "eu", "m/1", 1),
                        target("ap1", "ap", "m/1", 1),
                    ],
                    &["small"],
                ),
                route("small", vec![target("s1", "eu", "m/s/1", 1)], &[]),
            ],
        );
        let table = Table::compile(&s, "eu", &Runtime::default());
        let bot = table.route("bot").unwrap();
        let now = Instant::now();
        let h = HeaderMap::new();
        let p = plan(&table, bot, "eu", &h, 1, now);
        assert_eq!(ids(&p), vec!["eu1", "us1", "ap1", "s1"]);
        // Eject the local target: traffic fails over, local comes last.
        let eu1 = &bot.targets[1];
        eu1.health.record_failure(now, &bot.spec.health, true);
        let p = plan(&table, bot, "eu", &h, 1, now);
        assert_eq!(ids(&p), vec!["us1", "ap1", "s1"]);
        assert_eq!(p.transitions, vec![("bot".to_owned(), Transition::Out)]);
        // It recovers (probe passes) but traffic returns only after the hold-down.
        let t1 = now + Duration::from_millis(1_000);
        assert!(eu1.health.try_begin_probe(t1));
        eu1.health.record_success(t1, &bot.spec.health);
        let p = plan(&table, bot, "eu", &h, 1, t1);
        assert_eq!(ids(&p), vec!["us1", "ap1", "eu1", "s1"]);
        let p = plan(&table, bot, "eu", &h, 1, t1 + Duration::from_millis(999));
        assert_eq!(ids(&p)[0], "us1");
        let p = plan(&table, bot, "eu", &h, 1, t1 + Duration::from_millis(1_000));
        assert_eq!(ids(&p), vec!["eu1", "us1", "ap1", "s1"]);
        assert_eq!(p.transitions, vec![("bot".to_owned(), Transition::Back)]);
    }

    #[test]
    fn panic_mode_routes_across_all_targets() {
        let s = RoutingSnapshot::new(
            1,
            BTreeMap::new(),
            vec![route(
                "bot",
                vec![target("a", "eu", "m/1", 1), target("b", "eu", "m/1", 1)],
                &[],
            )],
        );
        let table = Table::compile(&s, "eu", &Runtime::default());
        let bot = table.route("bot").unwrap();
        let now = Instant::now();
        for t in &bot.targets {
            t.health.record_failure(now, &bot.spec.health, true);
        }
        let p = plan(&table, bot, "eu", &HeaderMap::new(), 7, now);
        assert_eq!(p.candidates.len(), 2);
        assert_eq!(p.panic_routes, vec!["bot".to_owned()]);
    }

    #[test]
    fn weighted_split_and_sticky_sessions() {
        let mut r = route(
            "bot",
            vec![
                target("v1a", "eu", "m/1", 1),
                target("v1b", "eu", "m/1", 1),
                target("v2a", "eu", "m/2", 1),
            ],
            &[],
        );
        r.split = vec![
            Split {
                model_version: "m/1".into(),
                weight: 90,
            },
            Split {
                model_version: "m/2".into(),
                weight: 10,
            },
        ];
        let s = RoutingSnapshot::new(1, BTreeMap::new(), vec![r]);
        let table = Table::compile(&s, "eu", &Runtime::default());
        let bot = table.route("bot").unwrap();
        let now = Instant::now();
        let mut first: HashMap<String, u32> = HashMap::new();
        for i in 0..10_000u64 {
            let p = plan(
                &table,
                bot,
                "eu",
                &HeaderMap::new(),
                hash64(&[&i.to_le_bytes()]),
                now,
            );
            *first
                .entry(p.candidates[0].target.spec.model_version.clone())
                .or_default() += 1;
        }
        let canary = first.get("m/2").copied().unwrap_or(0);
        assert!((800..1200).contains(&canary), "canary share {canary}/10000");
        // The same session lands on the same target whatever the random key.
        let mut h = HeaderMap::new();
        h.insert("x-session-id", "conversation-42".parse().unwrap());
        let pinned = ids(&plan(&table, bot, "eu", &h, 1, now));
        for k in 2..50 {
            assert_eq!(ids(&plan(&table, bot, "eu", &h, k, now)), pinned);
        }
        // Sessions spread over both versions.
        let mut versions = HashSet::new();
        for i in 0..200 {
            let mut h = HeaderMap::new();
            h.insert("x-session-id", format!("s{i}").parse().unwrap());
            versions.insert(
                plan(&table, bot, "eu", &h, 1, now).candidates[0]
                    .target
                    .spec
                    .model_version
                    .clone(),
            );
        }
        assert_eq!(versions.len(), 2);
    }

    #[test]
    fn target_weights_shape_the_first_pick() {
        let s = RoutingSnapshot::new(
            1,
            BTreeMap::new(),
            vec![route(
                "bot",
                vec![
                    target("a", "eu", "m/1", 3),
                    target("b", "eu", "m/1", 1),
                    target("c", "eu", "m/1", 0),
                ],
                &[],
            )],
        );
        let table = Table::compile(&s, "eu", &Runtime::default());
        let bot = table.route("bot").unwrap();
        let now = Instant::now();
        let mut a = 0;
        for i in 0..4_000u64 {
            let p = plan(
                &table,
                bot,
                "eu",
                &HeaderMap::new(),
                hash64(&[&i.to_le_bytes()]),
                now,
            );
            assert_eq!(p.candidates[2].target.spec.id, "c"); // weight 0 is standby, last
            if p.candidates[0].target.spec.id == "a" {
                a += 1;
            }
        }
        assert!((2_800..3_200).contains(&a), "a first {a}/4000");
    }
}
