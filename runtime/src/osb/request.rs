//! Extractors for what every OSB request carries: the broker (by path), its basic-auth
//! credentials, the API version, the originating identity; and a JSON body with OSB errors.

use crate::error::ApiError;
use crate::osb::AppState;
use crate::registry::LoadedBroker;
use crate::sandbox::bindings::types::OriginatingIdentity;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Oldest OSB minor version served (of major version 2).
pub const MIN_MINOR_VERSION: u32 = 13;
/// The request identity header, echoed on every response.
pub const REQUEST_IDENTITY: &str = "x-broker-api-request-identity";

/// The checked context of an OSB request: which broker, and who is calling.
pub struct Osb {
    /// The broker addressed by the path.
    pub broker: Arc<LoadedBroker>,
    /// The decoded `X-Broker-API-Originating-Identity`.
    pub identity: Option<OriginatingIdentity>,
    /// The `X-Broker-API-Request-Identity`.
    pub request_identity: Option<String>,
}

impl FromRequestParts<AppState> for Osb {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Credentials first: the broker is named by the raw path (a valid name needs no
        // decoding), and an unknown name answers as wrong credentials do, so names cannot be
        // probed without a password. Only then is the rest of the path decoded and checked.
        let name = parts
            .uri
            .path()
            .strip_prefix("/brokers/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let broker = (state.ops.brokers.get(name))
            .ok_or(ApiError::Unauthorized("no broker of this name serves"))?;
        check_auth(&parts.headers, &broker).await?;
        check_version(&parts.headers)?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))?;
        for (key, value) in &params {
            if key != "broker" {
                check_id(key, value)?;
            }
        }
        let identity = originating_identity(&parts.headers)?;
        let request_identity = header(&parts.headers, REQUEST_IDENTITY)?.map(str::to_string);
        Ok(Osb {
            broker,
            identity,
            request_identity,
        })
    }
}

/// Longest instance or binding id accepted, in bytes (UTF-8, after percent-decoding). Platforms
/// send GUIDs (36 bytes); the cap keeps ids usable as file names and keys by any broker.
pub const MAX_ID_BYTES: usize = 255;

/// An instance or binding id (path parameter `key`) is 1 to [`MAX_ID_BYTES`] bytes without
/// control characters.
///
/// # Errors
/// 400 naming the rule broken.
pub fn check_id(key: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::BadRequest(format!(
            "{key} must have 1 to {MAX_ID_BYTES} bytes, not {}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{key} must not contain control characters"
        )));
    }
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::BadRequest(format!("header {name} is not ASCII")))
        })
        .transpose()
}

/// Checks HTTP basic auth against the broker's manifest (see [`crate::auth`]).
async fn check_auth(headers: &HeaderMap, broker: &LoadedBroker) -> Result<(), ApiError> {
    let encoded = header(headers, "authorization")
        .ok()
        .flatten()
        .ok_or(ApiError::Unauthorized("no Authorization header"))?
        .strip_prefix("Basic ")
        .ok_or(ApiError::Unauthorized(
            "the Authorization header is not Basic",
        ))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthorized("the Basic credentials are not base64"))?;
    if crate::auth::verify(&broker.manifest.credentials, &broker.verified, decoded).await {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong user name or password"))
    }
}

/// Parses `X-Broker-API-Version` as MAJOR.MINOR and checks we serve it.
fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    let supported = format!("2.{MIN_MINOR_VERSION} or a later 2.x");
    let value = header(headers, "x-broker-api-version")?.ok_or_else(|| {
        ApiError::PreconditionFailed(format!(
            "the X-Broker-API-Version header is missing; this broker serves {supported}"
        ))
    })?;
    let parsed = value
        .trim()
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some((2, minor)) if minor >= MIN_MINOR_VERSION => Ok(()),
        Some(_) => Err(ApiError::PreconditionFailed(format!(
            "X-Broker-API-Version {value} is not supported; this broker serves {supported}"
        ))),
        None => Err(ApiError::PreconditionFailed(format!(
            "X-Broker-API-Version {value:?} is not MAJOR.MINOR; this broker serves {supported}"
        ))),
    }
}

/// Decodes `X-Broker-API-Originating-Identity: PLATFORM BASE64(JSON)`.
fn originating_identity(headers: &HeaderMap) -> Result<Option<OriginatingIdentity>, ApiError> {
    let Some(value) = header(headers, "x-broker-api-originating-identity")? else {
        return Ok(None);
    };
    let bad = |why: &str| ApiError::BadRequest(format!("X-Broker-API-Originating-Identity {why}"));
    let (platform, encoded) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("must be 'PLATFORM BASE64(JSON)'"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad("is not valid base64"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&decoded).map_err(|_| bad("does not hold JSON"))?;
    if !json.is_object() || platform.is_empty() {
        return Err(bad("must hold a platform and a JSON object"));
    }
    Ok(Some(OriginatingIdentity {
        platform: platform.to_string(),
        value: json.to_string(),
    }))
}

/// A JSON request body: over the size limit → 413, not JSON or the wrong shape → 400. Holds
/// the parsed value and the JSON as sent (what the engine stores to replay a call).
pub struct Body<T>(pub T, pub serde_json::Value);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state.config.body_limit).await?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest(
                "the request body is empty; a JSON object is required".into(),
            ));
        }
        let bad = |e: serde_json::Error| ApiError::BadRequest(format!("invalid request body: {e}"));
        let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(bad)?;
        if !raw.is_object() {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        let parsed = serde_json::from_value(raw.clone()).map_err(bad)?;
        Ok(Body(parsed, raw))
    }
}

/// Most of an oversized body read and dropped before the 413 is sent, and for how long.
const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;
const MAX_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a request body of at most `limit` bytes. Past the limit, the rest of the body is
/// read and dropped (up to [`MAX_DRAIN_BYTES`] and [`MAX_DRAIN_TIME`]) before the 413 is
/// answered: a client that writes its whole body before reading (as many HTTP libraries do)
/// then reads the 413 instead of a broken pipe.
async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody as _;
    use http_body_util::BodyExt as _;
    let mut body = request.into_body();
    let announced = body.size_hint().exact().map_or(0, |n| n as usize);
    let mut bytes = bytes::BytesMut::with_capacity(announced.min(limit));
    let mut over = announced > limit;
    while !over {
        let Some(frame) = body.frame().await else {
            return Ok(bytes.freeze());
        };
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            over = bytes.len() + data.len() > limit;
            if !over {
                bytes.extend_from_slice(&data);
            }
        }
    }
    drop(bytes);
    let drain = async {
        let mut drained = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            drained += frame.data_ref().map_or(0, Bytes::len);
            if drained > MAX_DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(MAX_DRAIN_TIME, drain).await;
    Err(ApiError::PayloadTooLarge(limit))
}

impl Osb {
    /// A stored call of `kind` for this request, as the engine keeps it.
    pub fn stored_call(
        &self,
        kind: crate::store::OperationKind,
        ids: (&str, Option<&str>),
        body: serde_json::Value,
        accepts_incomplete: bool,
    ) -> crate::ops::StoredCall {
        crate::ops::StoredCall {
            kind,
            instance_id: ids.0.to_string(),
            binding_id: ids.1.map(str::to_string),
            body,
            accepts_incomplete,
            identity: self
                .identity
                .as_ref()
                .map(|i| crate::ops::calls::StoredIdentity {
                    platform: i.platform.clone(),
                    value: i.value.clone(),
                }),
            request_identity: self.request_identity.clone(),
            current_plan: None,
        }
    }

    /// The operation context of `stored`, its first attempt.
    pub fn context(
        &self,
        state: &AppState,
        stored: &crate::ops::StoredCall,
    ) -> crate::ops::OpContext {
        crate::ops::OpContext {
            state: state.ops.clone(),
            broker: self.broker.clone(),
            call: stored.call_info(1),
        }
    }

    /// Starts and runs the delete (deprovision or unbind) of `ids` this request asks for.
    ///
    /// # Errors
    /// [`crate::ops::OpError::Busy`] when the resource is not there to delete (gone, of
    /// another instance, busy); otherwise as [`crate::ops::change`].
    pub async fn delete(
        &self,
        state: &AppState,
        kind: crate::store::OperationKind,
        ids: (&str, Option<&str>),
        query: &super::params::DeleteQuery,
    ) -> Result<crate::ops::Settled, crate::ops::OpError> {
        let body = serde_json::json!({ "service_id": query.service_id, "plan_id": query.plan_id });
        let stored = self.stored_call(kind, ids, body, query.accepts);
        let ctx = self.context(state, &stored);
        crate::ops::change(ctx, stored, crate::store::ResourceState::Deleting, None).await
    }
}
