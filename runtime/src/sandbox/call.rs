//! How a guest call can end badly, told apart: the broker said no, or the sandbox stopped it.

use super::bindings::types::BrokerError;
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
