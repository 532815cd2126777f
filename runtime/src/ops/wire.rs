//! OSB request bodies as the platform sends them (unknown fields ignored) and as an operation
//! stores them to replay its guest call, with the conversions into the contract's records.

use crate::sandbox::bindings::types::{BindResource, MaintenanceInfo, PreviousValues};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// OSB `maintenance_info` on the wire.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct MaintenanceInfoWire {
    /// Semantic version.
    pub version: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl From<MaintenanceInfoWire> for MaintenanceInfo {
    fn from(m: MaintenanceInfoWire) -> Self {
        MaintenanceInfo {
            version: m.version,
            description: m.description,
        }
    }
}

/// Reads an optional `maintenance_info`, taking an empty object as absent: generated OSB
/// clients send `"maintenance_info": {}` when they mean none (a `version` is required in any
/// other object).
fn maintenance_info<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<MaintenanceInfoWire>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) if map.is_empty() => Ok(None),
        Some(other) => serde_json::from_value(other)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Body of `PUT /v2/service_instances/:id`.
#[derive(Debug, Deserialize)]
pub struct ProvisionBody {
    /// Service id (required).
    pub service_id: Option<String>,
    /// Plan id (required).
    pub plan_id: Option<String>,
    /// Organization guid.
    pub organization_guid: Option<String>,
    /// Space guid.
    pub space_guid: Option<String>,
    /// User parameters (an object).
    pub parameters: Option<Value>,
    /// Platform context (an object).
    pub context: Option<Value>,
    /// Expected maintenance info (`{}` counts as absent).
    #[serde(default, deserialize_with = "maintenance_info")]
    pub maintenance_info: Option<MaintenanceInfoWire>,
}

/// OSB `previous_values` on the wire.
#[derive(Debug, Deserialize)]
pub struct PreviousValuesWire {
    /// Service id before.
    pub service_id: Option<String>,
    /// Plan id before.
    pub plan_id: Option<String>,
    /// Organization before.
    pub organization_id: Option<String>,
    /// Space before.
    pub space_id: Option<String>,
    /// Maintenance info before (`{}` counts as absent).
    #[serde(default, deserialize_with = "maintenance_info")]
    pub maintenance_info: Option<MaintenanceInfoWire>,
}

impl From<PreviousValuesWire> for PreviousValues {
    fn from(p: PreviousValuesWire) -> Self {
        PreviousValues {
            service_id: p.service_id,
            plan_id: p.plan_id,
            organization_id: p.organization_id,
            space_id: p.space_id,
            maintenance_info: p.maintenance_info.map(Into::into),
        }
    }
}

/// Body of `PATCH /v2/service_instances/:id`.
#[derive(Debug, Deserialize)]
pub struct UpdateBody {
    /// Service id (required).
    pub service_id: Option<String>,
    /// New plan id.
    pub plan_id: Option<String>,
    /// User parameters (an object).
    pub parameters: Option<Value>,
    /// Platform context (an object).
    pub context: Option<Value>,
    /// Values before the update.
    pub previous_values: Option<PreviousValuesWire>,
    /// New maintenance info (`{}` counts as absent).
    #[serde(default, deserialize_with = "maintenance_info")]
    pub maintenance_info: Option<MaintenanceInfoWire>,
}

/// Body of `PUT .../service_bindings/:id`.
#[derive(Debug, Deserialize)]
pub struct BindBody {
    /// Service id (required).
    pub service_id: Option<String>,
    /// Plan id (required).
    pub plan_id: Option<String>,
    /// App guid (deprecated in OSB).
    pub app_guid: Option<String>,
    /// What the binding is for.
    pub bind_resource: Option<Value>,
    /// User parameters (an object).
    pub parameters: Option<Value>,
    /// Platform context (an object).
    pub context: Option<Value>,
    /// Binding being rotated.
    pub predecessor_binding_id: Option<String>,
}

/// An optional JSON object field as text.
///
/// # Errors
/// A message naming `field` when it is present and not an object.
pub fn object_text(field: &str, value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value.to_string())),
        Some(_) => Err(format!("{field} must be a JSON object")),
    }
}

/// Converts `bind_resource`, which must be an object.
///
/// # Errors
/// A message when it is not an object.
pub fn bind_resource(value: Option<Value>) -> Result<Option<BindResource>, String> {
    let Some(raw) = object_text("bind_resource", value)? else {
        return Ok(None);
    };
    let parsed: Value = serde_json::from_str(&raw).unwrap_or_default();
    let text = |key: &str| parsed.get(key).and_then(Value::as_str).map(str::to_string);
    Ok(Some(BindResource {
        app_guid: text("app_guid"),
        route: text("route"),
        raw,
    }))
}
