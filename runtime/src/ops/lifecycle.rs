//! The one state machine of instances and bindings: a create inserts the resource (state
//! `creating`) with its operation in one transaction and runs it; a change (update, delete)
//! moves an existing resource to `updating` or `deleting` with its operation, and runs it.
//! The outcome's effect then makes the resource ready, restores it, or removes it.

use super::run::{in_task, Written};
use super::{run, OpContext, OpError, Settled, StoredCall};
use crate::store::{BindingRecord, InstanceRecord, OperationRecord, ResourceState, StoreError};

/// A resource to create, as it is stored while its create runs.
pub enum NewResource {
    /// An instance (provision).
    Instance(InstanceRecord),
    /// A binding (bind).
    Binding(BindingRecord),
}

/// A resource found under the id a create asked for.
pub enum Existing {
    /// An instance.
    Instance(InstanceRecord),
    /// A binding.
    Binding(BindingRecord),
}

/// What a create did.
pub enum Created {
    /// The create ran (or goes on in the background).
    Ran(Settled),
    /// Another create of the same id got there first: what it stored (the caller tells an
    /// identical repeat from a conflict).
    Exists(Existing),
}

/// Creates `resource` with a new operation of `stored` and runs it.
///
/// **Cancellation.** The intent, the guest call and the outcome happen in one task of the
/// runtime's: a request dropped at any `.await` (its client hung up) never leaves an intent
/// written whose operation nobody runs.
///
/// # Errors
/// The guest's refusal or crash, an operation that failed, or a state store failure.
pub async fn create(
    ctx: OpContext,
    resource: NewResource,
    stored: StoredCall,
) -> Result<Created, OpError> {
    let op = ctx.new_operation(&stored);
    let id = op.id.clone();
    let work = |written| create_now(ctx.clone(), op, resource, stored, written);
    in_task(&ctx, &id, work, |id| Created::Ran(Settled::Accepted(id))).await
}

async fn create_now(
    ctx: OpContext,
    op: OperationRecord,
    resource: NewResource,
    stored: StoredCall,
    written: Written,
) -> Result<Created, OpError> {
    let store = &ctx.state.store;
    let inserted = match resource {
        NewResource::Instance(mut record) => {
            record.state = ResourceState::Creating;
            record.operation_id = Some(op.id.clone());
            store.create_instance(&record, &op).await
        }
        NewResource::Binding(mut record) => {
            record.state = ResourceState::Creating;
            record.operation_id = Some(op.id.clone());
            store.create_binding(&record, &op).await
        }
    };
    match inserted {
        Err(StoreError::Exists) => {
            let broker = &ctx.broker.name;
            let found = match &stored.binding_id {
                Some(id) => store.binding(broker, id).await?.map(Existing::Binding),
                None => store
                    .instance(broker, &stored.instance_id)
                    .await?
                    .map(Existing::Instance),
            };
            // Gone again already: a concurrent change, the platform retries.
            found
                .map(Created::Exists)
                .ok_or(OpError::Store(StoreError::Changed))
        }
        Err(other) => Err(other.into()),
        Ok(()) => {
            let _ = written.send(());
            Ok(Created::Ran(run(ctx, op, stored).await?))
        }
    }
}

/// Starts a change of an existing resource (update, deprovision, unbind), moving it to
/// `state`, and runs it; `target_plan` is the plan an update moves the instance to.
///
/// Cancellation as in [`create`].
///
/// # Errors
/// [`OpError::Busy`] when another operation on the resource is in progress; otherwise as
/// [`create`].
pub async fn change(
    ctx: OpContext,
    stored: StoredCall,
    state: ResourceState,
    target_plan: Option<String>,
) -> Result<Settled, OpError> {
    let mut op = ctx.new_operation(&stored);
    op.target_plan = target_plan;
    let id = op.id.clone();
    let work = |written| change_now(ctx.clone(), op, stored, state, written);
    in_task(&ctx, &id, work, Settled::Accepted).await
}

async fn change_now(
    ctx: OpContext,
    op: OperationRecord,
    stored: StoredCall,
    state: ResourceState,
    written: Written,
) -> Result<Settled, OpError> {
    match ctx.state.store.start_operation(&op, state).await {
        Err(StoreError::Changed | StoreError::Exists) => {
            let id = stored.binding_id.as_ref().unwrap_or(&stored.instance_id);
            Err(OpError::Busy(id.clone()))
        }
        Err(other) => Err(other.into()),
        Ok(()) => {
            let _ = written.send(());
            run(ctx, op, stored).await
        }
    }
}
