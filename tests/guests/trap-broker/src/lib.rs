//! trap-broker (test guest): the `trap` plan panics in provision, which traps the instance;
//! the `ok` plan provisions normally. Proves a trap is a 500 and the host keeps serving.
//!
//! It also shows which version of it answers, for the hot-reload tests: the manifest's
//! `[env] VERSION` appears in the catalog's description and as the dashboard URL of an `ok`
//! provision; `EXTRA_PLAN` adds a plan and `OK_PLAN_ID` changes the `ok` plan's id.

use brokerbox_sdk::*;

const TRAP_PLAN_ID: &str = "trap-plan";

struct TrapBroker;

fn version() -> String {
    config("VERSION").unwrap_or_else(|| "none".into())
}

impl Broker for TrapBroker {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        let description = format!("Traps on demand (version {})", version());
        let ok_id = config("OK_PLAN_ID").unwrap_or_else(|| "ok-plan".into());
        let mut service = Service::new("trap-service", "trap", &description)
            .plan(Plan::new(TRAP_PLAN_ID, "trap", "Provision panics"))
            .plan(Plan::new(&ok_id, "ok", "Provision works"));
        if config("EXTRA_PLAN").is_some() {
            service = service.plan(Plan::new("extra-plan", "extra", "Only in some versions"));
        }
        Ok(ServiceCatalog::new(vec![service]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        if request.plan_id == TRAP_PLAN_ID {
            panic!("trap-broker was asked to trap");
        }
        Ok(InstanceResponse::Done(InstanceResult {
            dashboard_url: Some(format!("version {}", version())),
            metadata: None,
        }))
    }

    fn deprovision(_request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        Ok(DeleteResponse::Done)
    }
}

export_broker!(TrapBroker);
