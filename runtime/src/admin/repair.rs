//! Repairs (purge an instance or binding, fail a stuck operation, retry a failed one), the
//! operations worth a look (running, or failed lately), and the audit trail.

use super::brokers::{owned, tenant_of};
use super::{AdminState, Caller};
use crate::error::ApiError;
use crate::ops::repair::{self, RepairError, Repairer};
use crate::store::OperationRecord;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// How far back `GET /admin/operations` lists failed operations.
pub const FAILED_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// Most entries or operations one listing returns.
pub const MAX_LISTED: i64 = 500;

impl From<RepairError> for ApiError {
    fn from(error: RepairError) -> Self {
        match error {
            RepairError::NotFound(d) => ApiError::NotFound(d),
            RepairError::Refused(d) => ApiError::Conflict(d),
            RepairError::Store(e) => e.into(),
        }
    }
}

/// The query of a repair.
#[derive(Deserialize)]
pub(super) struct RepairQuery {
    /// Act even while an operation is running.
    #[serde(default)]
    force: bool,
    /// What the failed operation tells the platform (fail only).
    description: Option<String>,
}

/// The caller as the repair's audit entry names them, for broker `name` (which it may manage).
fn repairer(state: &AdminState, caller: &Caller, name: &str) -> Result<Repairer, ApiError> {
    owned(state, caller, name)?;
    Ok(Repairer {
        actor: caller.actor(),
        tenant: tenant_of(state, name).flatten(),
    })
}

/// An operation as the admin API shows it.
pub(super) fn operation_json(op: &OperationRecord) -> Value {
    let now = crate::store::now_ms();
    json!({
        "id": op.id,
        "broker": op.broker,
        "tenant": op.tenant,
        "kind": op.kind.as_str(),
        "state": op.state.as_str(),
        "instance_id": op.instance_id,
        "binding_id": op.binding_id,
        "description": op.description,
        "attempts": op.attempts,
        "actor": op.actor,
        "created_at_ms": op.created_at,
        "running": op.owner.is_some() && op.lease_until.is_some_and(|until| until > now),
    })
}

/// In a task of its own, so a client that hangs up does not cut a repair between its change
/// and its audit entry.
async fn detached<T: Send + 'static>(
    repair: impl std::future::Future<Output = Result<T, RepairError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(repair)
        .await
        .map_err(|e| ApiError::Internal(format!("the repair failed: {e}")))?
        .map_err(ApiError::from)
}

/// `POST /admin/brokers/{name}/instances/{id}/purge?force=`: removes an instance, its
/// bindings and their operations from the state without calling the guest.
pub(super) async fn purge_instance(
    State(state): State<AdminState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<RepairQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = repairer(&state, &caller, &name)?;
    let ops = state.ops.clone();
    let broker = name.clone();
    let purged =
        detached(
            async move { repair::purge_instance(&ops, &who, &broker, &id, query.force).await },
        )
        .await?;
    Ok(Json(json!({ "broker": name, "purged": purged })))
}

/// `POST /admin/brokers/{name}/bindings/{id}/purge?force=`: removes a binding and its
/// operations from the state without calling the guest.
pub(super) async fn purge_binding(
    State(state): State<AdminState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<RepairQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = repairer(&state, &caller, &name)?;
    let ops = state.ops.clone();
    let broker = name.clone();
    let purged =
        detached(async move { repair::purge_binding(&ops, &who, &broker, &id, query.force).await })
            .await?;
    Ok(Json(json!({ "broker": name, "purged": purged })))
}

/// `POST /admin/brokers/{name}/operations/{id}/fail?force=&description=`: ends a stuck
/// operation as failed.
pub(super) async fn fail(
    State(state): State<AdminState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Query(query): Query<RepairQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = repairer(&state, &caller, &name)?;
    let ops = state.ops.clone();
    let op = detached(async move {
        let description = query.description.map(crate::sandbox::cap_description);
        repair::fail_operation(&ops, &who, &name, &id, description, query.force).await
    })
    .await?;
    Ok(Json(operation_json(&op)))
}

/// `POST /admin/brokers/{name}/operations/{id}/retry`: runs a failed operation again as a
/// new one; answers with the new operation, in progress.
pub(super) async fn retry(
    State(state): State<AdminState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let who = repairer(&state, &caller, &name)?;
    let ops = state.ops.clone();
    let op = detached(async move { repair::retry_operation(&ops, &who, &name, &id).await }).await?;
    Ok(Json(operation_json(&op)))
}

/// The operations the caller may see: running, or failed within the last day.
pub(super) async fn visible_operations(
    state: &AdminState,
    caller: &Caller,
) -> Result<Vec<OperationRecord>, ApiError> {
    let since = crate::store::now_ms() - FAILED_WINDOW_MS;
    let ops = state.store.recent_operations(since, MAX_LISTED).await?;
    Ok(ops
        .into_iter()
        .filter(|op| caller.may(op.tenant.as_deref()))
        .collect())
}

/// `GET /admin/operations`: operations in progress and those failed in the last day, newest
/// first, of the brokers the caller may manage.
pub(super) async fn operations(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let ops = visible_operations(&state, &caller).await?;
    let list: Vec<Value> = ops.iter().map(operation_json).collect();
    Ok(Json(json!({ "operations": list })))
}

/// The query of `GET /admin/audit`.
#[derive(Deserialize)]
pub(super) struct AuditQuery {
    /// At most this many entries (default 100, at most 500).
    limit: Option<i64>,
    /// Only entries before this `seq` (to page back).
    before: Option<i64>,
}

/// The audit entries the caller may read, newest first.
pub(super) async fn visible_audit(
    state: &AdminState,
    caller: &Caller,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<crate::store::AuditRecord>, ApiError> {
    let tenant = match caller {
        Caller::Operator => None,
        Caller::Tenant(name) => Some(name.as_str()),
    };
    Ok(state
        .store
        .audit(tenant, before, limit.clamp(1, MAX_LISTED))
        .await?)
}

/// `GET /admin/audit?limit=&before=`: the audit trail, newest first; a tenant's token reads
/// only its own entries.
pub(super) async fn audit(
    State(state): State<AdminState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let entries = visible_audit(&state, &caller, query.before, query.limit.unwrap_or(100)).await?;
    Ok(Json(json!({ "entries": entries })))
}
