//! `/v1/users` and `/v1/auth/whoami`: managing users, and asking who a request acts as.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ringkv_coordinator::node::Node;
use ringkv_coordinator::users::{self, Principal, UserError, UserRequest};
use std::sync::Arc;

impl From<UserError> for ApiError {
    fn from(error: UserError) -> Self {
        match error {
            UserError::Invalid(message) => ApiError::bad_request(message),
            UserError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "user_not_found", error.to_string())
            }
            UserError::WrongCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string())
            }
            UserError::Store(error) => error.into(),
        }
    }
}

/// Every user, without secrets.
pub async fn list_users(State(node): State<Arc<Node>>) -> Response {
    Json(serde_json::json!({ "users": node.users.list() })).into_response()
}

/// Creates or changes a user: `{"password": "...", "grants": ["read,write@default"]}`.
pub async fn put_user(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: UserRequest = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "body must be JSON like {{\"password\": \"...\", \"new_token\": true, \
             \"grants\": [\"read,write@default\", \"admin@*\"]}}: {error}"
        ))
    })?;
    let shown = users::put(&node, &name, request).await?;
    Ok(Json(shown).into_response())
}

/// Removes a user.
pub async fn delete_user(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    users::remove(&node, &name)?;
    Ok(Json(serde_json::json!({ "removed": name })).into_response())
}

/// Who this request acts as, and what it may do.
pub async fn whoami(
    State(node): State<Arc<Node>>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let principal = principal.map_or(Principal::Anonymous, |Extension(p)| p);
    let grants: Vec<String> = match &principal {
        Principal::Superuser => vec!["all@*".into()],
        Principal::User(name) => node
            .users
            .get(name)
            .map(|user| user.grants.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        Principal::Anonymous => Vec::new(),
    };
    Json(serde_json::json!({ "user": principal.name(), "grants": grants })).into_response()
}
