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

/// The cluster as this node sees it: every member with its status, liveness and share of
/// the ring (over the members that are alive and not leaving).
pub async fn cluster(State(node): State<Arc<Node>>) -> Response {
    let members = node
        .gossip
        .get()
        .map(|gossip| gossip.members())
        .unwrap_or_default();
    let ring_members: Vec<ringkv_core::ring::Member> = members
        .iter()
        .filter(|m| m.liveness == "alive" && (m.status == "normal" || m.status == "joining"))
        .map(|m| ringkv_core::ring::Member {
            id: m.id.clone(),
            zone: m.zone.clone(),
            weight: m.weight.max(1),
        })
        .collect();
    let ring = ringkv_core::ring::Ring::new(&ring_members, ringkv_core::ring::VNODES_DEFAULT);
    let shares: std::collections::HashMap<String, f64> = ring
        .ownership()
        .into_iter()
        .map(|(member, share)| (member.id.clone(), share))
        .collect();
    let members: Vec<serde_json::Value> = members
        .into_iter()
        .map(|member| {
            let share = shares.get(&member.id).copied().unwrap_or(0.0);
            let mut value = serde_json::to_value(&member).expect("a member view always serializes");
            value["ownership"] = serde_json::json!(share);
            value
        })
        .collect();
    Json(serde_json::json!({ "node_id": node.node_id, "members": members })).into_response()
}
