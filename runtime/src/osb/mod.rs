//! The OSB HTTP edge: routes of every hosted broker under `/brokers/NAME/v2`, one handler file
//! per resource, and the layers that apply to all of them.

mod bindings;
mod catalog;
mod checks;
mod instances;
mod last_operation;
mod layers;
mod params;
mod quotas;
mod replies;

pub use layers::json_errors;
pub mod request;
mod validate;

use crate::error::ApiError;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::middleware;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub use crate::config::EdgeConfig;

/// What every handler can reach: the operation layer's state and the edge's settings.
#[derive(Clone)]
pub struct AppState {
    /// The brokers, the state store and the runtime's background work.
    pub ops: crate::ops::OpsState,
    /// Edge settings.
    pub config: EdgeConfig,
    /// Where requests are counted.
    pub requests: crate::telemetry::metrics::RequestMetrics,
}

/// The router of the OSB API of every hosted broker.
pub fn router(state: AppState) -> Router {
    let instance = "/brokers/{broker}/v2/service_instances/{instance_id}";
    let binding =
        "/brokers/{broker}/v2/service_instances/{instance_id}/service_bindings/{binding_id}";
    Router::new()
        .route("/brokers/{broker}/v2/catalog", get(catalog::get))
        .route(
            instance,
            get(instances::fetch)
                .put(instances::provision)
                .patch(instances::update)
                .delete(instances::deprovision),
        )
        .route(
            &format!("{instance}/last_operation"),
            get(last_operation::instance),
        )
        .route(
            binding,
            get(bindings::fetch)
                .put(bindings::bind)
                .delete(bindings::unbind),
        )
        .route(
            &format!("{binding}/last_operation"),
            get(last_operation::binding),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not take this method".into())
        })
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .layer(middleware::from_fn(layers::json_errors))
        .layer(middleware::from_fn_with_state(
            layers::Observed {
                brokers: state.ops.brokers.clone(),
                requests: state.requests.clone(),
            },
            layers::observe,
        ))
        .with_state(state)
}

/// A successful OSB answer: a status, a JSON body, and extra headers.
pub struct Reply {
    status: axum::http::StatusCode,
    body: serde_json::Value,
    headers: axum::http::HeaderMap,
}

impl Reply {
    /// Adds a header to the answer.
    pub fn with_header(mut self, name: axum::http::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

impl From<(axum::http::StatusCode, serde_json::Value)> for Reply {
    fn from((status, body): (axum::http::StatusCode, serde_json::Value)) -> Self {
        Reply {
            status,
            body,
            headers: axum::http::HeaderMap::new(),
        }
    }
}

impl axum::response::IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, self.headers, axum::Json(self.body)).into_response()
    }
}

/// Query parameters, with a malformed query answered as an OSB 400.
pub mod query {
    use crate::error::ApiError;
    use axum::extract::FromRequestParts;
    use axum::http::request::Parts;
    use std::collections::HashMap;

    /// The query parameters of a request.
    pub struct Query(HashMap<String, String>);

    impl Query {
        /// The value of `key`.
        pub fn get(&self, key: &str) -> Option<&String> {
            self.0.get(key)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for Query {
        type Rejection = ApiError;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
            axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map(|q| Query(q.0))
                .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))
        }
    }
}
