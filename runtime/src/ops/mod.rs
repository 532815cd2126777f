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
mod context;
pub mod lifecycle;
mod outcome;
mod poll;
pub mod repair;
pub mod results;
mod run;
pub mod wire;
pub mod worker;

pub use calls::StoredCall;
pub use context::{OpContext, OpError, OpsRuntime, OpsState};
pub use lifecycle::{change, create, Created, Existing, NewResource};
pub use outcome::{failure_effect, Settled};
pub use poll::{expire_if_overdue, poll_guest};
pub use run::run;

/// The span of one step (`run` or `poll`) of operation `op`: its broker, kind, id and
/// attempt, so a trace shows each operation and the guest calls it made. At DEBUG: the trace
/// exporter takes it, while log lines at INFO do not pay for it on every request.
pub(crate) fn operation_span(
    op: &crate::store::OperationRecord,
    step: &'static str,
) -> tracing::Span {
    tracing::debug_span!(
        "operation",
        otel.name = %format_args!("{} {step}", op.kind.as_str()),
        broker = %op.broker,
        kind = op.kind.as_str(),
        operation = %op.id,
        attempt = op.attempts,
        step,
    )
}
