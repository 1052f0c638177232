//! [`MlflowStore`] on the SQL store (SQLite and PostgreSQL): MLflow names, MLflow version fields, multi-step stage moves,
//! version deletion and tracking documents. Mutations reuse the native operations in `ops`, so
//! each one still commits with its audit entries and events in one transaction.

use async_trait::async_trait;
use ballast_api::{CreateModel, CreateVersion, Tags};
use ballast_core::{ErrorCode, ModelName, Stage};
use serde_json::json;

use super::query::{self, to_i64, to_u64};
use super::{ops, SqlStore};
use crate::db::{Db, Row};
use crate::mlflow::{
    mlflow_namespace, slug, MlflowModel, MlflowModelEntry, MlflowObject, MlflowStore, MlflowVersion,
    MlflowVersionInfo, NewMlflowVersion,
};
use crate::{Ctx, Precondition, StoreError, StoreResult};

fn model_name_of(db: &dyn Db, id: i64) -> StoreResult<ModelName> {
    let r = db.query_one(
        "SELECT namespace, name FROM models WHERE id = ?1",
        crate::params![id],
    )?;
    Ok(ModelName::new(&r.get::<String>(0)?, &r.get::<String>(1)?)?)
}

fn mapped_name(db: &dyn Db, id: i64) -> StoreResult<Option<String>> {
    db.query_value::<String>(
        "SELECT mlflow_name FROM mlflow_names WHERE model_id = ?1",
        crate::params![id],
    )
}

/// The MLflow name of a model: the mapped one, else its name without the default namespace.
fn display_name(db: &dyn Db, id: i64, name: &ModelName, default_ns: &str) -> StoreResult<String> {
    Ok(match mapped_name(db, id)? {
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

/// The id of a model by its Ballast name, `None` when there is none (other failures are
/// errors: a database that cannot answer must not read as a free name).
fn model_id_opt(db: &dyn Db, name: &ModelName) -> StoreResult<Option<i64>> {
    match query::model_id(db, name) {
        Ok(id) => Ok(Some(id)),
        Err(e) if e.code == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The model an MLflow name refers to. Only a model in the name's namespace
/// ([`mlflow_namespace`]) answers to it, so the namespace authorization checks is always the one
/// the model is in (a mapping that points elsewhere, left by an older version, resolves to
/// nothing rather than bypassing that check).
fn resolve_id(db: &dyn Db, name: &str, default_ns: &str) -> StoreResult<Option<i64>> {
    let mapped = db.query_value::<i64>(
        "SELECT model_id FROM mlflow_names WHERE mlflow_name = ?1",
        crate::params![name],
    )?;
    if let Some(id) = mapped {
        let home = mlflow_namespace(name, default_ns);
        return Ok((model_name_of(db, id)?.namespace() == home).then_some(id));
    }
    let Some(c) = canonical(name, default_ns) else {
        return Ok(None);
    };
    let Some(id) = model_id_opt(db, &c)? else {
        return Ok(None);
    };
    // A model created or renamed through MLflow answers to its MLflow name only.
    Ok(if mapped_name(db, id)?.is_some() {
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

fn resolve(db: &dyn Db, name: &str, default_ns: &str) -> StoreResult<(i64, ModelName)> {
    let id = resolve_id(db, name, default_ns)?.ok_or_else(|| not_found_model(name))?;
    Ok((id, model_name_of(db, id)?))
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

/// A free Ballast name for a new MLflow name, in the name's namespace ([`mlflow_namespace`]):
/// a slug of the model part, numbered on collision.
fn free_ballast_name(db: &dyn Db, name: &str, default_ns: &str) -> StoreResult<ModelName> {
    let ns = mlflow_namespace(name, default_ns);
    let model = slug(name.split_once('/').map_or(name, |(_, m)| m));
    for i in 1..1000 {
        let candidate = if i == 1 {
            model.clone()
        } else {
            format!("{model}-{i}")
        };
        let n = ModelName::new(&ns, &candidate)?;
        if model_id_opt(db, &n)?.is_none() {
            return Ok(n);
        }
    }
    Err(StoreError::new(
        ErrorCode::Conflict,
        format!("no free registry name for {name:?}"),
    ))
}

fn load_mlflow_model(db: &dyn Db, id: i64, default_ns: &str) -> StoreResult<MlflowModel> {
    let model = query::load_model(db, id)?;
    let name = model_name_of(db, id)?;
    Ok(MlflowModel {
        name: display_name(db, id, &name, default_ns)?,
        model,
    })
}

/// Every model's MLflow name, tags and timestamps in one query (a search filters and sorts on
/// these, and loads the full models of the page it answers only).
fn model_index(db: &dyn Db, default_ns: &str, prefix: Option<&str>) -> StoreResult<Vec<MlflowModelEntry>> {
    // The prefix is compared in SQL against the MLflow name as `display_name` derives it, so
    // a search by name prefix never materialises the models that cannot match. `substr` and
    // `length` count characters on both engines; the comparison is case-sensitive on both.
    let rows = db.query(
        "SELECT m.namespace, m.name, m.tags, m.created_at, m.updated_at, n.mlflow_name
         FROM models m LEFT JOIN mlflow_names n ON n.model_id = m.id
         WHERE CAST(?1 AS TEXT) IS NULL
            OR substr(CASE WHEN n.mlflow_name IS NOT NULL THEN n.mlflow_name
                           WHEN m.namespace = CAST(?2 AS TEXT) THEN m.name
                           ELSE m.namespace || '/' || m.name END,
                      1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT)
         ORDER BY m.id",
        crate::params![prefix, default_ns],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let ns = r.get::<String>(0)?;
        let model = r.get::<String>(1)?;
        let name = ModelName::new(&ns, &model)?;
        let display = match r.get::<Option<String>>(5)? {
            Some(n) => n,
            None if ns == default_ns => model,
            None => name.to_string(),
        };
        out.push(MlflowModelEntry {
            name: display,
            model: name,
            tags: serde_json::from_str(&r.get::<String>(2)?)?,
            created_at: r.get(3)?,
            updated_at: r.get(4)?,
        });
    }
    Ok(out)
}

/// The numbers of a model's versions, ascending.
fn version_numbers(db: &dyn Db, id: i64) -> StoreResult<Vec<u64>> {
    db.query_map(
        "SELECT number FROM versions WHERE model_id = ?1 ORDER BY number",
        crate::params![id],
        |r| r.get::<i64>(0).map(to_u64),
    )
}

fn load_info(db: &dyn Db, id: i64, number: u64) -> StoreResult<MlflowVersionInfo> {
    let info = db.query_value::<String>(
        "SELECT info FROM mlflow_versions WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number)],
    )?;
    Ok(match info {
        Some(s) => serde_json::from_str(&s)?,
        None => MlflowVersionInfo::default(),
    })
}

fn load_mlflow_version(db: &dyn Db, id: i64, name: &ModelName, number: u64) -> StoreResult<MlflowVersion> {
    Ok(MlflowVersion {
        version: query::load_version(db, id, name, number)?,
        info: load_info(db, id, number)?,
    })
}

fn save_info(db: &dyn Db, id: i64, number: u64, info: &MlflowVersionInfo) -> StoreResult<()> {
    db.execute(
        "INSERT INTO mlflow_versions (model_id, number, info) VALUES (?1, ?2, ?3)
         ON CONFLICT (model_id, number) DO UPDATE SET info = excluded.info",
        crate::params![id, to_i64(number), serde_json::to_string(info)?],
    )?;
    Ok(())
}

fn name_taken(name: &str, field: &str) -> StoreError {
    StoreError {
        code: ErrorCode::AlreadyExists,
        message: format!("Registered Model (name={name}) already exists."),
        field: Some(field.into()),
    }
}

fn create_model(
    db: &dyn Db,
    ctx: &Ctx,
    name: &str,
    default_ns: &str,
    description: String,
    tags: Tags,
) -> StoreResult<MlflowModel> {
    check_mlflow_name(name)?;
    if resolve_id(db, name, default_ns)?.is_some() {
        return Err(name_taken(name, "name"));
    }
    let ballast = free_ballast_name(db, name, default_ns)?;
    let m = ops::create_model(
        db,
        ctx,
        &CreateModel {
            name: ballast.to_string(),
            description,
            tags,
        },
    )?;
    let id = query::model_id(db, &ballast)?;
    db.execute(
        "INSERT INTO mlflow_names (mlflow_name, model_id) VALUES (?1, ?2)",
        crate::params![name, id],
    )
    .map_err(|e| match e.code {
        ErrorCode::AlreadyExists => name_taken(name, "name"),
        _ => e,
    })?;
    Ok(MlflowModel {
        name: name.to_owned(),
        model: m,
    })
}

fn rename_model(
    db: &dyn Db,
    ctx: &Ctx,
    name: &str,
    new_name: &str,
    default_ns: &str,
) -> StoreResult<MlflowModel> {
    check_mlflow_name(new_name)?;
    let (id, ballast) = resolve(db, name, default_ns)?;
    // A model's namespace is part of its registry name (audit, routes and roles refer to it):
    // an MLflow rename cannot move it to another one.
    let target = mlflow_namespace(new_name, default_ns);
    if target != ballast.namespace() {
        return Err(StoreError {
            code: ErrorCode::InvalidArgument,
            message: format!(
                "cannot rename {name:?} to {new_name:?}: the model is in namespace {}, the new name would be in namespace {target}, and a rename cannot move a model between namespaces",
                ballast.namespace()
            ),
            field: Some("new_name".into()),
        });
    }
    if resolve_id(db, new_name, default_ns)?.is_some_and(|other| other != id) {
        return Err(name_taken(new_name, "new_name"));
    }
    // A native model whose plain name reads as `new_name` would otherwise shadow it.
    if let Some(c) = canonical(new_name, default_ns) {
        if let Some(other) = model_id_opt(db, &c)? {
            if other != id && mapped_name(db, other)?.is_none() {
                return Err(name_taken(new_name, "new_name"));
            }
        }
    }
    db.execute(
        "INSERT INTO mlflow_names (mlflow_name, model_id) VALUES (?1, ?2)
         ON CONFLICT (model_id) DO UPDATE SET mlflow_name = excluded.mlflow_name",
        crate::params![new_name, id],
    )
    .map_err(|e| match e.code {
        ErrorCode::AlreadyExists => name_taken(new_name, "new_name"),
        _ => e,
    })?;
    ops::record_change(
        db,
        ctx,
        "model.mlflow_rename",
        &ballast.to_string(),
        &json!({ "mlflow_name": name }),
        &json!({ "mlflow_name": new_name }),
    )?;
    load_mlflow_model(db, id, default_ns)
}

fn create_version(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    new: NewMlflowVersion,
) -> StoreResult<MlflowVersion> {
    let v = ops::create_version(
        db,
        ctx,
        name,
        &CreateVersion {
            metadata: new.metadata,
            tags: new.tags,
        },
    )?;
    for f in new.files {
        ops::put_file(db, ctx, name, v.version, f)?;
    }
    ops::seal_version(db, ctx, name, v.version, None)?;
    let id = query::model_id(db, name)?;
    save_info(db, id, v.version, &new.info)?;
    load_mlflow_version(db, id, name, v.version)
}

fn set_description(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    d: String,
) -> StoreResult<MlflowVersion> {
    let id = query::model_id(db, name)?;
    let before = load_mlflow_version(db, id, name, number)?;
    let mut info = before.info.clone();
    info.description = Some(d);
    save_info(db, id, number, &info)?;
    db.execute(
        "UPDATE versions SET revision = revision + 1 WHERE model_id = ?1 AND number = ?2",
        crate::params![id, to_i64(number)],
    )?;
    ops::record_change(
        db,
        ctx,
        "version.update",
        &format!("{name}/{number}"),
        &json!({ "mlflow_description": before.info.description }),
        &json!({ "mlflow_description": info.description }),
    )?;
    load_mlflow_version(db, id, name, number)
}

fn transition(
    db: &dyn Db,
    ctx: &Ctx,
    name: &ModelName,
    number: u64,
    path: &[Stage],
    archive_existing: bool,
) -> StoreResult<MlflowVersion> {
    for stage in path {
        ops::set_stage(
            db,
            ctx,
            name,
            number,
            *stage,
            Some("via MLflow"),
            Precondition::None,
        )?;
    }
    let id = query::model_id(db, name)?;
    if let Some(last) = path.last().copied() {
        if archive_existing && matches!(last, Stage::Staging | Stage::Production) {
            let others = db.query_map(
                "SELECT number FROM versions WHERE model_id = ?1 AND stage = ?2 AND number <> ?3
                 ORDER BY number",
                crate::params![id, last.as_str(), to_i64(number)],
                |r| r.get::<i64>(0).map(to_u64),
            )?;
            for n in others {
                ops::set_stage(
                    db,
                    ctx,
                    name,
                    n,
                    Stage::Archived,
                    Some("archive_existing_versions via MLflow"),
                    Precondition::None,
                )?;
            }
        }
    }
    load_mlflow_version(db, id, name, number)
}

fn delete_version(db: &dyn Db, ctx: &Ctx, name: &ModelName, number: u64) -> StoreResult<()> {
    let id = query::model_id(db, name)?;
    let v = query::load_version(db, id, name, number)?;
    if matches!(v.stage, Stage::Staging | Stage::Production) {
        return Err(StoreError::new(
            ErrorCode::Conflict,
            format!(
                "version {number} of {name} is in {}: archive it before deleting it",
                v.stage
            ),
        ));
    }
    super::retention::delete_version(db, ctx, id, name, &v, None)
}

fn to_object(r: &Row) -> StoreResult<MlflowObject> {
    Ok(MlflowObject {
        kind: r.get(0)?,
        id: r.get(1)?,
        name: r.get(2)?,
        body: serde_json::from_str(&r.get::<String>(3)?)?,
    })
}

fn put_object(db: &dyn Db, obj: &MlflowObject, create_only: bool) -> StoreResult<()> {
    if let Some(name) = &obj.name {
        let other = db.query_value::<String>(
            "SELECT id FROM mlflow_objects WHERE kind = ?1 AND name = ?2",
            crate::params![obj.kind, name],
        )?;
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
    match db.execute(
        sql,
        crate::params![obj.kind, obj.id, obj.name, obj.body.to_string()],
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::AlreadyExists => Err(StoreError::new(
            ErrorCode::AlreadyExists,
            format!("{} {} already exists", obj.kind, obj.id),
        )),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl MlflowStore for SqlStore {
    async fn mlflow_resolve(&self, name: &str, default_ns: &str) -> StoreResult<ModelName> {
        let (name, ns) = (name.to_owned(), default_ns.to_owned());
        self.read(move |db| resolve(db, &name, &ns).map(|(_, n)| n)).await
    }

    async fn mlflow_model(&self, name: &str, default_ns: &str) -> StoreResult<MlflowModel> {
        let (name, ns) = (name.to_owned(), default_ns.to_owned());
        self.read(move |db| {
            let (id, _) = resolve(db, &name, &ns)?;
            load_mlflow_model(db, id, &ns)
        })
        .await
    }

    async fn mlflow_models(&self, default_ns: &str) -> StoreResult<Vec<MlflowModel>> {
        let ns = default_ns.to_owned();
        self.read(move |db| {
            let ids = db.query_map("SELECT id FROM models ORDER BY id", &[], |r| r.get::<i64>(0))?;
            ids.into_iter().map(|id| load_mlflow_model(db, id, &ns)).collect()
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
        self.read(move |db| {
            let (id, ballast) = resolve(db, &name, &ns)?;
            let number = db.query_value::<i64>(
                "SELECT number FROM aliases WHERE model_id = ?1 AND alias = ?2",
                crate::params![id, alias],
            )?;
            number
                .map(|n| load_mlflow_version(db, id, &ballast, to_u64(n)))
                .transpose()
        })
        .await
    }

    async fn mlflow_model_page(
        &self,
        models: Vec<MlflowModelEntry>,
    ) -> StoreResult<Vec<(MlflowModel, Vec<MlflowVersion>)>> {
        self.read(move |db| {
            let mut out = Vec::with_capacity(models.len());
            for e in models {
                // Deleted since the index was read: not part of the answer.
                let Some(id) = model_id_opt(db, &e.model)? else {
                    continue;
                };
                let versions = version_numbers(db, id)?
                    .into_iter()
                    .map(|n| load_mlflow_version(db, id, &e.model, n))
                    .collect::<StoreResult<Vec<_>>>()?;
                let model = MlflowModel {
                    name: e.name,
                    model: query::load_model(db, id)?,
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
        self.read(move |db| model_index(db, &ns, prefix.as_deref())).await
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
        self.write(ctx, move |db| create_model(db, &c, &name, &ns, description, tags))
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
        self.write(ctx, move |db| rename_model(db, &c, &name, &new_name, &ns))
            .await
    }

    async fn mlflow_versions(&self, model: &ModelName) -> StoreResult<Vec<MlflowVersion>> {
        let name = model.clone();
        self.read(move |db| {
            let id = query::model_id(db, &name)?;
            version_numbers(db, id)?
                .into_iter()
                .map(|n| load_mlflow_version(db, id, &name, n))
                .collect()
        })
        .await
    }

    async fn mlflow_version(&self, model: &ModelName, number: u64) -> StoreResult<MlflowVersion> {
        let name = model.clone();
        self.read(move |db| {
            let id = query::model_id(db, &name)?;
            load_mlflow_version(db, id, &name, number)
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
        self.write(ctx, move |db| create_version(db, &c, &name, new))
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
        self.write(ctx, move |db| set_description(db, &c, &name, number, description))
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
        self.write(ctx, move |db| {
            transition(db, &c, &name, number, &path, archive_existing)
        })
        .await
    }

    async fn mlflow_delete_version(&self, ctx: &Ctx, model: &ModelName, number: u64) -> StoreResult<()> {
        let (c, name) = (ctx.clone(), model.clone());
        self.write(ctx, move |db| delete_version(db, &c, &name, number))
            .await
    }

    async fn mlflow_put_object(
        &self,
        ctx: &Ctx,
        obj: MlflowObject,
        create_only: bool,
    ) -> StoreResult<MlflowObject> {
        self.write(ctx, move |db| {
            put_object(db, &obj, create_only)?;
            Ok(obj)
        })
        .await
    }

    async fn mlflow_delete_objects(&self, ctx: &Ctx, kind: &str, id: &str) -> StoreResult<u64> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.write(ctx, move |db| {
            let prefix = format!("{}/", id.trim_end_matches('/'));
            db.execute(
                "DELETE FROM mlflow_objects WHERE kind = ?1
                 AND (id = ?2 OR substr(id, 1, length(CAST(?3 AS TEXT))) = CAST(?3 AS TEXT))",
                crate::params![kind, id, prefix],
            )
        })
        .await
    }

    async fn mlflow_get_object(&self, kind: &str, id: &str) -> StoreResult<MlflowObject> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.read(move |db| {
            db.query_row_opt(
                "SELECT kind, id, name, body FROM mlflow_objects WHERE kind = ?1 AND id = ?2",
                crate::params![kind, id],
                to_object,
            )?
            .ok_or_else(|| StoreError::not_found(format!("{kind} {id}")))
        })
        .await
    }

    async fn mlflow_object_by_name(&self, kind: &str, name: &str) -> StoreResult<MlflowObject> {
        let (kind, name) = (kind.to_owned(), name.to_owned());
        self.read(move |db| {
            db.query_row_opt(
                "SELECT kind, id, name, body FROM mlflow_objects WHERE kind = ?1 AND name = ?2",
                crate::params![kind, name],
                to_object,
            )?
            .ok_or_else(|| StoreError::not_found(format!("{kind} named {name:?}")))
        })
        .await
    }

    async fn mlflow_objects(&self, kind: &str) -> StoreResult<Vec<MlflowObject>> {
        let kind = kind.to_owned();
        self.read(move |db| {
            db.query_map(
                "SELECT kind, id, name, body FROM mlflow_objects WHERE kind = ?1 ORDER BY rowid",
                crate::params![kind],
                to_object,
            )
        })
        .await
    }
}
