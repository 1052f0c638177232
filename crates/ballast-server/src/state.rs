//! Shared state of the server's handlers.

use std::sync::Arc;

use ballast_blob::BlobStore;
use ballast_store::Store;

use crate::config::Config;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub config: Arc<Config>,
    /// Metadata.
    pub store: Arc<dyn Store>,
    /// Artifacts.
    pub blobs: Arc<dyn BlobStore>,
    /// The artifact regions behind `blobs` (one region, `local`, without `blob_regions`): status,
    /// fsck, replication.
    pub regions: Arc<ballast_blob::RegionalBlobStore>,
    /// Prometheus exposition.
    pub metrics: crate::metrics::Metrics,
    /// Turns true when the server begins to shut down (long-lived streams end then).
    pub shutdown: Arc<tokio::sync::watch::Sender<bool>>,
    /// The last compiled routing snapshot (reused while the generation stays).
    pub routing_cache: Arc<std::sync::Mutex<Option<Arc<ballast_api::routing::RoutingSnapshot>>>>,
    /// Checks bearer tokens.
    pub auth: Arc<crate::auth::Authenticator>,
    /// Garbage collection: changes in flight, the running collection.
    pub gc: Arc<crate::gc::Gc>,
    /// Decides on moves into gated stages.
    pub gate: Arc<dyn crate::governance::TransitionGate>,
}

impl AppState {
    /// Builds the state.
    pub fn new(config: Config, store: Arc<dyn Store>, blobs: Arc<dyn BlobStore>) -> Self {
        let auth = Arc::new(crate::auth::Authenticator::new(
            config.auth,
            Arc::clone(&store),
            &config.data_dir,
        ));
        Self {
            auth,
            config: Arc::new(config),
            store,
            regions: Arc::new(ballast_blob::RegionalBlobStore::single("", Arc::clone(&blobs))),
            blobs,
            metrics: crate::metrics::Metrics::install(),
            gate: Arc::new(crate::governance::OpenGate),
            routing_cache: Arc::default(),
            gc: crate::gc::Gc::new(),
            shutdown: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}
