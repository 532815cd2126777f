//! Runtimes, brokers and the book of versions in SQL.

use super::*;

#[async_trait::async_trait]
impl BrokerBook for SqlStore {
    async fn register_runtime(&self, id: &str) -> Result<(), StoreError> {
        let (update, insert) = (owned(args![now(), id]), owned(args![id, now()]));
        self.db
            .write(Durability::OnDisk, move |conn| {
                Box::pin(async move {
                    let sql = "UPDATE runtimes SET started_at = $1 WHERE id = $2";
                    if conn.execute(sql, &update).await? == 0 {
                        let sql = "INSERT INTO runtimes (id, started_at) VALUES ($1, $2)";
                        conn.execute(sql, &insert).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn register_broker(&self, name: &str, runtime_id: &str) -> Result<(), StoreError> {
        let update = "UPDATE brokers SET loaded_at = $1, runtime_id = $2 WHERE name = $3";
        if self
            .db
            .execute(
                Durability::OnDisk,
                update,
                owned(args![now(), runtime_id, name]),
            )
            .await?
            == 0
        {
            let insert = "INSERT INTO brokers (name, loaded_at, runtime_id) VALUES ($1, $2, $3)";
            match self
                .db
                .execute(
                    Durability::OnDisk,
                    insert,
                    owned(args![name, now(), runtime_id]),
                )
                .await
            {
                // Another replica registered it at the same moment.
                Ok(_) | Err(StoreError::Exists) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    async fn versions(&self, broker: &str) -> Result<Vec<VersionRecord>, StoreError> {
        self.db
            .query(
                "SELECT broker, version, state, source, error, created_at, decided_at \
                 FROM broker_versions WHERE broker = $1 ORDER BY created_at, version",
                &args![broker],
                |row| {
                    Ok(VersionRecord {
                        broker: get(row, "broker")?,
                        version: get(row, "version")?,
                        state: VersionState::parse(&get::<String>(row, "state")?)?,
                        source: get(row, "source")?,
                        error: get(row, "error")?,
                        created_at: get(row, "created_at")?,
                        decided_at: get(row, "decided_at")?,
                    })
                },
            )
            .await
    }

    async fn current_versions(&self) -> Result<Vec<CurrentVersion>, StoreError> {
        self.db
            .query(
                "SELECT broker, version, since FROM broker_current",
                &[],
                |row| {
                    Ok(CurrentVersion {
                        broker: get(row, "broker")?,
                        version: get(row, "version")?,
                        since: get(row, "since")?,
                    })
                },
            )
            .await
    }

    async fn current_version(&self, broker: &str) -> Result<Option<String>, StoreError> {
        let versions = self
            .db
            .query(
                "SELECT version FROM broker_current WHERE broker = $1",
                &args![broker],
                |row| get(row, "version"),
            )
            .await?;
        Ok(versions.into_iter().next())
    }

    async fn decide_version(&self, record: &VersionRecord) -> Result<(), StoreError> {
        let decision = owned(args![
            &record.broker,
            &record.version,
            record.state.as_str(),
            &record.source,
            record.error.as_deref(),
            record.created_at,
            record.decided_at,
        ]);
        let current = (record.state == VersionState::Accepted)
            .then(|| owned(args![&record.broker, &record.version, record.decided_at]));
        self.db
            .write(Durability::OnDisk, move |conn| {
                Box::pin(async move {
                    conn.execute(
                        "INSERT INTO broker_versions (broker, version, state, source, error, \
                         created_at, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (broker, version) DO UPDATE SET state = excluded.state, \
                         source = excluded.source, error = excluded.error, \
                         decided_at = excluded.decided_at",
                        &decision,
                    )
                    .await?;
                    if let Some(current) = current {
                        conn.execute(
                            "INSERT INTO broker_current (broker, version, since) VALUES ($1, $2, $3) \
                             ON CONFLICT (broker) DO UPDATE SET version = excluded.version",
                            &current,
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn forget_version(&self, broker: &str, version: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                Durability::OnDisk,
                "DELETE FROM broker_versions WHERE broker = $1 AND version = $2",
                owned(args![broker, version]),
            )
            .await?;
        Ok(())
    }

    async fn purge_broker(&self, broker: &str) -> Result<Purged, StoreError> {
        let broker = owned(args![broker]);
        self.db
            .write(Durability::OnDisk, move |conn| {
                Box::pin(async move {
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
                        let deleted = conn.execute(sql, &broker).await?;
                        if let Some(count) = counts.get_mut(i) {
                            *count = deleted;
                        }
                    }
                    let [instances, bindings, operations, kv_keys] = counts;
                    Ok(Purged {
                        instances,
                        bindings,
                        operations,
                        kv_keys,
                    })
                })
            })
            .await
    }
}
