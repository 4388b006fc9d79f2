//! Operational endpoints: health and Prometheus metrics.

use crate::node::Node;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

/// Liveness: 200 with the node's id while it serves requests.
pub async fn healthz(State(node): State<Arc<Node>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "node_id": node.node_id })).into_response()
}

/// Prometheus text exposition of the node's registry.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.refresh_gauges();
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &node.registry) {
        return super::error::ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "metrics_error",
            error.to_string(),
        )
        .into_response();
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// The OpenAPI 3 document of this API.
pub async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}
