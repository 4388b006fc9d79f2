//! The REST API (DESIGN.md, "Client-facing API"): routes, request limits and per-operation
//! metrics. Handlers live in [`keys`] and [`ops`]; every error leaves through [`error`].

pub mod error;
pub mod keys;
pub mod metrics;
pub mod ops;

use crate::node::Node;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use ringkv_core::limits::VALUE_BYTES_MAX;
use std::sync::Arc;
use std::time::Instant;

/// Largest request body: a maximal value, JSON-escaped or base64-encoded, plus the envelope.
pub const BODY_BYTES_MAX: usize = VALUE_BYTES_MAX * 2 + 64 * 1024;

/// The REST API of `node`.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/keys", get(keys::list_keys))
        .route(
            "/v1/keys/{key}",
            get(keys::get_key)
                .put(keys::put_key)
                .delete(keys::delete_key),
        )
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(Arc::clone(&node), observe))
        .with_state(node)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such route; see /v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Admits at most `http_in_flight_max` requests at once (503 beyond, never an unbounded
/// queue) and records each request's operation, status and latency.
async fn observe(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = node.http_in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many requests in flight",
        )
        .into_response();
    };
    let operation = metrics::operation(
        request.method(),
        request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = Instant::now();
    let response = next.run(request).await;
    node.http_metrics
        .record(operation, response.status(), started.elapsed());
    response
}
