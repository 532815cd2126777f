//! A broker's catalog: checked once when the broker loads, served as OSB JSON, and used to
//! check service and plan ids and parameters before the guest is called.

mod schemas;
mod validate;
mod wire;

pub use schemas::{PlanSchemas, SchemaKind};

use crate::sandbox::bindings::types::{Plan, Service, ServiceCatalog};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Largest catalog a guest may return, as OSB JSON.
pub const MAX_CATALOG_BYTES: usize = 1024 * 1024;

/// A validated catalog, its OSB JSON, and the compiled parameter schemas of its plans.
pub struct CheckedCatalog {
    catalog: ServiceCatalog,
    json: Value,
    /// `json` serialized once, as `GET /v2/catalog` sends it on every request.
    body: bytes::Bytes,
    schemas: HashMap<String, PlanSchemas>,
}

/// A plan together with the service it belongs to.
pub struct PlanRef<'a> {
    /// The service.
    pub service: &'a Service,
    /// The plan.
    pub plan: &'a Plan,
    /// The plan's compiled parameter schemas.
    pub schemas: &'a PlanSchemas,
}

impl PlanRef<'_> {
    /// Whether instances of this plan may be bound (the plan overrides the service).
    pub fn bindable(&self) -> bool {
        self.plan.bindable.unwrap_or(self.service.bindable)
    }

    /// Whether bindings of this plan may be rotated (the plan overrides the service).
    pub fn binding_rotatable(&self) -> bool {
        self.plan
            .binding_rotatable
            .unwrap_or(self.service.binding_rotatable)
    }

    /// Whether instances may move away from this plan (the plan overrides the service).
    pub fn plan_updateable(&self) -> bool {
        self.plan
            .plan_updateable
            .unwrap_or(self.service.plan_updateable)
    }
}

impl CheckedCatalog {
    /// Validates a guest's catalog and compiles its parameter schemas.
    ///
    /// # Errors
    /// A description of every problem found (see `validate`), or a catalog over the size cap.
    pub fn new(catalog: ServiceCatalog) -> Result<Self, String> {
        let problems = validate::problems(&catalog);
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let mut schemas = HashMap::new();
        for service in &catalog.services {
            for plan in &service.plans {
                let compiled = PlanSchemas::compile(plan)
                    .map_err(|e| format!("plan {:?} of {:?}: {e}", plan.name, service.name))?;
                schemas.insert(plan.id.clone(), compiled);
            }
        }
        let services = catalog
            .services
            .iter()
            .map(wire::service)
            .collect::<Result<Vec<_>, _>>()?;
        let json = json!({ "services": services });
        let body = bytes::Bytes::from(json.to_string());
        let size = body.len();
        if size > MAX_CATALOG_BYTES {
            return Err(format!(
                "the catalog is {size} bytes, over the cap of {MAX_CATALOG_BYTES}"
            ));
        }
        Ok(CheckedCatalog {
            catalog,
            json,
            body,
            schemas,
        })
    }

    /// The catalog as the OSB `GET /v2/catalog` body.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// [`CheckedCatalog::json`] as the bytes of the body (made once, shared by every answer).
    pub fn body(&self) -> bytes::Bytes {
        self.body.clone()
    }

    /// The service with `id`.
    pub fn service(&self, id: &str) -> Option<&Service> {
        self.catalog.services.iter().find(|s| s.id == id)
    }

    /// The plan `plan_id` of the service `service_id`; `None` unless the plan belongs to it.
    pub fn plan(&self, service_id: &str, plan_id: &str) -> Option<PlanRef<'_>> {
        let service = self.service(service_id)?;
        let plan = service.plans.iter().find(|p| p.id == plan_id)?;
        let schemas = self.schemas.get(plan_id)?;
        Some(PlanRef {
            service,
            plan,
            schemas,
        })
    }

    /// Every service name and plan name (as `service/plan`) with its id.
    pub fn names(&self) -> impl Iterator<Item = (String, &str)> {
        self.catalog.services.iter().flat_map(|s| {
            std::iter::once((s.name.clone(), s.id.as_str())).chain(
                s.plans
                    .iter()
                    .map(move |p| (format!("{}/{}", s.name, p.name), p.id.as_str())),
            )
        })
    }

    /// Every service and plan id of the catalog.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.catalog.services.iter().flat_map(|s| {
            std::iter::once(s.id.as_str()).chain(s.plans.iter().map(|p| p.id.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::bindings::types::MaintenanceInfo;

    fn plan(id: &str, name: &str) -> Plan {
        Plan {
            id: id.into(),
            name: name.into(),
            description: "a plan".into(),
            metadata: None,
            free: None,
            bindable: None,
            plan_updateable: None,
            schemas: None,
            maximum_polling_duration: None,
            maintenance_info: None,
            binding_rotatable: None,
        }
    }

    fn service(id: &str, name: &str, plans: Vec<Plan>) -> Service {
        Service {
            id: id.into(),
            name: name.into(),
            description: "a service".into(),
            tags: vec![],
            requires: vec![],
            bindable: true,
            instances_retrievable: false,
            bindings_retrievable: false,
            allow_context_updates: false,
            metadata: None,
            dashboard_client: None,
            plan_updateable: false,
            binding_rotatable: false,
            plans,
        }
    }

    fn check(services: Vec<Service>) -> Result<CheckedCatalog, String> {
        CheckedCatalog::new(ServiceCatalog { services })
    }

    #[test]
    fn a_valid_catalog_is_served_and_plans_belong_to_their_service() {
        let catalog = check(vec![
            service("s1", "one", vec![plan("p1", "small")]),
            service("s2", "two", vec![plan("p2", "small")]),
        ])
        .unwrap();
        assert!(catalog.plan("s1", "p1").is_some());
        assert!(catalog.plan("s1", "p2").is_none(), "p2 belongs to s2");
        assert_eq!(catalog.json()["services"][1]["plans"][0]["id"], "p2");
    }

    #[test]
    fn every_broken_rule_is_named() {
        let mut bad_version = plan("p3", "v");
        bad_version.maintenance_info = Some(MaintenanceInfo {
            version: "1.2".into(),
            description: None,
        });
        let mut no_description = plan("p4", "d");
        no_description.description = " ".into();
        let error = check(vec![
            service("s1", "one", vec![plan("p1", "small"), plan("p1", "small")]),
            service("s2", "one", vec![]),
            service("s3", "has space", vec![bad_version, no_description]),
        ])
        .err()
        .unwrap();
        for expected in [
            "the id \"p1\" is used twice",
            "two plans named \"small\"",
            "two services are named \"one\"",
            "has no plans",
            "CLI-friendly",
            "not a semantic version",
            "empty description",
        ] {
            assert!(
                error.contains(expected),
                "{expected:?} missing from {error}"
            );
        }
        assert!(check(vec![]).is_err());
    }

    #[test]
    fn schemas_must_be_valid_osb_json_schemas() {
        let with_schema = |schema: serde_json::Value| {
            let mut p = plan("p1", "small");
            p.schemas = Some(
                json!({ "service_instance": { "create": { "parameters": schema } } }).to_string(),
            );
            check(vec![service("s1", "one", vec![p])])
        };
        let draft4 = "http://json-schema.org/draft-04/schema#";
        assert!(with_schema(json!({ "$schema": draft4, "type": "object" })).is_ok());
        let no_version = with_schema(json!({ "type": "object" })).err().unwrap();
        assert!(no_version.contains("$schema"), "{no_version}");
        let invalid = with_schema(json!({ "$schema": draft4, "type": 12 }))
            .err()
            .unwrap();
        assert!(invalid.contains("not a valid JSON Schema"), "{invalid}");
        let external =
            with_schema(json!({ "$schema": draft4, "$ref": "http://example.com/s.json" }));
        assert!(external.err().unwrap().contains("external reference"));
        let checked = with_schema(json!({ "$schema": draft4, "type": "object",
            "properties": { "n": { "type": "integer" },
                "password": { "type": "string", "format": "password" },
                "db": { "type": "object", "properties": {
                    "token": { "type": "string", "writeOnly": true }, "name": {} } } },
            "required": ["n"] }))
        .unwrap();
        let mut shown =
            json!({ "n": 1, "password": "hunter2", "db": { "token": "t", "name": "d" } });
        checked.plan("s1", "p1").unwrap().schemas.redact(&mut shown);
        assert_eq!(shown, json!({ "n": 1, "db": { "name": "d" } }));
        let plan = checked.plan("s1", "p1").unwrap();
        assert!(plan
            .schemas
            .check(SchemaKind::InstanceCreate, &json!({ "n": 1 }))
            .is_ok());
        let error = plan
            .schemas
            .check(SchemaKind::InstanceCreate, &json!({ "n": "x" }))
            .unwrap_err();
        assert!(error.contains("/n"), "{error}");
        assert!(!error.contains("\"x\""), "the value is masked: {error}");
        assert!(plan
            .schemas
            .check(SchemaKind::BindingCreate, &json!({ "n": "x" }))
            .is_ok());
    }
}
