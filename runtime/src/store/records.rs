//! The records the store keeps: instances, bindings, operations and their outcomes and
//! effects, and the versions of brokers.

use super::StoreError;

/// Where an instance or binding is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceState {
    /// Being created by an operation in progress.
    Creating,
    /// Exists and is usable.
    Ready,
    /// Being updated by an operation in progress (instances only).
    Updating,
    /// Being deleted by an operation in progress.
    Deleting,
    /// Its creation failed; only deletion makes sense now.
    Failed,
}

/// The kind of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    /// Creating an instance.
    Provision,
    /// Updating an instance.
    Update,
    /// Deleting an instance.
    Deprovision,
    /// Creating a binding.
    Bind,
    /// Deleting a binding.
    Unbind,
}

/// The OSB `last_operation` state of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationState {
    /// Still running.
    InProgress,
    /// Finished well.
    Succeeded,
    /// Finished badly.
    Failed,
}

/// A stored service instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Broker that owns it.
    pub broker: String,
    /// OSB instance id.
    pub instance_id: String,
    /// Service id.
    pub service_id: String,
    /// Current plan id.
    pub plan_id: String,
    /// Canonical JSON of the create request, for idempotency checks.
    pub attributes: String,
    /// Parameters of the last create or update, JSON.
    pub parameters: Option<String>,
    /// Context of the last create or update, JSON.
    pub context: Option<String>,
    /// Dashboard URL from the broker.
    pub dashboard_url: Option<String>,
    /// OSB instance metadata from the broker, JSON.
    pub metadata: Option<String>,
    /// Maintenance info, JSON.
    pub maintenance_info: Option<String>,
    /// Life-cycle state.
    pub state: ResourceState,
    /// The operation in progress or last run on it.
    pub operation_id: Option<String>,
}

/// A stored binding.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    /// Broker that owns it.
    pub broker: String,
    /// OSB binding id.
    pub binding_id: String,
    /// Instance it belongs to.
    pub instance_id: String,
    /// Canonical JSON of the bind request, for idempotency checks.
    pub attributes: String,
    /// The OSB binding body once the binding exists, JSON.
    pub result: Option<String>,
    /// Life-cycle state.
    pub state: ResourceState,
    /// The operation in progress or last run on it.
    pub operation_id: Option<String>,
}

/// A stored operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRecord {
    /// Id handed to the platform as `operation`.
    pub id: String,
    /// Broker that runs it.
    pub broker: String,
    /// Instance it concerns.
    pub instance_id: String,
    /// Binding it concerns, for bind and unbind.
    pub binding_id: Option<String>,
    /// What it does.
    pub kind: OperationKind,
    /// How it is going.
    pub state: OperationState,
    /// Message for the platform.
    pub description: Option<String>,
    /// The guest's data for its `last-operation`, when the guest runs it.
    pub guest_data: Option<String>,
    /// Plan the instance moves to (an update that changes plan).
    pub target_plan: Option<String>,
    /// How many times it was started.
    pub attempts: u32,
    /// For a failed update or deprovision: whether the instance still works.
    pub instance_usable: Option<bool>,
    /// For a failed update: whether repeating it may succeed.
    pub update_repeatable: Option<bool>,
    /// When it started, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// What to replay on a retry: the request as the engine stored it (JSON).
    pub request: Option<String>,
    /// The runtime running it now, if any.
    pub owner: Option<String>,
    /// Until when the owner's claim holds (ms since the epoch); after it, another runtime may
    /// take the operation over.
    pub lease_until: Option<i64>,
    /// When the guest's `last-operation` is asked next (long operations only).
    pub next_poll_at: Option<i64>,
    /// How many times the guest was polled.
    pub polls: u32,
    /// The version of the broker that started it.
    pub broker_version: Option<String>,
    /// Who asked for it, as the audit trail names them (see [`AuditEntry::actor`]).
    pub actor: Option<String>,
    /// The tenant of its broker when it started.
    pub tenant: Option<String>,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Succeeded or failed.
    pub state: OperationState,
    /// Message for the platform.
    pub description: Option<String>,
    /// For a failed update or deprovision: whether the instance still works.
    pub instance_usable: Option<bool>,
    /// For a failed update: whether repeating it may succeed.
    pub update_repeatable: Option<bool>,
}

impl Outcome {
    /// A success with an optional message.
    pub fn succeeded(description: Option<String>) -> Self {
        Outcome {
            state: OperationState::Succeeded,
            description,
            instance_usable: None,
            update_repeatable: None,
        }
    }

    /// A failure with a message.
    pub fn failed(description: impl Into<String>) -> Self {
        Outcome {
            state: OperationState::Failed,
            description: Some(description.into()),
            instance_usable: None,
            update_repeatable: None,
        }
    }
}

/// What an operation's outcome does to the resource it concerns.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Leave the resource alone.
    None,
    /// The instance is ready, with these values from the broker and the request.
    InstanceReady {
        /// Plan it is on now.
        plan_id: String,
        /// Dashboard URL, when the broker gave one.
        dashboard_url: Option<String>,
        /// Metadata, when the broker gave some.
        metadata: Option<String>,
        /// Parameters, when the request changed them.
        parameters: Option<String>,
        /// Context, when the request changed it.
        context: Option<String>,
        /// Maintenance info, when the request changed it.
        maintenance_info: Option<String>,
    },
    /// The instance stays as it is but learns values the broker knows early (an accepted
    /// provision or update).
    InstanceAnnotated {
        /// Dashboard URL, when the broker gave one.
        dashboard_url: Option<String>,
        /// Metadata, when the broker gave some.
        metadata: Option<String>,
    },
    /// The instance goes back to ready unchanged (a failed update or deprovision).
    InstanceRestored,
    /// The instance's creation failed; it stays until deleted.
    InstanceFailed,
    /// The instance and its bindings are gone.
    InstanceDeleted,
    /// The binding exists with this body.
    BindingReady {
        /// OSB binding body, JSON.
        result: String,
    },
    /// The binding goes back to ready unchanged (a failed unbind).
    BindingRestored,
    /// The binding is gone (deleted, or its creation failed).
    BindingDeleted,
}

/// What was decided about a version of a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// It loaded and passed every check; it serves or served.
    Accepted,
    /// It failed to load or a check; it is never served unless an operator forces it.
    Refused,
}

/// One version of a broker in the book of versions.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    /// The broker.
    pub broker: String,
    /// The version: the first 16 hex digits of the SHA-256 of its component and manifest.
    pub version: String,
    /// What was decided.
    pub state: VersionState,
    /// Where it came from: `dir`, `upload` or `rollback`.
    pub source: String,
    /// Why it was refused.
    pub error: Option<String>,
    /// When the runtime first saw it (ms since the epoch).
    pub created_at: i64,
    /// When it was last decided (ms since the epoch).
    pub decided_at: i64,
}

/// A broker's current version in the book.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentVersion {
    /// The broker.
    pub broker: String,
    /// Its last accepted version.
    pub version: String,
    /// Since when the broker has had an accepted version (who came first in a conflict).
    pub since: i64,
}

/// One entry of the audit trail: an admin action, a repair, or an OSB operation that ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Who: `operator`, `tenant:NAME` (an admin token), or for OSB operations the platform's
    /// originating identity (`PLATFORM:USER`), else `platform`.
    pub actor: String,
    /// The tenant the entry belongs to (the broker's), shown to that tenant's token.
    pub tenant: Option<String>,
    /// What: `upload`, `rollback`, `remove`, `purge-instance`, `purge-binding`,
    /// `fail-operation`, `retry-operation`, or an OSB operation's kind (`provision`, ...).
    pub action: String,
    /// The broker acted on.
    pub broker: Option<String>,
    /// The instance, binding, operation or version acted on.
    pub resource: Option<String>,
    /// How it ended: `ok`, `refused`, `succeeded`, `failed`.
    pub outcome: String,
    /// A short explanation (a refusal's reason, an operation's description). Never secrets.
    pub detail: Option<String>,
}

/// An entry as the trail holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    /// Its place in the trail (ascending).
    pub seq: i64,
    /// When, in ms since the epoch.
    pub at: i64,
    /// The entry.
    #[serde(flatten)]
    pub entry: AuditEntry,
}

/// What removing a broker's state removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Instances.
    pub instances: u64,
    /// Bindings.
    pub bindings: u64,
    /// Operations (finished or not).
    pub operations: u64,
    /// Keys of its key-value store.
    pub kv_keys: u64,
}

impl ResourceState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Creating => "creating",
            ResourceState::Ready => "ready",
            ResourceState::Updating => "updating",
            ResourceState::Deleting => "deleting",
            ResourceState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "creating" => ResourceState::Creating,
            "ready" => ResourceState::Ready,
            "updating" => ResourceState::Updating,
            "deleting" => ResourceState::Deleting,
            "failed" => ResourceState::Failed,
            other => {
                return Err(StoreError::Backend(format!(
                    "unknown resource state {other:?}"
                )))
            }
        })
    }
}

impl VersionState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Accepted => "accepted",
            VersionState::Refused => "refused",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "accepted" => Ok(VersionState::Accepted),
            "refused" => Ok(VersionState::Refused),
            other => Err(StoreError::Backend(format!(
                "unknown version state {other:?}"
            ))),
        }
    }
}

impl OperationKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Provision => "provision",
            OperationKind::Update => "update",
            OperationKind::Deprovision => "deprovision",
            OperationKind::Bind => "bind",
            OperationKind::Unbind => "unbind",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "provision" => OperationKind::Provision,
            "update" => OperationKind::Update,
            "deprovision" => OperationKind::Deprovision,
            "bind" => OperationKind::Bind,
            "unbind" => OperationKind::Unbind,
            other => {
                return Err(StoreError::Backend(format!(
                    "unknown operation kind {other:?}"
                )))
            }
        })
    }
}

impl OperationState {
    /// The OSB name, as stored and as sent in `last_operation`.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationState::InProgress => "in progress",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "in progress" => OperationState::InProgress,
            "succeeded" => OperationState::Succeeded,
            "failed" => OperationState::Failed,
            other => {
                return Err(StoreError::Backend(format!(
                    "unknown operation state {other:?}"
                )))
            }
        })
    }
}
