//! The SQL store: every operation written once against [`Db`], run on SQLite (embedded, the
//! default) or PostgreSQL (several registry nodes on one database).
//!
//! One writer thread per process owns the write connection and applies mutations with **group
//! commit**: it takes every queued mutation, runs each inside its own savepoint of one
//! transaction, commits once (one fsync), and only then answers every caller. A mutation that
//! fails rolls back to its savepoint and changes nothing; a failed commit fails them all. On
//! PostgreSQL each write transaction first takes one advisory lock, so the writers of all nodes
//! run one after another — version numbers stay gap-free, alias CAS has one winner and the audit
//! hash chain stays linear across nodes, exactly as with the single SQLite writer. Reads run on a
//! small pool of connections (on PostgreSQL inside a read-only repeatable-read transaction, so a
//! read sees one consistent state).

mod auth;
mod cache;
mod events;
mod governance;
mod mlflow;
mod ops;
mod pg_tls;
pub mod postgres;
mod query;
mod retention;
mod routing;
mod sqlite;

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ballast_api::{
    Alias, AuditList, CreateModel, CreateVersion, FileEntry, Model, ModelList, StageChange, UpdateModel,
    UpdateVersion, Version, VersionList,
};
use ballast_core::{ErrorCode, ModelName, Sha256Digest, Stage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use ballast_api::events::{
    CreateWebhook, Delivery, DeliveryAttempt, DeliveryList, DeliveryStatus, EventList, Webhook,
};

use ballast_api::deployments::{CreateDeployment, Deployment, RegistryRoute, SetRoute};

use crate::db::{Db, Dialect};
use crate::{
    AttemptOutcome, AuditFilter, Claim, ClaimedDelivery, Ctx, ModelFilter, Precondition, RoutingState, Store,
    StoreError, StoreResult, StoreStats, VersionFilter,
};

pub use postgres::PgOptions;

/// The most mutations committed together.
const MAX_BATCH: usize = 512;
/// Read connections kept open.
const MAX_IDLE_READERS: usize = 16;
/// How often a node sharing its database with others looks for their new events.
const EVENT_POLL: Duration = Duration::from_millis(250);

type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&dyn Db) -> (bool, Finisher) + Send>;

/// A connection the store keeps (pooled readers, the writer).
pub(crate) trait Conn: Db + Send {
    /// Whether the connection can still be used (a broken PostgreSQL connection cannot).
    fn is_usable(&self) -> bool {
        true
    }
}

/// What differs between the SQL engines: connecting and transaction boundaries.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The engine.
    fn dialect(&self) -> Dialect;
    /// A connection for the writer.
    fn open_writer(&self) -> StoreResult<Box<dyn Conn>>;
    /// A connection for reads.
    fn open_reader(&self) -> StoreResult<Box<dyn Conn>>;
    /// Starts a write transaction (holding whatever lock serializes writers).
    fn begin_write(&self) -> &str;
    /// Statements around a read, if reads need an explicit transaction.
    fn read_transaction(&self) -> Option<(&'static str, &'static str)>;
    /// Whether other processes may write to the same database (then caches of reads are off
    /// and other nodes' events are polled).
    fn shared(&self) -> bool;
    /// Most read connections open at once, and how long a read waits for one.
    fn read_pool(&self) -> (usize, Duration);
    /// Runs after the writer drained its queue on close.
    fn on_close(&self, _writer: &dyn Db) {}
}

/// SQL-backed [`Store`] (SQLite or PostgreSQL).
pub struct SqlStore {
    backend: Arc<dyn Backend>,
    writer: RwLock<Option<mpsc::UnboundedSender<Job>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Box<dyn Conn>>>>,
    read_permits: Arc<tokio::sync::Semaphore>,
    events: tokio::sync::watch::Receiver<u64>,
    events_tx: Arc<tokio::sync::watch::Sender<u64>>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    generation: Arc<cache::Generation>,
    aliases: cache::Cached<(ModelName, String), Alias>,
    versions: cache::Cached<(ModelName, u64), Version>,
}

/// What a database URL names.
enum DatabaseUrl<'a> {
    Postgres,
    Sqlite(&'a std::path::Path),
}

impl<'a> DatabaseUrl<'a> {
    fn parse(url: &'a str) -> StoreResult<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres);
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            // The URL is not repeated: it may hold a password.
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            return Err(StoreError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "unsupported database URL (scheme {scheme:?}): use postgres://… or sqlite:///path/to/ballast.db"
                ),
            ));
        }
        Ok(Self::Sqlite(std::path::Path::new(path)))
    }
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path`, runs migrations, starts the
    /// writer.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub fn open(path: &std::path::Path) -> StoreResult<Self> {
        let (backend, writer) = sqlite::SqliteBackend::open(path)?;
        Self::start(Arc::new(backend), writer)
    }

    /// Opens the store named by a database URL: `postgres://…` / `postgresql://…` for
    /// PostgreSQL, `sqlite:///path/to/ballast.db` (or a plain path) for SQLite.
    ///
    /// # Errors
    /// When the URL is not understood, or the database cannot be reached or migrated.
    pub fn connect(url: &str, opts: &PgOptions) -> StoreResult<Self> {
        match DatabaseUrl::parse(url)? {
            DatabaseUrl::Postgres => {
                let (backend, writer) = postgres::PgBackend::connect(url, opts)?;
                Self::start(Arc::new(backend), writer)
            }
            DatabaseUrl::Sqlite(path) => Self::open(path),
        }
    }

    /// Applies pending schema migrations to the database named by `url` (as [`SqlStore::connect`]
    /// does on start) without starting a store; returns the schema version before and after.
    ///
    /// # Errors
    /// When the URL is not understood, or the database cannot be reached or migrated.
    pub fn migrate(url: &str, opts: &PgOptions) -> StoreResult<(usize, usize)> {
        match DatabaseUrl::parse(url)? {
            DatabaseUrl::Postgres => postgres::migrate_only(url, opts),
            DatabaseUrl::Sqlite(path) => sqlite::migrate_file(path),
        }
    }

    fn start(backend: Arc<dyn Backend>, writer: Box<dyn Conn>) -> StoreResult<Self> {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let generation = Arc::new(cache::Generation::default());
        let last = events::last_event_id(&*writer)?;
        let (events_tx, events_rx) = tokio::sync::watch::channel(last);
        let events_tx = Arc::new(events_tx);
        let handle = std::thread::Builder::new()
            .name("ballast-sql-writer".into())
            .spawn({
                let generation = Arc::clone(&generation);
                let events_tx = Arc::clone(&events_tx);
                let backend = Arc::clone(&backend);
                move || writer_loop(&*backend, writer, rx, &events_tx, &generation)
            })
            .map_err(|e| StoreError::internal(format!("cannot start the writer thread: {e}")))?;
        let read_permits = Arc::new(tokio::sync::Semaphore::new(backend.read_pool().0));
        let store = Self {
            backend,
            writer: RwLock::new(Some(tx)),
            writer_thread: Mutex::new(Some(handle)),
            readers: Arc::new(Mutex::new(Vec::new())),
            read_permits,
            events: events_rx,
            events_tx,
            poller: Mutex::new(None),
            generation,
            aliases: cache::Cached::default(),
            versions: cache::Cached::default(),
        };
        if store.backend.shared() {
            store.start_event_poller();
        }
        Ok(store)
    }

    /// Which SQL engine the store runs on.
    #[must_use]
    pub fn dialect(&self) -> Dialect {
        self.backend.dialect()
    }

    /// Learns of events that other nodes committed, so watchers (webhook dispatch, the SSE
    /// feed, the routing snapshot) wake for them too.
    fn start_event_poller(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let readers = Arc::clone(&self.readers);
        let backend = Arc::clone(&self.backend);
        let tx = Arc::clone(&self.events_tx);
        let handle = rt.spawn(async move {
            let mut tick = tokio::time::interval(EVENT_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (readers, backend) = (Arc::clone(&readers), Arc::clone(&backend));
                let last = tokio::task::spawn_blocking(move || {
                    with_reader(&readers, &*backend, |db| events::last_event_id(db))
                })
                .await;
                if let Ok(Ok(last)) = last {
                    tx.send_if_modified(|v| {
                        let changed = last > *v;
                        if changed {
                            *v = last;
                        }
                        changed
                    });
                }
            }
        });
        if let Ok(mut p) = self.poller.lock() {
            *p = Some(handle);
        }
    }

    /// Whether cached reads may be served (only when this process is the only writer).
    fn caching(&self) -> bool {
        !self.backend.shared()
    }

    /// Runs `op` in the writer's transaction. With an idempotency key, a retry with the same
    /// fingerprint returns the first result and runs nothing; another request with the same key
    /// is refused.
    async fn write<T, F>(&self, ctx: &Ctx, op: F) -> StoreResult<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce(&dyn Db) -> StoreResult<T> + Send + 'static,
    {
        let idem = ctx.idempotency.clone();
        let actor = ctx.actor.clone();
        self.write_internal(move |db| match &idem {
            None => op(db),
            Some(idem) => ops::with_idempotency(db, &actor, idem, op),
        })
        .await
    }

    /// Runs `op` in the writer's transaction for internal bookkeeping (no idempotency).
    async fn write_internal<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db) -> StoreResult<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |db| {
            let result = op(db);
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
        F: FnOnce(&dyn Db) -> StoreResult<T> + Send + 'static,
    {
        let wait = self.backend.read_pool().1;
        let permit = tokio::time::timeout(wait, Arc::clone(&self.read_permits).acquire_owned())
            .await
            .map_err(|_| {
                StoreError::new(
                    ErrorCode::Unavailable,
                    "every metadata database connection is busy; retry later",
                )
            })?
            .map_err(|_| StoreError::new(ErrorCode::Unavailable, "the store is shutting down"))?;
        let readers = Arc::clone(&self.readers);
        let backend = Arc::clone(&self.backend);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            with_reader(&readers, &*backend, op)
        })
        .await
        .map_err(|e| StoreError::internal(format!("read task failed: {e}")))?
    }
}

/// Runs `op` on a pooled read connection (opening one when none is idle); a connection that
/// broke is not returned to the pool.
fn with_reader<T>(
    readers: &Mutex<Vec<Box<dyn Conn>>>,
    backend: &dyn Backend,
    op: impl FnOnce(&dyn Db) -> StoreResult<T>,
) -> StoreResult<T> {
    let pooled = readers.lock().ok().and_then(|mut v| v.pop());
    let conn = match pooled {
        Some(c) => c,
        None => backend.open_reader()?,
    };
    let out = match backend.read_transaction() {
        None => op(&*conn),
        Some((begin, end)) => {
            conn.batch(begin)?;
            let out = op(&*conn);
            // A read-only transaction has nothing to keep: end it whatever `op` returned.
            let ended = conn.batch(end);
            out.and_then(|v| ended.map(|()| v))
        }
    };
    if conn.is_usable() {
        if let Ok(mut v) = readers.lock() {
            if v.len() < MAX_IDLE_READERS {
                v.push(conn);
            }
        }
    }
    out
}

/// How long an idempotency key is remembered: retries come within minutes, a day is generous.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often expired idempotency keys are removed.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

fn prune_idempotency(db: &dyn Db) {
    let cutoff = time::OffsetDateTime::now_utc() - IDEMPOTENCY_TTL;
    let cutoff = query::format_time(cutoff);
    match db.execute(
        "DELETE FROM idempotency WHERE created_at < ?1",
        crate::params![cutoff],
    ) {
        Ok(0) => {}
        Ok(n) => tracing::debug!(removed = n, "expired idempotency keys removed"),
        Err(e) => tracing::warn!(error = %e, "cannot remove expired idempotency keys"),
    }
}

/// The longest pause between attempts to reach an unreachable database.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

fn writer_loop(
    backend: &dyn Backend,
    conn: Box<dyn Conn>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    events_tx: &tokio::sync::watch::Sender<u64>,
    generation: &cache::Generation,
) {
    let mut conn = Some(conn);
    let mut last_prune: Option<Instant> = None;
    let mut retry_at = Instant::now();
    let mut backoff = Duration::from_millis(100);
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if conn.as_ref().is_some_and(|c| !c.is_usable()) {
            conn = None;
        }
        if conn.is_none() && Instant::now() >= retry_at {
            match backend.open_writer() {
                Ok(c) => {
                    tracing::info!("the metadata database is reachable again");
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the metadata database");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
        // Without a connection the batch is dropped: every caller gets `unavailable` at once
        // (nothing was changed) instead of waiting for the database to return.
        let Some(c) = conn.as_deref() else {
            continue;
        };
        if last_prune.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
            prune_idempotency(c);
            last_prune = Some(Instant::now());
        }
        run_batch(backend, c, batch, generation, events_tx);
    }
    if let Some(c) = conn.as_deref() {
        backend.on_close(c);
    }
}

fn run_batch(
    backend: &dyn Backend,
    conn: &dyn Conn,
    batch: Vec<Job>,
    generation: &cache::Generation,
    events_tx: &tokio::sync::watch::Sender<u64>,
) {
    let db: &dyn Db = conn;
    // Statements around the jobs travel together (one round trip each on PostgreSQL): the
    // transaction opens with the first savepoint, each job's end opens the next one, and the
    // last job's end commits. A job that is dropped without running drops its reply channel:
    // its caller gets `unavailable` and nothing was changed.
    let begin = format!("{}; SAVEPOINT job", backend.begin_write());
    if let Err(e) = db.batch(&begin) {
        tracing::error!(error = %e, jobs = batch.len(), "cannot begin a write transaction");
        let _ = db.batch("ROLLBACK");
        return;
    }
    let jobs = batch.len();
    let mut finishers: Vec<Finisher> = Vec::with_capacity(jobs);
    let mut commit: StoreResult<()> = Ok(());
    for (i, job) in batch.into_iter().enumerate() {
        let (ok, finish) = job(db);
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        let next = if i + 1 == jobs { "COMMIT" } else { "SAVEPOINT job" };
        match db.batch(&format!("{end}; {next}")) {
            Ok(()) => finishers.push(finish),
            Err(err) => {
                // The transaction cannot go on: everything in it, this job included, fails.
                tracing::error!(error = %err, "a write transaction failed; the batch was rolled back");
                let _ = db.batch("ROLLBACK");
                finishers.push(finish);
                commit = Err(err);
                break;
            }
        }
    }
    // Cached reads from before this commit must not be served once anyone learns of it.
    generation.bump();
    // Watchers learn of the new events before the writers' callers get their replies, so a
    // caller that reads the watch after its reply sees its own change.
    if let Ok(last) = events::last_event_id(db) {
        events_tx.send_if_modified(|v| {
            let changed = last > *v;
            if changed {
                *v = last;
            }
            changed
        });
    }
    for finish in finishers {
        finish(commit.clone());
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create_model(&self, ctx: &Ctx, req: CreateModel) -> StoreResult<Model> {
        let c = ctx.clone();
        self.write(ctx, move |db| ops::create_model(db, &c, &req)).await
    }

    async fn get_model(&self, name: &ModelName) -> StoreResult<Model> {
        let name = name.clone();
        self.read(move |db| {
            let id = query::model_id(db, &name)?;
            query::load_model(db, id)
        })
        .await
    }

    async fn list_models(&self, filter: ModelFilter) -> StoreResult<ModelList> {
        self.read(move |db| query::list_models(db, &filter)).await
    }

    async fn update_model(
        &self,
        ctx: &Ctx,
        name: &ModelName,
        req: UpdateModel,
        pre: Precondition,
    ) -> StoreResult<Model> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |db| ops::update_model(db, &c, &name, &req, pre))
            .await
    }

    async fn delete_model(&self, ctx: &Ctx, name: &ModelName, pre: Precondition) -> StoreResult<()> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |db| ops::delete_model(db, &c, &name, pre))
            .await
    }

    async fn create_version(&self, ctx: &Ctx, name: &ModelName, req: CreateVersion) -> StoreResult<Version> {
        let (c, name) = (ctx.clone(), name.clone());
        self.write(ctx, move |db| ops::create_version(db, &c, &name, &req))
            .await
    }

    async fn get_version(&self, name: &ModelName, number: u64) -> StoreResult<Version> {
        let key = (name.clone(), number);
        let generation = self.generation.current();
        if !self.caching() {
            let (name, number) = key;
            return self
                .read(move |db| {
                    let id = query::model_id(db, &name)?;
                    query::load_version(db, id, &name, number)
                })
                .await;
        }
        if let Some(hit) = self.versions.get(&key, generation) {
            return Ok(hit);
        }
        let name = name.clone();
        let found = self
            .read(move |db| {
                let id = query::model_id(db, &name)?;
                query::load_version(db, id, &name, number)
            })
            .await?;
        self.versions.put(key, generation, found.clone());
        Ok(found)
    }

    async fn list_versions(&self, name: &ModelName, filter: VersionFilter) -> StoreResult<VersionList> {
        let name = name.clone();
        self.read(move |db| query::list_versions(db, &name, &filter))
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
        self.write(ctx, move |db| {
            ops::update_version(db, &c, &name, number, &req, pre)
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
        self.write(ctx, move |db| ops::put_file(db, &c, &name, number, file))
            .await
    }

    async fn delete_file(&self, ctx: &Ctx, name: &ModelName, number: u64, path: &str) -> StoreResult<()> {
        let (c, name, path) = (ctx.clone(), name.clone(), path.to_owned());
        self.write(ctx, move |db| ops::delete_file(db, &c, &name, number, &path))
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
        self.write(ctx, move |db| ops::seal_version(db, &c, &name, number, expected))
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
        self.write(ctx, move |db| {
            ops::set_stage(db, &c, &name, number, stage, comment.as_deref(), pre)
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
        self.write(ctx, move |db| ops::rollback(db, &c, &name, comment.as_deref()))
            .await
    }

    async fn version_in_stage(&self, name: &ModelName, stage: Stage) -> StoreResult<Version> {
        let name = name.clone();
        self.read(move |db| {
            let id = query::model_id(db, &name)?;
            let n = query::newest_in_stage(db, id, stage)?
                .ok_or_else(|| StoreError::not_found(format!("a version of {name} in {stage}")))?;
            query::load_version(db, id, &name, n)
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
        self.write(ctx, move |db| ops::set_alias(db, &c, &name, &alias, version, pre))
            .await
    }

    async fn get_alias(&self, name: &ModelName, alias: &str) -> StoreResult<Alias> {
        let key = (name.clone(), alias.to_owned());
        let generation = self.generation.current();
        if !self.caching() {
            let (name, alias) = key;
            return self
                .read(move |db| {
                    let id = query::model_id(db, &name)?;
                    query::load_alias(db, id, &name, &alias)
                })
                .await;
        }
        if let Some(hit) = self.aliases.get(&key, generation) {
            return Ok(hit);
        }
        let (name, alias) = key.clone();
        let found = self
            .read(move |db| {
                let id = query::model_id(db, &name)?;
                query::load_alias(db, id, &name, &alias)
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
        self.write(ctx, move |db| ops::delete_alias(db, &c, &name, &alias, pre))
            .await
    }

    async fn blob_size(&self, digest: Sha256Digest) -> StoreResult<Option<u64>> {
        self.read(move |db| query::blob_size(db, digest)).await
    }

    async fn referenced_blobs(&self) -> StoreResult<Vec<(Sha256Digest, u64)>> {
        self.read(query::referenced_blobs).await
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<AuditList> {
        self.read(move |db| query::list_audit(db, &filter)).await
    }

    async fn verify_audit(&self) -> StoreResult<Result<u64, u64>> {
        self.read(query::verify_audit).await
    }

    async fn create_webhook(&self, ctx: &Ctx, req: CreateWebhook) -> StoreResult<Webhook> {
        let c = ctx.clone();
        self.write(ctx, move |db| events::create_webhook(db, &c, &req))
            .await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.read(events::list_webhooks).await
    }

    async fn get_webhook(&self, id: u64) -> StoreResult<Webhook> {
        self.read(move |db| events::get_webhook(db, id)).await
    }

    async fn delete_webhook(&self, ctx: &Ctx, id: u64) -> StoreResult<()> {
        let c = ctx.clone();
        self.write(ctx, move |db| events::delete_webhook(db, &c, id))
            .await
    }

    async fn ping_webhook(&self, ctx: &Ctx, id: u64) -> StoreResult<Delivery> {
        let c = ctx.clone();
        self.write(ctx, move |db| events::ping_webhook(db, &c, id)).await
    }

    async fn list_deliveries(
        &self,
        webhook: u64,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> StoreResult<DeliveryList> {
        self.read(move |db| events::list_deliveries(db, webhook, status, limit))
            .await
    }

    async fn get_delivery(&self, webhook: u64, id: u64) -> StoreResult<Delivery> {
        self.read(move |db| events::get_delivery(db, webhook, id)).await
    }

    async fn redeliver(&self, ctx: &Ctx, webhook: u64, id: u64) -> StoreResult<Delivery> {
        let c = ctx.clone();
        self.write(ctx, move |db| events::redeliver(db, &c, webhook, id))
            .await
    }

    async fn claim_deliveries(&self, claim: Claim) -> StoreResult<Vec<ClaimedDelivery>> {
        // Dispatchers poll; most polls find nothing. Looking first without the writer (and, on
        // PostgreSQL, without the lock every node's writes wait for) keeps idle polls cheap.
        let now = claim.now_ms;
        if !self.read(move |db| events::any_due(db, now)).await? {
            return Ok(Vec::new());
        }
        self.write_internal(move |db| events::claim(db, &claim)).await
    }

    async fn finish_delivery(
        &self,
        node: &str,
        id: u64,
        attempt: DeliveryAttempt,
        outcome: AttemptOutcome,
    ) -> StoreResult<bool> {
        let node = node.to_owned();
        self.write_internal(move |db| events::finish(db, &node, id, &attempt, outcome))
            .await
    }

    async fn list_events(&self, after: u64, limit: u32, types: Vec<String>) -> StoreResult<EventList> {
        self.read(move |db| events::list_events(db, after, limit, &types))
            .await
    }

    fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.clone()
    }

    async fn add_deployment(&self, ctx: &Ctx, req: CreateDeployment) -> StoreResult<Deployment> {
        let c = ctx.clone();
        self.write(ctx, move |db| routing::add_deployment(db, &c, &req))
            .await
    }

    async fn remove_deployment(&self, ctx: &Ctx, id: u64) -> StoreResult<()> {
        let c = ctx.clone();
        self.write(ctx, move |db| routing::remove_deployment(db, &c, id))
            .await
    }

    async fn list_deployments(
        &self,
        model: Option<ModelName>,
        region: Option<String>,
    ) -> StoreResult<Vec<Deployment>> {
        self.read(move |db| routing::list_deployments(db, model.as_ref(), region.as_deref()))
            .await
    }

    async fn set_route(&self, ctx: &Ctx, name: &str, spec: SetRoute) -> StoreResult<RegistryRoute> {
        let (c, name) = (ctx.clone(), name.to_owned());
        self.write(ctx, move |db| routing::set_route(db, &c, &name, &spec))
            .await
    }

    async fn delete_route(&self, ctx: &Ctx, name: &str) -> StoreResult<()> {
        let (c, name) = (ctx.clone(), name.to_owned());
        self.write(ctx, move |db| routing::delete_route(db, &c, &name))
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
        self.read(|db| db.query("SELECT 1", &[]).map(drop)).await
    }

    async fn close(&self) {
        if let Some(poller) = self.poller.lock().ok().and_then(|mut p| p.take()) {
            poller.abort();
        }
        if let Ok(mut w) = self.writer.write() {
            w.take();
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let idle = self
            .readers
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || drop(idle)).await;
    }
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        // Closing a PostgreSQL connection blocks: never on the runtime's threads.
        let idle = self
            .readers
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("ballast-sql-close".into())
                .spawn(move || drop(idle));
        }
    }
}
