//! The admin API under `/admin` (bearer tokens from the runtime's config file; never on the
//! OSB routes): add or upgrade a broker by upload, list and show brokers, remove one, list its
//! versions, roll back. The operator's token reaches every broker; a tenant's token only the
//! brokers whose manifest names that tenant.

pub mod client;
pub mod config;

use crate::error::ApiError;
use crate::registry::{version_of, BrokerSet};
use crate::reload::Reloader;
use crate::store::StateStore;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use config::RuntimeConfig;
use serde::Deserialize;
use serde_json::{json, Value};
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
    pub brokers: Arc<BrokerSet>,
    /// Durable state (instance counts).
    pub store: Arc<dyn StateStore>,
    /// Where `NAME.wasm` + `NAME.toml` live.
    pub brokers_dir: PathBuf,
    /// Where every uploaded version is kept: `DIR/NAME/VERSION.{wasm,toml}`.
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
            .ok_or(ApiError::Unauthorized)?
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
            .ok_or(ApiError::Unauthorized)
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

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no broker named {name:?} that you may manage"))
}

/// The JSON view of broker `name`.
async fn broker_json(state: &AdminState, name: &str) -> Result<Value, ApiError> {
    let broker = state.brokers.get(name).ok_or_else(|| not_found(name))?;
    let instances = state.store.count_instances(name).await?;
    Ok(json!({
        "name": name,
        "tenant": broker.manifest.tenant,
        "version": broker.version,
        "state": "serving",
        "instances": instances,
        "last_error": state.reloader.failures().get(name),
        "services": broker.catalog.json()["services"].as_array().map(|s| s.iter().map(|s| s["name"].clone()).collect::<Vec<_>>()),
    }))
}

/// `GET /admin/brokers`: the brokers the caller may manage.
async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for broker in state.brokers.current().all() {
        if caller.may(broker.manifest.tenant.as_deref()) {
            out.push(broker_json(&state, &broker.name).await?);
        }
    }
    Ok(Json(json!({ "brokers": out })))
}

/// The broker `name`, if the caller may manage it.
fn owned(state: &AdminState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    match state.brokers.get(name) {
        Some(broker) if caller.may(broker.manifest.tenant.as_deref()) => Ok(()),
        _ => Err(not_found(name)),
    }
}

/// `GET /admin/brokers/{name}`.
async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    Ok(Json(broker_json(&state, &name).await?))
}

/// Body of an upload.
#[derive(Deserialize)]
struct Upload {
    /// The component, base64.
    wasm_base64: String,
    /// The manifest, TOML.
    manifest: String,
    /// Replace even when plans in use disappear or ids change.
    #[serde(default)]
    force: bool,
}

/// `PUT /admin/brokers/{name}`: adds or upgrades a broker; validated before it goes live.
async fn upload(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(upload): Json<Upload>,
) -> Result<Json<Value>, ApiError> {
    if !crate::registry::valid_broker_name(&name) {
        return Err(ApiError::BadRequest(
            "a broker name uses only a-z, 0-9, '-' and '_' (at most 64)".into(),
        ));
    }
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(upload.wasm_base64.trim())
        .map_err(|_| ApiError::BadRequest("wasm_base64 is not base64".into()))?;
    let manifest = crate::manifest::Manifest::parse(&upload.manifest)
        .map_err(|e| ApiError::BadRequest(format!("invalid manifest: {e:#}")))?;
    check_tenant(&state, &caller, &name, manifest.tenant.as_deref())?;
    let manifest_text = hash_password_in(&upload.manifest)?;
    let version = version_of(&wasm, manifest_text.as_bytes());
    keep_version(&state, &name, &version, &wasm, &manifest_text)?;
    let published = publish(&state, &name, &version, upload.force).await;
    let serving = state
        .brokers
        .get(&name)
        .is_some_and(|b| b.version == version);
    if published.is_err() && !serving {
        // A refused upload is not kept as a version.
        forget_version(&state, &name, &version);
    }
    published
}

/// The manifest with a clear-text `credentials.password` replaced by its argon2
/// `password_hash`: what the runtime keeps never holds the password itself.
fn hash_password_in(manifest: &str) -> Result<String, ApiError> {
    let mut table: toml::Table = toml::from_str(manifest)
        .map_err(|e| ApiError::BadRequest(format!("invalid manifest: {e}")))?;
    let Some(credentials) = table
        .get_mut("credentials")
        .and_then(toml::Value::as_table_mut)
    else {
        return Ok(manifest.to_string());
    };
    let Some(toml::Value::String(password)) = credentials.remove("password") else {
        return Ok(manifest.to_string());
    };
    let hash = crate::auth::hash_password(&password).map_err(internal)?;
    credentials.insert("password_hash".into(), toml::Value::String(hash));
    toml::to_string(&table).map_err(internal)
}

fn forget_version(state: &AdminState, name: &str, version: &str) {
    for ext in ["wasm", "toml"] {
        let path = state
            .versions_dir
            .join(name)
            .join(format!("{version}.{ext}"));
        let _ = std::fs::remove_file(path);
    }
}

/// The caller may register `name` for `tenant`, within the tenant's quota.
fn check_tenant(
    state: &AdminState,
    caller: &Caller,
    name: &str,
    tenant: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(existing) = state.brokers.get(name) {
        if !caller.may(existing.manifest.tenant.as_deref()) {
            return Err(ApiError::Forbidden(format!(
                "broker {name} belongs to another tenant"
            )));
        }
    }
    if !caller.may(tenant) {
        return Err(ApiError::Forbidden(
            "the manifest must name your tenant: tenant = \"...\"".into(),
        ));
    }
    let Some(tenant) = tenant.and_then(|t| state.config.tenant(t)) else {
        return match tenant {
            Some(t) => Err(ApiError::BadRequest(format!("unknown tenant {t}"))),
            None => Ok(()),
        };
    };
    if let Some(max) = tenant.max_brokers {
        let current = state.brokers.current();
        let owned = current
            .all()
            .filter(|b| b.manifest.tenant.as_deref() == Some(&tenant.name) && b.name != name)
            .count();
        if owned >= max {
            return Err(ApiError::Unprocessable(format!(
                "tenant {} may register at most {max} brokers",
                tenant.name
            )));
        }
    }
    Ok(())
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{error}"))
}

/// Keeps `wasm` and `manifest` as version `version` of `name`.
fn keep_version(
    state: &AdminState,
    name: &str,
    version: &str,
    wasm: &[u8],
    manifest: &str,
) -> Result<(), ApiError> {
    let dir = state.versions_dir.join(name);
    std::fs::create_dir_all(&dir).map_err(internal)?;
    std::fs::write(dir.join(format!("{version}.wasm")), wasm).map_err(internal)?;
    std::fs::write(dir.join(format!("{version}.toml")), manifest).map_err(internal)
}

/// Copies kept version `version` of `name` into the brokers dir (the manifest first, each by
/// rename), so a restart serves it.
fn install(state: &AdminState, name: &str, version: &str) -> Result<(), ApiError> {
    let from = state.versions_dir.join(name);
    for ext in ["toml", "wasm"] {
        let source = from.join(format!("{version}.{ext}"));
        let target = state.brokers_dir.join(format!("{name}.{ext}"));
        let tmp = state.brokers_dir.join(format!(".{name}.{ext}.tmp"));
        std::fs::copy(&source, &tmp).map_err(internal)?;
        std::fs::rename(&tmp, &target).map_err(internal)?;
    }
    Ok(())
}

/// Loads kept version `version` of `name`; once it serves, installs it in the brokers dir.
/// A refused version leaves the brokers dir alone and the previous version serving.
async fn publish(
    state: &AdminState,
    name: &str,
    version: &str,
    force: bool,
) -> Result<Json<Value>, ApiError> {
    let kept = state.versions_dir.join(name);
    let wasm = kept.join(format!("{version}.wasm"));
    let manifest = kept.join(format!("{version}.toml"));
    if !wasm.exists() || !manifest.exists() {
        return Err(ApiError::NotFound(format!(
            "broker {name} has no version {version}"
        )));
    }
    match state
        .reloader
        .reload_files(name, &wasm, &manifest, force)
        .await
    {
        Ok(outcome) => {
            install(state, name, version)?;
            let mut body = broker_json(state, name).await?;
            body["outcome"] = json!(format!("{outcome:?}"));
            Ok(Json(body))
        }
        Err(error) => Err(ApiError::Unprocessable(format!(
            "refused; the previous version keeps serving: {error:#}"
        ))),
    }
}

/// Query of a removal.
#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

/// `DELETE /admin/brokers/{name}?force=`: refused while the broker has instances unless forced.
async fn remove(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<Force>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    let instances = state.store.count_instances(&name).await?;
    if instances > 0 && !query.force {
        return Err(ApiError::Conflict(format!(
            "broker {name} still has {instances} instances (force to remove anyway)"
        )));
    }
    state.reloader.remove(&name).await.map_err(internal)?;
    Ok(Json(json!({ "removed": name })))
}

/// `GET /admin/brokers/{name}/versions`: every kept version, oldest first.
async fn versions(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    let current = state.brokers.get(&name).map(|b| b.version.clone());
    let mut found: Vec<(std::time::SystemTime, String)> =
        std::fs::read_dir(state.versions_dir.join(&name))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
                    .filter_map(|e| {
                        let modified = e.metadata().ok()?.modified().ok()?;
                        Some((modified, e.path().file_stem()?.to_str()?.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
    found.sort();
    let list: Vec<Value> = found
        .into_iter()
        .map(|(_, v)| json!({ "version": v, "current": Some(&v) == current.as_ref() }))
        .collect();
    Ok(Json(json!({ "versions": list })))
}

/// Body of a rollback.
#[derive(Deserialize)]
struct Rollback {
    version: String,
    #[serde(default)]
    force: bool,
}

/// `POST /admin/brokers/{name}/rollback`: serves a kept version again.
async fn rollback(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<Rollback>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    if !body.version.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest("a version is hex digits".into()));
    }
    publish(&state, &name, &body.version, body.force).await
}
