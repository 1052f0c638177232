//! The embedded SQLite engine: one database file in WAL mode with `synchronous=FULL`, written
//! by this process only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast_core::ErrorCode;
use rusqlite::{Connection, OpenFlags};

use super::{Backend, Conn};
use crate::db::{Db, Dialect};
use crate::{StoreError, StoreResult};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2_auth.sql"),
    include_str!("schema_v3_governance.sql"),
    include_str!("schema_v4_retention.sql"),
];

/// Most reads running at once (WAL readers do not block the writer).
const READERS: usize = 16;
/// Prepared statements kept per connection (list queries are built per filter combination).
const STATEMENT_CACHE: usize = 64;

impl Conn for Connection {}

pub(super) struct SqliteBackend {
    path: PathBuf,
}

fn configure(conn: &Connection, cache_kib: u32) -> StoreResult<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; ")?;
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Opens the database file and applies pending migrations; returns the schema version before
/// and after.
pub(super) fn migrate_file(path: &Path) -> StoreResult<(usize, usize)> {
    let mut conn = Connection::open(path).map_err(|e| {
        StoreError::new(
            ErrorCode::Unavailable,
            format!("cannot open database {}: {e}", path.display()),
        )
    })?;
    configure(&conn, 2_000)?;
    let before: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    migrate(&mut conn)?;
    Ok((before, MIGRATIONS.len()))
}

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
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

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and runs migrations; returns the
    /// backend and the writer's connection.
    pub(super) fn open(path: &Path) -> StoreResult<(Self, Box<dyn Conn>)> {
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
        Ok((
            Self {
                path: path.to_owned(),
            },
            Box::new(conn),
        ))
    }
}

impl Backend for SqliteBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn open_writer(&self) -> StoreResult<Box<dyn Conn>> {
        let conn = Connection::open(&self.path)?;
        configure(&conn, 16_000)?;
        Ok(Box::new(conn))
    }

    fn open_reader(&self) -> StoreResult<Box<dyn Conn>> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn, 2_000)?;
        Ok(Box::new(conn))
    }

    fn begin_write(&self) -> &str {
        "BEGIN IMMEDIATE"
    }

    fn read_transaction(&self) -> Option<(&'static str, &'static str)> {
        // One snapshot for every statement of a read.
        Some(("BEGIN", "COMMIT"))
    }

    fn shared(&self) -> bool {
        false
    }

    fn read_pool(&self) -> (usize, Duration) {
        (READERS, Duration::from_secs(30))
    }

    fn on_close(&self, writer: &dyn Db) {
        // The queue is drained: fold the WAL into the database file.
        let _ = writer.batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }
}
