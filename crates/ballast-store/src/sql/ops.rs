//! Mutations. Each runs inside the writer's transaction (in its own savepoint) and records its
//! audit entry and outbox event there too, so the change, its trail and its event are atomic.

use ballast_api::{
    Alias, CreateModel, CreateVersion, FileEntry, Model, StageChange, Tags, UpdateModel, UpdateVersion,
    Version, VersionMetadata,
};
use ballast_core::{
    name::{validate_tag_value, MAX_TAG_KEY_LEN},
    validate_alias, validate_artifact_path, validate_tag_key, ErrorCode, Manifest, ManifestEntry, ModelName,
    Sha256Digest, Stage,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::Db;

use super::query::{self, audit_hash, model_id, now, to_i64, to_u64};
use crate::{Ctx, Idempotency, Precondition, StoreError, StoreResult};

const MAX_DESCRIPTION: usize = 64 * 1024;
const MAX_MODEL_CARD: usize = 1024 * 1024;
const MAX_TAGS: usize = 256;
const MAX_METADATA_JSON: usize = 4 * 1024 * 1024;

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError {
        code: ErrorCode::InvalidArgument,
        message: message.into(),
        field: Some(field.into()),
    }
}

fn conflict(message: impl Into<String>) -> StoreError {
    StoreError::new(ErrorCode::Conflict, message)
}

/// Runs `op` unless this key already recorded a result for this actor.
pub(super) fn with_idempotency<T, F>(db: &dyn Db, actor: &str, idem: &Idempotency, op: F) -> StoreResult<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce(&dyn Db) -> StoreResult<T>,
{
    let seen = db.query_row_opt(
        "SELECT fingerprint, result FROM idempotency WHERE actor = ?1 AND key = ?2",
        crate::params![actor, idem.key],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?)),
    )?;
    if let Some((fingerprint, result)) = seen {
        if fingerprint != idem.fingerprint {
            return Err(StoreError {
                code: ErrorCode::IdempotencyKeyReused,
                message: format!(
                    "Idempotency-Key {:?} was already used for a different request; use a new key for a new request",
                    idem.key
                ),
                field: Some("Idempotency-Key".into()),
            });
        }
        return Ok(serde_json::from_str(&result)?);
    }
    let out = op(db)?;
    db.execute(
        "INSERT INTO idempotency (actor, key, fingerprint, result, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        crate::params![
            actor,
            idem.key,
            idem.fingerprint,
            serde_json::to_string(&out)?,
            now()
        ],
    )?;
    Ok(out)
}

/// Appends the hash-chained audit entry of a change; returns its id.
fn audit_entry(
    db: &dyn Db,
    ctx: &Ctx,
    at: &str,
    action: &str,
    target: &str,
    before: &Value,
    after: &Value,
) -> StoreResult<i64> {
    let prev = db
        .query_value::<String>("SELECT hash FROM audit ORDER BY id DESC LIMIT 1", &[])?
        .unwrap_or_default();
    let id = db
        .query_one("SELECT coalesce(max(id), 0) + 1 FROM audit", &[])?
        .get::<i64>(0)?;
    let (before_s, after_s) = (before.to_string(), after.to_string());
    let hash = audit_hash(
        &prev,
        [
            &id.to_string(),
            at,
            &ctx.actor,
            action,
            target,
            &before_s,
            &after_s,
            &ctx.request_id,
        ],
    );
    db.execute(
        "INSERT INTO audit (id, at, actor, action, target, before, after, request_id, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        crate::params![
            id,
            at,
            ctx.actor,
            action,
            target,
            before_s,
            after_s,
            ctx.request_id,
            prev,
            hash
        ],
    )?;
    Ok(id)
}

/// Appends the audit entry and the event (with its webhook deliveries) of a change.
pub(super) fn record_change(
    db: &dyn Db,
    ctx: &Ctx,
    action: &str,
    target: &str,
    before: &Value,
    after: &Value,
) -> StoreResult<()> {
    let at = now();
    let audit_id = audit_entry(db, ctx, &at, action, target, before, after)?;
    let data = json!({ "before": before, "after": after, "audit_id": audit_id });
    super::events::append(db, ctx, &at, action, target, &data)?;
    Ok(())
}

/// Appends an audit entry for an action that is not an event (delivery bookkeeping).
pub(super) fn record_audit_only(
    db: &dyn Db,
    ctx: &Ctx,
    action: &str,
    target: &str,
    before: &Value,
    after: &Value,
) -> StoreResult<()> {
    audit_entry(db, ctx, &now(), action, target, before, after).map(|_| ())
}

fn check_pre(pre: Precondition, current: Option<u64>, what: &str) -> StoreResult<()> {
    let failed = |msg: String| {
        Err(StoreError {
            code: ErrorCode::PreconditionFailed,
            message: msg,
            field: Some("If-Match".into()),
        })
    };
    match (pre, current) {
        (Precondition::None, _) | (Precondition::Exists, Some(_)) | (Precondition::Absent, None) => Ok(()),
        (Precondition::Revision(want), Some(have)) if want == have => Ok(()),
        (Precondition::Revision(want), Some(have)) => failed(format!(
            "{what} changed: If-Match asked for revision {want} but it is at revision {have}; read it again and retry"
        )),
        (Precondition::Revision(_) | Precondition::Exists, None) => {
            failed(format!("{what} does not exist, so If-Match cannot hold"))
        }
        (Precondition::Absent, Some(have)) => {
            failed(format!("{what} already exists (revision {have}) and If-None-Match: * was given"))
        }
    }
}

fn validate_tags(tags: &Tags) -> StoreResult<()> {
    if tags.len() > MAX_TAGS {
        return Err(invalid("tags", format!("at most {MAX_TAGS} tags are allowed")));
    }
    for (k, v) in tags {
        validate_tag_key(k)?;
        validate_tag_value(k, v)?;
    }
    Ok(())
}

fn apply_tag_changes(tags: &mut Tags, set: &Tags, remove: &[String]) -> StoreResult<()> {
    for k in remove {
        if k.is_empty() || k.len() > MAX_TAG_KEY_LEN {
            return Err(invalid("remove_tags", format!("invalid tag key {k:?}")));
        }
        tags.remove(k);
    }
    for (k, v) in set {
        tags.insert(k.clone(), v.clone());
    }
    validate_tags(tags)
}

fn validate_description(d: &str) -> StoreResult<()> {
    if d.len() > MAX_DESCRIPTION {
        return Err(invalid(
            "description",
            format!("descriptions are at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    if d.contains('\0') {
        return Err(invalid(
            "description",
            "descriptions must not contain NUL characters",
        ));
    }
    Ok(())
}

fn validate_comment(c: Option<&str>) -> StoreResult<()> {
    if c.is_some_and(|c| c.contains('\0')) {
        return Err(invalid("comment", "comments must not contain NUL characters"));
    }
    Ok(())
}

/// Whether a string or object key anywhere in `v` contains NUL, which no database text (nor
/// PostgreSQL's JSON functions) can hold.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn validate_metadata(db: &dyn Db, model: i64, number: u64, m: &VersionMetadata) -> StoreResult<()> {
    validate_description(&m.description)?;
    if m.model_card.as_ref().is_some_and(|c| c.len() > MAX_MODEL_CARD) {
        return Err(invalid("metadata.model_card", "model cards are at most 1 MiB"));
    }
    for (k, v) in &m.metrics {
        if k.is_empty() || k.len() > MAX_TAG_KEY_LEN {
            return Err(invalid(
                "metadata.metrics",
                format!("invalid metric name {k:?}: 1-{MAX_TAG_KEY_LEN} bytes"),
            ));
        }
        if !v.is_finite() {
            return Err(invalid(
                "metadata.metrics",
                format!("metric {k:?} must be a finite number"),
            ));
        }
    }
    if let Some(p) = m.lineage.parent_version {
        if p == 0 || p >= number {
            return Err(invalid(
                "metadata.lineage.parent_version",
                format!("parent_version {p} must be an earlier version of this model (1..{number})"),
            ));
        }
        let exists = db.query_opt(
            "SELECT 1 FROM versions WHERE model_id = ?1 AND number = ?2",
            crate::params![model, to_i64(p)],
        )?;
        if exists.is_none() {
            return Err(invalid(
                "metadata.lineage.parent_version",
                format!("parent version {p} does not exist"),
            ));
        }
    }
    if contains_nul(&serde_json::to_value(m)?) {
        return Err(invalid(
            "metadata",
            "version metadata must not contain NUL characters",
        ));
    }
    if serde_json::to_vec(m)?.len() > MAX_METADATA_JSON {
        return Err(StoreError {
            code: ErrorCode::PayloadTooLarge,
            message: "version metadata is at most 4 MiB of JSON".into(),
            field: Some("metadata".into()),
        });
    }
    Ok(())
}

fn model_json(m: &Model) -> Value {
    json!({ "description": m.description, "tags": m.tags, "revision": m.revision })
}

pub(super) fn create_model(db: &dyn Db, ctx: &Ctx, req: &CreateModel) -> StoreResult<Model> {
    let name = ModelName::parse(&req.name)?;
    validate_description(&req.description)?;
    validate_tags(&req.tags)?;
    let at = now();
    let inserted = db.query_value::<i64>(
        "INSERT INTO models (namespace, name, description, tags, created_by, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT DO NOTHING RETURNING id",
        crate::params![
            name.namespace(),
            name.model(),
            req.description,
            serde_json::to_string(&req.tags)?,
            ctx.actor,
            at
        ],
    )?;
    let Some(id) = inserted else {
        return Err(StoreError {
            code: ErrorCode::AlreadyExists,
            message: format!("model {name} already exists"),
            field: Some("name".into()),
        });
    };
    let m = query::load_model(db, id)?;
    record_change(db, ctx, "model.create", &m.name, &Value::Null, &model_json(&m))?;
    Ok(m)
}

pub(super) fn update_model(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    req: &UpdateModel,
    pre: Precondition,
) -> StoreResult<Model> {
    let id = model_id(db, name)?;
    let before = query::load_model(db, id)?;
    check_pre(pre, Some(before.revision), &format!("model {name}"))?;
    let description = req
        .description
        .clone()
        .unwrap_or_else(|| before.description.clone());
    validate_description(&description)?;
    let mut tags = before.tags.clone();
    apply_tag_changes(&mut tags, &req.set_tags, &req.remove_tags)?;
    db.execute(
        "UPDATE models SET description = ?2, tags = ?3, updated_at = ?4, revision = revision + 1 WHERE id = ?1",
        crate::params![id, description, serde_json::to_string(&tags)?, now()],
    )?;
    let after = query::load_model(db, id)?;
    record_change(
        db,
        ctx,
        "model.update",
        &after.name,
        &model_json(&before),
        &model_json(&after),
    )?;
    Ok(after)
}

pub(super) fn delete_model(db: &dyn Db, ctx: &Ctx, name: &ModelName, pre: Precondition) -> StoreResult<()> {
    let id = model_id(db, name)?;
    let before = query::load_model(db, id)?;
    check_pre(pre, Some(before.revision), &format!("model {name}"))?;
    let live = db.query_map(
        "SELECT number, stage FROM versions WHERE model_id = ?1 AND stage IN ('staging', 'production') ORDER BY number",
        crate::params![id],
        |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)),
    )?;
    if !live.is_empty() {
        let list: Vec<String> = live.iter().map(|(n, s)| format!("{n} ({s})")).collect();
        return Err(conflict(format!(
            "model {name} has versions in staging or production: {}; archive them first",
            list.join(", ")
        )));
    }
    db.execute("DELETE FROM models WHERE id = ?1", crate::params![id])?;
    record_change(
        db,
        ctx,
        "model.delete",
        &before.name,
        &model_json(&before),
        &Value::Null,
    )?;
    Ok(())
}

struct VersionRow {
    sealed: bool,
    stage: Stage,
    revision: u64,
}

fn version_row(db: &dyn Db, id: i64, name: &ModelName, number: u64) -> StoreResult<VersionRow> {
    let row = db.query_row_opt(
        "SELECT sealed, stage, revision FROM versions WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number)],
        |r| Ok((r.get::<bool>(0)?, r.get::<String>(1)?, r.get::<i64>(2)?)),
    )?;
    let (sealed, stage, revision) =
        row.ok_or_else(|| StoreError::not_found(format!("version {number} of {name}")))?;
    Ok(VersionRow {
        sealed,
        stage: query::parse_stage(&stage)?,
        revision: to_u64(revision),
    })
}

pub(super) fn create_version(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    req: &CreateVersion,
) -> StoreResult<Version> {
    let id = model_id(db, name)?;
    let number = db
        .query_one(
            "UPDATE models SET latest_version = latest_version + 1 WHERE id = ?1 RETURNING latest_version",
            crate::params![id],
        )?
        .get::<i64>(0)?;
    let number = to_u64(number);
    validate_metadata(db, id, number, &req.metadata)?;
    validate_tags(&req.tags)?;
    let at = now();
    db.execute(
        "INSERT INTO versions (model_id, number, metadata, tags, created_by, created_at, stage_changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        crate::params![
            id,
            to_i64(number),
            serde_json::to_string(&req.metadata)?,
            serde_json::to_string(&req.tags)?,
            ctx.actor,
            at
        ],
    )?;
    let v = query::load_version(db, id, name, number)?;
    record_change(
        db,
        ctx,
        "version.create",
        &format!("{name}/{number}"),
        &Value::Null,
        &json!({ "metadata": v.metadata, "tags": v.tags }),
    )?;
    Ok(v)
}

pub(super) fn update_version(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    req: &UpdateVersion,
    pre: Precondition,
) -> StoreResult<Version> {
    let id = model_id(db, name)?;
    let row = version_row(db, id, name, number)?;
    check_pre(pre, Some(row.revision), &format!("version {number} of {name}"))?;
    let before = query::load_version(db, id, name, number)?;
    let mut metadata = before.metadata.clone();
    if let Some(m) = &req.metadata {
        if row.sealed {
            return Err(conflict(format!(
                "version {number} of {name} is sealed: its metadata is immutable; create a new version instead"
            )));
        }
        validate_metadata(db, id, number, m)?;
        metadata = m.clone();
    }
    let mut tags = before.tags.clone();
    apply_tag_changes(&mut tags, &req.set_tags, &req.remove_tags)?;
    db.execute(
        "UPDATE versions SET metadata = ?3, tags = ?4, revision = revision + 1 WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number), serde_json::to_string(&metadata)?, serde_json::to_string(&tags)?],
    )?;
    let after = query::load_version(db, id, name, number)?;
    record_change(
        db,
        ctx,
        "version.update",
        &format!("{name}/{number}"),
        &json!({ "metadata": before.metadata, "tags": before.tags }),
        &json!({ "metadata": after.metadata, "tags": after.tags }),
    )?;
    Ok(after)
}

fn require_draft(row: &VersionRow, name: &ModelName, number: u64) -> StoreResult<()> {
    if row.sealed {
        return Err(conflict(format!(
            "version {number} of {name} is sealed: its files are immutable; create a new version to change them"
        )));
    }
    Ok(())
}

pub(super) fn put_file(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    file: FileEntry,
) -> StoreResult<FileEntry> {
    validate_artifact_path(&file.path)?;
    let digest: Sha256Digest = file.sha256.parse()?;
    if file
        .media_type
        .as_ref()
        .is_some_and(|m| m.len() > 255 || m.chars().any(char::is_control))
    {
        return Err(invalid(
            "media_type",
            "media types are at most 255 printable characters",
        ));
    }
    let id = model_id(db, name)?;
    let row = version_row(db, id, name, number)?;
    require_draft(&row, name, number)?;
    let previous = db.query_row_opt(
        "SELECT sha256, size FROM files WHERE model_id = ?1 AND number = ?2 AND path = ?3",
        crate::params![id, to_i64(number), file.path],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
    )?;
    db.execute(
        "INSERT INTO files (model_id, number, path, sha256, size, media_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (model_id, number, path) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size, media_type = excluded.media_type",
        crate::params![id, to_i64(number), file.path, digest.to_hex(), to_i64(file.size), file.media_type],
    )?;
    db.execute(
        "UPDATE versions SET revision = revision + 1 WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number)],
    )?;
    let entry = FileEntry {
        sha256: digest.to_hex(),
        ..file
    };
    record_change(
        db,
        ctx,
        "version.file_put",
        &format!("{name}/{number}"),
        &previous.map_or(
            Value::Null,
            |(s, z)| json!({ "path": entry.path, "sha256": s, "size": z }),
        ),
        &json!(entry),
    )?;
    Ok(entry)
}

pub(super) fn delete_file(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    path: &str,
) -> StoreResult<()> {
    validate_artifact_path(path)?;
    let id = model_id(db, name)?;
    let row = version_row(db, id, name, number)?;
    require_draft(&row, name, number)?;
    let removed = db.query_row_opt(
        "DELETE FROM files WHERE model_id = ?1 AND number = ?2 AND path = ?3 RETURNING sha256, size",
        crate::params![id, to_i64(number), path],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
    )?;
    let (sha, size) = removed
        .ok_or_else(|| StoreError::not_found(format!("file {path:?} of version {number} of {name}")))?;
    db.execute(
        "UPDATE versions SET revision = revision + 1 WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number)],
    )?;
    record_change(
        db,
        ctx,
        "version.file_delete",
        &format!("{name}/{number}"),
        &json!({ "path": path, "sha256": sha, "size": size }),
        &Value::Null,
    )
}

pub(super) fn seal_version(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    expected: Option<Sha256Digest>,
) -> StoreResult<Version> {
    let id = model_id(db, name)?;
    let row = version_row(db, id, name, number)?;
    require_draft(&row, name, number)?;
    let files = query::load_files(db, id, number)?;
    if files.is_empty() {
        return Err(conflict(format!(
            "version {number} of {name} has no files: upload at least one before sealing"
        )));
    }
    let entries = files
        .into_iter()
        .map(|f| {
            Ok(ManifestEntry {
                sha256: f.sha256.parse()?,
                path: f.path,
                size: f.size,
                media_type: f.media_type,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let manifest = Manifest::new(entries);
    let digest = manifest.digest();
    if let Some(want) = expected {
        if want != digest {
            return Err(StoreError {
                code: ErrorCode::DigestMismatch,
                message: format!(
                    "the manifest digest is {digest} but expected_digest is {want}: the server holds a different set of files than the client expects"
                ),
                field: Some("expected_digest".into()),
            });
        }
    }
    db.execute(
        "UPDATE versions SET sealed = 1, digest = ?3, sealed_at = ?4, revision = revision + 1 WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number), digest.to_hex(), now()],
    )?;
    let v = query::load_version(db, id, name, number)?;
    record_change(
        db,
        ctx,
        "version.seal",
        &format!("{name}/{number}"),
        &json!({ "state": "draft" }),
        &json!({ "state": "sealed", "digest": digest.to_hex(), "files": manifest.files.len(), "total_size": manifest.total_size() }),
    )?;
    Ok(v)
}

#[allow(clippy::too_many_arguments)]
fn move_stage(
    db: &dyn Db,
    ctx: &Ctx,
    id: i64,
    name: &ModelName,
    number: u64,
    from: Stage,
    to: Stage,
    kind: &str,
    replaced: Option<u64>,
    comment: Option<&str>,
) -> StoreResult<()> {
    let at = now();
    db.execute(
        "UPDATE versions SET stage = ?3, stage_changed_at = ?4, revision = revision + 1,
                ever_production = CASE WHEN CAST(?5 AS BIGINT) = 1 THEN 1 ELSE ever_production END
         WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number), to.as_str(), at, to == Stage::Production],
    )?;
    db.execute(
        "INSERT INTO stage_history (model_id, number, from_stage, to_stage, kind, replaced, actor, comment, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        crate::params![
            id,
            to_i64(number),
            from.as_str(),
            to.as_str(),
            kind,
            replaced.map(to_i64),
            ctx.actor,
            comment,
            at
        ],
    )?;
    record_change(
        db,
        ctx,
        &format!("version.{kind}"),
        &format!("{name}/{number}"),
        &json!({ "stage": from }),
        &json!({ "stage": to, "replaced": replaced, "comment": comment }),
    )
}

fn production_of(db: &dyn Db, id: i64) -> StoreResult<Option<u64>> {
    query::newest_in_stage(db, id, Stage::Production)
}

pub(super) fn set_stage(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    to: Stage,
    comment: Option<&str>,
    pre: Precondition,
) -> StoreResult<StageChange> {
    validate_comment(comment)?;
    let id = model_id(db, name)?;
    let row = version_row(db, id, name, number)?;
    check_pre(pre, Some(row.revision), &format!("version {number} of {name}"))?;
    row.stage.check_move(to, row.sealed)?;
    let mut demoted = None;
    if to == Stage::Production {
        if let Some(prev) = production_of(db, id)? {
            move_stage(
                db,
                ctx,
                id,
                name,
                prev,
                Stage::Production,
                Stage::Archived,
                "demote",
                None,
                comment,
            )?;
            demoted = Some(prev);
        }
    }
    move_stage(
        db, ctx, id, name, number, row.stage, to, "stage", demoted, comment,
    )?;
    Ok(StageChange {
        version: query::load_version(db, id, name, number)?,
        demoted,
    })
}

pub(super) fn rollback(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    comment: Option<&str>,
) -> StoreResult<StageChange> {
    validate_comment(comment)?;
    let id = model_id(db, name)?;
    let current = production_of(db, id)?
        .ok_or_else(|| conflict(format!("{name} has no version in production to roll back")))?;
    let replaced = db.query_value::<Option<i64>>(
        "SELECT replaced FROM stage_history WHERE model_id = ?1 AND number = ?2 AND to_stage = 'production'
         ORDER BY id DESC LIMIT 1",
        crate::params![id, to_i64(current)],
    )?;
    let previous = replaced.flatten().map(to_u64).ok_or_else(|| {
        conflict(format!(
            "version {current} of {name} did not replace another production version, so there is nothing to roll back to"
        ))
    })?;
    let prev_row = version_row(db, id, name, previous)?;
    if !prev_row.sealed {
        return Err(StoreError::internal(format!(
            "version {previous} of {name} is not sealed"
        )));
    }
    move_stage(
        db,
        ctx,
        id,
        name,
        current,
        Stage::Production,
        Stage::Archived,
        "demote",
        None,
        comment,
    )?;
    move_stage(
        db,
        ctx,
        id,
        name,
        previous,
        prev_row.stage,
        Stage::Production,
        "rollback",
        Some(current),
        comment,
    )?;
    Ok(StageChange {
        version: query::load_version(db, id, name, previous)?,
        demoted: Some(current),
    })
}

pub(super) fn set_alias(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    alias: &str,
    number: u64,
    pre: Precondition,
) -> StoreResult<Alias> {
    validate_alias(alias)?;
    let id = model_id(db, name)?;
    let row = version_row(db, id, name, number)?;
    if !row.sealed {
        return Err(conflict(format!(
            "version {number} of {name} is a draft: seal it before pointing an alias at it"
        )));
    }
    let before = query::load_alias(db, id, name, alias).ok();
    check_pre(
        pre,
        before.as_ref().map(|a| a.revision),
        &format!("alias {alias:?} of {name}"),
    )?;
    db.execute(
        "INSERT INTO aliases (model_id, alias, number, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (model_id, alias) DO UPDATE SET number = excluded.number, updated_at = excluded.updated_at,
            revision = aliases.revision + 1",
        crate::params![id, alias, to_i64(number), now()],
    )?;
    let after = query::load_alias(db, id, name, alias)?;
    record_change(
        db,
        ctx,
        "alias.set",
        &format!("{name}@{alias}"),
        &before.map_or(
            Value::Null,
            |a| json!({ "version": a.version, "revision": a.revision }),
        ),
        &json!({ "version": after.version, "revision": after.revision }),
    )?;
    Ok(after)
}

pub(super) fn delete_alias(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    alias: &str,
    pre: Precondition,
) -> StoreResult<()> {
    validate_alias(alias)?;
    let id = model_id(db, name)?;
    let before = query::load_alias(db, id, name, alias)?;
    check_pre(pre, Some(before.revision), &format!("alias {alias:?} of {name}"))?;
    db.execute(
        "DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2",
        crate::params![id, alias],
    )?;
    record_change(
        db,
        ctx,
        "alias.delete",
        &format!("{name}@{alias}"),
        &json!({ "version": before.version, "revision": before.revision }),
        &Value::Null,
    )
}
