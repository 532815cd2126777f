//! `GET .../last_operation` of instances and bindings: served from stored state; an operation
//! the guest runs itself is advanced by asking the guest once per poll.

use super::request::{accepts_incomplete, Osb};
use super::{query, AppState, Reply};
use crate::error::ApiError;
use crate::ops::poll_guest;
use crate::store::{OperationRecord, OperationState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// Path of an instance's last_operation.
#[derive(Deserialize)]
pub struct InstancePath {
    #[allow(dead_code)]
    broker: String,
    instance_id: String,
}

/// Path of a binding's last_operation.
#[derive(Deserialize)]
pub struct BindingPath {
    #[allow(dead_code)]
    broker: String,
    instance_id: String,
    binding_id: String,
}

/// `GET /v2/service_instances/:instance_id/last_operation`.
pub async fn instance(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let current = state
        .store
        .instance(&osb.broker.name, &path.instance_id)
        .await?;
    let id = query
        .get("operation")
        .cloned()
        .or(current.and_then(|i| i.operation_id));
    answer(&state, &osb, id, &path.instance_id, None).await
}

/// `GET .../service_bindings/:binding_id/last_operation`.
pub async fn binding(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let current = state
        .store
        .binding(&osb.broker.name, &path.binding_id)
        .await?;
    let id = query
        .get("operation")
        .cloned()
        .or(current.and_then(|b| b.operation_id));
    answer(&state, &osb, id, &path.instance_id, Some(&path.binding_id)).await
}

async fn answer(
    state: &AppState,
    osb: &Osb,
    id: Option<String>,
    instance_id: &str,
    binding_id: Option<&str>,
) -> Result<Reply, ApiError> {
    let gone = || {
        ApiError::Gone(format!(
            "no operation is known for {}",
            binding_id.unwrap_or(instance_id)
        ))
    };
    let id = id.ok_or_else(gone)?;
    let mut op = state
        .store
        .operation(&osb.broker.name, &id)
        .await?
        .filter(|op| op.instance_id == instance_id && op.binding_id.as_deref() == binding_id)
        .ok_or_else(gone)?;
    if op.state == OperationState::InProgress && op.guest_data.is_some() {
        let ctx = osb.context(state, accepts_incomplete(None)?);
        op = poll_guest(&ctx, &op).await?;
    }
    reply(&op)
}

/// The last_operation body of a stored operation.
fn reply(op: &OperationRecord) -> Result<Reply, ApiError> {
    let mut body = json!({ "state": op.state.as_str() });
    if let Some(description) = &op.description {
        body["description"] = json!(description);
    }
    Ok((StatusCode::OK, body).into())
}
