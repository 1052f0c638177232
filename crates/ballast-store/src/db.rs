//! The one SQL interface every store operation is written against, so the same functions run on
//! SQLite and on PostgreSQL.
//!
//! Statements use SQLite-style numbered placeholders (`?1`, `?2`, …); the PostgreSQL connection
//! rewrites them to `$1`, `$2`, …. Values travel as [`Value`] (the five SQLite storage classes),
//! rows come back as [`Row`]s read by position. SQL that differs between the engines asks
//! [`Db::dialect`].

use ballast_core::ErrorCode;

use crate::{StoreError, StoreResult};

/// The SQL engine behind a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer (also booleans, stored as 0/1).
    Integer(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Converts a Rust value into a statement parameter.
pub trait ToValue {
    /// The parameter.
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

macro_rules! int_to_value {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
        }
    )*};
}
int_to_value!(i8, i16, i32, i64, u8, u16, u32);

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        // Numbers stored by the registry (ids, sizes, counters) stay far below 2^63.
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

/// Builds a parameter slice: `params![a, b]` is `&[a.to_value(), b.to_value()]`.
#[macro_export]
macro_rules! params {
    () => { &[] as &[$crate::db::Value] };
    ($($v:expr),+ $(,)?) => { &[$($crate::db::ToValue::to_value(&$v)),+] as &[$crate::db::Value] };
}

/// Reads a column value into a Rust value.
pub trait FromValue: Sized {
    /// The Rust value, or why the column does not hold one.
    ///
    /// # Errors
    /// When the stored value has another type or does not fit.
    fn from_value(v: &Value) -> Result<Self, String>;
}

impl FromValue for Value {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(v.clone())
    }
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Integer(i) => Ok(*i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

macro_rules! int_from_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: &Value) -> Result<Self, String> {
                let i = i64::from_value(v)?;
                <$t>::try_from(i).map_err(|_| format!("{i} does not fit in {}", stringify!($t)))
            }
        }
    )*};
}
int_from_value!(i32, u32, u64, usize, u16, u8);

impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        Ok(i64::from_value(v)? != 0)
    }
}

impl FromValue for f64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Real(x) => Ok(*x),
            #[allow(clippy::cast_precision_loss)]
            Value::Integer(i) => Ok(*i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    /// Column `i` as a `T`.
    ///
    /// # Errors
    /// When the column is missing or holds another type (a schema bug: `internal`).
    pub fn get<T: FromValue>(&self, i: usize) -> StoreResult<T> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| StoreError::internal(format!("the query returned no column {i}")))?;
        T::from_value(v).map_err(|e| StoreError::internal(format!("column {i}: {e}")))
    }
}

/// A database connection (or the transaction a write runs in).
pub trait Db {
    /// Which SQL engine this is.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the number of rows it changed.
    ///
    /// # Errors
    /// A unique-key violation is `already_exists`; an unreachable database `unavailable`.
    fn execute(&self, sql: &str, params: &[Value]) -> StoreResult<u64>;
    /// Runs a query and collects its rows.
    ///
    /// # Errors
    /// As [`Db::execute`].
    fn query(&self, sql: &str, params: &[Value]) -> StoreResult<Vec<Row>>;
    /// Runs one or more statements without parameters.
    ///
    /// # Errors
    /// As [`Db::execute`].
    fn batch(&self, sql: &str) -> StoreResult<()>;
}

impl dyn Db + '_ {
    /// The first row, if any.
    ///
    /// # Errors
    /// As [`Db::execute`].
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The first row; `internal` when there is none (for queries that always return one).
    ///
    /// # Errors
    /// As [`Db::execute`], or when no row came back.
    pub fn query_one(&self, sql: &str, params: &[Value]) -> StoreResult<Row> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::internal("a query that always returns a row returned none"))
    }

    /// Column 0 of the first row, if there is a row.
    ///
    /// # Errors
    /// As [`Db::execute`], or when the column has another type.
    pub fn query_value<T: FromValue>(&self, sql: &str, params: &[Value]) -> StoreResult<Option<T>> {
        self.query_opt(sql, params)?.map(|r| r.get(0)).transpose()
    }

    /// Every row mapped by `f`.
    ///
    /// # Errors
    /// As [`Db::execute`], or what `f` returns.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnMut(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.query(sql, params)?.iter().map(f).collect()
    }

    /// The first row mapped by `f`, if there is a row.
    ///
    /// # Errors
    /// As [`Db::execute`], or what `f` returns.
    pub fn query_row_opt<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        self.query_opt(sql, params)?.as_ref().map(f).transpose()
    }
}

/// `unavailable` for a database that cannot be reached.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        ErrorCode::Unavailable,
        format!("the metadata database is unavailable ({e}); retry later"),
    )
}

/// `already_exists` for a unique-key violation.
pub(crate) fn duplicate(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        ErrorCode::AlreadyExists,
        format!("a record with the same key already exists ({e})"),
    )
}

impl Db for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Value]) -> StoreResult<u64> {
        let n = self
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(params.iter())))
            .map_err(sqlite_error)?;
        Ok(n as u64)
    }

    fn query(&self, sql: &str, params: &[Value]) -> StoreResult<Vec<Row>> {
        let mut stmt = self.prepare_cached(sql).map_err(sqlite_error)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(sqlite_error)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(sqlite_error)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(sqlite_value(r.get_ref(i).map_err(sqlite_error)?));
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&self, sql: &str) -> StoreResult<()> {
        self.execute_batch(sql).map_err(sqlite_error)
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(x) => ValueRef::Real(*x),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(x) => Value::Real(x),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation
            && matches!(
                f.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            )
        {
            return duplicate(e);
        }
    }
    StoreError::from(e)
}
