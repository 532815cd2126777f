//! What the path and the query of an OSB request carry: the resource ids, and the query
//! parameters, each checked into a 400 when malformed.

use super::query::Query;
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Deserialize;

/// Path of an instance route.
#[derive(Deserialize)]
pub struct InstancePath {
    /// Instance id.
    pub instance_id: String,
}

/// Path of a binding route.
#[derive(Deserialize)]
pub struct BindingPath {
    /// Instance id.
    pub instance_id: String,
    /// Binding id.
    pub binding_id: String,
}

/// The `accepts_incomplete` query parameter (absent means false).
pub struct Accepts(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for Accepts {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = Query::from_request_parts(parts, state).await?;
        accepts_incomplete(query.get("accepts_incomplete")).map(Accepts)
    }
}

/// Parses the `accepts_incomplete` query parameter (absent means false).
///
/// # Errors
/// 400 when it is neither `true` nor `false`.
pub fn accepts_incomplete(value: Option<&String>) -> Result<bool, ApiError> {
    match value.map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "accepts_incomplete must be true or false, not {other:?}"
        ))),
    }
}

/// The query of a delete: the required `service_id` and `plan_id`, and `accepts_incomplete`.
pub struct DeleteQuery {
    /// The service of the resource.
    pub service_id: String,
    /// The plan of the resource.
    pub plan_id: String,
    /// Whether the platform accepts an asynchronous answer.
    pub accepts: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for DeleteQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let query = Query::from_request_parts(parts, state).await?;
        let accepts = accepts_incomplete(query.get("accepts_incomplete"))?;
        let required = super::validate::required;
        Ok(DeleteQuery {
            service_id: required("service_id", query.get("service_id").cloned())?,
            plan_id: required("plan_id", query.get("plan_id").cloned())?,
            accepts,
        })
    }
}
