//! `/v2/service_instances/:instance_id/service_bindings/:binding_id`: bind (PUT), unbind
//! (DELETE) and fetch (GET).

use super::checks;
use super::params::{Accepts, BindingPath, DeleteQuery};
use super::replies::{accepted, binding_body, deleted, result_body};
use super::request::{Body, Osb};
use super::{quotas, validate, AppState, Reply};
use crate::error::ApiError;
use crate::ops::wire::BindBody;
use crate::ops::{self, Created, Existing, NewResource, OpError, Settled};
use crate::store::{BindingRecord, Effect, OperationKind, ResourceState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

/// `PUT .../service_bindings/:binding_id`.
pub async fn bind(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
    Accepts(accepts): Accepts,
    Body(body, raw): Body<BindBody>,
) -> Result<Reply, ApiError> {
    let ids = (path.instance_id.as_str(), path.binding_id.as_str());
    let predecessor = body.predecessor_binding_id.clone();
    let (service_id, plan_id) = (body.service_id.clone(), body.plan_id.clone());
    let record = checks::bind(&osb, ids, body, accepts)?;
    let (store, broker) = (&state.ops.store, &osb.broker.name);
    let plan = (
        service_id.as_deref().unwrap_or_default(),
        plan_id.as_deref().unwrap_or_default(),
    );
    let (instance, existing) = store.instance_and_binding(broker, ids.0, ids.1).await?;
    checks::bind_instance(instance, ids.0, plan)?;
    if let Some(predecessor) = &predecessor {
        let usable = store
            .binding(broker, predecessor)
            .await?
            .is_some_and(|b| b.instance_id == ids.0 && b.state == ResourceState::Ready);
        if !usable {
            return Err(ApiError::BadRequest(format!(
                "predecessor_binding_id {predecessor} is not a binding of instance {}",
                ids.0
            )));
        }
    }
    if let Some(existing) = existing {
        return repeated_bind(&existing, &record.attributes, accepts);
    }
    quotas::operations(&state, &osb).await?;
    let stored = osb.stored_call(OperationKind::Bind, (ids.0, Some(ids.1)), raw, accepts);
    let ctx = osb.context(&state, &stored);
    let attributes = record.attributes.clone();
    match ops::create(ctx, NewResource::Binding(record), stored).await? {
        Created::Exists(Existing::Binding(existing)) => {
            repeated_bind(&existing, &attributes, accepts)
        }
        Created::Exists(Existing::Instance(_)) => unreachable!("a bind creates a binding"),
        // A 202 for a bind carries only the operation, never credentials.
        Created::Ran(Settled::Accepted(operation)) => Ok(accepted(Some(operation))),
        // The binding holds exactly what the broker answered: no need to read it back.
        Created::Ran(Settled::Finished(Some(Effect::BindingReady { result }))) => {
            Ok((StatusCode::CREATED, result_body(Some(&result))).into())
        }
        Created::Ran(Settled::Finished(_)) => {
            let stored = store.binding(broker, ids.1).await?;
            let body = stored
                .as_ref()
                .map(binding_body)
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
    query: DeleteQuery,
) -> Result<Reply, ApiError> {
    let (instance_id, binding_id) = (&path.instance_id, &path.binding_id);
    let (store, broker) = (&state.ops.store, &osb.broker.name);
    let (kind, ids) = (
        OperationKind::Unbind,
        (instance_id.as_str(), Some(binding_id.as_str())),
    );
    if checks::deletes_unread(&state, &osb, &query) {
        match osb.delete(&state, kind, ids, &query).await {
            // Not there to delete (gone, of another instance, being deleted, busy): read, and
            // answered as read.
            Err(OpError::Busy(_)) => {}
            settled => return Ok(deleted(settled?)),
        }
    }
    let (instance, existing) = (store)
        .instance_and_binding(broker, instance_id, binding_id)
        .await?;
    checks::delete_ids(&osb, instance.as_ref(), &query.service_id, &query.plan_id)?;
    let existing = existing
        .filter(|b| b.instance_id == *instance_id)
        .ok_or_else(|| ApiError::Gone(format!("binding {binding_id} does not exist")))?;
    if existing.state == ResourceState::Deleting && query.accepts {
        return Ok(accepted(existing.operation_id));
    }
    validate::async_allowed(&osb, &query.plan_id, query.accepts)?;
    quotas::operations(&state, &osb).await?;
    Ok(deleted(osb.delete(&state, kind, ids, &query).await?))
}

/// `GET .../service_bindings/:binding_id`.
pub async fn fetch(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
) -> Result<Reply, ApiError> {
    let (store, broker) = (&state.ops.store, &osb.broker.name);
    let binding_id = &path.binding_id;
    let not_found = || ApiError::NotFound(format!("binding {binding_id} does not exist"));
    let (instance, binding) = (store)
        .instance_and_binding(broker, &path.instance_id, binding_id)
        .await?;
    let record = binding
        .filter(|b| b.instance_id == path.instance_id)
        .ok_or_else(not_found)?;
    match record.state {
        ResourceState::Ready => {}
        ResourceState::Deleting => {
            return Err(ApiError::ConcurrencyError(format!(
                "binding {binding_id} is being deleted"
            )))
        }
        _ => return Err(not_found()),
    }
    let instance = instance.ok_or_else(not_found)?;
    let service = osb.broker.catalog.service(&instance.service_id);
    if !service.is_some_and(|s| s.bindings_retrievable) {
        return Err(ApiError::BadRequest(
            "bindings of this service are not retrievable".into(),
        ));
    }
    Ok((StatusCode::OK, binding_body(&record)).into())
}

/// Answers a bind of a binding id that exists already.
fn repeated_bind(
    existing: &BindingRecord,
    attributes: &str,
    accepts_incomplete: bool,
) -> Result<Reply, ApiError> {
    let id = &existing.binding_id;
    if existing.attributes != attributes {
        return Err(ApiError::Conflict(format!(
            "binding {id} exists with other attributes"
        )));
    }
    match existing.state {
        ResourceState::Creating if accepts_incomplete => {
            Ok(accepted(existing.operation_id.clone()))
        }
        ResourceState::Ready => Ok((StatusCode::OK, binding_body(existing)).into()),
        _ => Err(ApiError::ConcurrencyError(format!(
            "binding {id} has an operation in progress"
        ))),
    }
}
