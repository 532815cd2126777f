//! The SQL backends: embedded SQLite (one file, WAL journal) and PostgreSQL (shared by several
//! runtime replicas), through one implementation over `sqlx::Any`. Queries use `$N`
//! placeholders and SQL both dialects understand; each backend has its own migrations.
//!
//! Claims and leases are compare-and-set `UPDATE`s on one row, atomic in both databases, so two
//! runtimes never run the same operation.

use super::writer::{WriteTx, Writer};
use super::{
    BindingRecord, CurrentVersion, Effect, InstanceRecord, OperationKind, OperationRecord,
    OperationState, Outcome, Purged, ResourceState, StateStore, StoreError, VersionRecord,
    VersionState,
};
use sqlx::any::{AnyPoolOptions, AnyQueryResult, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row};
use std::time::Duration;

use super::now_ms as now;

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

fn instance_row(row: &AnyRow) -> Result<InstanceRecord, StoreError> {
    Ok(InstanceRecord {
        broker: get(row, "broker")?,
        instance_id: get(row, "instance_id")?,
        service_id: get(row, "service_id")?,
        plan_id: get(row, "plan_id")?,
        attributes: get(row, "attributes")?,
        parameters: get(row, "parameters")?,
        context: get(row, "context")?,
        dashboard_url: get(row, "dashboard_url")?,
        metadata: get(row, "metadata")?,
        maintenance_info: get(row, "maintenance_info")?,
        state: ResourceState::parse(&get::<String>(row, "state")?)?,
        operation_id: get(row, "operation_id")?,
    })
}

fn binding_row(row: &AnyRow) -> Result<BindingRecord, StoreError> {
    Ok(BindingRecord {
        broker: get(row, "broker")?,
        binding_id: get(row, "binding_id")?,
        instance_id: get(row, "instance_id")?,
        attributes: get(row, "attributes")?,
        result: get(row, "result")?,
        state: ResourceState::parse(&get::<String>(row, "state")?)?,
        operation_id: get(row, "operation_id")?,
    })
}

fn operation_row(row: &AnyRow) -> Result<OperationRecord, StoreError> {
    Ok(OperationRecord {
        id: get(row, "id")?,
        broker: get(row, "broker")?,
        instance_id: get(row, "instance_id")?,
        binding_id: get(row, "binding_id")?,
        kind: OperationKind::parse(&get::<String>(row, "kind")?)?,
        state: OperationState::parse(&get::<String>(row, "state")?)?,
        description: get(row, "description")?,
        guest_data: get(row, "guest_data")?,
        target_plan: get(row, "target_plan")?,
        attempts: count(get(row, "attempts")?),
        instance_usable: flag(get(row, "instance_usable")?),
        update_repeatable: flag(get(row, "update_repeatable")?),
        created_at: get(row, "created_at")?,
        request: get(row, "request")?,
        owner: get(row, "owner")?,
        lease_until: get(row, "lease_until")?,
        next_poll_at: get(row, "next_poll_at")?,
        polls: count(get(row, "polls")?),
        broker_version: get(row, "broker_version")?,
    })
}

async fn insert_operation(tx: &mut WriteTx<'_>, op: &OperationRecord) -> Result<(), StoreError> {
    // `seq` orders the operations of one resource even within one millisecond.
    let sql = format!(
        "INSERT INTO operations ({OPERATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14, $15, $16, (SELECT COALESCE(MAX(seq), 0) + 1 FROM operations))"
    );
    sqlx::query(&sql)
        .bind(&op.id)
        .bind(&op.broker)
        .bind(&op.instance_id)
        .bind(&op.binding_id)
        .bind(op.kind.as_str())
        .bind(op.state.as_str())
        .bind(&op.description)
        .bind(&op.guest_data)
        .bind(&op.target_plan)
        .bind(i64::from(op.attempts))
        .bind(op.created_at)
        .bind(now())
        .bind(&op.request)
        .bind(&op.owner)
        .bind(op.lease_until)
        .bind(&op.broker_version)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Fails with [`StoreError::Changed`] unless exactly one row was touched.
fn one(result: AnyQueryResult) -> Result<(), StoreError> {
    if result.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Changed)
    }
}

async fn apply_effect(
    tx: &mut WriteTx<'_>,
    op: &OperationRecord,
    effect: &Effect,
) -> Result<(), StoreError> {
    let t = now();
    let (broker, instance) = (&op.broker, &op.instance_id);
    let binding = op.binding_id.as_deref().unwrap_or_default();
    let set_instance = |state: ResourceState| {
        sqlx::query("UPDATE instances SET state = $1, updated_at = $2 WHERE broker = $3 AND instance_id = $4")
            .bind(state.as_str())
            .bind(t)
            .bind(broker)
            .bind(instance)
    };
    let set_binding = |state: ResourceState| {
        sqlx::query(
            "UPDATE bindings SET state = $1, updated_at = $2 WHERE broker = $3 AND binding_id = $4",
        )
        .bind(state.as_str())
        .bind(t)
        .bind(broker)
        .bind(binding)
    };
    let result = match effect {
        Effect::None => return Ok(()),
        Effect::InstanceReady { plan_id, dashboard_url, metadata, parameters, context, maintenance_info } => {
            sqlx::query(
                "UPDATE instances SET state = 'ready', plan_id = $1, \
                 dashboard_url = COALESCE($2, dashboard_url), metadata = COALESCE($3, metadata), \
                 parameters = COALESCE($4, parameters), context = COALESCE($5, context), \
                 maintenance_info = COALESCE($6, maintenance_info), updated_at = $7 \
                 WHERE broker = $8 AND instance_id = $9",
            )
            .bind(plan_id)
            .bind(dashboard_url)
            .bind(metadata)
            .bind(parameters)
            .bind(context)
            .bind(maintenance_info)
            .bind(t)
            .bind(broker)
            .bind(instance)
            .execute(&mut **tx)
            .await
        }
        Effect::InstanceAnnotated { dashboard_url, metadata } => {
            sqlx::query(
                "UPDATE instances SET dashboard_url = COALESCE($1, dashboard_url), \
                 metadata = COALESCE($2, metadata), updated_at = $3 WHERE broker = $4 AND instance_id = $5",
            )
            .bind(dashboard_url)
            .bind(metadata)
            .bind(t)
            .bind(broker)
            .bind(instance)
            .execute(&mut **tx)
            .await
        }
        Effect::InstanceRestored => set_instance(ResourceState::Ready).execute(&mut **tx).await,
        Effect::InstanceFailed => set_instance(ResourceState::Failed).execute(&mut **tx).await,
        Effect::InstanceDeleted => {
            sqlx::query("DELETE FROM bindings WHERE broker = $1 AND instance_id = $2")
                .bind(broker)
                .bind(instance)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
            sqlx::query("DELETE FROM instances WHERE broker = $1 AND instance_id = $2")
                .bind(broker)
                .bind(instance)
                .execute(&mut **tx)
                .await
        }
        Effect::BindingReady { result } => {
            sqlx::query(
                "UPDATE bindings SET state = 'ready', result = $1, updated_at = $2 \
                 WHERE broker = $3 AND binding_id = $4",
            )
            .bind(result)
            .bind(t)
            .bind(broker)
            .bind(binding)
            .execute(&mut **tx)
            .await
        }
        Effect::BindingRestored => set_binding(ResourceState::Ready).execute(&mut **tx).await,
        Effect::BindingDeleted => {
            sqlx::query("DELETE FROM bindings WHERE broker = $1 AND binding_id = $2")
                .bind(broker)
                .bind(binding)
                .execute(&mut **tx)
                .await
        }
    };
    // The effect touches no row when its resource is gone already (deleted while the
    // operation ran): the operation still ends, with nothing left to change.
    result.map_err(backend)?;
    Ok(())
}

#[async_trait::async_trait]
impl StateStore for SqlStore {
    async fn instance(
        &self,
        broker: &str,
        instance_id: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        sqlx::query("SELECT * FROM instances WHERE broker = $1 AND instance_id = $2")
            .bind(broker)
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(instance_row)
            .transpose()
    }

    async fn binding(
        &self,
        broker: &str,
        binding_id: &str,
    ) -> Result<Option<BindingRecord>, StoreError> {
        sqlx::query("SELECT * FROM bindings WHERE broker = $1 AND binding_id = $2")
            .bind(broker)
            .bind(binding_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(binding_row)
            .transpose()
    }

    async fn operation(
        &self,
        broker: &str,
        id: &str,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let binds = vec![Bind::Text(Some(broker)), Bind::Text(Some(id))];
        let ops = self
            .operations(
                "SELECT * FROM operations WHERE broker = $1 AND id = $2",
                binds,
            )
            .await?;
        Ok(ops.into_iter().next())
    }

    async fn latest_operation(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let binds = vec![
            Bind::Text(Some(broker)),
            Bind::Text(Some(instance_id)),
            Bind::Text(binding_id),
        ];
        let ops = self
            .operations(
                "SELECT * FROM operations WHERE broker = $1 AND instance_id = $2 \
                 AND binding_id IS NOT DISTINCT FROM $3 ORDER BY seq DESC LIMIT 1",
                binds,
            )
            .await?;
        Ok(ops.into_iter().next())
    }

    async fn create_instance(
        &self,
        i: &InstanceRecord,
        op: &OperationRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let t = now();
        sqlx::query(
            "INSERT INTO instances (broker, instance_id, service_id, plan_id, attributes, parameters, \
             context, dashboard_url, metadata, maintenance_info, state, operation_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&i.broker)
        .bind(&i.instance_id)
        .bind(&i.service_id)
        .bind(&i.plan_id)
        .bind(&i.attributes)
        .bind(&i.parameters)
        .bind(&i.context)
        .bind(&i.dashboard_url)
        .bind(&i.metadata)
        .bind(&i.maintenance_info)
        .bind(i.state.as_str())
        .bind(&op.id)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_operation(&mut tx, op).await?;
        tx.commit().await.map_err(backend)
    }

    async fn create_binding(
        &self,
        b: &BindingRecord,
        op: &OperationRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let t = now();
        sqlx::query(
            "INSERT INTO bindings (broker, binding_id, instance_id, attributes, result, state, \
             operation_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&b.broker)
        .bind(&b.binding_id)
        .bind(&b.instance_id)
        .bind(&b.attributes)
        .bind(&b.result)
        .bind(b.state.as_str())
        .bind(&op.id)
        .bind(t)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        insert_operation(&mut tx, op).await?;
        tx.commit().await.map_err(backend)
    }

    async fn start_operation(
        &self,
        op: &OperationRecord,
        state: ResourceState,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let t = now();
        // Only a resource that is ready (or failed, for deletes) may start an operation: this
        // is the one-operation-at-a-time guard, checked and taken atomically.
        let result = match &op.binding_id {
            Some(binding) => sqlx::query(
                "UPDATE bindings SET state = $1, operation_id = $2, updated_at = $3 \
                 WHERE broker = $4 AND binding_id = $5 AND state IN ('ready', 'failed')",
            )
            .bind(state.as_str())
            .bind(&op.id)
            .bind(t)
            .bind(&op.broker)
            .bind(binding),
            None => sqlx::query(
                "UPDATE instances SET state = $1, operation_id = $2, updated_at = $3 \
                 WHERE broker = $4 AND instance_id = $5 AND state IN ('ready', 'failed')",
            )
            .bind(state.as_str())
            .bind(&op.id)
            .bind(t)
            .bind(&op.broker)
            .bind(&op.instance_id),
        }
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        one(result)?;
        insert_operation(&mut tx, op).await?;
        tx.commit().await.map_err(backend)
    }

    async fn accept_operation(
        &self,
        op: &OperationRecord,
        guest_data: &str,
        effect: &Effect,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "UPDATE operations SET guest_data = $1, next_poll_at = $2, owner = NULL, lease_until = NULL, \
             updated_at = $3 WHERE broker = $4 AND id = $5 AND state = 'in progress'",
        )
        .bind(guest_data)
        .bind(next_poll_at)
        .bind(now())
        .bind(&op.broker)
        .bind(&op.id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        one(result)?;
        apply_effect(&mut tx, op, effect).await?;
        tx.commit().await.map_err(backend)
    }

    async fn record_progress(
        &self,
        op: &OperationRecord,
        guest_data: Option<&str>,
        description: Option<&str>,
        next_poll_at: i64,
    ) -> Result<(), StoreError> {
        let result = self.writer.execute(sqlx::query(
            "UPDATE operations SET guest_data = COALESCE($1, guest_data), description = $2, \
             next_poll_at = $3, polls = polls + 1, owner = NULL, lease_until = NULL, updated_at = $4 \
             WHERE broker = $5 AND id = $6 AND state = 'in progress'",
        )
        .bind(guest_data)
        .bind(description)
        .bind(next_poll_at)
        .bind(now())
        .bind(&op.broker)
        .bind(&op.id)
        )
        .await
        .map_err(backend)?;
        one(result)
    }

    async fn finish_operation(
        &self,
        op: &OperationRecord,
        outcome: &Outcome,
        effect: &Effect,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "UPDATE operations SET state = $1, description = $2, instance_usable = $3, \
             update_repeatable = $4, owner = NULL, lease_until = NULL, updated_at = $5 \
             WHERE broker = $6 AND id = $7 AND state = 'in progress'",
        )
        .bind(outcome.state.as_str())
        .bind(&outcome.description)
        .bind(outcome.instance_usable.map(i64::from))
        .bind(outcome.update_repeatable.map(i64::from))
        .bind(now())
        .bind(&op.broker)
        .bind(&op.id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        one(result)?;
        apply_effect(&mut tx, op, effect).await?;
        tx.commit().await.map_err(backend)
    }

    async fn claim(
        &self,
        op: &OperationRecord,
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .writer
            .execute(
                sqlx::query(
                    "UPDATE operations SET owner = $1, lease_until = $2 WHERE id = $3 \
                     AND state = 'in progress' AND polls = $4 AND next_poll_at <= $5 \
                     AND (owner IS NULL OR owner = $6 OR lease_until < $7)",
                )
                .bind(owner)
                .bind(lease_until)
                .bind(&op.id)
                .bind(i64::from(op.polls))
                .bind(now)
                .bind(owner)
                .bind(now),
            )
            .await
            .map_err(backend)?;
        Ok(result.rows_affected() == 1)
    }

    async fn claim_retry(
        &self,
        op: &OperationRecord,
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let result = self
            .writer
            .execute(
                sqlx::query(
                    "UPDATE operations SET owner = $1, lease_until = $2, attempts = attempts + 1 \
                     WHERE id = $3 AND state = 'in progress' AND guest_data IS NULL \
                     AND attempts = $4 AND (owner IS NULL OR owner = $5 OR lease_until < $6)",
                )
                .bind(owner)
                .bind(lease_until)
                .bind(&op.id)
                .bind(i64::from(op.attempts))
                .bind(owner)
                .bind(now),
            )
            .await
            .map_err(backend)?;
        Ok(result.rows_affected() == 1)
    }

    async fn renew_leases(&self, owner: &str, lease_until: i64) -> Result<(), StoreError> {
        self.writer.execute(sqlx::query(
            "UPDATE operations SET lease_until = $1 WHERE owner = $2 AND state = 'in progress'",
        )
        .bind(lease_until)
        .bind(owner)
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn due_polls(&self, now: i64, limit: i64) -> Result<Vec<OperationRecord>, StoreError> {
        let binds = vec![Bind::Int(now), Bind::Int(now), Bind::Int(limit)];
        self.operations(
            "SELECT * FROM operations WHERE state = 'in progress' AND guest_data IS NOT NULL \
             AND next_poll_at <= $1 AND (owner IS NULL OR lease_until < $2) \
             ORDER BY next_poll_at LIMIT $3",
            binds,
        )
        .await
    }

    async fn orphaned(
        &self,
        now: i64,
        dead_owner: Option<&str>,
        started_at: i64,
        limit: i64,
    ) -> Result<Vec<OperationRecord>, StoreError> {
        let binds = vec![
            Bind::Int(now),
            Bind::Text(dead_owner),
            Bind::Int(started_at),
            Bind::Int(limit),
        ];
        self.operations(
            "SELECT * FROM operations WHERE state = 'in progress' AND guest_data IS NULL \
             AND (owner IS NULL OR lease_until < $1 OR (owner = $2 AND created_at < $3)) \
             ORDER BY seq LIMIT $4",
            binds,
        )
        .await
    }

    async fn register_runtime(&self, id: &str) -> Result<(), StoreError> {
        let updated = self
            .writer
            .execute(
                sqlx::query("UPDATE runtimes SET started_at = $1 WHERE id = $2")
                    .bind(now())
                    .bind(id),
            )
            .await
            .map_err(backend)?;
        if updated.rows_affected() == 0 {
            self.writer
                .execute(
                    sqlx::query("INSERT INTO runtimes (id, started_at) VALUES ($1, $2)")
                        .bind(id)
                        .bind(now()),
                )
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn register_broker(&self, name: &str, runtime_id: &str) -> Result<(), StoreError> {
        let updated = self
            .writer
            .execute(
                sqlx::query("UPDATE brokers SET loaded_at = $1, runtime_id = $2 WHERE name = $3")
                    .bind(now())
                    .bind(runtime_id)
                    .bind(name),
            )
            .await
            .map_err(backend)?;
        if updated.rows_affected() == 0 {
            let inserted = self
                .writer
                .execute(
                    sqlx::query(
                        "INSERT INTO brokers (name, loaded_at, runtime_id) VALUES ($1, $2, $3)",
                    )
                    .bind(name)
                    .bind(now())
                    .bind(runtime_id),
                )
                .await
                .map_err(backend);
            match inserted {
                // Another replica registered it at the same moment.
                Ok(_) | Err(StoreError::Exists) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    async fn kv_get(&self, broker: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM kv WHERE broker = $1 AND key = $2")
            .bind(broker)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(|r| get::<Vec<u8>>(r, "value")).transpose()
    }

    async fn kv_set(
        &self,
        broker: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        if self.postgres {
            // Concurrent writers of one broker take turns, so together they cannot pass its
            // quota (each would otherwise count the others' uncommitted values as absent).
            // SQLite's writes are serialized already.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::text AS locked")
                .bind(broker)
                .fetch_one(&mut *tx)
                .await
                .map_err(backend)?;
        }
        let used: i64 = sqlx::query(
            "SELECT COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) AS used FROM kv \
             WHERE broker = $1 AND key <> $2",
        )
        .bind(broker)
        .bind(key)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)
        .and_then(|row| get(&row, "used"))?;
        let wanted =
            used.saturating_add(i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX));
        if wanted > i64::try_from(quota).unwrap_or(i64::MAX) {
            return Ok(false);
        }
        // One statement whatever another writer of the same key does meanwhile.
        sqlx::query(
            "INSERT INTO kv (broker, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (broker, key) DO UPDATE SET value = excluded.value",
        )
        .bind(broker)
        .bind(key)
        .bind(value.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn kv_delete(&self, broker: &str, key: &str) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query("DELETE FROM kv WHERE broker = $1 AND key = $2")
                    .bind(broker)
                    .bind(key),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn kv_keys(
        &self,
        broker: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let prefix_len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "SELECT key FROM kv WHERE broker = $1 AND SUBSTR(key, 1, CAST($2 AS INTEGER)) = $3 ORDER BY key LIMIT $4",
        )
        .bind(broker)
        .bind(prefix_len)
        .bind(prefix)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(|r| get::<String>(r, "key")).collect()
    }

    async fn plans_in_use(&self, broker: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT plan_id FROM instances WHERE broker = $1")
            .bind(broker)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(|r| get::<String>(r, "plan_id")).collect()
    }

    async fn count_instances(&self, broker: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM instances WHERE broker = $1")
            .bind(broker)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
    }

    async fn versions(&self, broker: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT broker, version, state, source, error, created_at, decided_at \
             FROM broker_versions WHERE broker = $1 ORDER BY created_at, version",
        )
        .bind(broker)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(VersionRecord {
                    broker: get(row, "broker")?,
                    version: get(row, "version")?,
                    state: VersionState::parse(&get::<String>(row, "state")?)?,
                    source: get(row, "source")?,
                    error: get(row, "error")?,
                    created_at: get(row, "created_at")?,
                    decided_at: get(row, "decided_at")?,
                })
            })
            .collect()
    }

    async fn current_versions(&self) -> Result<Vec<CurrentVersion>, StoreError> {
        let rows = sqlx::query("SELECT broker, version, since FROM broker_current")
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(CurrentVersion {
                    broker: get(row, "broker")?,
                    version: get(row, "version")?,
                    since: get(row, "since")?,
                })
            })
            .collect()
    }

    async fn decide_version(&self, record: &VersionRecord) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO broker_versions (broker, version, state, source, error, created_at, decided_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (broker, version) DO UPDATE SET \
             state = excluded.state, source = excluded.source, error = excluded.error, \
             decided_at = excluded.decided_at",
        )
        .bind(&record.broker)
        .bind(&record.version)
        .bind(record.state.as_str())
        .bind(&record.source)
        .bind(record.error.as_deref())
        .bind(record.created_at)
        .bind(record.decided_at)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if record.state == VersionState::Accepted {
            sqlx::query(
                "INSERT INTO broker_current (broker, version, since) VALUES ($1, $2, $3) \
                 ON CONFLICT (broker) DO UPDATE SET version = excluded.version",
            )
            .bind(&record.broker)
            .bind(&record.version)
            .bind(record.decided_at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn forget_version(&self, broker: &str, version: &str) -> Result<(), StoreError> {
        self.writer
            .execute(
                sqlx::query("DELETE FROM broker_versions WHERE broker = $1 AND version = $2")
                    .bind(broker)
                    .bind(version),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn purge_broker(&self, broker: &str) -> Result<Purged, StoreError> {
        let mut tx = self.begin().await?;
        let mut counts = [0u64; 4];
        let tables = [
            "DELETE FROM instances WHERE broker = $1",
            "DELETE FROM bindings WHERE broker = $1",
            "DELETE FROM operations WHERE broker = $1",
            "DELETE FROM kv WHERE broker = $1",
            "DELETE FROM broker_versions WHERE broker = $1",
            "DELETE FROM broker_current WHERE broker = $1",
            "DELETE FROM brokers WHERE name = $1",
        ];
        for (i, sql) in tables.iter().enumerate() {
            let done = sqlx::query(sql)
                .bind(broker)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            if let Some(count) = counts.get_mut(i) {
                *count = done.rows_affected();
            }
        }
        tx.commit().await.map_err(backend)?;
        let [instances, bindings, operations, kv_keys] = counts;
        Ok(Purged {
            instances,
            bindings,
            operations,
            kv_keys,
        })
    }

    async fn count_in_progress(&self, broker: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM operations WHERE broker = $1 AND state = 'in progress'",
        )
        .bind(broker)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
    }
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
