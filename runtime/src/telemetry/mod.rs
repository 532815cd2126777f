//! What an operator watches: `/healthz` and `/readyz` ([`health`]), Prometheus `/metrics`
//! ([`metrics`]), log lines as text or JSON ([`logs`]), and OpenTelemetry traces over
//! OTLP/HTTP ([`traces`]). docs/operating.md says how to use each.

pub mod health;
pub mod logs;
pub mod metrics;
pub mod traces;

use crate::error::ApiError;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// What the telemetry routes read.
#[derive(Clone)]
pub struct TelemetryState {
    /// Readiness and liveness.
    pub health: Arc<health::Health>,
    /// The runtime's metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The bearer token `/metrics` asks for, when the config file sets one.
    pub metrics_token: Option<String>,
    /// The admin API's operator token, also accepted by `/metrics` when it asks for a token.
    pub operator_token: Option<String>,
}

/// `/healthz` and `/readyz`, and `/metrics` when `with_metrics`.
pub fn router(state: TelemetryState, with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    let router = if with_metrics {
        router.route("/metrics", get(scrape))
    } else {
        router
    };
    router.with_state(state)
}

/// `GET /metrics`: refreshes the census gauges from the store, then renders every metric.
async fn scrape(State(state): State<TelemetryState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        use subtle::ConstantTimeEq as _;
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let matches = |token: &str| bool::from(token.as_bytes().ct_eq(sent.as_bytes()));
        if !matches(expected) && !state.operator_token.as_deref().is_some_and(matches) {
            let mut answer = ApiError::BadToken.into_response();
            let body = serde_json::json!({ "description": "missing or invalid metrics token: send Authorization: Bearer TOKEN with the [metrics] token of the runtime's config file" });
            *answer.body_mut() = axum::body::Body::from(body.to_string());
            answer.headers_mut().remove(header::CONTENT_LENGTH);
            return answer;
        }
    }
    let _one_at_a_time = state.metrics.scraping.lock().await;
    if let Err(error) = state.health.refresh_census(&state.metrics.census).await {
        // The rest is still worth scraping; the census keeps its last values.
        tracing::warn!("metrics: cannot read the census from the state store: {error}");
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}
