//! The embedded SQLite backend: one file under the data dir, WAL journal, migrations applied
//! at open.

use super::{
    BindingRecord, Effect, InstanceRecord, OperationKind, OperationRecord, OperationState, Outcome,
    ResourceState, StateStore, StoreError,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

/// State in an SQLite database file.
pub struct SqliteStore {
    pool: SqlitePool,
}

fn backend(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            return StoreError::Exists;
        }
    }
    StoreError::Backend(error.to_string())
}

use super::now_ms as now;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn begin(&self) -> Result<Transaction<'_, Sqlite>, StoreError> {
        self.pool.begin().await.map_err(backend)
    }
}

fn instance_row(row: &SqliteRow) -> Result<InstanceRecord, StoreError> {
    Ok(InstanceRecord {
        broker: row.try_get("broker").map_err(backend)?,
        instance_id: row.try_get("instance_id").map_err(backend)?,
        service_id: row.try_get("service_id").map_err(backend)?,
        plan_id: row.try_get("plan_id").map_err(backend)?,
        attributes: row.try_get("attributes").map_err(backend)?,
        parameters: row.try_get("parameters").map_err(backend)?,
        context: row.try_get("context").map_err(backend)?,
        dashboard_url: row.try_get("dashboard_url").map_err(backend)?,
        metadata: row.try_get("metadata").map_err(backend)?,
        maintenance_info: row.try_get("maintenance_info").map_err(backend)?,
        state: ResourceState::parse(row.try_get("state").map_err(backend)?)?,
        operation_id: row.try_get("operation_id").map_err(backend)?,
    })
}

fn binding_row(row: &SqliteRow) -> Result<BindingRecord, StoreError> {
    Ok(BindingRecord {
        broker: row.try_get("broker").map_err(backend)?,
        binding_id: row.try_get("binding_id").map_err(backend)?,
        instance_id: row.try_get("instance_id").map_err(backend)?,
        attributes: row.try_get("attributes").map_err(backend)?,
        result: row.try_get("result").map_err(backend)?,
        state: ResourceState::parse(row.try_get("state").map_err(backend)?)?,
        operation_id: row.try_get("operation_id").map_err(backend)?,
    })
}

fn operation_row(row: &SqliteRow) -> Result<OperationRecord, StoreError> {
    let attempts: i64 = row.try_get("attempts").map_err(backend)?;
    Ok(OperationRecord {
        id: row.try_get("id").map_err(backend)?,
        broker: row.try_get("broker").map_err(backend)?,
        instance_id: row.try_get("instance_id").map_err(backend)?,
        binding_id: row.try_get("binding_id").map_err(backend)?,
        kind: OperationKind::parse(row.try_get("kind").map_err(backend)?)?,
        state: OperationState::parse(row.try_get("state").map_err(backend)?)?,
        description: row.try_get("description").map_err(backend)?,
        guest_data: row.try_get("guest_data").map_err(backend)?,
        target_plan: row.try_get("target_plan").map_err(backend)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        instance_usable: row.try_get("instance_usable").map_err(backend)?,
        update_repeatable: row.try_get("update_repeatable").map_err(backend)?,
        created_at: row.try_get("created_at").map_err(backend)?,
    })
}

async fn insert_operation(
    tx: &mut Transaction<'_, Sqlite>,
    op: &OperationRecord,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO operations (id, broker, instance_id, binding_id, kind, state, description, \
         guest_data, target_plan, attempts, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    )
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
    .execute(&mut **tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Fails with [`StoreError::Changed`] unless exactly one row was touched.
fn one(result: sqlx::sqlite::SqliteQueryResult) -> Result<(), StoreError> {
    if result.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Changed)
    }
}

async fn apply_effect(
    tx: &mut Transaction<'_, Sqlite>,
    op: &OperationRecord,
    effect: &Effect,
) -> Result<(), StoreError> {
    let t = now();
    let (broker, instance) = (&op.broker, &op.instance_id);
    let binding = op.binding_id.as_deref().unwrap_or_default();
    let set_instance = |state: ResourceState| {
        sqlx::query(
            "UPDATE instances SET state = ?, updated_at = ? WHERE broker = ? AND instance_id = ?",
        )
        .bind(state.as_str())
        .bind(t)
        .bind(broker)
        .bind(instance)
    };
    let set_binding = |state: ResourceState| {
        sqlx::query(
            "UPDATE bindings SET state = ?, updated_at = ? WHERE broker = ? AND binding_id = ?",
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
                "UPDATE instances SET state = 'ready', plan_id = ?, \
                 dashboard_url = COALESCE(?, dashboard_url), metadata = COALESCE(?, metadata), \
                 parameters = COALESCE(?, parameters), context = COALESCE(?, context), \
                 maintenance_info = COALESCE(?, maintenance_info), updated_at = ? \
                 WHERE broker = ? AND instance_id = ?",
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
                "UPDATE instances SET dashboard_url = COALESCE(?, dashboard_url), \
                 metadata = COALESCE(?, metadata), updated_at = ? WHERE broker = ? AND instance_id = ?",
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
            sqlx::query("DELETE FROM bindings WHERE broker = ? AND instance_id = ?")
                .bind(broker)
                .bind(instance)
                .execute(&mut **tx)
                .await
                .map_err(backend)?;
            sqlx::query("DELETE FROM instances WHERE broker = ? AND instance_id = ?")
                .bind(broker)
                .bind(instance)
                .execute(&mut **tx)
                .await
        }
        Effect::BindingReady { result } => {
            sqlx::query(
                "UPDATE bindings SET state = 'ready', result = ?, updated_at = ? WHERE broker = ? AND binding_id = ?",
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
            sqlx::query("DELETE FROM bindings WHERE broker = ? AND binding_id = ?")
                .bind(broker)
                .bind(binding)
                .execute(&mut **tx)
                .await
        }
    };
    one(result.map_err(backend)?)
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    async fn instance(
        &self,
        broker: &str,
        instance_id: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        sqlx::query("SELECT * FROM instances WHERE broker = ? AND instance_id = ?")
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
        sqlx::query("SELECT * FROM bindings WHERE broker = ? AND binding_id = ?")
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
        sqlx::query("SELECT * FROM operations WHERE broker = ? AND id = ?")
            .bind(broker)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(operation_row)
            .transpose()
    }

    async fn latest_operation(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> Result<Option<OperationRecord>, StoreError> {
        sqlx::query(
            "SELECT * FROM operations WHERE broker = ? AND instance_id = ? AND binding_id IS ? \
             ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )
        .bind(broker)
        .bind(instance_id)
        .bind(binding_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(operation_row)
        .transpose()
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
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
             operation_id, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
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
                "UPDATE bindings SET state = ?, operation_id = ?, updated_at = ? \
                 WHERE broker = ? AND binding_id = ? AND state IN ('ready', 'failed')",
            )
            .bind(state.as_str())
            .bind(&op.id)
            .bind(t)
            .bind(&op.broker)
            .bind(binding),
            None => sqlx::query(
                "UPDATE instances SET state = ?, operation_id = ?, updated_at = ? \
                 WHERE broker = ? AND instance_id = ? AND state IN ('ready', 'failed')",
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
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "UPDATE operations SET guest_data = ?, updated_at = ? \
             WHERE broker = ? AND id = ? AND state = 'in progress'",
        )
        .bind(guest_data)
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
        broker: &str,
        id: &str,
        guest_data: Option<&str>,
        description: Option<&str>,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE operations SET guest_data = COALESCE(?, guest_data), description = ?, updated_at = ? \
             WHERE broker = ? AND id = ? AND state = 'in progress'",
        )
        .bind(guest_data)
        .bind(description)
        .bind(now())
        .bind(broker)
        .bind(id)
        .execute(&self.pool)
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
            "UPDATE operations SET state = ?, description = ?, instance_usable = ?, \
             update_repeatable = ?, updated_at = ? \
             WHERE broker = ? AND id = ? AND state = 'in progress'",
        )
        .bind(outcome.state.as_str())
        .bind(&outcome.description)
        .bind(outcome.instance_usable)
        .bind(outcome.update_repeatable)
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
}
