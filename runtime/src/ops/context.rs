//! What every operation carries: the operation layer's state, the context of one call, and
//! its error type.

use super::StoredCall;
use crate::registry::{Brokers, LoadedBroker};
use crate::sandbox::bindings::types::{self as wit, BrokerError};
use crate::sandbox::CallError;
use crate::store::{OperationRecord, OperationState, StateStore, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// What the runtime's background work shares: its id, its tasks, its lease.
pub struct OpsRuntime {
    /// This runtime's id (stable across restarts on the same data dir).
    pub id: String,
    /// Every background task (guest calls, polls), awaited on graceful shutdown.
    pub tasks: tokio_util::task::TaskTracker,
    /// Lease of the operations this runtime runs.
    pub lease: Duration,
    /// Wakes the worker when an operation is accepted.
    pub poll_wakeup: tokio::sync::Notify,
}

impl OpsRuntime {
    /// A runtime with id `id` and lease `lease`.
    pub fn new(id: String, lease: Duration) -> Self {
        OpsRuntime {
            id,
            tasks: tokio_util::task::TaskTracker::new(),
            lease,
            poll_wakeup: tokio::sync::Notify::new(),
        }
    }

    /// The lease in milliseconds.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Asks the worker to look for due polls now.
    pub fn wake_pollers(&self) {
        self.poll_wakeup.notify_one();
    }
}

/// What the operation layer reaches: the brokers serving, the state store, the runtime's
/// background work.
#[derive(Clone)]
pub struct OpsState {
    /// The hosted brokers.
    pub brokers: Arc<Brokers>,
    /// Durable state.
    pub store: Arc<dyn StateStore>,
    /// The runtime's background work (operation tasks, leases).
    pub runtime: Arc<OpsRuntime>,
}

/// Why an operation did not end well. The edge turns it into an OSB answer: a broker's
/// refusal keeps the status the broker chose, a store conflict is a `ConcurrencyError`,
/// anything else is a 500 whose description says which limit or fault.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The guest refused the call (its description is capped where it entered the host).
    #[error("{}", crate::sandbox::refusal_description(.0))]
    Refused(BrokerError),
    /// The guest call, the guest's answer or the operation failed.
    #[error("{0}")]
    Failed(String),
    /// Another operation on the resource (this id) is in progress.
    #[error("another operation on {0} is in progress")]
    Busy(String),
    /// The state store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CallError> for OpError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Broker(refusal) => OpError::Refused(refusal),
            other => OpError::Failed(other.to_string()),
        }
    }
}

/// Everything an operation needs: the runtime, the broker, and what the guest is told.
#[derive(Clone)]
pub struct OpContext {
    /// Runtime state.
    pub state: OpsState,
    /// The broker.
    pub broker: Arc<LoadedBroker>,
    /// What the guest is told about the call.
    pub call: wit::CallInfo,
}

impl OpContext {
    /// The engine-side call info (for logs and the deadline of the call).
    pub fn info(&self) -> crate::sandbox::CallInfo {
        crate::sandbox::CallInfo {
            request_identity: self.call.request_identity.clone(),
            deadline: (!self.call.accepts_incomplete)
                .then(|| self.broker.manifest.operations.sync_deadline()),
        }
    }

    /// A new in-progress operation of `stored`, owned by this runtime.
    pub fn new_operation(&self, stored: &StoredCall) -> OperationRecord {
        let now = crate::store::now_ms();
        OperationRecord {
            // Time-ordered (UUIDv7): new ids land at the end of the operations' id index, one
            // hot page, instead of a random page per operation written to the WAL.
            id: uuid::Uuid::now_v7().to_string(),
            broker: self.broker.name.clone(),
            instance_id: stored.instance_id.clone(),
            binding_id: stored.binding_id.clone(),
            kind: stored.kind,
            state: OperationState::InProgress,
            description: None,
            guest_data: None,
            target_plan: None,
            attempts: self.call.attempt,
            instance_usable: None,
            update_repeatable: None,
            created_at: now,
            request: serde_json::to_string(stored).ok(),
            owner: Some(self.state.runtime.id.clone()),
            lease_until: Some(now + self.state.runtime.lease_ms()),
            next_poll_at: None,
            polls: 0,
            broker_version: Some(self.broker.version.clone()),
            actor: Some(stored.actor()),
            tenant: self.broker.manifest.tenant.clone(),
        }
    }
}
