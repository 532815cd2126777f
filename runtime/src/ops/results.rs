//! Checks what a guest returned and turns it into what is stored and sent: a guest is
//! untrusted, so every JSON field is parsed, must be an object, and is size-capped.

use crate::sandbox::bindings::types::{
    BindingResult, Endpoint, InstanceResult, VolumeMode, VolumeMount,
};
use serde_json::{json, Map, Value};

/// Largest JSON field (credentials, metadata) a guest may return.
pub const MAX_JSON_FIELD_BYTES: usize = 64 * 1024;
/// Largest operation data a guest may hand the host to keep for its `last-operation`.
pub const MAX_OPERATION_DATA_BYTES: usize = 64 * 1024;
/// Longest URL (`dashboard_url`) a guest may return.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Refuses operation data over [`MAX_OPERATION_DATA_BYTES`].
///
/// # Errors
/// A description naming the cap.
pub fn operation_data(data: &str) -> Result<(), String> {
    if data.len() > MAX_OPERATION_DATA_BYTES {
        return Err(format!(
            "the broker returned operation data of {} bytes, over the cap of {MAX_OPERATION_DATA_BYTES}",
            data.len()
        ));
    }
    Ok(())
}

/// Parses a guest's JSON field, which must be an object within the cap.
///
/// # Errors
/// A description naming the field.
pub fn guest_object(field: &str, text: &Option<String>) -> Result<Option<Value>, String> {
    let Some(text) = text else { return Ok(None) };
    if text.len() > MAX_JSON_FIELD_BYTES {
        return Err(format!(
            "the broker returned {field} of {} bytes, over the cap of {MAX_JSON_FIELD_BYTES}",
            text.len()
        ));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(Some(value)),
        _ => Err(format!(
            "the broker returned {field} that is not a JSON object"
        )),
    }
}

/// The stored form of an instance result: (dashboard_url, metadata JSON).
///
/// # Errors
/// When the metadata is not a JSON object within the cap.
pub fn instance_values(
    result: &InstanceResult,
) -> Result<(Option<String>, Option<String>), String> {
    if let Some(url) = result
        .dashboard_url
        .as_ref()
        .filter(|u| u.len() > MAX_URL_BYTES)
    {
        return Err(format!(
            "the broker returned a dashboard_url of {} bytes, over the cap of {MAX_URL_BYTES}",
            url.len()
        ));
    }
    let metadata = guest_object("metadata", &result.metadata)?.map(|v| v.to_string());
    Ok((result.dashboard_url.clone(), metadata))
}

/// Largest binding body (credentials, mounts, endpoints...) a guest may return, in bytes.
pub const MAX_BINDING_BYTES: usize = MAX_JSON_FIELD_BYTES * 2;

/// A lower bound of the JSON size of a binding result, computed from the lifted strings
/// alone: checked before any JSON is built, so an answer with a million empty entries costs
/// the host nothing more than this sum.
fn binding_bytes(result: &BindingResult) -> usize {
    // The JSON of an entry with empty strings, without its mount config or ports:
    // {"driver":"","container_dir":"","mode":"r","device_type":"","device":{"volume_id":""}}
    const MOUNT: usize = 84;
    // {"host":"","ports":[]}
    const ENDPOINT: usize = 22;
    let text = |t: &Option<String>| t.as_ref().map_or(0, String::len);
    let mounts: usize = result
        .volume_mounts
        .iter()
        .map(|m| {
            MOUNT
                + m.driver.len()
                + m.container_dir.len()
                + m.device_type.len()
                + m.volume_id.len()
                + text(&m.mount_config)
        })
        .sum();
    let endpoints: usize = result
        .endpoints
        .iter()
        .map(|e| {
            ENDPOINT
                + e.host.len()
                + text(&e.protocol)
                + e.ports.iter().map(|p| p.len() + 3).sum::<usize>()
        })
        .sum();
    text(&result.credentials)
        + text(&result.syslog_drain_url)
        + text(&result.route_service_url)
        + text(&result.expires_at)
        + text(&result.renew_before)
        + mounts
        + endpoints
}

/// The OSB form of a guest's volume mount.
fn volume_mount(mount: &VolumeMount) -> Result<Value, String> {
    let mut device = json!({ "volume_id": mount.volume_id });
    if let Some(config) = guest_object("mount_config", &mount.mount_config)? {
        device["mount_config"] = config;
    }
    let mode = match mount.mode {
        VolumeMode::R => "r",
        VolumeMode::Rw => "rw",
    };
    Ok(
        json!({ "driver": mount.driver, "container_dir": mount.container_dir, "mode": mode,
               "device_type": mount.device_type, "device": device }),
    )
}

/// The OSB form of a guest's endpoint.
fn endpoint(endpoint: &Endpoint) -> Value {
    let mut value = json!({ "host": endpoint.host, "ports": endpoint.ports });
    if let Some(protocol) = &endpoint.protocol {
        value["protocol"] = json!(protocol);
    }
    value
}

/// The OSB binding body (`credentials`, `syslog_drain_url`, ..., `metadata`) of a result.
///
/// # Errors
/// When the result is over [`MAX_BINDING_BYTES`] (checked before it is built), or the
/// credentials or a mount configuration are not JSON objects within the cap.
pub fn binding_body(result: &BindingResult) -> Result<Value, String> {
    let estimate = binding_bytes(result);
    if estimate > MAX_BINDING_BYTES {
        return Err(format!(
            "the broker returned a binding of about {estimate} bytes ({} volume mounts, {} \
             endpoints), over the cap of {MAX_BINDING_BYTES}",
            result.volume_mounts.len(),
            result.endpoints.len()
        ));
    }
    let mut body = Map::new();
    if let Some(credentials) = guest_object("credentials", &result.credentials)? {
        body.insert("credentials".into(), credentials);
    }
    if let Some(url) = &result.syslog_drain_url {
        body.insert("syslog_drain_url".into(), json!(url));
    }
    if let Some(url) = &result.route_service_url {
        body.insert("route_service_url".into(), json!(url));
    }
    if !result.volume_mounts.is_empty() {
        let mounts = result
            .volume_mounts
            .iter()
            .map(volume_mount)
            .collect::<Result<Vec<_>, String>>()?;
        body.insert("volume_mounts".into(), Value::Array(mounts));
    }
    if !result.endpoints.is_empty() {
        let endpoints = result.endpoints.iter().map(endpoint).collect();
        body.insert("endpoints".into(), Value::Array(endpoints));
    }
    let mut metadata = Map::new();
    if let Some(at) = &result.expires_at {
        metadata.insert("expires_at".into(), json!(at));
    }
    if let Some(at) = &result.renew_before {
        metadata.insert("renew_before".into(), json!(at));
    }
    if !metadata.is_empty() {
        body.insert("metadata".into(), Value::Object(metadata));
    }
    let body = Value::Object(body);
    let size = body.to_string().len();
    if size > MAX_BINDING_BYTES {
        return Err(format!(
            "the broker returned a binding of {size} bytes, over the cap of {MAX_BINDING_BYTES}"
        ));
    }
    Ok(body)
}
