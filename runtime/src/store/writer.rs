//! Where the SQL store writes. PostgreSQL takes concurrent writers: writes use the pool (sqlx
//! rolls back a transaction whose future is dropped, even during its `BEGIN`). SQLite admits
//! one writer at a time: writes go through one connection the runtime holds itself, behind an
//! async lock, so writers queue in the runtime instead of colliding on the file lock and
//! sleeping in SQLite's busy handler, and no pool pings the connection between two writes.
//!
//! **Cancellation.** A write future may be dropped at any `.await` (a client hangs up, a guest
//! call reaches its deadline during a kv write). SQLite's worker thread still runs a statement
//! it was sent, so the connection may be left inside a transaction nobody will finish. The
//! single writer is therefore *dirty unless proven clean*: the flag is raised before anything
//! is sent and lowered only once the connection is known to be outside a transaction (after a
//! `COMMIT` or an autocommit statement returned). The next writer heals a dirty connection with
//! `ROLLBACK`, or replaces it with a fresh one when even that fails, so one dropped write can
//! never wedge the store for everybody.

use sqlx::any::{AnyArguments, AnyQueryResult};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Mutex, MutexGuard};

/// The write side of a store.
pub enum Writer {
    /// Writes through a pool (PostgreSQL).
    Pool(AnyPool),
    /// Writes through one connection (SQLite).
    Single(Single),
}

/// The one SQLite write connection and what it takes to heal or replace it.
pub struct Single {
    conn: Mutex<AnyConnection>,
    /// Raised while the connection may be inside a transaction nobody will finish.
    dirty: AtomicBool,
    /// Connection URL and set-up statements, to open a replacement.
    url: String,
    setup: String,
    /// Times a dirty connection was healed (rolled back or replaced), for tests and logs.
    healed: AtomicU64,
    /// Makes each commit durable before its writer goes on (group commit).
    sync: super::durable::WalSync,
}

/// A write transaction; dropped without [`WriteTx::commit`], it is rolled back.
pub enum WriteTx<'a> {
    /// On a pooled connection (sqlx rolls back on drop).
    Pooled(Option<Transaction<'a, Any>>),
    /// On the single writer connection, held for the whole transaction (its writer stays
    /// dirty until the commit returns).
    Single {
        /// The connection.
        conn: MutexGuard<'a, AnyConnection>,
        /// The writer whose connection this is.
        writer: &'a Single,
    },
}

/// Whether an error of `ROLLBACK` only says there was nothing to roll back.
fn nothing_to_undo(error: &sqlx::Error) -> bool {
    error.to_string().contains("no transaction is active")
}

impl Writer {
    /// One connection to the SQLite database at `url`, set up with `setup`.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub async fn single(url: &str, setup: &str) -> Result<Self, sqlx::Error> {
        let conn = Single::connect(url, setup).await?;
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        Ok(Writer::Single(Single {
            conn: Mutex::new(conn),
            dirty: AtomicBool::new(false),
            url: url.to_string(),
            setup: setup.to_string(),
            healed: AtomicU64::new(0),
            sync: super::durable::WalSync::new(std::path::Path::new(path)),
        }))
    }

    /// How many WAL fsyncs made commits durable (0 on PostgreSQL, whose commits are).
    #[cfg(test)]
    pub fn fsyncs(&self) -> u64 {
        match self {
            Writer::Pool(_) => 0,
            Writer::Single(single) => single.sync.fsyncs(),
        }
    }

    /// How many times a connection left dirty by a dropped write was healed.
    #[cfg(test)]
    pub fn healed(&self) -> u64 {
        match self {
            Writer::Pool(_) => 0,
            Writer::Single(single) => single.healed.load(Ordering::Relaxed),
        }
    }

    /// Starts a write transaction.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn begin(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        match self {
            Writer::Pool(pool) => Ok(WriteTx::Pooled(Some(pool.begin().await?))),
            Writer::Single(single) => {
                let mut conn = single.lock().await?;
                // Dirty from here until the COMMIT returns (or the next writer heals it).
                single.dirty.store(true, Ordering::Release);
                conn.execute("BEGIN IMMEDIATE").await?;
                Ok(WriteTx::Single {
                    conn,
                    writer: single,
                })
            }
        }
    }

    /// Runs one writing statement on its own.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn execute<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        match self {
            Writer::Pool(pool) => query.execute(pool).await,
            Writer::Single(single) => {
                let mut conn = single.lock().await?;
                single.dirty.store(true, Ordering::Release);
                let result = query.execute(&mut *conn).await?;
                // An autocommit statement that returned leaves no transaction open.
                single.dirty.store(false, Ordering::Release);
                let ticket = single.sync.ticket();
                drop(conn);
                single.durable(ticket).await?;
                Ok(result)
            }
        }
    }
}

impl Single {
    /// Waits until the commit of `ticket` is on disk.
    async fn durable(&self, ticket: u64) -> Result<(), sqlx::Error> {
        self.sync.durable(ticket).await.map_err(sqlx::Error::Io)
    }

    async fn connect(url: &str, setup: &str) -> Result<AnyConnection, sqlx::Error> {
        let mut conn = AnyConnection::connect(url).await?;
        conn.execute(setup).await?;
        Ok(conn)
    }

    /// The connection, locked, healed first if a write left it dirty.
    async fn lock(&self) -> Result<MutexGuard<'_, AnyConnection>, sqlx::Error> {
        let mut guard = self.conn.lock().await;
        if self.dirty.load(Ordering::Acquire) {
            self.heal(&mut guard).await?;
        }
        Ok(guard)
    }

    /// Ends whatever transaction a dropped write left open: `ROLLBACK` (an error saying there
    /// was none is fine: the write was dropped after its COMMIT went through, or before its
    /// BEGIN ran); on any other failure the connection is replaced by a fresh one (closing
    /// the old one ends its transaction). The flag stays raised if this is itself dropped.
    async fn heal(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        match conn.execute("ROLLBACK").await {
            Ok(_) => {}
            Err(error) if nothing_to_undo(&error) => {}
            Err(error) => {
                tracing::warn!("the SQLite write connection is replaced after: {error}");
                let fresh = Self::connect(&self.url, &self.setup).await?;
                let old = std::mem::replace(conn, fresh);
                // Closing ends the old connection's transaction and frees its write lock.
                if let Err(error) = old.close().await {
                    tracing::debug!("closing the replaced connection: {error}");
                }
            }
        }
        self.healed.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(false, Ordering::Release);
        tracing::debug!("healed the SQLite write connection after a dropped write");
        Ok(())
    }
}

impl WriteTx<'_> {
    /// Commits the transaction.
    ///
    /// # Errors
    /// When the database fails (the transaction is then rolled back by the next writer).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match &mut self {
            WriteTx::Pooled(tx) => match tx.take() {
                Some(tx) => tx.commit().await,
                None => Ok(()),
            },
            WriteTx::Single { conn, writer } => {
                conn.execute("COMMIT").await?;
                writer.dirty.store(false, Ordering::Release);
                let (writer, ticket) = (*writer, writer.sync.ticket());
                // The write lock is free while the commit waits for the disk.
                drop(self);
                writer.durable(ticket).await
            }
        }
    }
}

impl Deref for WriteTx<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            WriteTx::Pooled(tx) => tx.as_ref().expect("an open transaction"),
            WriteTx::Single { conn, .. } => conn,
        }
    }
}

impl DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteTx::Pooled(tx) => tx.as_mut().expect("an open transaction"),
            WriteTx::Single { conn, .. } => conn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer on a fresh database with table `t`, and a separate reader connection.
    async fn setup() -> (tempfile::TempDir, Writer, AnyConnection) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let writer = Writer::single(&url, "PRAGMA journal_mode = WAL;")
            .await
            .unwrap();
        writer
            .execute(sqlx::query("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
            .await
            .unwrap();
        let reader = AnyConnection::connect(&url).await.unwrap();
        (dir, writer, reader)
    }

    /// Rows of `t` as another connection sees them (only what was committed).
    async fn committed(reader: &mut AnyConnection) -> i64 {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM t")
            .fetch_one(reader)
            .await
            .unwrap()
    }

    async fn insert_committed(writer: &Writer, x: i64) {
        let mut tx = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(x)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_returns_only_once_the_wal_is_synced_and_concurrent_writes_share_fsyncs() {
        let (_dir, writer, mut reader) = setup().await;
        let before = writer.fsyncs();
        insert_committed(&writer, 1).await;
        assert_eq!(
            writer.fsyncs(),
            before + 1,
            "the commit waited for its fsync"
        );
        let writer = std::sync::Arc::new(writer);
        let writes: Vec<_> = (2..66)
            .map(|x| {
                let writer = writer.clone();
                tokio::spawn(async move { insert_committed(&writer, x).await })
            })
            .collect();
        for write in writes {
            write.await.unwrap();
        }
        assert_eq!(committed(&mut reader).await, 65);
        let fsyncs = writer.fsyncs() - before - 1;
        assert!((1..=64).contains(&fsyncs), "{fsyncs} fsyncs for 64 writes");
    }

    #[tokio::test]
    async fn a_transaction_dropped_unfinished_is_rolled_back_and_the_writer_goes_on() {
        let (_dir, writer, mut reader) = setup().await;
        insert_committed(&writer, 1).await;

        // A failing statement ends the transaction early (as `?` does in the store).
        let mut failed = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *failed)
            .await
            .unwrap();
        assert!(sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *failed)
            .await
            .is_err());
        drop(failed);

        // The next writer finds the half-done insert undone and writes normally.
        writer
            .execute(sqlx::query("INSERT INTO t VALUES (3)"))
            .await
            .unwrap();
        assert_eq!(committed(&mut reader).await, 2);
        assert_eq!(writer.healed(), 1);
    }

    /// Polls `write` `polls + 1` times (yielding in between, so SQLite's worker thread gets
    /// on with it) and drops it if it has not finished, as a client that hangs up or a call
    /// reaching its deadline drops it. Returns whether it was cut.
    async fn cut<F: std::future::Future>(polls: u64, write: F) -> bool {
        let mut write = std::pin::pin!(write);
        for _ in 0..=polls {
            if futures::poll!(write.as_mut()).is_ready() {
                return false;
            }
            tokio::task::yield_now().await;
        }
        true
    }

    #[tokio::test]
    async fn a_write_dropped_during_its_begin_does_not_wedge_the_writer() {
        let (_dir, writer, mut reader) = setup().await;
        let mut cut_in_begin = 0;
        for round in 0..100i64 {
            // Cut during its BEGIN (SQLite's worker still runs it), or the transaction it
            // returned is dropped unfinished: either way the connection is left dirty.
            if cut(round.unsigned_abs() % 4, writer.begin()).await {
                cut_in_begin += 1;
            }
            // Single statements and transactions after it commit for real.
            writer
                .execute(sqlx::query("INSERT INTO t VALUES ($1)").bind(round * 2))
                .await
                .unwrap();
            insert_committed(&writer, round * 2 + 1).await;
            assert_eq!(committed(&mut reader).await, (round + 1) * 2);
        }
        assert!(
            cut_in_begin > 0,
            "some writes were cut before their BEGIN returned"
        );
        assert_eq!(writer.healed(), 100);
    }

    #[tokio::test]
    async fn a_write_dropped_during_its_statement_or_commit_is_all_or_nothing() {
        let (_dir, writer, mut reader) = setup().await;
        let mut expected = 0;
        for round in 0..50i64 {
            // Dropped during the statement of a transaction: undone.
            {
                let mut tx = writer.begin().await.unwrap();
                let insert = sqlx::query("INSERT INTO t VALUES ($1)").bind(1000 + round);
                cut(round.unsigned_abs() % 4, insert.execute(&mut *tx)).await;
            }
            // Dropped during its COMMIT: either committed whole or undone whole.
            let mut tx = writer.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES ($1)")
                .bind(round)
                .execute(&mut *tx)
                .await
                .unwrap();
            cut(round.unsigned_abs() % 4, tx.commit()).await;
            // Dropped during an autocommit statement: applied or not, never left open.
            let statement = sqlx::query("INSERT INTO t VALUES ($1)").bind(-1 - round);
            cut(round.unsigned_abs() % 3, writer.execute(statement)).await;
            insert_committed(&writer, 5000 + round).await;
            let seen = committed(&mut reader).await;
            assert!(seen > expected, "the last committed write is visible");
            assert!(seen <= expected + 3, "nothing beyond the writes made");
            expected = seen;
        }
        let stray =
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM t WHERE x >= 1000 AND x < 5000")
                .fetch_one(&mut reader)
                .await
                .unwrap();
        assert_eq!(stray, 0, "no insert of a dropped transaction survived");
    }
}
