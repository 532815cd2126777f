//! `/v2/service_instances/:instance_id`: provision (PUT), update (PATCH), deprovision (DELETE)
//! and fetch (GET).

use super::checks::{self, Update};
use super::params::{Accepts, DeleteQuery, InstancePath};
use super::replies::{accepted, body_of, deleted, instance_body};
use super::request::{Body, Osb};
use super::{quotas, validate, AppState, Reply};
use crate::error::ApiError;
use crate::ops::wire::{ProvisionBody, UpdateBody};
use crate::ops::{self, Created, Existing, NewResource, OpContext, OpError, Settled};
use crate::store::{Effect, InstanceRecord, OperationKind, ResourceState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{json, Value};

/// `PUT /v2/service_instances/:instance_id`.
pub async fn provision(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    Accepts(accepts): Accepts,
    Body(body, raw): Body<ProvisionBody>,
) -> Result<Reply, ApiError> {
    let id = &path.instance_id;
    let record = checks::provision(&osb, id, body, accepts)?;
    // A repeat is found by the create itself (its insert meets the instance): no read first,
    // unless quotas apply, which an identical repeat must not be refused by.
    if quotas::any(&state, &osb) {
        if let Some(existing) = state.ops.store.instance(&osb.broker.name, id).await? {
            return repeated_provision(&existing, &record.attributes, accepts);
        }
        quotas::instances(&state, &osb).await?;
        quotas::operations(&state, &osb).await?;
    }
    let stored = osb.stored_call(OperationKind::Provision, (id, None), raw, accepts);
    let ctx = osb.context(&state, &stored);
    let attributes = record.attributes.clone();
    match ops::create(ctx.clone(), NewResource::Instance(record), stored).await? {
        Created::Exists(Existing::Instance(existing)) => {
            repeated_provision(&existing, &attributes, accepts)
        }
        Created::Exists(Existing::Binding(_)) => unreachable!("a provision creates an instance"),
        // The new instance holds exactly what the broker answered: no need to read it back.
        Created::Ran(Settled::Finished(Some(Effect::InstanceReady {
            dashboard_url,
            metadata,
            ..
        }))) => {
            let body = body_of(dashboard_url.as_deref(), metadata.as_deref());
            Ok((StatusCode::CREATED, body).into())
        }
        Created::Ran(settled) => instance_reply(&ctx, id, settled, StatusCode::CREATED).await,
    }
}

/// `PATCH /v2/service_instances/:instance_id`.
pub async fn update(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    Accepts(accepts): Accepts,
    Body(body, raw): Body<UpdateBody>,
) -> Result<Reply, ApiError> {
    let id = &path.instance_id;
    validate::required("service_id", body.service_id.clone())?;
    let existing = state
        .ops
        .store
        .instance(&osb.broker.name, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("instance {id} does not exist")))?;
    let Update::Run(target_plan) = checks::update(&osb, &existing, &body, accepts)? else {
        // The service did not ask for context updates: nothing to apply, nothing to call.
        return Ok((StatusCode::OK, json!({})).into());
    };
    quotas::operations(&state, &osb).await?;
    let mut stored = osb.stored_call(OperationKind::Update, (id, None), raw, accepts);
    stored.current_plan = Some(existing.plan_id);
    let ctx = osb.context(&state, &stored);
    let settled = ops::change(ctx.clone(), stored, ResourceState::Updating, target_plan).await?;
    instance_reply(&ctx, id, settled, StatusCode::OK).await
}

/// `DELETE /v2/service_instances/:instance_id?service_id=&plan_id=`.
pub async fn deprovision(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: DeleteQuery,
) -> Result<Reply, ApiError> {
    let id = &path.instance_id;
    let kind = OperationKind::Deprovision;
    if checks::deletes_unread(&state, &osb, &query) {
        match osb.delete(&state, kind, (id, None), &query).await {
            // Not there to delete (gone, being deleted, busy): read, and answered as read.
            Err(OpError::Busy(_)) => {}
            settled => return Ok(deleted(settled?)),
        }
    }
    let existing = state.ops.store.instance(&osb.broker.name, id).await?;
    checks::delete_ids(&osb, existing.as_ref(), &query.service_id, &query.plan_id)?;
    let existing =
        existing.ok_or_else(|| ApiError::Gone(format!("instance {id} does not exist")))?;
    if existing.state == ResourceState::Deleting && query.accepts {
        return Ok(accepted(existing.operation_id));
    }
    validate::async_allowed(&osb, &existing.plan_id, query.accepts)?;
    quotas::operations(&state, &osb).await?;
    Ok(deleted(osb.delete(&state, kind, (id, None), &query).await?))
}

/// `GET /v2/service_instances/:instance_id`.
pub async fn fetch(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
) -> Result<Reply, ApiError> {
    let id = &path.instance_id;
    let not_found = || ApiError::NotFound(format!("instance {id} does not exist"));
    let record = state
        .ops
        .store
        .instance(&osb.broker.name, id)
        .await?
        .ok_or_else(not_found)?;
    let service = osb.broker.catalog.service(&record.service_id);
    if !service.is_some_and(|s| s.instances_retrievable) {
        return Err(ApiError::BadRequest(
            "instances of this service are not retrievable".into(),
        ));
    }
    match record.state {
        ResourceState::Creating | ResourceState::Failed => Err(not_found()),
        ResourceState::Updating => Err(ApiError::ConcurrencyError(format!(
            "instance {id} is being updated"
        ))),
        _ => {
            let plan = osb.broker.catalog.plan(&record.service_id, &record.plan_id);
            let schemas = plan.map(|plan| plan.schemas);
            Ok((StatusCode::OK, fetched(&record, schemas)).into())
        }
    }
}

/// The body of a fetched instance: its parameters without those the plan's schemas mark
/// secret.
fn fetched(record: &InstanceRecord, schemas: Option<&crate::catalog::PlanSchemas>) -> Value {
    let mut body = instance_body(record);
    body["service_id"] = json!(record.service_id);
    body["plan_id"] = json!(record.plan_id);
    let stored = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    if let Some(mut parameters) = stored(&record.parameters) {
        if let Some(schemas) = schemas {
            schemas.redact(&mut parameters);
        }
        body["parameters"] = parameters;
    }
    if let Some(maintenance_info) = stored(&record.maintenance_info) {
        body["maintenance_info"] = maintenance_info;
    }
    body
}

/// Answers a provision of an instance id that exists already.
fn repeated_provision(
    existing: &InstanceRecord,
    attributes: &str,
    accepts_incomplete: bool,
) -> Result<Reply, ApiError> {
    let id = &existing.instance_id;
    if existing.attributes != attributes {
        return Err(ApiError::Conflict(format!(
            "instance {id} exists with other attributes"
        )));
    }
    match existing.state {
        ResourceState::Creating if accepts_incomplete => {
            Ok(accepted(existing.operation_id.clone()))
        }
        ResourceState::Creating => Err(ApiError::ConcurrencyError(format!(
            "instance {id} is still being provisioned"
        ))),
        ResourceState::Failed => Err(ApiError::Conflict(format!(
            "instance {id} failed to provision; deprovision it first"
        ))),
        _ => Ok((StatusCode::OK, instance_body(existing)).into()),
    }
}

/// The answer once an instance operation ran: 202 with the operation (and the dashboard URL
/// known early), or the final status with the stored instance.
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
