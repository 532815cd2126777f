//! The operation engine: every mutating OSB call is persisted as an operation before the guest
//! runs, and its outcome (finished, accepted, refused, crashed) is persisted after, together
//! with what it does to the instance or binding. Long operations are driven through the
//! guest's `last-operation`, by the platform's polling or, when the platform did not accept an
//! asynchronous answer, here until the sync deadline.

pub mod results;

use crate::engine::bindings::types::{
    self as wit, BrokerError, LastOperationRequest, OperationState as GuestState,
};
use crate::engine::CallError;
use crate::error::ApiError;
use crate::osb::AppState;
use crate::registry::LoadedBroker;
use crate::store::{Effect, OperationKind, OperationRecord, OperationState, Outcome, StoreError};
use std::time::Duration;

/// How long a request without `accepts_incomplete=true` waits for a guest's long operation:
/// below the 60 s after which platforms give up on a request.
pub const SYNC_DEADLINE: Duration = Duration::from_secs(50);
/// First pause between polls of a guest's long operation when driving it here; doubles up to
/// [`MAX_POLL_INTERVAL`].
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Longest pause between polls when driving a long operation here.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Everything an operation needs about its request.
pub struct OpContext<'a> {
    /// Runtime state.
    pub state: &'a AppState,
    /// The broker.
    pub broker: &'a LoadedBroker,
    /// What the guest is told about the call.
    pub call: wit::CallInfo,
}

impl OpContext<'_> {
    /// The engine-side call info (for logs).
    pub fn info(&self) -> crate::engine::CallInfo {
        crate::engine::CallInfo {
            request_identity: self.call.request_identity.clone(),
        }
    }

    /// A new in-progress operation of `kind` on `instance_id` (and `binding_id`).
    pub fn new_operation(
        &self,
        kind: OperationKind,
        instance_id: &str,
        binding_id: Option<&str>,
    ) -> OperationRecord {
        OperationRecord {
            id: uuid::Uuid::new_v4().to_string(),
            broker: self.broker.name.clone(),
            instance_id: instance_id.to_string(),
            binding_id: binding_id.map(str::to_string),
            kind,
            state: OperationState::InProgress,
            description: None,
            guest_data: None,
            target_plan: None,
            attempts: self.call.attempt,
            instance_usable: None,
            update_repeatable: None,
            created_at: crate::store::now_ms(),
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

/// Where an operation stands once its request has been handled.
pub enum Settled {
    /// It finished well; the stored resource holds the result.
    Finished,
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

/// Persists the guest's answer and, for a long operation the platform cannot wait for
/// asynchronously, drives it to its end here.
///
/// # Errors
/// The guest's refusal or crash, a long operation that failed or outlived the sync deadline,
/// or a state store failure.
pub async fn settle(
    ctx: &OpContext<'_>,
    op: &OperationRecord,
    answer: Answer,
) -> Result<Settled, ApiError> {
    let store = &ctx.state.store;
    match answer {
        Answer::Done(effect) => {
            store
                .finish_operation(op, &Outcome::succeeded(None), &effect)
                .await?;
            Ok(Settled::Finished)
        }
        Answer::Failed(error, effect) => {
            store
                .finish_operation(op, &Outcome::failed(error.to_string()), &effect)
                .await?;
            Err(error)
        }
        Answer::Accepted(data, effect) => {
            store.accept_operation(op, &data, &effect).await?;
            if ctx.call.accepts_incomplete {
                return Ok(Settled::Accepted(op.id.clone()));
            }
            drive(ctx, op).await
        }
    }
}

/// Polls a guest's long operation until it ends or the sync deadline passes.
async fn drive(ctx: &OpContext<'_>, op: &OperationRecord) -> Result<Settled, ApiError> {
    let deadline = tokio::time::Instant::now() + SYNC_DEADLINE;
    let mut pause = FIRST_POLL_INTERVAL;
    loop {
        let current = poll_guest(ctx, op).await?;
        match current.state {
            OperationState::Succeeded => return Ok(Settled::Finished),
            OperationState::Failed => {
                let description = current
                    .description
                    .unwrap_or_else(|| "the operation failed".into());
                return Err(ApiError::Internal(description));
            }
            OperationState::InProgress if tokio::time::Instant::now() + pause > deadline => {
                let description = format!(
                    "the broker did not finish within the {} s a synchronous request may take",
                    SYNC_DEADLINE.as_secs()
                );
                let effect = failure_effect(op.kind);
                ctx.state
                    .store
                    .finish_operation(op, &Outcome::failed(&description), &effect)
                    .await?;
                return Err(ApiError::Internal(description));
            }
            OperationState::InProgress => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_POLL_INTERVAL);
            }
        }
    }
}

/// What a failed long operation does to its resource.
fn failure_effect(kind: OperationKind) -> Effect {
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

/// Asks the guest once how the long operation `op` is going, persists the answer, and returns
/// the operation as stored afterwards. An operation past its plan's
/// `maximum_polling_duration` is failed without asking the guest.
///
/// # Errors
/// A state store failure, or an operation whose instance vanished.
pub async fn poll_guest(
    ctx: &OpContext<'_>,
    op: &OperationRecord,
) -> Result<OperationRecord, ApiError> {
    let store = &ctx.state.store;
    let instance = store
        .instance(&op.broker, &op.instance_id)
        .await?
        .ok_or_else(|| ApiError::Gone(format!("instance {} does not exist", op.instance_id)))?;
    let written = match overdue(ctx, op, &instance.service_id, &instance.plan_id) {
        Some(description) => {
            let outcome = Outcome::failed(description);
            store
                .finish_operation(op, &outcome, &failure_effect(op.kind))
                .await
        }
        None => ask_guest(ctx, op, &instance.service_id, &instance.plan_id).await,
    };
    match written {
        // Another poll finished it first: report what that one stored.
        Ok(()) | Err(StoreError::Changed) => {}
        Err(other) => return Err(other.into()),
    }
    store
        .operation(&op.broker, &op.id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("operation {} vanished", op.id)))
}

/// Why `op` must end now: it ran longer than its plan's `maximum_polling_duration`.
fn overdue(
    ctx: &OpContext<'_>,
    op: &OperationRecord,
    service_id: &str,
    plan_id: &str,
) -> Option<String> {
    let limit = ctx
        .broker
        .catalog
        .plan(service_id, plan_id)?
        .plan
        .maximum_polling_duration?;
    let elapsed_ms = crate::store::now_ms().saturating_sub(op.created_at);
    let limit_ms = i64::try_from(limit.saturating_mul(1000)).unwrap_or(i64::MAX);
    (elapsed_ms > limit_ms)
        .then(|| format!("the operation exceeded the plan's maximum_polling_duration of {limit} s"))
}

/// Calls the guest's `last-operation` for `op` and persists its answer.
async fn ask_guest(
    ctx: &OpContext<'_>,
    op: &OperationRecord,
    service_id: &str,
    plan_id: &str,
) -> Result<(), StoreError> {
    let store = &ctx.state.store;
    let request = LastOperationRequest {
        instance_id: op.instance_id.clone(),
        binding_id: op.binding_id.clone(),
        service_id: service_id.to_string(),
        plan_id: plan_id.to_string(),
        kind: guest_kind(op.kind),
        operation_data: op.guest_data.clone().unwrap_or_default(),
        call: ctx.call.clone(),
    };
    let (outcome, effect) = match ctx.broker.guest.last_operation(&ctx.info(), request).await {
        Ok(GuestState::InProgress(progress)) => {
            return store
                .record_progress(
                    &op.broker,
                    &op.id,
                    progress.operation_data.as_deref(),
                    progress.description.as_deref(),
                )
                .await;
        }
        Ok(GuestState::Succeeded(success)) => match success_effect(op, plan_id, &success) {
            Ok(effect) => (Outcome::succeeded(success.description), effect),
            Err(description) => (Outcome::failed(description), failure_effect(op.kind)),
        },
        Ok(GuestState::Failed(failed)) => {
            let mut outcome = Outcome::failed(failed.description);
            // OSB allows these fields only where they mean something.
            if matches!(op.kind, OperationKind::Update | OperationKind::Deprovision) {
                outcome.instance_usable = failed.instance_usable;
            }
            if op.kind == OperationKind::Update {
                outcome.update_repeatable = failed.update_repeatable;
            }
            (outcome, failure_effect(op.kind))
        }
        Err(error) => (Outcome::failed(error.to_string()), failure_effect(op.kind)),
    };
    store.finish_operation(op, &outcome, &effect).await
}

/// What a long operation that succeeded does to its resource.
fn success_effect(
    op: &OperationRecord,
    plan_id: &str,
    success: &wit::Success,
) -> Result<Effect, String> {
    Ok(match op.kind {
        OperationKind::Provision | OperationKind::Update => {
            let (dashboard_url, metadata) = match &success.instance {
                Some(result) => results::instance_values(result)?,
                None => (None, None),
            };
            Effect::InstanceReady {
                plan_id: op
                    .target_plan
                    .clone()
                    .unwrap_or_else(|| plan_id.to_string()),
                dashboard_url,
                metadata,
                parameters: None,
                context: None,
                maintenance_info: None,
            }
        }
        OperationKind::Deprovision => Effect::InstanceDeleted,
        OperationKind::Bind => {
            let body = match &success.binding {
                Some(binding) => results::binding_body(binding)?,
                None => serde_json::json!({}),
            };
            Effect::BindingReady {
                result: body.to_string(),
            }
        }
        OperationKind::Unbind => Effect::BindingDeleted,
    })
}
