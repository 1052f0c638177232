//! `ballast-router`: Ballast's data plane. It takes inference traffic (OpenAI-compatible
//! `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, chosen by the body's `model`, and
//! generic prefix routes) and sends each request to a healthy copy of the model, whatever breaks.
//!
//! How it fits: a [`RoutingSnapshot`](ballast_api::routing::RoutingSnapshot) (from a static
//! `routes.toml` or the registry's [`registry`] source) is validated, persisted as last-known-good and
//! swapped in atomically ([`state`]); it is compiled into a [`table`]; each request gets an
//! attempt plan ([`select`]: local region, other regions, fallback routes; weighted splits and
//! sticky sessions) and walks it under one deadline ([`proxy`]), guarded by per-target
//! [`health`] (passive ejection on consecutive failures or failure rate, half-open probes,
//! active checks — [`checker`]) and the operator's drain flag ([`table::DrainFlag`]), a retry
//! [`budget`] and region [`failover`] with hold-down. `https` targets speak TLS ([`tls`]).
//! Everything is counted in [`metrics`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ballast_router::RouterConfig::new("eu-west");
//! config.routes_file = Some("routes.toml".into());
//! let router = ballast_router::Router::bind(config).await?;
//! println!("listening on {}", router.local_addr()?);
//! router.serve(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod body;
pub mod budget;
pub mod checker;
pub mod config;
pub mod error;
pub mod failover;
pub mod h1;
pub mod health;
pub mod lkg;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod select;
pub mod serve;
pub mod state;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ballast_api::routing::RoutingSnapshot;

pub use crate::config::{load_routes_file, AdminToken, ConfigError, RegistryToken, RouterConfig};
pub use crate::error::{ErrorKind, ErrorSource, RouterError};
pub use crate::state::{OfferOutcome, OfferRejected};

use crate::state::Shared;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Neither the routes file nor the last-known-good snapshot gave a usable snapshot.
    #[error("no usable routing snapshot: {0}")]
    NoSnapshot(String),
    /// The configuration names both a routes file and a registry.
    #[error("give either a routes file (--config) or a registry (--registry), not both")]
    BothSources,
    /// The registry URL is unusable.
    #[error(transparent)]
    Registry(#[from] registry::FetchError),
    /// TLS to upstreams could not be set up (e.g. an unusable `upstream_ca` file).
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The router has no routes file to reload.
    #[error("the router has no routes file")]
    NoFile,
    /// The file could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The snapshot was refused.
    #[error(transparent)]
    Rejected(#[from] OfferRejected),
}

/// A handle to a running router: reload, offer snapshots, read what is active.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    shared: Arc<Shared>,
}

impl RouterHandle {
    /// Re-reads the routes file (what SIGHUP and the file watcher do).
    ///
    /// # Errors
    /// No file, an unusable file, or a refused snapshot; the active one stays.
    pub fn reload(&self) -> Result<OfferOutcome, ReloadError> {
        let path = self
            .shared
            .config
            .routes_file
            .as_ref()
            .ok_or(ReloadError::NoFile)?;
        reload_file(&self.shared, path)
    }

    /// Offers a snapshot from another source (e.g. the registry).
    ///
    /// # Errors
    /// Why it was refused; the active one stays.
    pub fn offer(&self, snapshot: RoutingSnapshot) -> Result<OfferOutcome, OfferRejected> {
        self.shared.offer(snapshot, "api")
    }

    /// The active snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        Arc::clone(&self.shared.active().snapshot)
    }

    /// The Prometheus text of the router's metrics.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render(state::unix_ms(SystemTime::now()))
    }
}

fn reload_file(shared: &Arc<Shared>, path: &Path) -> Result<OfferOutcome, ReloadError> {
    match load_routes_file(path) {
        Ok(s) => Ok(shared.offer(s, "file")?),
        Err(e) => {
            shared.metrics.snapshot_loads.with(&["file", "invalid"]).inc();
            tracing::error!(error = %e, "routes file not loaded; the active snapshot stays");
            Err(e.into())
        }
    }
}

/// A bound router, ready to serve.
#[derive(Debug)]
pub struct Router {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    _background: Background,
}

/// Picks the first snapshot: the newer of the routes file and the last-known-good one.
fn initial_snapshot(config: &RouterConfig) -> Result<(RoutingSnapshot, &'static str), StartError> {
    let mut problems = Vec::new();
    let lkg = match &config.state_dir {
        Some(dir) => match lkg::load(dir) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "last-known-good snapshot unusable");
                problems.push(e.to_string());
                None
            }
        },
        None => None,
    };
    let file = match &config.routes_file {
        Some(path) => match load_routes_file(path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "routes file unusable; trying the last-known-good snapshot");
                problems.push(e.to_string());
                None
            }
        },
        None => None,
    };
    match (file, lkg) {
        (Some(f), Some(l))
            if l.generation > f.generation || (l.generation == f.generation && l.digest != f.digest) =>
        {
            tracing::warn!(
                file_generation = f.generation,
                lkg_generation = l.generation,
                "the routes file is not newer than the last-known-good snapshot; serving the last-known-good one"
            );
            Ok((l, "last_known_good"))
        }
        (Some(f), _) => Ok((f, "file")),
        (None, Some(l)) => {
            tracing::warn!(generation = l.generation, "serving the last-known-good snapshot");
            Ok((l, "last_known_good"))
        }
        (None, None) => {
            if problems.is_empty() {
                problems.push(
                    "give a routes file (--config) or a state directory holding a last-known-good snapshot"
                        .to_owned(),
                );
            }
            Err(StartError::NoSnapshot(problems.join("; ")))
        }
    }
}

/// The first snapshot of a registry-fed router: the last-known-good one when this registry
/// wrote it (the poller fetches anything newer at once, and reports a registry that is behind
/// it); one fetched from the registry now when there is none, or when it was written by another
/// source (a `--config` run sharing the state directory, another registry) and the registry
/// answers — else that one, with a warning.
async fn initial_from_registry(
    config: &RouterConfig,
    client: &registry::RegistryClient,
) -> Result<(RoutingSnapshot, &'static str), StartError> {
    let mut problems = Vec::new();
    let origin = state::origin_of(config);
    if let Some(dir) = &config.state_dir {
        match lkg::load_with_origin(dir) {
            Ok(Some((s, from))) if from.as_deref() == Some(origin.as_str()) => {
                tracing::info!(
                    generation = s.generation,
                    "starting from the last-known-good snapshot; watching the registry"
                );
                return Ok((s, "last_known_good"));
            }
            Ok(Some((s, from))) => {
                let from = from.unwrap_or_else(|| "an unrecorded source".to_owned());
                let fetched = match client.poll(None, std::time::Duration::ZERO).await {
                    Ok(registry::Poll::Snapshot(r)) => r.validate().map(|()| *r).map_err(|e| e.to_string()),
                    Ok(registry::Poll::NotModified) => {
                        Err("the registry answered 304 to a first request".to_owned())
                    }
                    Err(e) => Err(e.to_string()),
                };
                return Ok(match fetched {
                    Ok(r) => {
                        tracing::warn!(
                            lkg_origin = %from,
                            lkg_generation = s.generation,
                            registry_generation = r.generation,
                            "ignoring the last-known-good snapshot written by another source; serving the registry's"
                        );
                        (r, "registry")
                    }
                    Err(e) => {
                        tracing::warn!(
                            lkg_origin = %from,
                            generation = s.generation,
                            error = %e,
                            "the registry gave no snapshot; serving the last-known-good one although another source wrote it"
                        );
                        (s, "last_known_good")
                    }
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "last-known-good snapshot unusable");
                problems.push(e.to_string());
            }
        }
    }
    match client.poll(None, std::time::Duration::ZERO).await {
        Ok(registry::Poll::Snapshot(s)) => match s.validate() {
            Ok(()) => Ok((*s, "registry")),
            Err(e) => {
                problems.push(format!("the registry's snapshot is invalid: {e}"));
                Err(StartError::NoSnapshot(problems.join("; ")))
            }
        },
        Ok(registry::Poll::NotModified) => {
            problems.push("the registry answered 304 to a first request".to_owned());
            Err(StartError::NoSnapshot(problems.join("; ")))
        }
        Err(e) => {
            problems.push(format!(
                "{e}, and there is no last-known-good snapshot to serve from"
            ));
            Err(StartError::NoSnapshot(problems.join("; ")))
        }
    }
}

type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Router {
    /// Loads the first snapshot (routes file or last-known-good), binds the listener and starts
    /// the file watcher and health checkers.
    ///
    /// # Errors
    /// No usable snapshot, or the address cannot be bound.
    pub async fn bind(config: RouterConfig) -> Result<Self, StartError> {
        let first_stamp = config.routes_file.as_ref().and_then(stamp);
        let registry = match &config.registry {
            Some(_) if config.routes_file.is_some() => return Err(StartError::BothSources),
            Some(url) => {
                let client = registry::RegistryClient::new(url)?;
                Some(match &config.registry_token {
                    Some(token) => client.with_token(token)?,
                    None => client,
                })
            }
            None => None,
        };
        let tls = tls::client_config(config.upstream_ca.as_deref())?;
        let (snapshot, source) = match &registry {
            Some(client) => initial_from_registry(&config, client).await?,
            None => initial_snapshot(&config)?,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        tracing::info!(generation = snapshot.generation, source, region = %config.region, "routing snapshot loaded");
        let shared = Shared::new(config, snapshot, source, tls);
        let active = shared.active();
        if let Some(dir) = shared.config.state_dir.clone() {
            // Written unless the file holds this very snapshot from this source already.
            let (me, first) = (Arc::clone(&shared), Arc::clone(&active.snapshot));
            let _ = tokio::task::spawn_blocking(move || {
                let current = lkg::load_with_origin(&dir).ok().flatten();
                if current.as_ref().map(|(c, o)| (&c.digest, o.as_deref()))
                    != Some((&first.digest, Some(me.origin.as_str())))
                {
                    me.write_lkg(&first);
                }
            })
            .await;
        }
        shared.restart_checkers(&active);
        let watcher = shared.config.routes_file.clone().map(|path| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut last = first_stamp;
                loop {
                    tokio::time::sleep(shared.config.watch_interval).await;
                    let now = stamp(&path);
                    if now != last {
                        last = now;
                        if now.is_some() {
                            let _ = reload_file(&shared, &path);
                        }
                    }
                }
            })
        });
        let poller = registry.map(|client| tokio::spawn(registry::watch(Arc::clone(&shared), client)));
        Ok(Self {
            listener,
            _background: Background {
                watcher,
                poller,
                shared: Arc::clone(&shared),
            },
            shared,
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket cannot tell.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle for reloads and inspection.
    #[must_use]
    pub fn handle(&self) -> RouterHandle {
        RouterHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
    /// (up to the configured grace period).
    ///
    /// # Errors
    /// The server failed.
    pub async fn serve<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let grace = self.shared.config.shutdown_grace;
        let workers = self.shared.config.workers;
        let shared = Arc::clone(&self.shared);
        let result = if workers > 0 {
            serve::serve_on_workers(self.listener, shared, workers, grace, shutdown).await
        } else {
            serve::serve_here(self.listener, shared, grace, shutdown).await
        };
        drop(self._background);
        result
    }
}

/// Stops the background tasks when the router goes away, served or not.
#[derive(Debug)]
struct Background {
    watcher: Option<tokio::task::JoinHandle<()>>,
    poller: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
        if let Some(p) = &self.poller {
            p.abort();
        }
        self.shared.stop_checkers();
    }
}
