//! The one API error type. Every failure a request can meet becomes an `ApiError`, and one
//! table turns it into the OSB status code, `error` code and JSON body.

use crate::ops::OpError;
use crate::sandbox::bindings::types::BrokerError;
use crate::sandbox::CallError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Why an OSB request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed or invalid request.
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing or wrong credentials. The reason is logged, never sent (a client learns
    /// nothing about which part was wrong, or whether the broker exists).
    #[error("missing or invalid credentials for this broker")]
    Unauthorized(&'static str),
    /// 401 on the admin API: missing or unknown bearer token.
    #[error("missing or invalid admin token: send Authorization: Bearer TOKEN with an operator or tenant token of the runtime's config")]
    BadToken,
    /// 403: the caller may not do this (admin API).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such broker, instance, binding or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: same id, other attributes.
    #[error("{0}")]
    Conflict(String),
    /// 410: the resource does not exist (on delete and last_operation).
    #[error("{0}")]
    Gone(String),
    /// 412: missing or unsupported `X-Broker-API-Version`.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413: request body over the limit.
    #[error("the request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 422 `AsyncRequired`.
    #[error("{0}")]
    AsyncRequired(String),
    /// 422 `ConcurrencyError`.
    #[error("{0}")]
    ConcurrencyError(String),
    /// 422 `RequiresApp`.
    #[error("{0}")]
    RequiresApp(String),
    /// 422 `MaintenanceInfoConflict`.
    #[error("{0}")]
    MaintenanceInfoConflict(String),
    /// 422 without an error code.
    #[error("{0}")]
    Unprocessable(String),
    /// 500: the broker or the host failed; the description says which limit or fault.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status code and OSB `error` code: the one table of the mapping.
    pub fn status_and_code(&self) -> (StatusCode, Option<&'static str>) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
            ApiError::Unauthorized(_) | ApiError::BadToken => (StatusCode::UNAUTHORIZED, None),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, None),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, None),
            ApiError::Gone(_) => (StatusCode::GONE, None),
            ApiError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
            ApiError::AsyncRequired(_) => (StatusCode::UNPROCESSABLE_ENTITY, Some("AsyncRequired")),
            ApiError::ConcurrencyError(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Some("ConcurrencyError"))
            }
            ApiError::RequiresApp(_) => (StatusCode::UNPROCESSABLE_ENTITY, Some("RequiresApp")),
            ApiError::MaintenanceInfoConflict(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("MaintenanceInfoConflict"),
            ),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        }
    }
}

/// Why a request failed, as the request's log line tells it: the description sent, and for a
/// 401 what was wrong with the credentials. Carried on the response as an extension.
#[derive(Debug, Clone)]
pub struct Reason(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut description = self.to_string();
        if description.trim().is_empty() {
            description = status.canonical_reason().unwrap_or("error").to_string();
        }
        let body = match code {
            Some(code) => json!({ "error": code, "description": description }),
            None => json!({ "description": description }),
        };
        let reason = match &self {
            ApiError::Unauthorized(why) => format!("{description}: {why}"),
            _ => description,
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(Reason(reason));
        let challenge = match self {
            ApiError::Unauthorized(_) => Some("Basic realm=\"brokerbox\""),
            ApiError::BadToken => Some("Bearer realm=\"brokerbox-admin\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        match error {
            BrokerError::BadRequest(d) => ApiError::BadRequest(d),
            BrokerError::Conflict(d) => ApiError::Conflict(d),
            BrokerError::Gone(d) => ApiError::Gone(d),
            BrokerError::AsyncRequired(d) => ApiError::AsyncRequired(d),
            BrokerError::ConcurrencyError(d) => ApiError::ConcurrencyError(d),
            BrokerError::RequiresApp(d) => ApiError::RequiresApp(d),
            BrokerError::MaintenanceInfoConflict(d) => ApiError::MaintenanceInfoConflict(d),
            BrokerError::Unprocessable(d) => ApiError::Unprocessable(d),
            BrokerError::Internal(d) => ApiError::Internal(d),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(error: OpError) -> Self {
        match error {
            OpError::Refused(refusal) => refusal.into(),
            OpError::Failed(description) => ApiError::Internal(description),
            busy @ OpError::Busy(_) => ApiError::ConcurrencyError(busy.to_string()),
            OpError::Store(error) => error.into(),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::Broker(refusal) => refusal.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Exists | StoreError::Changed => ApiError::ConcurrencyError(
                "another request changed this resource at the same time; retry".into(),
            ),
            StoreError::Backend(detail) => {
                tracing::error!("state store failed: {detail}");
                ApiError::Internal("the broker's state store failed".into())
            }
        }
    }
}
