//! The catalog as OSB JSON (`GET /v2/catalog`), built from the guest's records.

use crate::sandbox::bindings::types::{MaintenanceInfo, Plan, Service};
use serde_json::{json, Map, Value};

/// The OSB JSON of a service and its plans.
///
/// # Errors
/// When a metadata or schemas field is not a JSON object.
pub fn service(service: &Service) -> Result<Value, String> {
    service_json(service)
}

/// Parses an optional JSON-object field of the catalog.
pub(super) fn object(what: &str, text: &Option<String>) -> Result<Option<Value>, String> {
    let Some(text) = text else { return Ok(None) };
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(Some(value)),
        _ => Err(format!("{what} must be a JSON object")),
    }
}

fn maintenance_json(info: &MaintenanceInfo) -> Value {
    let mut out = Map::new();
    out.insert("version".into(), json!(info.version));
    if let Some(d) = &info.description {
        out.insert("description".into(), json!(d));
    }
    Value::Object(out)
}

/// Inserts `key: value` when `value` is set.
fn put<T: Into<Value>>(out: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        out.insert(key.into(), value.into());
    }
}

fn service_json(service: &Service) -> Result<Value, String> {
    let plans = service
        .plans
        .iter()
        .map(|plan| plan_json(service, plan))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Map::new();
    out.insert("id".into(), json!(service.id));
    out.insert("name".into(), json!(service.name));
    out.insert("description".into(), json!(service.description));
    out.insert("tags".into(), json!(service.tags));
    out.insert("requires".into(), json!(service.requires));
    out.insert("bindable".into(), json!(service.bindable));
    out.insert(
        "instances_retrievable".into(),
        json!(service.instances_retrievable),
    );
    out.insert(
        "bindings_retrievable".into(),
        json!(service.bindings_retrievable),
    );
    out.insert(
        "allow_context_updates".into(),
        json!(service.allow_context_updates),
    );
    out.insert("plan_updateable".into(), json!(service.plan_updateable));
    out.insert("binding_rotatable".into(), json!(service.binding_rotatable));
    put(
        &mut out,
        "metadata",
        object("service metadata", &service.metadata)?,
    );
    if let Some(client) = &service.dashboard_client {
        let mut c = Map::new();
        c.insert("id".into(), json!(client.id));
        c.insert("secret".into(), json!(client.secret));
        put(&mut c, "redirect_uri", client.redirect_uri.clone());
        out.insert("dashboard_client".into(), Value::Object(c));
    }
    out.insert("plans".into(), Value::Array(plans));
    Ok(Value::Object(out))
}

fn plan_json(service: &Service, plan: &Plan) -> Result<Value, String> {
    let context = |field: &str| {
        format!(
            "metadata.{field} of plan {:?} of {:?}",
            plan.name, service.name
        )
    };
    let mut out = Map::new();
    out.insert("id".into(), json!(plan.id));
    out.insert("name".into(), json!(plan.name));
    out.insert("description".into(), json!(plan.description));
    put(
        &mut out,
        "metadata",
        object(&context("metadata"), &plan.metadata)?,
    );
    put(&mut out, "free", plan.free);
    put(&mut out, "bindable", plan.bindable);
    put(&mut out, "plan_updateable", plan.plan_updateable);
    put(&mut out, "binding_rotatable", plan.binding_rotatable);
    put(
        &mut out,
        "schemas",
        object(&context("schemas"), &plan.schemas)?,
    );
    put(
        &mut out,
        "maximum_polling_duration",
        plan.maximum_polling_duration,
    );
    put(
        &mut out,
        "maintenance_info",
        plan.maintenance_info.as_ref().map(maintenance_json),
    );
    Ok(Value::Object(out))
}
