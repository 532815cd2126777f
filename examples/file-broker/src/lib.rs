//! file-broker: a port of the original Python test service.
//!
//! Provision writes a file named after the instance, holding the plan as JSON, into the
//! directory the runtime grants the broker; bind returns credentials `{"file": "<path>"}`;
//! unbind does nothing; deprovision removes the file.

use brokerbox_sdk::*;
use serde_json::json;
use std::path::PathBuf;

const SERVICE_ID: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const SMALL_PLAN_ID: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
const LARGE_PLAN_ID: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b102";

struct FileBroker;

/// The plans, as `(id, name, description)`.
const PLANS: [(&str, &str, &str); 2] = [
    (SMALL_PLAN_ID, "small", "A small file"),
    (LARGE_PLAN_ID, "large", "A large file"),
];

/// The service id: `[env] SERVICE_ID` when the manifest sets one (so one component can be
/// registered as many brokers, each with its own ids), else the built-in id.
fn service_id() -> String {
    config("SERVICE_ID").unwrap_or_else(|| SERVICE_ID.to_string())
}

/// The plans with their ids for this registration: the built-in ids, or `SERVICE_ID-NAME`
/// when `[env] SERVICE_ID` is set.
fn plans() -> Vec<(String, &'static str, &'static str)> {
    let custom = config("SERVICE_ID");
    PLANS
        .iter()
        .map(|(id, name, description)| {
            let id = match &custom {
                Some(service) => format!("{service}-{name}"),
                None => id.to_string(),
            };
            (id, *name, *description)
        })
        .collect()
}

/// The file that backs `instance_id`, refusing ids that could name another path.
fn instance_file(instance_id: &str) -> Result<PathBuf, BrokerError> {
    // At most 255 bytes: a file name's limit (the runtime caps ids at 255 bytes too).
    let safe = !instance_id.is_empty()
        && instance_id.len() <= 255
        && !instance_id.starts_with('.')
        && instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !safe {
        return Err(BrokerError::BadRequest(
            "instance id must be 1 to 255 letters, digits, '-', '_' and '.', not starting with '.'"
                .into(),
        ));
    }
    let dir = files_dir().ok_or_else(|| {
        BrokerError::Internal("file-broker needs the `files` grant in its manifest".into())
    })?;
    Ok(dir.join(instance_id))
}

/// Writes the plan of the instance as JSON into its file.
fn write_plan(instance_id: &str, plan_id: &str) -> Result<(), BrokerError> {
    let (id, name, description) = plans()
        .into_iter()
        .find(|(id, ..)| id == plan_id)
        .ok_or_else(|| BrokerError::BadRequest(format!("unknown plan {plan_id}")))?;
    let plan = json!({ "id": id, "name": name, "description": description });
    std::fs::write(instance_file(instance_id)?, plan.to_string())
        .map_err(|e| BrokerError::Internal(format!("cannot write instance file: {e}")))
}

impl Broker for FileBroker {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        let service = plans().iter().fold(
            Service::new(&service_id(), "file-service", "A file per instance")
                .bindable(true)
                .plan_updateable(true)
                .retrievable(true, true)
                .tag("file"),
            |service, (id, name, description)| service.plan(Plan::new(id, name, description)),
        );
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        write_plan(&request.instance_id, &request.plan_id)?;
        log::info(&format!(
            "wrote the file of instance {}",
            request.instance_id
        ));
        Ok(InstanceResponse::Done(InstanceResult::default()))
    }

    fn update(request: UpdateRequest) -> Result<InstanceResponse, BrokerError> {
        if let Some(plan_id) = &request.plan_id {
            write_plan(&request.instance_id, plan_id)?;
        }
        Ok(InstanceResponse::Done(InstanceResult::default()))
    }

    fn deprovision(request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        match std::fs::remove_file(instance_file(&request.instance_id)?) {
            Ok(()) => Ok(DeleteResponse::Done),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BrokerError::Gone(format!(
                "instance {} has no file",
                request.instance_id
            ))),
            Err(e) => Err(BrokerError::Internal(format!("cannot remove file: {e}"))),
        }
    }

    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        let file = instance_file(&request.instance_id)?;
        if !file.exists() {
            return Err(BrokerError::Unprocessable(format!(
                "instance {} has no file",
                request.instance_id
            )));
        }
        let credentials = json!({ "file": file.display().to_string() });
        Ok(BindingResponse::Done(BindingResult::with_credentials(
            &credentials,
        )?))
    }
}

export_broker!(FileBroker);
