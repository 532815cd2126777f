//! The background worker of a runtime: polls guest-driven long operations that are due,
//! recovers operations whose runtime died (retrying host-run calls up to the broker's
//! `max_attempts`), and renews the leases of the operations this runtime runs.
//!
//! Every runtime sharing a state store runs one; claims are compare-and-set updates with a
//! lease, so a due operation is worked on by one runtime at a time and taken over by another
//! once the lease of a dead one expires.

use super::{failure_effect, poll_guest, run, OpContext, OpsState, StoredCall};

use crate::store::{OperationRecord, Outcome};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How often the worker looks for due polls and orphaned operations (it also wakes when an
/// operation is accepted).
pub const TICK: Duration = Duration::from_millis(100);
/// Operations picked up per look.
const BATCH: i64 = 32;
/// Longest wait between two looks while the state store keeps failing (the wait doubles from
/// [`TICK`] with each failed look, so a failing store is not hammered, nor the log flooded).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the worker until `stop` is cancelled.
pub async fn run_worker(state: OpsState, stop: CancellationToken) {
    let runtime = state.runtime.clone();
    let started_at = crate::store::now_ms();
    let mut last_renewal = tokio::time::Instant::now();
    // Operations this runtime id held before a restart are certainly not running any more.
    let mut dead_owner = Some(runtime.id.clone());
    let mut wait = TICK;
    loop {
        match sweep(&state, dead_owner.as_deref(), started_at).await {
            Ok(()) => {
                dead_owner = None;
                wait = TICK;
            }
            Err(error) => {
                // Never so long that this runtime's leases lapse while the store recovers.
                wait = (wait * 2).min(MAX_BACKOFF).min(runtime.lease / 3).max(TICK);
                tracing::warn!("operation worker: {error} (next look in {wait:?})");
            }
        }
        if last_renewal.elapsed() >= runtime.lease / 3 {
            last_renewal = tokio::time::Instant::now();
            let until = crate::store::now_ms() + runtime.lease_ms();
            if let Err(error) = state.store.renew_leases(&runtime.id, until).await {
                tracing::warn!("cannot renew operation leases: {error}");
            }
        }
        // An accepted operation wakes the worker early, unless it is backing off.
        let woken = async {
            if wait > TICK {
                std::future::pending().await
            } else {
                runtime.poll_wakeup.notified().await;
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = woken => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One look for work: due polls, then orphaned host-run operations.
async fn sweep(state: &OpsState, dead_owner: Option<&str>, started_at: i64) -> anyhow::Result<()> {
    let runtime = &state.runtime;
    let now = crate::store::now_ms();
    let lease_until = now + runtime.lease_ms();
    for op in state.store.due_polls(now, BATCH).await? {
        if state
            .store
            .claim(&op, &runtime.id, lease_until, now)
            .await?
        {
            let state = state.clone();
            let span = super::operation_span(&op, "poll");
            runtime
                .tasks
                .spawn(async move { poll_one(state, op).await }.instrument(span));
        }
    }
    for op in state
        .store
        .orphaned(now, dead_owner, started_at, BATCH)
        .await?
    {
        recover(state, op, now).await?;
    }
    Ok(())
}

/// The context for a background step of `op`, or `None` when its broker is gone.
fn context(
    state: &OpsState,
    op: &OperationRecord,
    stored: Option<&StoredCall>,
) -> Option<OpContext> {
    // The version that started the operation, while the runtime still holds it.
    let broker = state
        .brokers
        .version(&op.broker, op.broker_version.as_deref())?;
    let call = match stored {
        Some(stored) => stored.call_info(op.attempts),
        None => crate::sandbox::bindings::types::CallInfo {
            accepts_incomplete: true,
            originating_identity: None,
            request_identity: None,
            attempt: op.attempts,
        },
    };
    Some(OpContext {
        state: state.clone(),
        broker,
        call,
    })
}

/// Polls one claimed long operation once.
async fn poll_one(state: OpsState, op: OperationRecord) {
    let stored = stored_call(&op);
    let Some(ctx) = context(&state, &op, stored.as_ref()) else {
        fail(
            &state,
            &op,
            format!("broker {} is no longer loaded", op.broker),
        )
        .await;
        return;
    };
    if let Err(error) = poll_guest(&ctx, &op).await {
        tracing::warn!(broker = %op.broker, operation = %op.id, "poll failed: {error}");
    }
}

fn stored_call(op: &OperationRecord) -> Option<StoredCall> {
    op.request
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
}

/// Takes over a host-run operation whose runtime died: retries its guest call (the guest is
/// told the attempt number) or, past the broker's `max_attempts`, fails it.
async fn recover(state: &OpsState, op: OperationRecord, now: i64) -> anyhow::Result<()> {
    let runtime = &state.runtime;
    let stored = stored_call(&op);
    let Some(mut ctx) = context(state, &op, stored.as_ref()) else {
        fail(
            state,
            &op,
            format!("broker {} is no longer loaded", op.broker),
        )
        .await;
        return Ok(());
    };
    let Some(stored) = stored else {
        fail(
            state,
            &op,
            "the operation was interrupted and cannot be replayed".into(),
        )
        .await;
        return Ok(());
    };
    let max = ctx.broker.manifest.operations.max_attempts;
    if op.attempts >= max {
        let why = format!(
            "the operation was interrupted {} times (the broker allows {max} attempts)",
            op.attempts
        );
        fail(state, &op, why).await;
        return Ok(());
    }
    if !state
        .store
        .claim_retry(&op, &runtime.id, now + runtime.lease_ms(), now)
        .await?
    {
        return Ok(());
    }
    let attempt = op.attempts + 1;
    tracing::info!(broker = %op.broker, operation = %op.id, attempt, "retrying an interrupted operation");
    ctx.call.attempt = attempt;
    let op = OperationRecord {
        attempts: attempt,
        ..op
    };
    runtime.tasks.spawn(async move {
        if let Err(error) = run(ctx, op, stored).await {
            tracing::info!("retried operation ended: {error}");
        }
    });
    Ok(())
}

/// Fails `op` with `description`, applying what a failure does to its resource.
async fn fail(state: &OpsState, op: &OperationRecord, description: String) {
    let outcome = Outcome::failed(description);
    if let Err(error) = state
        .store
        .finish_operation(op, &outcome, &failure_effect(op.kind))
        .await
    {
        tracing::warn!(operation = %op.id, "cannot fail the operation: {error}");
    }
}
