//! Compiles the routing snapshot that routers watch (`GET /v1/routing/snapshot`) from the
//! registry's routes, the versions their stage or alias references resolve to, and those
//! versions' deployments.
//!
//! A route's targets are the deployments of its resolved version (every region). For a
//! `:production` route, the production version the current one replaced becomes a fallback
//! route `NAME~previous` (tried first among the fallbacks) when it still has deployments, so a
//! bad promotion falls back to the last good version. A canary splits traffic between the
//! resolved version and the canary alias's version. The generation is the newest event id, so
//! it grows with every change; a route that resolves to nothing servable is left out.

use std::collections::{BTreeMap, BTreeSet};

use ballast_api::deployments::Deployment;
use ballast_api::routing::{Route, RouteKind, RoutingSnapshot, SnapshotInvalid, Split, Target};
use ballast_store::{ResolvedRoute, RoutingState};

/// Suffix of the automatic previous-production fallback route.
pub const PREVIOUS_SUFFIX: &str = "~previous";

fn target(route: &str, tag: char, d: &Deployment) -> Target {
    Target {
        id: format!("{route}_{tag}{}", d.id),
        url: d.url.clone(),
        region: d.region.clone(),
        model_version: format!("{}/{}", d.model, d.version),
        weight: d.weight,
        upstream_model: d.upstream_model.clone(),
    }
}

fn base_route(r: &ResolvedRoute, name: String) -> Route {
    let spec = &r.route.spec;
    Route {
        name,
        kind: RouteKind::Openai,
        prefix: None,
        strip_prefix: false,
        targets: Vec::new(),
        fallbacks: Vec::new(),
        split: Vec::new(),
        sticky_header: spec
            .sticky_header
            .clone()
            .unwrap_or_else(|| "x-session-id".to_owned()),
        timeouts: spec.timeouts.clone(),
        retry: spec.retry.clone(),
        health: spec.health.clone(),
        failover: spec.failover.clone(),
        regions: spec.regions.clone(),
    }
}

fn of_version(r: &ResolvedRoute, v: Option<u64>) -> Vec<&Deployment> {
    match v {
        None => Vec::new(),
        Some(v) => r.deployments.iter().filter(|d| d.version == v).collect(),
    }
}

/// Builds the snapshot (not yet validated).
#[must_use]
pub fn compile(state: &RoutingState) -> RoutingSnapshot {
    let mut routes: Vec<Route> = Vec::new();
    for r in &state.routes {
        let name = r.route.name.clone();
        let mut route = base_route(r, name.clone());
        let main = of_version(r, r.version);
        route.targets = main.iter().map(|d| target(&name, 'd', d)).collect();
        if let (Some(c), Some(cv)) = (&r.route.spec.canary, r.canary_version) {
            let canary = of_version(r, Some(cv));
            if !canary.is_empty() {
                if let (false, Some(v)) = (main.is_empty(), r.version) {
                    route.split = vec![
                        Split {
                            model_version: format!("{}/{v}", main[0].model),
                            weight: 100 - c.percent.min(100),
                        },
                        Split {
                            model_version: format!("{}/{cv}", canary[0].model),
                            weight: c.percent.min(100),
                        },
                    ];
                }
                route.targets.extend(canary.iter().map(|d| target(&name, 'c', d)));
            }
        }
        let previous = of_version(r, r.previous_production);
        if !previous.is_empty() {
            let prev_name = format!("{name}{PREVIOUS_SUFFIX}");
            let mut prev = base_route(r, prev_name.clone());
            prev.targets = previous.iter().map(|d| target(&name, 'p', d)).collect();
            route.fallbacks.push(prev_name);
            routes.push(prev);
        }
        route.fallbacks.extend(r.route.spec.fallbacks.iter().cloned());
        routes.push(route);
    }
    // Leave out routes with nothing to serve, and fallbacks to them, until nothing changes.
    loop {
        let dead: BTreeSet<String> = routes
            .iter()
            .filter(|r| r.targets.is_empty() && r.fallbacks.is_empty())
            .map(|r| r.name.clone())
            .collect();
        let known: BTreeSet<String> = routes.iter().map(|r| r.name.clone()).collect();
        let before = routes.len();
        let mut changed = false;
        routes.retain(|r| !dead.contains(&r.name));
        for r in &mut routes {
            let n = r.fallbacks.len();
            r.fallbacks.retain(|f| known.contains(f) && !dead.contains(f));
            changed |= n != r.fallbacks.len();
        }
        if routes.len() == before && !changed {
            break;
        }
    }
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    RoutingSnapshot::new(state.last_event_id.max(1), BTreeMap::new(), routes)
}

/// Compiles and validates.
///
/// # Errors
/// The problems, when the compiled snapshot breaks a routing rule (a bug or a database edited
/// by hand: the API validates every input).
pub fn compile_valid(state: &RoutingState) -> Result<RoutingSnapshot, SnapshotInvalid> {
    let s = compile(state);
    s.validate()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use ballast_api::deployments::{RegistryRoute, SetRoute};
    use ballast_api::routing::{FailoverPolicy, HealthPolicy, RetryPolicy, Timeouts};

    use super::*;

    fn route(name: &str, version: Option<u64>, fallbacks: &[&str], deployed: &[u64]) -> ResolvedRoute {
        ResolvedRoute {
            route: RegistryRoute {
                name: name.to_owned(),
                spec: SetRoute {
                    target: "acme/bot:production".to_owned(),
                    fallbacks: fallbacks.iter().map(|f| (*f).to_owned()).collect(),
                    canary: None,
                    sticky_header: None,
                    timeouts: Timeouts::default(),
                    retry: RetryPolicy::default(),
                    health: HealthPolicy::default(),
                    failover: FailoverPolicy::default(),
                    regions: None,
                },
                revision: 1,
                updated_by: "t".to_owned(),
                updated_at: String::new(),
            },
            version,
            previous_production: None,
            canary_version: None,
            deployments: deployed
                .iter()
                .map(|&v| Deployment {
                    id: v * 10,
                    model: "acme/bot".to_owned(),
                    version: v,
                    region: "eu-west".to_owned(),
                    url: format!("http://127.0.0.{v}:8000"),
                    weight: 1,
                    upstream_model: None,
                    created_by: "t".to_owned(),
                    created_at: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn routes_without_anything_to_serve_are_left_out_with_their_fallback_edges() {
        let state = RoutingState {
            last_event_id: 9,
            routes: vec![
                // No deployments, but a live fallback: kept, fallback only.
                route("a", Some(1), &["b"], &[]),
                route("b", Some(2), &[], &[2]),
                // No deployments and a fallback that has none either: both left out.
                route("c", Some(1), &["d"], &[]),
                route("d", None, &[], &[]),
                // Targets, plus a fallback to a dead route: the edge is dropped.
                route("e", Some(3), &["d"], &[3]),
            ],
        };
        let s = compile_valid(&state).map_err(|e| e.to_string());
        assert!(s.is_ok(), "{s:?}");
        let s = s.unwrap_or_else(|_| RoutingSnapshot::new(1, BTreeMap::new(), Vec::new()));
        let names: Vec<&str> = s.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "e"]);
        assert_eq!(s.generation, 9);
        assert_eq!(
            s.route("a").map(|r| r.fallbacks.clone()),
            Some(vec!["b".to_owned()])
        );
        assert_eq!(s.route("e").map(|r| r.fallbacks.len()), Some(0));
        assert_eq!(
            s.route("e").map(|r| r.targets[0].id.clone()),
            Some("e_d30".to_owned())
        );
    }
}
