//! Durable state: instances, bindings and operations of every broker, behind one trait so the
//! backend (embedded SQLite now, PostgreSQL for several replicas) is chosen at start-up.
//!
//! Every state change is one transaction: an operation row is written together with the
//! resource state it puts in progress, and its outcome together with the resource's new state.

mod records;
pub mod reseal;
pub mod seal;
mod sql;

pub use records::{
    AuditEntry, AuditRecord, BindingRecord, CurrentVersion, Effect, InstanceRecord, OperationKind,
    OperationRecord, OperationState, Outcome, Purged, ResourceState, VersionRecord, VersionState,
};
pub use sql::SqlStore;

use std::sync::Arc;
/// Why a state change was refused.
#[derive(Debug, Clone, thiserror::Error)]
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

/// Instances and bindings, and starting an operation on one.
#[async_trait::async_trait]
pub trait ResourceStore: Send + Sync {
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
    /// The instance `instance_id` of `broker` and the binding `binding_id` of `broker`, read
    /// together (one statement: a bind or an unbind checks both).
    async fn instance_and_binding(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<(Option<InstanceRecord>, Option<BindingRecord>), StoreError>;
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
    /// How many instances `broker` has.
    async fn count_instances(&self, broker: &str) -> Result<u64, StoreError>;
    /// The plans of `broker` that instances use.
    async fn plans_in_use(&self, broker: &str) -> Result<Vec<String>, StoreError>;
}

/// Operations: their outcome, their progress, and who runs them (claims and leases).
#[async_trait::async_trait]
pub trait OperationStore: Send + Sync {
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
    /// Ends an operation in progress and applies its effect, in one transaction.
    async fn finish_operation(
        &self,
        op: &OperationRecord,
        outcome: &Outcome,
        effect: &Effect,
    ) -> Result<(), StoreError>;
    /// Claims the due poll `op` (as read by [`OperationStore::due_polls`]) for `owner` until
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
    /// Claims the host-run operation `op` (as read by [`OperationStore::orphaned`]) for a retry and
    /// counts the attempt: compare-and-set like [`OperationStore::claim`], on its attempt count.
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
    /// How many operations of `broker` are in progress.
    async fn count_in_progress(&self, broker: &str) -> Result<u64, StoreError>;
}

/// The `kv` capability: each broker's private key-value store.
#[async_trait::async_trait]
pub trait KvStore: Send + Sync {
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
}

/// The runtimes and brokers that used the store, and the book of broker versions.
#[async_trait::async_trait]
pub trait BrokerBook: Send + Sync {
    /// Records that runtime `id` started (its first start or a restart).
    async fn register_runtime(&self, id: &str) -> Result<(), StoreError>;
    /// Records that runtime `runtime_id` loaded broker `name`.
    async fn register_broker(&self, name: &str, runtime_id: &str) -> Result<(), StoreError>;
    /// Every version of `broker` in the book, oldest first.
    async fn versions(&self, broker: &str) -> Result<Vec<VersionRecord>, StoreError>;
    /// The current version of every broker that has one.
    async fn current_versions(&self) -> Result<Vec<CurrentVersion>, StoreError>;
    /// The current version of `broker`, if it has one.
    async fn current_version(&self, broker: &str) -> Result<Option<String>, StoreError>;
    /// Records what was decided about a version (replacing an earlier decision); an accepted
    /// version becomes the broker's current version in the same transaction.
    async fn decide_version(&self, record: &VersionRecord) -> Result<(), StoreError>;
    /// Removes `version` of `broker` from the book.
    async fn forget_version(&self, broker: &str, version: &str) -> Result<(), StoreError>;
    /// Removes every trace of `broker` in one transaction: instances, bindings, operations,
    /// key-value store, versions.
    async fn purge_broker(&self, broker: &str) -> Result<Purged, StoreError>;
}

/// What the operator's view reads: whether the store answers, and how much each broker holds.
#[async_trait::async_trait]
pub trait StoreHealth: Send + Sync {
    /// Answers once the database answers one trivial query.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Instances, bindings and operations of every broker.
    async fn census(&self) -> Result<Census, StoreError>;
    /// The store's latency and operation-duration metrics (shared: updating them updates
    /// the store's).
    fn metrics(&self) -> crate::telemetry::metrics::StoreMetrics;
}

/// How much each broker holds, as [`StoreHealth::census`] read it.
#[derive(Debug, Clone, Default)]
pub struct Census {
    /// Instances per broker.
    pub instances: Vec<(String, u64)>,
    /// Bindings per broker.
    pub bindings: Vec<(String, u64)>,
    /// Operations per broker, kind and state.
    pub operations: Vec<(String, OperationKind, OperationState, u64)>,
}

/// The audit trail, what repairs look at, and the repairs themselves (each written in the
/// trail in the same transaction as what it changes).
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends `entry` to the trail (on disk when this returns).
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The newest `limit` entries before `before` (a `seq`), newest first; only `tenant`'s
    /// when given.
    async fn audit(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The operations in progress on an instance (and its bindings), or on one binding.
    async fn in_progress_on(
        &self,
        broker: &str,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> Result<Vec<OperationRecord>, StoreError>;
    /// Operations in progress, and those failed since `failed_since` (ms), newest first.
    async fn recent_operations(
        &self,
        failed_since: i64,
        limit: i64,
    ) -> Result<Vec<OperationRecord>, StoreError>;
    /// Removes an instance, its bindings and their operations from the state (the guest is
    /// not called) and appends `entry`, in one transaction.
    async fn purge_instance(
        &self,
        broker: &str,
        instance_id: &str,
        entry: &AuditEntry,
    ) -> Result<Purged, StoreError>;
    /// Removes a binding and its operations and appends `entry`, in one transaction.
    async fn purge_binding(
        &self,
        broker: &str,
        binding_id: &str,
        entry: &AuditEntry,
    ) -> Result<Purged, StoreError>;
}

/// A data key, as the key status shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Its id (`k` and 8 hex digits), the one stored with each value it seals.
    pub id: String,
    /// When it was made (ms since the epoch).
    pub created_at: i64,
    /// Whether new writes use it.
    pub primary: bool,
    /// How many values it seals.
    pub values: u64,
}

/// The keys that seal the stored secrets, and how far resealing has come.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    /// The id of the master key (from the keyring) that wraps the data keys.
    pub master: String,
    /// The primary data key's id.
    pub primary: String,
    /// Every data key, oldest first.
    pub keys: Vec<KeyInfo>,
    /// Values still in clear text (from before encryption).
    pub clear: u64,
    /// Values not yet under the primary key (clear or under an older key).
    pub remaining: u64,
}

/// What one reseal pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ResealReport {
    /// Values moved to the primary key.
    pub resealed: u64,
    /// Keys retired (no value used them any more).
    pub retired: Vec<String>,
    /// Values not under the primary key when the pass ended.
    pub remaining: u64,
    /// Data keys left.
    pub keys: usize,
}

/// The data keys that seal secret-bearing values (see [`seal`]).
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// Makes a new primary data key (new writes use it at once); returns its id.
    async fn rotate_key(&self) -> Result<String, StoreError>;
    /// The keys, and how many values each seals.
    async fn key_status(&self) -> Result<KeyStatus, StoreError>;
    /// Reloads the keys (another replica may have rotated); returns how many there are.
    async fn reload_keys(&self) -> Result<usize, StoreError>;
    /// Moves every value not under the primary key to it, then retires the older keys no
    /// value uses (once the primary has been primary long enough for every replica to use it).
    async fn reseal(&self) -> Result<ResealReport, StoreError>;
    /// `plain`, a file the runtime keeps (a kept manifest), sealed with the master key; `label`
    /// names the file (its associated data).
    fn seal_file(&self, label: &str, plain: &[u8]) -> Vec<u8>;
    /// The plain bytes of a file sealed by [`SecretStore::seal_file`] (clear bytes pass).
    ///
    /// # Errors
    /// When it is sealed with another master key, or altered.
    fn open_file(&self, label: &str, stored: Vec<u8>) -> Result<Vec<u8>, StoreError>;
}

/// Durable state of all brokers: every part of the store, behind one object.
pub trait StateStore:
    ResourceStore + OperationStore + KvStore + BrokerBook + StoreHealth + AuditLog + SecretStore
{
}

impl<
        T: ResourceStore
            + OperationStore
            + KvStore
            + BrokerBook
            + StoreHealth
            + AuditLog
            + SecretStore,
    > StateStore for T
{
}

/// Now, in milliseconds since the Unix epoch (the stores' timestamps).
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Opens the state store named by `url`: `sqlite://PATH` (created if missing) or
/// `postgres://USER@HOST:PORT/DATABASE`; applies pending migrations and loads the data keys
/// with the master key from `keys` (a new keyring file is made only for a database that
/// holds no keys yet).
///
/// # Errors
/// When the URL names no supported backend, the backend cannot be opened or migrated, or the
/// master key is missing or does not open the database's keys.
pub async fn open(url: &str, keys: &seal::KeySource) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(Arc::new(SqlStore::open_sealed(url, keys).await?))
}

/// Opens a store whose secrets only this process reads (a check's scratch store).
///
/// # Errors
/// As [`open`].
pub async fn open_ephemeral(url: &str) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(Arc::new(
        SqlStore::open(url, seal::MasterKey::ephemeral()).await?,
    ))
}
