//! capability-broker (test guest): uses the `kv`, `env` and `outbound_http` capabilities. Provision stores the
//! parameters in kv under the instance id; bind hands them back with the configured greeting
//! and the keys it sees; deprovision deletes the key.

use brokerbox_sdk::*;
use serde_json::json;

struct Capabilities;

fn key(instance_id: &str) -> String {
    format!("instance/{instance_id}")
}

impl Broker for Capabilities {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        // `password` is marked secret: a fetched instance does not show it.
        let schemas = json!({ "service_instance": { "create": { "parameters": {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": { "password": { "type": "string", "format": "password" } } } } } });
        let service = Service::new("capability-service", "capabilities", "Uses kv and env")
            .bindable(true)
            .retrievable(true, true)
            .plan(Plan::new("capability-plan", "standard", "Standard").schemas(schemas));
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        let parameters = request.parameters_json()?;
        // With `{"url": ...}` the broker calls that URL (like a cloud API) and reports the
        // answer as the dashboard URL; a refused host is a 422 "blocked: ...".
        if let Some(url) = parameters.get("url").and_then(|u| u.as_str()) {
            let response =
                http::get(url).map_err(|e| BrokerError::Unprocessable(format!("blocked: {e}")))?;
            let text = String::from_utf8_lossy(&response.body).to_string();
            return Ok(InstanceResponse::Done(InstanceResult {
                dashboard_url: Some(format!("{} {text}", response.status)),
                metadata: None,
            }));
        }
        kv::set_json(&key(&request.instance_id), &parameters)?;
        Ok(InstanceResponse::Done(InstanceResult::default()))
    }

    fn deprovision(request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        kv::delete(&key(&request.instance_id))?;
        Ok(DeleteResponse::Done)
    }

    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        let stored: Option<serde_json::Value> = kv::get_json(&key(&request.instance_id))?;
        let credentials = json!({
            "stored": stored,
            "greeting": config("GREETING"),
            "home": config("HOME"),
            "keys": kv::list_keys("instance/")?,
        });
        Ok(BindingResponse::Done(BindingResult::with_credentials(
            &credentials,
        )?))
    }
}

export_broker!(Capabilities);
