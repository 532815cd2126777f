//! The two databases behind one small interface: a statement with its arguments, run on a
//! [`Conn`] inside a write transaction or on [`Db`] for a read, and rows read through
//! [`RowLike`]. The store's SQL is written once against it.
//!
//! - **SQLite** (embedded, one file, WAL journal): see [`super::sqlite`] (one writer thread,
//!   batched commits synced to disk, reads on the calling thread).
//! - **PostgreSQL** (shared by several runtime replicas): `sqlx` connections in a `deadpool`
//!   pool (see [`Pg`]); a write is one transaction on a pooled connection, committed before the
//!   answer (`synchronous_commit` on).
//!
//! **Cancellation.** A write runs to its end once handed over, whether or not its caller
//! still waits: SQLite's on the writer thread, PostgreSQL's in a task of its own (a
//! transaction's future dropped half-way could leave its pooled connection inside an open
//! transaction). Either way no transaction is left half done, nor open. PostgreSQL's reads
//! run in a task too, so no connection goes back to its pool in the middle of a statement.

use super::sqlite::{sqlite_execute, sqlite_query, Sqlite};
use super::StoreError;
use futures::future::BoxFuture;
use futures::FutureExt as _;
use sqlx::{Postgres, Row as _};
use std::borrow::Cow;
use std::sync::Arc;

/// An argument of a statement, borrowed (a read's) or owned (a write's, sent to another
/// thread). Nulls carry their type (PostgreSQL wants one).
#[derive(Debug, Clone)]
pub(super) enum Value<'a> {
    Text(Option<Cow<'a, str>>),
    Int(Option<i64>),
    Blob(Cow<'a, [u8]>),
}

impl Value<'_> {
    /// The same value, owning its data.
    pub(super) fn into_owned(self) -> Value<'static> {
        match self {
            Value::Text(text) => Value::Text(text.map(|t| Cow::Owned(t.into_owned()))),
            Value::Int(int) => Value::Int(int),
            Value::Blob(blob) => Value::Blob(Cow::Owned(blob.into_owned())),
        }
    }
}

/// Arguments that own their data (a write's, which runs elsewhere).
pub(super) fn owned<const N: usize>(values: [Value<'_>; N]) -> Vec<Value<'static>> {
    values.into_iter().map(Value::into_owned).collect()
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Some(Cow::Borrowed(v)))
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Some(Cow::Borrowed(v)))
    }
}
impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Value::Text(v.map(Cow::Borrowed))
    }
}
impl<'a> From<&'a Option<String>> for Value<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Value::Text(v.as_deref().map(Cow::Borrowed))
    }
}
impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}
impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}
impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(Cow::Borrowed(v))
    }
}

/// The arguments of a statement, in placeholder order (`$1`, `$2`, …), borrowed; a write
/// takes them through [`owned`].
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        [$($crate::store::sql::db::Value::from($value)),*]
    };
}
pub(super) use args;

/// A row of either database, read by column name.
pub(super) trait RowLike {
    /// A text column.
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;
    /// An integer column.
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// A binary column.
    fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

pub(super) fn column_error(column: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("column {column}: {error}"))
}

impl RowLike for sqlx::postgres::PgRow {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
    fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.try_get(column).map_err(|e| column_error(column, e))
    }
}

/// A column's value, of the Rust type asked for.
pub(super) trait FromColumn: Sized {
    /// Reads `column` of `row`.
    fn read(row: &dyn RowLike, column: &str) -> Result<Self, StoreError>;
}

fn required<T>(value: Option<T>, column: &str) -> Result<T, StoreError> {
    value.ok_or_else(|| column_error(column, "unexpected NULL"))
}

impl FromColumn for String {
    fn read(row: &dyn RowLike, column: &str) -> Result<Self, StoreError> {
        required(row.text(column)?, column)
    }
}
impl FromColumn for Option<String> {
    fn read(row: &dyn RowLike, column: &str) -> Result<Self, StoreError> {
        row.text(column)
    }
}
impl FromColumn for i64 {
    fn read(row: &dyn RowLike, column: &str) -> Result<Self, StoreError> {
        required(row.int(column)?, column)
    }
}
impl FromColumn for Option<i64> {
    fn read(row: &dyn RowLike, column: &str) -> Result<Self, StoreError> {
        row.int(column)
    }
}
impl FromColumn for Vec<u8> {
    fn read(row: &dyn RowLike, column: &str) -> Result<Self, StoreError> {
        required(row.blob(column)?, column)
    }
}

/// Reads `column` of `row` as a `T`.
pub(super) fn get<T: FromColumn>(row: &dyn RowLike, column: &str) -> Result<T, StoreError> {
    T::read(row, column)
}

/// Turns a row into a record.
pub(super) type Decode<T> = fn(&dyn RowLike) -> Result<T, StoreError>;

fn pg_error(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            return StoreError::Exists;
        }
    }
    StoreError::Backend(error.to_string())
}

fn pg_query<'q>(
    sql: &'q str,
    args: &'q [Value],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    let mut query = sqlx::query(sql);
    for value in args {
        query = match value {
            Value::Text(text) => query.bind(text.as_deref()),
            Value::Int(int) => query.bind(*int),
            Value::Blob(blob) => query.bind(&**blob),
        };
    }
    query
}

/// A statement and its arguments, owned (a write's).
pub(super) struct Statement {
    pub(super) sql: &'static str,
    pub(super) args: Vec<Value<'static>>,
}

/// A connection a write runs on, inside its transaction.
pub(super) enum Conn {
    /// The SQLite writer's connection (inside the batch's transaction and the write's savepoint).
    Sqlite(rusqlite::Connection),
    /// A pooled PostgreSQL connection, inside the write's transaction.
    Postgres(PgConn),
}

impl Conn {
    /// Runs one statement; returns how many rows it changed.
    pub(super) async fn execute(
        &mut self,
        sql: &str,
        args: &[Value<'_>],
    ) -> Result<u64, StoreError> {
        match self {
            Conn::Sqlite(conn) => sqlite_execute(conn, sql, args),
            Conn::Postgres(conn) => pg_query(sql, args)
                .execute(&mut **conn)
                .await
                .map(|done| done.rows_affected())
                .map_err(pg_error),
        }
    }

    /// Runs one query; returns its rows, decoded.
    pub(super) async fn query<T>(
        &mut self,
        sql: &str,
        args: &[Value<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Conn::Sqlite(conn) => sqlite_query(conn, sql, args, decode),
            Conn::Postgres(conn) => {
                let rows = pg_query(sql, args)
                    .fetch_all(&mut **conn)
                    .await
                    .map_err(pg_error)?;
                rows.iter().map(|row| decode(row)).collect()
            }
        }
    }

    /// Whether this is a PostgreSQL transaction (concurrent writers: some writes take a lock).
    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }
}

/// Makes and recycles the connections of a PostgreSQL pool (deadpool's: sqlx's own pool
/// pings every connection as it comes back, a round trip after each statement). A connection
/// idle for [`PING_WHEN_IDLE`] is pinged before its next use, so connections the database (or
/// the network) dropped during an outage are replaced before a request meets them.
pub(super) struct PgManager {
    options: sqlx::postgres::PgConnectOptions,
    /// Whether its sessions commit without waiting for the flush.
    relaxed: bool,
}

impl deadpool::managed::Manager for PgManager {
    type Type = sqlx::PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<sqlx::PgConnection, sqlx::Error> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        if self.relaxed {
            sqlx::Executor::execute(&mut conn, "SET synchronous_commit = off").await?;
        }
        Ok(conn)
    }

    async fn recycle(
        &self,
        conn: &mut sqlx::PgConnection,
        metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<sqlx::Error> {
        use sqlx::Connection as _;
        if metrics.last_used() >= PING_WHEN_IDLE {
            conn.ping().await?;
        }
        Ok(())
    }
}

/// A pool of PostgreSQL connections.
type PgPool = deadpool::managed::Pool<PgManager>;
/// A connection taken from a [`PgPool`] (back in the pool when dropped).
pub(super) type PgConn = deadpool::managed::Object<PgManager>;

/// A PostgreSQL database: a pool for reads and durable writes, and a smaller one whose
/// sessions commit without waiting for the flush (`synchronous_commit = off`), for
/// [`Durability::Committed`] writes.
///
/// **Cancellation.** Every statement and transaction runs in a task of its own, to its end,
/// whether or not its caller still waits: a connection never goes back to the pool in the
/// middle of a statement, nor inside an open transaction (where the next statement run on it
/// would join that transaction and never commit). A connection that failed other than by the
/// database refusing a statement is not reused.
pub(super) struct Pg {
    pool: PgPool,
    relaxed: PgPool,
    metrics: crate::telemetry::metrics::StoreMetrics,
}

/// Whether a connection that failed with `error` may serve again (the database refused a
/// statement), or is dropped (I/O, protocol).
fn sound(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(_))
}

impl Pg {
    fn pool(&self, durability: Durability) -> &PgPool {
        match durability {
            Durability::OnDisk => &self.pool,
            Durability::Committed => &self.relaxed,
        }
    }

    /// Runs `work` on a connection of the pool for `durability`, in a task of its own (see
    /// [`Pg`]); a connection `work` failed on other than by a database error is dropped.
    async fn on_connection<R, F>(&self, durability: Durability, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut sqlx::PgConnection) -> BoxFuture<'c, Result<R, sqlx::Error>>
            + Send
            + 'static,
    {
        let pool = self.pool(durability).clone();
        let task = tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            let done = work(&mut conn).await;
            if done.as_ref().is_err_and(|e| !sound(e)) {
                drop(deadpool::managed::Object::take(conn));
            }
            done.map_err(pg_error)
        });
        joined(task.await)
    }

    /// Runs `write` in a transaction on a connection of the pool for `durability`, in a task of
    /// its own (see [`Pg`]), and commits it (or rolls it back when it fails).
    async fn transaction<R, F>(&self, durability: Durability, write: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<R, StoreError>> + Send + 'static,
    {
        let pool = self.pool(durability).clone();
        let task = tokio::spawn(async move {
            let mut conn = pool.get().await.map_err(pool_error)?;
            if let Err(e) = sqlx::Executor::execute(&mut *conn, "BEGIN").await {
                if !sound(&e) {
                    drop(deadpool::managed::Object::take(conn));
                }
                return Err(pg_error(e));
            }
            let mut held = Conn::Postgres(conn);
            let ran = std::panic::AssertUnwindSafe(write(&mut held))
                .catch_unwind()
                .await;
            let Conn::Postgres(mut conn) = held else {
                unreachable!("a PostgreSQL write runs on a PostgreSQL connection")
            };
            // A write that panicked leaves its transaction open: its connection is not reused.
            let Ok(result) = ran else {
                drop(deadpool::managed::Object::take(conn));
                return Err(StoreError::Backend("a write panicked".into()));
            };
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            match sqlx::Executor::execute(&mut *conn, end).await {
                Ok(_) => result,
                Err(e) => {
                    if !sound(&e) {
                        drop(deadpool::managed::Object::take(conn));
                    }
                    // A failed commit keeps nothing; a failed rollback leaves the write's error.
                    result.and(Err(pg_error(e)))
                }
            }
        });
        joined(task.await)
    }

    /// Runs one writing statement on its own (it commits alone: one round trip), timed as a
    /// write; returns how many rows it changed.
    async fn execute(
        &self,
        durability: Durability,
        sql: &'static str,
        args: Vec<Value<'static>>,
    ) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        let done = self
            .on_connection(durability, move |conn| {
                Box::pin(async move {
                    let done = pg_query(sql, &args).execute(conn).await?;
                    Ok(done.rows_affected())
                })
            })
            .await;
        self.metrics.observe(true, started.elapsed());
        done
    }

    /// [`Db::write_chain`] as one statement.
    async fn chain(
        &self,
        durability: Durability,
        first: Statement,
        then: Vec<Statement>,
    ) -> Result<u64, StoreError> {
        let sqls: Vec<&'static str> = then.iter().map(|s| s.sql).collect();
        let sql = chain_sql(first.sql, &sqls, &argument_counts(&first, &then));
        let mut args = first.args;
        args.extend(then.into_iter().flat_map(|s| s.args));
        let started = std::time::Instant::now();
        let changed = self
            .on_connection(durability, move |conn| {
                Box::pin(async move {
                    // Every message read, so an error after the row is not missed: the
                    // statement's other CTEs may run to their end after it is sent.
                    match pg_query(sql, &args).fetch_all(conn).await {
                        Ok(rows) => rows
                            .first()
                            .map_or(Ok(0), |row| row.try_get::<i64, _>("changed")),
                        Err(sqlx::Error::Database(db))
                            if db.code().as_deref() == Some(NO_ROW_CHANGED) =>
                        {
                            Ok(0)
                        }
                        Err(other) => Err(other),
                    }
                })
            })
            .await;
        self.metrics.observe(true, started.elapsed());
        changed.map(|n| u64::try_from(n).unwrap_or(0))
    }
}

/// The SQLSTATE `brokerbox_expect_row` (migration `0011`) fails a chain with when its first
/// statement changed no row.
const NO_ROW_CHANGED: &str = "BBX01";

/// How many arguments each statement of a chain takes, `first`'s first.
fn argument_counts(first: &Statement, then: &[Statement]) -> Vec<usize> {
    std::iter::once(first)
        .chain(then)
        .map(|s| s.args.len())
        .collect()
}

/// A pool's failure to hand out a connection, as a store error.
fn pool_error(error: deadpool::managed::PoolError<sqlx::Error>) -> StoreError {
    match error {
        deadpool::managed::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Backend(format!("no PostgreSQL connection: {other}")),
    }
}

/// What a store task returned; a task that panicked fails the call.
fn joined<R>(
    joined: Result<Result<R, StoreError>, tokio::task::JoinError>,
) -> Result<R, StoreError> {
    joined.unwrap_or_else(|failed| {
        Err(StoreError::Backend(format!(
            "a store task failed: {failed}"
        )))
    })
}

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    /// Once its records are on disk: the platform's answer depends on it (an outcome, an
    /// accepted long operation, a decision about a version).
    OnDisk,
    /// Once committed: every later read and write sees it, and it reaches the disk with the
    /// next `OnDisk` write (the database's log is sequential), which always comes before the
    /// platform is answered. For what no answer depends on alone: an operation's intent
    /// (written before its guest call, so a crash leaves a record to recover), a poll's
    /// progress, a lease.
    Committed,
}

/// How long a pooled PostgreSQL connection may sit idle before it is pinged on its next use.
const PING_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A database the store runs on.
pub(super) enum Db {
    /// Embedded SQLite.
    Sqlite(Arc<Sqlite>),
    /// PostgreSQL.
    Postgres(Pg),
}

impl Db {
    /// Opens the database at `url` (`sqlite://PATH[?…]` or `postgres://…`), applying pending
    /// migrations.
    ///
    /// # Errors
    /// When the URL names no supported backend, or the database cannot be opened or migrated.
    pub(super) async fn open(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Db::Sqlite(Arc::new(Sqlite::open(url).await?)))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            use sqlx::Connection as _;
            let options: sqlx::postgres::PgConnectOptions = url.parse()?;
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            sqlx::migrate!("./migrations/postgres")
                .run(&mut conn)
                .await?;
            conn.close().await?;
            let pool = |connections, relaxed| {
                let manager = PgManager {
                    options: options.clone(),
                    relaxed,
                };
                let wait = Some(std::time::Duration::from_secs(30));
                PgPool::builder(manager)
                    .max_size(connections)
                    .wait_timeout(wait)
                    .create_timeout(wait)
                    .recycle_timeout(wait)
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
            };
            Ok(Db::Postgres(Pg {
                pool: pool(16, false)?,
                relaxed: pool(8, true)?,
                metrics: crate::telemetry::metrics::StoreMetrics::default(),
            }))
        } else {
            anyhow::bail!("unsupported state store {url:?}: use sqlite://PATH or postgres://...")
        }
    }

    /// The store's metrics.
    pub(super) fn metrics(&self) -> &crate::telemetry::metrics::StoreMetrics {
        match self {
            Db::Sqlite(sqlite) => &sqlite.metrics,
            Db::Postgres(pg) => &pg.metrics,
        }
    }

    /// Runs one read-only query outside any write transaction.
    pub(super) async fn query<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        let started = std::time::Instant::now();
        let rows = self.query_untimed(sql, args, decode).await;
        self.metrics().observe(false, started.elapsed());
        rows
    }

    async fn query_untimed<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Db::Sqlite(sqlite) => sqlite.read(|conn| sqlite_query(conn, sql, args, decode)),
            Db::Postgres(pg) => {
                let sql = sql.to_owned();
                let args: Vec<Value<'static>> =
                    args.iter().cloned().map(Value::into_owned).collect();
                let rows = pg
                    .on_connection(Durability::OnDisk, move |conn| {
                        Box::pin(async move { pg_query(&sql, &args).fetch_all(conn).await })
                    })
                    .await?;
                rows.iter().map(|row| decode(row)).collect()
            }
        }
    }

    /// Runs `write` in a transaction and commits it: its changes are committed (and, as
    /// `durability` says, on disk) when this returns `Ok`, and none is kept when it fails.
    pub(super) async fn write<R, F>(
        &self,
        durability: Durability,
        write: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<R, StoreError>> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let result = self.write_untimed(durability, write).await;
        self.metrics().observe(true, started.elapsed());
        result
    }

    async fn write_untimed<R, F>(&self, durability: Durability, write: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<R, StoreError>> + Send + 'static,
    {
        match self {
            Db::Sqlite(sqlite) => sqlite.write(durability, write).await,
            Db::Postgres(pg) => pg.transaction(durability, write).await,
        }
    }

    /// Runs one writing statement in its own transaction; returns how many rows it changed.
    /// (On PostgreSQL a lone statement commits on its own: one round trip.)
    pub(super) async fn execute(
        &self,
        durability: Durability,
        sql: &'static str,
        args: Vec<Value<'static>>,
    ) -> Result<u64, StoreError> {
        match self {
            Db::Postgres(pg) => pg.execute(durability, sql, args).await,
            Db::Sqlite(_) => {
                self.write(durability, move |conn| {
                    Box::pin(async move { conn.execute(sql, &args).await })
                })
                .await
            }
        }
    }

    /// Runs `first` and, only when it changed a row, every statement of `then`, in one
    /// transaction; returns how many rows `first` changed (`first` changes at most one: it
    /// names a row by its key).
    ///
    /// On PostgreSQL the chain is one statement, one round trip instead of `BEGIN`, each
    /// statement and `COMMIT` (see [`chain_sql`]): `then`'s statements are data-modifying CTEs,
    /// and the statement fails as a whole (nothing kept) when `first` changed no row. None of
    /// `then`'s statements reads what another statement of the chain writes, nor depends on
    /// another's result, so running them on one snapshot changes nothing.
    pub(super) async fn write_chain(
        &self,
        durability: Durability,
        first: Statement,
        then: Vec<Statement>,
    ) -> Result<u64, StoreError> {
        if let Db::Postgres(pg) = self {
            return pg.chain(durability, first, then).await;
        }
        self.write(durability, move |conn| {
            Box::pin(async move {
                let changed = conn.execute(first.sql, &first.args).await?;
                if changed > 0 {
                    for statement in &then {
                        conn.execute(statement.sql, &statement.args).await?;
                    }
                }
                Ok(changed)
            })
        })
        .await
    }

    /// Runs `guard` and, only when it changed a row, `insert` (an `INSERT … VALUES (…)`), as
    /// one atomic write; returns how many rows `guard` changed (`guard` changes at most one: it
    /// names a row by its key). On SQLite as [`Db::write_chain`]; on PostgreSQL as one
    /// statement (`WITH guard AS (… RETURNING 1) INSERT … SELECT … WHERE EXISTS (…)`), so an
    /// operation's intent costs one round trip instead of four (BEGIN, two statements, COMMIT).
    /// The two statements write different tables, and the insert's condition reads the guard's
    /// result, not a row another transaction may change, so nothing is re-checked under
    /// concurrency.
    pub(super) async fn write_guarded_insert(
        &self,
        durability: Durability,
        guard: Statement,
        insert: Statement,
    ) -> Result<u64, StoreError> {
        match self {
            Db::Sqlite(_) => self.write_chain(durability, guard, vec![insert]).await,
            Db::Postgres(pg) => {
                let sql = guarded_insert_sql(guard.sql, insert.sql, guard.args.len());
                let mut args = guard.args;
                args.extend(insert.args);
                pg.execute(durability, sql, args).await
            }
        }
    }

    /// Whether this is PostgreSQL (where a few statements are written in its own dialect).
    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// How many SQLite transactions the writer committed (0 on PostgreSQL).
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        match self {
            Db::Sqlite(sqlite) => sqlite
                .commits
                .all
                .load(std::sync::atomic::Ordering::Relaxed),
            Db::Postgres(_) => 0,
        }
    }
}

/// The one PostgreSQL statement of [`Db::write_guarded_insert`] for `guard` and `insert` (whose
/// parameters follow the guard's `guard_args`), built once per pair of statements.
fn guarded_insert_sql(
    guard: &'static str,
    insert: &'static str,
    guard_args: usize,
) -> &'static str {
    built_once(vec!["guarded insert", guard, insert], || {
        let (into, values) = insert
            .split_once(" VALUES (")
            .expect("the insert of a guarded write is INSERT … VALUES (…)");
        let values = values
            .strip_suffix(')')
            .expect("the insert of a guarded write ends its VALUES list");
        format!(
            "WITH guard AS ({guard} RETURNING 1) {into} SELECT {} WHERE EXISTS (SELECT 1 FROM guard)",
            shift_parameters(values, guard_args)
        )
    })
}

/// The statement `build` makes for `key` (the statements it is made of), built once per key
/// and kept for the process's life: a handful of keys, one per kind of write.
fn built_once(key: Vec<&'static str>, build: impl FnOnce() -> String) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashMap<Vec<&'static str>, &'static str>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    built
        .entry(key)
        .or_insert_with(|| Box::leak(build().into_boxed_str()))
}

/// The one PostgreSQL statement of [`Db::write_chain`] for `first` and `then` (each statement's
/// parameters following the ones before it: `counts` says how many each takes), built once per
/// chain of statements:
/// `WITH first AS (… RETURNING 1), then1 AS (…), … SELECT brokerbox_expect_row(COUNT(*)) AS
/// changed FROM first`. Every data-modifying CTE runs to its end whatever the query reads; the
/// query fails (`BBX01`) when `first` changed no row, and a failed statement keeps nothing.
fn chain_sql(first: &'static str, then: &[&'static str], counts: &[usize]) -> &'static str {
    let key = [&["chain", first][..], then].concat();
    built_once(key, || {
        let mut sql = format!("WITH first AS ({first} RETURNING 1)");
        let mut before = counts.first().copied().unwrap_or(0);
        for (n, statement) in then.iter().enumerate() {
            let shifted = shift_parameters(statement, before);
            sql.push_str(&format!(", then{n} AS ({shifted})"));
            before += counts.get(n + 1).copied().unwrap_or(0);
        }
        sql.push_str(" SELECT brokerbox_expect_row(COUNT(*)) AS changed FROM first");
        sql
    })
}

/// `sql` with every parameter `$N` renumbered `$(N + by)`.
fn shift_parameters(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&digits),
        }
    }
    out
}

/// The databases a store test runs on, as URLs: SQLite in the returned directory, and
/// PostgreSQL (a fresh database) when `BROKERBOX_TEST_POSTGRES` names a server.
#[cfg(test)]
pub(super) async fn test_database_urls() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut urls = vec![format!("sqlite://{}", dir.path().join("c.db").display())];
    if let Some(server) = std::env::var("BROKERBOX_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
    {
        use sqlx::Connection as _;
        let name = format!("bbx_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let (base, _) = server.rsplit_once('/').unwrap();
        urls.push(format!("{base}/{name}"));
    }
    (dir, urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guarded_insert_is_one_statement_with_the_insert_s_parameters_after_the_guard_s() {
        let sql = guarded_insert_sql(
            "UPDATE t SET a = $1 WHERE k = $2",
            "INSERT INTO o (x, y, z) VALUES ($1, $2, (SELECT MAX(z) + 1 FROM o))",
            2,
        );
        assert_eq!(
            sql,
            "WITH guard AS (UPDATE t SET a = $1 WHERE k = $2 RETURNING 1) INSERT INTO o (x, y, z) \
             SELECT $3, $4, (SELECT MAX(z) + 1 FROM o) WHERE EXISTS (SELECT 1 FROM guard)"
        );
        assert_eq!(shift_parameters("$9, $10 $ x", 10), "$19, $20 $ x");
    }

    fn statement(sql: &'static str, args: Vec<Value<'static>>) -> Statement {
        Statement { sql, args }
    }

    /// The databases a test runs on (see [`test_database_urls`]).
    async fn databases() -> Vec<(Option<tempfile::TempDir>, Db)> {
        let (dir, urls) = test_database_urls().await;
        let mut dbs = Vec::new();
        for url in urls {
            dbs.push((None, Db::open(&url).await.unwrap()));
        }
        dbs[0].0 = Some(dir);
        dbs
    }

    #[tokio::test]
    async fn a_chain_keeps_all_its_changes_or_none() {
        for (_dir, db) in databases().await {
            for sql in [
                "CREATE TABLE o (id BIGINT PRIMARY KEY, s TEXT NOT NULL)",
                "CREATE TABLE i (k BIGINT PRIMARY KEY, v TEXT)",
                "CREATE TABLE a (x BIGINT PRIMARY KEY)",
                "INSERT INTO o VALUES (1, 'in progress')",
                "INSERT INTO i VALUES (1, NULL)",
            ] {
                db.execute(Durability::OnDisk, sql, vec![]).await.unwrap();
            }
            let chain = |v: &'static str, x: i64| {
                let first = statement(
                    "UPDATE o SET s = $1 WHERE id = $2 AND s = 'in progress'",
                    owned(args!["done", 1]),
                );
                let then = vec![
                    statement("UPDATE i SET v = $1 WHERE k = $2", owned(args![v, 1])),
                    statement("INSERT INTO a VALUES ($1)", owned(args![x])),
                ];
                db.write_chain(Durability::OnDisk, first, then)
            };
            let read = || async {
                let v: Vec<Option<String>> = db
                    .query("SELECT v FROM i WHERE k = 1", &[], |row| get(row, "v"))
                    .await
                    .unwrap();
                let n: Vec<i64> = db
                    .query("SELECT COUNT(*) AS n FROM a", &[], |row| get(row, "n"))
                    .await
                    .unwrap();
                (v[0].clone(), n[0])
            };
            // A failing later statement (a duplicate key) keeps nothing, not even the first's.
            db.execute(Durability::OnDisk, "INSERT INTO a VALUES (9)", vec![])
                .await
                .unwrap();
            assert!(matches!(chain("early", 9).await, Err(StoreError::Exists)));
            assert_eq!(read().await, (None, 1));
            // The first statement changes its row: every statement runs.
            assert_eq!(chain("x", 7).await.unwrap(), 1);
            assert_eq!(read().await, (Some("x".into()), 2));
            // It changes none now: nothing runs, and that is no error.
            assert_eq!(chain("y", 8).await.unwrap(), 0);
            assert_eq!(read().await, (Some("x".into()), 2));
        }
    }

    #[tokio::test]
    async fn a_panicking_write_keeps_nothing_and_leaves_no_transaction_open() {
        for (_dir, db) in databases().await {
            db.execute(Durability::OnDisk, "CREATE TABLE p (x BIGINT)", vec![])
                .await
                .unwrap();
            // More panics than the pool has connections.
            for _ in 0..20 {
                let panicked = db
                    .write(Durability::OnDisk, |conn| {
                        Box::pin(async move {
                            conn.execute("INSERT INTO p VALUES (1)", &[]).await?;
                            let half_way = true;
                            if half_way {
                                panic!("a write that panics half-way");
                            }
                            Ok(())
                        })
                    })
                    .await;
                assert!(panicked.is_err());
            }
            // Later writes commit on their own, and none of the panicked ones' rows is there.
            for x in 2..20 {
                db.execute(
                    Durability::OnDisk,
                    "INSERT INTO p VALUES ($1)",
                    owned(args![x]),
                )
                .await
                .unwrap();
            }
            let n: Vec<i64> = db
                .query("SELECT COUNT(*) AS n FROM p", &[], |row| get(row, "n"))
                .await
                .unwrap();
            assert_eq!(n, [18]);
        }
    }

    #[test]
    fn a_chain_is_one_statement_failing_when_its_first_changed_no_row() {
        let sql = chain_sql(
            "UPDATE o SET s = $1 WHERE id = $2",
            &[
                "UPDATE i SET s = $1 WHERE k = $2",
                "INSERT INTO a VALUES ($1)",
            ],
            &[2, 2, 1],
        );
        assert_eq!(
            sql,
            "WITH first AS (UPDATE o SET s = $1 WHERE id = $2 RETURNING 1), \
             then0 AS (UPDATE i SET s = $3 WHERE k = $4), then1 AS (INSERT INTO a VALUES ($5)) \
             SELECT brokerbox_expect_row(COUNT(*)) AS changed FROM first"
        );
    }
}
