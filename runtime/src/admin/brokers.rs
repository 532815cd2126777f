//! Listing, showing and removing brokers, serving and quarantined alike.

use super::{AdminState, Caller};
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub(super) fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no broker named {name:?} that you may manage"))
}

/// The JSON view of broker `name`: serving (with the error of a newer version refused, if
/// any), or quarantined with its error.
pub(super) async fn broker_json(state: &AdminState, name: &str) -> Result<Value, ApiError> {
    let problem = state.reloader.problem(name);
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
pub(super) fn tenant_of(state: &AdminState, name: &str) -> Option<Option<String>> {
    if let Some(broker) = state.brokers.get(name) {
        return Some(broker.manifest.tenant.clone());
    }
    state.reloader.problem(name).map(|p| p.tenant)
}

/// `GET /admin/brokers`: the brokers the caller may manage, serving and quarantined.
pub(super) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
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
pub(super) fn owned(state: &AdminState, caller: &Caller, name: &str) -> Result<(), ApiError> {
    match tenant_of(state, name) {
        Some(tenant) if caller.may(tenant.as_deref()) => Ok(()),
        _ => Err(not_found(name)),
    }
}

/// `GET /admin/brokers/{name}`.
pub(super) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    owned(&state, &caller, &name)?;
    Ok(Json(broker_json(&state, &name).await?))
}

/// Query of a removal.
#[derive(Deserialize)]
pub(super) struct Force {
    #[serde(default)]
    force: bool,
}

/// `DELETE /admin/brokers/{name}?force=`: removes a broker and forgets it (its versions, its
/// files and its state), refused while it has instances unless forced: then its instances,
/// bindings and operations are purged without calling the guest.
pub(super) async fn remove(
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
    // In a task of its own: a client that hangs up does not leave the broker unserved with
    // its state not yet purged.
    let (reloader, removing) = (state.reloader.clone(), name.clone());
    let (store, mut entry) = (state.store.clone(), caller.audit_entry("remove", &name));
    entry.tenant = tenant_of(&state, &name).flatten();
    entry.resource = Some(format!("broker {name}"));
    let purged = tokio::spawn(async move {
        let removed = reloader.remove(&removing).await;
        match &removed {
            Ok(purged) => entry.detail = Some(format!("{purged:?}")),
            Err(error) => {
                entry.outcome = "failed".into();
                entry.detail = Some(format!("{error:#}"));
            }
        }
        if let Err(error) = store.append_audit(&entry).await {
            tracing::error!("cannot write the audit trail: {error}");
        }
        removed
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    Ok(Json(json!({ "removed": name, "purged": purged })))
}

pub(super) fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("{error}"))
}
