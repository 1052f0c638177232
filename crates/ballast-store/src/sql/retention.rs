//! [`RetentionStore`] on the SQL store (SQLite or PostgreSQL): retention policies, the retention
//! plan, version removal (shared with the MLflow API's version deletion) and blob reference
//! checks.
//!
//! The plan of a model is computed from one read of its versions, aliases, stage history,
//! deployments, pending transition requests and the versions of other models that name one of
//! its versions as their lineage parent. Removal computes the plan again inside the write
//! transaction, so it always acts on the current state.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use ballast_api::retention::{
    GcKept, GcVersion, RetentionPolicy, RetentionRule, MAX_KEEP_DAYS, MAX_KEEP_LAST_DEV,
};
use ballast_api::{Version, VersionMetadata};
use ballast_core::{validate_namespace, ErrorCode, ModelName, Sha256Digest, Stage};
use serde_json::{json, Value};

use super::ops::{record_audit_only, record_change};
use super::query::{self, format_time, now, to_i64, to_u64};
use super::SqlStore;
use crate::db::Db;
use crate::retention::{GcScope, ModelPlan, RetentionStore, RetentionTarget};
use crate::{Ctx, StoreError, StoreResult};

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message: message.into(),
        field: Some(field.into()),
    }
}

fn validate_policy(p: &RetentionPolicy) -> StoreResult<()> {
    if p.keep_last_dev > MAX_KEEP_LAST_DEV {
        return Err(invalid(
            "keep_last_dev",
            format!("keep_last_dev is at most {MAX_KEEP_LAST_DEV}"),
        ));
    }
    if p.keep_days > MAX_KEEP_DAYS {
        return Err(invalid(
            "keep_days",
            format!("keep_days is at most {MAX_KEEP_DAYS} (100 years)"),
        ));
    }
    Ok(())
}

/// Removes a version (its files, aliases and deployments cascade) with its audit entry and
/// `version.deleted` event. `reason` says why garbage collection removed it; the MLflow API's
/// deletion gives none. Callers check first that the version may go.
pub(super) fn delete_version(
    db: &dyn Db,
    ctx: &Ctx,
    model_id: i64,
    name: &ModelName,
    v: &Version,
    reason: Option<&str>,
) -> StoreResult<()> {
    db.execute(
        "DELETE FROM versions WHERE model_id = ?1 AND number = ?2",
        crate::params![model_id, to_i64(v.version)],
    )?;
    let mut before =
        json!({ "stage": v.stage, "digest": v.digest, "aliases": v.aliases, "files": v.files.len() });
    if let Some(reason) = reason {
        before["size"] = json!(v.total_size);
        before["reason"] = json!(reason);
    }
    record_change(
        db,
        ctx,
        "version.delete",
        &format!("{name}/{}", v.version),
        &before,
        &Value::Null,
    )
}

/// `(namespace, model_id or 0)` of a target; `not_found` when the model does not exist.
fn target_key(db: &dyn Db, target: &RetentionTarget) -> StoreResult<(String, i64)> {
    match target {
        RetentionTarget::Namespace(ns) => {
            validate_namespace(ns)?;
            Ok((ns.clone(), 0))
        }
        RetentionTarget::Model(m) => Ok((m.namespace().to_owned(), query::model_id(db, m)?)),
    }
}

fn target_subject(target: &RetentionTarget) -> String {
    match target {
        RetentionTarget::Namespace(ns) => ns.clone(),
        RetentionTarget::Model(m) => m.to_string(),
    }
}

fn load_rule(db: &dyn Db, ns: &str, model_id: i64) -> StoreResult<Option<RetentionRule>> {
    let row = db.query_row_opt(
        "SELECT body, revision, updated_by, updated_at FROM retention_policies
         WHERE namespace = ?1 AND coalesce(model_id, 0) = ?2",
        crate::params![ns, model_id],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<i64>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
            ))
        },
    )?;
    let Some((body, revision, updated_by, updated_at)) = row else {
        return Ok(None);
    };
    let model = if model_id == 0 {
        None
    } else {
        Some(model_name_of(db, model_id)?.to_string())
    };
    Ok(Some(RetentionRule {
        namespace: ns.to_owned(),
        model,
        policy: serde_json::from_str(&body)?,
        revision: to_u64(revision),
        updated_by,
        updated_at,
    }))
}

fn model_name_of(db: &dyn Db, id: i64) -> StoreResult<ModelName> {
    let (ns, m) = db
        .query_row_opt(
            "SELECT namespace, name FROM models WHERE id = ?1",
            crate::params![id],
            |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
        )?
        .ok_or_else(|| StoreError::internal(format!("model {id} vanished")))?;
    Ok(ModelName::new(&ns, &m)?)
}

fn no_policy(target: &RetentionTarget) -> StoreError {
    StoreError::not_found(format!("a retention policy on {target}"))
}

fn set_retention(
    db: &dyn Db,
    ctx: &Ctx,
    target: &RetentionTarget,
    policy: RetentionPolicy,
) -> StoreResult<RetentionRule> {
    validate_policy(&policy)?;
    let (ns, model_id) = target_key(db, target)?;
    let before = load_rule(db, &ns, model_id)?;
    let body = serde_json::to_string(&policy)?;
    let at = now();
    match &before {
        Some(_) => db.execute(
            "UPDATE retention_policies SET body = ?3, revision = revision + 1, updated_by = ?4, updated_at = ?5
             WHERE namespace = ?1 AND coalesce(model_id, 0) = ?2",
            crate::params![ns, model_id, body, ctx.actor, at],
        )?,
        None => db.execute(
            "INSERT INTO retention_policies (namespace, model_id, body, updated_by, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            crate::params![ns, (model_id != 0).then_some(model_id), body, ctx.actor, at],
        )?,
    };
    let rule = load_rule(db, &ns, model_id)?
        .ok_or_else(|| StoreError::internal("the retention policy vanished while being written"))?;
    record_change(
        db,
        ctx,
        "retention.set",
        &target_subject(target),
        &before.map_or(Value::Null, |r| json!(r.policy)),
        &json!(rule.policy),
    )?;
    Ok(rule)
}

fn delete_retention(db: &dyn Db, ctx: &Ctx, target: &RetentionTarget) -> StoreResult<()> {
    let (ns, model_id) = target_key(db, target)?;
    let before = load_rule(db, &ns, model_id)?.ok_or_else(|| no_policy(target))?;
    db.execute(
        "DELETE FROM retention_policies WHERE namespace = ?1 AND coalesce(model_id, 0) = ?2",
        crate::params![ns, model_id],
    )?;
    record_change(
        db,
        ctx,
        "retention.delete",
        &target_subject(target),
        &json!(before.policy),
        &Value::Null,
    )
}

/// The policy that applies to a model, and whether it is the model's own.
fn effective(db: &dyn Db, model_id: i64, ns: &str) -> StoreResult<Option<(RetentionRule, bool)>> {
    if let Some(rule) = load_rule(db, ns, model_id)? {
        return Ok(Some((rule, true)));
    }
    Ok(load_rule(db, ns, 0)?.map(|r| (r, false)))
}

fn retention_models(db: &dyn Db, scope: &GcScope) -> StoreResult<Vec<ModelName>> {
    let (ns, name) = match scope {
        GcScope::All => (None, None),
        GcScope::Namespace(ns) => {
            validate_namespace(ns)?;
            (Some(ns.clone()), None)
        }
        GcScope::Model(m) => {
            query::model_id(db, m)?;
            (Some(m.namespace().to_owned()), Some(m.model().to_owned()))
        }
    };
    let c = query::bytewise(db);
    let sql = format!(
        "SELECT m.namespace, m.name FROM models m
         WHERE (CAST(?1 AS TEXT) IS NULL OR m.namespace = ?1) AND (CAST(?2 AS TEXT) IS NULL OR m.name = ?2)
           AND EXISTS (SELECT 1 FROM retention_policies p
                       WHERE p.namespace = m.namespace AND (p.model_id IS NULL OR p.model_id = m.id))
         ORDER BY m.namespace{c}, m.name{c}"
    );
    let rows = db.query_map(&sql, crate::params![ns, name], |r| {
        Ok((r.get::<String>(0)?, r.get::<String>(1)?))
    })?;
    rows.iter().map(|(ns, m)| Ok(ModelName::new(ns, m)?)).collect()
}

/// What the plan needs to know about one version.
struct Candidate {
    number: u64,
    sealed: bool,
    stage: Stage,
    created_at: String,
    /// The latest of creation, seal and last stage move.
    last_change: String,
    ever_production: bool,
    /// Lineage parents within the same model.
    parents: Vec<u64>,
}

/// The number of `ns/model/N` when `parent` names a version of `model`.
fn parent_in(parent: &str, model: &ModelName) -> Option<u64> {
    let rest = parent
        .trim()
        .strip_prefix(model.to_string().as_str())?
        .strip_prefix('/')?;
    rest.parse().ok().filter(|n| *n > 0)
}

fn load_candidates(db: &dyn Db, id: i64, name: &ModelName) -> StoreResult<Vec<Candidate>> {
    let rows = db.query_map(
        "SELECT number, sealed, stage, metadata, created_at, sealed_at, stage_changed_at, ever_production
         FROM versions WHERE model_id = ?1 ORDER BY number DESC",
        crate::params![id],
        |r| {
            Ok((
                r.get::<i64>(0)?,
                r.get::<bool>(1)?,
                r.get::<String>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<Option<String>>(5)?,
                r.get::<String>(6)?,
                r.get::<bool>(7)?,
            ))
        },
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (number, sealed, stage, metadata, created_at, sealed_at, stage_changed_at, ever_production) in rows {
        let metadata: VersionMetadata = serde_json::from_str(&metadata)?;
        let mut parents: Vec<u64> = metadata.lineage.parent_version.into_iter().collect();
        parents.extend(
            metadata
                .lineage
                .parent
                .as_deref()
                .and_then(|p| parent_in(p, name)),
        );
        let last_change = [Some(&created_at), sealed_at.as_ref(), Some(&stage_changed_at)]
            .into_iter()
            .flatten()
            .max()
            .cloned()
            .unwrap_or_default();
        out.push(Candidate {
            number: to_u64(number),
            sealed,
            stage: query::parse_stage(&stage)?,
            created_at,
            last_change,
            ever_production,
            parents,
        });
    }
    Ok(out)
}

/// `number → values` from a query returning `(number, value)` rows for one model.
fn by_number(db: &dyn Db, sql: &str, id: i64) -> StoreResult<BTreeMap<u64, Vec<String>>> {
    let rows = db.query_map(sql, crate::params![id], |r| {
        Ok((r.get::<i64>(0)?, r.get::<String>(1)?))
    })?;
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (n, v) in rows {
        out.entry(to_u64(n)).or_default().push(v);
    }
    Ok(out)
}

/// Versions of other models naming a version of `name` as their `lineage.parent`.
fn named_as_parent(db: &dyn Db, name: &ModelName) -> StoreResult<BTreeMap<u64, Vec<String>>> {
    // Every `ns/model/…` sorts after `ns/model/` and before `ns/model0` ('0' follows '/').
    let low = format!("{name}/");
    let high = format!("{name}0");
    // The expression of the `versions_by_lineage_parent` index, compared bytewise.
    let parent = format!(
        "{}{}",
        query::json_text(db, "v.metadata", &["lineage", "parent"]),
        query::bytewise(db)
    );
    let sql = format!(
        "SELECT {parent}, m.namespace, m.name, v.number
         FROM versions v JOIN models m ON m.id = v.model_id
         WHERE {parent} > ?1 AND {parent} < ?2"
    );
    let rows = db.query_map(&sql, crate::params![low, high], |r| {
        Ok((
            r.get::<String>(0)?,
            r.get::<String>(1)?,
            r.get::<String>(2)?,
            r.get::<i64>(3)?,
        ))
    })?;
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (parent, ns, m, n) in rows {
        // Within the model, a child protects its parent only while the child is kept (the plan
        // follows `parents`); a version of another model protects it while it exists.
        if ns == name.namespace() && m == name.model() {
            continue;
        }
        if let Some(p) = parent_in(&parent, name) {
            out.entry(p).or_default().push(format!("{ns}/{m}/{}", to_u64(n)));
        }
    }
    Ok(out)
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Decides which versions of a model may go at `now_ms`.
fn plan(db: &dyn Db, name: &ModelName, now_ms: i64, explain: bool) -> StoreResult<ModelPlan> {
    let id = query::model_id(db, name)?;
    let mut out = ModelPlan {
        model: name.to_string(),
        ..ModelPlan::default()
    };
    let versions = load_candidates(db, id, name)?;
    let policy = match effective(db, id, name.namespace())? {
        Some((rule, _)) if rule.policy.enabled => rule.policy,
        found => {
            if explain {
                let why = if found.is_some() {
                    "retention is disabled for this model"
                } else {
                    "no retention policy applies to this model"
                };
                out.kept = versions
                    .iter()
                    .map(|v| GcKept {
                        model: name.to_string(),
                        version: v.number,
                        reasons: vec![why.to_owned()],
                    })
                    .collect();
            }
            return Ok(out);
        }
    };
    let c = query::bytewise(db);
    let aliases = by_number(
        db,
        &format!("SELECT number, alias FROM aliases WHERE model_id = ?1 ORDER BY alias{c}"),
        id,
    )?;
    let was_production = by_number(
        db,
        "SELECT DISTINCT number, CAST('production' AS TEXT) FROM stage_history
         WHERE model_id = ?1 AND to_stage = 'production'",
        id,
    )?;
    let deployed = by_number(
        db,
        &format!("SELECT number, region FROM deployments WHERE model_id = ?1 ORDER BY region{c}"),
        id,
    )?;
    let pending = by_number(
        db,
        "SELECT number, to_stage FROM transition_requests WHERE model_id = ?1 AND state = 'pending' ORDER BY id",
        id,
    )?;
    let children = named_as_parent(db, name)?;
    let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let young_since = format_time(now - time::Duration::days(i64::from(policy.keep_days)));

    let mut reasons: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut newest_dev = 0u32;
    // Newest first: a version's own reasons are final before its parents (always older) are
    // reached, so "lineage parent of a kept version" needs one pass.
    for v in &versions {
        let mut why = Vec::new();
        match v.stage {
            Stage::Staging => why.push("in staging".to_owned()),
            Stage::Production => why.push("in production".to_owned()),
            Stage::Development => {
                if newest_dev < policy.keep_last_dev {
                    why.push(format!(
                        "among the newest {}",
                        plural(
                            policy.keep_last_dev,
                            "development version",
                            "development versions"
                        )
                    ));
                }
                newest_dev = newest_dev.saturating_add(1);
            }
            Stage::Archived => {}
        }
        if (v.ever_production || was_production.contains_key(&v.number)) && v.stage != Stage::Production {
            why.push("was in production".to_owned());
        }
        for a in aliases.get(&v.number).into_iter().flatten() {
            why.push(format!("alias {a}"));
        }
        if let Some(regions) = deployed.get(&v.number) {
            let regions: BTreeSet<&String> = regions.iter().collect();
            let regions: Vec<&str> = regions.into_iter().map(String::as_str).collect();
            why.push(format!("deployed in {}", regions.join(", ")));
        }
        for to in pending.get(&v.number).into_iter().flatten() {
            why.push(format!("pending transition request to {to}"));
        }
        for child in children.get(&v.number).into_iter().flatten() {
            why.push(format!("lineage parent of {child}"));
        }
        if v.last_change >= young_since {
            why.push(format!(
                "younger than {}",
                plural(policy.keep_days, "day", "days")
            ));
        }
        let inherited = reasons.remove(&v.number).unwrap_or_default();
        why.extend(inherited);
        if !why.is_empty() {
            for p in &v.parents {
                reasons
                    .entry(*p)
                    .or_default()
                    .push(format!("lineage parent of kept version {}", v.number));
            }
        }
        if why.is_empty() {
            let newest = plural(
                policy.keep_last_dev,
                "development version",
                "development versions",
            );
            let what = match (v.sealed, v.stage) {
                (false, _) => format!("draft (never sealed), not among the newest {newest}"),
                (true, Stage::Archived) => "archived version that was never in production".to_owned(),
                _ => format!("development version, not among the newest {newest}"),
            };
            out.remove.push(GcVersion {
                model: name.to_string(),
                version: v.number,
                stage: v.stage.to_string(),
                state: if v.sealed { "sealed" } else { "draft" }.to_owned(),
                created_at: v.created_at.clone(),
                size: 0,
                reason: format!(
                    "{what}, unchanged for {} or more (last change {})",
                    plural(policy.keep_days, "day", "days"),
                    v.last_change
                ),
            });
        } else if explain {
            out.kept.push(GcKept {
                model: name.to_string(),
                version: v.number,
                reasons: why,
            });
        }
    }
    out.remove.reverse();
    out.kept.reverse();
    let mut blobs: BTreeMap<Sha256Digest, u64> = BTreeMap::new();
    for v in &mut out.remove {
        let rows = db.query_map(
            "SELECT sha256, size FROM files WHERE model_id = ?1 AND number = ?2",
            crate::params![id, to_i64(v.version)],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?;
        for (d, size) in rows {
            v.size += to_u64(size);
            if let Ok(d) = d.parse::<Sha256Digest>() {
                blobs.insert(d, to_u64(size));
            }
        }
    }
    out.blobs = blobs.into_iter().collect();
    Ok(out)
}

fn apply(db: &dyn Db, ctx: &Ctx, name: &ModelName, now_ms: i64) -> StoreResult<ModelPlan> {
    let mut planned = plan(db, name, now_ms, false)?;
    let id = query::model_id(db, name)?;
    let mut removed = Vec::with_capacity(planned.remove.len());
    for v in planned.remove {
        db.batch("SAVEPOINT retention_version")?;
        let outcome = query::load_version(db, id, name, v.version)
            .and_then(|full| delete_version(db, ctx, id, name, &full, Some(&v.reason)));
        match outcome {
            Ok(()) => {
                db.batch("RELEASE retention_version")?;
                removed.push(v);
            }
            Err(e) => {
                db.batch("ROLLBACK TO retention_version; RELEASE retention_version")?;
                tracing::warn!(model = %name, version = v.version, error = %e, "garbage collection could not remove a version; it stays");
            }
        }
    }
    // The server checks each blob again before removing it: one still used elsewhere, or by a
    // version whose removal failed, stays.
    planned.remove = removed;
    Ok(planned)
}

fn unreferenced(
    db: &dyn Db,
    digests: &[Sha256Digest],
    ignoring: &[(ModelName, u64)],
) -> StoreResult<Vec<Sha256Digest>> {
    let mut ignored: HashSet<(i64, u64)> = HashSet::new();
    for (m, n) in ignoring {
        match query::model_id(db, m) {
            Ok(id) => {
                ignored.insert((id, *n));
            }
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let sha256 = query::json_text(db, "body", &["sha256"]);
    let artifacts: HashSet<String> = db
        .query_map(
            &format!("SELECT {sha256} FROM mlflow_objects WHERE kind = 'artifact' AND {sha256} IS NOT NULL"),
            crate::params![],
            |r| r.get::<String>(0),
        )?
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for d in digests {
        let hex = d.to_hex();
        if artifacts.contains(&hex) {
            continue;
        }
        // More versions than are left aside means at least one other uses the blob.
        let users = db.query_map(
            "SELECT DISTINCT model_id, number FROM files WHERE sha256 = ?1 LIMIT ?2",
            crate::params![hex, ignored.len() + 1],
            |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?)),
        )?;
        let used = users
            .into_iter()
            .any(|(id, n)| !ignored.contains(&(id, to_u64(n))));
        if !used {
            out.push(*d);
        }
    }
    Ok(out)
}

#[async_trait]
impl RetentionStore for SqlStore {
    async fn set_retention(
        &self,
        ctx: &Ctx,
        target: &RetentionTarget,
        policy: RetentionPolicy,
    ) -> StoreResult<RetentionRule> {
        let (c, target) = (ctx.clone(), target.clone());
        self.write(ctx, move |db| set_retention(db, &c, &target, policy))
            .await
    }

    async fn get_retention(&self, target: &RetentionTarget) -> StoreResult<RetentionRule> {
        let target = target.clone();
        self.read(move |db| {
            let (ns, id) = target_key(db, &target)?;
            load_rule(db, &ns, id)?.ok_or_else(|| no_policy(&target))
        })
        .await
    }

    async fn delete_retention(&self, ctx: &Ctx, target: &RetentionTarget) -> StoreResult<()> {
        let (c, target) = (ctx.clone(), target.clone());
        self.write(ctx, move |db| delete_retention(db, &c, &target)).await
    }

    async fn effective_retention(&self, model: &ModelName) -> StoreResult<Option<(RetentionRule, bool)>> {
        let model = model.clone();
        self.read(move |db| {
            let id = query::model_id(db, &model)?;
            effective(db, id, model.namespace())
        })
        .await
    }

    async fn retention_models(&self, scope: GcScope) -> StoreResult<Vec<ModelName>> {
        self.read(move |db| retention_models(db, &scope)).await
    }

    async fn plan_retention(&self, model: &ModelName, now_ms: i64, explain: bool) -> StoreResult<ModelPlan> {
        let model = model.clone();
        self.read(move |db| plan(db, &model, now_ms, explain)).await
    }

    async fn apply_retention(&self, ctx: &Ctx, model: &ModelName, now_ms: i64) -> StoreResult<ModelPlan> {
        let (c, model) = (ctx.clone(), model.clone());
        self.write_internal(move |db| apply(db, &c, &model, now_ms)).await
    }

    async fn unreferenced_blobs(
        &self,
        digests: Vec<Sha256Digest>,
        ignoring: Vec<(ModelName, u64)>,
    ) -> StoreResult<Vec<Sha256Digest>> {
        self.read(move |db| unreferenced(db, &digests, &ignoring)).await
    }

    async fn record_blob_sweep(&self, ctx: &Ctx, blobs: u64, bytes: u64) -> StoreResult<()> {
        let c = ctx.clone();
        self.write_internal(move |db| {
            record_audit_only(
                db,
                &c,
                "blob.gc",
                "blobs",
                &Value::Null,
                &json!({ "blobs_removed": blobs, "bytes_freed": bytes }),
            )
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use rusqlite::{params, Connection};

    use super::*;

    const OLD: &str = "2026-01-01T00:00:00.000Z";
    const YOUNG: &str = "2026-05-25T00:00:00.000Z";
    /// 2026-06-01T00:00:00Z.
    const NOW_MS: i64 = 1_780_272_000_000;

    #[test]
    fn parent_names_are_matched_exactly() {
        let m = ModelName::parse("acme/bot").unwrap();
        assert_eq!(parent_in("acme/bot/3", &m), Some(3));
        assert_eq!(parent_in(" acme/bot/12 ", &m), Some(12));
        assert_eq!(parent_in("acme/bot/0", &m), None);
        assert_eq!(parent_in("acme/bot2/3", &m), None);
        assert_eq!(parent_in("acme/bot/3/x", &m), None);
        assert_eq!(parent_in("acme/bo/3", &m), None);
    }

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
        super::super::sqlite::migrate(&mut conn).unwrap();
        assert_eq!(
            format_time(time::OffsetDateTime::from_unix_timestamp(NOW_MS / 1000).unwrap()),
            "2026-06-01T00:00:00.000Z"
        );
        conn
    }

    fn model(conn: &Connection, ns: &str, name: &str) -> i64 {
        conn.execute(
            "INSERT INTO models (namespace, name, created_by, created_at, updated_at) VALUES (?1, ?2, 't', ?3, ?3)",
            params![ns, name, OLD],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    struct V {
        n: u64,
        sealed: bool,
        stage: &'static str,
        at: &'static str,
        lineage: Value,
        ever_production: bool,
    }

    fn v(n: u64, stage: &'static str, at: &'static str) -> V {
        V {
            n,
            sealed: true,
            stage,
            at,
            lineage: json!({}),
            ever_production: false,
        }
    }

    fn insert(conn: &Connection, model: i64, v: &V) {
        let metadata = json!({ "description": "", "lineage": v.lineage });
        conn.execute(
            "INSERT INTO versions (model_id, number, sealed, stage, metadata, created_by, created_at, sealed_at, stage_changed_at, ever_production)
             VALUES (?1, ?2, ?3, ?4, ?5, 't', ?6, ?7, ?6, ?8)",
            params![model, to_i64(v.n), v.sealed, v.stage, metadata.to_string(), v.at, v.sealed.then_some(v.at), v.ever_production],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO files (model_id, number, path, sha256, size) VALUES (?1, ?2, 'w.bin', ?3, ?4)",
            params![
                model,
                to_i64(v.n),
                Sha256Digest::of(&v.n.to_le_bytes()).to_hex(),
                to_i64(v.n * 10)
            ],
        )
        .unwrap();
    }

    fn policy(conn: &Connection, ns: &str, model: Option<i64>, body: Value) {
        conn.execute(
            "INSERT INTO retention_policies (namespace, model_id, body, updated_by, updated_at) VALUES (?1, ?2, ?3, 't', ?4)",
            params![ns, model, body.to_string(), OLD],
        )
        .unwrap();
    }

    fn ctx() -> Ctx {
        Ctx {
            actor: "gc".into(),
            request_id: "r1".into(),
            idempotency: None,
        }
    }

    /// One model with a version for each rule (policy: keep the newest development version and
    /// anything younger than 30 days).
    fn fixture() -> (Connection, ModelName) {
        let conn = db();
        let bot = model(&conn, "acme", "bot");
        let other = model(&conn, "other", "child");
        let name = ModelName::parse("acme/bot").unwrap();
        let mut versions = vec![
            V {
                ever_production: true,
                ..v(1, "archived", OLD)
            },
            v(2, "development", OLD),
            v(3, "development", OLD),
            v(4, "staging", OLD),
            v(5, "production", OLD),
            v(6, "development", OLD),
            V {
                sealed: false,
                ..v(7, "development", OLD)
            },
            v(8, "archived", OLD),
            V {
                lineage: json!({ "parent_version": 3 }),
                ..v(9, "development", YOUNG)
            },
            v(10, "development", OLD),
            v(11, "development", OLD),
            v(12, "development", OLD),
            v(13, "development", OLD),
            v(14, "development", OLD),
            V {
                lineage: json!({ "parent_version": 13 }),
                ..v(15, "development", OLD)
            },
            v(16, "development", OLD),
            V {
                sealed: false,
                ..v(17, "development", YOUNG)
            },
            V {
                lineage: json!({ "parent": "acme/bot/14" }),
                ..v(18, "development", OLD)
            },
            V {
                lineage: json!({ "parent_version": 18 }),
                ..v(19, "development", YOUNG)
            },
            v(20, "development", OLD),
            v(21, "archived", OLD),
        ];
        for v in &mut versions {
            insert(&conn, bot, v);
        }
        // 21 was in production once (only the stage history says so).
        conn.execute(
            "INSERT INTO stage_history (model_id, number, from_stage, to_stage, kind, actor, at) VALUES (?1, 21, 'staging', 'production', 'promote', 't', ?2)",
            params![bot, OLD],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO aliases (model_id, alias, number, updated_at) VALUES (?1, 'champion', 2, ?2)",
            params![bot, OLD],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO deployments (model_id, number, region, url, weight, created_by, created_at) VALUES (?1, 10, 'eu-west', 'http://x', 1, 't', ?2)",
            params![bot, OLD],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO transition_requests (model_id, number, from_stage, to_stage, state, requested_by, risk, policy_source, gates_passed, verdicts, required_approvals, created_at, updated_at)
             VALUES (?1, 11, 'development', 'staging', 'pending', 't', 'low', 'none', 1, '[]', 1, ?2, ?2)",
            params![bot, OLD],
        )
        .unwrap();
        insert(
            &conn,
            other,
            &V {
                lineage: json!({ "parent": "acme/bot/12" }),
                ..v(1, "development", OLD)
            },
        );
        policy(
            &conn,
            "acme",
            None,
            json!({ "keep_last_dev": 1, "keep_days": 30 }),
        );
        (conn, name)
    }

    fn reasons(plan: &ModelPlan, n: u64) -> Vec<String> {
        plan.kept
            .iter()
            .find(|k| k.version == n)
            .map(|k| k.reasons.clone())
            .unwrap_or_default()
    }

    #[test]
    fn plan_keeps_every_protected_version() {
        let (conn, name) = fixture();
        let plan = plan(&conn, &name, NOW_MS, true).unwrap();
        let removed: Vec<u64> = plan.remove.iter().map(|v| v.version).collect();
        assert_eq!(removed, vec![6, 7, 8, 13, 15, 16]);
        let expect = [
            (1, "was in production"),
            (2, "alias champion"),
            (3, "lineage parent of kept version 9"),
            (4, "in staging"),
            (5, "in production"),
            (9, "younger than 30 days"),
            (10, "deployed in eu-west"),
            (11, "pending transition request to staging"),
            (12, "lineage parent of other/child/1"),
            (14, "lineage parent of kept version 18"),
            (17, "younger than 30 days"),
            (18, "lineage parent of kept version 19"),
            (19, "younger than 30 days"),
            (20, "among the newest 1 development version"),
            (21, "was in production"),
        ];
        for (n, why) in expect {
            assert!(
                reasons(&plan, n).iter().any(|r| r == why),
                "version {n}: expected {why:?}, got {:?}",
                reasons(&plan, n)
            );
        }
        assert_eq!(plan.kept.len(), expect.len());
        let draft = plan.remove.iter().find(|v| v.version == 7).unwrap();
        assert_eq!(draft.state, "draft");
        assert!(
            draft.reason.starts_with("draft (never sealed)"),
            "{}",
            draft.reason
        );
        assert!(plan
            .remove
            .iter()
            .find(|v| v.version == 8)
            .unwrap()
            .reason
            .starts_with("archived"));
        assert_eq!(
            plan.remove.iter().map(|v| v.size).sum::<u64>(),
            (6 + 7 + 8 + 13 + 15 + 16) * 10
        );
        assert_eq!(plan.blobs.len(), 6);

        // Thirty days later the young ones are old: 17 (an abandoned draft) goes, and 19 too; 18
        // and 14 then lose their lineage protection.
        let later = NOW_MS + 30 * 86_400_000;
        let removed: Vec<u64> = super::plan(&conn, &name, later, false)
            .unwrap()
            .remove
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(removed, vec![3, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18, 19]);
    }

    #[test]
    fn model_policy_replaces_the_namespace_policy() {
        let (conn, name) = fixture();
        let id = query::model_id(&conn, &name).unwrap();
        policy(
            &conn,
            "acme",
            Some(id),
            json!({ "keep_last_dev": 1, "keep_days": 30, "enabled": false }),
        );
        let p = plan(&conn, &name, NOW_MS, true).unwrap();
        assert!(p.remove.is_empty());
        assert_eq!(p.kept.len(), 21);
        assert_eq!(
            p.kept[0].reasons,
            vec!["retention is disabled for this model".to_owned()]
        );
        conn.execute(
            "UPDATE retention_policies SET body = ?1 WHERE model_id = ?2",
            params![json!({ "keep_last_dev": 100, "keep_days": 0 }).to_string(), id],
        )
        .unwrap();
        let p = plan(&conn, &name, NOW_MS, false).unwrap();
        assert_eq!(p.remove.iter().map(|v| v.version).collect::<Vec<_>>(), vec![8]);
        // Without any policy nothing goes.
        conn.execute("DELETE FROM retention_policies", []).unwrap();
        let p = plan(&conn, &name, NOW_MS, true).unwrap();
        assert!(p.remove.is_empty());
        assert_eq!(
            p.kept[0].reasons,
            vec!["no retention policy applies to this model".to_owned()]
        );
        assert!(retention_models(&conn, &GcScope::All).unwrap().is_empty());
    }

    #[test]
    fn apply_removes_with_audit_and_events_and_decides_again() {
        let (conn, name) = fixture();
        // A version that gained an alias since a dry run is not removed.
        let id = query::model_id(&conn, &name).unwrap();
        conn.execute(
            "INSERT INTO aliases (model_id, alias, number, updated_at) VALUES (?1, 'keep', 6, ?2)",
            params![id, OLD],
        )
        .unwrap();
        let done = apply(&conn, &ctx(), &name, NOW_MS).unwrap();
        assert_eq!(
            done.remove.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![7, 8, 13, 15, 16]
        );
        let left: Vec<i64> = conn
            .prepare("SELECT number FROM versions WHERE model_id = ?1 ORDER BY number")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            left,
            vec![1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 14, 17, 18, 19, 20, 21]
        );
        let events: i64 = conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE type = 'version.deleted'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(events, 5);
        let audited: String = conn
            .query_row(
                "SELECT before FROM audit WHERE action = 'version.delete' AND target = 'acme/bot/7'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(audited.contains("draft (never sealed)"), "{audited}");
        let files: i64 = conn
            .query_row(
                "SELECT count(*) FROM files WHERE model_id = ?1 AND number IN (7, 8, 13, 15, 16)",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(files, 0);
        assert!(plan(&conn, &name, NOW_MS, false).unwrap().remove.is_empty());

        // Blobs of removed versions are unreferenced now; the others are not.
        let gone = Sha256Digest::of(&7u64.to_le_bytes());
        let kept = Sha256Digest::of(&6u64.to_le_bytes());
        assert_eq!(unreferenced(&conn, &[gone, kept], &[]).unwrap(), vec![gone]);
        // A dry run may leave aside versions it plans to remove.
        assert_eq!(
            unreferenced(&conn, &[gone, kept], &[(name.clone(), 6)]).unwrap(),
            vec![gone, kept]
        );
        // An MLflow artifact keeps its blob.
        conn.execute(
            "INSERT INTO mlflow_objects (kind, id, body) VALUES ('artifact', 'x/y', ?1)",
            [json!({ "sha256": gone.to_hex(), "size": 70 }).to_string()],
        )
        .unwrap();
        assert!(unreferenced(&conn, &[gone], &[]).unwrap().is_empty());
    }

    #[test]
    fn policies_are_validated_and_audited() {
        let conn = db();
        model(&conn, "acme", "bot");
        let ns = RetentionTarget::Namespace("acme".into());
        let bad = RetentionPolicy {
            keep_last_dev: MAX_KEEP_LAST_DEV + 1,
            keep_days: 1,
            enabled: true,
        };
        assert_eq!(
            set_retention(&conn, &ctx(), &ns, bad)
                .unwrap_err()
                .field
                .as_deref(),
            Some("keep_last_dev")
        );
        let bad = RetentionPolicy {
            keep_last_dev: 1,
            keep_days: MAX_KEEP_DAYS + 1,
            enabled: true,
        };
        assert_eq!(
            set_retention(&conn, &ctx(), &ns, bad)
                .unwrap_err()
                .field
                .as_deref(),
            Some("keep_days")
        );
        let e = set_retention(
            &conn,
            &ctx(),
            &RetentionTarget::Namespace("Bad NS".into()),
            RetentionPolicy {
                keep_last_dev: 1,
                keep_days: 1,
                enabled: true,
            },
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidName);
        let missing = RetentionTarget::Model(ModelName::parse("acme/nope").unwrap());
        assert_eq!(
            set_retention(
                &conn,
                &ctx(),
                &missing,
                RetentionPolicy {
                    keep_last_dev: 1,
                    keep_days: 1,
                    enabled: true
                }
            )
            .unwrap_err()
            .code,
            ErrorCode::NotFound
        );
        let good = RetentionPolicy {
            keep_last_dev: 3,
            keep_days: 7,
            enabled: true,
        };
        let r = set_retention(&conn, &ctx(), &ns, good).unwrap();
        assert_eq!((r.revision, r.model.as_deref()), (1, None));
        let r = set_retention(&conn, &ctx(), &ns, RetentionPolicy { keep_days: 8, ..good }).unwrap();
        assert_eq!((r.revision, r.policy.keep_days), (2, 8));
        let m = RetentionTarget::Model(ModelName::parse("acme/bot").unwrap());
        let r = set_retention(&conn, &ctx(), &m, good).unwrap();
        assert_eq!(r.model.as_deref(), Some("acme/bot"));
        delete_retention(&conn, &ctx(), &m).unwrap();
        assert_eq!(
            delete_retention(&conn, &ctx(), &m).unwrap_err().code,
            ErrorCode::NotFound
        );
        let actions: Vec<String> = conn
            .prepare("SELECT action FROM audit ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            actions,
            vec![
                "retention.set",
                "retention.set",
                "retention.set",
                "retention.delete"
            ]
        );
    }
}
