//! The `kv` capability's store in SQL.

use super::*;
use crate::store::seal;

#[async_trait::async_trait]
impl KvStore for SqlStore {
    async fn kv_get(&self, broker: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let values: Vec<Vec<u8>> = self
            .db
            .query(
                "SELECT value FROM kv WHERE broker = $1 AND key = $2",
                &args![broker, key],
                |row| get(row, "value"),
            )
            .await?;
        let Some(value) = values.into_iter().next() else {
            return Ok(None);
        };
        let aad = seal::aad("kv", &[broker, key], "value");
        self.open_refreshing(|sealer| sealer.open_bytes(&aad, &value))
            .await
            .map(Some)
    }

    async fn kv_set(
        &self,
        broker: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<bool, StoreError> {
        // The quota counts keys and plain values: sealing's fixed overhead is taken off.
        let size = i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX);
        let quota = i64::try_from(quota).unwrap_or(i64::MAX);
        let sealed = (self.sealer).seal_bytes(&seal::aad("kv", &[broker, key], "value"), value);
        let overhead = i64::try_from(seal::BLOB_OVERHEAD).unwrap_or(0);
        let ids = owned(args![overhead, broker, key]);
        let set = owned(args![broker, key, sealed.as_slice()]);
        // On PostgreSQL a broker's writers take their turns in this process before they take
        // a pooled connection: waiting for the broker's lock while holding a connection, a
        // broker's many concurrent writers would hold the pool the other brokers need.
        let _turn = match &self.db {
            Db::Postgres(_) => Some(self.kv_turn(broker).lock_owned().await),
            Db::Sqlite(_) => None,
        };
        self.db
            .write(Durability::OnDisk, move |conn| {
                Box::pin(async move {
                    if conn.is_postgres() {
                        // Concurrent writers of one broker take turns, so together they cannot
                        // pass its quota (each would otherwise count the others' uncommitted
                        // values as absent). SQLite's writes are serialized already.
                        conn.query(
                            "SELECT pg_advisory_xact_lock(hashtext($1))::text AS locked",
                            &ids[1..2],
                            |_| Ok(()),
                        )
                        .await?;
                    }
                    let used: i64 = conn
                        .query(
                            "SELECT CAST(COALESCE(SUM(LENGTH(key) + LENGTH(value) - $1), 0) AS BIGINT) AS used \
                             FROM kv WHERE broker = $2 AND key <> $3",
                            &ids,
                            |row| get(row, "used"),
                        )
                        .await?
                        .into_iter()
                        .next()
                        .unwrap_or_default();
                    if used.saturating_add(size) > quota {
                        return Ok(false);
                    }
                    // One statement whatever another writer of the same key does meanwhile.
                    conn.execute(
                        "INSERT INTO kv (broker, key, value) VALUES ($1, $2, $3) \
                         ON CONFLICT (broker, key) DO UPDATE SET value = excluded.value",
                        &set,
                    )
                    .await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn kv_delete(&self, broker: &str, key: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                Durability::OnDisk,
                "DELETE FROM kv WHERE broker = $1 AND key = $2",
                owned(args![broker, key]),
            )
            .await?;
        Ok(())
    }

    async fn kv_keys(
        &self,
        broker: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let prefix_len = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
        self.db
            .query(
                "SELECT key FROM kv WHERE broker = $1 AND SUBSTR(key, 1, CAST($2 AS INTEGER)) = $3 \
                 ORDER BY key LIMIT $4",
                &args![broker, prefix_len, prefix, limit],
                |row| get(row, "key"),
            )
            .await
    }
}
