//! slow-broker: demonstrates long operations.
//!
//! Provision, bind and deprovision answer `accepted` when the platform allows it; `last-operation` reports in-progress for a few
//! polls, then succeeded. The guest keeps no memory between calls, so the number of polls left
//! travels in the operation data, which each in-progress answer replaces.
//! The `async-only` plan refuses provisioning without `accepts_incomplete=true` (422
//! AsyncRequired); on the `flexible` plan the runtime then drives the operation to its end
//! itself and answers synchronously. `parameters.sleep_ms` makes the provision call itself slow.

use brokerbox_sdk::*;

const SERVICE_ID: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01";
const ASYNC_ONLY_PLAN_ID: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e11";
const FLEXIBLE_PLAN_ID: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e12";

/// Polls answered in-progress before an operation succeeds, unless `parameters.polls` says.
const DEFAULT_POLLS: u32 = 3;

#[derive(serde::Deserialize, Default)]
struct Params {
    /// Polls answered in-progress before the operation succeeds.
    polls: Option<u32>,
    /// Milliseconds the provision call itself takes (a slow call the host runs in the
    /// background), before it answers.
    sleep_ms: Option<u64>,
}

struct SlowBroker;

/// The binding slow-broker hands out.
fn credentials(binding_id: &str) -> Result<BindingResult, BrokerError> {
    BindingResult::with_credentials(&serde_json::json!({ "slow": true, "binding": binding_id }))
}

/// The operation data for an operation that needs `polls` more polls.
fn operation_data(polls: u32) -> String {
    polls.to_string()
}

impl Broker for SlowBroker {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        let service = Service::new(SERVICE_ID, "slow-service", "Takes its time")
            .bindable(true)
            .retrievable(true, true)
            .plan(Plan::new(
                ASYNC_ONLY_PLAN_ID,
                "async-only",
                "Provisions only asynchronously",
            ))
            .plan(Plan::new(
                FLEXIBLE_PLAN_ID,
                "flexible",
                "Asynchronous when allowed",
            ));
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        let params = request.parameters_as::<Params>()?;
        if !request.call.accepts_incomplete && request.plan_id == ASYNC_ONLY_PLAN_ID {
            // The host refuses this already (the manifest lists the plan as async-only); a
            // guest should not rely on it.
            return Err(BrokerError::AsyncRequired(
                "the async-only plan provisions only with accepts_incomplete=true".into(),
            ));
        }
        if let Some(ms) = params.sleep_ms {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let attempt = request.call.attempt;
            log::info(&format!("slept {ms} ms (attempt {attempt})"));
            // The dashboard URL tells which attempt finished (a retry after a crash is attempt 2).
            let dashboard = format!(
                "https://slow.example/{}?attempt={attempt}",
                request.instance_id
            );
            return Ok(InstanceResponse::Done(InstanceResult {
                dashboard_url: Some(dashboard),
                metadata: None,
            }));
        }
        // Without accepts_incomplete on the flexible plan the guest still answers `accepted`:
        // the runtime polls `last-operation` itself and answers when the operation is done.
        let polls = params.polls.unwrap_or(DEFAULT_POLLS);
        let result = InstanceResult {
            dashboard_url: Some(format!("https://slow.example/{}", request.instance_id)),
            metadata: None,
        };
        Ok(InstanceResponse::Accepted(InstanceAccepted {
            operation_data: operation_data(polls),
            instance: result,
        }))
    }

    fn deprovision(request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        if request.call.accepts_incomplete {
            Ok(DeleteResponse::Accepted(operation_data(DEFAULT_POLLS)))
        } else {
            Ok(DeleteResponse::Done)
        }
    }

    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        if request.call.accepts_incomplete {
            return Ok(BindingResponse::Accepted(operation_data(DEFAULT_POLLS)));
        }
        Ok(BindingResponse::Done(credentials(&request.binding_id)?))
    }

    fn last_operation(request: LastOperationRequest) -> Result<OperationState, BrokerError> {
        let left: u32 = request.operation_data.parse().map_err(|_| {
            BrokerError::Internal(format!("bad operation data {:?}", request.operation_data))
        })?;
        if left == 0 {
            // A finished asynchronous bind hands over its binding now.
            let binding = match (request.kind, &request.binding_id) {
                (OperationKind::Bind, Some(id)) => Some(credentials(id)?),
                _ => None,
            };
            // With `[env] RELEASE` set, a finished provision names the release that finished
            // it (the hot-reload tests use it).
            let instance = match (request.kind, config("RELEASE")) {
                (OperationKind::Provision, Some(release)) => Some(InstanceResult {
                    dashboard_url: Some(format!(
                        "https://slow.example/{}?finished-by={release}",
                        request.instance_id
                    )),
                    metadata: None,
                }),
                _ => None,
            };
            return Ok(OperationState::Succeeded(Success {
                description: Some("done".into()),
                binding,
                instance,
            }));
        }
        Ok(OperationState::InProgress(Progress {
            description: Some(format!("{left} polls to go")),
            operation_data: Some(operation_data(left - 1)),
        }))
    }
}

export_broker!(SlowBroker);
