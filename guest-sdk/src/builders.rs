//! Constructors for the contract's records, so a catalog or a result reads in a few lines.

use crate::{BindingResult, BrokerError, InstanceResult, Plan, Service, ServiceCatalog};
use serde::Serialize;
use std::path::PathBuf;

/// Environment variable through which the runtime tells the guest where its granted files
/// directory is (only set when the manifest grants `files`).
const FILES_DIR_ENV: &str = "BROKERBOX_FILES_DIR";

/// The directory the runtime granted this broker (manifest `[grants] files = true`), or `None`
/// when no directory was granted. Paths inside it are the same for the guest and the host.
pub fn files_dir() -> Option<PathBuf> {
    std::env::var_os(FILES_DIR_ENV).map(PathBuf::from)
}

/// A configuration value from the manifest's `[env]` table (the guest sees nothing else of
/// the host's environment).
pub fn config(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl ServiceCatalog {
    /// A catalog of `services`.
    pub fn new(services: Vec<Service>) -> Self {
        ServiceCatalog { services }
    }
}

impl Service {
    /// A service with no plans yet, not bindable, nothing retrievable or updateable.
    pub fn new(id: &str, name: &str, description: &str) -> Self {
        Service {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            tags: Vec::new(),
            requires: Vec::new(),
            bindable: false,
            instances_retrievable: false,
            bindings_retrievable: false,
            allow_context_updates: false,
            metadata: None,
            dashboard_client: None,
            plan_updateable: false,
            binding_rotatable: false,
            plans: Vec::new(),
        }
    }

    /// Sets `bindable`.
    pub fn bindable(mut self, yes: bool) -> Self {
        self.bindable = yes;
        self
    }

    /// Sets `plan_updateable`.
    pub fn plan_updateable(mut self, yes: bool) -> Self {
        self.plan_updateable = yes;
        self
    }

    /// Sets `instances_retrievable` and `bindings_retrievable`.
    pub fn retrievable(mut self, instances: bool, bindings: bool) -> Self {
        self.instances_retrievable = instances;
        self.bindings_retrievable = bindings;
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a plan.
    pub fn plan(mut self, plan: Plan) -> Self {
        self.plans.push(plan);
        self
    }
}

impl Plan {
    /// A plan with every optional field unset.
    pub fn new(id: &str, name: &str, description: &str) -> Self {
        Plan {
            id: id.into(),
            name: name.into(),
            description: description.into(),
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

    /// Sets `free`.
    pub fn free(mut self, yes: bool) -> Self {
        self.free = Some(yes);
        self
    }
}

#[allow(clippy::derivable_impls)] // the type is generated: it cannot carry a derive
impl Default for InstanceResult {
    fn default() -> Self {
        InstanceResult {
            dashboard_url: None,
            metadata: None,
        }
    }
}

#[allow(clippy::derivable_impls)] // the type is generated: it cannot carry a derive
impl Default for BindingResult {
    fn default() -> Self {
        BindingResult {
            credentials: None,
            syslog_drain_url: None,
            route_service_url: None,
            volume_mounts: Vec::new(),
            endpoints: Vec::new(),
            expires_at: None,
            renew_before: None,
        }
    }
}

impl BindingResult {
    /// A binding whose only content is `credentials`, serialised from any `Serialize` value.
    ///
    /// # Errors
    /// [`BrokerError::Internal`] when `credentials` cannot be serialised.
    pub fn with_credentials<T: Serialize + ?Sized>(credentials: &T) -> Result<Self, BrokerError> {
        Ok(BindingResult {
            credentials: Some(crate::to_json(credentials)?),
            ..Default::default()
        })
    }
}
