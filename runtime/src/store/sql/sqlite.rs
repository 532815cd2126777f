//! Embedded SQLite through `rusqlite`, on threads the store owns, so a transaction costs no
//! thread hand-off per statement:
//! - every write is a closure sent to one *writer thread*, which runs whatever queued
//!   meanwhile as one SQLite transaction (each closure in its own savepoint, so one that fails
//!   is undone alone), commits it with `synchronous = FULL` (one fsync of the WAL for the whole
//!   batch: group commit) and only then answers each writer. Nothing is answered before its
//!   record is on disk; a batch is whatever arrived during the previous commit (no timer: a
//!   lone write waits for nobody), at most [`MAX_BATCH`] writes;
//! - reads run on the calling thread, on a pooled read connection (WAL readers never wait for
//!   the writer), so a read is a function call, not a hand-off.
//!
//! **Cancellation.** A write, once handed to the writer thread, runs to its end and is committed
//! or undone whole, whether or not its caller still waits: a caller dropped at any `.await`
//! loses only the answer, and no later writer is held up.

use super::db::{column_error, Conn, Decode, Durability, RowLike, Value};
use super::StoreError;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most write closures one SQLite transaction takes (bounds a batch's latency).
const MAX_BATCH: usize = 128;
/// Write closures waiting for the writer thread before senders wait for room.
const QUEUE: usize = 1024;
/// Idle read connections kept open.
const IDLE_READERS: usize = 8;
/// Prepared statements each SQLite connection keeps.
const STATEMENT_CACHE: usize = 64;

/// How every SQLite connection is set up: WAL journal, each commit synced to disk, a busy
/// timeout for other processes, foreign keys. No memory map: the database file grows as the
/// writer checkpoints, and every connection then remapped it (an `munmap` with a TLB
/// shootdown to the other cores per read); reads through `pread` measured ~7% less CPU per
/// lifecycle, and no slow-down as the file grows (docs/BENCHMARKS.md).
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
    PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// The writer's page cache: small. SQLite's B-tree, when it rebalances, renumbers pages
/// through the never-used "pending byte" page (page 262,145 at 4 KiB pages), and the commit
/// after that scans the *whole* page cache to drop pages beyond the database's end: with the
/// default cache (~2,000 pages) that scan was ~6% of all CPU under lifecycle load. Pages the
/// writer misses come back from the WAL or the database file, both in the kernel's page cache.
const WRITER_CACHE: &str = "PRAGMA cache_size = 256;";

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Text(Some(text)) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Int(Some(int)) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(*int)),
            Value::Blob(blob) => ToSqlOutput::Borrowed(ValueRef::Blob(blob)),
            Value::Text(None) | Value::Int(None) => {
                ToSqlOutput::Owned(rusqlite::types::Value::Null)
            }
        })
    }
}

impl RowLike for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
    fn blob(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(column).map_err(|e| column_error(column, e))
    }
}

pub(super) fn sqlite_error(error: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &error {
        if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
        {
            return StoreError::Exists;
        }
    }
    StoreError::Backend(error.to_string())
}

/// Whether the placeholders of `statement` are `$1`, `$2`, … in the order they first appear.
/// SQLite reads `$N` as a named parameter and numbers them by first appearance, so the store's
/// `$N` SQL binds positionally only when written that way (checked in debug builds, on every
/// statement the tests run).
fn numbered_in_order(statement: &rusqlite::Statement<'_>) -> bool {
    (1..=statement.parameter_count()).all(|i| {
        statement
            .parameter_name(i)
            .is_some_and(|name| name.strip_prefix('$') == Some(i.to_string().as_str()))
    })
}

pub(super) fn sqlite_execute(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Value<'_>],
) -> Result<u64, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(sqlite_error)?;
    debug_assert!(
        numbered_in_order(&statement),
        "placeholders out of order: {sql}"
    );
    let changed = statement
        .execute(rusqlite::params_from_iter(args))
        .map_err(sqlite_error)?;
    Ok(u64::try_from(changed).unwrap_or(u64::MAX))
}

pub(super) fn sqlite_query<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Value<'_>],
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(sqlite_error)?;
    debug_assert!(
        numbered_in_order(&statement),
        "placeholders out of order: {sql}"
    );
    let mut rows = statement
        .query(rusqlite::params_from_iter(args))
        .map_err(sqlite_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// A SQLite database: its writer thread and its read connections.
pub(super) struct Sqlite {
    path: std::path::PathBuf,
    /// Where write closures go to the writer thread.
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// Idle read connections.
    readers: Mutex<Vec<rusqlite::Connection>>,
    /// Transactions the writer committed (each covering one batch), for tests and logs.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) commits: Arc<Commits>,
    /// Latency and operation durations.
    pub(super) metrics: crate::telemetry::metrics::StoreMetrics,
}

/// Transactions the writer committed: all of them, and those synced to disk.
#[derive(Default)]
pub(super) struct Commits {
    pub(super) all: AtomicU64,
    pub(super) synced: AtomicU64,
}

/// What a write closure left to do once its batch's commit is known: answer its writer.
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// Runs a write (given no connection when its batch could not begin); returns whether it
/// succeeded, and its answer.
type Run = Box<dyn FnOnce(Option<&mut Conn>) -> (bool, Answer) + Send>;

/// A write as the writer thread runs it.
struct Job {
    /// Whether its batch must be on disk before it is answered.
    on_disk: bool,
    /// The write.
    run: Run,
}

impl Sqlite {
    /// Opens the database file named by `url` (`sqlite://PATH[?…]`), creating it if needed,
    /// migrates it and starts its writer thread.
    pub(super) async fn open(url: &str) -> anyhow::Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = std::path::PathBuf::from(path.split_once('?').map_or(path, |(path, _)| path));
        // The schema's history is sqlx's: the migrations run as they always have.
        {
            use sqlx::Connection;
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
            sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
            conn.close().await?;
        }
        let writer = connect(&path)?;
        writer.execute_batch(WRITER_CACHE)?;
        let (jobs, queue) = tokio::sync::mpsc::channel(QUEUE);
        let commits = Arc::new(Commits::default());
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_batches(writer, queue, &counted))?;
        Ok(Sqlite {
            metrics: crate::telemetry::metrics::StoreMetrics::default(),
            path,
            jobs,
            readers: Mutex::new(Vec::new()),
            commits,
        })
    }

    /// Runs `read` on an idle read connection (opening one if none is idle).
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => connect(&self.path).map_err(sqlite_error)?,
        };
        let result = read(&conn);
        let mut idle = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs `write` on the writer thread in a batch's transaction; answers once the batch is
    /// committed (and on disk, as `durability` says).
    pub(super) async fn write<R, F>(
        &self,
        durability: Durability,
        write: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<R, StoreError>> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let run = Box::new(move |conn: Option<&mut Conn>| {
            let result = match conn {
                // Statements on SQLite never wait: the future is ready at its first poll.
                Some(conn) => write(conn)
                    .now_or_never()
                    .unwrap_or_else(|| Err(StoreError::Backend("a SQLite write waited".into()))),
                None => Err(StoreError::Backend("not run".into())),
            };
            let succeeded = result.is_ok();
            let reply: Answer = Box::new(move |commit: Option<&StoreError>| {
                let _ = answer.send(match commit {
                    Some(error) => Err(error.clone()),
                    None => result,
                });
            });
            (succeeded, reply)
        });
        let job = Job {
            on_disk: durability == Durability::OnDisk,
            run,
        };
        let stopped = || {
            StoreError::Backend(
                "the SQLite writer gave no answer (it stopped, or the write panicked)".into(),
            )
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Opens a connection to the SQLite file at `path`, set up for the store.
fn connect(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(SQLITE_SETUP)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The writer thread: runs the queued writes a batch at a time until the store is dropped.
fn write_batches(
    conn: rusqlite::Connection,
    mut queue: tokio::sync::mpsc::Receiver<Job>,
    commits: &Commits,
) {
    let mut conn = Conn::Sqlite(conn);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut synced = true;
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A batch that must be on disk commits with an fsync of the WAL, which also covers
        // every commit before it; the others commit without one.
        let on_disk = batch.iter().any(|job| job.on_disk);
        let mut ready = Ok(());
        if on_disk != synced {
            if let Conn::Sqlite(sqlite) = &conn {
                let level = if on_disk {
                    "PRAGMA synchronous = FULL"
                } else {
                    "PRAGMA synchronous = NORMAL"
                };
                ready = control(sqlite, level);
                if ready.is_ok() {
                    synced = on_disk;
                }
            }
        }
        let (answers, outcome) = run_batch(&mut conn, &mut batch, ready);
        if outcome.is_ok() {
            commits.all.fetch_add(1, Ordering::Relaxed);
            if on_disk {
                commits.synced.fetch_add(1, Ordering::Relaxed);
            }
        }
        for answer in answers {
            answer(outcome.as_ref().err());
        }
    }
}

/// Runs one of the writer's own statements (transaction control, pragmas), prepared once.
fn control(conn: &rusqlite::Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.raw_execute())
        .map(drop)
        .map_err(sqlite_error)
}

/// Runs a batch of writes in one transaction, each in its own savepoint, and commits it;
/// returns their answers (each to be given the commit's outcome). A write that fails or
/// panics is undone alone; when the transaction cannot begin or commit, none is kept.
fn run_batch(
    conn: &mut Conn,
    batch: &mut Vec<Job>,
    ready: Result<(), StoreError>,
) -> (Vec<Answer>, Result<(), StoreError>) {
    let statement = |conn: &Conn, sql: &str| match conn {
        Conn::Sqlite(sqlite) => control(sqlite, sql),
        Conn::Postgres(_) => unreachable!("the writer holds a SQLite connection"),
    };
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let begun = ready.and_then(|()| statement(conn, "BEGIN IMMEDIATE"));
    for job in batch.drain(..) {
        if begun.is_err() || statement(conn, "SAVEPOINT write").is_err() {
            answers.push((job.run)(None).1);
            continue;
        }
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.run)(Some(conn))));
        let succeeded = match ran {
            Ok((succeeded, answer)) => {
                answers.push(answer);
                succeeded
            }
            Err(_) => false,
        };
        if !succeeded {
            let _ = statement(conn, "ROLLBACK TO write");
        }
        let _ = statement(conn, "RELEASE write");
    }
    if let Err(error) = begun {
        tracing::warn!("the SQLite writer could not begin a transaction: {error}");
        return (answers, Err(error));
    }
    let committed = statement(conn, "COMMIT");
    if let Err(error) = &committed {
        tracing::warn!("the SQLite writer could not commit: {error}");
        let _ = statement(conn, "ROLLBACK");
    }
    (answers, committed)
}

#[cfg(test)]
mod tests {
    use super::super::db::{args, get, owned, Db};
    use super::*;

    /// A store database with table `t` on a fresh file.
    async fn setup() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("w.db").display()))
            .await
            .unwrap();
        db.execute(
            Durability::OnDisk,
            "CREATE TABLE t (x INTEGER PRIMARY KEY)",
            vec![],
        )
        .await
        .unwrap();
        (dir, db)
    }

    async fn count(db: &Db) -> i64 {
        db.query("SELECT COUNT(*) AS n FROM t", &[], |row| get(row, "n"))
            .await
            .unwrap()[0]
    }

    /// Inserts `x` and `x + 1` in one write, failing after the first when `fail`.
    async fn insert_pair(db: &Db, x: i64, fail: bool) -> Result<(), StoreError> {
        db.write(Durability::OnDisk, move |conn| {
            Box::pin(async move {
                conn.execute("INSERT INTO t VALUES ($1)", &args![x]).await?;
                if fail {
                    return Err(StoreError::Changed);
                }
                conn.execute("INSERT INTO t VALUES ($1)", &args![x + 1])
                    .await?;
                Ok(())
            })
        })
        .await
    }

    #[tokio::test]
    async fn the_worker_s_queries_search_the_in_progress_index_however_long_the_history() {
        let (_dir, db) = setup().await;
        let Db::Sqlite(sqlite) = &db else {
            panic!("a SQLite store")
        };
        // Without statistics (the store never runs ANALYZE) the planner must still search the
        // partial index by state, not scan.
        use super::super::operations::{DUE_POLLS, ORPHANED};
        for sql in [DUE_POLLS, ORPHANED] {
            let plan = sqlite
                .read(|conn| {
                    let mut explain = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .map_err(sqlite_error)?;
                    // Unbound parameters are NULL: the plan does not depend on them.
                    let mut rows = explain.raw_query();
                    let mut plan = Vec::new();
                    while let Some(row) = rows.next().map_err(sqlite_error)? {
                        plan.push(row.get::<_, String>(3).map_err(sqlite_error)?);
                    }
                    Ok(plan)
                })
                .unwrap();
            assert!(
                plan[0]
                    .starts_with("SEARCH operations USING INDEX operations_in_progress (state=?"),
                "{sql}: {plan:?}"
            );
        }
    }

    #[tokio::test]
    async fn placeholders_bind_positionally_only_in_order() {
        let (_dir, db) = setup().await;
        let Db::Sqlite(sqlite) = &db else {
            panic!("a SQLite store")
        };
        sqlite
            .read(|conn| {
                let prepare = |sql| conn.prepare(sql).map_err(sqlite_error);
                assert!(numbered_in_order(&prepare("SELECT $1, $2, $1, $3")?));
                assert!(!numbered_in_order(&prepare("SELECT $2, $1")?));
                assert!(!numbered_in_order(&prepare("SELECT ?, ?")?));
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn an_on_disk_commit_is_synced_and_a_write_is_read_back_at_once() {
        let (_dir, db) = setup().await;
        let Db::Sqlite(sqlite) = &db else {
            panic!("a SQLite store")
        };
        let synchronous = sqlite
            .read(|conn| {
                conn.query_row("PRAGMA synchronous", [], |row| row.get::<_, i64>(0))
                    .map_err(sqlite_error)
            })
            .unwrap();
        assert_eq!(synchronous, 2, "FULL: the WAL is synced at each commit");
        insert_pair(&db, 1, false).await.unwrap();
        assert_eq!(count(&db).await, 2);
    }

    #[tokio::test]
    async fn only_writes_an_answer_depends_on_wait_for_the_disk() {
        let (_dir, db) = setup().await;
        let synced = |db: &Db| match db {
            Db::Sqlite(sqlite) => sqlite.commits.synced.load(Ordering::Relaxed),
            Db::Postgres(_) => unreachable!(),
        };
        let before = (db.commits(), synced(&db));
        for x in 0..10 {
            let sql = "INSERT INTO t VALUES ($1)";
            db.execute(Durability::Committed, sql, owned(args![x]))
                .await
                .unwrap();
        }
        assert_eq!(
            count(&db).await,
            10,
            "committed writes are read back at once"
        );
        assert_eq!(db.commits() - before.0, 10);
        assert_eq!(synced(&db), before.1, "no fsync for them");
        insert_pair(&db, 100, false).await.unwrap();
        assert_eq!(synced(&db), before.1 + 1, "an on-disk write is synced");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_a_failing_one_is_undone_alone() {
        let (_dir, db) = setup().await;
        let db = Arc::new(db);
        let before = db.commits();
        let writes: Vec<_> = (0..200i64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { insert_pair(&db, i * 10, i % 4 == 0).await })
            })
            .collect();
        let mut failed = 0;
        for write in writes {
            if write.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 50);
        assert_eq!(
            count(&db).await,
            300,
            "150 pairs whole, nothing of the 50 failed"
        );
        let commits = db.commits() - before;
        assert!(commits < 200, "{commits} commits for 200 writes");
    }

    #[tokio::test]
    async fn a_write_whose_caller_hangs_up_is_done_whole_and_the_writer_goes_on() {
        let (_dir, db) = setup().await;
        for round in 0..100i64 {
            let write = insert_pair(&db, round * 10, false);
            let mut write = std::pin::pin!(write);
            for _ in 0..round % 3 {
                let _ = futures::poll!(write.as_mut());
                tokio::task::yield_now().await;
            }
            // Dropped here, maybe before it was sent, maybe while it waits for its commit.
        }
        insert_pair(&db, -10, false).await.unwrap();
        let pairs: i64 = db
            .query(
                "SELECT COUNT(*) AS n FROM t WHERE x % 10 = 0 AND x + 1 IN (SELECT x FROM t)",
                &[],
                |row| get(row, "n"),
            )
            .await
            .unwrap()[0];
        assert_eq!(count(&db).await, pairs * 2, "no half-written pair");
        assert!(pairs >= 1);
    }

    #[tokio::test]
    async fn a_panicking_write_is_undone_and_the_writer_goes_on() {
        let (_dir, db) = setup().await;
        let panicked = db
            .write(Durability::OnDisk, |conn| {
                Box::pin(async move {
                    conn.execute("INSERT INTO t VALUES (1)", &[]).await?;
                    panic!("a bug in a write");
                    #[allow(unreachable_code)]
                    Ok(())
                })
            })
            .await;
        assert!(panicked.is_err());
        insert_pair(&db, 10, false).await.unwrap();
        assert_eq!(count(&db).await, 2);
    }
}
