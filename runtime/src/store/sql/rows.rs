//! Rows to records and back, and what an operation's outcome does to its resource.

use super::*;

pub(super) fn instance_row(row: &AnyRow) -> Result<InstanceRecord, StoreError> {
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

pub(super) fn binding_row(row: &AnyRow) -> Result<BindingRecord, StoreError> {
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

pub(super) fn operation_row(row: &AnyRow) -> Result<OperationRecord, StoreError> {
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

pub(super) async fn insert_operation(
    tx: &mut WriteTx<'_>,
    op: &OperationRecord,
) -> Result<(), StoreError> {
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
pub(super) fn one(result: AnyQueryResult) -> Result<(), StoreError> {
    if result.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Changed)
    }
}

/// Applies what an operation's outcome does to its instance or binding. An effect touches no
/// row when its resource is gone already (deleted while the operation ran): the operation
/// still ends, with nothing left to change.
pub(super) async fn apply_effect(
    tx: &mut WriteTx<'_>,
    op: &OperationRecord,
    effect: &Effect,
) -> Result<(), StoreError> {
    match effect {
        Effect::None => Ok(()),
        Effect::BindingReady { .. } | Effect::BindingRestored | Effect::BindingDeleted => {
            binding_effect(tx, op, effect).await
        }
        _ => instance_effect(tx, op, effect).await,
    }
}

async fn instance_effect(
    tx: &mut WriteTx<'_>,
    op: &OperationRecord,
    effect: &Effect,
) -> Result<(), StoreError> {
    let (t, broker, instance) = (now(), &op.broker, &op.instance_id);
    let set_state = |state: ResourceState| {
        sqlx::query("UPDATE instances SET state = $1, updated_at = $2 WHERE broker = $3 AND instance_id = $4")
            .bind(state.as_str())
            .bind(t)
            .bind(broker)
            .bind(instance)
    };
    let result = match effect {
        Effect::InstanceReady { .. } => ready_instance(tx, op, effect).await,
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
        Effect::InstanceRestored => set_state(ResourceState::Ready).execute(&mut **tx).await,
        Effect::InstanceFailed => set_state(ResourceState::Failed).execute(&mut **tx).await,
        Effect::InstanceDeleted => {
            for table in ["bindings", "instances"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE broker = $1 AND instance_id = $2"))
                    .bind(broker)
                    .bind(instance)
                    .execute(&mut **tx)
                    .await
                    .map_err(backend)?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    result.map_err(backend)?;
    Ok(())
}

/// The instance is ready, with what the broker and the request said.
async fn ready_instance(
    tx: &mut WriteTx<'_>,
    op: &OperationRecord,
    effect: &Effect,
) -> Result<AnyQueryResult, sqlx::Error> {
    let Effect::InstanceReady {
        plan_id,
        dashboard_url,
        metadata,
        parameters,
        context,
        maintenance_info,
    } = effect
    else {
        unreachable!("called for InstanceReady only");
    };
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
    .bind(now())
    .bind(&op.broker)
    .bind(&op.instance_id)
    .execute(&mut **tx)
    .await
}

async fn binding_effect(
    tx: &mut WriteTx<'_>,
    op: &OperationRecord,
    effect: &Effect,
) -> Result<(), StoreError> {
    let (t, broker) = (now(), &op.broker);
    let binding = op.binding_id.as_deref().unwrap_or_default();
    let query = match effect {
        Effect::BindingReady { result } => sqlx::query(
            "UPDATE bindings SET state = 'ready', result = $1, updated_at = $2 \
             WHERE broker = $3 AND binding_id = $4",
        )
        .bind(result.as_str())
        .bind(t),
        Effect::BindingRestored => sqlx::query(
            "UPDATE bindings SET state = $1, updated_at = $2 WHERE broker = $3 AND binding_id = $4",
        )
        .bind(ResourceState::Ready.as_str())
        .bind(t),
        Effect::BindingDeleted => {
            sqlx::query("DELETE FROM bindings WHERE broker = $1 AND binding_id = $2")
        }
        _ => return Ok(()),
    };
    query
        .bind(broker)
        .bind(binding)
        .execute(&mut **tx)
        .await
        .map_err(backend)?;
    Ok(())
}
