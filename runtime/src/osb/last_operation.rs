//! `GET .../last_operation` of instances and bindings: served from stored state only (the
//! runtime's pollers advance long operations in the background), so it is fast and keeps
//! answering across restarts.
//!
//! The `operation` query value names the operation to report; when it is missing or names an
//! operation of another resource, the resource's latest operation is reported instead.
//! Operations are kept after their resource is deleted, so a finished asynchronous delete
//! answers 200 `succeeded`; a resource with no known operation answers 404, and so does one
//! that does not exist when polled without naming an operation it was handed (a provision
//! refused at once leaves no instance). A named operation is always reported: a bind whose
//! instance was deleted under it reports `failed`, saying so.

use super::params::{BindingPath, InstancePath};
use super::request::Osb;
use super::{query, AppState, Reply};
use crate::error::ApiError;
use crate::store::{OperationKind, OperationRecord, OperationState};
use axum::extract::{Path, State};
use axum::http::{header::RETRY_AFTER, HeaderValue, StatusCode};
use serde_json::json;

/// Seconds a platform is asked to wait before polling an operation in progress again.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// `GET /v2/service_instances/:instance_id/last_operation`.
pub async fn instance(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<InstancePath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let target = Target {
        instance_id: &path.instance_id,
        binding_id: None,
    };
    answer(&state, &osb, query.get("operation"), target).await
}

/// `GET .../service_bindings/:binding_id/last_operation`.
pub async fn binding(
    State(state): State<AppState>,
    osb: Osb,
    Path(path): Path<BindingPath>,
    query: query::Query,
) -> Result<Reply, ApiError> {
    let target = Target {
        instance_id: &path.instance_id,
        binding_id: Some(&path.binding_id),
    };
    answer(&state, &osb, query.get("operation"), target).await
}

/// The resource whose operation is asked for.
#[derive(Clone, Copy)]
struct Target<'a> {
    instance_id: &'a str,
    binding_id: Option<&'a str>,
}

/// The operation `asked` for when it belongs to `target`, else `target`'s latest operation.
async fn find(
    state: &AppState,
    broker: &str,
    asked: Option<&String>,
    target: Target<'_>,
) -> Result<Option<OperationRecord>, ApiError> {
    if let Some(id) = asked {
        let op = state.ops.store.operation(broker, id).await?.filter(|op| {
            op.instance_id == target.instance_id && op.binding_id.as_deref() == target.binding_id
        });
        if op.is_some() {
            return Ok(op);
        }
    }
    Ok(state
        .ops
        .store
        .latest_operation(broker, target.instance_id, target.binding_id)
        .await?)
}

async fn answer(
    state: &AppState,
    osb: &Osb,
    asked: Option<&String>,
    target: Target<'_>,
) -> Result<Reply, ApiError> {
    let resource = target.binding_id.unwrap_or(target.instance_id);
    let op = find(state, &osb.broker.name, asked, target)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no operation is known for {resource}")))?;
    let named = asked.is_some_and(|id| *id == op.id);
    if !named
        && !matches!(op.kind, OperationKind::Deprovision | OperationKind::Unbind)
        && !exists(state, &osb.broker.name, target).await?
    {
        // Asked without the operation the platform was handed (with a 202): a create refused
        // at once leaves no resource, and the resource being polled does not exist.
        return Err(ApiError::NotFound(format!("{resource} does not exist")));
    }
    let op = crate::ops::expire_if_overdue(&state.ops, &osb.broker, op).await?;
    Ok(reply(&op))
}

/// Whether the resource `target` exists (in any state).
async fn exists(state: &AppState, broker: &str, target: Target<'_>) -> Result<bool, ApiError> {
    Ok(match target.binding_id {
        Some(binding) => state
            .ops
            .store
            .binding(broker, binding)
            .await?
            .is_some_and(|b| b.instance_id == target.instance_id),
        None => state
            .ops
            .store
            .instance(broker, target.instance_id)
            .await?
            .is_some(),
    })
}

/// The last_operation body of a stored operation.
fn reply(op: &OperationRecord) -> Reply {
    let mut body = json!({ "state": op.state.as_str() });
    if let Some(description) = &op.description {
        body["description"] = json!(description);
    }
    if op.state == OperationState::Failed {
        if let Some(usable) = op.instance_usable {
            body["instance_usable"] = json!(usable);
        }
        if let Some(repeatable) = op.update_repeatable {
            body["update_repeatable"] = json!(repeatable);
        }
    }
    let reply = Reply::from((StatusCode::OK, body));
    if op.state == OperationState::InProgress {
        reply.with_header(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS))
    } else {
        reply
    }
}
