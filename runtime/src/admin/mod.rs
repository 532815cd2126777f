//! The admin API under `/admin` (bearer tokens from the runtime's config file; never on the
//! OSB routes): add or upgrade a broker by upload, list and show brokers, remove one, list its
//! versions, roll back. The operator's token reaches every broker; a tenant's token only the
//! brokers whose manifest names that tenant.

mod brokers;
pub mod client;
mod versions;

use brokers::{list, remove, show};
use versions::{rollback, upload, versions};

use crate::config::RuntimeConfig;
use crate::error::ApiError;
use crate::registry::Brokers;
use crate::reload::Reloader;
use crate::store::StateStore;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest upload (a base64 component and its manifest).
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;

/// What the admin handlers reach.
#[derive(Clone)]
pub struct AdminState {
    /// Tokens and tenants.
    pub config: Arc<RuntimeConfig>,
    /// Loads and publishes brokers.
    pub reloader: Arc<Reloader>,
    /// The brokers serving now.
    pub brokers: Arc<Brokers>,
    /// Durable state (instance counts).
    pub store: Arc<dyn StateStore>,
    /// Where `NAME.wasm` + `NAME.toml` live.
    pub brokers_dir: PathBuf,
    /// Where uploads are staged before the reloader decides them.
    pub versions_dir: PathBuf,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/brokers", get(list))
        .route(
            "/admin/brokers/{name}",
            get(show).put(upload).delete(remove),
        )
        .route("/admin/brokers/{name}/versions", get(versions))
        .route("/admin/brokers/{name}/rollback", post(rollback))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .with_state(state)
}

/// The admin routes of a runtime started without an `[admin]` table: each says so.
pub fn disabled_router() -> Router {
    let disabled = || async {
        ApiError::NotFound(
            "the admin API is disabled on this runtime: start `brokerbox serve` with \
             --config FILE holding an [admin] table"
                .into(),
        )
    };
    Router::new()
        .route("/admin", axum::routing::any(disabled))
        .route("/admin/{*rest}", axum::routing::any(disabled))
}

/// Who calls the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator: everything.
    Operator,
    /// A tenant: its own brokers.
    Tenant(String),
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::BadToken)?
            .as_bytes();
        let matches = |expected: &str| bool::from(expected.as_bytes().ct_eq(token));
        if state
            .config
            .admin
            .as_ref()
            .is_some_and(|a| matches(&a.operator_token))
        {
            return Ok(Caller::Operator);
        }
        state
            .config
            .tenants
            .iter()
            .find(|t| matches(&t.token))
            .map(|t| Caller::Tenant(t.name.clone()))
            .ok_or(ApiError::BadToken)
    }
}

impl Caller {
    /// Whether the caller may manage a broker of `tenant`.
    fn may(&self, tenant: Option<&str>) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Tenant(name) => tenant == Some(name.as_str()),
        }
    }
}
