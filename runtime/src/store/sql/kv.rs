//! The `kv` capability's store in SQL.

use super::*;

#[async_trait::async_trait]
impl KvStore for SqlStore {
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
}
