//! `/v2/service_instances/:instance_id`: provision (PUT), update (PATCH), deprovision (DELETE)
//! and fetch (GET).

use super::request::{accepts_incomplete, Body, Osb};
use super::wire::{object_text, required, ProvisionBody, UpdateBody};
use super::{query, validate, AppState, Reply};
use crate::catalog::SchemaKind;
use crate::engine::bindings::types::{
    DeleteResponse, DeprovisionRequest, InstanceAccepted, InstanceResponse, ProvisionRequest,
    UpdateRequest,
};
use crate::error::ApiError;
use crate::ops::{failure, results, settle, Answer, Settled};
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
    let mut body = json!({});
    if let Some(url) = &record.dashboard_url {
        body["dashboard_url"] = json!(url);
    }
    if let Some(metadata) = record
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
    {
        body["metadata"] = metadata;
    }
    body
}

/// The answer for an accepted provision or update: the 202 body learns the dashboard URL, and
/// the stored instance what the guest already knows.
fn accepted_answer(accepted: InstanceAccepted, body: &mut Value, on_error: Effect) -> Answer {
    match results::instance_values(&accepted.instance) {
        Ok((dashboard_url, metadata)) => {
            if let Some(url) = &dashboard_url {
                body["dashboard_url"] = json!(url);
            }
            let effect = Effect::InstanceAnnotated {
                dashboard_url,
                metadata,
            };
            Answer::Accepted(accepted.operation_data, effect)
        }
        Err(description) => Answer::Failed(ApiError::Internal(description), on_error),
    }
}

/// Answers a provision of an instance id that exists already.
fn repeated_provision(existing: &InstanceRecord, attributes: &str) -> Result<Reply, ApiError> {
    if existing.attributes != attributes {
        return Err(ApiError::Conflict(format!(
            "instance {} exists with other attributes",
            existing.instance_id
        )));
    }
    match existing.state {
        ResourceState::Creating => {
            let operation = existing.operation_id.clone().unwrap_or_default();
            Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into())
        }
        ResourceState::Failed => Err(ApiError::Conflict(format!(
            "instance {} failed to provision; deprovision it first",
            existing.instance_id
        ))),
        _ => Ok((StatusCode::OK, instance_body(existing)).into()),
    }
}

/// `PUT /v2/service_instances/:instance_id`.
pub async fn provision(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
    Body(body): Body<ProvisionBody>,
) -> Result<Reply, ApiError> {
    let ctx = osb.context(&state, accepts_incomplete(query.get("accepts_incomplete"))?);
    let service_id = required("service_id", body.service_id)?;
    let plan_id = required("plan_id", body.plan_id)?;
    let plan = validate::plan(&osb.broker, &service_id, &plan_id)?;
    let parameters = object_text("parameters", body.parameters)?;
    let context = object_text("context", body.context)?;
    validate::parameters(&plan, SchemaKind::InstanceCreate, parameters.as_deref())?;
    validate::maintenance_info(&plan, body.maintenance_info.as_ref())?;
    let maintenance_info = body.maintenance_info.clone().map(|m| json!(m).to_string());
    let attributes = json!({
        "service_id": service_id, "plan_id": plan_id,
        "organization_guid": body.organization_guid, "space_guid": body.space_guid,
        "parameters": parameters.as_deref().map(|p| serde_json::from_str::<Value>(p).unwrap_or_default()),
        "maintenance_info": body.maintenance_info,
    })
    .to_string();
    let store = &state.store;
    let broker = &osb.broker.name;
    if let Some(existing) = store.instance(broker, &path.instance_id).await? {
        return repeated_provision(&existing, &attributes);
    }
    let op = ctx.new_operation(OperationKind::Provision, &path.instance_id, None);
    let record = InstanceRecord {
        broker: broker.clone(),
        instance_id: path.instance_id.clone(),
        service_id: service_id.clone(),
        plan_id: plan_id.clone(),
        attributes: attributes.clone(),
        parameters: parameters.clone(),
        context: context.clone(),
        dashboard_url: None,
        metadata: None,
        maintenance_info,
        state: ResourceState::Creating,
        operation_id: Some(op.id.clone()),
    };
    match store.create_instance(&record, &op).await {
        Err(StoreError::Exists) => {
            let existing = store.instance(broker, &path.instance_id).await?;
            return match existing {
                Some(existing) => repeated_provision(&existing, &attributes),
                None => Err(StoreError::Changed.into()),
            };
        }
        other => other?,
    }
    let request = ProvisionRequest {
        instance_id: path.instance_id.clone(),
        service_id,
        plan_id: plan_id.clone(),
        organization_guid: body.organization_guid,
        space_guid: body.space_guid,
        parameters,
        context,
        maintenance_info: body.maintenance_info.map(Into::into),
        call: ctx.call.clone(),
    };
    let mut accepted_body = json!({});
    let answer = match osb.broker.guest.provision(&ctx.info(), request).await {
        Ok(InstanceResponse::Done(result)) => match results::instance_values(&result) {
            Ok((dashboard_url, metadata)) => Answer::Done(Effect::InstanceReady {
                plan_id,
                dashboard_url,
                metadata,
                parameters: None,
                context: None,
                maintenance_info: None,
            }),
            Err(description) => {
                Answer::Failed(ApiError::Internal(description), Effect::InstanceFailed)
            }
        },
        Ok(InstanceResponse::Accepted(accepted)) => {
            accepted_answer(accepted, &mut accepted_body, Effect::InstanceFailed)
        }
        Err(error) => failure(OperationKind::Provision, error),
    };
    match settle(&ctx, &op, answer).await? {
        Settled::Accepted(operation) => {
            accepted_body["operation"] = json!(operation);
            Ok((StatusCode::ACCEPTED, accepted_body).into())
        }
        Settled::Finished => {
            let stored = store.instance(broker, &path.instance_id).await?;
            Ok((
                StatusCode::CREATED,
                stored.as_ref().map(instance_body).unwrap_or_default(),
            )
                .into())
        }
    }
}

/// `PATCH /v2/service_instances/:instance_id`.
pub async fn update(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
    Body(body): Body<UpdateBody>,
) -> Result<Reply, ApiError> {
    let ctx = osb.context(&state, accepts_incomplete(query.get("accepts_incomplete"))?);
    let service_id = required("service_id", body.service_id)?;
    let store = &state.store;
    let broker = &osb.broker.name;
    let existing = store
        .instance(broker, &path.instance_id)
        .await?
        .filter(|i| i.state != ResourceState::Creating)
        .ok_or_else(|| {
            ApiError::NotFound(format!("instance {} does not exist", path.instance_id))
        })?;
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
    let context = object_text("context", body.context)?;
    validate::parameters(&plan, SchemaKind::InstanceUpdate, parameters.as_deref())?;
    validate::maintenance_info(&plan, body.maintenance_info.as_ref())?;
    let context_only =
        target_plan.is_none() && parameters.is_none() && body.maintenance_info.is_none();
    if context_only && !plan.service.allow_context_updates {
        // The service did not ask for context updates: nothing to apply, nothing to call.
        return Ok((StatusCode::OK, json!({})).into());
    }
    let mut op = ctx.new_operation(OperationKind::Update, &path.instance_id, None);
    op.target_plan = target_plan.clone();
    if let Err(error) = store.start_operation(&op, ResourceState::Updating).await {
        return Err(busy(error, &path.instance_id));
    }
    let request = UpdateRequest {
        instance_id: path.instance_id.clone(),
        service_id,
        plan_id: target_plan.clone(),
        parameters: parameters.clone(),
        context: context.clone(),
        previous_values: body.previous_values.map(Into::into),
        maintenance_info: body.maintenance_info.clone().map(Into::into),
        call: ctx.call.clone(),
    };
    let mut accepted_body = json!({});
    let answer = match osb.broker.guest.update(&ctx.info(), request).await {
        Ok(InstanceResponse::Done(result)) => match results::instance_values(&result) {
            Ok((dashboard_url, metadata)) => Answer::Done(Effect::InstanceReady {
                plan_id: target_plan.unwrap_or(existing.plan_id),
                dashboard_url,
                metadata,
                parameters,
                context,
                maintenance_info: body.maintenance_info.map(|m| json!(m).to_string()),
            }),
            Err(description) => {
                Answer::Failed(ApiError::Internal(description), Effect::InstanceRestored)
            }
        },
        Ok(InstanceResponse::Accepted(accepted)) => {
            accepted_answer(accepted, &mut accepted_body, Effect::InstanceRestored)
        }
        Err(error) => failure(OperationKind::Update, error),
    };
    match settle(&ctx, &op, answer).await? {
        Settled::Accepted(operation) => {
            accepted_body["operation"] = json!(operation);
            Ok((StatusCode::ACCEPTED, accepted_body).into())
        }
        Settled::Finished => {
            let stored = store.instance(broker, &path.instance_id).await?;
            Ok((
                StatusCode::OK,
                stored.as_ref().map(instance_body).unwrap_or_default(),
            )
                .into())
        }
    }
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

/// `DELETE /v2/service_instances/:instance_id?service_id=&plan_id=`.
pub async fn deprovision(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let ctx = osb.context(&state, accepts_incomplete(query.get("accepts_incomplete"))?);
    let service_id = required("service_id", query.get("service_id").cloned())?;
    let plan_id = required("plan_id", query.get("plan_id").cloned())?;
    validate::plan(&osb.broker, &service_id, &plan_id)?;
    let store = &state.store;
    let broker = &osb.broker.name;
    let existing = store
        .instance(broker, &path.instance_id)
        .await?
        .ok_or_else(|| ApiError::Gone(format!("instance {} does not exist", path.instance_id)))?;
    if existing.state == ResourceState::Deleting {
        let operation = existing.operation_id.unwrap_or_default();
        return Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into());
    }
    let op = ctx.new_operation(OperationKind::Deprovision, &path.instance_id, None);
    if let Err(error) = store.start_operation(&op, ResourceState::Deleting).await {
        return Err(busy(error, &path.instance_id));
    }
    let request = DeprovisionRequest {
        instance_id: path.instance_id.clone(),
        service_id,
        plan_id,
        call: ctx.call.clone(),
    };
    let answer = match osb.broker.guest.deprovision(&ctx.info(), request).await {
        Ok(DeleteResponse::Done) => Answer::Done(Effect::InstanceDeleted),
        Ok(DeleteResponse::Accepted(data)) => Answer::Accepted(data, Effect::None),
        Err(error) => failure(OperationKind::Deprovision, error),
    };
    match settle(&ctx, &op, answer).await? {
        Settled::Accepted(operation) => {
            Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into())
        }
        Settled::Finished => Ok((StatusCode::OK, json!({})).into()),
    }
}

/// `GET /v2/service_instances/:instance_id`.
pub async fn fetch(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
) -> Result<Reply, ApiError> {
    let not_found = || ApiError::NotFound(format!("instance {} does not exist", path.instance_id));
    let record = state
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
