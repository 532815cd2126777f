//! trap-broker (test guest): the `trap` plan panics in provision, which traps the instance;
//! the `ok` plan provisions normally. Proves a trap is a 500 and the host keeps serving.

use brokerbox_sdk::*;

const TRAP_PLAN_ID: &str = "trap-plan";

struct TrapBroker;

impl Broker for TrapBroker {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        Ok(ServiceCatalog::new(vec![Service::new(
            "trap-service",
            "trap",
            "Traps on demand",
        )
        .plan(Plan::new(TRAP_PLAN_ID, "trap", "Provision panics"))
        .plan(Plan::new("ok-plan", "ok", "Provision works"))]))
    }

    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        if request.plan_id == TRAP_PLAN_ID {
            panic!("trap-broker was asked to trap");
        }
        Ok(InstanceResponse::Done(InstanceResult::default()))
    }

    fn deprovision(_request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        Ok(DeleteResponse::Done)
    }
}

export_broker!(TrapBroker);
