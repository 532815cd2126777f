//! `/v2/service_instances/:instance_id/service_bindings/:binding_id`: bind (PUT), unbind
//! (DELETE) and fetch (GET).

use super::instances::{busy, check_async, check_tenant_operations, delete_reply};
use super::request::{accepts_incomplete, Body, Osb};
use super::validate::{bind_resource, object_text, required};
use super::{query, validate, AppState, Reply};
use crate::catalog::SchemaKind;
use crate::error::ApiError;
use crate::ops::wire::BindBody;
use crate::ops::{execute, Settled};
use crate::store::{BindingRecord, Effect, OperationKind, ResourceState, StoreError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// Path of a binding route.
#[derive(Deserialize)]
pub struct BindingPath {
    /// Broker name (checked by [`Osb`]).
    #[allow(dead_code)]
    broker: String,
    /// Instance id.
    instance_id: String,
    /// Binding id.
    binding_id: String,
}

fn stored_body(record: &BindingRecord) -> Value {
    result_body(record.result.as_deref())
}

/// A binding body from its stored result (JSON text); `{}` without one.
fn result_body(result: Option<&str>) -> Value {
    result
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| json!({}))
}

/// Answers a bind of a binding id that exists already.
fn repeated_bind(
    existing: &BindingRecord,
    attributes: &str,
    accepts_incomplete: bool,
) -> Result<Reply, ApiError> {
    if existing.attributes != attributes {
        return Err(ApiError::Conflict(format!(
            "binding {} exists with other attributes",
            existing.binding_id
        )));
    }
    match existing.state {
        ResourceState::Creating if accepts_incomplete => {
            let operation = existing.operation_id.clone().unwrap_or_default();
            Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into())
        }
        ResourceState::Ready => Ok((StatusCode::OK, stored_body(existing)).into()),
        _ => Err(ApiError::ConcurrencyError(format!(
            "binding {} has an operation in progress",
            existing.binding_id
        ))),
    }
}

/// `PUT .../service_bindings/:binding_id`.
pub async fn bind(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
    query: query::Query,
    Body(body, raw): Body<BindBody>,
) -> Result<Reply, ApiError> {
    let accepts = accepts_incomplete(query.get("accepts_incomplete"))?;
    let service_id = required("service_id", body.service_id)?;
    let plan_id = required("plan_id", body.plan_id)?;
    let plan = validate::plan(&osb.broker, &service_id, &plan_id)?;
    if !plan.bindable() {
        return Err(ApiError::BadRequest(format!(
            "plan {plan_id} is not bindable"
        )));
    }
    let parameters = object_text("parameters", body.parameters)?;
    object_text("context", body.context)?;
    validate::parameters(&plan, SchemaKind::BindingCreate, parameters.as_deref())?;
    if body.predecessor_binding_id.is_some() && !plan.binding_rotatable() {
        return Err(ApiError::Unprocessable(format!(
            "bindings of plan {plan_id} cannot be rotated (binding_rotatable is false)"
        )));
    }
    let resource = bind_resource(body.bind_resource)?;
    check_async(&osb, &plan_id, accepts)?;
    let store = &state.ops.store;
    let broker = &osb.broker.name;
    let instance = store
        .instance(broker, &path.instance_id)
        .await?
        .filter(|i| i.state != ResourceState::Failed)
        .ok_or_else(|| {
            ApiError::NotFound(format!("instance {} does not exist", path.instance_id))
        })?;
    if matches!(
        instance.state,
        ResourceState::Creating | ResourceState::Deleting
    ) {
        return Err(ApiError::ConcurrencyError(format!(
            "instance {} has an operation in progress (being {})",
            path.instance_id,
            if instance.state == ResourceState::Creating {
                "provisioned"
            } else {
                "deprovisioned"
            }
        )));
    }
    if instance.service_id != service_id || instance.plan_id != plan_id {
        return Err(ApiError::BadRequest(format!(
            "instance {} is of service {} plan {}",
            path.instance_id, instance.service_id, instance.plan_id
        )));
    }
    if let Some(predecessor) = &body.predecessor_binding_id {
        let usable = store
            .binding(broker, predecessor)
            .await?
            .is_some_and(|b| b.instance_id == path.instance_id && b.state == ResourceState::Ready);
        if !usable {
            return Err(ApiError::BadRequest(format!(
                "predecessor_binding_id {predecessor} is not a binding of instance {}",
                path.instance_id
            )));
        }
    }
    let attributes = json!({
        "instance_id": path.instance_id, "service_id": service_id, "plan_id": plan_id,
        "app_guid": body.app_guid, "bind_resource": resource.as_ref().map(|r| r.raw.clone()),
        "parameters": parameters.as_deref().map(|p| serde_json::from_str::<Value>(p).unwrap_or_default()),
        "predecessor_binding_id": body.predecessor_binding_id,
    })
    .to_string();
    if let Some(existing) = store.binding(broker, &path.binding_id).await? {
        return repeated_bind(&existing, &attributes, accepts);
    }
    check_tenant_operations(&state, &osb).await?;
    let ids = (path.instance_id.as_str(), Some(path.binding_id.as_str()));
    let stored = osb.stored_call(OperationKind::Bind, ids, raw, accepts);
    let ctx = osb.context(&state, &stored);
    let op = ctx.new_operation(&stored);
    let record = BindingRecord {
        broker: broker.clone(),
        binding_id: path.binding_id.clone(),
        instance_id: path.instance_id.clone(),
        attributes: attributes.clone(),
        result: None,
        state: ResourceState::Creating,
        operation_id: Some(op.id.clone()),
    };
    match store.create_binding(&record, &op).await {
        Err(StoreError::Exists) => {
            return match store.binding(broker, &path.binding_id).await? {
                Some(existing) => repeated_bind(&existing, &attributes, accepts),
                None => Err(StoreError::Changed.into()),
            };
        }
        other => other?,
    }
    match execute(ctx, op, stored).await? {
        // A 202 for a bind carries only the operation, never credentials.
        Settled::Accepted(operation) => {
            Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into())
        }
        // The binding holds exactly what the broker answered: no need to read it back.
        Settled::Finished(Some(Effect::BindingReady { result })) => {
            Ok((StatusCode::CREATED, result_body(Some(&result))).into())
        }
        Settled::Finished(_) => {
            let stored = store.binding(broker, &path.binding_id).await?;
            let body = stored
                .as_ref()
                .map(stored_body)
                .unwrap_or_else(|| json!({}));
            Ok((StatusCode::CREATED, body).into())
        }
    }
}

/// `DELETE .../service_bindings/:binding_id?service_id=&plan_id=`.
pub async fn unbind(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let accepts = accepts_incomplete(query.get("accepts_incomplete"))?;
    let service_id = required("service_id", query.get("service_id").cloned())?;
    let plan_id = required("plan_id", query.get("plan_id").cloned())?;
    let store = &state.ops.store;
    let broker = &osb.broker.name;
    // The instance's own service and plan need not be in the catalog any more (see
    // deprovision).
    let own_ids = store
        .instance(broker, &path.instance_id)
        .await?
        .is_some_and(|i| i.service_id == service_id && i.plan_id == plan_id);
    if !own_ids {
        validate::plan(&osb.broker, &service_id, &plan_id)?;
    }
    let gone = || ApiError::Gone(format!("binding {} does not exist", path.binding_id));
    let existing = store
        .binding(broker, &path.binding_id)
        .await?
        .filter(|b| b.instance_id == path.instance_id)
        .ok_or_else(gone)?;
    if existing.state == ResourceState::Deleting && accepts {
        let operation = existing.operation_id.unwrap_or_default();
        return Ok((StatusCode::ACCEPTED, json!({ "operation": operation })).into());
    }
    check_async(&osb, &plan_id, accepts)?;
    let body = json!({ "service_id": service_id, "plan_id": plan_id });
    check_tenant_operations(&state, &osb).await?;
    let ids = (path.instance_id.as_str(), Some(path.binding_id.as_str()));
    let stored = osb.stored_call(OperationKind::Unbind, ids, body, accepts);
    let ctx = osb.context(&state, &stored);
    let op = ctx.new_operation(&stored);
    if let Err(error) = store.start_operation(&op, ResourceState::Deleting).await {
        return Err(busy(error, &path.binding_id));
    }
    Ok(delete_reply(execute(ctx, op, stored).await?))
}

/// `GET .../service_bindings/:binding_id`.
pub async fn fetch(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
) -> Result<Reply, ApiError> {
    let not_found = || ApiError::NotFound(format!("binding {} does not exist", path.binding_id));
    let record = state
        .ops
        .store
        .binding(&osb.broker.name, &path.binding_id)
        .await?
        .filter(|b| b.instance_id == path.instance_id)
        .ok_or_else(not_found)?;
    match record.state {
        ResourceState::Ready => {}
        ResourceState::Deleting => {
            return Err(ApiError::ConcurrencyError(format!(
                "binding {} is being deleted",
                path.binding_id
            )))
        }
        _ => return Err(not_found()),
    }
    let instance = state
        .ops
        .store
        .instance(&osb.broker.name, &path.instance_id)
        .await?
        .ok_or_else(not_found)?;
    let retrievable = osb
        .broker
        .catalog
        .service(&instance.service_id)
        .is_some_and(|s| s.bindings_retrievable);
    if !retrievable {
        return Err(ApiError::BadRequest(
            "bindings of this service are not retrievable".into(),
        ));
    }
    Ok((StatusCode::OK, stored_body(&record)).into())
}
