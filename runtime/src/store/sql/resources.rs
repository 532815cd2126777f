//! Instances and bindings in SQL.

use super::*;

#[async_trait::async_trait]
impl ResourceStore for SqlStore {
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

    async fn count_instances(&self, broker: &str) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM instances WHERE broker = $1")
            .bind(broker)
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
    }

    async fn plans_in_use(&self, broker: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT plan_id FROM instances WHERE broker = $1")
            .bind(broker)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(|r| get::<String>(r, "plan_id")).collect()
    }
}
