//! How a guest call can end badly, told apart: the broker said no, or the sandbox stopped it;
//! and the cap on the guest's descriptions, applied where they enter the host.

use super::bindings::types::{BrokerError, OperationState};
use wasmtime::Trap;

/// Who a call is for, for logs.
#[derive(Debug, Clone, Default)]
pub struct CallInfo {
    /// The OSB `X-Broker-API-Request-Identity`, if the platform sent one.
    pub request_identity: Option<String>,
    /// A deadline shorter than the broker's call timeout (a synchronous request's).
    pub deadline: Option<std::time::Duration>,
}

/// Why a guest call did not return a value.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The broker refused the request (`result::err`): maps to a 4xx/422 OSB error.
    #[error("{0}")]
    Broker(BrokerError),
    /// The call used up its fuel (CPU budget).
    #[error("the broker exceeded its CPU budget (fuel limit of {0} units)")]
    FuelExhausted(u64),
    /// The call ran past its wall-clock deadline.
    #[error("the broker did not answer within its deadline of {0} ms")]
    Timeout(u64),
    /// The guest tried to grow memory past its cap.
    #[error("the broker exceeded its memory limit of {0} MiB")]
    MemoryLimit(u64),
    /// The guest handed the host more data in one host call or result than the host lifts.
    #[error("the broker passed the host more than {0} bytes at once")]
    TooMuchData(usize),
    /// The guest ran out of wasm stack.
    #[error("the broker overflowed its stack")]
    StackOverflow,
    /// The guest trapped (a panic, `unreachable`, a bad memory access...).
    #[error("the broker crashed: {0}")]
    Trap(String),
    /// No slot freed up for the call before its deadline (the broker's concurrency cap or the
    /// runtime's cap on live instances).
    #[error("the broker is at its concurrency limit; no slot freed up within {0} ms")]
    Busy(u64),
    /// The host could not set up or run the call.
    #[error("the broker could not be run: {0}")]
    Host(String),
}

impl CallError {
    /// The outcome label of a call that ended with this error.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Broker(_) => "broker_error",
            CallError::FuelExhausted(_) => "fuel",
            CallError::Timeout(_) => "deadline",
            CallError::MemoryLimit(_) => "memory",
            CallError::TooMuchData(_) => "output_cap",
            CallError::StackOverflow | CallError::Trap(_) => "trap",
            CallError::Busy(_) => "busy",
            CallError::Host(_) => "host_error",
        }
    }

    /// The limit that stopped the call, when one did.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            CallError::FuelExhausted(_) => Some("fuel"),
            CallError::Timeout(_) => Some("deadline"),
            CallError::MemoryLimit(_) => Some("memory"),
            CallError::TooMuchData(_) => Some("output_cap"),
            CallError::StackOverflow => Some("stack"),
            CallError::Busy(_) => Some("concurrency"),
            _ => None,
        }
    }

    /// Classifies an error from wasmtime into the limit or fault that caused it.
    /// `fuel` and `hostcall_bytes` are the call's limits, named in the errors they cause.
    pub fn from_wasmtime(error: &wasmtime::Error, fuel: u64, hostcall_bytes: usize) -> Self {
        if let Some(trap) = error.downcast_ref::<Trap>() {
            return match trap {
                Trap::OutOfFuel => CallError::FuelExhausted(fuel),
                Trap::StackOverflow => CallError::StackOverflow,
                other => CallError::Trap(other.to_string()),
            };
        }
        let text = format!("{error:#}");
        if text.contains("fuel allocated for hostcalls has been exhausted") {
            return CallError::TooMuchData(hostcall_bytes);
        }
        CallError::Trap(text)
    }
}

/// Longest description from a guest passed on to the platform; the rest is cut where it
/// enters the host.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;

/// A guest's description, cut to [`MAX_DESCRIPTION_BYTES`] (on a character boundary).
pub fn cap_description(mut text: String) -> String {
    if text.len() > MAX_DESCRIPTION_BYTES {
        let mut end = MAX_DESCRIPTION_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The description of a broker's refusal.
pub fn refusal_description(refusal: &BrokerError) -> &str {
    match refusal {
        BrokerError::BadRequest(d)
        | BrokerError::Conflict(d)
        | BrokerError::Gone(d)
        | BrokerError::AsyncRequired(d)
        | BrokerError::ConcurrencyError(d)
        | BrokerError::RequiresApp(d)
        | BrokerError::MaintenanceInfoConflict(d)
        | BrokerError::Unprocessable(d)
        | BrokerError::Internal(d) => d,
    }
}

/// `refusal` with its description capped.
pub fn cap_refusal(refusal: BrokerError) -> BrokerError {
    let cap = cap_description;
    match refusal {
        BrokerError::BadRequest(d) => BrokerError::BadRequest(cap(d)),
        BrokerError::Conflict(d) => BrokerError::Conflict(cap(d)),
        BrokerError::Gone(d) => BrokerError::Gone(cap(d)),
        BrokerError::AsyncRequired(d) => BrokerError::AsyncRequired(cap(d)),
        BrokerError::ConcurrencyError(d) => BrokerError::ConcurrencyError(cap(d)),
        BrokerError::RequiresApp(d) => BrokerError::RequiresApp(cap(d)),
        BrokerError::MaintenanceInfoConflict(d) => BrokerError::MaintenanceInfoConflict(cap(d)),
        BrokerError::Unprocessable(d) => BrokerError::Unprocessable(cap(d)),
        BrokerError::Internal(d) => BrokerError::Internal(cap(d)),
    }
}

/// `state` with its descriptions capped.
pub fn cap_operation_state(state: OperationState) -> OperationState {
    match state {
        OperationState::InProgress(mut p) => {
            p.description = p.description.map(cap_description);
            OperationState::InProgress(p)
        }
        OperationState::Succeeded(mut s) => {
            s.description = s.description.map(cap_description);
            OperationState::Succeeded(s)
        }
        OperationState::Failed(mut f) => {
            f.description = cap_description(f.description);
            OperationState::Failed(f)
        }
    }
}
