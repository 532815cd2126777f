//! The bodies of OSB answers built from stored state and settled operations.

use super::Reply;
use crate::ops::Settled;
use crate::store::{BindingRecord, InstanceRecord};
use axum::http::StatusCode;
use serde_json::{json, Value};

/// The body of a finished provision or a repeated identical one.
pub fn instance_body(record: &InstanceRecord) -> Value {
    body_of(record.dashboard_url.as_deref(), record.metadata.as_deref())
}

/// An instance body from its dashboard URL and metadata (JSON text).
pub fn body_of(dashboard_url: Option<&str>, metadata: Option<&str>) -> Value {
    let mut body = json!({});
    if let Some(url) = dashboard_url {
        body["dashboard_url"] = json!(url);
    }
    if let Some(metadata) = metadata.and_then(|m| serde_json::from_str::<Value>(m).ok()) {
        body["metadata"] = metadata;
    }
    body
}

/// The body of a binding from its stored result (JSON text); `{}` without one.
pub fn binding_body(record: &BindingRecord) -> Value {
    result_body(record.result.as_deref())
}

/// A binding body from a stored result (JSON text); `{}` without one.
pub fn result_body(result: Option<&str>) -> Value {
    result
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| json!({}))
}

/// 202 with the operation of a resource whose operation goes on.
pub fn accepted(operation: Option<String>) -> Reply {
    let operation = operation.unwrap_or_default();
    (StatusCode::ACCEPTED, json!({ "operation": operation })).into()
}

/// The answer to a delete once it ran.
pub fn deleted(settled: Settled) -> Reply {
    match settled {
        Settled::Accepted(operation) => accepted(Some(operation)),
        Settled::Finished(_) => (StatusCode::OK, json!({})).into(),
    }
}
