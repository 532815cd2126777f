//! The operator's view of the store in SQL: a ping and the counts per broker.

use super::*;

#[async_trait::async_trait]
impl StoreHealth for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .query("SELECT CAST(1 AS BIGINT) AS n", &[], |row| {
                get::<i64>(row, "n")
            })
            .await
            .map(drop)
    }

    async fn census(&self) -> Result<Census, StoreError> {
        let per_broker = |table: &'static str| async move {
            let sql = match table {
                "instances" => "SELECT broker, COUNT(*) AS n FROM instances GROUP BY broker",
                _ => "SELECT broker, COUNT(*) AS n FROM bindings GROUP BY broker",
            };
            self.db
                .query(sql, &[], |row| {
                    let n = get::<i64>(row, "n")?;
                    Ok((get::<String>(row, "broker")?, u64::try_from(n).unwrap_or(0)))
                })
                .await
        };
        let instances = per_broker("instances").await?;
        let bindings = per_broker("bindings").await?;
        let operations = self
            .db
            .query(
                "SELECT broker, kind, state, COUNT(*) AS n FROM operations \
                 GROUP BY broker, kind, state",
                &[],
                |row| {
                    let n = get::<i64>(row, "n")?;
                    Ok((
                        get::<String>(row, "broker")?,
                        OperationKind::parse(&get::<String>(row, "kind")?)?,
                        OperationState::parse(&get::<String>(row, "state")?)?,
                        u64::try_from(n).unwrap_or(0),
                    ))
                },
            )
            .await?;
        Ok(Census {
            instances,
            bindings,
            operations,
        })
    }

    fn metrics(&self) -> crate::telemetry::metrics::StoreMetrics {
        self.db.metrics().clone()
    }
}
