//! The admin API under `/admin` (bearer tokens from the runtime's config file; never on the
//! OSB routes): add or upgrade a broker by upload, list and show brokers, remove one, list its
//! versions, roll back. The operator's token reaches every broker; a tenant's token only the
//! brokers whose manifest names that tenant.

pub mod client;
pub mod config;

use crate::error::ApiError;
use crate::registry::{version_of, Brokers};
use crate::reload::{Reloader, Source};
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

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no broker named {name:?} that you may manage"))
}

/// The JSON view of broker `name`: serving (with the error of a newer version refused, if
/// any), or quarantined with its error.
async fn broker_json(state: &AdminState, name: &str) -> Result<Value, ApiError> {
    let problem = state.reloader.problems().remove(name);
    let instances = state.store.count_instances(name).await?;
    let Some(broker) = state.brokers.get(name) else {
        let problem = problem.ok_or_else(|| not_found(name))?;
        return Ok(json!({
            "name": name,
            "tenant": problem.tenant,
            "version": null,
            "state": "quarantined",
            "instances": instances,
            "error": problem.error,
            "refused_version": problem.version,
        }));
    };
    Ok(json!({
        "name": name,
        "tenant": broker.manifest.tenant,
        "version": broker.version,
        "state": "serving",
        "instances": instances,
        "last_error": problem.as_ref().map(|p| &p.error),
        "refused_version": problem.and_then(|p| p.version),
        "services": broker.catalog.json()["services"].as_array().map(|s| s.iter().map(|s| s["name"].clone()).collect::<Vec<_>>()),
    }))
}

/// The tenant of broker `name`, serving or quarantined; `None` inside when it has none.
fn tenant_of(state: &AdminState, name: &str) -> Option<Option<String>> {
    if let Some(broker) = state.brokers.get(name) {
        return Some(broker.manifest.tenant.clone());
    }
    state.reloader.problems().remove(name).map(|p| p.tenant)
}

/// `GET /admin/brokers`: the brokers the caller may manage, serving and quarantined.
async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut names: std::collections::BTreeSet<String> = state
        .brokers
        .current()
        .all()
        .map(|b| b.name.clone())
        .collect();
    names.extend(state.reloader.problems().into_keys());
    let mut out = Vec::new();
    for name in names {
        if tenant_of(&state, &name).is_some_and(|t| caller.may(t.as_deref())) {
            out.push(broker_json(&state, &name).await?);
        }
    }
    Ok(Json(json!({ "brokers": out })))
}

/// The broker `name`, if the caller may manage it.
fn owned(state: &AdminState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    match tenant_of(state, name) {
        Some(tenant) if caller.may(tenant.as_deref()) => Ok(()),
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
/// Every upload is written in the book of versions, accepted or refused.
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
    let staged = Staged::new(&state, &name, &version, &wasm, &manifest_text)?;
    let files = staged.files.clone();
    publish(
        &state,
        &name,
        &files,
        Source::Upload,
        upload.force,
        Some(staged),
    )
    .await
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

/// The caller may register `name` for `tenant`, within the tenant's quota.
fn check_tenant(
    state: &AdminState,
    caller: &Caller,
    name: &str,
    tenant: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(existing) = tenant_of(state, name) {
        if !caller.may(existing.as_deref()) {
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

/// An upload written to a staging dir of its own (under the data dir) for the reloader to
/// read (it keeps what it decides); removed when dropped, even if the request is cut.
struct Staged {
    dir: PathBuf,
    files: (PathBuf, PathBuf),
}

impl Staged {
    fn new(
        state: &AdminState,
        name: &str,
        version: &str,
        wasm: &[u8],
        manifest: &str,
    ) -> Result<Self, ApiError> {
        let dir = state
            .versions_dir
            .join(".uploads")
            .join(format!("{name}-{version}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(internal)?;
        let staged = Staged {
            files: (dir.join("broker.wasm"), dir.join("broker.toml")),
            dir,
        };
        std::fs::write(&staged.files.0, wasm).map_err(internal)?;
        std::fs::write(&staged.files.1, manifest).map_err(internal)?;
        Ok(staged)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies kept version `version` of `name` into the brokers dir (the manifest first, each by
/// rename), so the brokers dir holds what serves.
fn install(state: &AdminState, name: &str, version: &str) -> Result<(), ApiError> {
    let (wasm, manifest) = state.reloader.kept(name, version);
    for (source, ext) in [(manifest, "toml"), (wasm, "wasm")] {
        let target = state.brokers_dir.join(format!("{name}.{ext}"));
        let tmp = state.brokers_dir.join(format!(".{name}.{ext}.tmp"));
        std::fs::copy(&source, &tmp).map_err(internal)?;
        std::fs::rename(&tmp, &target).map_err(internal)?;
    }
    Ok(())
}

/// Offers the version in `files` to the reloader; once it serves, installs it in the brokers
/// dir. A refused version leaves the brokers dir alone and the previous version serving.
async fn publish(
    state: &AdminState,
    name: &str,
    files: &(PathBuf, PathBuf),
    source: Source,
    force: bool,
    staged: Option<Staged>,
) -> Result<Json<Value>, ApiError> {
    // In a task of its own: a client that hangs up does not cut a decision half-way (the
    // version written in the book but not published).
    let offered = {
        let (reloader, name, files) = (state.reloader.clone(), name.to_string(), files.clone());
        tokio::spawn(async move {
            let offered = reloader
                .offer(&name, &files.0, &files.1, source, force)
                .await;
            drop(staged);
            offered
        })
    };
    match offered.await.map_err(internal)? {
        Ok(outcome) => {
            if let Some(broker) = state.brokers.get(name) {
                install(state, name, &broker.version)?;
            }
            let mut body = broker_json(state, name).await?;
            if let (Some(body), Value::Object(outcome)) = (
                body.as_object_mut(),
                serde_json::to_value(&outcome).map_err(internal)?,
            ) {
                body.insert("outcome".into(), outcome["outcome"].clone());
            }
            Ok(Json(body))
        }
        Err(error) => {
            let message = match error.downcast_ref::<crate::reload::Refused>() {
                Some(refused) => refused.0.clone(),
                None => format!("{error:#}"),
            };
            Err(ApiError::Unprocessable(format!(
                "refused; the previous version (if any) keeps serving: {message}"
            )))
        }
    }
}

/// Query of a removal.
#[derive(Deserialize)]
struct Force {
    #[serde(default)]
    force: bool,
}

/// `DELETE /admin/brokers/{name}?force=`: removes a broker and forgets it (its versions, its
/// files and its state), refused while it has instances unless forced: then its instances,
/// bindings and operations are purged without calling the guest.
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
            "broker {name} still has {instances} instances; remove with force to purge them \
             from the state store without calling the broker"
        )));
    }
    let purged = state.reloader.remove(&name).await.map_err(internal)?;
    Ok(Json(json!({ "removed": name, "purged": purged })))
}

/// `GET /admin/brokers/{name}/versions`: every version in the book, oldest first, accepted or
/// refused, with where it came from.
async fn versions(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    let (book, current) = state.reloader.versions(&name).await.map_err(internal)?;
    let serving = state.brokers.get(&name).map(|b| b.version.clone());
    let list: Vec<Value> = book
        .into_iter()
        .map(|v| {
            json!({
                "version": v.version,
                "state": v.state.as_str(),
                "source": v.source,
                "error": v.error,
                "current": Some(&v.version) == current.as_ref(),
                "serving": Some(&v.version) == serving.as_ref(),
                "created_at_ms": v.created_at,
                "decided_at_ms": v.decided_at,
            })
        })
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

/// `POST /admin/brokers/{name}/rollback`: serves a kept version again, accepted or refused
/// before (checked again; `force` skips the checks of plans in use and ids).
async fn rollback(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<Rollback>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    if body.version.is_empty() || !body.version.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::BadRequest("a version is hex digits".into()));
    }
    let files = state.reloader.kept(&name, &body.version);
    if !files.0.exists() || !files.1.exists() {
        return Err(ApiError::NotFound(format!(
            "broker {name} has no kept version {}",
            body.version
        )));
    }
    publish(&state, &name, &files, Source::Rollback, body.force, None).await
}
