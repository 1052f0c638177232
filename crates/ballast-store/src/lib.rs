//! Metadata storage: the [`Store`] trait that the server talks to, and its SQL implementation
//! on embedded SQLite or on PostgreSQL.
//!
//! Every mutation takes a [`Ctx`] (who, which request, optional idempotency key) and commits its
//! state change, its audit entry and its outbox event in one transaction, or none of them. A
//! reply means the transaction is durable (SQLite WAL with `synchronous=FULL`, or a PostgreSQL
//! commit).

pub mod auth;
pub mod db;
mod error;
pub mod governance;
pub mod mlflow;
pub mod retention;
pub mod sql;
mod types;

pub use auth::{AuthStore, TokenLookup};
pub use error::{StoreError, StoreResult};
pub use governance::GovernanceStore;
pub use mlflow::MlflowStore;
pub use retention::{GcScope, ModelPlan, RetentionStore, RetentionTarget};
pub use sql::{PgOptions, SqlStore};
pub use types::{
    unix_ms, AttemptOutcome, AuditFilter, Claim, ClaimedDelivery, Ctx, Idempotency, MetricFilter,
    ModelFilter, Precondition, ResolvedRoute, RoutingState, StoreStats, VersionFilter, VersionOrder,
};

use async_trait::async_trait;
use ballast_api::deployments::{CreateDeployment, Deployment, RegistryRoute, SetRoute};
use ballast_api::events::{
    CreateWebhook, Delivery, DeliveryAttempt, DeliveryList, DeliveryStatus, EventList, Webhook,
};
use ballast_api::{
    Alias, AuditList, CreateModel, CreateVersion, FileEntry, Model, ModelList, StageChange, UpdateModel,
    UpdateVersion, Version, VersionList,
};
use ballast_core::{ModelName, Sha256Digest, Stage};

/// The registry's metadata store. One implementation per backend; all pass the same tests.
#[async_trait]
pub trait Store: MlflowStore + AuthStore + GovernanceStore + RetentionStore + Send + Sync + 'static {
    /// Creates a model.
    async fn create_model(&self, ctx: &Ctx, req: CreateModel) -> StoreResult<Model>;
    /// Reads a model.
    async fn get_model(&self, name: &ModelName) -> StoreResult<Model>;
    /// Lists models by name, one page at a time.
    async fn list_models(&self, filter: ModelFilter) -> StoreResult<ModelList>;
    /// Changes a model's description or tags.
    async fn update_model(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        req: UpdateModel,
        pre: Precondition,
    ) -> StoreResult<Model>;
    /// Deletes a model with all its versions; refused while a version is in staging or production.
    async fn delete_model(&self, ctx: &Ctx, name: &ModelName, pre: Precondition) -> StoreResult<()>;

    /// Creates a draft version with the next number.
    async fn create_version(&self, ctx: &Ctx, name: &ModelName, req: CreateVersion) -> StoreResult<Version>;
    /// Reads a version.
    async fn get_version(&self, name: &ModelName, number: u64) -> StoreResult<Version>;
    /// Lists or searches a model's versions.
    async fn list_versions(&self, name: &ModelName, filter: VersionFilter) -> StoreResult<VersionList>;
    /// Replaces a draft's metadata and/or changes tags.
    async fn update_version(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        req: UpdateVersion,
        pre: Precondition,
    ) -> StoreResult<Version>;
    /// Records a file of a draft whose blob is already stored (replacing the same path).
    async fn put_file(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        file: FileEntry,
    ) -> StoreResult<FileEntry>;
    /// Removes a file from a draft.
    async fn delete_file(&self, ctx: &Ctx, name: &ModelName, number: u64, path: &str) -> StoreResult<()>;
    /// Seals a draft: computes its manifest digest and makes files and metadata immutable.
    async fn seal_version(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        expected: Option<Sha256Digest>,
    ) -> StoreResult<Version>;
    /// Moves a version to a stage (the governance hook has already run). Promotion to production
    /// demotes the previous production version in the same transaction.
    async fn set_stage(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        stage: Stage,
        comment: Option<String>,
        pre: Precondition,
    ) -> StoreResult<StageChange>;
    /// Restores the production version that the current one replaced.
    async fn rollback(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        comment: Option<String>,
    ) -> StoreResult<StageChange>;
    /// The version currently in `stage` (for staging/development/archived: the newest one).
    async fn version_in_stage(&self, name: &ModelName, stage: Stage) -> StoreResult<Version>;

    /// Creates or moves an alias.
    async fn set_alias(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        alias: &str,
        version: u64,
        pre: Precondition,
    ) -> StoreResult<Alias>;
    /// Reads an alias.
    async fn get_alias(&self, name: &ModelName, alias: &str) -> StoreResult<Alias>;
    /// Deletes an alias.
    async fn delete_alias(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        alias: &str,
        pre: Precondition,
    ) -> StoreResult<()>;

    /// Whether any version references the blob, and its recorded size.
    async fn blob_size(&self, digest: Sha256Digest) -> StoreResult<Option<u64>>;
    /// Every blob digest referenced by a version (for integrity checks).
    async fn referenced_blobs(&self) -> StoreResult<Vec<(Sha256Digest, u64)>>;

    /// Reads the audit trail.
    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<AuditList>;
    /// Recomputes the audit hash chain; returns the number of entries checked, or the id of the
    /// first entry that does not match.
    async fn verify_audit(&self) -> StoreResult<Result<u64, u64>>;

    /// Subscribes a URL to events.
    async fn create_webhook(&self, ctx: &Ctx, req: CreateWebhook) -> StoreResult<Webhook>;
    /// Every webhook (secrets omitted).
    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>>;
    /// One webhook (secret omitted).
    async fn get_webhook(&self, id: u64) -> StoreResult<Webhook>;
    /// Removes a webhook and its pending deliveries.
    async fn delete_webhook(&self, ctx: &Ctx, id: u64) -> StoreResult<()>;
    /// Queues a `webhook.ping` delivery to one webhook.
    async fn ping_webhook(&self, ctx: &Ctx, id: u64) -> StoreResult<Delivery>;
    /// A webhook's deliveries, newest first.
    async fn list_deliveries(
        &self,
        webhook: u64,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<DeliveryList>;
    /// One delivery with every attempt.
    async fn get_delivery(&self, webhook: u64, id: u64) -> StoreResult<Delivery>;
    /// Queues a delivered or dead delivery again.
    async fn redeliver(&self, ctx: &Ctx, webhook: u64, id: u64) -> StoreResult<Delivery>;
    /// Claims due deliveries under a lease (dispatchers only).
    async fn claim_deliveries(&self, claim: Claim) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records an attempt and its outcome; `false` when the lease was lost to another node.
    async fn finish_delivery(
        &self,
        node: &str,
        id: u64,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> StoreResult<bool>;
    /// The change feed: events after `after`, oldest first, optionally of some types only.
    async fn list_events(&self, after: u64, limit: u32, types: Vec<String>) -> StoreResult<EventList>;
    /// Watches the id of the newest committed event (changes after every commit that wrote events).
    fn watch_events(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Records where a sealed version is served.
    async fn add_deployment(&self, ctx: &Ctx, req: CreateDeployment) -> StoreResult<Deployment>;
    /// Removes a deployment.
    async fn remove_deployment(&self, ctx: &Ctx, id: u64) -> StoreResult<()>;
    /// Deployments, optionally of one model and/or in one region, by id.
    async fn list_deployments(
        &self,
        model: Option<ModelName>,
        region: Option<String>,
    ) -> StoreResult<Vec<Deployment>>;
    /// Creates or replaces a registry route.
    async fn set_route(&self, ctx: &Ctx, name: &str, spec: SetRoute) -> StoreResult<RegistryRoute>;
    /// Deletes a registry route (refused while another route falls back to it).
    async fn delete_route(&self, ctx: &Ctx, name: &str) -> StoreResult<()>;
    /// Every registry route, by name.
    async fn list_routes(&self) -> StoreResult<Vec<RegistryRoute>>;
    /// Routes, their resolved versions and deployments, and the newest event id, read in one
    /// transaction (the input of the routing snapshot).
    async fn routing_state(&self) -> StoreResult<RoutingState>;

    /// Counts for metrics and status.
    async fn stats(&self) -> StoreResult<StoreStats>;
    /// Whether the store answers (for readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// Finishes queued writes and closes the database cleanly.
    async fn close(&self);
}
