//! Layers around every OSB route: each request's identity (the platform's, or one made up),
//! span, log line and metrics; and a last guard that turns any error answered without a JSON
//! body into an OSB error body.

use super::request::REQUEST_IDENTITY;
use crate::error::{ApiError, Reason};
use crate::telemetry::metrics::EndpointLabels;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// Most of a non-JSON error body kept as the OSB description: as much as of a guest's.
use crate::sandbox::MAX_DESCRIPTION_BYTES;

/// The OSB endpoint a request is for, from its method and route template.
fn endpoint(method: &Method, route: &str) -> &'static str {
    let resource = if route.ends_with("/catalog") {
        "catalog"
    } else if route.ends_with("/service_bindings/{binding_id}/last_operation") {
        "binding_last_operation"
    } else if route.ends_with("/last_operation") {
        "instance_last_operation"
    } else if route.ends_with("/service_bindings/{binding_id}") {
        "binding"
    } else if route.ends_with("/service_instances/{instance_id}") {
        "instance"
    } else {
        return "other";
    };
    match (resource, method.as_str()) {
        ("instance", "PUT") => "provision",
        ("instance", "PATCH") => "update",
        ("instance", "DELETE") => "deprovision",
        ("instance", "GET") => "fetch_instance",
        ("binding", "PUT") => "bind",
        ("binding", "DELETE") => "unbind",
        ("binding", "GET") => "fetch_binding",
        ("instance" | "binding", _) => "other",
        (resource, _) => resource,
    }
}

/// What [`observe`] needs, cloned per request: the brokers (for labels) and the counters.
#[derive(Clone)]
pub struct Observed {
    /// The hosted brokers.
    pub brokers: std::sync::Arc<crate::registry::Brokers>,
    /// Where requests are counted.
    pub requests: crate::telemetry::metrics::RequestMetrics,
}

/// Runs an OSB request in its span (broker, tenant, request identity, route), logs one line
/// when it is answered (status, duration and, for an error, why, with the span's fields on the
/// line itself), counts it, and echoes the request identity, made up when the platform sent
/// none (the guest and the logs see the same).
///
/// The span is a DEBUG span, like the operation's and the guest call's: the trace exporter
/// takes it, `RUST_LOG=debug` shows it, and INFO logs pay only for their one line.
pub async fn observe(State(state): State<Observed>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let identity = match request.headers().get(REQUEST_IDENTITY) {
        Some(identity) => identity.clone(),
        None => {
            let made = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value");
            request.headers_mut().insert(REQUEST_IDENTITY, made.clone());
            made
        }
    };
    let shown = identity.to_str().unwrap_or("(not ASCII)").to_string();
    let name = (request.uri().path().strip_prefix("/brokers/"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    // Only the names of brokers that serve become labels: any other name is "".
    let (broker, tenant) = match state.brokers.get(name) {
        Some(b) => (
            b.name.clone(),
            b.manifest.tenant.clone().unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    let route = (request.extensions().get::<MatchedPath>())
        .map_or_else(|| "-".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let endpoint = endpoint(&method, &route);
    let span = tracing::debug_span!(
        "osb",
        otel.name = %format_args!("{method} {endpoint}"),
        otel.kind = "server",
        broker = %broker,
        tenant = %tenant,
        request = %shown,
        method = %method,
        route = %route,
        status = tracing::field::Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    span.record("status", status);
    let duration_ms = took.as_secs_f64() * 1000.0;
    let reason = response.extensions().get::<Reason>().map(|r| r.0.as_str());
    // Whole on its own: the span (broker, route, request) is kept only at DEBUG.
    // `reason` is left off the line when there is none.
    macro_rules! answered {
        ($level:ident) => {
            tracing::$level!(
                status,
                duration_ms,
                reason,
                broker = %broker,
                tenant = %tenant,
                request = %shown,
                %method,
                route = %route,
                "answered"
            )
        };
    }
    span.in_scope(|| {
        if status >= 500 {
            answered!(warn)
        } else {
            answered!(info)
        }
    });
    let labels = EndpointLabels {
        broker,
        tenant,
        endpoint,
    };
    state.requests.observe(labels, status, took);
    response.headers_mut().insert(REQUEST_IDENTITY, identity);
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

    #[test]
    fn every_route_and_method_has_an_endpoint_label_of_the_list() {
        use crate::telemetry::metrics::ENDPOINTS;
        let instance = "/brokers/{broker}/v2/service_instances/{instance_id}";
        let binding = format!("{instance}/service_bindings/{{binding_id}}");
        let routes = [
            "/brokers/{broker}/v2/catalog".to_string(),
            instance.to_string(),
            format!("{instance}/last_operation"),
            binding.clone(),
            format!("{binding}/last_operation"),
            "-".to_string(),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for route in &routes {
            for method in [
                Method::GET,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::POST,
            ] {
                let label = endpoint(&method, route);
                assert!(ENDPOINTS.contains(&label), "{method} {route}: {label}");
                seen.insert(label);
            }
        }
        assert_eq!(seen.len(), ENDPOINTS.len(), "every label is used: {seen:?}");
        assert_eq!(endpoint(&Method::PATCH, instance), "update");
        assert_eq!(endpoint(&Method::DELETE, &binding), "unbind");
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
