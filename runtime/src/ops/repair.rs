//! Repairs an operator (or a tenant, on its own brokers) makes without opening the database:
//! purge an instance or binding from the state, fail a stuck operation, retry a failed one.
//! Each is written in the audit trail; each refuses to act while an operation is running on
//! what it touches, unless forced.

use super::{failure_effect, run, OpContext, OpsState, StoredCall};
use crate::store::{
    AuditEntry, OperationKind, OperationRecord, OperationState, Outcome, Purged, ResourceState,
    StoreError,
};

/// Why a repair did not act.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Nothing of that id.
    #[error("{0}")]
    NotFound(String),
    /// An operation is running on it (or, for a retry, it cannot be repeated); `force` acts
    /// anyway where that makes sense.
    #[error("{0}")]
    Refused(String),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who repairs, and for which tenant's broker: what the audit entry names.
#[derive(Debug, Clone)]
pub struct Repairer {
    /// `operator` or `tenant:NAME`.
    pub actor: String,
    /// The broker's tenant.
    pub tenant: Option<String>,
}

impl Repairer {
    fn entry(
        &self,
        action: &str,
        broker: &str,
        resource: String,
        detail: Option<String>,
    ) -> AuditEntry {
        AuditEntry {
            actor: self.actor.clone(),
            tenant: self.tenant.clone(),
            action: action.into(),
            broker: Some(broker.into()),
            resource: Some(resource),
            outcome: "ok".into(),
            detail,
        }
    }
}

/// Whether a runtime is working on `op` now: it holds an unexpired lease (a guest call or a
/// poll in flight). A long operation waiting for its next poll holds none.
fn running(op: &OperationRecord, now: i64) -> bool {
    op.owner.is_some() && op.lease_until.is_some_and(|until| until > now)
}

fn refuse_running(ops: &[OperationRecord], what: &str) -> Result<(), RepairError> {
    match ops.iter().find(|op| running(op, crate::store::now_ms())) {
        Some(op) => Err(RepairError::Refused(format!(
            "operation {} ({}) is running on {what}; repeat with force to act anyway",
            op.id,
            op.kind.as_str()
        ))),
        None => Ok(()),
    }
}

/// Removes instance `instance_id` of `broker`, its bindings and their operations from the
/// state; the guest is not called (what it made outside stays).
///
/// # Errors
/// No such instance; an operation running on it or a binding, unless `force`; the store.
pub async fn purge_instance(
    state: &OpsState,
    who: &Repairer,
    broker: &str,
    instance_id: &str,
    force: bool,
) -> Result<Purged, RepairError> {
    let store = &state.store;
    if store.instance(broker, instance_id).await?.is_none() {
        return Err(RepairError::NotFound(format!(
            "broker {broker} has no instance {instance_id:?}"
        )));
    }
    let what = format!("instance {instance_id}");
    if !force {
        refuse_running(
            &store.in_progress_on(broker, instance_id, None).await?,
            &what,
        )?;
    }
    let detail = force.then(|| "forced".to_string());
    let entry = who.entry("purge-instance", broker, what, detail);
    Ok(store.purge_instance(broker, instance_id, &entry).await?)
}

/// Removes binding `binding_id` of `broker` and its operations from the state.
///
/// # Errors
/// As [`purge_instance`].
pub async fn purge_binding(
    state: &OpsState,
    who: &Repairer,
    broker: &str,
    binding_id: &str,
    force: bool,
) -> Result<Purged, RepairError> {
    let store = &state.store;
    let Some(binding) = store.binding(broker, binding_id).await? else {
        return Err(RepairError::NotFound(format!(
            "broker {broker} has no binding {binding_id:?}"
        )));
    };
    let what = format!("binding {binding_id} of instance {}", binding.instance_id);
    if !force {
        let ops = (store.in_progress_on(broker, &binding.instance_id, Some(binding_id))).await?;
        refuse_running(&ops, &what)?;
    }
    let detail = force.then(|| "forced".to_string());
    let entry = who.entry("purge-binding", broker, what, detail);
    Ok(store.purge_binding(broker, binding_id, &entry).await?)
}

/// The operation `id` of `broker`.
async fn operation(
    state: &OpsState,
    broker: &str,
    id: &str,
) -> Result<OperationRecord, RepairError> {
    (state.store.operation(broker, id).await?)
        .ok_or_else(|| RepairError::NotFound(format!("broker {broker} has no operation {id:?}")))
}

/// Marks the operation `id` of `broker`, in progress, failed with `description`: its resource
/// becomes what a failure leaves (a failed instance, a restored one, no binding...), and
/// pollers stop asking the guest about it.
///
/// # Errors
/// No such operation; one already ended; one a runtime is running now, unless `force`.
pub async fn fail_operation(
    state: &OpsState,
    who: &Repairer,
    broker: &str,
    id: &str,
    description: Option<String>,
    force: bool,
) -> Result<OperationRecord, RepairError> {
    let op = operation(state, broker, id).await?;
    if op.state != OperationState::InProgress {
        return Err(RepairError::Refused(format!(
            "operation {id} has ended ({}): only one in progress can be failed",
            op.state.as_str()
        )));
    }
    if !force {
        refuse_running(std::slice::from_ref(&op), &format!("operation {id}"))?;
    }
    let description = description.unwrap_or_else(|| format!("failed by {}", who.actor));
    let outcome = Outcome::failed(description.clone());
    state
        .store
        .finish_operation(&op, &outcome, &failure_effect(op.kind))
        .await
        .map_err(|error| match error {
            // It ended meanwhile (its guest answered, or another repair).
            StoreError::Changed => {
                RepairError::Refused(format!("operation {id} ended meanwhile; nothing to fail"))
            }
            other => other.into(),
        })?;
    let detail = Some(format!(
        "{description}{}",
        if force { " (forced)" } else { "" }
    ));
    let entry = who.entry("fail-operation", broker, format!("operation {id}"), detail);
    state.store.append_audit(&entry).await?;
    operation(state, broker, id).await
}

/// The state a retried operation of `kind` puts its resource in.
fn retry_state(kind: OperationKind) -> ResourceState {
    match kind {
        OperationKind::Provision | OperationKind::Bind => ResourceState::Creating,
        OperationKind::Update => ResourceState::Updating,
        OperationKind::Deprovision | OperationKind::Unbind => ResourceState::Deleting,
    }
}

/// Runs the failed operation `id` of `broker` again, as a new operation with the same request,
/// against the broker's current version; answers it at once (the platform, or the operator,
/// follows it through `last_operation` or the operations list).
///
/// # Errors
/// No such operation, or the broker is not serving; it did not fail, a later operation ran on
/// its resource, or it was a bind (a failed bind leaves no binding: the platform binds
/// again); the store.
pub async fn retry_operation(
    state: &OpsState,
    who: &Repairer,
    broker: &str,
    id: &str,
) -> Result<OperationRecord, RepairError> {
    let old = operation(state, broker, id).await?;
    if old.state != OperationState::Failed {
        return Err(RepairError::Refused(format!(
            "operation {id} is {}: only a failed one can be retried",
            old.state.as_str()
        )));
    }
    if old.kind == OperationKind::Bind {
        return Err(RepairError::Refused(
            "a failed bind leaves no binding to retry on: the platform binds again".into(),
        ));
    }
    let latest = state
        .store
        .latest_operation(broker, &old.instance_id, old.binding_id.as_deref())
        .await?;
    if latest.as_ref().is_some_and(|latest| latest.id != old.id) {
        return Err(RepairError::Refused(format!(
            "a later operation ran on its resource; operation {id} is history"
        )));
    }
    let stored: StoredCall = (old.request.as_deref())
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| RepairError::Refused(format!("operation {id} kept no request to replay")))?;
    let Some(loaded) = state.brokers.get(broker) else {
        return Err(RepairError::NotFound(format!(
            "broker {broker} is not serving"
        )));
    };
    let mut ctx = OpContext {
        state: state.clone(),
        broker: loaded,
        call: stored.call_info(1),
    };
    // A retry answers no request: the guest may take as long as an asynchronous one.
    ctx.call.accepts_incomplete = true;
    let mut op = ctx.new_operation(&stored);
    op.actor = Some(who.actor.clone());
    state
        .store
        .start_operation(&op, retry_state(op.kind))
        .await
        .map_err(|error| match error {
            StoreError::Changed => RepairError::Refused(
                "its resource is gone, or another operation is in progress on it".into(),
            ),
            other => other.into(),
        })?;
    let entry = who.entry(
        "retry-operation",
        broker,
        format!("operation {id}"),
        Some(format!("as operation {}", op.id)),
    );
    state.store.append_audit(&entry).await?;
    let started = op.clone();
    state.runtime.tasks.spawn(async move {
        if let Err(error) = run(ctx, op, stored).await {
            tracing::info!("retried operation ended: {error}");
        }
    });
    Ok(started)
}
