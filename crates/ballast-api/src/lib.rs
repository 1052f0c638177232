//! Wire types shared by the server, the client, the CLI and (later) the router: request and
//! response bodies of the `/v1` API, with their OpenAPI schemas.
//!
//! These are the stable JSON shapes; field names are `snake_case`, times are RFC 3339 strings in
//! UTC, digests are 64 lowercase hex characters.

pub mod auth;
pub mod deployments;
pub mod events;
pub mod governance;
pub mod retention;
pub mod routing;

use std::collections::BTreeMap;

use ballast_core::{ErrorCode, Stage};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Free-form string tags.
pub type Tags = BTreeMap<String, String>;

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, with a stable code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (see the error table in the README).
    #[schema(value_type = String, example = "invalid_name")]
    pub code: ErrorCode,
    /// Human-readable explanation, naming the rule that was broken and what to do next.
    pub message: String,
    /// The request field at fault, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Create a model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModel {
    /// `namespace/model`.
    #[schema(example = "acme/support-bot")]
    pub name: String,
    /// What the model is for.
    #[serde(default)]
    pub description: String,
    /// Initial tags.
    #[serde(default)]
    pub tags: Tags,
}

/// Change a model's description or tags. Absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateModel {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags to add or overwrite.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub set_tags: Tags,
    /// Tag keys to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_tags: Vec<String>,
}

/// A registered model.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Model {
    /// `namespace/model`.
    pub name: String,
    /// Namespace part of the name.
    pub namespace: String,
    /// What the model is for.
    pub description: String,
    /// Tags.
    pub tags: Tags,
    /// Highest version number assigned so far (0 when there is none).
    pub latest_version: u64,
    /// The version in production, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production_version: Option<u64>,
    /// Aliases and the versions they point at.
    pub aliases: BTreeMap<String, u64>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Revision, increased on each change (the ETag is `"<revision>"`).
    pub revision: u64,
}

/// A page of models.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelList {
    /// Models on this page, ordered by name.
    pub models: Vec<Model>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Where a version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// Training run that produced the version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_run_id: Option<String>,
    /// Experiment the run belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_experiment_id: Option<String>,
    /// Datasets the version was trained or evaluated on (URIs or registry references).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    /// The version this one was derived from (fine-tune, distillation), as a version number of
    /// the same model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_version: Option<u64>,
    /// The version this one was derived from when it belongs to another model (`ns/model/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// What a version needs to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Number of accelerators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// Accelerator kind (e.g. `nvidia-a100-80gb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// Accelerator memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_mib: Option<u64>,
}

/// A version's metadata. Immutable once the version is sealed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionMetadata {
    /// What changed in this version.
    #[serde(default)]
    pub description: String,
    /// Person or team responsible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Reference to the training data (URI, dataset version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data: Option<String>,
    /// Commit of the code that trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_commit: Option<String>,
    /// Hyperparameters (any JSON values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// Evaluation metrics: name → finite number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Framework and dependency versions (`torch` → `2.4.1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub frameworks: BTreeMap<String, String>,
    /// What it needs to run.
    #[serde(default)]
    pub resources: Resources,
    /// Where it came from.
    #[serde(default)]
    pub lineage: Lineage,
    /// The model card, in Markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_card: Option<String>,
}

/// Create a draft version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersion {
    /// The version's metadata.
    #[serde(default)]
    pub metadata: VersionMetadata,
    /// Initial tags (tags stay editable after sealing).
    #[serde(default)]
    pub tags: Tags,
}

/// Whether a version still takes files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Receives files; metadata may still be replaced.
    Draft,
    /// Files and metadata are immutable; the digest identifies the content.
    Sealed,
}

/// A file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    /// Relative path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Media type, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// A model version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Version {
    /// `namespace/model`.
    pub model: String,
    /// Version number, assigned by the registry: 1, 2, 3, …
    pub version: u64,
    /// Draft or sealed.
    pub state: VersionState,
    /// Lifecycle stage.
    #[schema(value_type = String, example = "development")]
    pub stage: Stage,
    /// Metadata.
    pub metadata: VersionMetadata,
    /// Tags (editable at any time).
    pub tags: Tags,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
    /// Sum of file sizes.
    pub total_size: u64,
    /// SHA-256 of the manifest, once sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: String,
    /// When it was sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_at: Option<String>,
    /// When its stage last changed.
    pub stage_changed_at: String,
    /// Revision, increased on each change (the ETag is `"<revision>"`).
    pub revision: u64,
}

/// A page of versions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionList {
    /// Versions on this page.
    pub versions: Vec<Version>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Replace a draft's metadata, or change tags of any version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVersion {
    /// New metadata (drafts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<VersionMetadata>,
    /// Tags to add or overwrite.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub set_tags: Tags,
    /// Tag keys to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_tags: Vec<String>,
}

/// Attach a blob the server already holds to a path of a draft, without uploading it again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachFile {
    /// Relative path inside the version.
    pub path: String,
    /// Digest of the stored blob.
    pub sha256: String,
    /// Expected size; checked when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// Seal a draft.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SealVersion {
    /// If given, the seal only happens when the manifest digest equals this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_digest: Option<String>,
}

/// Move a version to another stage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStage {
    /// Target stage.
    #[schema(value_type = String, example = "production")]
    pub stage: Stage,
    /// Why (kept in the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The result of a stage change or rollback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StageChange {
    /// The version that moved, as it is now.
    pub version: Version,
    /// The version demoted from production in the same transaction, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demoted: Option<u64>,
}

/// Roll production back to the version the current one replaced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Why (kept in the audit trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Point an alias at a version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// Version number.
    pub version: u64,
}

/// An alias.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    /// `namespace/model`.
    pub model: String,
    /// Alias name.
    pub alias: String,
    /// Version it points at.
    pub version: u64,
    /// Revision, increased on each move (the ETag is `"<revision>"`).
    pub revision: u64,
    /// When it last moved.
    pub updated_at: String,
}

/// A stored blob.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlobInfo {
    /// SHA-256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: u64,
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What (`model.create`, `version.stage`, …).
    pub action: String,
    /// On what (`acme/bot`, `acme/bot/3`, `acme/bot@champion`).
    pub target: String,
    /// State before (absent on create).
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    /// State after (absent on delete).
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
    /// Request id of the change.
    pub request_id: String,
    /// SHA-256 chaining this entry to the previous one.
    pub hash: String,
}

/// A page of audit entries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// Entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` to get the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}
