//! `/v2/service_instances/:instance_id`: provision (PUT), update (PATCH), deprovision (DELETE)
//! and fetch (GET).

use super::request::{accepts_incomplete, Body, Osb};
use super::validate::{object_text, required};
use super::{query, validate, AppState, Reply};
use crate::catalog::SchemaKind;
use crate::error::ApiError;
use crate::ops::wire::{ProvisionBody, UpdateBody};
use crate::ops::{execute, OpContext, Settled};
use crate::store::{Effect, InstanceRecord, OperationKind, ResourceState, StoreError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// Path of an instance route.
#[derive(Deserialize)]
pub struct InstancePath {
    /// Broker name (checked by [`Osb`]).
    #[allow(dead_code)]
    broker: String,
    /// Instance id.
    instance_id: String,
}

/// The body of a finished provision or a repeated identical one.
fn instance_body(record: &InstanceRecord) -> Value {
    body_of(record.dashboard_url.as_deref(), record.metadata.as_deref())
}

/// An instance body from its dashboard URL and metadata (JSON text).
fn body_of(dashboard_url: Option<&str>, metadata: Option<&str>) -> Value {
    let mut body = json!({});
    if let Some(url) = dashboard_url {
        body["dashboard_url"] = json!(url);
    }
    if let Some(metadata) = metadata.and_then(|m| serde_json::from_str::<Value>(m).ok()) {
        body["metadata"] = metadata;
    }
    body
}

/// Answers a provision of an instance id that exists already.
fn repeated_provision(
    existing: &InstanceRecord,
    attributes: &str,
    accepts_incomplete: bool,
) -> Result<Reply, ApiError> {
    if existing.attributes != attributes {
        return Err(ApiError::Conflict(format!(
            "instance {} exists with other attributes",
            existing.instance_id
        )));
    }
    match existing.state {
        ResourceState::Creating if accepts_incomplete => {
            let operation = existing.operation_id.clone().unwrap_or_default();
            Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into())
        }
        ResourceState::Creating => Err(ApiError::ConcurrencyError(format!(
            "instance {} is still being provisioned",
            existing.instance_id
        ))),
        ResourceState::Failed => Err(ApiError::Conflict(format!(
            "instance {} failed to provision; deprovision it first",
            existing.instance_id
        ))),
        _ => Ok((StatusCode::OK, instance_body(existing)).into()),
    }
}

/// 422 `AsyncRequired` when the broker's manifest makes `plan_id` async-only and the platform
/// cannot wait asynchronously; checked before anything is stored.
pub fn check_async(osb: &Osb, plan_id: &str, accepts_incomplete: bool) -> Result<(), ApiError> {
    if !accepts_incomplete && osb.broker.manifest.operations.async_required(plan_id) {
        return Err(ApiError::AsyncRequired(format!(
            "plan {plan_id} runs asynchronously only; send accepts_incomplete=true"
        )));
    }
    Ok(())
}

/// The answer once the engine has run an instance operation: 202 with the operation (and the
/// dashboard URL known early), or the final status with the stored instance.
async fn instance_reply(
    ctx: &OpContext,
    instance_id: &str,
    settled: Settled,
    done: StatusCode,
) -> Result<Reply, ApiError> {
    let stored = ctx
        .state
        .store
        .instance(&ctx.broker.name, instance_id)
        .await?;
    let mut body = stored
        .as_ref()
        .map(instance_body)
        .unwrap_or_else(|| json!({}));
    match settled {
        Settled::Accepted(operation) => {
            body.as_object_mut().map(|b| b.remove("metadata"));
            body["operation"] = json!(operation);
            Ok((StatusCode::ACCEPTED, body).into())
        }
        Settled::Finished(_) => Ok((done, body).into()),
    }
}

/// `PUT /v2/service_instances/:instance_id`.
pub async fn provision(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
    Body(body, raw): Body<ProvisionBody>,
) -> Result<Reply, ApiError> {
    let accepts = accepts_incomplete(query.get("accepts_incomplete"))?;
    let service_id = required("service_id", body.service_id)?;
    let plan_id = required("plan_id", body.plan_id)?;
    // OSB 2.17 marks both REQUIRED, "MUST be a non-empty string" (deprecated in favour of
    // `context`, but still sent by every platform).
    let organization_guid = required("organization_guid", body.organization_guid)?;
    let space_guid = required("space_guid", body.space_guid)?;
    let plan = validate::plan(&osb.broker, &service_id, &plan_id)?;
    let parameters = object_text("parameters", body.parameters)?;
    let context = object_text("context", body.context)?;
    validate::parameters(&plan, SchemaKind::InstanceCreate, parameters.as_deref())?;
    validate::maintenance_info(&plan, body.maintenance_info.as_ref())?;
    check_async(&osb, &plan_id, accepts)?;
    let attributes = json!({
        "service_id": service_id, "plan_id": plan_id,
        "organization_guid": organization_guid, "space_guid": space_guid,
        "parameters": parameters.as_deref().map(|p| serde_json::from_str::<Value>(p).unwrap_or_default()),
        "maintenance_info": body.maintenance_info,
    })
    .to_string();
    let store = &state.ops.store;
    let broker = &osb.broker.name;
    if let Some(existing) = store.instance(broker, &path.instance_id).await? {
        return repeated_provision(&existing, &attributes, accepts);
    }
    check_tenant_quota(&state, &osb).await?;
    check_tenant_operations(&state, &osb).await?;
    let stored = osb.stored_call(
        OperationKind::Provision,
        (&path.instance_id, None),
        raw,
        accepts,
    );
    let ctx = osb.context(&state, &stored);
    let op = ctx.new_operation(&stored);
    let record = InstanceRecord {
        broker: broker.clone(),
        instance_id: path.instance_id.clone(),
        service_id,
        plan_id,
        attributes: attributes.clone(),
        parameters,
        context,
        dashboard_url: None,
        metadata: None,
        maintenance_info: body.maintenance_info.map(|m| json!(m).to_string()),
        state: ResourceState::Creating,
        operation_id: Some(op.id.clone()),
    };
    match store.create_instance(&record, &op).await {
        Err(StoreError::Exists) => {
            // A concurrent provision of the same id won the insert.
            return match store.instance(broker, &path.instance_id).await? {
                Some(existing) => repeated_provision(&existing, &attributes, accepts),
                None => Err(StoreError::Changed.into()),
            };
        }
        other => other?,
    }
    match execute(ctx.clone(), op, stored).await? {
        // The new instance holds exactly what the broker answered: no need to read it back.
        Settled::Finished(Some(Effect::InstanceReady {
            dashboard_url,
            metadata,
            ..
        })) => Ok((
            StatusCode::CREATED,
            body_of(dashboard_url.as_deref(), metadata.as_deref()),
        )
            .into()),
        settled => instance_reply(&ctx, &path.instance_id, settled, StatusCode::CREATED).await,
    }
}

/// 422 when the broker's tenant already holds its quota of instances.
async fn check_tenant_quota(state: &AppState, osb: &Osb) -> Result<(), ApiError> {
    let Some(tenant) = &osb.broker.manifest.tenant else {
        return Ok(());
    };
    let Some(max) = state.config.tenant_max_instances.get(tenant) else {
        return Ok(());
    };
    let mut held = 0;
    for broker in tenant_brokers(state, tenant) {
        held += state.ops.store.count_instances(&broker).await?;
    }
    if held >= *max {
        return Err(ApiError::Unprocessable(format!(
            "tenant {tenant} holds its quota of {max} instances"
        )));
    }
    Ok(())
}

/// 422 `ConcurrencyError` when the broker's tenant already runs its quota of operations.
pub async fn check_tenant_operations(state: &AppState, osb: &Osb) -> Result<(), ApiError> {
    let Some(tenant) = &osb.broker.manifest.tenant else {
        return Ok(());
    };
    let Some(max) = state.config.tenant_max_operations.get(tenant) else {
        return Ok(());
    };
    let mut running = 0;
    for broker in tenant_brokers(state, tenant) {
        running += state.ops.store.count_in_progress(&broker).await?;
    }
    if running >= *max {
        return Err(ApiError::ConcurrencyError(format!(
            "tenant {tenant} runs its quota of {max} operations at once; retry later"
        )));
    }
    Ok(())
}

/// The names of the brokers of `tenant`.
fn tenant_brokers(state: &AppState, tenant: &str) -> Vec<String> {
    let current = state.ops.brokers.current();
    current
        .all()
        .filter(|b| b.manifest.tenant.as_deref() == Some(tenant))
        .map(|b| b.name.clone())
        .collect()
}

/// `PATCH /v2/service_instances/:instance_id`.
pub async fn update(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
    Body(body, raw): Body<UpdateBody>,
) -> Result<Reply, ApiError> {
    let accepts = accepts_incomplete(query.get("accepts_incomplete"))?;
    let service_id = required("service_id", body.service_id)?;
    let store = &state.ops.store;
    let broker = &osb.broker.name;
    let existing = store
        .instance(broker, &path.instance_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("instance {} does not exist", path.instance_id))
        })?;
    if existing.state == ResourceState::Creating {
        return Err(ApiError::ConcurrencyError(format!(
            "instance {} is still being provisioned",
            path.instance_id
        )));
    }
    if existing.service_id != service_id {
        return Err(ApiError::BadRequest(format!(
            "instance {} belongs to service {}, not {service_id}",
            path.instance_id, existing.service_id
        )));
    }
    let current = osb
        .broker
        .catalog
        .plan(&service_id, &existing.plan_id)
        .ok_or_else(|| {
            ApiError::Internal("the instance's plan is no longer in the catalog".into())
        })?;
    let target_plan = body.plan_id.filter(|p| *p != existing.plan_id);
    let plan = match &target_plan {
        Some(plan_id) => {
            let target = validate::plan(&osb.broker, &service_id, plan_id)?;
            if !current.plan_updateable() {
                return Err(ApiError::Unprocessable(format!(
                    "the plan of instance {} cannot be changed (plan_updateable is false)",
                    path.instance_id
                )));
            }
            target
        }
        None => current,
    };
    let parameters = object_text("parameters", body.parameters)?;
    object_text("context", body.context)?;
    validate::parameters(&plan, SchemaKind::InstanceUpdate, parameters.as_deref())?;
    validate::maintenance_info(&plan, body.maintenance_info.as_ref())?;
    let context_only =
        target_plan.is_none() && parameters.is_none() && body.maintenance_info.is_none();
    if context_only && !plan.service.allow_context_updates {
        // The service did not ask for context updates: nothing to apply, nothing to call.
        return Ok((StatusCode::OK, json!({})).into());
    }
    check_async(&osb, &plan.plan.id, accepts)?;
    check_tenant_operations(&state, &osb).await?;
    let mut stored = osb.stored_call(
        OperationKind::Update,
        (&path.instance_id, None),
        raw,
        accepts,
    );
    stored.current_plan = Some(existing.plan_id.clone());
    let ctx = osb.context(&state, &stored);
    let mut op = ctx.new_operation(&stored);
    op.target_plan = target_plan;
    if let Err(error) = store.start_operation(&op, ResourceState::Updating).await {
        return Err(busy(error, &path.instance_id));
    }
    let settled = execute(ctx.clone(), op, stored).await?;
    instance_reply(&ctx, &path.instance_id, settled, StatusCode::OK).await
}

/// Maps a refused `start_operation` to 422 ConcurrencyError.
pub fn busy(error: StoreError, id: &str) -> ApiError {
    match error {
        StoreError::Changed | StoreError::Exists => {
            ApiError::ConcurrencyError(format!("another operation on {id} is in progress"))
        }
        other => other.into(),
    }
}

/// The answer to a delete once the engine has run it.
pub fn delete_reply(settled: Settled) -> Reply {
    match settled {
        Settled::Accepted(operation) => {
            (StatusCode::ACCEPTED, json!({ "operation": operation })).into()
        }
        Settled::Finished(_) => (StatusCode::OK, json!({})).into(),
    }
}

/// `DELETE /v2/service_instances/:instance_id?service_id=&plan_id=`.
pub async fn deprovision(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let accepts = accepts_incomplete(query.get("accepts_incomplete"))?;
    let service_id = required("service_id", query.get("service_id").cloned())?;
    let plan_id = required("plan_id", query.get("plan_id").cloned())?;
    let store = &state.ops.store;
    let broker = &osb.broker.name;
    let existing = store.instance(broker, &path.instance_id).await?;
    // The instance's own service and plan need not be in the catalog any more: an instance
    // whose plan a newer version dropped can still be deleted.
    if !existing
        .as_ref()
        .is_some_and(|i| i.service_id == service_id && i.plan_id == plan_id)
    {
        validate::plan(&osb.broker, &service_id, &plan_id)?;
    }
    let existing = existing
        .ok_or_else(|| ApiError::Gone(format!("instance {} does not exist", path.instance_id)))?;
    if existing.state == ResourceState::Deleting && accepts {
        let operation = existing.operation_id.unwrap_or_default();
        return Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into());
    }
    check_async(&osb, &existing.plan_id, accepts)?;
    check_tenant_operations(&state, &osb).await?;
    let body = json!({ "service_id": service_id, "plan_id": plan_id });
    let stored = osb.stored_call(
        OperationKind::Deprovision,
        (&path.instance_id, None),
        body,
        accepts,
    );
    let ctx = osb.context(&state, &stored);
    let op = ctx.new_operation(&stored);
    if let Err(error) = store.start_operation(&op, ResourceState::Deleting).await {
        return Err(busy(error, &path.instance_id));
    }
    Ok(delete_reply(execute(ctx, op, stored).await?))
}

/// `GET /v2/service_instances/:instance_id`.
pub async fn fetch(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
) -> Result<Reply, ApiError> {
    let not_found = || ApiError::NotFound(format!("instance {} does not exist", path.instance_id));
    let record = state
        .ops
        .store
        .instance(&osb.broker.name, &path.instance_id)
        .await?
        .ok_or_else(not_found)?;
    let retrievable = osb
        .broker
        .catalog
        .service(&record.service_id)
        .is_some_and(|s| s.instances_retrievable);
    if !retrievable {
        return Err(ApiError::BadRequest(
            "instances of this service are not retrievable".into(),
        ));
    }
    match record.state {
        ResourceState::Creating | ResourceState::Failed => Err(not_found()),
        ResourceState::Updating => Err(ApiError::ConcurrencyError(format!(
            "instance {} is being updated",
            path.instance_id
        ))),
        _ => {
            let mut body = instance_body(&record);
            body["service_id"] = json!(record.service_id);
            body["plan_id"] = json!(record.plan_id);
            if let Some(p) = record
                .parameters
                .as_deref()
                .and_then(|p| serde_json::from_str::<Value>(p).ok())
            {
                body["parameters"] = p;
            }
            if let Some(m) = record
                .maintenance_info
                .as_deref()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
            {
                body["maintenance_info"] = m;
            }
            Ok((StatusCode::OK, body).into())
        }
    }
}
