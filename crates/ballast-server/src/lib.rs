//! The Ballast registry server (control plane): the `/v1` HTTP API over a metadata [`Store`]
//! and a [`BlobStore`], with metrics, health endpoints and the OpenAPI document.
//!
//! [`Server::bind`] opens the storage and binds the listener (so tests can use port 0 and read
//! the bound address); [`Server::serve`] runs until the shutdown future resolves, then drains
//! in-flight requests and closes the store cleanly.

pub mod api;
pub mod auth;
pub mod authz;
mod config;
mod error;
pub mod gc;
pub mod governance;
mod metrics;
mod openapi;
pub mod snapshot;
mod state;
pub mod webhooks;

pub use config::{Config, Secret};
pub use error::ApiError;
pub use state::AppState;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballast_store::{SqliteStore, Store};

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
        let db = config.data_dir.join("ballast.db");
        let store = SqliteStore::open(&db)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {}", db.display(), e.message))?;
        let location = config.blob_location()?;
        let blobs = ballast_blob::open_store(&location, config.s3_options())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the blob store at {location}: {e}"))?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let state = AppState::new(config, Arc::new(store) as Arc<dyn Store>, blobs);
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
        self.state.store.close().await;
        tracing::info!("store closed");
        Ok(())
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
