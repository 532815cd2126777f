//! The data keys that seal stored secrets, for the operator: their status (which is primary,
//! how many values each seals, how many are not yet under the primary) and rotation.

use super::{AdminState, Caller};
use crate::error::ApiError;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

fn operator_only(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Operator => Ok(()),
        Caller::Tenant(_) => Err(ApiError::Forbidden(
            "only the operator's token manages the data keys".into(),
        )),
    }
}

/// `GET /admin/keys`: the master key's id, the data keys, and the reseal's progress.
pub(super) async fn status(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator_only(&caller)?;
    Ok(Json(
        serde_json::to_value(state.store.key_status().await?)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// `POST /admin/keys/rotate`: a new primary data key. New writes use it at once (on other
/// replicas within seconds); a background task reseals the older values and retires the older
/// key once no value uses it.
pub(super) async fn rotate(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator_only(&caller)?;
    let primary = state.store.rotate_key().await?;
    let entry = crate::store::AuditEntry {
        actor: caller.actor(),
        tenant: None,
        action: "rotate-key".into(),
        broker: None,
        resource: Some(format!("data key {primary}")),
        outcome: "ok".into(),
        detail: None,
    };
    if let Err(error) = state.store.append_audit(&entry).await {
        tracing::error!("cannot write the audit trail: {error}");
    }
    let status = state.store.key_status().await?;
    Ok(Json(json!({ "primary": primary, "status": status })))
}
