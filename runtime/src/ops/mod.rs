//! The operation engine. Every mutating OSB call (provision, update, deprovision, bind,
//! unbind) is persisted as an operation before the guest runs; the guest call runs in a
//! background task tracked by the runtime, so a dropped connection or a slow guest never
//! leaves it half done; its outcome is persisted with what it does to the instance or binding.
//!
//! - With `accepts_incomplete=true` the request waits up to the broker's sync window: a call
//!   that finishes in it is answered with its final status, a longer one with 202.
//! - Without it the request waits up to the sync deadline; a guest call is cut at the deadline
//!   and the operation fails, saying so.
//! - A guest that answers `accepted` hands the operation to the pollers ([`worker`]), which ask
//!   its `last-operation` with backoff and persist each answer; the platform's `last_operation`
//!   reads stored state only.

pub mod calls;
mod poll;
pub mod results;
pub mod worker;

pub use calls::StoredCall;
pub use poll::{expire_if_overdue, poll_guest};

use crate::error::ApiError;
use crate::osb::AppState;
use crate::registry::LoadedBroker;
use crate::sandbox::bindings::types::{self as wit, BrokerError};
use crate::sandbox::CallError;
use crate::store::{Effect, OperationKind, OperationRecord, OperationState, Outcome, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How often a request waiting for an operation it cannot answer asynchronously re-reads it.
const WAIT_INTERVAL: Duration = Duration::from_millis(20);

/// Default lease of a running operation: the runtime renews it every third of it; another
/// runtime takes the operation over once it expires.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

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

/// Everything an operation needs: the runtime, the broker, and what the guest is told.
#[derive(Clone)]
pub struct OpContext {
    /// Runtime state.
    pub state: AppState,
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
            id: uuid::Uuid::new_v4().to_string(),
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
        }
    }
}

/// What a guest's answer to a mutating call means.
pub enum Answer {
    /// Finished: apply the effect.
    Done(Effect),
    /// Started: poll `last-operation` with this data; apply the effect (what is known early).
    Accepted(String, Effect),
    /// Refused or crashed: answer the error, apply the effect.
    Failed(ApiError, Effect),
}

/// Where an operation stands once its request is answered.
#[derive(Debug)]
pub enum Settled {
    /// It finished well; the stored resource holds the result. Carries the effect this
    /// request applied, when it applied it itself (not when pollers ended a long operation).
    Finished(Option<Effect>),
    /// It goes on; the platform polls `last_operation` with this operation id.
    Accepted(String),
}

/// The answer for a guest call that did not return a value, with the effect that leaves the
/// resource consistent: refusals undo the change; a crash during creation keeps the resource
/// as failed, so the platform's clean-up delete still reaches the broker.
pub fn failure(kind: OperationKind, error: CallError) -> Answer {
    let crashed = !matches!(error, CallError::Broker(_));
    let gone = matches!(error, CallError::Broker(BrokerError::Gone(_)));
    let effect = match kind {
        OperationKind::Provision if crashed => Effect::InstanceFailed,
        OperationKind::Provision => Effect::InstanceDeleted,
        OperationKind::Deprovision if gone => Effect::InstanceDeleted,
        OperationKind::Update | OperationKind::Deprovision => Effect::InstanceRestored,
        OperationKind::Unbind if gone => Effect::BindingDeleted,
        OperationKind::Bind => Effect::BindingDeleted,
        OperationKind::Unbind => Effect::BindingRestored,
    };
    Answer::Failed(error.into(), effect)
}

/// What a failed long operation does to its resource.
pub fn failure_effect(kind: OperationKind) -> Effect {
    match kind {
        OperationKind::Provision => Effect::InstanceFailed,
        OperationKind::Update | OperationKind::Deprovision => Effect::InstanceRestored,
        OperationKind::Bind => Effect::BindingDeleted,
        OperationKind::Unbind => Effect::BindingRestored,
    }
}

fn guest_kind(kind: OperationKind) -> wit::OperationKind {
    match kind {
        OperationKind::Provision => wit::OperationKind::Provision,
        OperationKind::Update => wit::OperationKind::Update,
        OperationKind::Deprovision => wit::OperationKind::Deprovision,
        OperationKind::Bind => wit::OperationKind::Bind,
        OperationKind::Unbind => wit::OperationKind::Unbind,
    }
}

/// Runs the stored operation `op` in a background task and answers within the broker's sync
/// window (asynchronous requests) or sync deadline (synchronous ones).
///
/// # Errors
/// The guest's refusal or crash, a long operation that failed or outlived the sync deadline,
/// or a state store failure.
pub async fn execute(
    ctx: OpContext,
    op: OperationRecord,
    stored: StoredCall,
) -> Result<Settled, ApiError> {
    let settings = &ctx.broker.manifest.operations;
    // A synchronous request gets a little beyond its deadline, so the call's own deadline
    // (which fails the operation and says why) ends it first.
    let window = if ctx.call.accepts_incomplete {
        settings.sync_window()
    } else {
        settings.sync_deadline() + Duration::from_secs(5)
    };
    let id = op.id.clone();
    let task = ctx.state.runtime.tasks.spawn(run(ctx.clone(), op, stored));
    match tokio::time::timeout(window, task).await {
        Ok(Ok(settled)) => settled,
        Ok(Err(join)) => Err(ApiError::Internal(format!(
            "the operation task failed: {join}"
        ))),
        // The call goes on in the background; the platform polls for it.
        Err(_) if ctx.call.accepts_incomplete => Ok(Settled::Accepted(id)),
        Err(_) => Err(ApiError::Internal(
            "the operation did not finish within the sync deadline".into(),
        )),
    }
}

/// Makes the guest call of `op` and persists its outcome.
pub async fn run(
    ctx: OpContext,
    op: OperationRecord,
    stored: StoredCall,
) -> Result<Settled, ApiError> {
    let answer = calls::invoke(&ctx, &stored).await;
    settle(&ctx, &op, answer).await
}

/// Persists the guest's answer; for a long operation the platform cannot wait for
/// asynchronously, waits for the pollers to end it, up to the sync deadline.
async fn settle(
    ctx: &OpContext,
    op: &OperationRecord,
    answer: Answer,
) -> Result<Settled, ApiError> {
    let store = &ctx.state.store;
    match answer {
        Answer::Done(effect) => {
            store
                .finish_operation(op, &Outcome::succeeded(None), &effect)
                .await?;
            Ok(Settled::Finished(Some(effect)))
        }
        Answer::Failed(error, effect) => {
            store
                .finish_operation(op, &Outcome::failed(error.to_string()), &effect)
                .await?;
            Err(error)
        }
        Answer::Accepted(data, effect) => {
            store
                .accept_operation(op, &data, &effect, crate::store::now_ms())
                .await?;
            ctx.state.runtime.wake_pollers();
            if ctx.call.accepts_incomplete {
                return Ok(Settled::Accepted(op.id.clone()));
            }
            wait_for_end(ctx, op).await
        }
    }
}

/// Waits until the pollers end `op`, or fails it when the sync deadline passes first.
async fn wait_for_end(ctx: &OpContext, op: &OperationRecord) -> Result<Settled, ApiError> {
    let store = &ctx.state.store;
    let deadline = tokio::time::Instant::now() + ctx.broker.manifest.operations.sync_deadline();
    loop {
        let current = store
            .operation(&op.broker, &op.id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("operation {} vanished", op.id)))?;
        match current.state {
            OperationState::Succeeded => return Ok(Settled::Finished(None)),
            OperationState::Failed => {
                let description = current
                    .description
                    .unwrap_or_else(|| "the operation failed".into());
                return Err(ApiError::Internal(description));
            }
            OperationState::InProgress if tokio::time::Instant::now() >= deadline => {
                let description = "the broker did not finish within the sync deadline of a \
                                   request without accepts_incomplete=true";
                match store
                    .finish_operation(op, &Outcome::failed(description), &failure_effect(op.kind))
                    .await
                {
                    Ok(()) => return Err(ApiError::Internal(description.into())),
                    // A poller ended it at the same moment: report what it stored.
                    Err(StoreError::Changed) => continue,
                    Err(other) => return Err(other.into()),
                }
            }
            OperationState::InProgress => tokio::time::sleep(WAIT_INTERVAL).await,
        }
    }
}
