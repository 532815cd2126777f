//! `GET /v2/catalog`: the catalog checked at load, served from memory.

use super::request::Osb;
use axum::Json;
use serde_json::Value;

/// Serves the broker's catalog.
pub async fn get(osb: Osb) -> Json<Value> {
    Json(osb.broker.catalog.json().clone())
}
