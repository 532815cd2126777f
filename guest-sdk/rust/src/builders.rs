//! Constructors for the contract's records, so a catalog or a result reads in a few lines.

use crate::{
    BindingResult, BrokerError, DashboardClient, Endpoint, Failure, InstanceAccepted,
    InstanceResult, MaintenanceInfo, Plan, Progress, Service, ServiceCatalog, Success, VolumeMode,
    VolumeMount,
};
use serde::Serialize;
use serde_json::Value;
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

    /// Adds a permission the service requires (`syslog_drain`, `route_forwarding`,
    /// `volume_mount`).
    pub fn requires(mut self, permission: &str) -> Self {
        self.requires.push(permission.into());
        self
    }

    /// Sets `allow_context_updates`.
    pub fn allow_context_updates(mut self, yes: bool) -> Self {
        self.allow_context_updates = yes;
        self
    }

    /// Sets the service's metadata (a JSON object).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata.to_string());
        self
    }

    /// Sets the OAuth2 client of the service's dashboard.
    pub fn dashboard_client(mut self, client: DashboardClient) -> Self {
        self.dashboard_client = Some(client);
        self
    }

    /// Sets `binding_rotatable`.
    pub fn binding_rotatable(mut self, yes: bool) -> Self {
        self.binding_rotatable = yes;
        self
    }
}

impl DashboardClient {
    /// A dashboard client with no redirect URI.
    pub fn new(id: &str, secret: &str) -> Self {
        DashboardClient {
            id: id.into(),
            secret: secret.into(),
            redirect_uri: None,
        }
    }

    /// Sets `redirect_uri`.
    pub fn redirect_uri(mut self, uri: &str) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }
}

impl MaintenanceInfo {
    /// Maintenance info at `version` (semantic version), without a description.
    pub fn new(version: &str) -> Self {
        MaintenanceInfo {
            version: version.into(),
            description: None,
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.into());
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

    /// Sets the plan's metadata (a JSON object).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata.to_string());
        self
    }

    /// Overrides the service's `bindable` for this plan.
    pub fn bindable(mut self, yes: bool) -> Self {
        self.bindable = Some(yes);
        self
    }

    /// Overrides the service's `plan_updateable` for this plan.
    pub fn plan_updateable(mut self, yes: bool) -> Self {
        self.plan_updateable = Some(yes);
        self
    }

    /// Sets the OSB `schemas` object, e.g.
    /// `json!({"service_instance": {"create": {"parameters": {...}}}})`.
    pub fn schemas(mut self, schemas: Value) -> Self {
        self.schemas = Some(schemas.to_string());
        self
    }

    /// Sets `maximum_polling_duration`, in seconds.
    pub fn maximum_polling_duration(mut self, seconds: u64) -> Self {
        self.maximum_polling_duration = Some(seconds);
        self
    }

    /// Sets the plan's current maintenance info.
    pub fn maintenance_info(mut self, info: MaintenanceInfo) -> Self {
        self.maintenance_info = Some(info);
        self
    }

    /// Overrides the service's `binding_rotatable` for this plan.
    pub fn binding_rotatable(mut self, yes: bool) -> Self {
        self.binding_rotatable = Some(yes);
        self
    }
}

impl InstanceResult {
    /// A result with nothing in it (same as `default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `dashboard_url`.
    pub fn dashboard_url(mut self, url: &str) -> Self {
        self.dashboard_url = Some(url.into());
        self
    }

    /// Sets the instance's metadata (`labels`, `attributes`), a JSON object.
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = Some(metadata.to_string());
        self
    }
}

impl InstanceAccepted {
    /// An accepted long operation carrying `operation_data` to each `last_operation` call.
    pub fn new(operation_data: &str) -> Self {
        InstanceAccepted {
            operation_data: operation_data.into(),
            instance: InstanceResult::default(),
        }
    }

    /// Sets what the 202 answer carries (dashboard URL, metadata).
    pub fn instance(mut self, instance: InstanceResult) -> Self {
        self.instance = instance;
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

    /// Sets `syslog_drain_url`.
    pub fn syslog_drain_url(mut self, url: &str) -> Self {
        self.syslog_drain_url = Some(url.into());
        self
    }

    /// Sets `route_service_url`.
    pub fn route_service_url(mut self, url: &str) -> Self {
        self.route_service_url = Some(url.into());
        self
    }

    /// Adds a volume mount.
    pub fn volume_mount(mut self, mount: VolumeMount) -> Self {
        self.volume_mounts.push(mount);
        self
    }

    /// Adds a network endpoint.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Sets when the binding expires (`metadata.expires_at`, ISO 8601).
    pub fn expires_at(mut self, at: &str) -> Self {
        self.expires_at = Some(at.into());
        self
    }

    /// Sets when the binding should be rotated (`metadata.renew_before`, ISO 8601).
    pub fn renew_before(mut self, at: &str) -> Self {
        self.renew_before = Some(at.into());
        self
    }
}

impl VolumeMount {
    /// A volume mount with no `mount_config`.
    pub fn new(
        driver: &str,
        container_dir: &str,
        mode: VolumeMode,
        device_type: &str,
        volume_id: &str,
    ) -> Self {
        VolumeMount {
            driver: driver.into(),
            container_dir: container_dir.into(),
            mode,
            device_type: device_type.into(),
            volume_id: volume_id.into(),
            mount_config: None,
        }
    }

    /// Sets the device's `mount_config` (a JSON object).
    pub fn mount_config(mut self, config: Value) -> Self {
        self.mount_config = Some(config.to_string());
        self
    }
}

impl Endpoint {
    /// An endpoint at `host` on `ports` (each a port or a range such as "9000-9010").
    pub fn new(host: &str, ports: &[&str]) -> Self {
        Endpoint {
            host: host.into(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
            protocol: None,
        }
    }

    /// Sets the protocol (`tcp`, `udp` or `all`).
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.protocol = Some(protocol.into());
        self
    }
}

impl Progress {
    /// An operation still in progress, with nothing to say.
    pub fn new() -> Self {
        Progress {
            description: None,
            operation_data: None,
        }
    }

    /// Sets the description the platform shows.
    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Replaces the operation data the next `last_operation` call gets.
    pub fn operation_data(mut self, data: &str) -> Self {
        self.operation_data = Some(data.into());
        self
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Success {
    /// A finished operation, with nothing to hand over.
    pub fn new() -> Self {
        Success {
            description: None,
            binding: None,
            instance: None,
        }
    }

    /// Sets the description the platform shows.
    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Hands over the binding an asynchronous bind made.
    pub fn binding(mut self, binding: BindingResult) -> Self {
        self.binding = Some(binding);
        self
    }

    /// Hands over what an asynchronous provision or update made (dashboard URL, metadata).
    pub fn instance(mut self, instance: InstanceResult) -> Self {
        self.instance = Some(instance);
        self
    }
}

impl Default for Success {
    fn default() -> Self {
        Success::new()
    }
}

impl Failure {
    /// A failed operation, with the reason the platform shows.
    pub fn new(description: &str) -> Self {
        Failure {
            description: description.into(),
            instance_usable: None,
            update_repeatable: None,
        }
    }

    /// Sets `instance_usable` (after a failed update or deprovision).
    pub fn instance_usable(mut self, yes: bool) -> Self {
        self.instance_usable = Some(yes);
        self
    }

    /// Sets `update_repeatable` (after a failed update).
    pub fn update_repeatable(mut self, yes: bool) -> Self {
        self.update_repeatable = Some(yes);
        self
    }
}
