//! The web dashboard every node serves at `/`: one page, embedded in the binary, that draws
//! the ring, the members and their rates, and where a key lives. It is fed by a stream of
//! server-sent events (`/v1/dashboard/events`, a snapshot of the cluster each second) and
//! asks `/v1/cluster/ring` and `/v1/cluster/placement` as it needs.

use super::error::ApiError;
use super::keys::Params;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ringkv_coordinator::coordinator;
use ringkv_coordinator::node::Node;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The page: HTML, its style and its script in one file, no outside assets.
const PAGE: &str = include_str!("dashboard.html");

/// How often the stream sends a snapshot.
const EVERY: Duration = Duration::from_secs(1);

/// The most snapshots one stream sends before it ends (the browser's `EventSource`
/// reconnects at once): an hour at one a second, so no connection is held for ever.
const EVENTS_MAX: u32 = 3_600;

/// `GET /`: the dashboard page.
pub async fn page() -> Response {
    let mut response = PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page loads nothing from elsewhere and talks only to the node that served it.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    );
    response
}

/// Query parameters of `GET /v1/dashboard/events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// How many snapshots to send before ending (1 to [`EVENTS_MAX`], the default).
    events: Option<u32>,
}

/// `GET /v1/dashboard/events`: a server-sent event `snapshot` each second, holding the
/// cluster as `/v1/cluster` shows it (with each member's counters) and the time.
pub async fn events(
    State(node): State<Arc<Node>>,
    Params(params): Params<EventsParams>,
) -> Result<Response, ApiError> {
    let events = params.events.unwrap_or(EVENTS_MAX);
    if !(1..=EVENTS_MAX).contains(&events) {
        return Err(ApiError::bad_request(format!(
            "events must be from 1 to {EVENTS_MAX}"
        )));
    }
    let ticks = tokio::time::interval(EVERY);
    let stream = futures_util::stream::unfold((ticks, 0u32), move |(mut ticks, sent)| {
        let node = Arc::clone(&node);
        async move {
            if sent == events {
                return None;
            }
            ticks.tick().await;
            let snapshot = json!({
                "node_id": node.node_id,
                "time_ms": node.now_ms(),
                "members": super::ops::cluster_members(&node).await,
            });
            let event = Event::default()
                .event("snapshot")
                .data(snapshot.to_string());
            Some((Ok::<_, Infallible>(event), (ticks, sent + 1)))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Query parameters of `GET /v1/cluster/placement`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementParams {
    /// The key.
    key: String,
    /// Its keyspace (`default` if not named).
    keyspace: Option<String>,
}

/// `GET /v1/cluster/placement`: where a key lives: its ring position, its replicas in
/// preference order, and what each holds of it (`value`, `tombstone`, `none`, or
/// `unreachable`), asked of each replica itself.
pub async fn placement(
    State(node): State<Arc<Node>>,
    Params(params): Params<PlacementParams>,
) -> Result<Response, ApiError> {
    let keyspace = params.keyspace.unwrap_or_else(|| "default".into());
    let Some(def) = node.keyspaces.get(&keyspace) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_keyspace",
            format!("no keyspace {keyspace:?}"),
        ));
    };
    let key = params.key.into_bytes();
    if key.is_empty() {
        return Err(ApiError::bad_request("key must not be empty"));
    }
    let replicas = coordinator::placement::copies(&node, &def, &key).await?;
    let hash = ringkv_core::ring::key_hash(&key);
    Ok(Json(json!({
        "key": String::from_utf8_lossy(&key),
        "keyspace": keyspace,
        "hash": format!("{hash:016x}"),
        "position": hash as f64 / u64::MAX as f64,
        "replicas": replicas,
    }))
    .into_response())
}
