//! Write an Open Service Broker (OSB) as a WebAssembly component for the brokerbox runtime.
//!
//! Implement [`Broker`] on a type, export it with [`export_broker!`], and build the crate (a
//! `cdylib`) with `cargo build --target wasm32-wasip2 --release`. The runtime serves the OSB HTTP
//! API, checks versions, credentials and ids, keeps state and runs long operations; the broker
//! only says what its catalog is and what each operation does.
//!
//! ```no_run
//! use brokerbox_sdk::*;
//!
//! struct Hello;
//!
//! impl Broker for Hello {
//!     fn catalog() -> Result<ServiceCatalog, BrokerError> {
//!         let plan = Plan::new("hello-plan-id", "small", "A small hello");
//!         Ok(ServiceCatalog::new(vec![
//!             Service::new("hello-service-id", "hello", "Says hello").bindable(true).plan(plan),
//!         ]))
//!     }
//!
//!     fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
//!         #[derive(serde::Deserialize, Default)]
//!         struct Params { greeting: Option<String> }
//!         let params: Params = request.parameters_as()?;
//!         log::info(&format!("greeting: {:?}", params.greeting));
//!         Ok(InstanceResponse::Done(InstanceResult::default()))
//!     }
//!
//!     fn deprovision(_request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
//!         Ok(DeleteResponse::Done)
//!     }
//!
//!     fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
//!         let credentials = serde_json::json!({ "instance": request.instance_id });
//!         Ok(BindingResponse::Done(BindingResult::with_credentials(&credentials)?))
//!     }
//! }
//!
//! export_broker!(Hello);
//! ```
#![deny(missing_docs)]

// Lets the generated bindings name this crate by its public path, inside and outside it.
extern crate self as brokerbox_sdk;

mod builders;
pub mod http;
mod json;
pub mod kv;
pub mod log;

pub use builders::{config, files_dir};
pub use json::{to_json, RequestJson};

/// The wit-bindgen output for the `brokerbox:broker/broker-http` world (the contract plus the
/// `wasi:http` import the [`http`] helper uses; the WIT is vendored in the crate's `wit/`). Not a stable API: use the
/// re-exports at the crate root.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "broker-http",
        path: "wit",
        // The WASI interfaces the world imports (wasi:http and what it uses) get bindings
        // of their own here: the SDK needs no other WASI crate.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_broker_world",
        default_bindings_module: "::brokerbox_sdk::bindings",
        runtime_path: "::brokerbox_sdk::__wit_bindgen_rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen::rt as __wit_bindgen_rt;

pub use bindings::brokerbox::broker::types::{
    BindRequest, BindResource, BindingResponse, BindingResult, BrokerError, CallInfo,
    DashboardClient, DeleteResponse, DeprovisionRequest, Endpoint, Failure, InstanceAccepted,
    InstanceResponse, InstanceResult, LastOperationRequest, MaintenanceInfo, OperationKind,
    OperationState, OriginatingIdentity, Plan, PreviousValues, Progress, ProvisionRequest, Service,
    ServiceCatalog, Success, UnbindRequest, UpdateRequest, VolumeMode, VolumeMount,
};
pub use serde_json;

/// An OSB broker. Implement the operations your service supports; the defaults answer the way
/// the OSB spec expects of a broker that does not support an operation.
///
/// Every function gets a fresh instance of the component: keep nothing in memory between calls.
/// What must outlast a call goes into the granted files directory (see [`files_dir`]) or into
/// the `operation-data` of a long operation.
pub trait Broker {
    /// The catalog: services and plans. Called once when the runtime loads the broker.
    fn catalog() -> Result<ServiceCatalog, BrokerError>;

    /// Creates a service instance; return [`InstanceResponse::Accepted`] to finish later.
    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError>;

    /// Updates a service instance. By default updates are refused with 422.
    fn update(request: UpdateRequest) -> Result<InstanceResponse, BrokerError> {
        let _ = request;
        Err(BrokerError::Unprocessable(
            "this broker does not support updating instances".into(),
        ))
    }

    /// Deletes a service instance; return [`DeleteResponse::Accepted`] to finish later.
    fn deprovision(request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError>;

    /// Creates a binding. By default bindings are refused with 400 (the service is not bindable).
    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        let _ = request;
        Err(BrokerError::BadRequest(
            "this broker does not support bindings".into(),
        ))
    }

    /// Deletes a binding. By default there is nothing to clean up, so it succeeds.
    fn unbind(request: UnbindRequest) -> Result<DeleteResponse, BrokerError> {
        let _ = request;
        Ok(DeleteResponse::Done)
    }

    /// Reports how a long operation is going. Only called for operations that returned
    /// `Accepted`; by default there are none, so it fails the operation.
    fn last_operation(request: LastOperationRequest) -> Result<OperationState, BrokerError> {
        let _ = request;
        Ok(OperationState::Failed(Failure {
            description: "this broker has no long operations".into(),
            instance_usable: None,
            update_repeatable: None,
        }))
    }
}

impl<T: Broker> bindings::exports::brokerbox::broker::osb::Guest for T {
    fn catalog() -> Result<ServiceCatalog, BrokerError> {
        T::catalog()
    }
    fn provision(request: ProvisionRequest) -> Result<InstanceResponse, BrokerError> {
        T::provision(request)
    }
    fn update(request: UpdateRequest) -> Result<InstanceResponse, BrokerError> {
        T::update(request)
    }
    fn deprovision(request: DeprovisionRequest) -> Result<DeleteResponse, BrokerError> {
        T::deprovision(request)
    }
    fn bind(request: BindRequest) -> Result<BindingResponse, BrokerError> {
        T::bind(request)
    }
    fn unbind(request: UnbindRequest) -> Result<DeleteResponse, BrokerError> {
        T::unbind(request)
    }
    fn last_operation(request: LastOperationRequest) -> Result<OperationState, BrokerError> {
        T::last_operation(request)
    }
}

/// Exports a type implementing [`Broker`] as the component's `osb` interface. Use it once,
/// at the crate root of a `cdylib`.
#[macro_export]
macro_rules! export_broker {
    ($broker:ident) => {
        $crate::bindings::__export_broker_world!($broker with_types_in $crate::bindings);
    };
}
