//! Durable state: instances, bindings and operations of every broker, behind one trait so the
//! backend (embedded SQLite now, PostgreSQL for several replicas) is chosen at start-up.
//!
//! Every state change is one transaction: an operation row is written together with the
//! resource state it puts in progress, and its outcome together with the resource's new state.

mod sql;
mod writer;

pub use sql::SqlStore;

use std::sync::Arc;

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

/// Why a state change was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The resource exists already (a concurrent create won).
    #[error("the resource exists already")]
    Exists,
    /// The resource or operation is not in the state the change expected.
    #[error("the resource changed concurrently")]
    Changed,
    /// The backend failed.
    #[error("state store: {0}")]
    Backend(String),
}

/// Durable state of all brokers.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// The instance `instance_id` of `broker`.
    async fn instance(
        &self,
        broker: &str,
        instance_id: &str,
    ) -> Result<Option<InstanceRecord>, StoreError>;
    /// The binding `binding_id` of `broker`.
    async fn binding(
        &self,
        broker: &str,
        binding_id: &str,
    ) -> Result<Option<BindingRecord>, StoreError>;
    /// The operation `id` of `broker`.
    async fn operation(
        &self,
        broker: &str,
        id: &str,
    ) -> Result<Option<OperationRecord>, StoreError>;
    /// The most recent operation on an instance (`binding_id` `None`) or on one of its bindings.
    async fn latest_operation(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> Result<Option<OperationRecord>, StoreError>;
    /// Inserts a new instance (state `creating`) and its provision operation.
    async fn create_instance(
        &self,
        instance: &InstanceRecord,
        op: &OperationRecord,
    ) -> Result<(), StoreError>;
    /// Inserts a new binding (state `creating`) and its bind operation.
    async fn create_binding(
        &self,
        binding: &BindingRecord,
        op: &OperationRecord,
    ) -> Result<(), StoreError>;
    /// Starts `op` on an existing ready resource, moving it to `state`.
    async fn start_operation(
        &self,
        op: &OperationRecord,
        state: ResourceState,
    ) -> Result<(), StoreError>;
    /// Records that the guest accepted `op` as a long operation with `guest_data`, applies
    /// `effect` (what the guest already told), releases the operation to the pollers and
    /// schedules its first poll at `next_poll_at`, in one transaction.
    async fn accept_operation(
        &self,
        op: &OperationRecord,
        guest_data: &str,
        effect: &Effect,
        next_poll_at: i64,
    ) -> Result<(), StoreError>;
    /// Records a poll of a long operation still in progress: the guest's new data and message,
    /// and when to poll next; releases the operation.
    async fn record_progress(
        &self,
        op: &OperationRecord,
        guest_data: Option<&str>,
        description: Option<&str>,
        next_poll_at: i64,
    ) -> Result<(), StoreError>;
    /// Claims the due poll `op` (as read by [`StateStore::due_polls`]) for `owner` until
    /// `lease_until`: compare-and-set on what was read, so it fails when another runtime holds
    /// an unexpired lease, or polled the operation since it was read (its poll count moved on
    /// or its next poll is no longer due). Returns whether the claim succeeded.
    async fn claim(
        &self,
        op: &OperationRecord,
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Claims the host-run operation `op` (as read by [`StateStore::orphaned`]) for a retry and
    /// counts the attempt: compare-and-set like [`StateStore::claim`], on its attempt count.
    /// Returns whether the claim succeeded.
    async fn claim_retry(
        &self,
        op: &OperationRecord,
        owner: &str,
        lease_until: i64,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Extends the lease of every operation in progress that `owner` holds.
    async fn renew_leases(&self, owner: &str, lease_until: i64) -> Result<(), StoreError>;
    /// Long operations due for a poll at `now` and not held by another runtime.
    async fn due_polls(&self, now: i64, limit: i64) -> Result<Vec<OperationRecord>, StoreError>;
    /// Host-run operations in progress whose runtime is gone: unowned, lease expired, or held
    /// by `dead_owner` (this runtime's id) and started before `started_at` (this start).
    async fn orphaned(
        &self,
        now: i64,
        dead_owner: Option<&str>,
        started_at: i64,
        limit: i64,
    ) -> Result<Vec<OperationRecord>, StoreError>;
    /// Records that runtime `id` started (its first start or a restart).
    async fn register_runtime(&self, id: &str) -> Result<(), StoreError>;
    /// The value of `key` in `broker`'s key-value store.
    async fn kv_get(&self, broker: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` in `broker`'s key-value store, unless the broker's keys and values would
    /// then take more than `quota` bytes (answers `false` then, changing nothing).
    async fn kv_set(
        &self,
        broker: &str,
        key: &str,
        value: &[u8],
        quota: u64,
    ) -> Result<bool, StoreError>;
    /// Removes `key` from `broker`'s key-value store.
    async fn kv_delete(&self, broker: &str, key: &str) -> Result<(), StoreError>;
    /// The keys of `broker` starting with `prefix`, ascending, at most `limit`.
    async fn kv_keys(
        &self,
        broker: &str,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;
    /// How many operations of `broker` are in progress.
    async fn count_in_progress(&self, broker: &str) -> Result<u64, StoreError>;
    /// How many instances `broker` has.
    async fn count_instances(&self, broker: &str) -> Result<u64, StoreError>;
    /// The plans of `broker` that instances use.
    async fn plans_in_use(&self, broker: &str) -> Result<Vec<String>, StoreError>;
    /// Records that runtime `runtime_id` loaded broker `name`.
    async fn register_broker(&self, name: &str, runtime_id: &str) -> Result<(), StoreError>;
    /// Every version of `broker` in the book, oldest first.
    async fn versions(&self, broker: &str) -> Result<Vec<VersionRecord>, StoreError>;
    /// The current version of every broker that has one.
    async fn current_versions(&self) -> Result<Vec<CurrentVersion>, StoreError>;
    /// Records what was decided about a version (replacing an earlier decision); an accepted
    /// version becomes the broker's current version in the same transaction.
    async fn decide_version(&self, record: &VersionRecord) -> Result<(), StoreError>;
    /// Removes `version` of `broker` from the book.
    async fn forget_version(&self, broker: &str, version: &str) -> Result<(), StoreError>;
    /// Removes every trace of `broker` in one transaction: instances, bindings, operations,
    /// key-value store, versions.
    async fn purge_broker(&self, broker: &str) -> Result<Purged, StoreError>;
    /// Ends an operation in progress and applies its effect, in one transaction.
    async fn finish_operation(
        &self,
        op: &OperationRecord,
        outcome: &Outcome,
        effect: &Effect,
    ) -> Result<(), StoreError>;
}

/// Now, in milliseconds since the Unix epoch (the stores' timestamps).
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Opens the state store named by `url`: `sqlite://PATH` (created if missing) or
/// `postgres://USER@HOST:PORT/DATABASE`; applies pending migrations.
///
/// # Errors
/// When the URL names no supported backend, or the backend cannot be opened or migrated.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(Arc::new(SqlStore::open(url).await?))
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
