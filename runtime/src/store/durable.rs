//! Durable before the answer, with group commit, on SQLite.
//!
//! The SQLite connections run with `synchronous = NORMAL`: a `COMMIT` writes its frames to the
//! WAL file but does not wait for the disk. Every write then waits here until an fsync of the
//! WAL that started after its `COMMIT` returned has finished, so nothing is answered before its
//! record is on disk. The fsync runs off the write lock and covers every commit made before it
//! started: while one runs, the next writers queue, and one fsync then serves them all (group
//! commit). Checkpoints sync the database file before the WAL is reset (SQLite's own rule in
//! WAL mode), so a record is durable in the WAL or in the database at every moment.
//!
//! **Cancellation.** A write dropped while it waits has still committed; its record becomes
//! durable with the next fsync (or checkpoint). Dropping the writer that runs an fsync leaves
//! the fsync to finish on its blocking thread; the next waiter runs another.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes committed SQLite writes durable, many at a time.
pub struct WalSync {
    /// The database's WAL file.
    wal: PathBuf,
    /// Commits made so far (a commit's ticket is the count after it).
    committed: AtomicU64,
    /// The highest ticket known to be on disk.
    synced: tokio::sync::watch::Sender<u64>,
    /// One fsync at a time: later writers queue behind it and share the next one.
    turn: tokio::sync::Mutex<()>,
    /// Fsyncs run, for tests and logs.
    fsyncs: AtomicU64,
}

impl WalSync {
    /// Durability for the SQLite database at `database` (its WAL is `DATABASE-wal`).
    pub fn new(database: &std::path::Path) -> Self {
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            committed: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(0),
            turn: tokio::sync::Mutex::new(()),
            fsyncs: AtomicU64::new(0),
        }
    }

    /// The ticket of a commit that has just returned.
    pub fn ticket(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Waits until the commit of `ticket` (and every one before it) is on disk.
    ///
    /// # Errors
    /// When the WAL cannot be synced.
    pub async fn durable(&self, ticket: u64) -> std::io::Result<()> {
        loop {
            if *self.synced.borrow() >= ticket {
                return Ok(());
            }
            let _turn = self.turn.lock().await;
            if *self.synced.borrow() >= ticket {
                return Ok(());
            }
            // Every commit counted so far has returned: its frames are in the WAL file.
            let covered = self.committed.load(Ordering::Acquire);
            let wal = self.wal.clone();
            tokio::task::spawn_blocking(move || sync_file(&wal))
                .await
                .map_err(std::io::Error::other)??;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            self.synced.send_if_modified(|synced| {
                let newer = covered > *synced;
                *synced = (*synced).max(covered);
                newer
            });
        }
    }

    /// How many fsyncs ran.
    #[cfg(test)]
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

/// Syncs `path`'s data to disk (a missing WAL has nothing to sync).
fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file.sync_data(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_fsync_serves_every_commit_made_before_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("d.db");
        std::fs::write(dir.path().join("d.db-wal"), b"frames").unwrap();
        let sync = Arc::new(WalSync::new(&database));
        // A first commit made durable on its own.
        sync.durable(sync.ticket()).await.unwrap();
        assert_eq!(sync.fsyncs(), 1);
        assert!(*sync.synced.borrow() >= 1);
        // While an fsync runs (its turn held here), 20 writers commit and wait.
        let running = sync.turn.lock().await;
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let ticket = sync.ticket();
                let sync = sync.clone();
                tokio::spawn(async move { sync.durable(ticket).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(sync.fsyncs(), 1, "nobody synced while the turn was taken");
        drop(running);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(sync.fsyncs(), 2, "one fsync for the 20 commits");
        assert_eq!(*sync.synced.borrow(), 21);
    }

    #[tokio::test]
    async fn a_missing_wal_has_nothing_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        let sync = WalSync::new(&dir.path().join("none.db"));
        sync.durable(sync.ticket()).await.unwrap();
        assert_eq!(sync.fsyncs(), 1);
    }
}
