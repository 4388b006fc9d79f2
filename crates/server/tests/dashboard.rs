//! The web dashboard's server side: the page at `/`, its event stream and the placement of a
//! key, driven through a node's REST router.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use support::{start_node, RespClient, TestNode};
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
    for uri in [
        "/v1/chaos/node-1/kill",
        "/v1/chaos/node-1/isolate",
        "/v1/chaos/network/heal",
        "/v1/chaos/load/start",
    ] {
        let (status, _, body) = call(&node, "POST", uri, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
        assert!(body.contains("chaos_disabled"), "{body}");
    }
    // Nor does it let anyone cut its links.
    let links = r#"{"blocked": ["127.0.0.1:1"], "delay_ms": 100}"#;
    let (status, _, body) = call(&node, "PUT", "/v1/chaos/links", links).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(node.running.node.peers.faults.current().0.is_empty());
    let (status, _, _) = call(&node, "POST", "/v1/chaos/node-1/explode", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// Goal: each member's traffic (reads and writes per second, latency p50 and p99, the hottest
/// keys) reaches the dashboard's snapshots and `/metrics`, counted from both APIs. Method:
/// one node; through the Redis protocol 4,000 reads of `hot`, 1,000 of `warm`, 300 SETs of
/// distinct keys (pipelined, half the reads through the general command path with MGET),
/// and REST reads; then the member as `/v1/cluster` shows it after the next second's
/// summary.
#[tokio::test]
async fn each_members_rates_latencies_and_hot_keys_are_shown() {
    let node = start_node(|_| {}).await;
    let mut resp = RespClient::connect(&node).await;
    resp.call(&["SET", "hot", "1"]).await;
    resp.call(&["SET", "warm", "1"]).await;
    let mut pipeline = Vec::new();
    for i in 0..300 {
        let key = format!("cold{i}");
        pipeline.extend(RespClient::encode(&[b"SET", key.as_bytes(), b"v"]));
    }
    resp.send_raw(&pipeline).await;
    for _ in 0..300 {
        resp.read().await;
    }
    // 5,000 reads, pipelined: a fifth of `warm`; every other one through the general path
    // (MGET) rather than the GET fast path. One key in 64 is sampled, so `warm` is
    // sampled about 16 times.
    let mut reads = Vec::new();
    for i in 0..5000 {
        let key: &[u8] = if i % 5 == 4 { b"warm" } else { b"hot" };
        let command: &[u8] = if i % 2 == 0 { b"GET" } else { b"MGET" };
        reads.extend(RespClient::encode(&[command, key]));
    }
    resp.send_raw(&reads).await;
    for _ in 0..5000 {
        resp.read().await;
    }
    for _ in 0..20 {
        call(&node, "GET", "/v1/keys/hot", "").await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let member = loop {
        let (_, _, body) = call(&node, "GET", "/v1/cluster", "").await;
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        let member = view["members"][0].clone();
        if member["traffic"]["reads_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
        {
            break member;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic shown: {member}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let traffic = &member["traffic"];
    // A second's summary: all of it in one second, or split over two.
    let reads = traffic["reads_per_second"].as_f64().unwrap();
    assert!(reads > 0.0 && reads <= 5020.0 * 1.2, "{traffic}");
    let p50 = traffic["latency_p50_us"].as_u64().unwrap();
    let p99 = traffic["latency_p99_us"].as_u64().unwrap();
    assert!(p50 >= 1 && p50 <= p99, "{traffic}");
    let hot = traffic["hot_keys"].as_array().unwrap();
    assert_eq!(hot[0]["key"], "hot", "{traffic}");
    assert_eq!(hot[0]["keyspace"], "default");
    assert!(hot.iter().any(|h| h["key"] == "warm"), "{traffic}");
    let (_, _, metrics) = call(&node, "GET", "/metrics", "").await;
    assert!(
        metrics.contains(
            r#"ringkv_traffic_hot_key_requests_per_second{rank="1",keyspace="default",key="hot"}"#
        ),
        "{metrics}"
    );
    let requests = |kind: &str| -> f64 {
        let prefix = format!("ringkv_traffic_requests_total{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
    };
    // Every request so far has been summed by now, or the first summary would show none.
    assert!(requests("write") >= 302.0, "{metrics}");
    assert!(requests("read") >= 1.0, "{metrics}");
}
