//! Operations in SQL: outcomes, progress, claims and leases (compare-and-set updates).

use super::*;

#[async_trait::async_trait]
impl OperationStore for SqlStore {
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
