//! The conformance suite on PostgreSQL, one fresh database per test.
//!
//! The server comes from `BALLAST_TEST_DATABASE_URL` (an administrative URL, e.g. the one
//! `.ci/postgres.sh` prints); each test creates its own database there. Without the variable
//! the tests pass vacuously on a developer machine and fail under `CI=true`.

use std::sync::Arc;

use ballast_store::{PgOptions, SqlStore, Store};

use crate::conformance::Fixture;

/// The administrative URL, or `None` when PostgreSQL tests cannot run here.
pub fn admin_url() -> Option<String> {
    match std::env::var("BALLAST_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "BALLAST_TEST_DATABASE_URL is not set but CI=true: start PostgreSQL with `eval \"$(.ci/postgres.sh)\"`"
            );
            None
        }
    }
}

/// Creates an empty database and returns its URL.
pub fn fresh_database(admin: &str) -> String {
    let name = format!("ballast_t_{:016x}", rand::random::<u64>());
    let mut client = postgres::Client::connect(admin, postgres::NoTls).expect("connect to the test server");
    client
        // An ICU language collation, as many production databases have: text must still sort
        // by bytes wherever order is visible (paging cursors, listings), exactly as on SQLite.
        .batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        ))
        .expect("create a test database");
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database name");
    format!("{base}/{name}")
}

/// Drops the test database when the fixture goes.
struct DropDatabase {
    admin: String,
    url: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (admin, url) = (self.admin.clone(), self.url.clone());
        // A blocking client must not run on the runtime's threads.
        let _ = std::thread::spawn(move || {
            let name = url.rsplit('/').next().unwrap_or_default().to_owned();
            if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        })
        .join();
    }
}

async fn fresh() -> Option<Fixture> {
    let admin = admin_url()?;
    let (store, guard) = tokio::task::spawn_blocking(move || {
        let url = fresh_database(&admin);
        let store = SqlStore::connect(&url, &PgOptions::default()).expect("open a fresh PostgreSQL store");
        (store, DropDatabase { admin, url })
    })
    .await
    .expect("open task");
    let store: Arc<dyn Store> = Arc::new(store);
    Some(Fixture::new(store, Box::new(guard)))
}

conformance_suite!(fresh);
