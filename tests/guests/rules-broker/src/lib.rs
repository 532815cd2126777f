//! rules-broker (test guest): a catalog exercising the OSB rules the host enforces.
//!
//! - service `rules` (not plan-updateable, no context updates):
//!   - plan `strict`: parameter schemas, maintenance_info 1.2.0, rotatable bindings;
//!   - plan `other`: nothing special;
//!   - plan `stuck`: provisions asynchronously and never finishes (maximum_polling_duration 1 s);
//! - service `flexible` (plan-updateable, context updates allowed), plans `one` and `two`.
//!
//! Bind requires an app guid (422 RequiresApp). An update with `{"fail": true}` is accepted,
//! stays in progress for 3 polls, then fails with `instance_usable: false, update_repeatable: true`.

use brokerbox_sdk::*;
use serde_json::json;

struct RulesBroker;

fn strict_plan() -> Plan {
    let schema = |properties: serde_json::Value, required: &[&str]| {
        let mut schema = json!({ "$schema": "http://json-schema.org/draft-04/schema#",
                                 "type": "object", "properties": properties });
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        schema
    };
    Plan::new("strict-plan", "strict", "Checked parameters")
        .schemas(json!({
            "service_instance": {
                "create": { "parameters": schema(json!({ "size": { "type": "integer", "minimum": 1, "maximum": 10 } }), &["size"]) },
                "update": { "parameters": schema(json!({ "size": { "type": "integer" } }), &[]) },
            },
            "service_binding": {
                "create": { "parameters": schema(json!({ "role": { "enum": ["r", "rw"] } }), &[]) },
            },
        }))
        .maintenance_info(MaintenanceInfo::new("1.2.0"))
        .binding_rotatable(true)
}

impl Broker for RulesBroker {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        let stuck = Plan::new("stuck-plan", "stuck", "Never finishes").maximum_polling_duration(1);
        let rules = Service::new("rules-service", "rules", "Rules")
            .bindable(true)
            .retrievable(true, true)
            .plan(strict_plan())
            .plan(Plan::new("other-plan", "other", "Plain"))
            .plan(stuck);
        let flexible = Service::new("flexible-service", "flexible", "Updates freely")
            .bindable(true)
            .plan_updateable(true)
            .retrievable(true, true)
            .allow_context_updates(true)
            .plan(Plan::new("one-plan", "one", "One"))
            .plan(Plan::new("two-plan", "two", "Two"));
        Ok(ServiceCatalog::new(vec![rules, flexible]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        if request.plan_id == "stuck-plan" {
            return Ok(InstanceResponse::Accepted(InstanceAccepted {
                operation_data: "stuck".into(),
                instance: InstanceResult::default(),
            }));
        }
        Ok(InstanceResponse::Done(InstanceResult::default()))
    }

    fn update(request: UpdateRequest) -> Result<InstanceResponse, BrokerError> {
        if request.parameters_json()?.get("fail") == Some(&json!(true)) {
            return Ok(InstanceResponse::Accepted(InstanceAccepted {
                operation_data: "fail-after:3".into(),
                instance: InstanceResult::default(),
            }));
        }
        Ok(InstanceResponse::Done(InstanceResult {
            dashboard_url: Some(format!("https://rules.example/{}", request.instance_id)),
            metadata: None,
        }))
    }

    fn deprovision(_request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        Ok(DeleteResponse::Done)
    }

    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        let app = request
            .bind_resource
            .as_ref()
            .and_then(|r| r.app_guid.clone())
            .or(request.app_guid);
        if app.is_none() {
            return Err(BrokerError::RequiresApp("bindings need an app".into()));
        }
        let credentials =
            json!({ "user": request.binding_id, "rotates": request.predecessor_binding_id });
        Ok(BindingResponse::Done(BindingResult::with_credentials(
            &credentials,
        )?))
    }

    fn last_operation(request: LastOperationRequest) -> Result<OperationState, BrokerError> {
        // "fail-after:N": in progress for N more polls, then failed.
        let left = request
            .operation_data
            .strip_prefix("fail-after:")
            .and_then(|n| n.parse::<u32>().ok());
        match left {
            Some(0) => Ok(OperationState::Failed(Failure {
                description: "the update failed".into(),
                instance_usable: Some(false),
                update_repeatable: Some(true),
            })),
            Some(n) => Ok(OperationState::InProgress(Progress {
                description: None,
                operation_data: Some(format!("fail-after:{}", n - 1)),
            })),
            None => Ok(OperationState::InProgress(Progress {
                description: None,
                operation_data: None,
            })),
        }
    }
}

export_broker!(RulesBroker);
