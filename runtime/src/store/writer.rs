//! Where the SQL store writes. PostgreSQL takes concurrent writers: writes use the pool. SQLite
//! admits one writer at a time: writes go through one connection the runtime holds itself,
//! behind an async lock, so writers queue in the runtime instead of colliding on the file lock
//! and sleeping in SQLite's busy handler (tens of milliseconds per collision under load), and no
//! pool pings the connection between two writes.

use sqlx::any::{AnyArguments, AnyQueryResult};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Mutex, MutexGuard};

/// The write side of a store.
pub enum Writer {
    /// Writes through a pool (PostgreSQL).
    Pool(AnyPool),
    /// Writes through one connection (SQLite).
    Single {
        /// The connection.
        conn: Mutex<AnyConnection>,
        /// Set when a transaction was dropped unfinished: the next writer rolls it back first.
        dirty: AtomicBool,
    },
}

/// A write transaction; dropped without [`WriteTx::commit`], it is rolled back.
pub enum WriteTx<'a> {
    /// On a pooled connection (sqlx rolls back on drop).
    Pooled(Option<Transaction<'a, Any>>),
    /// On the single writer connection.
    Single {
        /// The connection, held for the whole transaction.
        conn: MutexGuard<'a, AnyConnection>,
        /// Whether the transaction is still open.
        open: bool,
        /// The writer's flag for an unfinished transaction.
        dirty: &'a AtomicBool,
    },
}

impl Writer {
    /// One connection to the SQLite database at `url`, set up like the read pool's.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub async fn single(url: &str, setup: &str) -> Result<Self, sqlx::Error> {
        let mut conn = AnyConnection::connect(url).await?;
        conn.execute(setup).await?;
        Ok(Writer::Single {
            conn: Mutex::new(conn),
            dirty: AtomicBool::new(false),
        })
    }

    /// The single connection, locked, with any unfinished transaction rolled back.
    async fn lock<'a>(
        conn: &'a Mutex<AnyConnection>,
        dirty: &AtomicBool,
    ) -> Result<MutexGuard<'a, AnyConnection>, sqlx::Error> {
        let mut guard = conn.lock().await;
        if dirty.swap(false, Ordering::AcqRel) {
            // Fails harmlessly when nothing is left to undo (the transaction was dropped while
            // its COMMIT went through, or SQLite already rolled it back); any other trouble
            // shows in the BEGIN or statement that follows.
            if let Err(error) = guard.execute("ROLLBACK").await {
                tracing::debug!("rollback of an unfinished write: {error}");
            }
        }
        Ok(guard)
    }

    /// Starts a write transaction.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn begin(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        match self {
            Writer::Pool(pool) => Ok(WriteTx::Pooled(Some(pool.begin().await?))),
            Writer::Single { conn, dirty } => {
                let mut conn = Self::lock(conn, dirty).await?;
                conn.execute("BEGIN IMMEDIATE").await?;
                Ok(WriteTx::Single {
                    conn,
                    open: true,
                    dirty,
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
            Writer::Single { conn, dirty } => {
                let mut conn = Self::lock(conn, dirty).await?;
                query.execute(&mut *conn).await
            }
        }
    }
}

impl WriteTx<'_> {
    /// Commits the transaction.
    ///
    /// # Errors
    /// When the database fails (the transaction is then rolled back).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        match &mut self {
            WriteTx::Pooled(tx) => match tx.take() {
                Some(tx) => tx.commit().await,
                None => Ok(()),
            },
            WriteTx::Single { conn, open, .. } => {
                conn.execute("COMMIT").await?;
                *open = false;
                Ok(())
            }
        }
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if let WriteTx::Single {
            open: true, dirty, ..
        } = self
        {
            dirty.store(true, Ordering::Release);
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

    async fn count(writer: &Writer) -> i64 {
        let Writer::Single { conn, dirty } = writer else {
            unreachable!("a single writer")
        };
        let mut conn = Writer::lock(conn, dirty).await.unwrap();
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_transaction_dropped_unfinished_is_rolled_back_and_the_writer_goes_on() {
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

        let mut committed = writer.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *committed)
            .await
            .unwrap();
        committed.commit().await.unwrap();

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
        assert_eq!(count(&writer).await, 1);
        writer
            .execute(sqlx::query("INSERT INTO t VALUES (3)"))
            .await
            .unwrap();
        assert_eq!(count(&writer).await, 2);
    }
}
