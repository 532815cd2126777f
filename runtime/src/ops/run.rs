//! Running an operation: its guest call in a background task tracked by the runtime, its
//! outcome persisted, the request answered within the sync window or deadline.

use super::outcome::{failure_effect, Answer, Settled};
use super::{calls, OpContext, OpError, StoredCall};
use crate::store::{OperationRecord, OperationState, Outcome, StoreError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::Instrument as _;

/// How often a request waiting for an operation it cannot answer asynchronously re-reads it.
const WAIT_INTERVAL: Duration = Duration::from_millis(20);
/// How often a request whose window passed before its operation's record was written looks
/// again (it cannot answer `accepted` for an operation not stored yet).
const INTENT_RECHECK: Duration = Duration::from_millis(5);

/// Waits for `task`, which stores operation `op_id` (setting `stored` once its record is
/// written) and runs it, within the broker's sync window (asynchronous requests, answered
/// `accepted` once the record exists) or sync deadline (synchronous ones).
///
/// **Cancellation.** The task is the runtime's, not the request's: dropping this future drops
/// only the wait, and the operation still ends and stores its outcome.
///
/// # Errors
/// What the task returns; a synchronous operation that outlived the sync deadline.
pub(super) async fn within_window<T>(
    ctx: &OpContext,
    op_id: &str,
    stored: &AtomicBool,
    mut task: tokio::task::JoinHandle<Result<T, OpError>>,
    accepted: impl FnOnce(String) -> T,
) -> Result<T, OpError> {
    let settings = &ctx.broker.manifest.operations;
    // A synchronous request gets a little beyond its deadline, so the call's own deadline
    // (which fails the operation and says why) ends it first.
    let window = if ctx.call.accepts_incomplete {
        settings.sync_window()
    } else {
        settings.sync_deadline() + Duration::from_secs(5)
    };
    let mut wait = window;
    loop {
        match tokio::time::timeout(wait, &mut task).await {
            Ok(joined) => return flatten(joined),
            // No record yet that the platform could poll: wait for it a little longer.
            Err(_) if !stored.load(Ordering::Acquire) => wait = INTENT_RECHECK,
            // The call goes on in the background; the platform polls for it.
            Err(_) if ctx.call.accepts_incomplete => return Ok(accepted(op_id.to_string())),
            Err(_) => {
                return Err(OpError::Failed(
                    "the operation did not finish within the sync deadline".into(),
                ))
            }
        }
    }
}

/// The answer of an operation's task (a task that panicked or was cancelled fails it).
fn flatten<T>(joined: Result<Result<T, OpError>, tokio::task::JoinError>) -> Result<T, OpError> {
    joined.unwrap_or_else(|join| {
        Err(OpError::Failed(format!(
            "the operation task failed: {join}"
        )))
    })
}

/// Makes the guest call of `op` and persists its outcome, in an `operation` span.
pub async fn run(
    ctx: OpContext,
    op: OperationRecord,
    stored: StoredCall,
) -> Result<Settled, OpError> {
    let span = super::operation_span(&op, "run");
    run_in_span(ctx, op, stored).instrument(span).await
}

async fn run_in_span(
    ctx: OpContext,
    op: OperationRecord,
    stored: StoredCall,
) -> Result<Settled, OpError> {
    let answer = calls::invoke(&ctx, &stored).await;
    settle(&ctx, &op, answer).await
}

/// Persists the guest's answer; for a long operation the platform cannot wait for
/// asynchronously, waits for the pollers to end it, up to the sync deadline.
async fn settle(ctx: &OpContext, op: &OperationRecord, answer: Answer) -> Result<Settled, OpError> {
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
async fn wait_for_end(ctx: &OpContext, op: &OperationRecord) -> Result<Settled, OpError> {
    let store = &ctx.state.store;
    let deadline = tokio::time::Instant::now() + ctx.broker.manifest.operations.sync_deadline();
    loop {
        let current = store
            .operation(&op.broker, &op.id)
            .await?
            .ok_or_else(|| OpError::Failed(format!("operation {} vanished", op.id)))?;
        match current.state {
            OperationState::Succeeded => return Ok(Settled::Finished(None)),
            OperationState::Failed => {
                let description = current
                    .description
                    .unwrap_or_else(|| "the operation failed".into());
                return Err(OpError::Failed(description));
            }
            OperationState::InProgress if tokio::time::Instant::now() >= deadline => {
                let description = "the broker did not finish within the sync deadline of a \
                                   request without accepts_incomplete=true";
                match store
                    .finish_operation(op, &Outcome::failed(description), &failure_effect(op.kind))
                    .await
                {
                    Ok(()) => return Err(OpError::Failed(description.into())),
                    // A poller ended it at the same moment: report what it stored.
                    Err(StoreError::Changed) => continue,
                    Err(other) => return Err(other.into()),
                }
            }
            OperationState::InProgress => tokio::time::sleep(WAIT_INTERVAL).await,
        }
    }
}
