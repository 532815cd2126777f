//! Instances and bindings in SQL.

use super::*;

#[async_trait::async_trait]
impl ResourceStore for SqlStore {
    async fn instance(
        &self,
        broker: &str,
        instance_id: &str,
    ) -> Result<Option<InstanceRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT * FROM instances WHERE broker = $1 AND instance_id = $2",
                &args![broker, instance_id],
                instance_row,
            )
            .await?;
        let rows = self.opened(rows, secrets::open_instance).await?;
        Ok(rows.into_iter().next())
    }

    async fn binding(
        &self,
        broker: &str,
        binding_id: &str,
    ) -> Result<Option<BindingRecord>, StoreError> {
        let rows = self
            .db
            .query(
                "SELECT * FROM bindings WHERE broker = $1 AND binding_id = $2",
                &args![broker, binding_id],
                binding_row,
            )
            .await?;
        let rows = self.opened(rows, secrets::open_binding).await?;
        Ok(rows.into_iter().next())
    }

    async fn instance_and_binding(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<(Option<InstanceRecord>, Option<BindingRecord>), StoreError> {
        let rows = self
            .db
            .query(
                &INSTANCE_AND_BINDING,
                &args![broker, instance_id, binding_id],
                instance_and_binding_row,
            )
            .await?;
        let (instance, binding) = rows.into_iter().next().unwrap_or_default();
        let instances = self
            .opened(instance.into_iter().collect(), secrets::open_instance)
            .await?;
        let bindings = self
            .opened(binding.into_iter().collect(), secrets::open_binding)
            .await?;
        Ok((instances.into_iter().next(), bindings.into_iter().next()))
    }

    async fn create_instance(
        &self,
        i: &InstanceRecord,
        op: &OperationRecord,
    ) -> Result<(), StoreError> {
        let t = now();
        let i = &secrets::sealed_instance(&self.sealer, i);
        let instance = Statement {
            sql: "INSERT INTO instances (broker, instance_id, service_id, plan_id, attributes, \
                  parameters, context, dashboard_url, metadata, maintenance_info, state, \
                  operation_id, created_at, updated_at) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            args: owned(args![
                &i.broker,
                &i.instance_id,
                &i.service_id,
                &i.plan_id,
                &i.attributes,
                &i.parameters,
                &i.context,
                &i.dashboard_url,
                &i.metadata,
                &i.maintenance_info,
                i.state.as_str(),
                &op.id,
                t,
                t,
            ]),
        };
        let inserted = self
            .db
            .write_guarded_insert(
                Durability::Committed,
                instance,
                insert_operation(&self.sealer, op, self.db.is_postgres()),
            )
            .await?;
        one(inserted)
    }

    async fn create_binding(
        &self,
        b: &BindingRecord,
        op: &OperationRecord,
    ) -> Result<(), StoreError> {
        let t = now();
        let b = &secrets::sealed_binding(&self.sealer, b);
        let binding = Statement {
            sql: "INSERT INTO bindings (broker, binding_id, instance_id, attributes, result, \
                  state, operation_id, created_at, updated_at) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            args: owned(args![
                &b.broker,
                &b.binding_id,
                &b.instance_id,
                &b.attributes,
                &b.result,
                b.state.as_str(),
                &op.id,
                t,
                t,
            ]),
        };
        let inserted = self
            .db
            .write_guarded_insert(
                Durability::Committed,
                binding,
                insert_operation(&self.sealer, op, self.db.is_postgres()),
            )
            .await?;
        one(inserted)
    }

    async fn start_operation(
        &self,
        op: &OperationRecord,
        state: ResourceState,
    ) -> Result<(), StoreError> {
        // Only a resource that is ready (or failed, for deletes) may start an operation: this
        // is the one-operation-at-a-time guard, checked and taken atomically. A binding's
        // operation names its instance too.
        let (t, broker, instance) = (now(), &op.broker, &op.instance_id);
        let guard = match &op.binding_id {
            Some(binding) => Statement {
                sql: "UPDATE bindings SET state = $1, operation_id = $2, updated_at = $3 \
                      WHERE broker = $4 AND binding_id = $5 AND instance_id = $6 \
                      AND state IN ('ready', 'failed')",
                args: owned(args![state.as_str(), &op.id, t, broker, binding, instance]),
            },
            None => Statement {
                sql: "UPDATE instances SET state = $1, operation_id = $2, updated_at = $3 \
                      WHERE broker = $4 AND instance_id = $5 AND state IN ('ready', 'failed')",
                args: owned(args![state.as_str(), &op.id, t, broker, instance]),
            },
        };
        let taken = self
            .db
            .write_guarded_insert(
                Durability::Committed,
                guard,
                insert_operation(&self.sealer, op, self.db.is_postgres()),
            )
            .await?;
        one(taken)
    }

    async fn count_instances(&self, broker: &str) -> Result<u64, StoreError> {
        self.count(
            "SELECT COUNT(*) AS n FROM instances WHERE broker = $1",
            &args![broker],
        )
        .await
    }

    async fn plans_in_use(&self, broker: &str) -> Result<Vec<String>, StoreError> {
        self.db
            .query(
                "SELECT DISTINCT plan_id FROM instances WHERE broker = $1",
                &args![broker],
                |row| get(row, "plan_id"),
            )
            .await
    }
}
