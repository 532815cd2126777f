//! One poll of a guest-driven long operation: ask the guest's `last-operation` (unless the
//! operation is past its plan's `maximum_polling_duration`) and persist the answer.

use super::outcome::{failure_effect, guest_kind};
use super::{results, OpContext, OpError, OpsState};
use crate::registry::LoadedBroker;
use crate::sandbox::bindings::types::{
    self as wit, LastOperationRequest, OperationState as GuestState,
};
use crate::store::{Effect, OperationKind, OperationRecord, Outcome, StoreError};

/// First pause between two polls of a long operation; it doubles up to [`MAX_POLL_INTERVAL`].
pub const FIRST_POLL_INTERVAL_MS: i64 = 50;
/// Longest pause between two polls of a long operation.
pub const MAX_POLL_INTERVAL_MS: i64 = 5_000;

/// When to poll an operation next, after `polls` polls.
pub fn next_poll_at(polls: u32) -> i64 {
    let pause = FIRST_POLL_INTERVAL_MS.saturating_mul(1 << polls.min(16));
    crate::store::now_ms() + pause.min(MAX_POLL_INTERVAL_MS)
}

/// Asks the guest once how the long operation `op` is going, persists the answer, and returns
/// the operation as stored afterwards. An operation past its plan's
/// `maximum_polling_duration` is failed without asking the guest.
///
/// # Errors
/// A state store failure.
pub async fn poll_guest(ctx: &OpContext, op: &OperationRecord) -> Result<OperationRecord, OpError> {
    let store = &ctx.state.store;
    let Some(instance) = store.instance(&op.broker, &op.instance_id).await? else {
        // The instance was deleted while this operation (on one of its bindings) ran: end it
        // rather than poll forever.
        let outcome = Outcome::failed(format!("instance {} was deleted", op.instance_id));
        return finished(
            ctx,
            op,
            store.finish_operation(op, &outcome, &Effect::None).await,
        )
        .await;
    };
    let written = match overdue(&ctx.broker, op, &instance.service_id, &instance.plan_id) {
        Some(description) => {
            let outcome = Outcome::failed(description);
            store
                .finish_operation(op, &outcome, &failure_effect(op.kind))
                .await
        }
        None => ask_guest(ctx, op, &instance.service_id, &instance.plan_id).await,
    };
    finished(ctx, op, written).await
}

/// The operation as stored after a write to it (`Changed`: another poll wrote first).
async fn finished(
    ctx: &OpContext,
    op: &OperationRecord,
    written: Result<(), StoreError>,
) -> Result<OperationRecord, OpError> {
    let store = &ctx.state.store;
    match written {
        // Another poll finished it first: report what that one stored.
        Ok(()) | Err(StoreError::Changed) => {}
        Err(other) => return Err(other.into()),
    }
    store
        .operation(&op.broker, &op.id)
        .await?
        .ok_or_else(|| OpError::Failed(format!("operation {} vanished", op.id)))
}

/// Fails `op` if it is in progress past its plan's `maximum_polling_duration` (checked when
/// the platform polls, so the answer never waits for the next background poll); returns the
/// operation as stored afterwards.
///
/// # Errors
/// A state store failure.
pub async fn expire_if_overdue(
    state: &OpsState,
    broker: &LoadedBroker,
    op: OperationRecord,
) -> Result<OperationRecord, OpError> {
    if op.state != crate::store::OperationState::InProgress {
        return Ok(op);
    }
    let Some(instance) = state.store.instance(&op.broker, &op.instance_id).await? else {
        return Ok(op);
    };
    let Some(description) = overdue(broker, &op, &instance.service_id, &instance.plan_id) else {
        return Ok(op);
    };
    let outcome = Outcome::failed(description);
    match state
        .store
        .finish_operation(&op, &outcome, &failure_effect(op.kind))
        .await
    {
        Ok(()) | Err(StoreError::Changed) => {}
        Err(other) => return Err(other.into()),
    }
    Ok(state
        .store
        .operation(&op.broker, &op.id)
        .await?
        .unwrap_or(op))
}

/// Why `op` must end now: it ran longer than its plan's `maximum_polling_duration`.
fn overdue(
    broker: &LoadedBroker,
    op: &OperationRecord,
    service_id: &str,
    plan_id: &str,
) -> Option<String> {
    let limit = broker
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
    ctx: &OpContext,
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
            let data = progress.operation_data.as_deref();
            match data.map(results::operation_data).transpose() {
                Err(description) => (Outcome::failed(description), failure_effect(op.kind)),
                Ok(_) => {
                    let description = progress.description;
                    return store
                        .record_progress(
                            op,
                            data,
                            description.as_deref(),
                            next_poll_at(op.polls + 1),
                        )
                        .await;
                }
            }
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
