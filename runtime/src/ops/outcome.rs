//! What a guest's answer to a mutating call means for its operation and its resource.

use super::OpError;
use crate::sandbox::bindings::types::{self as wit, BrokerError};
use crate::sandbox::CallError;
use crate::store::{Effect, OperationKind};

/// What a guest's answer to a mutating call means.
pub enum Answer {
    /// Finished: apply the effect.
    Done(Effect),
    /// Started: poll `last-operation` with this data; apply the effect (what is known early).
    Accepted(String, Effect),
    /// Refused or crashed: answer the error, apply the effect.
    Failed(OpError, Effect),
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

pub fn guest_kind(kind: OperationKind) -> wit::OperationKind {
    match kind {
        OperationKind::Provision => wit::OperationKind::Provision,
        OperationKind::Update => wit::OperationKind::Update,
        OperationKind::Deprovision => wit::OperationKind::Deprovision,
        OperationKind::Bind => wit::OperationKind::Bind,
        OperationKind::Unbind => wit::OperationKind::Unbind,
    }
}
