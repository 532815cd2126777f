//! {{name}}: an Open Service Broker for brokerbox.
//!
//! Provision records the instance's plan and parameters in the runtime's key-value store; bind
//! hands out credentials for it; deprovision forgets it. Replace the bodies with what your
//! service really does, then `brokerbox build` (or `brokerbox dev` to rebuild on every save).

use brokerbox_sdk::*;
use serde_json::json;

const SERVICE_ID: &str = "{{service_id}}";
const PLAN_ID: &str = "{{plan_id}}";

struct {{type_name}};

impl Broker for {{type_name}} {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        let plan = Plan::new(PLAN_ID, "standard", "A standard {{name}}");
        let service = Service::new(SERVICE_ID, "{{name}}", "{{name}}, served by brokerbox")
            .bindable(true)
            .plan(plan);
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        let record = json!({ "plan": request.plan_id, "parameters": request.parameters_json()? });
        kv::set_json(&format!("instance/{}", request.instance_id), &record)?;
        log::info(&format!("provisioned {}", request.instance_id));
        Ok(InstanceResponse::Done(InstanceResult::default()))
    }

    fn deprovision(request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        let key = format!("instance/{}", request.instance_id);
        if kv::get(&key)?.is_none() {
            return Err(BrokerError::Gone(format!("no instance {}", request.instance_id)));
        }
        kv::delete(&key)?;
        Ok(DeleteResponse::Done)
    }

    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        let record: serde_json::Value = kv::get_json(&format!("instance/{}", request.instance_id))?
            .ok_or_else(|| BrokerError::Unprocessable(format!("no instance {}", request.instance_id)))?;
        let credentials = json!({
            "uri": format!("https://{}.{{name}}.example.com", request.instance_id),
            "username": format!("user-{}", request.binding_id),
            "plan": record["plan"],
        });
        Ok(BindingResponse::Done(BindingResult::with_credentials(&credentials)?))
    }
}

export_broker!({{type_name}});
