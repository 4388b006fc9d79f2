//! Chaos actions for the dashboard's chaos panel: kill, pause, resume or restart a node, cut
//! it off from the others or slow its links, heal the network, and start or stop a load. A
//! node carries none out itself: it passes them to the supervisor of the `ringkv dev-cluster`
//! that started it (`chaos_control`), which owns the node processes and tells each node the
//! faults to put on its links (`PUT /v1/chaos/links`). A node started any other way has no
//! supervisor and refuses them all.

use super::error::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ringkv_coordinator::node::Node;
use std::sync::Arc;
use std::time::Duration;

/// How long the supervisor may take over an action (a restart waits for the node to serve).
const ACTION_TIMEOUT: Duration = Duration::from_secs(40);

/// `GET /v1/chaos`: whether chaos mode is on (`enabled`), and if so what the supervisor runs
/// (each node's process state, and the load's).
pub async fn state(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    if node.config.chaos_control.is_none() {
        return Ok(axum::Json(serde_json::json!({ "enabled": false })).into_response());
    }
    forward(&node, "GET", "state").await
}

/// `POST /v1/chaos/{target}/{action}`: `kill`, `pause`, `resume` or `restart` node
/// `target`, or `start` or `stop` the load (`target` = `load`).
pub async fn act(
    State(node): State<Arc<Node>>,
    Path((target, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let known = match target.as_str() {
        "load" => matches!(action.as_str(), "start" | "stop"),
        "network" => action == "heal",
        _ => matches!(
            action.as_str(),
            "kill" | "pause" | "resume" | "restart" | "isolate" | "slow" | "fast"
        ),
    };
    if !known {
        return Err(ApiError::bad_request(format!(
            "no action {action:?} on {target:?}: nodes take kill, pause, resume, restart, \
             isolate, slow or fast; the network takes heal; the load takes start or stop"
        )));
    }
    forward(&node, "POST", &format!("{target}/{action}")).await
}

/// The body of `PUT /v1/chaos/links`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Links {
    /// Cluster addresses of the peers to cut this node off from.
    blocked: Vec<String>,
    /// Milliseconds to add before each message this node sends and each answer it gives.
    delay_ms: u64,
}

/// Most peers one node may be cut off from.
const BLOCKED_MAX: usize = 1024;

/// `PUT /v1/chaos/links`: sets the faults on this node's links (its dev-cluster supervisor
/// calls it on every node after each partition, heal or change of latency). Refused on a
/// node not started by `ringkv dev-cluster`.
pub async fn set_links(
    State(node): State<Arc<Node>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if node.config.chaos_control.is_none() {
        return Err(disabled());
    }
    let links: Links = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid links: {error}")))?;
    let delay_max = ringkv_cluster::faults::DELAY_MAX.as_millis() as u64;
    if links.blocked.len() > BLOCKED_MAX || links.delay_ms > delay_max {
        return Err(ApiError::bad_request(format!(
            "at most {BLOCKED_MAX} peers and {delay_max} ms"
        )));
    }
    let faults = &node.peers.faults;
    faults.set(
        links.blocked.into_iter().collect(),
        Duration::from_millis(links.delay_ms),
    );
    let (blocked, delay_ms) = faults.current();
    Ok(axum::Json(serde_json::json!({ "blocked": blocked, "delay_ms": delay_ms })).into_response())
}

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "chaos_disabled",
        "chaos actions exist only in clusters started by `ringkv dev-cluster`",
    )
}

/// Asks the supervisor; its answer, status and JSON body, as this node's.
async fn forward(node: &Node, method: &'static str, path: &str) -> Result<Response, ApiError> {
    let Some(control) = node.config.chaos_control.clone() else {
        return Err(disabled());
    };
    let url = format!("http://{control}/{path}");
    let answer = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(ACTION_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = match method {
            "GET" => agent.get(&url).call(),
            _ => agent.post(&url).send_empty(),
        }?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string()?;
        Ok::<_, ureq::Error>((status, body))
    })
    .await
    .map_err(|error| ApiError::new(StatusCode::BAD_GATEWAY, "chaos_failed", error.to_string()))?;
    let (status, body) = answer.map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "chaos_unreachable",
            format!("the dev-cluster supervisor did not answer: {error}"),
        )
    })?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
