//! Running an operation: its guest call in a background task tracked by the runtime, its
//! outcome persisted, the request answered within the sync window or deadline.

use super::outcome::{failure_effect, Answer, Settled};
use super::{calls, OpContext, OpError, StoredCall};
use crate::store::{OperationRecord, OperationState, Outcome, StoreError};
use std::time::Duration;
use tracing::Instrument as _;

/// How often a request waiting for an operation it cannot answer asynchronously re-reads it.
const WAIT_INTERVAL: Duration = Duration::from_millis(20);
/// Said by an operation's task once the operation's record is written.
pub(super) type Written = tokio::sync::oneshot::Sender<()>;

/// Runs `work` (which writes operation `op_id`'s record, says so on its [`Written`], then runs
/// the operation) in a task of the runtime's, and waits for it: for as long as the record
/// takes to write, then within the broker's sync window (asynchronous requests, answered
/// `accepted` past it) or sync deadline (synchronous ones).
///
/// **Cancellation.** The task is the runtime's, not the request's: dropping this future drops
/// only the wait, and the operation still ends and stores its outcome.
///
/// # Errors
/// What `work` returns; a synchronous operation that outlived the sync deadline.
pub(super) async fn in_task<T, F>(
    ctx: &OpContext,
    op_id: &str,
    work: impl FnOnce(Written) -> F,
    accepted: impl FnOnce(String) -> T,
) -> Result<T, OpError>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, OpError>> + Send + 'static,
{
    let (written, stored) = tokio::sync::oneshot::channel();
    // The task keeps the request's span as its parent (one trace per request).
    let mut task = (ctx.state.runtime.tasks).spawn(work(written).in_current_span());
    // No answer can point the platform at an operation not stored yet; a task that ends
    // without storing it (refused, busy, a store failure) drops `written` and is joined below.
    tokio::select! {
        biased;
        joined = &mut task => return flatten(joined),
        _ = stored => {}
    }
    let settings = &ctx.broker.manifest.operations;
    // A synchronous request gets a little beyond its deadline, so the call's own deadline
    // (which fails the operation and says why) ends it first.
    let window = if ctx.call.accepts_incomplete {
        settings.sync_window()
    } else {
        settings.sync_deadline() + Duration::from_secs(5)
    };
    match tokio::time::timeout(window, &mut task).await {
        Ok(joined) => flatten(joined),
        // The call goes on in the background; the platform polls for it.
        Err(_) if ctx.call.accepts_incomplete => Ok(accepted(op_id.to_string())),
        Err(_) => Err(OpError::Failed(
            "the operation did not finish within the sync deadline".into(),
        )),
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
