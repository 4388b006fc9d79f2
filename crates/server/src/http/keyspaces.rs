//! `/v1/ks`: creating, reading and listing keyspaces.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringkv_coordinator::keyspaces::{KeyspaceError, KeyspaceRequest};
use ringkv_coordinator::node::Node;
use std::sync::Arc;

impl From<KeyspaceError> for ApiError {
    fn from(error: KeyspaceError) -> Self {
        match error {
            KeyspaceError::Invalid(message) => ApiError::bad_request(message),
            KeyspaceError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "keyspace_conflict", message)
            }
            KeyspaceError::Store(error) => error.into(),
        }
    }
}

/// Creates a keyspace (or changes its replication): `{"replication": 3, "conflict": "siblings"}`.
pub async fn put_keyspace(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { &body };
    let request: KeyspaceRequest = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "body must be JSON like {{\"replication\": 3, \"conflict\": \"lww\" | \"siblings\"}}: {error}"
        ))
    })?;
    let def = node.define_keyspace(&name, request)?;
    Ok(Json(def).into_response())
}

/// One keyspace's definition.
pub async fn get_keyspace(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let def = node
        .keyspaces
        .get(&name)
        .ok_or_else(|| ApiError::keyspace_not_found(&name))?;
    Ok(Json(def).into_response())
}

/// Every keyspace.
pub async fn list_keyspaces(State(node): State<Arc<Node>>) -> Response {
    Json(serde_json::json!({ "keyspaces": node.keyspaces.list() })).into_response()
}
