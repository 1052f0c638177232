//! The embedded SQLite store.
//!
//! One writer thread owns the only write connection and applies mutations with **group commit**:
//! it takes every queued mutation, runs each inside its own savepoint of one transaction, commits
//! once (one fsync under `synchronous=FULL`), and only then answers every caller. A mutation that
//! fails rolls back to its savepoint and changes nothing; a failed commit fails them all. Reads
//! run on a small pool of read-only connections (WAL lets them proceed during writes).

mod auth;
mod cache;
mod events;
mod governance;
mod mlflow;
mod ops;
mod query;
mod retention;
mod routing;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use ballast_api::{
    Alias, AuditList, CreateModel, CreateVersion, FileEntry, Model, ModelList, StageChange, UpdateModel,
    UpdateVersion, Version, VersionList,
};
use ballast_core::{ErrorCode, ModelName, Sha256Digest, Stage};
use rusqlite::{Connection, OpenFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use ballast_api::events::{
    CreateWebhook, Delivery, DeliveryAttempt, DeliveryList, DeliveryStatus, EventList, Webhook,
};

use ballast_api::deployments::{CreateDeployment, Deployment, RegistryRoute, SetRoute};

use crate::{
    AttemptOutcome, AuditFilter, Claim, ClaimedDelivery, Ctx, ModelFilter, Precondition, RoutingState, Store,
    StoreError, StoreResult, StoreStats, VersionFilter,
};

/// The most mutations committed together.
const MAX_BATCH: usize = 512;
/// Read connections kept open.
const MAX_IDLE_READERS: usize = 16;

type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finisher) + Send>;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    writer: RwLock<Option<mpsc::UnboundedSender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    events: tokio::sync::watch::Receiver<u64>,
    generation: Arc<cache::Generation>,
    aliases: cache::Cached<(ModelName, String), Alias>,
    versions: cache::Cached<(ModelName, u64), Version>,
}

fn configure(conn: &Connection, cache_kib: u32) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; ")?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))?;
    Ok(())
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2_auth.sql"),
    include_str!("schema_v3_governance.sql"),
    include_str!("schema_v4_retention.sql"),
];

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::new(
            ErrorCode::Unavailable,
            format!(
                "the database schema (version {current}) is newer than this ballast understands ({}); upgrade ballast",
                MIGRATIONS.len()
            ),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, runs migrations, starts the writer.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let mut conn = Connection::open(path).map_err(|e| {
            StoreError::new(
                ErrorCode::Unavailable,
                format!("cannot open database {}: {e}", path.display()),
            )
        })?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::internal(format!(
                "cannot enable WAL mode (got {mode})"
            )));
        }
        configure(&conn, 16_000)?;
        migrate(&mut conn)?;
        // The embedded database belongs to one server process: leases held by a previous
        // process (killed mid-delivery) are released so its deliveries resume at once.
        conn.execute(
            "UPDATE deliveries SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner IS NOT NULL",
            [],
        )?;

        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let generation = Arc::new(cache::Generation::default());
        let (events_tx, events_rx) = tokio::sync::watch::channel(events::last_event_id(&conn)?);
        let handle = std::thread::Builder::new()
            .name("ballast-sqlite-writer".into())
            .spawn({
                let generation = Arc::clone(&generation);
                move || writer_loop(&conn, rx, &events_tx, &generation)
            })
            .map_err(|e| StoreError::internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            writer: RwLock::new(Some(tx)),
            writer_thread: Mutex::new(Some(handle)),
            readers: Arc::new(Mutex::new(Vec::new())),
            events: events_rx,
            generation,
            aliases: cache::Cached::default(),
            versions: cache::Cached::default(),
        })
    }

    /// Runs `op` in the writer's transaction. With an idempotency key, a retry with the same
    /// fingerprint returns the first result and runs nothing; another request with the same key
    /// is refused.
    async fn write<T, F>(&self, ctx: &Ctx, op: F) -> StoreResult<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let idem = ctx.idempotency.clone();
        let actor = ctx.actor.clone();
        self.write_internal(move |conn| match &idem {
            None => op(conn),
            Some(idem) => ops::with_idempotency(conn, &actor, idem, op),
        })
        .await
    }

    /// Runs `op` in the writer's transaction for internal bookkeeping (no idempotency).
    async fn write_internal<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = op(conn);
            let ok = result.is_ok();
            let finish: Finisher = Box::new(move |commit| {
                let _ = reply_tx.send(commit.and(result));
            });
            (ok, finish)
        });
        self.submit(job, reply_rx).await
    }

    async fn submit<T>(&self, job: Job, reply_rx: oneshot::Receiver<StoreResult<T>>) -> StoreResult<T> {
        let sent = self
            .writer
            .read()
            .map_err(|_| StoreError::internal("writer lock poisoned"))?
            .as_ref()
            .is_some_and(|w| w.send(job).is_ok());
        if !sent {
            return Err(StoreError::new(
                ErrorCode::Unavailable,
                "the store is shutting down; retry against another node or later",
            ));
        }
        reply_rx.await.map_err(|_| {
            StoreError::new(
                ErrorCode::Unavailable,
                "the metadata database could not apply the change (nothing was changed); retry later",
            )
        })?
    }

    /// Runs `op` on a read connection, off the async threads.
    async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    configure(&c, 2_000)?;
                    c
                }
            };
            let out = op(&conn);
            if let Ok(mut v) = readers.lock() {
                if v.len() < MAX_IDLE_READERS {
                    v.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::internal(format!("read task failed: {e}")))?
    }
}

/// How long an idempotency key is remembered: retries come within minutes, a day is generous.
pub const IDEMPOTENCY_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How often expired idempotency keys are removed.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

fn prune_idempotency(conn: &Connection) {
    let cutoff = time::OffsetDateTime::now_utc() - IDEMPOTENCY_TTL;
    let cutoff = query::format_time(cutoff);
    match conn.execute("DELETE FROM idempotency WHERE created_at < ?1", [cutoff]) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(removed = n, "expired idempotency keys removed"),
        Err(e) => tracing::warn!(error = %e, "cannot remove expired idempotency keys"),
    }
}

fn writer_loop(
    conn: &Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    events_tx: &tokio::sync::watch::Sender<u64>,
    generation: &cache::Generation,
) {
    let mut last_prune = std::time::Instant::now();
    prune_idempotency(conn);
    while let Some(first) = rx.blocking_recv() {
        if last_prune.elapsed() > PRUNE_EVERY {
            prune_idempotency(conn);
            last_prune = std::time::Instant::now();
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(conn, batch, generation, events_tx);
    }
    // The channel is closed and drained: checkpoint so the WAL is folded into the database.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}

fn run_batch(
    conn: &Connection,
    batch: Vec<Job>,
    generation: &cache::Generation,
    events_tx: &tokio::sync::watch::Sender<u64>,
) {
    // A job that is dropped without running drops its reply channel: its caller gets
    // `unavailable` and nothing was changed.
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        tracing::error!(error = %e, jobs = batch.len(), "cannot begin a write transaction");
        return;
    }
    let mut finishers = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            tracing::error!(error = %e, "cannot open a savepoint");
            continue;
        }
        let (ok, finish) = job(conn);
        let end = if ok {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        match end {
            Ok(()) => finishers.push(finish),
            Err(e) => {
                let err = StoreError::from(e);
                finishers.push(Box::new(move |_| finish(Err(err))));
            }
        }
    }
    let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
    if let Err(e) = &commit {
        tracing::error!(error = %e, "commit failed; the batch was rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
    // Cached reads from before this commit must not be served once anyone learns of it.
    generation.bump();
    // Watchers learn of the new events before the writers' callers get their replies, so a
    // caller that reads the watch after its reply sees its own change.
    if let Ok(last) = events::last_event_id(conn) {
        events_tx.send_if_modified(|v| {
            let changed = *v != last;
            *v = last;
            changed
        });
    }
    for finish in finishers {
        finish(commit.clone());
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_model(&self, ctx: &Ctx, req: CreateModel) -> StoreResult<Model> {
        let c = ctx.clone();
        self.write(ctx, move |conn| ops::create_model(conn, &c, &req))
            .await
    }

    async fn get_model(&self, name: &ModelName) -> StoreResult<Model> {
        let name = name.clone();
        self.read(move |conn| {
            let id = query::model_id(conn, &name)?;
            query::load_model(conn, id)
        })
        .await
    }

    async fn list_models(&self, filter: ModelFilter) -> StoreResult<ModelList> {
        self.read(move |conn| query::list_models(conn, &filter)).await
    }

    async fn update_model(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        req: UpdateModel,
        pre: Precondition,
    ) -> StoreResult<Model> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| ops::update_model(conn, &c, &name, &req, pre))
            .await
    }

    async fn delete_model(&self, ctx: &Ctx, name: &ModelName, pre: Precondition) -> StoreResult<()> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| ops::delete_model(conn, &c, &name, pre))
            .await
    }

    async fn create_version(&self, ctx: &Ctx, name: &ModelName, req: CreateVersion) -> StoreResult<Version> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| ops::create_version(conn, &c, &name, &req))
            .await
    }

    async fn get_version(&self, name: &ModelName, number: u64) -> StoreResult<Version> {
        let key = (name.clone(), number);
        let generation = self.generation.current();
        if let Some(hit) = self.versions.get(&key, generation) {
            return Ok(hit);
        }
        let name = name.clone();
        let found = self
            .read(move |conn| {
                let id = query::model_id(conn, &name)?;
                query::load_version(conn, id, &name, number)
            })
            .await?;
        self.versions.put(key, generation, found.clone());
        Ok(found)
    }

    async fn list_versions(&self, name: &ModelName, filter: VersionFilter) -> StoreResult<VersionList> {
        let name = name.clone();
        self.read(move |conn| query::list_versions(conn, &name, &filter))
            .await
    }

    async fn update_version(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        req: UpdateVersion,
        pre: Precondition,
    ) -> StoreResult<Version> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| {
            ops::update_version(conn, &c, &name, number, &req, pre)
        })
        .await
    }

    async fn put_file(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        file: FileEntry,
    ) -> StoreResult<FileEntry> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| ops::put_file(conn, &c, &name, number, file))
            .await
    }

    async fn delete_file(&self, ctx: &Ctx, name: &ModelName, number: u64, path: &str) -> StoreResult<()> {
        let (c, name, path) = (ctx.clone(), name.clone(), path.to_owned());
        self.write(ctx, move |conn| ops::delete_file(conn, &c, &name, number, &path))
            .await
    }

    async fn seal_version(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        expected: Option<Sha256Digest>,
    ) -> StoreResult<Version> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| {
            ops::seal_version(conn, &c, &name, number, expected)
        })
        .await
    }

    async fn set_stage(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        number: u64,
        stage: Stage,
        comment: Option<String>,
        pre: Precondition,
    ) -> StoreResult<StageChange> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| {
            ops::set_stage(conn, &c, &name, number, stage, comment.as_deref(), pre)
        })
        .await
    }

    async fn rollback(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        comment: Option<String>,
    ) -> StoreResult<StageChange> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |conn| {
            ops::rollback(conn, &c, &name, comment.as_deref())
        })
        .await
    }

    async fn version_in_stage(&self, name: &ModelName, stage: Stage) -> StoreResult<Version> {
        let name = name.clone();
        self.read(move |conn| {
            let id = query::model_id(conn, &name)?;
            let n = query::newest_in_stage(conn, id, stage)?
                .ok_or_else(|| StoreError::not_found(format!("a version of {name} in {stage}")))?;
            query::load_version(conn, id, &name, n)
        })
        .await
    }

    async fn set_alias(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        alias: &str,
        version: u64,
        pre: Precondition,
    ) -> StoreResult<Alias> {
        let (c, name, alias) = (ctx.clone(), name.clone(), alias.to_owned());
        self.write(ctx, move |conn| {
            ops::set_alias(conn, &c, &name, &alias, version, pre)
        })
        .await
    }

    async fn get_alias(&self, name: &ModelName, alias: &str) -> StoreResult<Alias> {
        let key = (name.clone(), alias.to_owned());
        let generation = self.generation.current();
        if let Some(hit) = self.aliases.get(&key, generation) {
            return Ok(hit);
        }
        let (name, alias) = key.clone();
        let found = self
            .read(move |conn| {
                let id = query::model_id(conn, &name)?;
                query::load_alias(conn, id, &name, &alias)
            })
            .await?;
        self.aliases.put(key, generation, found.clone());
        Ok(found)
    }

    async fn delete_alias(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        alias: &str,
        pre: Precondition,
    ) -> StoreResult<()> {
        let (c, name, alias) = (ctx.clone(), name.clone(), alias.to_owned());
        self.write(ctx, move |conn| ops::delete_alias(conn, &c, &name, &alias, pre))
            .await
    }

    async fn blob_size(&self, digest: Sha256Digest) -> StoreResult<Option<u64>> {
        self.read(move |conn| query::blob_size(conn, digest)).await
    }

    async fn referenced_blobs(&self) -> StoreResult<Vec<(Sha256Digest, u64)>> {
        self.read(query::referenced_blobs).await
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<AuditList> {
        self.read(move |conn| query::list_audit(conn, &filter)).await
    }

    async fn verify_audit(&self) -> StoreResult<Result<u64, u64>> {
        self.read(query::verify_audit).await
    }

    async fn create_webhook(&self, ctx: &Ctx, req: CreateWebhook) -> StoreResult<Webhook> {
        let c = ctx.clone();
        self.write(ctx, move |conn| events::create_webhook(conn, &c, &req))
            .await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.read(events::list_webhooks).await
    }

    async fn get_webhook(&self, id: u64) -> StoreResult<Webhook> {
        self.read(move |conn| events::get_webhook(conn, id)).await
    }

    async fn delete_webhook(&self, ctx: &Ctx, id: u64) -> StoreResult<()> {
        let c = ctx.clone();
        self.write(ctx, move |conn| events::delete_webhook(conn, &c, id))
            .await
    }

    async fn ping_webhook(&self, ctx: &Ctx, id: u64) -> StoreResult<Delivery> {
        let c = ctx.clone();
        self.write(ctx, move |conn| events::ping_webhook(conn, &c, id))
            .await
    }

    async fn list_deliveries(
        &self,
        webhook: u64,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<DeliveryList> {
        self.read(move |conn| events::list_deliveries(conn, webhook, status, limit))
            .await
    }

    async fn get_delivery(&self, webhook: u64, id: u64) -> StoreResult<Delivery> {
        self.read(move |conn| events::get_delivery(conn, webhook, id))
            .await
    }

    async fn redeliver(&self, ctx: &Ctx, webhook: u64, id: u64) -> StoreResult<Delivery> {
        let c = ctx.clone();
        self.write(ctx, move |conn| events::redeliver(conn, &c, webhook, id))
            .await
    }

    async fn claim_deliveries(&self, claim: Claim) -> StoreResult<Vec<ClaimedDelivery>> {
        self.write_internal(move |conn| events::claim(conn, &claim)).await
    }

    async fn finish_delivery(
        &self,
        node: &str,
        id: u64,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> StoreResult<bool> {
        let node = node.to_owned();
        self.write_internal(move |conn| events::finish(conn, &node, id, &attempt, outcome))
            .await
    }

    async fn list_events(&self, after: u64, limit: u32, types: Vec<String>) -> StoreResult<EventList> {
        self.read(move |conn| events::list_events(conn, after, limit, &types))
            .await
    }

    fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.clone()
    }

    async fn add_deployment(&self, ctx: &Ctx, req: CreateDeployment) -> StoreResult<Deployment> {
        let c = ctx.clone();
        self.write(ctx, move |conn| routing::add_deployment(conn, &c, &req))
            .await
    }

    async fn remove_deployment(&self, ctx: &Ctx, id: u64) -> StoreResult<()> {
        let c = ctx.clone();
        self.write(ctx, move |conn| routing::remove_deployment(conn, &c, id))
            .await
    }

    async fn list_deployments(
        &self,
        model: Option<ModelName>,
        region: Option<String>,
    ) -> StoreResult<Vec<Deployment>> {
        self.read(move |conn| routing::list_deployments(conn, model.as_ref(), region.as_deref()))
            .await
    }

    async fn set_route(&self, ctx: &Ctx, name: &str, spec: SetRoute) -> StoreResult<RegistryRoute> {
        let (c, name) = (ctx.clone(), name.to_owned());
        self.write(ctx, move |conn| routing::set_route(conn, &c, &name, &spec))
            .await
    }

    async fn delete_route(&self, ctx: &Ctx, name: &str) -> StoreResult<()> {
        let (c, name) = (ctx.clone(), name.to_owned());
        self.write(ctx, move |conn| routing::delete_route(conn, &c, &name))
            .await
    }

    async fn list_routes(&self) -> StoreResult<Vec<RegistryRoute>> {
        self.read(routing::list_routes).await
    }

    async fn routing_state(&self) -> StoreResult<RoutingState> {
        self.read(routing::routing_state).await
    }

    async fn stats(&self) -> StoreResult<StoreStats> {
        self.read(query::stats).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        if let Ok(mut w) = self.writer.write() {
            w.take();
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Ok(mut r) = self.readers.lock() {
            r.clear();
        }
    }
}
