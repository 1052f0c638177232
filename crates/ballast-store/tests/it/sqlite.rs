//! The conformance suite on the embedded SQLite store, one fresh database file per test.

use std::sync::Arc;

use ballast_store::{SqlStore, Store};

use crate::conformance::Fixture;

async fn fresh() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqlStore::open(&dir.path().join("ballast.db")).expect("open a fresh SQLite store");
    let store: Arc<dyn Store> = Arc::new(store);
    Some(Fixture::new(store, Box::new(dir)))
}

conformance_suite!(fresh);
