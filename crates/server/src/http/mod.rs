//! The REST API (DESIGN.md, "Client-facing API"): routes, request limits and per-operation
//! metrics. Handlers live in [`keys`], [`ops`], [`backup`] and [`dashboard`]; every error leaves through
//! [`error`].

pub mod access;
pub mod backup;
pub mod chaos;
pub mod dashboard;
pub mod error;
pub mod keys;
pub mod keyspaces;
pub mod listener;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod users;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use error::ApiError;
use metrics::HttpMetrics;
use ringkv_coordinator::Node;
use ringkv_core::limits::VALUE_BYTES_MAX;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Largest request body: a maximal value, JSON-escaped or base64-encoded, plus the envelope.
pub const BODY_BYTES_MAX: usize = VALUE_BYTES_MAX * 2 + 64 * 1024;

/// The handler of the operation named `id` in [`openapi::OPERATIONS`].
fn handler(id: &str) -> Option<MethodRouter<Arc<Node>>> {
    Some(match id {
        "putKey" => put(keys::put_key),
        "postKey" | "postKeyspaceKey" => post(keys::post_key),
        "getKey" => get(keys::get_key),
        "deleteKey" => delete(keys::delete_key),
        "listKeys" | "listKeyspaceKeys" => get(keys::list_keys),
        "putKeyspaceKey" => put(keys::put_key),
        "getKeyspaceKey" => get(keys::get_key),
        "deleteKeyspaceKey" => delete(keys::delete_key),
        "putKeyspace" => put(keyspaces::put_keyspace),
        "getKeyspace" => get(keyspaces::get_keyspace),
        "listKeyspaces" => get(keyspaces::list_keyspaces),
        "health" => get(ops::healthz),
        "cluster" => get(ops::cluster),
        "startRepair" => post(ops::start_repair),
        "removeMember" => delete(ops::remove_member),
        "leave" => post(ops::leave),
        "leaveProgress" => get(ops::leave_progress),
        "repairProgress" => get(ops::repair_progress),
        "antiEntropyRoots" => get(ops::roots),
        "ring" => get(ops::ring),
        "placement" => get(dashboard::placement),
        "dashboard" => get(dashboard::page),
        "dashboardEvents" => get(dashboard::events),
        "chaosState" => get(chaos::state),
        "chaosAct" => post(chaos::act),
        "chaosLinks" => put(chaos::set_links),
        "metrics" => get(ops::metrics),
        "openapi" => get(ops::openapi),
        "listUsers" => get(users::list_users),
        "putUser" => put(users::put_user),
        "deleteUser" => delete(users::delete_user),
        "whoami" => get(users::whoami),
        "backup" => get(backup::backup),
        "restore" => {
            post(backup::restore).layer(DefaultBodyLimit::max(backup::RESTORE_BODY_BYTES_MAX))
        }
        _ => return None,
    })
}

/// The REST API of `node`, built from [`openapi::OPERATIONS`].
pub fn router(node: Arc<Node>) -> Router {
    let mut routes: BTreeMap<&str, MethodRouter<Arc<Node>>> = BTreeMap::new();
    for operation in openapi::OPERATIONS {
        let method =
            handler(operation.id).expect("every operation in the table has a handler (tested)");
        let merged = match routes.remove(operation.path) {
            Some(existing) => existing.merge(method),
            None => method,
        };
        routes.insert(operation.path, merged);
    }
    let router = routes
        .into_iter()
        .fold(Router::new(), |router, (path, method)| {
            router.route(path, method)
        });
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&node),
            access::authorize,
        ))
        .layer(middleware::from_fn_with_state(Gate::new(&node), observe))
        .with_state(node)
}

/// What every REST request passes through: the bound on requests in flight, and the
/// metrics it is recorded in.
#[derive(Clone)]
struct Gate {
    in_flight: Arc<Semaphore>,
    metrics: HttpMetrics,
    /// Where key requests are counted for the node's traffic summary.
    node: Arc<Node>,
}

impl Gate {
    /// The gate of `node`'s REST API, its metrics registered in the node's registry.
    fn new(node: &Arc<Node>) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(node.config.http_in_flight_max)),
            metrics: HttpMetrics::register(&mut node.registry.lock()),
            node: Arc::clone(node),
        }
    }
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
async fn observe(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let Ok(_permit) = gate.in_flight.clone().try_acquire_owned() else {
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
    let timed = gate.node.traffic.start();
    let response = next.run(request).await;
    gate.metrics
        .record(operation, response.status(), started.elapsed());
    match operation {
        "get" | "list" => gate.node.traffic.finish(timed, 1, 0),
        "put" | "delete" => gate.node.traffic.finish(timed, 0, 1),
        _ => {}
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_documented_operation_has_a_handler() {
        for operation in super::openapi::OPERATIONS {
            assert!(
                super::handler(operation.id).is_some(),
                "{} has no handler",
                operation.id
            );
        }
    }
}
