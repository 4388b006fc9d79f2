//! The one place errors become HTTP responses: a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}`. A failed precondition adds what is stored
//! now: `"current": {"value": "...", "version": "..."}` (`null` when the key is absent), so a
//! client retrying a compare-and-set needs no second read.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ringkv_coordinator::coordinator::CoordinatorError;
use ringkv_coordinator::request::ReplicaError;

/// An error answer of the REST API.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// The version now stored, on a failed precondition (sent as `ETag`).
    pub current_version: Option<String>,
    /// What is stored now, on a failed precondition (JSON `null`: nothing).
    pub current: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            current_version: None,
            current: None,
        }
    }

    /// 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 for a keyspace no node has defined.
    pub fn keyspace_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "keyspace_not_found",
            format!("no keyspace {name:?}; create it with PUT /v1/ks/{name}"),
        )
    }

    /// 404 for a key that is absent, deleted or expired.
    pub fn key_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "key not found")
    }
}

impl From<ReplicaError> for ApiError {
    fn from(error: ReplicaError) -> Self {
        let message = error.to_string();
        match error {
            ReplicaError::Corruption { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "corruption", message)
            }
            ReplicaError::Storage(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", message)
            }
            ReplicaError::ConditionFailed { current } => Self {
                current: Some(current_json(current.as_deref())),
                current_version: current.map(|entry| entry.version().to_string()),
                ..Self::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition_failed",
                    message,
                )
            },
            ReplicaError::TooManySiblings(_) => {
                Self::new(StatusCode::CONFLICT, "too_many_siblings", message)
            }
            ReplicaError::Busy => Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message),
            ReplicaError::ShuttingDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            ReplicaError::ValueTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large", message)
            }
            ReplicaError::KeyTooLong { .. } => {
                Self::new(StatusCode::URI_TOO_LONG, "key_too_long", message)
            }
            ReplicaError::NotAnInteger | ReplicaError::Overflow => {
                Self::new(StatusCode::CONFLICT, "not_an_integer", message)
            }
            ReplicaError::WrongType => Self::new(StatusCode::CONFLICT, "wrong_type", message),
            ReplicaError::Operation(_) => {
                Self::new(StatusCode::CONFLICT, "operation_failed", message)
            }
            ReplicaError::Invalid(_) => Self::bad_request(message),
        }
    }
}

/// What a failed precondition found stored: its value (base64 with `"encoding"` when it is
/// not UTF-8) and version, or `null`.
fn current_json(current: Option<&ringkv_coordinator::request::Entry>) -> serde_json::Value {
    use base64::Engine as _;
    let Some(entry) = current else {
        return serde_json::Value::Null;
    };
    let version = entry.version().to_string();
    let value = &entry.winner().value;
    match std::str::from_utf8(value) {
        Ok(text) => serde_json::json!({ "value": text, "version": version }),
        Err(_) => serde_json::json!({
            "value": base64::engine::general_purpose::STANDARD.encode(value),
            "encoding": "base64",
            "version": version,
        }),
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::Replica(error) => error.into(),
            unavailable @ CoordinatorError::Unavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                unavailable.to_string(),
            ),
            failed @ CoordinatorError::ShardFailed { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shard_failed",
                failed.to_string(),
            ),
            // Nothing applied: safe to send again.
            no_leader @ CoordinatorError::NoLeader { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_leader",
                no_leader.to_string(),
            ),
            // Not safe to send again blindly: read first.
            unknown @ CoordinatorError::OutcomeUnknown(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "outcome_unknown",
                unknown.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(current) = self.current {
            body["current"] = current;
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(version) = self.current_version {
            if let Ok(value) = format!("\"{version}\"").parse() {
                response
                    .headers_mut()
                    .insert(axum::http::header::ETAG, value);
            }
        }
        response
    }
}
