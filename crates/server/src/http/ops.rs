//! Operational endpoints: health and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringkv_coordinator::gossip::ClusterView;
use ringkv_coordinator::node::Node;
use ringkv_coordinator::peers::{NodeStats, PeerRequest, PeerResponse};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Liveness: 200 with the node's id while it serves requests.
pub async fn healthz(State(node): State<Arc<Node>>) -> Response {
    Json(serde_json::json!({ "status": "ok", "node_id": node.node_id })).into_response()
}

/// Prometheus text exposition of the node's registry.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.refresh_gauges();
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &node.registry.lock())
    {
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

/// The cluster as this node sees it: every ring member with its status, liveness, share of
/// the ring, and — asked of each reachable member — its key count and disk use.
pub async fn cluster(State(node): State<Arc<Node>>) -> Response {
    let members = cluster_members(&node).await;
    Json(json!({ "node_id": node.node_id, "members": members })).into_response()
}

/// Every ring member as `/v1/cluster` shows it, with its counters (for the dashboard).
pub async fn cluster_members(node: &Arc<Node>) -> Vec<serde_json::Value> {
    let view = node.view();
    let members = node
        .gossip
        .get()
        .map(|gossip| gossip.members())
        .unwrap_or_default();
    let shares: HashMap<&str, f64> = view
        .ring
        .ownership()
        .into_iter()
        .map(|(member, share)| (member.id.as_str(), share))
        .collect();
    let stats = futures_util::future::join_all(
        members
            .iter()
            .map(|member| member_stats(node, &view, &member.id)),
    )
    .await;
    members
        .iter()
        .zip(stats)
        .map(|(member, stats)| {
            let mut value = serde_json::to_value(member).expect("a member view always serializes");
            value["ownership"] = json!(shares.get(member.id.as_str()).copied().unwrap_or(0.0));
            value["keys"] = json!(stats.as_ref().map(|s| s.keys));
            value["keys_exact"] = json!(stats.as_ref().map(|s| s.keys_exact));
            value["disk_bytes"] = json!(stats.as_ref().map(|s| s.disk_bytes));
            value["anti_entropy_last_ms"] = json!(stats.as_ref().map(|s| s.anti_entropy_last_ms));
            value["anti_entropy_divergence"] =
                json!(stats.as_ref().map(|s| s.anti_entropy_divergence));
            value["hints_pending"] = json!(stats.as_ref().map(|s| s.hints_pending));
            value["joining"] = json!(stats.as_ref().and_then(|s| s.joining.clone()));
            value["leaving"] = json!(stats.as_ref().and_then(|s| s.leaving.clone()));
            value["restoring"] = json!(stats.as_ref().map(|s| s.restoring.clone()));
            value["traffic"] = json!(stats.as_ref().map(|s| s.traffic.clone()));
            value["counters"] = json!(stats.as_ref().map(|s| s.counters.clone()));
            value["shards"] = json!(stats.as_ref().map(|s| s.shards.clone()));
            value
        })
        .collect()
}

/// Query parameters of `POST /v1/cluster/repair` and `GET /v1/cluster/roots`: the keyspace,
/// if one is named.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceParams {
    keyspace: Option<String>,
}

/// Starts an anti-entropy round now (`ringkv cluster repair`), in the background; answers
/// with its progress. A round already under way is joined rather than doubled.
pub async fn start_repair(
    State(node): State<Arc<Node>>,
    super::keys::Params(params): super::keys::Params<KeyspaceParams>,
) -> Result<Response, super::error::ApiError> {
    if let Some(name) = &params.keyspace {
        if node.keyspaces.get(name).is_none() {
            return Err(super::error::ApiError::keyspace_not_found(name));
        }
    }
    let progress = node.anti_entropy.progress();
    if !progress.running {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            use ringkv_coordinator::anti_entropy::{round, REQUESTED_PASSES_MAX};
            round(&node, params.keyspace.as_deref(), REQUESTED_PASSES_MAX).await;
        });
    }
    let mut progress = node.anti_entropy.progress();
    progress.running = true;
    Ok((axum::http::StatusCode::ACCEPTED, Json(progress)).into_response())
}

/// Takes a dead node out of the ring (`ringkv cluster remove`), on every live member.
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, super::error::ApiError> {
    use axum::http::StatusCode;
    use ringkv_coordinator::node::RemoveError;
    node.remove_member(&id).await.map_err(|error| {
        let (status, code) = match &error {
            RemoveError::Unknown(_) => (StatusCode::NOT_FOUND, "not_found"),
            RemoveError::Alive(_) => (StatusCode::CONFLICT, "member_alive"),
            RemoveError::Itself => (StatusCode::BAD_REQUEST, "bad_request"),
            RemoveError::NotServing => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            RemoveError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        super::error::ApiError::new(status, code, error.to_string())
    })?;
    Ok(Json(json!({ "removed": id })).into_response())
}

/// Makes this node leave the cluster (`ringkv cluster leave`), in the background.
pub async fn leave(State(node): State<Arc<Node>>) -> Result<Response, super::error::ApiError> {
    if !ringkv_coordinator::leave::start(&node) {
        return Err(super::error::ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_in_a_cluster",
            "this node is alone in its ring: there is nothing to hand off",
        ));
    }
    let progress = node.leaving.progress();
    Ok((axum::http::StatusCode::ACCEPTED, Json(progress)).into_response())
}

/// Where this node's leaving stands.
pub async fn leave_progress(State(node): State<Arc<Node>>) -> Response {
    Json(node.leaving.progress()).into_response()
}

/// This node's anti-entropy: the round under way, or the last one.
pub async fn repair_progress(State(node): State<Arc<Node>>) -> Response {
    Json(node.anti_entropy.progress()).into_response()
}

/// The roots of this node's anti-entropy trees of a keyspace (`default` unless named), one
/// per live peer over the keys they share, scanned now: replicas have converged when each
/// pair's roots for each other are equal.
pub async fn roots(
    State(node): State<Arc<Node>>,
    super::keys::Params(params): super::keys::Params<KeyspaceParams>,
) -> Result<Response, super::error::ApiError> {
    use axum::http::StatusCode;
    let keyspace = params
        .keyspace
        .unwrap_or_else(|| ringkv_coordinator::keyspaces::DEFAULT_KEYSPACE.to_owned());
    if node.keyspaces.get(&keyspace).is_none() {
        return Err(super::error::ApiError::keyspace_not_found(&keyspace));
    }
    let roots = ringkv_coordinator::anti_entropy::roots(&node, &keyspace)
        .await
        .map_err(|error| {
            super::error::ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error)
        })?;
    let roots: serde_json::Map<String, serde_json::Value> = roots
        .into_iter()
        .map(|(peer, root)| (peer, json!(format!("{root:016x}"))))
        .collect();
    Ok(
        Json(json!({ "node_id": node.node_id, "keyspace": keyspace, "roots": roots }))
            .into_response(),
    )
}

/// How long `/v1/cluster` waits for a member's figures.
const STATS_TIMEOUT: Duration = Duration::from_millis(2000);

/// A member's figures, `None` if it is down or does not answer in time.
async fn member_stats(node: &Arc<Node>, view: &ClusterView, id: &str) -> Option<NodeStats> {
    if id == view.me {
        let node = Arc::clone(node);
        return tokio::task::spawn_blocking(move || node.stats()).await.ok();
    }
    let address = view.address(id).filter(|_| !view.is_down(id))?;
    match node
        .peers
        .get(address)
        .call(PeerRequest::Stats, STATS_TIMEOUT)
        .await
    {
        Ok(PeerResponse::Stats(stats)) => Some(*stats),
        _ => None,
    }
}

/// The ring: the hash and virtual-node settings, each member's token count and share, and
/// every token with its owner in ring order (as Cassandra's `nodetool ring`). The ring is a
/// pure function of the member list, so a client SDK can rebuild it from `/v1/cluster`.
pub async fn ring(State(node): State<Arc<Node>>) -> Response {
    let view = node.view();
    let mut tokens_of: HashMap<&str, usize> = HashMap::new();
    let tokens: Vec<serde_json::Value> = view
        .ring
        .tokens()
        .map(|(token, member)| {
            *tokens_of.entry(member.id.as_str()).or_default() += 1;
            json!([token.to_string(), member.id])
        })
        .collect();
    let members: Vec<serde_json::Value> = view
        .ring
        .ownership()
        .into_iter()
        .map(|(member, share)| {
            json!({
                "id": member.id,
                "zone": member.zone,
                "weight": member.weight,
                "tokens": tokens_of.get(member.id.as_str()).copied().unwrap_or(0),
                "ownership": share,
            })
        })
        .collect();
    Json(json!({
        "hash": "xxh3-64",
        "vnodes": ringkv_core::ring::VNODES_DEFAULT,
        "members": members,
        "tokens": tokens,
    }))
    .into_response()
}
