//! Layers around every OSB route: the request identity (log span and echo), and a last
//! guard that turns any error answered without a JSON body into an OSB error body.

use super::request::REQUEST_IDENTITY;
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// Most of a non-JSON error body kept as the OSB description: as much as of a guest's.
use crate::sandbox::MAX_DESCRIPTION_BYTES;

/// Puts the request identity and broker on the request's log span and echoes the identity on
/// the response.
pub async fn request_identity(request: Request, next: Next) -> Response {
    let identity = request.headers().get(REQUEST_IDENTITY).cloned();
    let shown = identity
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let broker = request
        .uri()
        .path()
        .strip_prefix("/brokers/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("-")
        .to_string();
    let span = tracing::info_span!("osb", %broker, request = %shown, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "answered"));
    if let Some(identity) = identity {
        response.headers_mut().insert(REQUEST_IDENTITY, identity);
    }
    response
}

/// Rewrites an error response that is not JSON (a framework rejection, say) into an OSB error
/// body with the same status, so a platform never sees plain text or HTML.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_DESCRIPTION_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let description = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let error = match status.as_u16() {
        400 => ApiError::BadRequest(description),
        404 => ApiError::NotFound(description),
        405 => ApiError::MethodNotAllowed(description),
        413 => ApiError::BadRequest(description),
        _ => ApiError::Internal(description),
    };
    let mut rewritten = error.into_response();
    *rewritten.status_mut() = status;
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n != CONTENT_TYPE && *n != "content-length")
    {
        rewritten.headers_mut().insert(name.clone(), value.clone());
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn call(router: Router) -> (StatusCode, serde_json::Value) {
        let response = router
            .layer(axum::middleware::from_fn(json_errors))
            .oneshot(Request::builder().uri("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn plain_text_errors_become_osb_error_bodies() {
        let router = Router::new().route(
            "/",
            get(|| async { (StatusCode::BAD_REQUEST, "bad thing") }),
        );
        let (status, body) = call(router).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["description"], "bad thing");
        let router = Router::new().route("/", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
        let (status, body) = call(router).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["description"], "Service Unavailable");
    }

    #[tokio::test]
    async fn json_answers_pass_untouched() {
        let router = Router::new().route(
            "/",
            get(|| async { axum::Json(serde_json::json!({ "ok": 1 })) }),
        );
        assert_eq!(call(router).await.1["ok"], 1);
    }
}
