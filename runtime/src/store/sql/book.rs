//! Runtimes, brokers and the book of versions in SQL.

use super::*;

#[async_trait::async_trait]
impl BrokerBook for SqlStore {
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

    async fn current_version(&self, broker: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT version FROM broker_current WHERE broker = $1")
            .bind(broker)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(|r| get::<String>(r, "version"))
            .transpose()
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
}
