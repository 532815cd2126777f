//! A broker's catalog: checked once when the broker loads, served as OSB JSON, and used to
//! check service and plan ids before the guest is called.

use crate::engine::bindings::types::{MaintenanceInfo, Plan, Service, ServiceCatalog};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// Largest catalog a guest may return, as OSB JSON.
pub const MAX_CATALOG_BYTES: usize = 1024 * 1024;

/// A validated catalog and its OSB JSON.
pub struct CheckedCatalog {
    catalog: ServiceCatalog,
    json: Value,
}

/// A plan together with the service it belongs to.
pub struct PlanRef<'a> {
    /// The service.
    pub service: &'a Service,
    /// The plan.
    pub plan: &'a Plan,
}

impl PlanRef<'_> {
    /// Whether instances of this plan may be bound (the plan overrides the service).
    pub fn bindable(&self) -> bool {
        self.plan.bindable.unwrap_or(self.service.bindable)
    }

    /// Whether instances may move away from this plan (the plan overrides the service).
    pub fn plan_updateable(&self) -> bool {
        self.plan
            .plan_updateable
            .unwrap_or(self.service.plan_updateable)
    }
}

impl CheckedCatalog {
    /// Validates a guest's catalog.
    ///
    /// # Errors
    /// A description of the first problem: no services, a service without plans, an empty or
    /// duplicate id or name, JSON fields that are not objects, or a catalog over the size cap.
    pub fn new(catalog: ServiceCatalog) -> Result<Self, String> {
        if catalog.services.is_empty() {
            return Err("the catalog has no services".into());
        }
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for service in &catalog.services {
            check_id("service", &service.id, &service.name, &mut ids)?;
            if !names.insert(service.name.as_str()) {
                return Err(format!("two services are named {:?}", service.name));
            }
            if service.plans.is_empty() {
                return Err(format!("service {:?} has no plans", service.name));
            }
            let mut plan_names = HashSet::new();
            for plan in &service.plans {
                check_id("plan", &plan.id, &plan.name, &mut ids)?;
                if !plan_names.insert(plan.name.as_str()) {
                    return Err(format!(
                        "service {:?} has two plans named {:?}",
                        service.name, plan.name
                    ));
                }
            }
        }
        let services = catalog
            .services
            .iter()
            .map(service_json)
            .collect::<Result<Vec<_>, _>>()?;
        let json = json!({ "services": services });
        let size = json.to_string().len();
        if size > MAX_CATALOG_BYTES {
            return Err(format!(
                "the catalog is {size} bytes, over the cap of {MAX_CATALOG_BYTES}"
            ));
        }
        Ok(CheckedCatalog { catalog, json })
    }

    /// The catalog as the OSB `GET /v2/catalog` body.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The service with `id`.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.catalog.services.iter().find(|s| s.id == id)
    }

    /// The plan `plan_id` of the service `service_id`; `None` unless the plan belongs to it.
    pub fn plan(&self, service_id: &str, plan_id: &str) -> Option<PlanRef<'_>> {
        let service = self.service(service_id)?;
        let plan = service.plans.iter().find(|p| p.id == plan_id)?;
        Some(PlanRef { service, plan })
    }
}

fn check_id<'a>(
    what: &str,
    id: &'a str,
    name: &str,
    ids: &mut HashSet<&'a str>,
) -> Result<(), String> {
    if id.trim().is_empty() || name.trim().is_empty() {
        return Err(format!("a {what} has an empty id or name"));
    }
    if !ids.insert(id) {
        return Err(format!("the id {id:?} is used twice"));
    }
    Ok(())
}

/// Parses an optional JSON-object field of the catalog.
fn object(what: &str, text: &Option<String>) -> Result<Option<Value>, String> {
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

impl CheckedCatalog {
    /// Every service and plan id of the catalog.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.catalog.services.iter().flat_map(|s| {
            std::iter::once(s.id.as_str()).chain(s.plans.iter().map(|p| p.id.as_str()))
        })
    }
}
