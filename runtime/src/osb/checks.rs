//! What each mutating request must satisfy before anything is stored or the guest runs: its
//! required fields, and the broker's catalog (plan of the service, schemas, maintenance info,
//! plan changes, bindability, async-only plans).

use super::params::DeleteQuery;
use super::request::Osb;
use super::validate::{self, object_text, required};
use super::{quotas, AppState};
use crate::catalog::SchemaKind;
use crate::error::ApiError;
use crate::ops::wire::{BindBody, ProvisionBody, UpdateBody};
use crate::store::{BindingRecord, InstanceRecord, ResourceState};
use serde_json::{json, Value};

/// A provision's body checked: the instance to create (its attributes tell an identical
/// repeat from a conflict).
pub fn provision(
    osb: &Osb,
    instance_id: &str,
    body: ProvisionBody,
    accepts: bool,
) -> Result<InstanceRecord, ApiError> {
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
    validate::async_allowed(osb, &plan_id, accepts)?;
    let attributes = json!({
        "service_id": service_id, "plan_id": plan_id,
        "organization_guid": organization_guid, "space_guid": space_guid,
        "parameters": parameters.as_deref().map(|p| serde_json::from_str::<Value>(p).unwrap_or_default()),
        "maintenance_info": body.maintenance_info,
    });
    Ok(InstanceRecord {
        broker: osb.broker.name.clone(),
        instance_id: instance_id.to_string(),
        service_id,
        plan_id,
        attributes: attributes.to_string(),
        parameters,
        context,
        dashboard_url: None,
        metadata: None,
        maintenance_info: attributes["maintenance_info"]
            .is_object()
            .then(|| attributes["maintenance_info"].to_string()),
        state: ResourceState::Creating,
        operation_id: None,
    })
}

/// What an update changes, once checked.
pub enum Update {
    /// Only the context, and the service does not take context updates: nothing to do.
    Nothing,
    /// Run it; the plan it moves the instance to, if it changes plan.
    Run(Option<String>),
}

/// An update's body checked against the instance it changes.
pub fn update(
    osb: &Osb,
    existing: &InstanceRecord,
    body: &UpdateBody,
    accepts: bool,
) -> Result<Update, ApiError> {
    let id = &existing.instance_id;
    let service_id = required("service_id", body.service_id.clone())?;
    if existing.state == ResourceState::Creating {
        return Err(ApiError::ConcurrencyError(format!(
            "instance {id} is still being provisioned"
        )));
    }
    if existing.service_id != service_id {
        return Err(ApiError::BadRequest(format!(
            "instance {id} belongs to service {}, not {service_id}",
            existing.service_id
        )));
    }
    let current = osb
        .broker
        .catalog
        .plan(&service_id, &existing.plan_id)
        .ok_or_else(|| {
            // A newer version dropped the plan (forced past the check): the instance can
            // still be deleted, not updated.
            ApiError::Unprocessable(format!(
                "the plan of instance {id} is no longer in the catalog; it can only be deleted"
            ))
        })?;
    let target_plan = body.plan_id.clone().filter(|p| *p != existing.plan_id);
    let plan = match &target_plan {
        Some(_) if !current.plan_updateable() => {
            return Err(ApiError::Unprocessable(format!(
                "the plan of instance {id} cannot be changed (plan_updateable is false)"
            )));
        }
        Some(plan_id) => validate::plan(&osb.broker, &service_id, plan_id)?,
        None => current,
    };
    let parameters = object_text("parameters", body.parameters.clone())?;
    object_text("context", body.context.clone())?;
    validate::parameters(&plan, SchemaKind::InstanceUpdate, parameters.as_deref())?;
    validate::maintenance_info(&plan, body.maintenance_info.as_ref())?;
    let context_only =
        target_plan.is_none() && parameters.is_none() && body.maintenance_info.is_none();
    if context_only && !plan.service.allow_context_updates {
        return Ok(Update::Nothing);
    }
    validate::async_allowed(osb, &plan.plan.id, accepts)?;
    Ok(Update::Run(target_plan))
}

/// A bind's body checked against the catalog (the instance is checked by [`bind_instance`]).
pub fn bind(
    osb: &Osb,
    ids: (&str, &str),
    body: BindBody,
    accepts: bool,
) -> Result<BindingRecord, ApiError> {
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
    let resource = validate::bind_resource(body.bind_resource)?;
    validate::async_allowed(osb, &plan_id, accepts)?;
    let attributes = json!({
        "instance_id": ids.0, "service_id": service_id, "plan_id": plan_id,
        "app_guid": body.app_guid, "bind_resource": resource.as_ref().map(|r| r.raw.clone()),
        "parameters": parameters.as_deref().map(|p| serde_json::from_str::<Value>(p).unwrap_or_default()),
        "predecessor_binding_id": body.predecessor_binding_id,
    });
    Ok(BindingRecord {
        broker: osb.broker.name.clone(),
        binding_id: ids.1.to_string(),
        instance_id: ids.0.to_string(),
        attributes: attributes.to_string(),
        result: None,
        state: ResourceState::Creating,
        operation_id: None,
    })
}

/// The instance a bind is for: it exists, is not busy being created or deleted, and is of
/// the service and plan the bind names.
pub fn bind_instance(
    instance: Option<InstanceRecord>,
    id: &str,
    (service_id, plan_id): (&str, &str),
) -> Result<(), ApiError> {
    let instance = instance
        .filter(|i| i.state != ResourceState::Failed)
        .ok_or_else(|| ApiError::NotFound(format!("instance {id} does not exist")))?;
    let busy = match instance.state {
        ResourceState::Creating => Some("provisioned"),
        ResourceState::Deleting => Some("deprovisioned"),
        _ => None,
    };
    if let Some(being) = busy {
        return Err(ApiError::ConcurrencyError(format!(
            "instance {id} has an operation in progress (being {being})"
        )));
    }
    if instance.service_id != service_id || instance.plan_id != plan_id {
        return Err(ApiError::BadRequest(format!(
            "instance {id} is of service {} plan {}",
            instance.service_id, instance.plan_id
        )));
    }
    Ok(())
}

/// Whether a delete (deprovision, unbind) may start without reading its resource first: its
/// ids name a plan of the catalog (so they need not be compared with the resource's own), no
/// plan of the broker refuses it synchronously, and no quota applies (a delete of a resource
/// that is gone answers 410, never a quota's 422). The delete's guard (the resource ready or
/// failed, the binding of that instance) then decides; a refused delete is read and answered
/// as if it had been read first.
pub fn deletes_unread(state: &AppState, osb: &Osb, query: &DeleteQuery) -> bool {
    let operations = &osb.broker.manifest.operations;
    let never_refused = operations.async_required_by_none() || query.accepts;
    never_refused
        && validate::plan(&osb.broker, &query.service_id, &query.plan_id).is_ok()
        && !quotas::any(state, osb)
}

/// The ids a delete names: the resource's own instance's service and plan need not be in
/// the catalog any more (an instance whose plan a newer version dropped can still be
/// deleted); other ids must be.
pub fn delete_ids(
    osb: &Osb,
    instance: Option<&InstanceRecord>,
    service_id: &str,
    plan_id: &str,
) -> Result<(), ApiError> {
    let own = instance.is_some_and(|i| i.service_id == service_id && i.plan_id == plan_id);
    if !own {
        validate::plan(&osb.broker, service_id, plan_id)?;
    }
    Ok(())
}
