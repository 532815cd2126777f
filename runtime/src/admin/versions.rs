//! New versions by upload, the book of versions, rollback (and accept): each decided by the
//! reloader, installed in the brokers dir once it serves.

use super::brokers::{broker_json, internal, owned, tenant_of};
use super::{AdminState, Caller};
use crate::error::ApiError;
use crate::registry::version_of;
use crate::reload::Source;
use axum::extract::{Path, State};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

/// Body of an upload.
#[derive(Deserialize)]
pub(super) struct Upload {
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
pub(super) async fn upload(
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
    let audit = Audit::of(&caller, manifest.tenant.clone());
    publish(
        &state,
        &name,
        &files,
        (Source::Upload, upload.force),
        Some(staged),
        audit,
    )
    .await
}

/// Who offered a version, for its audit entry.
pub(super) struct Audit {
    actor: String,
    tenant: Option<String>,
}

impl Audit {
    fn of(caller: &Caller, tenant: Option<String>) -> Self {
        Audit {
            actor: caller.actor(),
            tenant,
        }
    }
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
    // The kept manifest is sealed: the brokers dir gets it as its author wrote it.
    let manifest = state.reloader.manifest_bytes(&manifest).map_err(internal)?;
    let wasm = std::fs::read(&wasm).map_err(internal)?;
    for (bytes, ext) in [(manifest, "toml"), (wasm, "wasm")] {
        let target = state.brokers_dir.join(format!("{name}.{ext}"));
        let tmp = state.brokers_dir.join(format!(".{name}.{ext}.tmp"));
        std::fs::write(&tmp, bytes).map_err(internal)?;
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
    (source, force): (Source, bool),
    staged: Option<Staged>,
    audit: Audit,
) -> Result<Json<Value>, ApiError> {
    // In a task of its own: a client that hangs up does not cut a decision half-way (the
    // version written in the book but not published, or not in the audit trail).
    let offered = {
        let (reloader, name, files) = (state.reloader.clone(), name.to_string(), files.clone());
        let store = state.store.clone();
        let version = crate::registry::version_of(
            &std::fs::read(&files.0).unwrap_or_default(),
            &reloader.manifest_bytes(&files.1).unwrap_or_default(),
        );
        tokio::spawn(async move {
            let offered = reloader
                .offer(&name, &files.0, &files.1, source, force)
                .await;
            drop(staged);
            let (outcome, detail) = match &offered {
                Ok(_) => ("ok", force.then(|| "forced".to_string())),
                Err(error) => ("refused", Some(format!("{error:#}"))),
            };
            let entry = crate::store::AuditEntry {
                actor: audit.actor,
                tenant: audit.tenant,
                action: if source == Source::Upload {
                    "upload"
                } else {
                    "rollback"
                }
                .into(),
                broker: Some(name),
                resource: Some(format!("version {version}")),
                outcome: outcome.into(),
                detail,
            };
            if let Err(error) = store.append_audit(&entry).await {
                tracing::error!("cannot write the audit trail: {error}");
            }
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

/// `GET /admin/brokers/{name}/versions`: every version in the book, oldest first, accepted or
/// refused, with where it came from.
pub(super) async fn versions(
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
pub(super) struct Rollback {
    version: String,
    #[serde(default)]
    force: bool,
}

/// `POST /admin/brokers/{name}/rollback`: serves a kept version again, accepted or refused
/// before (checked again; `force` skips the checks of plans in use and ids).
pub(super) async fn rollback(
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
    let audit = Audit::of(&caller, tenant_of(&state, &name).flatten());
    let source = (Source::Rollback, body.force);
    publish(&state, &name, &files, source, None, audit).await
}
