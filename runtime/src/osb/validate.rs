//! Checks of a request against the broker's catalog, made before anything is stored or the
//! guest runs: the plan belongs to the service, parameters match the plan's schema, and
//! maintenance info matches the plan's.

use crate::catalog::{PlanRef, SchemaKind};
use crate::error::ApiError;
use crate::ops::wire::MaintenanceInfoWire;
use crate::registry::LoadedBroker;
use serde_json::Value;

/// A required string field: missing or empty → 400 naming it.
///
/// # Errors
/// 400 when absent or empty.
pub fn required(field: &str, value: Option<String>) -> Result<String, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("{field} is required")))
}

/// An optional JSON object field as text: anything but an object → 400 naming it.
///
/// # Errors
/// 400 when present and not an object.
pub fn object_text(field: &str, value: Option<Value>) -> Result<Option<String>, ApiError> {
    crate::ops::wire::object_text(field, value).map_err(ApiError::BadRequest)
}

/// `bind_resource` converted: anything but an object → 400.
///
/// # Errors
/// 400 when present and not an object.
pub fn bind_resource(
    value: Option<Value>,
) -> Result<Option<crate::sandbox::bindings::types::BindResource>, ApiError> {
    crate::ops::wire::bind_resource(value).map_err(ApiError::BadRequest)
}

/// 422 `AsyncRequired` when the broker's manifest makes `plan_id` async-only and the platform
/// cannot wait asynchronously; checked before anything is stored.
///
/// # Errors
/// 422 `AsyncRequired`.
pub fn async_allowed(
    osb: &super::request::Osb,
    plan_id: &str,
    accepts_incomplete: bool,
) -> Result<(), ApiError> {
    if !accepts_incomplete && osb.broker.manifest.operations.async_required(plan_id) {
        return Err(ApiError::AsyncRequired(format!(
            "plan {plan_id} runs asynchronously only; send accepts_incomplete=true"
        )));
    }
    Ok(())
}

/// The plan `plan_id` of service `service_id`.
///
/// # Errors
/// 400 when the service is unknown or the plan is not one of its plans.
pub fn plan<'a>(
    broker: &'a LoadedBroker,
    service_id: &str,
    plan_id: &str,
) -> Result<PlanRef<'a>, ApiError> {
    if broker.catalog.service(service_id).is_none() {
        return Err(ApiError::BadRequest(format!(
            "service_id {service_id} is not in the catalog"
        )));
    }
    broker.catalog.plan(service_id, plan_id).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "plan_id {plan_id} is not a plan of service {service_id}"
        ))
    })
}

/// Checks `parameters` (JSON text, `None` when absent) against the plan's schema of `kind`.
/// Absent parameters are checked as `{}` for creates and not at all for updates (an update
/// without parameters changes none).
///
/// # Errors
/// 400 listing each violation.
pub fn parameters(
    plan: &PlanRef<'_>,
    kind: SchemaKind,
    parameters: Option<&str>,
) -> Result<(), ApiError> {
    let value = match parameters {
        Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        None if kind == SchemaKind::InstanceUpdate => return Ok(()),
        None => Value::Object(Default::default()),
    };
    plan.schemas
        .check(kind, &value)
        .map_err(ApiError::BadRequest)
}

/// Checks the `maintenance_info` a request asks for against the plan's.
///
/// # Errors
/// 422 `MaintenanceInfoConflict` when the versions differ or the plan has none.
pub fn maintenance_info(
    plan: &PlanRef<'_>,
    requested: Option<&MaintenanceInfoWire>,
) -> Result<(), ApiError> {
    let Some(requested) = requested else {
        return Ok(());
    };
    match &plan.plan.maintenance_info {
        Some(current) if current.version == requested.version => Ok(()),
        Some(current) => Err(ApiError::MaintenanceInfoConflict(format!(
            "maintenance_info.version {} does not match the plan's {}",
            requested.version, current.version
        ))),
        None => Err(ApiError::MaintenanceInfoConflict(format!(
            "plan {} has no maintenance_info, but the request asks for version {}",
            plan.plan.name, requested.version
        ))),
    }
}
