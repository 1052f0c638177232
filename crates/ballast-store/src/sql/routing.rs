//! Deployments and registry routes: their mutations (each audited with its event, in the
//! writer's transaction) and the consistent read from which the routing snapshot is compiled.

use std::collections::BTreeMap;

use ballast_api::deployments::{
    is_route_name, CreateDeployment, Deployment, RegistryRoute, RouteRef, SetRoute, MAX_DEPLOYMENT_WEIGHT,
};
use ballast_api::routing::{check_url, Route, RoutingSnapshot, Target};
use ballast_core::{validate_alias, ErrorCode, ModelName, Stage};
use serde_json::{json, Value};

use super::ops::record_change;
use super::query::{bytewise, model_id, now, to_i64, to_u64};
use crate::db::{Db, Row};
use crate::params;
use crate::{Ctx, ResolvedRoute, RoutingState, StoreError, StoreResult};

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message: message.into(),
        field: Some(field.into()),
    }
}

fn parse_model(field: &str, s: &str) -> StoreResult<ModelName> {
    ModelName::parse(s).map_err(|e| invalid(field, e.message))
}

const DEPLOYMENT_COLUMNS: &str = "d.id, m.namespace, m.name, d.number, d.region, d.url, d.weight, d.upstream_model, d.created_by, d.created_at";

fn deployment_row(r: &Row) -> StoreResult<Deployment> {
    let ns: String = r.get(1)?;
    let m: String = r.get(2)?;
    Ok(Deployment {
        id: to_u64(r.get(0)?),
        model: format!("{ns}/{m}"),
        version: to_u64(r.get(3)?),
        region: r.get(4)?,
        url: r.get(5)?,
        weight: u32::try_from(r.get::<i64>(6)?).unwrap_or(1),
        upstream_model: r.get(7)?,
        created_by: r.get(8)?,
        created_at: r.get(9)?,
    })
}

fn load_deployment(db: &dyn Db, id: u64) -> StoreResult<Deployment> {
    db.query_row_opt(
        &format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN models m ON m.id = d.model_id WHERE d.id = ?1"),
        params![to_i64(id)],
        deployment_row,
    )?
    .ok_or_else(|| StoreError::not_found(format!("deployment {id}")))
}

fn deployment_json(d: &Deployment) -> Value {
    json!({
        "id": d.id, "model": d.model, "version": d.version, "region": d.region,
        "url": d.url, "weight": d.weight, "upstream_model": d.upstream_model,
    })
}

pub(super) fn add_deployment(db: &dyn Db, ctx: &Ctx, req: &CreateDeployment) -> StoreResult<Deployment> {
    let name = parse_model("model", &req.model)?;
    if !is_route_name(&req.region) {
        return Err(invalid(
            "region",
            format!(
                "region {:?} must be 1 to 100 letters, digits, '-', '_' or '.'",
                req.region
            ),
        ));
    }
    let url = req.url.trim_end_matches('/');
    check_url(url).map_err(|m| invalid("url", m))?;
    if req.weight == 0 || req.weight > MAX_DEPLOYMENT_WEIGHT {
        return Err(invalid(
            "weight",
            format!("weight must be 1 to {MAX_DEPLOYMENT_WEIGHT}, got {}", req.weight),
        ));
    }
    if let Some(u) = &req.upstream_model {
        if u.is_empty() || u.len() > 200 || !u.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "upstream_model",
                "upstream_model must be 1 to 200 printable ASCII characters without spaces",
            ));
        }
    }
    let id = model_id(db, &name)?;
    let sealed: Option<bool> = db.query_row_opt(
        "SELECT sealed FROM versions WHERE model_id = ?1 AND number = ?2",
        params![id, to_i64(req.version)],
        |r| r.get::<bool>(0),
    )?;
    match sealed {
        None => {
            return Err(StoreError::not_found(format!(
                "version {} of {name}",
                req.version
            )))
        }
        Some(false) => {
            return Err(StoreError::new(
                ErrorCode::Conflict,
                format!(
                    "version {} of {name} is a draft: seal it before recording a deployment",
                    req.version
                ),
            ))
        }
        Some(true) => {}
    }
    let dup: Option<i64> = db.query_value::<i64>(
        "SELECT id FROM deployments WHERE model_id = ?1 AND number = ?2 AND region = ?3 AND url = ?4",
        params![id, to_i64(req.version), req.region, url],
    )?;
    if let Some(existing) = dup {
        return Err(StoreError::new(
            ErrorCode::AlreadyExists,
            format!(
                "version {} of {name} is already deployed at {url} in {} (deployment {existing})",
                req.version, req.region
            ),
        ));
    }
    let new_id = db
        .query_one(
            "INSERT INTO deployments (model_id, number, region, url, weight, upstream_model, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            params![
                id,
                to_i64(req.version),
                req.region,
                url,
                i64::from(req.weight),
                req.upstream_model,
                ctx.actor,
                now()
            ],
        )?
        .get::<u64>(0)?;
    let d = load_deployment(db, new_id)?;
    record_change(
        db,
        ctx,
        "deployment.add",
        &format!("{name}/{}", d.version),
        &Value::Null,
        &deployment_json(&d),
    )?;
    Ok(d)
}

pub(super) fn remove_deployment(db: &dyn Db, ctx: &Ctx, id: u64) -> StoreResult<()> {
    let d = load_deployment(db, id)?;
    db.execute("DELETE FROM deployments WHERE id = ?1", params![to_i64(id)])?;
    record_change(
        db,
        ctx,
        "deployment.remove",
        &format!("{}/{}", d.model, d.version),
        &deployment_json(&d),
        &Value::Null,
    )
}

pub(super) fn list_deployments(
    db: &dyn Db,
    model: Option<&ModelName>,
    region: Option<&str>,
) -> StoreResult<Vec<Deployment>> {
    db.query_map(
        &format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN models m ON m.id = d.model_id
             WHERE (CAST(?1 AS TEXT) IS NULL OR (m.namespace = CAST(?1 AS TEXT) AND m.name = CAST(?2 AS TEXT)))
               AND (CAST(?3 AS TEXT) IS NULL OR d.region = CAST(?3 AS TEXT))
             ORDER BY d.id"
        ),
        params![
            model.map(ModelName::namespace),
            model.map(ModelName::model),
            region
        ],
        deployment_row,
    )
}

fn route_row(r: &Row) -> StoreResult<(String, String, i64, String, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_route(row: (String, String, i64, String, String)) -> StoreResult<RegistryRoute> {
    let (name, spec, revision, updated_by, updated_at) = row;
    Ok(RegistryRoute {
        name,
        spec: serde_json::from_str(&spec)?,
        revision: to_u64(revision),
        updated_by,
        updated_at,
    })
}

fn load_route(db: &dyn Db, name: &str) -> StoreResult<Option<RegistryRoute>> {
    db.query_row_opt(
        "SELECT name, spec, revision, updated_by, updated_at FROM routes WHERE name = ?1",
        params![name],
        route_row,
    )?
    .map(to_route)
    .transpose()
}

pub(super) fn list_routes(db: &dyn Db) -> StoreResult<Vec<RegistryRoute>> {
    let sql = format!(
        "SELECT name, spec, revision, updated_by, updated_at FROM routes ORDER BY name{}",
        bytewise(db)
    );
    db.query_map(&sql, params![], route_row)?
        .into_iter()
        .map(to_route)
        .collect()
}

/// Checks the route's own settings with the snapshot rules (on a one-route snapshot).
fn check_settings(name: &str, spec: &SetRoute) -> StoreResult<()> {
    let mut route = Route {
        name: name.to_owned(),
        kind: ballast_api::routing::RouteKind::Openai,
        prefix: None,
        strip_prefix: false,
        targets: vec![Target {
            id: "check".into(),
            url: "http://127.0.0.1:1".into(),
            region: "check".into(),
            model_version: "check/check/1".into(),
            weight: 1,
            upstream_model: None,
        }],
        fallbacks: Vec::new(),
        split: Vec::new(),
        sticky_header: "x-session-id".into(),
        timeouts: spec.timeouts.clone(),
        retry: spec.retry.clone(),
        health: spec.health.clone(),
        failover: spec.failover.clone(),
        regions: spec.regions.clone(),
    };
    if let Some(h) = &spec.sticky_header {
        route.sticky_header.clone_from(h);
    }
    let snapshot = RoutingSnapshot::new(1, BTreeMap::new(), vec![route]);
    snapshot.validate().map_err(|e| {
        let field = e
            .problems
            .first()
            .map(|p| p.field.trim_start_matches("routes[0].").to_owned());
        StoreError {
            code: ErrorCode::InvalidArgument,
            message: e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.field.trim_start_matches("routes[0]."), p.message))
                .collect::<Vec<_>>()
                .join("; "),
            field,
        }
    })
}

fn route_json(r: &RegistryRoute) -> Value {
    json!({ "spec": r.spec, "revision": r.revision })
}

pub(super) fn set_route(db: &dyn Db, ctx: &Ctx, name: &str, spec: &SetRoute) -> StoreResult<RegistryRoute> {
    if !is_route_name(name) {
        return Err(invalid(
            "name",
            format!("route name {name:?} must be 1 to 100 letters, digits, '-', '_' or '.'"),
        ));
    }
    let target = RouteRef::parse(&spec.target).map_err(|m| invalid("target", m))?;
    let model = parse_model("target", target.model())?;
    match &target {
        RouteRef::Stage { stage, .. } => {
            stage.parse::<Stage>().map_err(|_| {
                invalid(
                    "target",
                    format!("unknown stage {stage:?}: use development, staging, production or archived"),
                )
            })?;
        }
        RouteRef::Alias { alias, .. } => validate_alias(alias)?,
    }
    model_id(db, &model)?;
    if let Some(c) = &spec.canary {
        validate_alias(&c.alias).map_err(|e| invalid("canary.alias", e.message))?;
        if c.percent > 100 {
            return Err(invalid(
                "canary.percent",
                format!("percent must be 0 to 100, got {}", c.percent),
            ));
        }
    }
    check_settings(name, spec)?;
    let mut seen = std::collections::BTreeSet::new();
    for fb in &spec.fallbacks {
        if fb == name {
            return Err(invalid("fallbacks", "a route cannot fall back to itself"));
        }
        if !seen.insert(fb.as_str()) {
            return Err(invalid("fallbacks", format!("{fb:?} is listed twice")));
        }
        if load_route(db, fb)?.is_none() {
            return Err(invalid(
                "fallbacks",
                format!("unknown route {fb:?}: create it first"),
            ));
        }
    }
    // No cycle through the new edges.
    let mut graph: BTreeMap<String, Vec<String>> = list_routes(db)?
        .into_iter()
        .map(|r| (r.name, r.spec.fallbacks))
        .collect();
    graph.insert(name.to_owned(), spec.fallbacks.clone());
    let mut stack: Vec<String> = spec.fallbacks.clone();
    let mut visited = std::collections::BTreeSet::new();
    while let Some(n) = stack.pop() {
        if n == name {
            return Err(invalid(
                "fallbacks",
                format!("the fallbacks of {name:?} would form a cycle back to it"),
            ));
        }
        if visited.insert(n.clone()) {
            if let Some(next) = graph.get(&n) {
                stack.extend(next.iter().cloned());
            }
        }
    }
    let before = load_route(db, name)?;
    db.execute(
        "INSERT INTO routes (name, spec, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_by = excluded.updated_by,
            updated_at = excluded.updated_at, revision = routes.revision + 1",
        params![name, serde_json::to_string(spec)?, ctx.actor, now()],
    )?;
    let after = load_route(db, name)?
        .ok_or_else(|| StoreError::internal(format!("route {name:?} vanished while being written")))?;
    record_change(
        db,
        ctx,
        "route.set",
        &format!("route/{name}"),
        &before.as_ref().map_or(Value::Null, route_json),
        &route_json(&after),
    )?;
    Ok(after)
}

pub(super) fn delete_route(db: &dyn Db, ctx: &Ctx, name: &str) -> StoreResult<()> {
    let before = load_route(db, name)?.ok_or_else(|| StoreError::not_found(format!("route {name:?}")))?;
    let users: Vec<String> = list_routes(db)?
        .into_iter()
        .filter(|r| r.spec.fallbacks.iter().any(|f| f == name))
        .map(|r| r.name)
        .collect();
    if !users.is_empty() {
        return Err(StoreError::new(
            ErrorCode::Conflict,
            format!(
                "route {name:?} is a fallback of {}: change those routes first",
                users.join(", ")
            ),
        ));
    }
    db.execute("DELETE FROM routes WHERE name = ?1", params![name])?;
    record_change(
        db,
        ctx,
        "route.delete",
        &format!("route/{name}"),
        &route_json(&before),
        &Value::Null,
    )
}

fn version_of_ref(db: &dyn Db, id: i64, r: &RouteRef) -> StoreResult<Option<u64>> {
    match r {
        RouteRef::Stage { stage, .. } => {
            let Ok(stage) = stage.parse::<Stage>() else {
                return Ok(None);
            };
            super::query::newest_in_stage(db, id, stage)
        }
        RouteRef::Alias { alias, .. } => alias_version(db, id, alias),
    }
}

fn alias_version(db: &dyn Db, id: i64, alias: &str) -> StoreResult<Option<u64>> {
    Ok(db
        .query_value::<i64>(
            "SELECT number FROM aliases WHERE model_id = ?1 AND alias = ?2",
            params![id, alias],
        )?
        .map(to_u64))
}

/// The production version that `current` replaced (from the stage history), if any.
fn replaced_production(db: &dyn Db, id: i64, current: u64) -> StoreResult<Option<u64>> {
    let replaced: Option<Option<i64>> = db.query_value::<Option<i64>>(
        "SELECT replaced FROM stage_history WHERE model_id = ?1 AND number = ?2 AND to_stage = 'production'
         ORDER BY id DESC LIMIT 1",
        params![id, to_i64(current)],
    )?;
    Ok(replaced.flatten().map(to_u64))
}

/// Everything the snapshot is compiled from (reads run in one transaction).
pub(super) fn routing_state(db: &dyn Db) -> StoreResult<RoutingState> {
    let last_event_id = super::events::last_event_id(db)?;
    let mut routes = Vec::new();
    for route in list_routes(db)? {
        let mut resolved = ResolvedRoute {
            route,
            version: None,
            previous_production: None,
            canary_version: None,
            deployments: Vec::new(),
        };
        let Ok(target) = RouteRef::parse(&resolved.route.spec.target) else {
            routes.push(resolved);
            continue;
        };
        let Ok(model) = ModelName::parse(target.model()) else {
            routes.push(resolved);
            continue;
        };
        let id = match model_id(db, &model) {
            Ok(id) => id,
            Err(e) if e.code == ErrorCode::NotFound => {
                routes.push(resolved);
                continue;
            }
            Err(e) => return Err(e),
        };
        resolved.version = version_of_ref(db, id, &target)?;
        if let (RouteRef::Stage { stage, .. }, Some(v)) = (&target, resolved.version) {
            if stage == "production" {
                resolved.previous_production = replaced_production(db, id, v)?.filter(|p| *p != v);
            }
        }
        if let Some(c) = &resolved.route.spec.canary {
            resolved.canary_version =
                alias_version(db, id, &c.alias)?.filter(|c| Some(*c) != resolved.version);
        }
        resolved.deployments = list_deployments(db, Some(&model), None)?
            .into_iter()
            .filter(|d| {
                Some(d.version) == resolved.version
                    || Some(d.version) == resolved.previous_production
                    || Some(d.version) == resolved.canary_version
            })
            .collect();
        routes.push(resolved);
    }
    Ok(RoutingState {
        last_event_id,
        routes,
    })
}
