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
            config,
            active: RwLock::new(active),
            offer_lock: Mutex::new(()),
            runtime,
            metrics,
            pool: Arc::new(crate::upstream::Pool::new(tls.clone())),
            clients: Clients::new(tls),
            checkers: Mutex::new(Vec::new()),
            started: Instant::now(),
            registry: Mutex::new(None),
        })
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

    /// Records a successful registry poll.
    pub(crate) fn registry_ok(&self, now_ms: u64) {
        self.with_registry(|s| {
            s.last_ok_unix_ms = Some(now_ms);
            s.last_error = None;
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
    /// one is persisted as last-known-good before it is swapped in.
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
                if let Some(dir) = &self.config.state_dir {
                    if let Err(e) = crate::lkg::save(dir, &snapshot) {
                        tracing::error!(error = %e, dir = %dir.display(), "cannot persist the last-known-good snapshot");
                    }
                }
                let table = Table::compile(&snapshot, &self.config.region, &self.runtime);
                let loaded = unix_ms(SystemTime::now());
                let active = Arc::new(Active {
                    snapshot: Arc::new(snapshot),
                    table,
                    source,
                    loaded_at_unix_ms: loaded,
                });
                match self.active.write() {
                    Ok(mut g) => *g = Arc::clone(&active),
                    Err(p) => *p.into_inner() = Arc::clone(&active),
                }
                self.metrics.snapshot_active(generation, loaded);
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
    pub(crate) fn restart_checkers(self: &Arc<Self>, active: &Arc<Active>) {
        let mut handles = Vec::new();
        for route in &active.table.routes {
            for target in &route.targets {
                let task = tokio::spawn(crate::checker::run(
                    Arc::clone(self),
                    Arc::clone(route),
                    Arc::clone(target),
                ));
                handles.push(task.abort_handle());
            }
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
