//! The SQL backends: embedded SQLite (one file, WAL journal) and PostgreSQL (shared by several
//! runtime replicas), through one implementation over `sqlx::Any`. Queries use `$N`
//! placeholders and SQL both dialects understand; each backend has its own migrations.
//!
//! Claims and leases are compare-and-set `UPDATE`s on one row, atomic in both databases, so two
//! runtimes never run the same operation.

use super::writer::{WriteTx, Writer};
use super::{
    BindingRecord, CurrentVersion, Effect, InstanceRecord, OperationKind, OperationRecord,
    OperationState, Outcome, Purged, ResourceState, StoreError, VersionRecord, VersionState,
};
use super::{BrokerBook, KvStore, OperationStore, ResourceStore};
use sqlx::any::{AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row};
use std::time::Duration;

use super::now_ms as now;

mod book;
mod kv;
mod operations;
mod resources;
mod rows;

use rows::{apply_effect, binding_row, insert_operation, instance_row, one, operation_row};

/// How every SQLite connection is set up: WAL journal, no fsync per commit (only at
/// checkpoints), a busy timeout for other processes, foreign keys.
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
    PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

/// Connections per runtime: enough for concurrent requests and the background workers.
const MAX_CONNECTIONS: u32 = 16;

/// State in an SQL database.
pub struct SqlStore {
    /// Connections for reads (and, on PostgreSQL, for writes too).
    pool: AnyPool,
    /// Where writes go (see [`Writer`]).
    writer: Writer,
    /// Whether the database is PostgreSQL (concurrent writers: some writes take a lock).
    postgres: bool,
}

fn backend(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            return StoreError::Exists;
        }
    }
    StoreError::Backend(error.to_string())
}

/// The columns of `operations`, in the order [`insert_operation`] binds them.
const OPERATION_COLUMNS: &str = "id, broker, instance_id, binding_id, kind, state, description, \
    guest_data, target_plan, attempts, created_at, updated_at, request, owner, lease_until, \
    broker_version, seq";

impl SqlStore {
    /// Opens (creating a SQLite file if needed) the database at `url` and migrates it.
    ///
    /// # Errors
    /// When the URL is not `sqlite://` or `postgres://`, the database cannot be reached, or a
    /// migration fails.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        if !sqlite && !url.starts_with("postgres:") && !url.starts_with("postgresql:") {
            anyhow::bail!("unsupported state store {url:?}: use sqlite://PATH or postgres://...");
        }
        let url = if sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let options = |connections: u32| {
            AnyPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(30))
                // A local SQLite file does not drop connections: skip the ping per acquire.
                .test_before_acquire(!sqlite)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if sqlite {
                            conn.execute(SQLITE_SETUP).await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = options(MAX_CONNECTIONS).connect(&url).await?;
        if sqlite {
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        } else {
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        }
        let writer = if sqlite {
            Writer::single(&url, SQLITE_SETUP).await?
        } else {
            Writer::Pool(pool.clone())
        };
        Ok(SqlStore {
            pool,
            writer,
            postgres: !sqlite,
        })
    }

    /// Starts a write transaction.
    async fn begin(&self) -> Result<WriteTx<'_>, StoreError> {
        self.writer.begin().await.map_err(backend)
    }

    async fn operations(
        &self,
        sql: &str,
        binds: Binds<'_>,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let mut query = sqlx::query(sql);
        for value in binds {
            query = match value {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter().map(operation_row).collect()
    }
}

/// A bind value for queries built at run time.
enum Bind<'a> {
    Text(Option<&'a str>),
    Int(i64),
}

type Binds<'a> = Vec<Bind<'a>>;

fn get<'r, T: sqlx::Decode<'r, Any> + sqlx::Type<Any>>(
    row: &'r AnyRow,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column).map_err(backend)
}

fn flag(value: Option<i64>) -> Option<bool> {
    value.map(|v| v != 0)
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instance being provisioned by a long operation the guest accepted, due for a poll.
    async fn accepted_operation(store: &SqlStore) -> OperationRecord {
        let instance = InstanceRecord {
            broker: "b".into(),
            instance_id: "i".into(),
            service_id: "s".into(),
            plan_id: "p".into(),
            attributes: "{}".into(),
            parameters: None,
            context: None,
            dashboard_url: None,
            metadata: None,
            maintenance_info: None,
            state: ResourceState::Creating,
            operation_id: Some("op".into()),
        };
        let op = OperationRecord {
            id: "op".into(),
            broker: "b".into(),
            instance_id: "i".into(),
            binding_id: None,
            kind: OperationKind::Provision,
            state: OperationState::InProgress,
            description: None,
            guest_data: None,
            target_plan: None,
            attempts: 1,
            instance_usable: None,
            update_repeatable: None,
            created_at: now(),
            request: None,
            owner: None,
            lease_until: None,
            next_poll_at: None,
            polls: 0,
            broker_version: None,
        };
        store.create_instance(&instance, &op).await.unwrap();
        store
            .accept_operation(&op, "data-0", &Effect::None, 0)
            .await
            .unwrap();
        let due = store.due_polls(now(), 10).await.unwrap();
        assert_eq!(due.len(), 1);
        due.into_iter().next().unwrap()
    }

    #[tokio::test]
    async fn a_claim_on_a_stale_read_fails_so_no_poll_step_runs_twice() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqlStore::open(&url).await.unwrap();
        let read_by_a = accepted_operation(&store).await;
        let read_by_b = read_by_a.clone();
        // Replica B claims, polls once (new data, next poll due at once) and lets go.
        assert!(store
            .claim(&read_by_b, "b", now() + 10_000, now())
            .await
            .unwrap());
        store
            .record_progress(&read_by_b, Some("data-1"), None, 0)
            .await
            .unwrap();
        // Replica A's claim on what it read before that step fails...
        assert!(!store
            .claim(&read_by_a, "a", now() + 10_000, now())
            .await
            .unwrap());
        // ...and succeeds on a fresh read, which carries B's data.
        let fresh = store.due_polls(now(), 10).await.unwrap().remove(0);
        assert_eq!(fresh.guest_data.as_deref(), Some("data-1"));
        assert!(store
            .claim(&fresh, "a", now() + 10_000, now())
            .await
            .unwrap());
    }
}
