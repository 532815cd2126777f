//! `GET /v2/catalog`: the catalog checked at load, served from memory as it was serialized
//! then (no copy of the JSON tree, no serializing per request).

use super::request::Osb;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// Serves the broker's catalog.
pub async fn get(osb: Osb) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        osb.broker.catalog.body(),
    )
}
