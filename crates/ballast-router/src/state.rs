//! The router's shared state: the active snapshot (swapped atomically; a request keeps the one
//! it started with), the runtime state that outlives snapshots, the HTTP clients, the metrics,
//! and the rules that decide whether an offered snapshot replaces the active one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ballast_api::routing::{RoutingSnapshot, SnapshotInvalid};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::RouterConfig;
use crate::metrics::Metrics;
use crate::table::{RouteRt, Runtime, Table, TargetRt};

/// The HTTP client used for upstream calls.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, http_body_util::Empty<bytes::Bytes>>;

/// The snapshot being served, compiled.
#[derive(Debug)]
pub struct Active {
    /// The snapshot.
    pub snapshot: Arc<RoutingSnapshot>,
    /// Its compiled table.
    pub table: Table,
    /// Where it came from (`file`, `last_known_good`, `api`).
    pub source: &'static str,
    /// When it became active (ms since the Unix epoch).
    pub loaded_at_unix_ms: u64,
}

/// Pooled HTTP(S) clients, one per connect timeout, sharing one TLS configuration.
#[derive(Debug)]
pub struct Clients {
    by_connect_ms: Mutex<HashMap<u64, HttpClient>>,
    tls: rustls::ClientConfig,
}

impl Clients {
    /// Clients that speak TLS with this configuration to `https` targets.
    #[must_use]
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self {
            by_connect_ms: Mutex::new(HashMap::new()),
            tls,
        }
    }

    /// The client whose connector gives up connecting after `connect_ms`.
    pub fn get(&self, connect_ms: u64) -> HttpClient {
        let mut map = match self.by_connect_ms.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        map.entry(connect_ms)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(Duration::from_millis(connect_ms)));
                connector.set_nodelay(true);
                connector.set_keepalive(Some(Duration::from_secs(60)));
                connector.enforce_http(false);
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(self.tls.clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(256)
                    .build(connector)
            })
            .clone()
    }
}

/// What happened to an offered snapshot that was not refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferOutcome {
    /// It is now active.
    Applied {
        /// Its generation.
        generation: u64,
    },
    /// It is the active snapshot already.
    Unchanged,
}

/// Why an offered snapshot was refused (the active one stays).
#[derive(Debug, thiserror::Error)]
pub enum OfferRejected {
    /// It breaks a routing rule.
    #[error(transparent)]
    Invalid(#[from] SnapshotInvalid),
    /// Its generation is older than the active one.
    #[error(
        "generation {offered} is older than the active generation {active}; keeping the active snapshot"
    )]
    Older {
        /// Offered generation.
        offered: u64,
        /// Active generation.
        active: u64,
    },
    /// Same generation, different content: one of them was changed without a new generation.
    #[error("generation {generation} is already active with another digest; a changed snapshot needs a higher generation")]
    SameGenerationDifferentContent {
        /// The generation.
        generation: u64,
    },
}

/// Everything the handlers and background tasks share.
#[derive(Debug)]
pub struct Shared {
    /// Process settings.
    pub config: RouterConfig,
    active: RwLock<Arc<Active>>,
    offer_lock: Mutex<()>,
    /// State that outlives snapshots.
    pub runtime: Runtime,
    /// Metrics.
    pub metrics: Metrics,
    /// Upstream clients (health probes).
    pub clients: Clients,
    /// Kept-alive upstream connections (proxied requests).
    pub pool: Arc<crate::upstream::Pool>,
    checkers: Mutex<Vec<tokio::task::AbortHandle>>,
    /// When the process started serving.
    pub started: Instant,
    /// The registry source's state (when the router watches a registry).
    pub registry: Mutex<Option<crate::registry::RegistryStatus>>,
    /// Set when shutdown starts (`/readyz` answers 503 from then on).
    shutting_down: std::sync::atomic::AtomicBool,
    /// The source this router takes snapshots from, as recorded in the last-known-good file.
    pub origin: String,
    /// Generation of the last snapshot written as last-known-good (writes happen on blocking
    /// threads and may finish out of order: an older one never overwrites a newer one).
    lkg_written: Mutex<Option<u64>>,
}

/// The source a router with `config` takes snapshots from: `registry <url>`, `file <path>` or
/// `api` (snapshots offered through [`crate::RouterHandle::offer`] only).
#[must_use]
pub fn origin_of(config: &RouterConfig) -> String {
    match (&config.registry, &config.routes_file) {
        (Some(url), _) => format!("registry {}", url.trim_end_matches('/')),
        (None, Some(path)) => format!("file {}", path.display()),
        (None, None) => "api".to_owned(),
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    /// Builds the state around a first, already validated snapshot.
    pub(crate) fn new(
        config: RouterConfig,
        snapshot: RoutingSnapshot,
        source: &'static str,
        tls: rustls::ClientConfig,
    ) -> Arc<Self> {
        let runtime = Runtime::with_failure_rate(config.failure_rate.clone());
        let table = Table::compile(&snapshot, &config.region, &runtime);
        let metrics = Metrics::new();
        let loaded = unix_ms(SystemTime::now());
        metrics.snapshot_active(snapshot.generation, loaded);
        metrics.snapshot_loads.with(&[source, "applied"]).inc();
        let active = Arc::new(Active {
            snapshot: Arc::new(snapshot),
            table,
            source,
            loaded_at_unix_ms: loaded,
        });
        Arc::new(Self {
            active: RwLock::new(active),
            offer_lock: Mutex::new(()),
            runtime,
            metrics,
            pool: Arc::new(crate::upstream::Pool::new(tls.clone())),
            clients: Clients::new(tls),
            checkers: Mutex::new(Vec::new()),
            started: Instant::now(),
            registry: Mutex::new(None),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            origin: origin_of(&config),
            lkg_written: Mutex::new(None),
            config,
        })
    }

    /// Writes `snapshot` as last-known-good (unless a newer one was written meanwhile); a
    /// failure is logged and counted in `ballast_router_lkg_write_failures_total`. Blocks on
    /// the disk: call it from a blocking thread.
    pub(crate) fn write_lkg(&self, snapshot: &RoutingSnapshot) {
        let Some(dir) = &self.config.state_dir else {
            return;
        };
        let mut written = match self.lkg_written.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if written.is_some_and(|g| g >= snapshot.generation) {
            return;
        }
        match crate::lkg::save(dir, snapshot, &self.origin) {
            Ok(()) => *written = Some(snapshot.generation),
            Err(e) => {
                self.metrics.lkg_write_failures.inc();
                tracing::error!(error = %e, dir = %dir.display(), generation = snapshot.generation, "cannot persist the last-known-good snapshot");
            }
        }
    }

    /// Persists `snapshot` as last-known-good on a blocking thread (at once, on this thread,
    /// outside a Tokio runtime).
    fn persist(self: &Arc<Self>, snapshot: Arc<RoutingSnapshot>) {
        if self.config.state_dir.is_none() {
            return;
        }
        let me = Arc::clone(self);
        let job = move || me.write_lkg(&snapshot);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(job)),
            Err(_) => job(),
        }
    }

    /// Marks the router as shutting down (draining).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn with_registry(&self, f: impl FnOnce(&mut crate::registry::RegistryStatus)) {
        let mut g = match self.registry.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let url = self.config.registry.clone().unwrap_or_default();
        f(g.get_or_insert_with(|| crate::registry::RegistryStatus {
            url,
            ..Default::default()
        }));
    }

    /// Records a successful registry poll (the last error is cleared, unless the registry is
    /// behind the active snapshot).
    pub(crate) fn registry_ok(&self, now_ms: u64) {
        self.with_registry(|s| {
            s.last_ok_unix_ms = Some(now_ms);
            s.last_error.clone_from(&s.behind);
        });
    }

    /// Records what the registry's current generation is, compared with the active snapshot's:
    /// lower is reported (warning, `/routes` `registry.last_error` and `.behind`, and the
    /// `ballast_router_registry_behind` gauge) until the registry catches up.
    pub(crate) fn registry_generation(&self, registry: u64) {
        let ours = self.active().snapshot.generation;
        let behind = (registry < ours).then(|| {
            format!(
                "the registry's current generation {registry} is lower than the active generation {ours} \
                 (registry restored from an older state, or the snapshot came from another source); \
                 keeping the active snapshot until the registry passes it"
            )
        });
        if let Some(msg) = &behind {
            tracing::warn!(registry_generation = registry, active_generation = ours, "{msg}");
        }
        self.metrics
            .registry_behind
            .store(u64::from(behind.is_some()), std::sync::atomic::Ordering::Relaxed);
        self.with_registry(|s| {
            s.registry_generation = Some(registry);
            s.last_error.clone_from(&behind);
            s.behind = behind;
        });
    }

    /// Records a failed registry poll.
    pub(crate) fn registry_failed(&self, error: String) {
        self.with_registry(|s| s.last_error = Some(error));
    }

    /// The registry source's state, if the router watches a registry.
    pub fn registry_status(&self) -> Option<crate::registry::RegistryStatus> {
        self.config.registry.as_ref()?;
        let mut out = None;
        self.with_registry(|s| out = Some(s.clone()));
        out
    }

    /// The active snapshot (a request holds on to it until it ends).
    pub fn active(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Offers a snapshot: it replaces the active one only when it is valid and newer. The new
    /// one is swapped in and persisted as last-known-good on a blocking thread (so an async
    /// worker never waits for the disk; a crash in between leaves the previous, still valid,
    /// last-known-good).
    ///
    /// # Errors
    /// Why it was refused.
    pub fn offer(
        self: &Arc<Self>,
        snapshot: RoutingSnapshot,
        source: &'static str,
    ) -> Result<OfferOutcome, OfferRejected> {
        let _serial = match self.offer_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let outcome = self.decide(&snapshot);
        let result_label = match &outcome {
            Ok(Some(_)) => "applied",
            Ok(None) => "unchanged",
            Err(OfferRejected::Invalid(_)) => "invalid",
            Err(OfferRejected::Older { .. }) => "older",
            Err(OfferRejected::SameGenerationDifferentContent { .. }) => "conflict",
        };
        self.metrics.snapshot_loads.with(&[source, result_label]).inc();
        match outcome {
            Err(e) => {
                tracing::error!(source, error = %e, "routing snapshot refused; the active one stays");
                Err(e)
            }
            Ok(None) => Ok(OfferOutcome::Unchanged),
            Ok(Some(())) => {
                let generation = snapshot.generation;
                let table = Table::compile(&snapshot, &self.config.region, &self.runtime);
                let loaded = unix_ms(SystemTime::now());
                let active = Arc::new(Active {
                    snapshot: Arc::new(snapshot),
                    table,
                    source,
                    loaded_at_unix_ms: loaded,
                });
                self.persist(Arc::clone(&active.snapshot));
                match self.active.write() {
                    Ok(mut g) => *g = Arc::clone(&active),
                    Err(p) => *p.into_inner() = Arc::clone(&active),
                }
                self.metrics.snapshot_active(generation, loaded);
                let routes = active.snapshot.routes.iter().map(|r| r.name.as_str()).collect();
                let targets = active
                    .snapshot
                    .routes
                    .iter()
                    .flat_map(|r| r.targets.iter().map(|t| t.id.as_str()))
                    .collect();
                self.metrics.forget_absent(&routes, &targets);
                tracing::info!(source, generation, digest = %active.snapshot.digest, "routing snapshot applied");
                self.restart_checkers(&active);
                Ok(OfferOutcome::Applied { generation })
            }
        }
    }

    /// `Ok(Some)` to apply, `Ok(None)` when unchanged.
    fn decide(&self, snapshot: &RoutingSnapshot) -> Result<Option<()>, OfferRejected> {
        snapshot.validate()?;
        let current = self.active();
        let cur = &current.snapshot;
        if snapshot.generation < cur.generation {
            return Err(OfferRejected::Older {
                offered: snapshot.generation,
                active: cur.generation,
            });
        }
        if snapshot.generation == cur.generation {
            return if snapshot.digest == cur.digest {
                Ok(None)
            } else {
                Err(OfferRejected::SameGenerationDifferentContent {
                    generation: snapshot.generation,
                })
            };
        }
        Ok(Some(()))
    }

    /// Stops the health checkers of the previous snapshot and starts those of `active`.
    /// Outside a Tokio runtime (a snapshot offered from a plain thread) no checker can run: the
    /// old ones stop and the new ones start with the next snapshot offered inside the runtime.
    pub(crate) fn restart_checkers(self: &Arc<Self>, active: &Arc<Active>) {
        let mut handles = Vec::new();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                for route in &active.table.routes {
                    for target in &route.targets {
                        let task = rt.spawn(crate::checker::run(
                            Arc::clone(self),
                            Arc::clone(route),
                            Arc::clone(target),
                        ));
                        handles.push(task.abort_handle());
                    }
                }
            }
            Err(_) => tracing::warn!(
                "routing snapshot applied outside a Tokio runtime: health checks and half-open probes pause until a snapshot is applied inside it"
            ),
        }
        let old = match self.checkers.lock() {
            Ok(mut g) => std::mem::replace(&mut *g, handles),
            Err(p) => std::mem::replace(&mut *p.into_inner(), handles),
        };
        for h in old {
            h.abort();
        }
    }

    /// Stops every health checker.
    pub(crate) fn stop_checkers(&self) {
        let old = match self.checkers.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for h in old {
            h.abort();
        }
    }

    /// Every target with its route, for `/admin/targets`.
    pub(crate) fn targets(&self) -> Vec<(Arc<RouteRt>, Arc<TargetRt>)> {
        let active = self.active();
        active
            .table
            .routes
            .iter()
            .flat_map(|r| r.targets.iter().map(move |t| (Arc::clone(r), Arc::clone(t))))
            .collect()
    }
}
