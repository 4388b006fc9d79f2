//! The web dashboard's server side: the page at `/`, its event stream and the placement of a
//! key, driven through a node's REST router.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use support::{start_node, TestNode};
use tower::ServiceExt;

/// Sends one request to `node`'s router; the status, the content type and the whole body.
async fn call(
    node: &TestNode,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, String, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    let router = ringkv_server::http::router(Arc::clone(&node.running.node));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// Goal: every node serves the dashboard page at `/`, self-contained (no outside assets) and
/// wired to the event stream and the placement endpoint.
#[tokio::test]
async fn the_page_is_served_at_the_root_with_nothing_from_elsewhere() {
    let node = start_node(|_| {}).await;
    let (status, content_type, page) = call(&node, "GET", "/", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    for part in [
        "<svg id=\"ring\"",
        "new EventSource(\"/v1/dashboard/events\")",
        "/v1/cluster/placement?",
        "/v1/cluster/ring",
    ] {
        assert!(page.contains(part), "the page lacks {part}");
    }
    assert!(!page.contains("<script src"), "no outside scripts");
    assert!(
        !page.contains("rel=\"stylesheet\""),
        "no outside style sheets"
    );
    assert!(!page.contains("href=\"http"), "no links elsewhere");
}

/// Goal: the event stream sends a snapshot each second, holding every member with its
/// counters, from which the page works out rates. Method: two snapshots asked for, a write
/// made before; each is an SSE event `snapshot` whose data is that JSON.
#[tokio::test]
async fn the_event_stream_sends_snapshots_with_each_members_counters() {
    let node = start_node(|_| {}).await;
    let (status, _, _) = call(&node, "PUT", "/v1/keys/k", r#"{"value": "v"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let started = std::time::Instant::now();
    let (status, content_type, body) =
        call(&node, "GET", "/v1/dashboard/events?events=2", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let snapshots: Vec<serde_json::Value> = body
        .split("\n\n")
        .filter(|event| event.lines().any(|line| line == "event: snapshot"))
        .map(|event| {
            let data = event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .expect("an event has data");
            serde_json::from_str(data).unwrap()
        })
        .collect();
    assert_eq!(snapshots.len(), 2, "{body}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "one a second"
    );
    let first = &snapshots[0];
    assert_eq!(first["node_id"], node.running.node.node_id.as_str());
    let members = first["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert!(
        members[0]["counters"]["writes"].as_u64().unwrap() >= 1,
        "{first}"
    );
    assert!(snapshots[1]["time_ms"].as_u64() > first["time_ms"].as_u64());

    let (status, _, _) = call(&node, "GET", "/v1/dashboard/events?events=0", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Goal: the placement of a key names its ring position and replicas, and what each holds:
/// a value, a tombstone, or nothing. Method: one node (its own only replica); a key written,
/// then deleted, and a key never written; an unknown keyspace.
#[tokio::test]
async fn placement_says_where_a_key_lives_and_what_each_replica_holds() {
    let node = start_node(|_| {}).await;
    let placement = async |uri: &str| {
        let (status, _, body) = call(&node, "GET", uri, "").await;
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    call(&node, "PUT", "/v1/keys/here", r#"{"value": "v"}"#).await;
    let (status, here) = placement("/v1/cluster/placement?key=here").await;
    assert_eq!(status, StatusCode::OK);
    let hash = ringkv_core::ring::key_hash(b"here");
    assert_eq!(here["hash"], format!("{hash:016x}"));
    let position = here["position"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&position));
    assert_eq!(
        here["replicas"][0]["id"],
        node.running.node.node_id.as_str()
    );
    assert_eq!(here["replicas"][0]["copy"], "value");

    call(&node, "DELETE", "/v1/keys/here", "").await;
    let (_, deleted) = placement("/v1/cluster/placement?key=here").await;
    assert_eq!(deleted["replicas"][0]["copy"], "tombstone");
    let (_, never) = placement("/v1/cluster/placement?key=never&keyspace=default").await;
    assert_eq!(never["replicas"][0]["copy"], "none");
    let (status, _) = placement("/v1/cluster/placement?key=x&keyspace=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in ["/v1/cluster/placement", "/v1/cluster/placement?key="] {
        let (status, _) = placement(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// Goal: chaos actions exist only in dev clusters: a node started any other way says chaos
/// mode is off and refuses every action, and an unknown action is a bad request.
#[tokio::test]
async fn a_node_not_started_by_dev_cluster_refuses_chaos_actions() {
    let node = start_node(|_| {}).await;
    let (status, _, body) = call(&node, "GET", "/v1/chaos", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["enabled"],
        false
    );
    for uri in ["/v1/chaos/node-1/kill", "/v1/chaos/load/start"] {
        let (status, _, body) = call(&node, "POST", uri, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
        assert!(body.contains("chaos_disabled"), "{body}");
    }
    let (status, _, _) = call(&node, "POST", "/v1/chaos/node-1/explode", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
