//! The PostgreSQL engine: several registry nodes on one database.
//!
//! Writers of all nodes are serialized by one transaction-scoped advisory lock, taken first in
//! every write transaction, so each node's group commit behaves like the single SQLite writer
//! (and ids are handed out in commit order, gap-free, by the `ballast_next_id` trigger). Reads
//! run in read-only repeatable-read transactions. Migrations run under a session advisory lock,
//! so nodes starting together apply them once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use ballast_core::ErrorCode;
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, Statement};

use super::{Backend, Conn};
use crate::db::{self, Db, Dialect, Row, Value};
use crate::{StoreError, StoreResult};

/// Schema migrations, applied in order; `ballast_schema` records which ran.
const MIGRATIONS: &[&str] = &[
    include_str!("pg/schema_v1.sql"),
    include_str!("pg/schema_v2_auth.sql"),
    include_str!("pg/schema_v3_governance.sql"),
    include_str!("pg/schema_v4_retention.sql"),
];

/// Advisory lock serializing writers across nodes ("ballast" in ASCII).
const WRITE_LOCK: i64 = 0x0062_616c_6c61_7374;
/// Advisory lock serializing migrations across nodes.
const MIGRATE_LOCK: i64 = WRITE_LOCK + 1;
/// Prepared statements kept per connection before the cache is emptied.
const STATEMENT_CACHE: usize = 512;

/// Connection settings toward PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Longest a statement may run before the database cancels it.
    pub statement_timeout: Duration,
    /// Most read connections open at once (the writer has its own).
    pub max_connections: usize,
    /// Longest a read waits for a free connection before answering `unavailable`.
    pub pool_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            max_connections: 16,
            pool_timeout: Duration::from_secs(10),
        }
    }
}

pub(super) struct PgBackend {
    config: postgres::Config,
    tls: super::pg_tls::MakeRustls,
    /// Opens a write transaction holding the writers' lock.
    begin: String,
    pool: (usize, Duration),
}

/// A PostgreSQL connection with its prepared statements.
pub(super) struct PgConn {
    client: RefCell<Client>,
    statements: RefCell<HashMap<String, Statement>>,
}

fn connect_error(e: &postgres::Error, config: &postgres::Config) -> StoreError {
    let hosts = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(s) => s.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    // The driver's message is generic ("error connecting to server"): add its causes.
    let mut why = describe(e);
    let mut source = if e.as_db_error().is_some() {
        None
    } else {
        std::error::Error::source(e)
    };
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::new(
        ErrorCode::Unavailable,
        format!(
            "cannot connect to PostgreSQL at {hosts}: {why}; check --database-url and that the server is up"
        ),
    )
}

impl PgBackend {
    /// Parses the URL, runs the migrations and opens the writer's connection.
    pub(super) fn connect(url: &str, opts: &PgOptions) -> StoreResult<(Self, Box<dyn Conn>)> {
        let backend = Self::new(url, opts)?;
        let writer = backend.open()?;
        migrate(&writer)?;
        Ok((backend, Box::new(writer)))
    }

    fn new(url: &str, opts: &PgOptions) -> StoreResult<Self> {
        let tls = super::pg_tls::settings(url);
        let mut config = postgres::Config::from_str(&tls.url).map_err(|e| {
            StoreError::new(
                ErrorCode::InvalidArgument,
                format!("the database URL is not a valid PostgreSQL URL: {e}"),
            )
        })?;
        let connector = super::pg_tls::connector(tls.root_cert.as_deref())?;
        config.connect_timeout(opts.connect_timeout);
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("ballast");
        }
        let ms = opts.statement_timeout.as_millis();
        config.options(&format!(
            "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
        ));
        Ok(Self {
            config,
            tls: connector,
            begin: format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"),
            pool: (opts.max_connections.max(1), opts.pool_timeout),
        })
    }

    fn open(&self) -> StoreResult<PgConn> {
        let client = self
            .config
            .connect(self.tls.clone())
            .map_err(|e| connect_error(&e, &self.config))?;
        Ok(PgConn {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
        })
    }
}

/// Applies the migrations this build knows and the database lacks; returns the schema version
/// before and after.
fn migrate(conn: &PgConn) -> StoreResult<(usize, usize)> {
    let db: &dyn Db = conn;
    db.execute("SELECT pg_advisory_lock(?1)", crate::params![MIGRATE_LOCK])?;
    let result = apply_migrations(db);
    let unlocked = db.execute("SELECT pg_advisory_unlock(?1)", crate::params![MIGRATE_LOCK]);
    let versions = result?;
    unlocked?;
    Ok(versions)
}

fn apply_migrations(db: &dyn Db) -> StoreResult<(usize, usize)> {
    db.batch(
        "CREATE TABLE IF NOT EXISTS ballast_schema (
            version    BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )?;
    let current: usize = db
        .query_value::<usize>("SELECT coalesce(max(version), 0) FROM ballast_schema", &[])?
        .unwrap_or(0);
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
        db.batch("BEGIN")?;
        let applied = db.batch(sql).and_then(|()| {
            db.execute(
                "INSERT INTO ballast_schema (version) VALUES (?1)",
                crate::params![i + 1],
            )
        });
        match applied {
            Ok(_) => db.batch("COMMIT")?,
            Err(e) => {
                let _ = db.batch("ROLLBACK");
                return Err(StoreError::new(
                    e.code,
                    format!("migration {} failed: {}", i + 1, e.message),
                ));
            }
        }
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok((current, MIGRATIONS.len()))
}

/// Runs the migrations alone (`ballast migrate`); returns the schema version before and after.
///
/// # Errors
/// When the database cannot be reached or a migration fails (it is rolled back).
pub fn migrate_only(url: &str, opts: &PgOptions) -> StoreResult<(usize, usize)> {
    let backend = PgBackend::new(url, opts)?;
    migrate(&backend.open()?)
}

impl Backend for PgBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn open_writer(&self) -> StoreResult<Box<dyn Conn>> {
        Ok(Box::new(self.open()?))
    }

    fn open_reader(&self) -> StoreResult<Box<dyn Conn>> {
        Ok(Box::new(self.open()?))
    }

    fn begin_write(&self) -> &str {
        &self.begin
    }

    fn read_transaction(&self) -> Option<(&'static str, &'static str)> {
        Some(("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", "COMMIT"))
    }

    fn shared(&self) -> bool {
        true
    }

    fn read_pool(&self) -> (usize, Duration) {
        self.pool
    }
}

impl Conn for PgConn {
    fn is_usable(&self) -> bool {
        self.client.try_borrow().is_ok_and(|c| !c.is_closed())
    }
}

/// Rewrites SQLite-style `?N` placeholders to PostgreSQL's `$N` (outside string literals).
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_string = !in_string;
                out.push(c);
            }
            '?' if !in_string && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            _ => out.push(c),
        }
    }
    out
}

/// The database's own words for an error (the driver's Display says only "db error").
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = format!("{} ({})", d.message(), d.code().code());
            if let Some(detail) = d.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            s
        }
        None => e.to_string(),
    }
}

fn pg_error(e: &postgres::Error) -> StoreError {
    use postgres::error::SqlState;
    let text = describe(e);
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => db::duplicate(text),
        // Text PostgreSQL cannot hold (a NUL character): the input's fault, not the store's.
        Some(c)
            if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            StoreError::new(
                ErrorCode::InvalidArgument,
                format!("the request holds text the database cannot store ({text}); remove NUL characters"),
            )
        }
        Some(c)
            if c.code().starts_with("08")
                || c.code().starts_with("53")
                || c.code().starts_with("57")
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            db::unavailable(text)
        }
        Some(_) => StoreError::internal(text),
        // No SQL state: the connection itself failed.
        None => db::unavailable(text),
    }
}

impl PgConn {
    fn statement(&self, client: &mut Client, sql: &str) -> StoreResult<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = client.prepare(&placeholders(sql)).map_err(|e| pg_error(&e))?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    fn client(&self) -> StoreResult<std::cell::RefMut<'_, Client>> {
        self.client
            .try_borrow_mut()
            .map_err(|_| StoreError::internal("a database connection was used re-entrantly"))
    }
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Value]) -> StoreResult<u64> {
        let mut client = self.client()?;
        let stmt = self.statement(&mut client, sql)?;
        client.execute(&stmt, &refs(params)).map_err(|e| pg_error(&e))
    }

    fn query(&self, sql: &str, params: &[Value]) -> StoreResult<Vec<Row>> {
        let mut client = self.client()?;
        let stmt = self.statement(&mut client, sql)?;
        let rows = client.query(&stmt, &refs(params)).map_err(|e| pg_error(&e))?;
        rows.iter().map(pg_row).collect()
    }

    fn batch(&self, sql: &str) -> StoreResult<()> {
        self.client()?.batch_execute(sql).map_err(|e| pg_error(&e))
    }
}

fn pg_row(r: &postgres::Row) -> StoreResult<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let ty = col.type_();
        let bad = |e: postgres::Error| StoreError::internal(format!("column {}: {e}", col.name()));
        let v = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::Integer)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|v| Value::Integer(v.into()))
        } else if *ty == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(|v| Value::Integer(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)
                .map_err(bad)?
                .map(|v| Value::Integer(v.into()))
        } else if *ty == Type::FLOAT8 {
            r.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Value::Real)
        } else if *ty == Type::FLOAT4 {
            r.try_get::<_, Option<f32>>(i)
                .map_err(bad)?
                .map(|v| Value::Real(v.into()))
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?.map(Value::Blob)
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::BPCHAR || *ty == Type::NAME {
            r.try_get::<_, Option<String>>(i).map_err(bad)?.map(Value::Text)
        } else {
            return Err(StoreError::internal(format!(
                "column {} has type {ty}, which the store does not read (cast it to BIGINT, DOUBLE PRECISION or TEXT)",
                col.name()
            )));
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    #[allow(clippy::cast_precision_loss)]
                    (*i as f64).to_sql(ty, out)
                } else {
                    i.to_string().as_str().to_sql(ty, out)
                }
            }
            Value::Real(x) => {
                if *ty == Type::FLOAT4 {
                    #[allow(clippy::cast_possible_truncation)]
                    (*x as f32).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    x.to_sql(ty, out)
                } else {
                    x.to_string().as_str().to_sql(ty, out)
                }
            }
            // jsonb's binary form is a version byte and the JSON text.
            Value::Text(s) if *ty == Type::JSONB => {
                out.extend_from_slice(&[1]);
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Value::Text(s) if *ty == Type::JSON => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Blob(b) => b.as_slice().to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_are_rewritten_outside_strings() {
        assert_eq!(
            placeholders("SELECT ?1, '?2', x FROM t WHERE a = ?10 AND b = '?'"),
            "SELECT $1, '?2', x FROM t WHERE a = $10 AND b = '?'"
        );
    }
}
