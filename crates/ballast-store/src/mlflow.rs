//! What the MLflow-compatible API needs beyond the native [`crate::Store`]: the mapping between
//! MLflow model names (free-form, no namespace) and Ballast names, MLflow's per-version fields
//! (`source`, `run_id`, …), multi-step stage moves in one transaction, version deletion, and a
//! small document store for the tracking objects (experiments, runs, logged models) that
//! registration flows need as lineage.
//!
//! Every mutation here commits with its audit entry and event, like the native ones.

use async_trait::async_trait;
use ballast_api::{FileEntry, Model, Tags, Version, VersionMetadata};
use ballast_core::{ModelName, Stage};
use serde::{Deserialize, Serialize};

use crate::{Ctx, StoreResult};

/// The namespace an MLflow model name lives in, whether or not the model exists: the default
/// namespace for a name without `/`, else the part before the first `/` (as a slug when it is
/// not a valid namespace: `Acme/Fraud Model` lives in `acme`).
///
/// This is the one answer to "which namespace does this name act in": the store creates a
/// model there and resolves the name only to a model there, and authorization checks roles
/// there. Because it depends on the name alone, an answer never tells whether a model exists.
#[must_use]
pub fn mlflow_namespace(name: &str, default_ns: &str) -> String {
    match name.split_once('/') {
        Some((ns, _)) if ballast_core::validate_namespace(ns).is_ok() => ns.to_owned(),
        Some((ns, _)) => slug(ns),
        None => default_ns.to_owned(),
    }
}

/// A valid name part made of `part`: lowercase ASCII letters, digits, `-`, `_` and `.`, other
/// characters as `-`, at most 56 characters, never empty.
pub(crate) fn slug(part: &str) -> String {
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

/// A model as the MLflow API shows it: the name the MLflow client used, and the Ballast model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlflowModel {
    /// The MLflow name (what the client created or renamed it to; for native models, the model
    /// part in the default namespace, else `namespace/model`).
    pub name: String,
    /// The Ballast model.
    pub model: Model,
}

/// What a registry search filters and sorts models on, read for every model in one query (the
/// full [`MlflowModel`] is loaded for the page that is answered only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowModelEntry {
    /// The MLflow name (as [`MlflowModel::name`]).
    pub name: String,
    /// The Ballast name.
    pub model: ModelName,
    /// The model's tags.
    pub tags: Tags,
    /// Creation time (RFC 3339, as [`Model::created_at`]).
    pub created_at: String,
    /// Last change (RFC 3339, as [`Model::updated_at`]).
    pub updated_at: String,
}

/// MLflow's fields of a version that Ballast's own metadata does not hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MlflowVersionInfo {
    /// Where the client said the artifacts are (`source`).
    pub source: String,
    /// The run that produced it.
    pub run_id: String,
    /// A link to the run.
    pub run_link: String,
    /// MLflow 3 logged model id.
    pub logged_model_id: String,
    /// Whether Ballast holds the artifacts under `source` and sealed them into the manifest
    /// (`false`: an external reference was sealed instead, and the content is unverified).
    pub verified: bool,
    /// The description set through MLflow after sealing (sealed metadata is immutable).
    pub description: Option<String>,
}

/// A version as the MLflow API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlflowVersion {
    /// The Ballast version.
    pub version: Version,
    /// MLflow fields (defaults for versions created natively).
    pub info: MlflowVersionInfo,
}

/// A version to create through MLflow: created, given its files and sealed in one transaction.
#[derive(Debug, Clone, Default)]
pub struct NewMlflowVersion {
    /// Metadata (lineage, params and metrics of the source run).
    pub metadata: VersionMetadata,
    /// Tags.
    pub tags: Tags,
    /// Files whose blobs are already stored.
    pub files: Vec<FileEntry>,
    /// MLflow fields.
    pub info: MlflowVersionInfo,
}

/// A tracking object (experiment, run, logged model) kept as a JSON document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlflowObject {
    /// `experiment`, `run` or `logged_model`.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// A unique name within its kind, when it has one (experiments).
    pub name: Option<String>,
    /// The document.
    pub body: serde_json::Value,
}

/// The MLflow compatibility part of a store.
#[async_trait]
pub trait MlflowStore: Send + Sync + 'static {
    /// Finds the Ballast model an MLflow name refers to.
    async fn mlflow_resolve(&self, name: &str, default_ns: &str) -> StoreResult<ModelName>;
    /// One model with its MLflow name.
    async fn mlflow_model(&self, name: &str, default_ns: &str) -> StoreResult<MlflowModel>;
    /// Every model with its MLflow name.
    async fn mlflow_models(&self, default_ns: &str) -> StoreResult<Vec<MlflowModel>>;
    /// The given models (from [`MlflowStore::mlflow_model_index`]) with every version, in one
    /// read: a search page.
    async fn mlflow_model_page(
        &self,
        models: Vec<MlflowModelEntry>,
    ) -> StoreResult<Vec<(MlflowModel, Vec<MlflowVersion>)>>;
    /// Every model's MLflow name, Ballast name, tags and timestamps, oldest first, in one query;
    /// only the models whose MLflow name starts with `name_prefix` (case-sensitive) when given.
    async fn mlflow_model_index(
        &self,
        default_ns: &str,
        name_prefix: Option<&str>,
    ) -> StoreResult<Vec<MlflowModelEntry>>;
    /// Creates a model under an MLflow name (mapped onto a valid Ballast name).
    async fn mlflow_create_model(
        &self,
        ctx: &Ctx,
        name: &str,
        default_ns: &str,
        description: String,
        tags: Tags,
    ) -> StoreResult<MlflowModel>;
    /// Changes the MLflow name of a model (its Ballast name, which audit and routes refer to,
    /// stays).
    async fn mlflow_rename_model(
        &self,
        ctx: &Ctx,
        name: &str,
        new_name: &str,
        default_ns: &str,
    ) -> StoreResult<MlflowModel>;
    /// Every version of a model with its MLflow fields, by number.
    async fn mlflow_versions(&self, model: &ModelName) -> StoreResult<Vec<MlflowVersion>>;
    /// The version an alias of the model with this MLflow name points at (`None`: the alias
    /// is not set), resolved in one read.
    async fn mlflow_alias_version(
        &self,
        name: &str,
        alias: &str,
        default_ns: &str,
    ) -> StoreResult<Option<MlflowVersion>>;
    /// One version with its MLflow fields.
    async fn mlflow_version(&self, model: &ModelName, number: u64) -> StoreResult<MlflowVersion>;
    /// Creates, fills and seals a version in one transaction.
    async fn mlflow_create_version(
        &self,
        ctx: &Ctx,
        model: &ModelName,
        new: NewMlflowVersion,
    ) -> StoreResult<MlflowVersion>;
    /// Sets the MLflow description of a version.
    async fn mlflow_set_version_description(
        &self,
        ctx: &Ctx,
        model: &ModelName,
        number: u64,
        description: String,
    ) -> StoreResult<MlflowVersion>;
    /// Moves a version through `path` (each step allowed by the state machine), optionally
    /// archiving the other versions in the final stage, all in one transaction.
    async fn mlflow_transition(
        &self,
        ctx: &Ctx,
        model: &ModelName,
        number: u64,
        path: Vec<Stage>,
        archive_existing: bool,
    ) -> StoreResult<MlflowVersion>;
    /// Deletes a version that is not in staging or production (its aliases go with it; its
    /// number is never reused; blobs stay, they may be shared).
    async fn mlflow_delete_version(&self, ctx: &Ctx, model: &ModelName, number: u64) -> StoreResult<()>;
    /// Creates or replaces a tracking object.
    async fn mlflow_put_object(
        &self,
        ctx: &Ctx,
        obj: MlflowObject,
        create_only: bool,
    ) -> StoreResult<MlflowObject>;
    /// Removes the tracking objects of a kind whose id is `id` or starts with `id/`; returns how
    /// many went.
    async fn mlflow_delete_objects(&self, ctx: &Ctx, kind: &str, id: &str) -> StoreResult<u64>;
    /// Reads a tracking object by id.
    async fn mlflow_get_object(&self, kind: &str, id: &str) -> StoreResult<MlflowObject>;
    /// Reads a tracking object by name.
    async fn mlflow_object_by_name(&self, kind: &str, name: &str) -> StoreResult<MlflowObject>;
    /// Every tracking object of a kind, oldest first.
    async fn mlflow_objects(&self, kind: &str) -> StoreResult<Vec<MlflowObject>>;
}
