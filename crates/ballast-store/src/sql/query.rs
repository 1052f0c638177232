//! Reads: loading models, versions and aliases, listings with keyset cursors, the audit trail.

use std::collections::{BTreeMap, HashMap};

use ballast_api::{
    Alias, AuditEntry, AuditList, FileEntry, Model, ModelList, Version, VersionList, VersionState,
};
use ballast_core::{ErrorCode, ModelName, Sha256Digest, Stage};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::db::{Db, Dialect, Value};
use crate::{AuditFilter, ModelFilter, StoreError, StoreResult, StoreStats, VersionFilter, VersionOrder};

/// Now, as RFC 3339 UTC with exactly three fractional digits. The width is fixed so that
/// timestamps sort as text (`created_at` ordering and cursors compare the stored strings);
/// the well-known RFC 3339 format trims trailing zeros (`.72Z` would sort after `.723Z`).
pub(super) fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// RFC 3339 UTC with exactly three fractional digits, so text order is time order.
pub(super) fn format_time(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub(super) fn parse_stage(s: &str) -> StoreResult<Stage> {
    s.parse()
        .map_err(|_| StoreError::internal(format!("unknown stage {s:?} in the database")))
}

pub(super) fn model_id(db: &dyn Db, name: &ModelName) -> StoreResult<i64> {
    db.query_value::<i64>(
        "SELECT id FROM models WHERE namespace = ?1 AND name = ?2",
        crate::params![name.namespace(), name.model()],
    )?
    .ok_or_else(|| StoreError::not_found(format!("model {name}")))
}

/// ` COLLATE "C"` on PostgreSQL (whose text order follows the database's locale), nothing on
/// SQLite (which compares bytes): text compared or ordered for paging sorts by bytes on both.
pub(super) fn bytewise(db: &dyn Db) -> &'static str {
    match db.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " COLLATE \"C\"",
    }
}

/// The text at `path` (object keys) inside the JSON text column `column`, or NULL.
pub(super) fn json_text(db: &dyn Db, column: &str, path: &[&str]) -> String {
    match db.dialect() {
        Dialect::Sqlite => format!("json_extract({column}, '$.{}')", path.join(".")),
        Dialect::Postgres => format!("(CAST({column} AS jsonb) #>> '{{{}}}')", path.join(",")),
    }
}

/// A table of `(key, value)` over the JSON object of string values in `column` (values as text).
fn json_object_text(db: &dyn Db, column: &str) -> String {
    match db.dialect() {
        Dialect::Sqlite => format!("json_each({column})"),
        Dialect::Postgres => format!("jsonb_each_text(CAST({column} AS jsonb))"),
    }
}

/// The metrics of the version metadata in `column` as a FROM item `m` with text `m.key`, and
/// the expression of the metric's number.
fn json_metrics(db: &dyn Db, column: &str) -> (String, &'static str) {
    match db.dialect() {
        Dialect::Sqlite => (format!("json_each({column}, '$.metrics') AS m"), "m.value"),
        Dialect::Postgres => (
            format!("jsonb_each(CAST({column} AS jsonb) -> 'metrics') AS m"),
            "CAST(m.value AS DOUBLE PRECISION)",
        ),
    }
}

/// A one-column table (`value`) of the strings of a JSON array passed as parameter `?{i}`.
fn json_array_param(db: &dyn Db, i: usize) -> String {
    match db.dialect() {
        Dialect::Sqlite => format!("(SELECT value FROM json_each(?{i}))"),
        Dialect::Postgres => format!("(SELECT jsonb_array_elements_text(CAST(CAST(?{i} AS TEXT) AS jsonb)))"),
    }
}

fn limit(l: u32) -> i64 {
    i64::from(l.clamp(1, 1000))
}

fn encode_cursor(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn bad_cursor() -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message: "invalid cursor: pass the next_cursor value of a previous page unchanged".into(),
        field: Some("cursor".into()),
    }
}

fn decode_cursor(c: &str) -> StoreResult<serde_json::Value> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(bad_cursor)
}

pub(super) fn load_model(db: &dyn Db, id: i64) -> StoreResult<Model> {
    load_models(db, &[id])?
        .pop()
        .ok_or_else(|| StoreError::not_found("model"))
}

/// Models `ids`, in the order asked (ids that do not exist are left out), read with three
/// queries whatever their count.
fn load_models(db: &dyn Db, ids: &[i64]) -> StoreResult<Vec<Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let args: Vec<Value> = ids.iter().map(|i| Value::Integer(*i)).collect();
    let list = (1..=args.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut production: HashMap<i64, u64> = HashMap::new();
    let sql = format!(
        "SELECT model_id, max(number) FROM versions WHERE stage = 'production' AND model_id IN ({list})
         GROUP BY model_id"
    );
    for r in db.query(&sql, &args)? {
        production.insert(r.get(0)?, to_u64(r.get(1)?));
    }
    let mut aliases: HashMap<i64, BTreeMap<String, u64>> = HashMap::new();
    let sql = format!("SELECT model_id, alias, number FROM aliases WHERE model_id IN ({list})");
    for r in db.query(&sql, &args)? {
        aliases
            .entry(r.get(0)?)
            .or_default()
            .insert(r.get(1)?, to_u64(r.get(2)?));
    }
    let sql = format!(
        "SELECT id, namespace, name, description, tags, latest_version, created_by, created_at, updated_at, revision
         FROM models WHERE id IN ({list})"
    );
    let mut found: HashMap<i64, Model> = HashMap::new();
    for r in db.query(&sql, &args)? {
        let id: i64 = r.get(0)?;
        let ns: String = r.get(1)?;
        let name: String = r.get(2)?;
        let tags: String = r.get(4)?;
        let m = Model {
            name: format!("{ns}/{name}"),
            namespace: ns,
            description: r.get(3)?,
            tags: serde_json::from_str(&tags)?,
            latest_version: to_u64(r.get(5)?),
            production_version: production.get(&id).copied(),
            aliases: aliases.remove(&id).unwrap_or_default(),
            created_by: r.get(6)?,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
            revision: to_u64(r.get(9)?),
        };
        found.insert(id, m);
    }
    Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
}

pub(super) fn newest_in_stage(db: &dyn Db, id: i64, stage: Stage) -> StoreResult<Option<u64>> {
    Ok(db
        .query_value::<i64>(
            "SELECT number FROM versions WHERE model_id = ?1 AND stage = ?2 ORDER BY number DESC LIMIT 1",
            crate::params![id, stage.as_str()],
        )?
        .map(to_u64))
}

pub(super) fn load_files(db: &dyn Db, id: i64, number: u64) -> StoreResult<Vec<FileEntry>> {
    let mut files = db.query_map(
        "SELECT path, size, sha256, media_type FROM files WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number)],
        |r| {
            Ok(FileEntry {
                path: r.get(0)?,
                size: to_u64(r.get(1)?),
                sha256: r.get(2)?,
                media_type: r.get(3)?,
            })
        },
    )?;
    // Manifest order is byte order of the paths, whatever the database's collation.
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(files)
}

pub(super) fn load_version(db: &dyn Db, id: i64, name: &ModelName, number: u64) -> StoreResult<Version> {
    load_versions(db, id, name, &[number])?
        .pop()
        .ok_or_else(|| StoreError::not_found(format!("version {number} of {name}")))
}

/// Versions `numbers` of model `id`, in the order asked (numbers that do not exist are left
/// out), read with three queries whatever their count.
fn load_versions(db: &dyn Db, id: i64, name: &ModelName, numbers: &[u64]) -> StoreResult<Vec<Version>> {
    if numbers.is_empty() {
        return Ok(Vec::new());
    }
    let mut args: Vec<Value> = Vec::with_capacity(numbers.len() + 1);
    args.push(id.into());
    args.extend(numbers.iter().map(|n| Value::Integer(to_i64(*n))));
    let list = (2..=args.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut files: HashMap<i64, Vec<FileEntry>> = HashMap::new();
    let sql = format!(
        "SELECT number, path, size, sha256, media_type FROM files WHERE model_id = ?1 AND number IN ({list})"
    );
    for r in db.query(&sql, &args)? {
        files.entry(r.get(0)?).or_default().push(FileEntry {
            path: r.get(1)?,
            size: to_u64(r.get(2)?),
            sha256: r.get(3)?,
            media_type: r.get(4)?,
        });
    }
    let mut aliases: HashMap<i64, Vec<String>> = HashMap::new();
    let sql = format!("SELECT number, alias FROM aliases WHERE model_id = ?1 AND number IN ({list})");
    for r in db.query(&sql, &args)? {
        aliases.entry(r.get(0)?).or_default().push(r.get(1)?);
    }
    let sql = format!(
        "SELECT number, sealed, stage, metadata, tags, digest, created_by, created_at, sealed_at, stage_changed_at,
                revision
         FROM versions WHERE model_id = ?1 AND number IN ({list})"
    );
    let mut found: HashMap<i64, Version> = HashMap::new();
    for row in db.query(&sql, &args)? {
        let n: i64 = row.get(0)?;
        let mut files = files.remove(&n).unwrap_or_default();
        // Manifest order is byte order of the paths, whatever the database's collation.
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let mut aliases = aliases.remove(&n).unwrap_or_default();
        aliases.sort_unstable();
        let v = Version {
            model: name.to_string(),
            version: to_u64(n),
            state: if row.get::<bool>(1)? {
                VersionState::Sealed
            } else {
                VersionState::Draft
            },
            stage: parse_stage(&row.get::<String>(2)?)?,
            metadata: serde_json::from_str(&row.get::<String>(3)?)?,
            tags: serde_json::from_str(&row.get::<String>(4)?)?,
            total_size: files.iter().map(|f| f.size).sum(),
            files,
            digest: row.get(5)?,
            aliases,
            created_by: row.get(6)?,
            created_at: row.get(7)?,
            sealed_at: row.get(8)?,
            stage_changed_at: row.get(9)?,
            revision: to_u64(row.get(10)?),
        };
        found.insert(n, v);
    }
    Ok(numbers.iter().filter_map(|n| found.remove(&to_i64(*n))).collect())
}

pub(super) fn load_alias(db: &dyn Db, id: i64, name: &ModelName, alias: &str) -> StoreResult<Alias> {
    db.query_row_opt(
        "SELECT number, revision, updated_at FROM aliases WHERE model_id = ?1 AND alias = ?2",
        crate::params![id, alias],
        |r| {
            Ok(Alias {
                model: name.to_string(),
                alias: alias.to_owned(),
                version: to_u64(r.get(0)?),
                revision: to_u64(r.get(1)?),
                updated_at: r.get(2)?,
            })
        },
    )?
    .ok_or_else(|| StoreError::not_found(format!("alias {alias:?} of {name}")))
}

/// Adds "has tag `key` (with `value`, when given)" on the JSON tags column `column`.
fn push_tag_filter(
    db: &dyn Db,
    sql: &mut String,
    args: &mut Vec<Value>,
    column: &str,
    key: &str,
    value: Option<&str>,
) {
    args.push(key.into());
    let ki = args.len();
    let value_clause = match value {
        Some(v) => {
            args.push(v.into());
            format!(" AND value = ?{}", args.len())
        }
        None => String::new(),
    };
    let tags = json_object_text(db, column);
    *sql += &format!(" AND EXISTS (SELECT 1 FROM {tags} WHERE key = ?{ki}{value_clause})");
}

pub(super) fn list_models(db: &dyn Db, f: &ModelFilter) -> StoreResult<ModelList> {
    let c = bytewise(db);
    let mut sql = String::from("SELECT id, namespace, name FROM models WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if let Some(ns) = &f.namespace {
        args.push(ns.clone().into());
        sql += &format!(" AND namespace = ?{}", args.len());
    }
    if let Some(list) = &f.namespaces {
        args.push(serde_json::Value::from(list.clone()).to_string().into());
        sql += &format!(" AND namespace IN {}", json_array_param(db, args.len()));
    }
    if let Some(p) = &f.prefix {
        args.push(p.clone().into());
        let i = args.len();
        sql += &format!(
            " AND substr(namespace || '/' || name, 1, length(CAST(?{i} AS TEXT))) = CAST(?{i} AS TEXT)"
        );
    }
    if let Some((k, v)) = &f.tag {
        push_tag_filter(db, &mut sql, &mut args, "models.tags", k, v.as_deref());
    }
    if let Some(cur) = &f.cursor {
        let cur = decode_cursor(cur)?;
        let (ns, name) = match (
            cur.get(0).and_then(|v| v.as_str()),
            cur.get(1).and_then(|v| v.as_str()),
        ) {
            (Some(a), Some(b)) => (a.to_owned(), b.to_owned()),
            _ => return Err(bad_cursor()),
        };
        args.push(ns.into());
        args.push(name.into());
        let (a, b) = (args.len() - 1, args.len());
        sql += &format!(" AND (namespace{c}, name{c}) > (?{a}, ?{b})");
    }
    let lim = limit(f.limit);
    sql += &format!(" ORDER BY namespace{c}, name{c} LIMIT {}", lim + 1);
    let rows = db.query_map(&sql, &args, |r| {
        Ok((r.get::<i64>(0)?, r.get::<String>(1)?, r.get::<String>(2)?))
    })?;
    let more = rows.len() as i64 > lim;
    let page: Vec<(i64, String, String)> = rows
        .into_iter()
        .take(usize::try_from(lim).unwrap_or(1000))
        .collect();
    let ids: Vec<i64> = page.iter().map(|(id, _, _)| *id).collect();
    let models = load_models(db, &ids)?;
    if models.len() != ids.len() {
        return Err(StoreError::internal(
            "a listed model vanished while its page was read",
        ));
    }
    let next_cursor = match page.last() {
        Some((_, ns, name)) if more => Some(encode_cursor(&serde_json::json!([ns, name]))),
        _ => None,
    };
    Ok(ModelList { models, next_cursor })
}

/// The cursor key of a version listing as a parameter, if it has the order's type.
fn cursor_key(order: &VersionOrder, k: &serde_json::Value) -> Option<Value> {
    match (order, k) {
        (VersionOrder::Number, serde_json::Value::Number(x)) => x.as_i64().map(Value::Integer),
        (VersionOrder::CreatedAt, serde_json::Value::String(s)) => Some(Value::Text(s.clone())),
        (VersionOrder::Metric(_), serde_json::Value::Number(x)) => x.as_f64().map(Value::Real),
        _ => None,
    }
}

pub(super) fn list_versions(db: &dyn Db, name: &ModelName, f: &VersionFilter) -> StoreResult<VersionList> {
    let id = model_id(db, name)?;
    let mut args: Vec<Value> = vec![id.into()];
    // The ordering key `k` is computed in an inner query, so the outer one can filter and
    // order by it on both engines.
    let (key_expr, collate) = match &f.order {
        VersionOrder::Number => ("v.number".to_owned(), ""),
        VersionOrder::CreatedAt => ("v.created_at".to_owned(), bytewise(db)),
        VersionOrder::Metric(m) => {
            args.push(m.clone().into());
            let (metrics, value) = json_metrics(db, "v.metadata");
            (
                format!("(SELECT {value} FROM {metrics} WHERE m.key = ?{})", args.len()),
                "",
            )
        }
    };
    let mut inner =
        format!("SELECT v.number AS number, {key_expr} AS k FROM versions v WHERE v.model_id = ?1");
    if let Some(st) = f.stage {
        args.push(st.as_str().into());
        inner += &format!(" AND v.stage = ?{}", args.len());
    }
    if let Some(sealed) = f.sealed {
        inner += if sealed {
            " AND v.sealed = 1"
        } else {
            " AND v.sealed = 0"
        };
    }
    for (k, v) in &f.tags {
        push_tag_filter(db, &mut inner, &mut args, "v.tags", k, v.as_deref());
    }
    for m in &f.metrics {
        args.push(m.name.clone().into());
        let ni = args.len();
        args.push(Value::Real(m.value));
        let (metrics, value) = json_metrics(db, "v.metadata");
        inner += &format!(
            " AND EXISTS (SELECT 1 FROM {metrics} WHERE m.key = ?{ni} AND {value} {} ?{})",
            m.op,
            args.len()
        );
    }
    let mut sql = format!("SELECT number, k FROM ({inner}) AS page WHERE k IS NOT NULL");
    let (cmp, dir) = if f.descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some(cur) = &f.cursor {
        let cur = decode_cursor(cur)?;
        let n = cur.get(1).and_then(serde_json::Value::as_i64);
        let k = cur.get(0).and_then(|k| cursor_key(&f.order, k));
        let (Some(n), Some(k)) = (n, k) else {
            return Err(bad_cursor());
        };
        args.push(k);
        let ki = args.len();
        args.push(n.into());
        let ni = args.len();
        sql += &format!(" AND (k{collate} {cmp} ?{ki} OR (k = ?{ki} AND number {cmp} ?{ni}))");
    }
    let lim = limit(f.limit);
    sql += &format!(" ORDER BY k{collate} {dir}, number {dir} LIMIT {}", lim + 1);
    let rows = db.query_map(&sql, &args, |r| Ok((r.get::<i64>(0)?, r.get::<Value>(1)?)))?;
    let more = rows.len() as i64 > lim;
    let page: Vec<(i64, Value)> = rows
        .into_iter()
        .take(usize::try_from(lim).unwrap_or(1000))
        .collect();
    let numbers: Vec<u64> = page.iter().map(|(n, _)| to_u64(*n)).collect();
    let versions = load_versions(db, id, name, &numbers)?;
    if versions.len() != numbers.len() {
        return Err(StoreError::internal(
            "a listed version vanished while its page was read",
        ));
    }
    let last = page.into_iter().last();
    let next_cursor = match (more, last) {
        (true, Some((n, k))) => {
            let kj = match k {
                Value::Integer(i) => serde_json::json!(i),
                Value::Real(x) => serde_json::json!(x),
                Value::Text(s) => serde_json::json!(s),
                _ => serde_json::Value::Null,
            };
            Some(encode_cursor(&serde_json::json!([kj, n])))
        }
        _ => None,
    };
    Ok(VersionList {
        versions,
        next_cursor,
    })
}

pub(super) fn blob_size(db: &dyn Db, d: Sha256Digest) -> StoreResult<Option<u64>> {
    Ok(db
        .query_value::<i64>(
            "SELECT size FROM files WHERE sha256 = ?1 LIMIT 1",
            crate::params![d.to_hex()],
        )?
        .map(to_u64))
}

pub(super) fn referenced_blobs(db: &dyn Db) -> StoreResult<Vec<(Sha256Digest, u64)>> {
    let sql = format!(
        "SELECT sha256, max(size) FROM files GROUP BY sha256 ORDER BY sha256{}",
        bytewise(db)
    );
    db.query_map(&sql, &[], |r| {
        let d: String = r.get(0)?;
        let d: Sha256Digest = d
            .parse()
            .map_err(|_| StoreError::internal(format!("bad digest {d:?} in the database")))?;
        Ok((d, to_u64(r.get(1)?)))
    })
}

/// The chained hash of an audit entry.
pub(super) fn audit_hash(prev: &str, fields: [&str; 8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    for f in fields {
        h.update(b"\x1f");
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

pub(super) fn list_audit(db: &dyn Db, f: &AuditFilter) -> StoreResult<AuditList> {
    let c = bytewise(db);
    let mut sql = String::from(
        "SELECT id, at, actor, action, target, before, after, request_id, hash FROM audit WHERE id > ?1",
    );
    let mut args: Vec<Value> = vec![to_i64(f.after.unwrap_or(0)).into()];
    if let Some(m) = &f.model {
        args.push(m.clone().into());
        let i = args.len();
        sql += &format!(
            " AND (target = ?{i} OR substr(target, 1, length(CAST(?{i} AS TEXT)) + 1) \
             IN (CAST(?{i} AS TEXT) || '/', CAST(?{i} AS TEXT) || '@'))"
        );
    }
    if let Some(a) = &f.actor {
        args.push(a.clone().into());
        sql += &format!(" AND actor = ?{}", args.len());
    }
    if let Some(t) = &f.since {
        args.push(t.clone().into());
        sql += &format!(" AND at{c} >= ?{}", args.len());
    }
    if let Some(t) = &f.until {
        args.push(t.clone().into());
        sql += &format!(" AND at{c} < ?{}", args.len());
    }
    if let Some(a) = &f.action {
        args.push(a.clone().into());
        sql += &format!(" AND action = ?{}", args.len());
    }
    let lim = limit(f.limit);
    sql += &format!(" ORDER BY id LIMIT {}", lim + 1);
    let mut entries = db.query_map(&sql, &args, |r| {
        let before: String = r.get(5)?;
        let after: String = r.get(6)?;
        Ok(AuditEntry {
            id: to_u64(r.get(0)?),
            at: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            before: serde_json::from_str(&before).unwrap_or(serde_json::Value::Null),
            after: serde_json::from_str(&after).unwrap_or(serde_json::Value::Null),
            request_id: r.get(7)?,
            hash: r.get(8)?,
        })
    })?;
    let more = entries.len() as i64 > lim;
    entries.truncate(usize::try_from(lim).unwrap_or(1000));
    let next_after = if more { entries.last().map(|e| e.id) } else { None };
    Ok(AuditList { entries, next_after })
}

/// Audit entries checked per query while verifying the chain (bounds the memory used).
const VERIFY_CHUNK: i64 = 4096;

pub(super) fn verify_audit(db: &dyn Db) -> StoreResult<Result<u64, u64>> {
    verify_audit_in_chunks(db, VERIFY_CHUNK)
}

/// Checks the chain `chunk` entries per query: `Ok(entries)`, or `Err(first bad id)`.
fn verify_audit_in_chunks(db: &dyn Db, chunk: i64) -> StoreResult<Result<u64, u64>> {
    let mut prev = String::new();
    let mut count = 0u64;
    let mut last = 0u64;
    let mut after = 0i64;
    loop {
        let rows = db.query(
            "SELECT id, at, actor, action, target, before, after, request_id, prev_hash, hash FROM audit
             WHERE id > ?1 ORDER BY id LIMIT ?2",
            crate::params![after, chunk],
        )?;
        let done = (rows.len() as i64) < chunk;
        for r in rows {
            let id: i64 = r.get(0)?;
            let s: Vec<String> = (1..=9).map(|i| r.get::<String>(i)).collect::<StoreResult<_>>()?;
            let expected = audit_hash(
                &prev,
                [&id.to_string(), &s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6]],
            );
            if s[7] != prev || s[8] != expected {
                return Ok(Err(to_u64(id)));
            }
            prev = s[8].clone();
            count += 1;
            last = to_u64(id);
            after = id;
        }
        if done {
            break;
        }
    }
    // Every change also wrote an event naming its audit entry: entries cut from the end of the
    // chain (which the chain alone cannot show) are missing there.
    let newest_referenced = newest_referenced_audit(db)?;
    if newest_referenced.is_some_and(|n| to_u64(n) > last) {
        return Ok(Err(last + 1));
    }
    Ok(Ok(count))
}

/// The newest audit entry named by an event.
fn newest_referenced_audit(db: &dyn Db) -> StoreResult<Option<i64>> {
    match db.dialect() {
        Dialect::Sqlite => Ok(db
            .query_value::<Option<i64>>(
                "SELECT max(CAST(json_extract(data, '$.audit_id') AS BIGINT)) FROM outbox",
                &[],
            )?
            .flatten()),
        Dialect::Postgres => {
            // PostgreSQL's JSON functions refuse any `\u0000` escape in a document: the (rare)
            // events holding one are read here instead.
            let parsed = db
                .query_value::<Option<i64>>(
                    "SELECT max(CAST(CAST(data AS jsonb) #>> '{audit_id}' AS BIGINT)) FROM outbox
                     WHERE strpos(data, '\\u0000') = 0",
                    &[],
                )?
                .flatten();
            let escaped = db.query_map(
                "SELECT data FROM outbox WHERE strpos(data, '\\u0000') > 0",
                &[],
                |r| {
                    let data: serde_json::Value = serde_json::from_str(&r.get::<String>(0)?)?;
                    Ok(data.get("audit_id").and_then(serde_json::Value::as_i64))
                },
            )?;
            Ok(escaped.into_iter().flatten().chain(parsed).max())
        }
    }
}

pub(super) fn stats(db: &dyn Db) -> StoreResult<StoreStats> {
    let one = |sql: &str| -> StoreResult<u64> { Ok(to_u64(db.query_value::<i64>(sql, &[])?.unwrap_or(0))) };
    Ok(StoreStats {
        models: one("SELECT count(*) FROM models")?,
        versions: one("SELECT count(*) FROM versions")?,
        blobs: one("SELECT count(DISTINCT sha256) FROM files")?,
        blob_bytes: one(
            "SELECT CAST(coalesce(sum(size), 0) AS BIGINT) FROM (SELECT max(size) AS size FROM files GROUP BY sha256) AS b",
        )?,
        audit_entries: one("SELECT count(*) FROM audit")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{now, verify_audit_in_chunks};
    use crate::Ctx;

    fn db_with_audit(entries: u64) -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::sqlite::migrate(&mut conn).unwrap();
        let ctx = Ctx {
            actor: "alice".into(),
            request_id: "req-1".into(),
            idempotency: None,
        };
        for i in 0..entries {
            let after = serde_json::json!({ "n": i });
            super::super::ops::record_audit_only(
                &conn,
                &ctx,
                "test.change",
                "acme/bot",
                &serde_json::Value::Null,
                &after,
            )
            .unwrap();
        }
        conn
    }

    #[test]
    fn the_audit_chain_is_verified_across_chunks() {
        let conn = db_with_audit(10);
        for chunk in [1, 3, 5, 10, 11, 4096] {
            assert_eq!(
                verify_audit_in_chunks(&conn, chunk).unwrap(),
                Ok(10),
                "chunk {chunk}"
            );
        }
        assert_eq!(verify_audit_in_chunks(&db_with_audit(0), 3).unwrap(), Ok(0));
    }

    #[test]
    fn a_changed_entry_is_found_in_any_chunk() {
        let conn = db_with_audit(10);
        conn.execute_batch("UPDATE audit SET actor = 'mallory' WHERE id = 7")
            .unwrap();
        for chunk in [1, 3, 6, 7, 4096] {
            assert_eq!(
                verify_audit_in_chunks(&conn, chunk).unwrap(),
                Err(7),
                "chunk {chunk}"
            );
        }
        let conn = db_with_audit(10);
        conn.execute_batch("DELETE FROM audit WHERE id = 4").unwrap();
        assert_eq!(verify_audit_in_chunks(&conn, 3).unwrap(), Err(5));
    }

    #[test]
    fn timestamps_have_a_fixed_width_and_sort_as_text() {
        let a = now();
        assert_eq!(a.len(), "2024-01-02T03:04:05.678Z".len(), "{a}");
        assert!(
            time::OffsetDateTime::parse(&a, &time::format_description::well_known::Rfc3339).is_ok(),
            "{a}"
        );
        let b = now();
        assert!(a <= b, "{a} > {b}");
    }
}
