//! Reads: loading models, versions and aliases, listings with keyset cursors, the audit trail.

use std::collections::BTreeMap;

use ballast_api::{
    Alias, AuditEntry, AuditList, FileEntry, Model, ModelList, Tags, Version, VersionList, VersionState,
};
use ballast_core::{ErrorCode, ModelName, Sha256Digest, Stage};
use base64::Engine as _;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

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

pub(super) fn model_id(conn: &Connection, name: &ModelName) -> StoreResult<i64> {
    conn.prepare_cached("SELECT id FROM models WHERE namespace = ?1 AND name = ?2")?
        .query_row(params![name.namespace(), name.model()], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("model {name}")))
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

pub(super) fn load_model(conn: &Connection, id: i64) -> StoreResult<Model> {
    let mut m = conn
        .prepare_cached(
            "SELECT namespace, name, description, tags, latest_version, created_by, created_at, updated_at, revision
             FROM models WHERE id = ?1",
        )?
        .query_row([id], |r| {
            let ns: String = r.get(0)?;
            let name: String = r.get(1)?;
            let tags: String = r.get(3)?;
            Ok((
                Model {
                    name: format!("{ns}/{name}"),
                    namespace: ns,
                    description: r.get(2)?,
                    tags: Tags::new(),
                    latest_version: to_u64(r.get(4)?),
                    production_version: None,
                    aliases: BTreeMap::new(),
                    created_by: r.get(5)?,
                    created_at: r.get(6)?,
                    updated_at: r.get(7)?,
                    revision: to_u64(r.get(8)?),
                },
                tags,
            ))
        })
        .optional()?
        .ok_or_else(|| StoreError::not_found("model"))
        .and_then(|(mut m, tags)| {
            m.tags = serde_json::from_str(&tags)?;
            Ok(m)
        })?;
    m.production_version = newest_in_stage(conn, id, Stage::Production)?;
    let mut stmt = conn.prepare_cached("SELECT alias, number FROM aliases WHERE model_id = ?1")?;
    let rows = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, to_u64(r.get(1)?))))?;
    for row in rows {
        let (a, n) = row?;
        m.aliases.insert(a, n);
    }
    Ok(m)
}

pub(super) fn newest_in_stage(conn: &Connection, id: i64, stage: Stage) -> StoreResult<Option<u64>> {
    Ok(conn
        .prepare_cached(
            "SELECT number FROM versions WHERE model_id = ?1 AND stage = ?2 ORDER BY number DESC LIMIT 1",
        )?
        .query_row(params![id, stage.as_str()], |r| r.get::<_, i64>(0))
        .optional()?
        .map(to_u64))
}

pub(super) fn load_files(conn: &Connection, id: i64, number: u64) -> StoreResult<Vec<FileEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, size, sha256, media_type FROM files WHERE model_id = ?1 AND number = ?2 ORDER BY path",
    )?;
    let rows = stmt.query_map(params![id, to_i64(number)], |r| {
        Ok(FileEntry {
            path: r.get(0)?,
            size: to_u64(r.get(1)?),
            sha256: r.get(2)?,
            media_type: r.get(3)?,
        })
    })?;
    let mut files: Vec<FileEntry> = rows.collect::<Result<_, _>>()?;
    // SQLite's default collation is byte order for TEXT, which matches the manifest order.
    files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(files)
}

pub(super) fn load_version(
    conn: &Connection,
    id: i64,
    name: &ModelName,
    number: u64,
) -> StoreResult<Version> {
    let row = conn
        .prepare_cached(
            "SELECT sealed, stage, metadata, tags, digest, created_by, created_at, sealed_at, stage_changed_at, revision
             FROM versions WHERE model_id = ?1 AND number = ?2",
        )?
        .query_row(params![id, to_i64(number)], |r| {
            Ok((
                r.get::<_, bool>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, i64>(9)?,
            ))
        })
        .optional()?
        .ok_or_else(|| StoreError::not_found(format!("version {number} of {name}")))?;
    let files = load_files(conn, id, number)?;
    let mut stmt =
        conn.prepare_cached("SELECT alias FROM aliases WHERE model_id = ?1 AND number = ?2 ORDER BY alias")?;
    let aliases = stmt
        .query_map(params![id, to_i64(number)], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Version {
        model: name.to_string(),
        version: number,
        state: if row.0 {
            VersionState::Sealed
        } else {
            VersionState::Draft
        },
        stage: parse_stage(&row.1)?,
        metadata: serde_json::from_str(&row.2)?,
        tags: serde_json::from_str(&row.3)?,
        total_size: files.iter().map(|f| f.size).sum(),
        files,
        digest: row.4,
        aliases,
        created_by: row.5,
        created_at: row.6,
        sealed_at: row.7,
        stage_changed_at: row.8,
        revision: to_u64(row.9),
    })
}

pub(super) fn load_alias(conn: &Connection, id: i64, name: &ModelName, alias: &str) -> StoreResult<Alias> {
    conn.prepare_cached(
        "SELECT number, revision, updated_at FROM aliases WHERE model_id = ?1 AND alias = ?2",
    )?
    .query_row(params![id, alias], |r| {
        Ok(Alias {
            model: name.to_string(),
            alias: alias.to_owned(),
            version: to_u64(r.get(0)?),
            revision: to_u64(r.get(1)?),
            updated_at: r.get(2)?,
        })
    })
    .optional()?
    .ok_or_else(|| StoreError::not_found(format!("alias {alias:?} of {name}")))
}

/// Adds "has tag `key` (with `value`, when given)" on the JSON tags column `column`.
fn push_tag_filter(sql: &mut String, args: &mut Vec<SqlValue>, column: &str, key: &str, value: Option<&str>) {
    args.push(key.to_owned().into());
    let ki = args.len();
    let value_clause = match value {
        Some(v) => {
            args.push(v.to_owned().into());
            format!(" AND value = ?{}", args.len())
        }
        None => String::new(),
    };
    *sql += &format!(" AND EXISTS (SELECT 1 FROM json_each({column}) WHERE key = ?{ki}{value_clause})");
}

pub(super) fn list_models(conn: &Connection, f: &ModelFilter) -> StoreResult<ModelList> {
    let mut sql = String::from("SELECT id, namespace, name FROM models WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(ns) = &f.namespace {
        args.push(ns.clone().into());
        sql += &format!(" AND namespace = ?{}", args.len());
    }
    if let Some(list) = &f.namespaces {
        args.push(serde_json::Value::from(list.clone()).to_string().into());
        sql += &format!(" AND namespace IN (SELECT value FROM json_each(?{}))", args.len());
    }
    if let Some(p) = &f.prefix {
        args.push(p.clone().into());
        let i = args.len();
        sql += &format!(" AND substr(namespace || '/' || name, 1, length(?{i})) = ?{i}");
    }
    if let Some((k, v)) = &f.tag {
        push_tag_filter(&mut sql, &mut args, "models.tags", k, v.as_deref());
    }
    if let Some(c) = &f.cursor {
        let c = decode_cursor(c)?;
        let (ns, name) = match (
            c.get(0).and_then(|v| v.as_str()),
            c.get(1).and_then(|v| v.as_str()),
        ) {
            (Some(a), Some(b)) => (a.to_owned(), b.to_owned()),
            _ => return Err(bad_cursor()),
        };
        args.push(ns.into());
        args.push(name.into());
        let (a, b) = (args.len() - 1, args.len());
        sql += &format!(" AND (namespace > ?{a} OR (namespace = ?{a} AND name > ?{b}))");
    }
    let lim = limit(f.limit);
    sql += &format!(" ORDER BY namespace, name LIMIT {}", lim + 1);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() as i64 > lim;
    let mut models = Vec::new();
    let mut next_cursor = None;
    for (id, ns, name) in rows.into_iter().take(usize::try_from(lim).unwrap_or(1000)) {
        models.push(load_model(conn, id)?);
        next_cursor = Some(encode_cursor(&serde_json::json!([ns, name])));
    }
    if !more {
        next_cursor = None;
    }
    Ok(ModelList { models, next_cursor })
}

pub(super) fn list_versions(
    conn: &Connection,
    name: &ModelName,
    f: &VersionFilter,
) -> StoreResult<VersionList> {
    let id = model_id(conn, name)?;
    let mut args: Vec<SqlValue> = vec![id.into()];
    let mut sql = String::new();
    let key_expr = match &f.order {
        VersionOrder::Number => "v.number".to_owned(),
        VersionOrder::CreatedAt => "v.created_at".to_owned(),
        VersionOrder::Metric(m) => {
            args.push(m.clone().into());
            format!(
                "(SELECT value FROM json_each(v.metadata, '$.metrics') WHERE key = ?{})",
                args.len()
            )
        }
    };
    sql += &format!("SELECT v.number, {key_expr} AS k FROM versions v WHERE v.model_id = ?1");
    if matches!(f.order, VersionOrder::Metric(_)) {
        sql += " AND k IS NOT NULL";
    }
    if let Some(st) = f.stage {
        args.push(st.as_str().to_owned().into());
        sql += &format!(" AND v.stage = ?{}", args.len());
    }
    if let Some(sealed) = f.sealed {
        sql += if sealed {
            " AND v.sealed = 1"
        } else {
            " AND v.sealed = 0"
        };
    }
    for (k, v) in &f.tags {
        push_tag_filter(&mut sql, &mut args, "v.tags", k, v.as_deref());
    }
    for m in &f.metrics {
        args.push(m.name.clone().into());
        let ni = args.len();
        args.push(m.value.into());
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM json_each(v.metadata, '$.metrics') WHERE key = ?{ni} AND value {} ?{})",
            m.op,
            args.len()
        );
    }
    let (cmp, dir) = if f.descending { ("<", "DESC") } else { (">", "ASC") };
    if let Some(c) = &f.cursor {
        let c = decode_cursor(c)?;
        let n = c.get(1).and_then(serde_json::Value::as_i64);
        let k = c.get(0).cloned();
        let (Some(n), Some(k)) = (n, k) else {
            return Err(bad_cursor());
        };
        let kv: SqlValue = match k {
            serde_json::Value::Number(x) if x.is_i64() => x.as_i64().unwrap_or_default().into(),
            serde_json::Value::Number(x) => x.as_f64().unwrap_or_default().into(),
            serde_json::Value::String(s) => s.into(),
            _ => SqlValue::Null,
        };
        args.push(kv);
        let ki = args.len();
        args.push(n.into());
        let ni = args.len();
        sql += &format!(" AND (k {cmp} ?{ki} OR (k = ?{ki} AND v.number {cmp} ?{ni}))");
    }
    let lim = limit(f.limit);
    sql += &format!(" ORDER BY k {dir}, v.number {dir} LIMIT {}", lim + 1);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |r| {
            let k: SqlValue = r.get(1)?;
            Ok((r.get::<_, i64>(0)?, k))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() as i64 > lim;
    let mut versions = Vec::new();
    let mut last = None;
    for (n, k) in rows.into_iter().take(usize::try_from(lim).unwrap_or(1000)) {
        versions.push(load_version(conn, id, name, to_u64(n))?);
        last = Some((n, k));
    }
    let next_cursor = match (more, last) {
        (true, Some((n, k))) => {
            let kj = match k {
                SqlValue::Integer(i) => serde_json::json!(i),
                SqlValue::Real(x) => serde_json::json!(x),
                SqlValue::Text(s) => serde_json::json!(s),
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

pub(super) fn blob_size(conn: &Connection, d: Sha256Digest) -> StoreResult<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT size FROM files WHERE sha256 = ?1 LIMIT 1")?
        .query_row([d.to_hex()], |r| r.get::<_, i64>(0))
        .optional()?
        .map(to_u64))
}

pub(super) fn referenced_blobs(conn: &Connection) -> StoreResult<Vec<(Sha256Digest, u64)>> {
    let mut stmt = conn.prepare("SELECT sha256, max(size) FROM files GROUP BY sha256 ORDER BY sha256")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (d, s) = row?;
        let d: Sha256Digest = d
            .parse()
            .map_err(|_| StoreError::internal(format!("bad digest {d:?} in the database")))?;
        out.push((d, to_u64(s)));
    }
    Ok(out)
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

pub(super) fn list_audit(conn: &Connection, f: &AuditFilter) -> StoreResult<AuditList> {
    let mut sql = String::from(
        "SELECT id, at, actor, action, target, before, after, request_id, hash FROM audit WHERE id > ?1",
    );
    let mut args: Vec<SqlValue> = vec![to_i64(f.after.unwrap_or(0)).into()];
    if let Some(m) = &f.model {
        args.push(m.clone().into());
        let i = args.len();
        sql += &format!(
            " AND (target = ?{i} OR substr(target, 1, length(?{i}) + 1) IN (?{i} || '/', ?{i} || '@'))"
        );
    }
    if let Some(a) = &f.actor {
        args.push(a.clone().into());
        sql += &format!(" AND actor = ?{}", args.len());
    }
    if let Some(t) = &f.since {
        args.push(t.clone().into());
        sql += &format!(" AND at >= ?{}", args.len());
    }
    if let Some(t) = &f.until {
        args.push(t.clone().into());
        sql += &format!(" AND at < ?{}", args.len());
    }
    if let Some(a) = &f.action {
        args.push(a.clone().into());
        sql += &format!(" AND action = ?{}", args.len());
    }
    let lim = limit(f.limit);
    sql += &format!(" ORDER BY id LIMIT {}", lim + 1);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
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
    let mut entries = rows.collect::<Result<Vec<_>, _>>()?;
    let more = entries.len() as i64 > lim;
    entries.truncate(usize::try_from(lim).unwrap_or(1000));
    let next_after = if more { entries.last().map(|e| e.id) } else { None };
    Ok(AuditList { entries, next_after })
}

pub(super) fn verify_audit(conn: &Connection) -> StoreResult<Result<u64, u64>> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, action, target, before, after, request_id, prev_hash, hash FROM audit ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut prev = String::new();
    let mut count = 0u64;
    let mut last = 0u64;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let s: Vec<String> = (1..=9).map(|i| r.get::<_, String>(i)).collect::<Result<_, _>>()?;
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
    }
    // Every change also wrote an event naming its audit entry: entries cut from the end of the
    // chain (which the chain alone cannot show) are missing there.
    let newest_referenced: Option<i64> = conn.query_row(
        "SELECT max(CAST(json_extract(data, '$.audit_id') AS INTEGER)) FROM outbox",
        [],
        |r| r.get(0),
    )?;
    if newest_referenced.is_some_and(|n| to_u64(n) > last) {
        return Ok(Err(last + 1));
    }
    Ok(Ok(count))
}

pub(super) fn stats(conn: &Connection) -> StoreResult<StoreStats> {
    let one =
        |sql: &str| -> StoreResult<u64> { Ok(to_u64(conn.query_row(sql, [], |r| r.get::<_, i64>(0))?)) };
    Ok(StoreStats {
        models: one("SELECT count(*) FROM models")?,
        versions: one("SELECT count(*) FROM versions")?,
        blobs: one("SELECT count(DISTINCT sha256) FROM files")?,
        blob_bytes: one(
            "SELECT coalesce(sum(size), 0) FROM (SELECT max(size) AS size FROM files GROUP BY sha256)",
        )?,
        audit_entries: one("SELECT count(*) FROM audit")?,
    })
}

#[cfg(test)]
mod tests {
    use super::now;

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
