//! The Ballast registry server (control plane): the `/v1` HTTP API over a metadata [`Store`]
//! and a [`BlobStore`], with metrics, health endpoints and the OpenAPI document.
//!
//! [`Server::bind`] opens the storage and binds the listener (so tests can use port 0 and read
//! the bound address); [`Server::serve`] runs until the shutdown future resolves, then drains
//! in-flight requests and closes the store cleanly.

pub mod alloc;
pub mod api;
pub mod auth;
pub mod authz;
mod config;
mod error;
pub mod gc;
pub mod governance;
mod metrics;
mod openapi;
mod regions;
pub mod snapshot;
mod state;
pub mod webhooks;

pub use config::{describe_database_url, Config, Secret};
pub use error::ApiError;
pub use state::AppState;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballast_store::{SqlStore, Store};

/// A bound, not yet serving, registry server.
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
    grace: Duration,
}

impl Server {
    /// Opens the data directory and binds the listen address.
    ///
    /// # Errors
    /// When the data directory cannot be created or opened, or the address cannot be bound.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
        let store = open_store(&config).await?;
        let (blobs, regions) = regions::open(&config).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let mut state = AppState::new(config, Arc::new(store) as Arc<dyn Store>, blobs);
        state.regions = regions;
        announce_auth(&state).await?;
        Ok(Self {
            listener,
            state,
            grace,
        })
    }

    /// The address actually bound (useful with port 0).
    ///
    /// # Errors
    /// When the socket has no local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests finish
    /// (up to the grace period) and closes the store.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = api::router(self.state.clone());
        let stop_rx = self.state.shutdown.subscribe();
        let stop_tx = self.state.shutdown.clone();
        let dispatcher = {
            let (store, config) = (self.state.store.clone(), self.state.config.clone());
            tokio::spawn(async move { webhooks::run(store, &config, stop_rx).await })
        };
        let collector = tokio::spawn(gc::run_scheduled(
            self.state.clone(),
            self.state.shutdown.subscribe(),
        ));
        let replicator = regions::spawn(&self.state);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let grace = self.grace;
        let served = axum::serve(self.listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            stop_tx.send_replace(true);
            let _ = drained_tx.send(());
        });
        let drain_timeout = async move {
            let _ = drained_rx.await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = served => r?,
            () = drain_timeout => tracing::warn!("in-flight requests did not finish within the grace period"),
        }
        self.state.shutdown.send_replace(true);
        let _ = dispatcher.await;
        // A collection is safe to stop anywhere: each model's removals commit together and each
        // blob removal stands alone.
        collector.abort();
        let _ = collector.await;
        // Replication resumes from its durable queue on the next start.
        replicator.abort();
        let _ = replicator.await;
        self.state.store.close().await;
        tracing::info!("store closed");
        Ok(())
    }
}

/// Opens the metadata store named by the configuration (connecting and migrating block, so off
/// the async threads).
async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    let (url, opts, described) = (
        config.database(),
        config.pg_options(),
        config.database_description(),
    );
    check_database_scheme(&url)?;
    tracing::info!(database = %described, "opening the metadata store");
    tokio::task::spawn_blocking(move || SqlStore::connect(&url, &opts))
        .await
        .map_err(|e| anyhow::anyhow!("opening the metadata store failed: {e}"))?
        .map_err(|e| anyhow::anyhow!("cannot open the metadata store ({described}): {}", e.message))
}

/// Applies pending schema migrations to the configured database without serving (`ballast
/// migrate`); returns the schema version before and after.
///
/// # Errors
/// When the database cannot be reached or a migration fails (it is rolled back).
pub async fn migrate(config: &Config) -> anyhow::Result<(usize, usize)> {
    if config.database_url.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
    }
    let (url, opts, described) = (
        config.database(),
        config.pg_options(),
        config.database_description(),
    );
    check_database_scheme(&url)?;
    tokio::task::spawn_blocking(move || SqlStore::migrate(&url, &opts))
        .await
        .map_err(|e| anyhow::anyhow!("the migration failed: {e}"))?
        .map_err(|e| anyhow::anyhow!("cannot migrate {described}: {}", e.message))
}

/// Refuses database URLs of engines Ballast does not run on, without echoing the URL (it may
/// hold a password).
fn check_database_scheme(url: &str) -> anyhow::Result<()> {
    match url.split_once("://") {
        Some(("postgres" | "postgresql" | "sqlite", _)) | None => Ok(()),
        Some((scheme, _)) => Err(anyhow::anyhow!(
            "unsupported database URL scheme {scheme}://: use postgres://USER:PASSWORD@HOST:PORT/DB or sqlite:///path/to/ballast.db"
        )),
    }
}

/// Creates the admin token on first start and says where it is, or warns loudly that
/// authentication is off.
async fn announce_auth(state: &AppState) -> anyhow::Result<()> {
    if !state.auth.enforced() {
        tracing::warn!(
            listen = %state.config.listen,
            "AUTHENTICATION IS OFF (auth = off): anyone who can reach this address can read, change and delete every model. Use this only for local experiments."
        );
        return Ok(());
    }
    if let Some(path) = state.auth.bootstrap().await? {
        tracing::warn!(
            path = %path.display(),
            "created the first admin token; it is in {} (mode 0600). Use it with: export BALLAST_TOKEN=$(cat {})",
            path.display(),
            path.display()
        );
    }
    Ok(())
}
