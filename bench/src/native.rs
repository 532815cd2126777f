//! The baselines: the file broker's logic compiled into plain axum handlers (the "native peer"),
//! keeping the same records in the same state store as brokerbox, and a static catalog handler.
//!
//! The peer does what a hand-written broker would: checks the API version and credentials,
//! looks the plan up in its catalog, writes the instance's operation and record in the store,
//! writes the instance's file, and records the outcome. It skips what brokerbox adds on top
//! (schema validation, operation bookkeeping for async polling, the sandbox).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use brokerbox::store::{
    BindingRecord, Effect, InstanceRecord, OperationKind, OperationRecord, OperationState, Outcome,
    ResourceState, SqlStore, StateStore, StoreError,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// The broker name the peer serves under, so one client drives both servers.
pub const BROKER: &str = "file-broker";

/// State of the native peer.
struct Peer {
    store: Arc<dyn StateStore>,
    files: PathBuf,
    /// The `Authorization` header the platform must send.
    authorization: String,
    /// `(service id, plan ids)` from the catalog.
    service_id: String,
    plan_ids: Vec<String>,
}

type Shared = Arc<Peer>;

/// The native peer's router: `catalog` is the JSON brokerbox serves for the file broker, whose
/// service and plan ids the peer accepts.
pub async fn peer(
    store_url: &str,
    files: PathBuf,
    authorization: String,
    catalog: &Value,
) -> anyhow::Result<Router> {
    let store: Arc<dyn StateStore> =
        Arc::new(SqlStore::open(store_url, brokerbox::store::seal::MasterKey::ephemeral()).await?);
    store.register_broker(BROKER, "native-peer").await?;
    let service = &catalog["services"][0];
    let peer = Peer {
        store,
        files,
        authorization,
        service_id: service["id"].as_str().unwrap_or_default().to_string(),
        plan_ids: service["plans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|plan| plan["id"].as_str().map(str::to_string))
            .collect(),
    };
    let base = format!("/brokers/{BROKER}/v2");
    Ok(Router::new()
        .route(
            &format!("{base}/service_instances/{{instance_id}}"),
            put(provision).delete(deprovision),
        )
        .route(
            &format!("{base}/service_instances/{{instance_id}}/service_bindings/{{binding_id}}"),
            put(bind).delete(unbind),
        )
        .with_state(Arc::new(peer)))
}

/// A router answering the catalog with fixed bytes, as a hand-written broker would.
pub fn static_catalog(catalog: &Value) -> Router {
    let body = catalog.to_string();
    Router::new().route(
        &format!("/brokers/{BROKER}/v2/catalog"),
        get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    )
}

/// An OSB error answer.
fn error(status: StatusCode, description: impl Into<String>) -> Response {
    (status, Json(json!({ "description": description.into() }))).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The checks every OSB request gets: API version and credentials.
/// Why the peer refuses a request: a status and a description.
type Refusal = (StatusCode, &'static str);

fn refuse((status, description): Refusal) -> Response {
    error(status, description)
}

fn check(peer: &Peer, headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.get("x-broker-api-version").is_none() {
        return Err((StatusCode::PRECONDITION_FAILED, "missing version"));
    }
    let authorized = headers
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == peer.authorization.as_bytes());
    if !authorized {
        return Err((StatusCode::UNAUTHORIZED, "bad credentials"));
    }
    Ok(())
}

/// The file-broker's `instance_file`: the file backing an instance, refusing unsafe ids.
fn instance_file(peer: &Peer, instance_id: &str) -> Result<PathBuf, Refusal> {
    let safe = !instance_id.is_empty()
        && !instance_id.starts_with('.')
        && instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !safe {
        return Err((StatusCode::BAD_REQUEST, "bad instance id"));
    }
    Ok(peer.files.join(instance_id))
}

fn operation(instance_id: &str, binding_id: Option<&str>, kind: OperationKind) -> OperationRecord {
    let now = brokerbox::store::now_ms();
    OperationRecord {
        id: uuid::Uuid::now_v7().to_string(),
        broker: BROKER.into(),
        instance_id: instance_id.into(),
        binding_id: binding_id.map(str::to_string),
        kind,
        state: OperationState::InProgress,
        description: None,
        guest_data: None,
        target_plan: None,
        attempts: 1,
        instance_usable: None,
        update_repeatable: None,
        created_at: now,
        request: None,
        owner: Some("native-peer".into()),
        lease_until: Some(now + 30_000),
        next_poll_at: None,
        polls: 0,
        broker_version: None,
        actor: None,
        tenant: None,
    }
}

async fn provision(
    State(peer): State<Shared>,
    Path(instance_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(refused) = check(&peer, &headers) {
        return refuse(refused);
    }
    let plan_id = body["plan_id"].as_str().unwrap_or_default().to_string();
    if body["service_id"] != peer.service_id.as_str() || !peer.plan_ids.contains(&plan_id) {
        return error(StatusCode::BAD_REQUEST, "unknown service or plan");
    }
    let file = match instance_file(&peer, &instance_id) {
        Ok(file) => file,
        Err(refused) => return refuse(refused),
    };
    let attributes = body.to_string();
    let op = operation(&instance_id, None, OperationKind::Provision);
    let record = InstanceRecord {
        broker: BROKER.into(),
        instance_id: instance_id.clone(),
        service_id: peer.service_id.clone(),
        plan_id: plan_id.clone(),
        attributes,
        parameters: None,
        context: body.get("context").map(Value::to_string),
        dashboard_url: None,
        metadata: None,
        maintenance_info: None,
        state: ResourceState::Creating,
        operation_id: Some(op.id.clone()),
    };
    // A repeat is found by the insert itself (as brokerbox does): no read first.
    match peer.store.create_instance(&record, &op).await {
        Ok(()) => {}
        Err(StoreError::Exists) => {
            return match peer.store.instance(BROKER, &instance_id).await {
                Ok(Some(existing)) if existing.attributes == record.attributes => {
                    (StatusCode::OK, Json(json!({}))).into_response()
                }
                Ok(_) => error(StatusCode::CONFLICT, "exists with other attributes"),
                Err(e) => internal(e),
            }
        }
        Err(e) => return internal(e),
    }
    let plan = json!({ "id": plan_id, "name": "small", "description": "A small file" });
    if let Err(e) = std::fs::write(&file, plan.to_string()) {
        return internal(e);
    }
    let effect = Effect::InstanceReady {
        plan_id,
        dashboard_url: None,
        metadata: None,
        parameters: None,
        context: record.context.clone(),
        maintenance_info: None,
    };
    match peer
        .store
        .finish_operation(&op, &Outcome::succeeded(None), &effect)
        .await
    {
        Ok(()) => (StatusCode::CREATED, Json(json!({}))).into_response(),
        Err(e) => internal(e),
    }
}

async fn deprovision(
    State(peer): State<Shared>,
    Path(instance_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = check(&peer, &headers) {
        return refuse(refused);
    }
    let file = match instance_file(&peer, &instance_id) {
        Ok(file) => file,
        Err(refused) => return refuse(refused),
    };
    // No read first (as brokerbox does): a refused start is read to tell why.
    let op = operation(&instance_id, None, OperationKind::Deprovision);
    if let Err(e) = peer
        .store
        .start_operation(&op, ResourceState::Deleting)
        .await
    {
        return match (e, peer.store.instance(BROKER, &instance_id).await) {
            (StoreError::Changed, Ok(None)) => error(StatusCode::GONE, "no such instance"),
            (e, _) => internal(e),
        };
    }
    if let Err(e) = std::fs::remove_file(file) {
        return internal(e);
    }
    match peer
        .store
        .finish_operation(&op, &Outcome::succeeded(None), &Effect::InstanceDeleted)
        .await
    {
        Ok(()) => (StatusCode::OK, Json(json!({}))).into_response(),
        Err(e) => internal(e),
    }
}

async fn bind(
    State(peer): State<Shared>,
    Path((instance_id, binding_id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(refused) = check(&peer, &headers) {
        return refuse(refused);
    }
    match (peer.store)
        .instance_and_binding(BROKER, &instance_id, &binding_id)
        .await
    {
        Ok((None, _)) => return error(StatusCode::NOT_FOUND, "no such instance"),
        Ok((Some(_), Some(_))) => return error(StatusCode::CONFLICT, "binding exists"),
        Ok((Some(_), None)) => {}
        Err(e) => return internal(e),
    }
    let file = match instance_file(&peer, &instance_id) {
        Ok(file) => file,
        Err(refused) => return refuse(refused),
    };
    let op = operation(&instance_id, Some(&binding_id), OperationKind::Bind);
    let record = BindingRecord {
        broker: BROKER.into(),
        binding_id: binding_id.clone(),
        instance_id: instance_id.clone(),
        attributes: body.to_string(),
        result: None,
        state: ResourceState::Creating,
        operation_id: Some(op.id.clone()),
    };
    if let Err(e) = peer.store.create_binding(&record, &op).await {
        return internal(e);
    }
    if !file.exists() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "instance has no file");
    }
    let result = json!({ "credentials": { "file": file.display().to_string() } });
    let effect = Effect::BindingReady {
        result: result.to_string(),
    };
    match peer
        .store
        .finish_operation(&op, &Outcome::succeeded(None), &effect)
        .await
    {
        Ok(()) => (StatusCode::CREATED, Json(result)).into_response(),
        Err(e) => internal(e),
    }
}

async fn unbind(
    State(peer): State<Shared>,
    Path((instance_id, binding_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = check(&peer, &headers) {
        return refuse(refused);
    }
    let op = operation(&instance_id, Some(&binding_id), OperationKind::Unbind);
    if let Err(e) = peer
        .store
        .start_operation(&op, ResourceState::Deleting)
        .await
    {
        return match (e, peer.store.binding(BROKER, &binding_id).await) {
            (StoreError::Changed, Ok(b))
                if b.as_ref().is_none_or(|b| b.instance_id != instance_id) =>
            {
                error(StatusCode::GONE, "no such binding")
            }
            (e, _) => internal(e),
        };
    }
    match peer
        .store
        .finish_operation(&op, &Outcome::succeeded(None), &Effect::BindingDeleted)
        .await
    {
        Ok(()) => (StatusCode::OK, Json(json!({}))).into_response(),
        Err(e) => internal(e),
    }
}
