//! [`MlflowStore`] for SQLite: MLflow names, MLflow version fields, multi-step stage moves,
//! version deletion and tracking documents. Mutations reuse the native operations in `ops`, so
//! each one still commits with its audit entries and events in one transaction.

use async_trait::async_trait;
use ballast_api::{CreateModel, CreateVersion, Tags};
use ballast_core::{ErrorCode, ModelName, Stage};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;

use super::query::{self, to_i64, to_u64};
use super::{ops, SqliteStore};
use crate::mlflow::{
    MlflowModel, MlflowModelEntry, MlflowObject, MlflowStore, MlflowVersion, MlflowVersionInfo,
    NewMlflowVersion,
};
use crate::{Ctx, Precondition, StoreError, StoreResult};

fn model_name_of(conn: &Connection, id: i64) -> StoreResult<ModelName> {
    let (ns, m): (String, String) = conn
        .prepare_cached("SELECT namespace, name FROM models WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(ModelName::new(&ns, &m)?)
}

fn mapped_name(conn: &Connection, id: i64) -> StoreResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT mlflow_name FROM mlflow_names WHERE model_id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// The MLflow name of a model: the mapped one, else its name without the default namespace.
fn display_name(conn: &Connection, id: i64, name: &ModelName, default_ns: &str) -> StoreResult<String> {
    Ok(match mapped_name(conn, id)? {
        Some(n) => n,
        None if name.namespace() == default_ns => name.model().to_owned(),
        None => name.to_string(),
    })
}

/// The Ballast name an MLflow name reads as directly (no mapping), if it is a valid one.
fn canonical(name: &str, default_ns: &str) -> Option<ModelName> {
    match name.split_once('/') {
        Some(_) => ModelName::parse(name).ok(),
        None => ModelName::new(default_ns, name).ok(),
    }
}

fn resolve_id(conn: &Connection, name: &str, default_ns: &str) -> StoreResult<Option<i64>> {
    let mapped: Option<i64> = conn
        .prepare_cached("SELECT model_id FROM mlflow_names WHERE mlflow_name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    if mapped.is_some() {
        return Ok(mapped);
    }
    let Some(c) = canonical(name, default_ns) else {
        return Ok(None);
    };
    let Ok(id) = query::model_id(conn, &c) else {
        return Ok(None);
    };
    // A model created or renamed through MLflow answers to its MLflow name only.
    Ok(if mapped_name(conn, id)?.is_some() {
        None
    } else {
        Some(id)
    })
}

fn not_found_model(name: &str) -> StoreError {
    StoreError::new(
        ErrorCode::NotFound,
        format!("Registered Model with name={name} not found"),
    )
}

fn resolve(conn: &Connection, name: &str, default_ns: &str) -> StoreResult<(i64, ModelName)> {
    let id = resolve_id(conn, name, default_ns)?.ok_or_else(|| not_found_model(name))?;
    Ok((id, model_name_of(conn, id)?))
}

fn slug(part: &str) -> String {
    let s: String = part
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(56)
        .collect();
    let s = s.trim_matches('.').to_owned();
    if s.is_empty() {
        "model".into()
    } else {
        s
    }
}

fn check_mlflow_name(name: &str) -> StoreResult<()> {
    if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(StoreError {
            code: ErrorCode::InvalidArgument,
            message: format!("invalid model name {name:?}: 1-256 characters without control characters"),
            field: Some("name".into()),
        });
    }
    Ok(())
}

/// A free Ballast name for a new MLflow name: the name itself when valid, else a slug of it.
fn free_ballast_name(conn: &Connection, name: &str, default_ns: &str) -> StoreResult<ModelName> {
    let (ns, model) = match name.split_once('/') {
        Some((ns, m)) => (slug(ns), slug(m)),
        None => (default_ns.to_owned(), slug(name)),
    };
    for i in 1..1000 {
        let candidate = if i == 1 {
            model.clone()
        } else {
            format!("{model}-{i}")
        };
        let n = ModelName::new(&ns, &candidate)?;
        if query::model_id(conn, &n).is_err() {
            return Ok(n);
        }
    }
    Err(StoreError::new(
        ErrorCode::Conflict,
        format!("no free registry name for {name:?}"),
    ))
}

fn load_mlflow_model(conn: &Connection, id: i64, default_ns: &str) -> StoreResult<MlflowModel> {
    let model = query::load_model(conn, id)?;
    let name = model_name_of(conn, id)?;
    Ok(MlflowModel {
        name: display_name(conn, id, &name, default_ns)?,
        model,
    })
}

/// Every model's MLflow name, tags and timestamps in one query (a search filters and sorts on
/// these, and loads the full models of the page it answers only).
fn model_index(
    conn: &Connection,
    default_ns: &str,
    prefix: Option<&str>,
) -> StoreResult<Vec<MlflowModelEntry>> {
    // The prefix is compared in SQL against the MLflow name as `display_name` derives it, so
    // a search by name prefix never materialises the models that cannot match.
    let mut stmt = conn.prepare_cached(
        "SELECT m.namespace, m.name, m.tags, m.created_at, m.updated_at, n.mlflow_name
         FROM models m LEFT JOIN mlflow_names n ON n.model_id = m.id
         WHERE ?1 IS NULL
            OR substr(CASE WHEN n.mlflow_name IS NOT NULL THEN n.mlflow_name
                           WHEN m.namespace = ?2 THEN m.name
                           ELSE m.namespace || '/' || m.name END, 1, length(?1)) = ?1
         ORDER BY m.id",
    )?;
    let rows = stmt.query_map(params![prefix, default_ns], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (ns, model, tags, created_at, updated_at, mapped) = row?;
        let name = ModelName::new(&ns, &model)?;
        let display = match mapped {
            Some(n) => n,
            None if ns == default_ns => model,
            None => name.to_string(),
        };
        out.push(MlflowModelEntry {
            name: display,
            model: name,
            tags: serde_json::from_str(&tags)?,
            created_at,
            updated_at,
        });
    }
    Ok(out)
}

fn load_info(conn: &Connection, id: i64, number: u64) -> StoreResult<MlflowVersionInfo> {
    let info: Option<String> = conn
        .prepare_cached("SELECT info FROM mlflow_versions WHERE model_id = ?1 AND number = ?2")?
        .query_row(params![id, to_i64(number)], |r| r.get(0))
        .optional()?;
    Ok(match info {
        Some(s) => serde_json::from_str(&s)?,
        None => MlflowVersionInfo::default(),
    })
}

fn load_mlflow_version(
    conn: &Connection,
    id: i64,
    name: &ModelName,
    number: u64,
) -> StoreResult<MlflowVersion> {
    Ok(MlflowVersion {
        version: query::load_version(conn, id, name, number)?,
        info: load_info(conn, id, number)?,
    })
}

fn save_info(conn: &Connection, id: i64, number: u64, info: &MlflowVersionInfo) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO mlflow_versions (model_id, number, info) VALUES (?1, ?2, ?3)
         ON CONFLICT (model_id, number) DO UPDATE SET info = excluded.info",
    )?
    .execute(params![id, to_i64(number), serde_json::to_string(info)?])?;
    Ok(())
}

fn create_model(
    conn: &Connection,
    ctx: &Ctx,
    name: &str,
    default_ns: &str,
    description: String,
    tags: Tags,
) -> StoreResult<MlflowModel> {
    check_mlflow_name(name)?;
    if resolve_id(conn, name, default_ns)?.is_some() {
        return Err(StoreError {
            code: ErrorCode::AlreadyExists,
            message: format!("Registered Model (name={name}) already exists."),
            field: Some("name".into()),
        });
    }
    let ballast = free_ballast_name(conn, name, default_ns)?;
    let m = ops::create_model(
        conn,
        ctx,
        &CreateModel {
            name: ballast.to_string(),
            description,
            tags,
        },
    )?;
    let id = query::model_id(conn, &ballast)?;
    conn.prepare_cached("INSERT INTO mlflow_names (mlflow_name, model_id) VALUES (?1, ?2)")?
        .execute(params![name, id])?;
    Ok(MlflowModel {
        name: name.to_owned(),
        model: m,
    })
}

fn rename_model(
    conn: &Connection,
    ctx: &Ctx,
    name: &str,
    new_name: &str,
    default_ns: &str,
) -> StoreResult<MlflowModel> {
    check_mlflow_name(new_name)?;
    let (id, ballast) = resolve(conn, name, default_ns)?;
    if resolve_id(conn, new_name, default_ns)?.is_some_and(|other| other != id) {
        return Err(StoreError {
            code: ErrorCode::AlreadyExists,
            message: format!("Registered Model (name={new_name}) already exists."),
            field: Some("new_name".into()),
        });
    }
    // A native model whose plain name reads as `new_name` would otherwise shadow it.
    if let Some(c) = canonical(new_name, default_ns) {
        if let Ok(other) = query::model_id(conn, &c) {
            if other != id && mapped_name(conn, other)?.is_none() {
                return Err(StoreError {
                    code: ErrorCode::AlreadyExists,
                    message: format!("Registered Model (name={new_name}) already exists."),
                    field: Some("new_name".into()),
                });
            }
        }
    }
    conn.prepare_cached(
        "INSERT INTO mlflow_names (mlflow_name, model_id) VALUES (?1, ?2)
         ON CONFLICT (model_id) DO UPDATE SET mlflow_name = excluded.mlflow_name",
    )?
    .execute(params![new_name, id])?;
    ops::record_change(
        conn,
        ctx,
        "model.mlflow_rename",
        &ballast.to_string(),
        &json!({ "mlflow_name": name }),
        &json!({ "mlflow_name": new_name }),
    )?;
    load_mlflow_model(conn, id, default_ns)
}

fn create_version(
    conn: &Connection,
    ctx: &Ctx,
    name: &ModelName,
    new: NewMlflowVersion,
) -> StoreResult<MlflowVersion> {
    let v = ops::create_version(
        conn,
        ctx,
        name,
        &CreateVersion {
            metadata: new.metadata,
            tags: new.tags,
        },
    )?;
    for f in new.files {
        ops::put_file(conn, ctx, name, v.version, f)?;
    }
    ops::seal_version(conn, ctx, name, v.version, None)?;
    let id = query::model_id(conn, name)?;
    save_info(conn, id, v.version, &new.info)?;
    load_mlflow_version(conn, id, name, v.version)
}

fn set_description(
    conn: &Connection,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    d: String,
) -> StoreResult<MlflowVersion> {
    let id = query::model_id(conn, name)?;
    let before = load_mlflow_version(conn, id, name, number)?;
    let mut info = before.info.clone();
    info.description = Some(d);
    save_info(conn, id, number, &info)?;
    conn.prepare_cached("UPDATE versions SET revision = revision + 1 WHERE model_id = ?1 AND number = ?2")?
        .execute(params![id, to_i64(number)])?;
    ops::record_change(
        conn,
        ctx,
        "version.update",
        &format!("{name}/{number}"),
        &json!({ "mlflow_description": before.info.description }),
        &json!({ "mlflow_description": info.description }),
    )?;
    load_mlflow_version(conn, id, name, number)
}

fn transition(
    conn: &Connection,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    path: &[Stage],
    archive_existing: bool,
) -> StoreResult<MlflowVersion> {
    for stage in path {
        ops::set_stage(
            conn,
            ctx,
            name,
            number,
            *stage,
            Some("via MLflow"),
            Precondition::None,
        )?;
    }
    let id = query::model_id(conn, name)?;
    if let Some(last) = path.last().copied() {
        if archive_existing && matches!(last, Stage::Staging | Stage::Production) {
            let others: Vec<i64> = conn
                .prepare_cached(
                    "SELECT number FROM versions WHERE model_id = ?1 AND stage = ?2 AND number != ?3",
                )?
                .query_map(params![id, last.as_str(), to_i64(number)], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for n in others {
                ops::set_stage(
                    conn,
                    ctx,
                    name,
                    to_u64(n),
                    Stage::Archived,
                    Some("archive_existing_versions via MLflow"),
                    Precondition::None,
                )?;
            }
        }
    }
    load_mlflow_version(conn, id, name, number)
}

fn delete_version(conn: &Connection, ctx: &Ctx, name: &ModelName, number: u64) -> StoreResult<()> {
    let id = query::model_id(conn, name)?;
    let v = query::load_version(conn, id, name, number)?;
    if matches!(v.stage, Stage::Staging | Stage::Production) {
        return Err(StoreError::new(
            ErrorCode::Conflict,
            format!(
                "version {number} of {name} is in {}: archive it before deleting it",
                v.stage
            ),
        ));
    }
    super::retention::delete_version(conn, ctx, id, name, &v, None)
}

fn object_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Option<String>, String)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_object(row: (String, String, Option<String>, String)) -> StoreResult<MlflowObject> {
    Ok(MlflowObject {
        kind: row.0,
        id: row.1,
        name: row.2,
        body: serde_json::from_str(&row.3)?,
    })
}

fn put_object(conn: &Connection, obj: &MlflowObject, create_only: bool) -> StoreResult<()> {
    if let Some(name) = &obj.name {
        let other: Option<String> = conn
            .prepare_cached("SELECT id FROM mlflow_objects WHERE kind = ?1 AND name = ?2")?
            .query_row(params![obj.kind, name], |r| r.get(0))
            .optional()?;
        if other.is_some_and(|o| o != obj.id) {
            return Err(StoreError::new(
                ErrorCode::AlreadyExists,
                format!("{} with name {name:?} already exists", obj.kind),
            ));
        }
    }
    let sql = if create_only {
        "INSERT INTO mlflow_objects (kind, id, name, body) VALUES (?1, ?2, ?3, ?4)"
    } else {
        "INSERT INTO mlflow_objects (kind, id, name, body) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, body = excluded.body"
    };
    let done = conn
        .prepare_cached(sql)?
        .execute(params![obj.kind, obj.id, obj.name, obj.body.to_string()]);
    match done {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Err(StoreError::new(
                ErrorCode::AlreadyExists,
                format!("{} {} already exists", obj.kind, obj.id),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl MlflowStore for SqliteStore {
    async fn mlflow_resolve(&self, name: &str, default_ns: &str) -> StoreResult<ModelName> {
        let (name, ns) = (name.to_owned(), default_ns.to_owned());
        self.read(move |conn| resolve(conn, &name, &ns).map(|(_, n)| n))
            .await
    }

    async fn mlflow_model(&self, name: &str, default_ns: &str) -> StoreResult<MlflowModel> {
        let (name, ns) = (name.to_owned(), default_ns.to_owned());
        self.read(move |conn| {
            let (id, _) = resolve(conn, &name, &ns)?;
            load_mlflow_model(conn, id, &ns)
        })
        .await
    }

    async fn mlflow_models(&self, default_ns: &str) -> StoreResult<Vec<MlflowModel>> {
        let ns = default_ns.to_owned();
        self.read(move |conn| {
            let ids: Vec<i64> = conn
                .prepare_cached("SELECT id FROM models ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            ids.into_iter()
                .map(|id| load_mlflow_model(conn, id, &ns))
                .collect()
        })
        .await
    }

    async fn mlflow_alias_version(
        &self,
        name: &str,
        alias: &str,
        default_ns: &str,
    ) -> StoreResult<Option<MlflowVersion>> {
        let (name, alias, ns) = (name.to_owned(), alias.to_owned(), default_ns.to_owned());
        self.read(move |conn| {
            let (id, ballast) = resolve(conn, &name, &ns)?;
            let number: Option<i64> = conn
                .prepare_cached("SELECT number FROM aliases WHERE model_id = ?1 AND alias = ?2")?
                .query_row(params![id, alias], |r| r.get(0))
                .optional()?;
            number
                .map(|n| load_mlflow_version(conn, id, &ballast, to_u64(n)))
                .transpose()
        })
        .await
    }

    async fn mlflow_model_page(
        &self,
        models: Vec<MlflowModelEntry>,
    ) -> StoreResult<Vec<(MlflowModel, Vec<MlflowVersion>)>> {
        self.read(move |conn| {
            let mut out = Vec::with_capacity(models.len());
            for e in models {
                // Deleted since the index was read: not part of the answer.
                let id = match query::model_id(conn, &e.model) {
                    Ok(id) => id,
                    Err(err) if err.code == ErrorCode::NotFound => continue,
                    Err(err) => return Err(err),
                };
                let numbers: Vec<i64> = conn
                    .prepare_cached("SELECT number FROM versions WHERE model_id = ?1 ORDER BY number")?
                    .query_map([id], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                let versions = numbers
                    .into_iter()
                    .map(|n| load_mlflow_version(conn, id, &e.model, to_u64(n)))
                    .collect::<StoreResult<Vec<_>>>()?;
                let model = MlflowModel {
                    name: e.name,
                    model: query::load_model(conn, id)?,
                };
                out.push((model, versions));
            }
            Ok(out)
        })
        .await
    }

    async fn mlflow_model_index(
        &self,
        default_ns: &str,
        name_prefix: Option<&str>,
    ) -> StoreResult<Vec<MlflowModelEntry>> {
        let (ns, prefix) = (default_ns.to_owned(), name_prefix.map(str::to_owned));
        self.read(move |conn| model_index(conn, &ns, prefix.as_deref()))
            .await
    }

    async fn mlflow_create_model(
        &self,
        ctx: &Ctx,
        name: &str,
        default_ns: &str,
        description: String,
        tags: Tags,
    ) -> StoreResult<MlflowModel> {
        let (c, name, ns) = (ctx.clone(), name.to_owned(), default_ns.to_owned());
        self.write(ctx, move |conn| {
            create_model(conn, &c, &name, &ns, description, tags)
        })
        .await
    }

    async fn mlflow_rename_model(
        &self,
        ctx: &Ctx,
        name: &str,
        new_name: &str,
        default_ns: &str,
    ) -> StoreResult<MlflowModel> {
        let (c, name, new_name, ns) = (
            ctx.clone(),
            name.to_owned(),
            new_name.to_owned(),
            default_ns.to_owned(),
        );
        self.write(ctx, move |conn| rename_model(conn, &c, &name, &new_name, &ns))
            .await
    }

    async fn mlflow_versions(&self, model: &ModelName) -> StoreResult<Vec<MlflowVersion>> {
        let name = model.clone();
        self.read(move |conn| {
            let id = query::model_id(conn, &name)?;
            let numbers: Vec<i64> = conn
                .prepare_cached("SELECT number FROM versions WHERE model_id = ?1 ORDER BY number")?
                .query_map([id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            numbers
                .into_iter()
                .map(|n| load_mlflow_version(conn, id, &name, to_u64(n)))
                .collect()
        })
        .await
    }

    async fn mlflow_version(&self, model: &ModelName, number: u64) -> StoreResult<MlflowVersion> {
        let name = model.clone();
        self.read(move |conn| {
            let id = query::model_id(conn, &name)?;
            load_mlflow_version(conn, id, &name, number)
        })
        .await
    }

    async fn mlflow_create_version(
        &self,
        ctx: &Ctx,
        model: &ModelName,
        new: NewMlflowVersion,
    ) -> StoreResult<MlflowVersion> {
        let (c, name) = (ctx.clone(), model.clone());
        self.write(ctx, move |conn| create_version(conn, &c, &name, new))
            .await
    }

    async fn mlflow_set_version_description(
        &self,
        ctx: &Ctx,
        model: &ModelName,
        number: u64,
        description: String,
    ) -> StoreResult<MlflowVersion> {
        let (c, name) = (ctx.clone(), model.clone());
        self.write(ctx, move |conn| {
            set_description(conn, &c, &name, number, description)
        })
        .await
    }

    async fn mlflow_transition(
        &self,
        ctx: &Ctx,
        model: &ModelName,
        number: u64,
        path: Vec<Stage>,
        archive_existing: bool,
    ) -> StoreResult<MlflowVersion> {
        let (c, name) = (ctx.clone(), model.clone());
        self.write(ctx, move |conn| {
            transition(conn, &c, &name, number, &path, archive_existing)
        })
        .await
    }

    async fn mlflow_delete_version(&self, ctx: &Ctx, model: &ModelName, number: u64) -> StoreResult<()> {
        let (c, name) = (ctx.clone(), model.clone());
        self.write(ctx, move |conn| delete_version(conn, &c, &name, number))
            .await
    }

    async fn mlflow_put_object(
        &self,
        ctx: &Ctx,
        obj: MlflowObject,
        create_only: bool,
    ) -> StoreResult<MlflowObject> {
        self.write(ctx, move |conn| {
            put_object(conn, &obj, create_only)?;
            Ok(obj)
        })
        .await
    }

    async fn mlflow_delete_objects(&self, ctx: &Ctx, kind: &str, id: &str) -> StoreResult<u64> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.write(ctx, move |conn| {
            let prefix = format!("{}/", id.trim_end_matches('/'));
            let n = conn
                .prepare_cached(
                    "DELETE FROM mlflow_objects WHERE kind = ?1 AND (id = ?2 OR substr(id, 1, length(?3)) = ?3)",
                )?
                .execute(params![kind, id, prefix])?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn mlflow_get_object(&self, kind: &str, id: &str) -> StoreResult<MlflowObject> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT kind, id, name, body FROM mlflow_objects WHERE kind = ?1 AND id = ?2",
                )?
                .query_row(params![kind, id], object_from_row)
                .optional()?
                .ok_or_else(|| StoreError::not_found(format!("{kind} {id}")))?;
            to_object(row)
        })
        .await
    }

    async fn mlflow_object_by_name(&self, kind: &str, name: &str) -> StoreResult<MlflowObject> {
        let (kind, name) = (kind.to_owned(), name.to_owned());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(
                    "SELECT kind, id, name, body FROM mlflow_objects WHERE kind = ?1 AND name = ?2",
                )?
                .query_row(params![kind, name], object_from_row)
                .optional()?
                .ok_or_else(|| StoreError::not_found(format!("{kind} named {name:?}")))?;
            to_object(row)
        })
        .await
    }

    async fn mlflow_objects(&self, kind: &str) -> StoreResult<Vec<MlflowObject>> {
        let kind = kind.to_owned();
        self.read(move |conn| {
            let rows: Vec<_> = conn
                .prepare_cached(
                    "SELECT kind, id, name, body FROM mlflow_objects WHERE kind = ?1 ORDER BY rowid",
                )?
                .query_map([kind], object_from_row)?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(to_object).collect()
        })
        .await
    }
}
