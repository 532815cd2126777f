//! The admin API under `/admin` (bearer tokens from the runtime's config file; never on the
//! OSB routes): add or upgrade a broker by upload, list and show brokers, remove one, list its
//! versions, roll back; repair state (purge, fail, retry), read the audit trail, and (the
//! operator only) see and rotate the data keys that seal stored secrets. The
//! operator's token reaches every broker; a tenant's token only the brokers whose manifest
//! names that tenant, and only its own audit entries.

mod brokers;
pub mod client;
mod keys;
mod repair;
pub mod ui;
mod versions;

use brokers::{list, remove, show};
use repair::{audit, fail, operations, purge_binding, purge_instance, retry};
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
    /// Durable state (instance counts, the audit trail).
    pub store: Arc<dyn StateStore>,
    /// The operation layer, for repairs.
    pub ops: crate::ops::OpsState,
    /// The OSB edge's request counts (the operator page shows them per broker).
    pub requests: crate::telemetry::metrics::RequestMetrics,
    /// The operator page's sessions.
    pub sessions: Arc<ui::Sessions>,
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
        .route(
            "/admin/brokers/{name}/instances/{id}/purge",
            post(purge_instance),
        )
        .route(
            "/admin/brokers/{name}/bindings/{id}/purge",
            post(purge_binding),
        )
        .route("/admin/brokers/{name}/operations/{id}/fail", post(fail))
        .route("/admin/brokers/{name}/operations/{id}/retry", post(retry))
        .route("/admin/operations", get(operations))
        .route("/admin/audit", get(audit))
        .route("/admin/keys", get(keys::status))
        .route("/admin/keys/rotate", post(keys::rotate))
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
    /// How the audit trail names the caller: `operator` or `tenant:NAME`.
    pub fn actor(&self) -> String {
        match self {
            Caller::Operator => "operator".into(),
            Caller::Tenant(name) => format!("tenant:{name}"),
        }
    }

    /// An audit entry of `action` on `broker` by the caller, outcome `ok`.
    fn audit_entry(&self, action: &str, broker: &str) -> crate::store::AuditEntry {
        crate::store::AuditEntry {
            actor: self.actor(),
            tenant: None,
            action: action.into(),
            broker: Some(broker.into()),
            resource: None,
            outcome: "ok".into(),
            detail: None,
        }
    }

    /// Whether the caller may manage a broker of `tenant`.
    fn may(&self, tenant: Option<&str>) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Tenant(name) => tenant == Some(name.as_str()),
        }
    }
}
