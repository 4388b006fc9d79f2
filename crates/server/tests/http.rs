//! The REST API, exercised in process through the router (no sockets) with a manual clock.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ringkv_core::clock::ManualClock;
use ringkv_server::{Node, ServerConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let node = Node::open_with_clock(config, clock.clone()).unwrap();
    Api {
        router: ringkv_server::http::router(node),
        clock,
        _dir: dir,
    }
}

impl Api {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(body.into()).unwrap()).await
    }

    async fn put_json(&self, key: &str, body: Value) -> Answer {
        self.call(
            "PUT",
            &format!("/v1/keys/{key}"),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call("GET", uri, &[], Body::empty()).await
    }
}

/// A node listening on loopback ports chosen by the OS, for tests that need real sockets.
async fn start_listening(
    configure: impl FnOnce(&mut ServerConfig),
) -> (ringkv_server::RunningNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".into(),
        resp: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    };
    configure(&mut config);
    (ringkv_server::start(config).await.unwrap(), dir)
}

#[tokio::test]
async fn json_put_and_get_round_trip_with_version_headers() {
    let api = api();
    let put = api
        .put_json("greeting", json!({ "value": "hello", "ttl": 60 }))
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let version = put.json()["version"].as_str().unwrap().to_owned();
    assert_eq!(put.header("etag"), format!("\"{version}\""));
    let got = api.get("/v1/keys/greeting").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.json(),
        json!({ "key": "greeting", "value": "hello", "ttl": 60, "version": version })
    );
    assert!(!got.header("x-ringkv-context").is_empty());
    let binary = api
        .put_json("bin", json!({ "value": "AP8=", "encoding": "base64" }))
        .await;
    assert_eq!(binary.status, StatusCode::OK);
    assert_eq!(api.get("/v1/keys/bin").await.json()["value"], json!("AP8="));
}

#[tokio::test]
async fn raw_bytes_with_query_ttl_and_expiry() {
    let api = api();
    let put = api
        .call(
            "PUT",
            "/v1/keys/raw?ttl=1",
            &[("content-type", "application/octet-stream")],
            vec![0u8, 1, 255],
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let got = api
        .call(
            "GET",
            "/v1/keys/raw",
            &[("accept", "application/octet-stream")],
            Body::empty(),
        )
        .await;
    assert_eq!(got.body, vec![0u8, 1, 255]);
    assert_eq!(got.header("content-type"), "application/octet-stream");
    api.clock.advance(999);
    assert_eq!(api.get("/v1/keys/raw").await.status, StatusCode::OK);
    api.clock.advance(1);
    let expired = api.get("/v1/keys/raw").await;
    assert_eq!(expired.status, StatusCode::NOT_FOUND);
    assert_eq!(expired.error_code(), "not_found");
}

#[tokio::test]
async fn preconditions_create_only_and_compare_and_set() {
    let api = api();
    let create = |value: &str| {
        let body = json!({ "value": value }).to_string();
        api.call(
            "PUT",
            "/v1/keys/k",
            &[("content-type", "application/json"), ("if-none-match", "*")],
            body,
        )
    };
    assert_eq!(create("first").await.status, StatusCode::OK);
    assert_eq!(
        create("second").await.status,
        StatusCode::PRECONDITION_FAILED
    );
    let etag = api.get("/v1/keys/k").await.header("etag");
    let cas = |value: &str, etag: &str| {
        let body = json!({ "value": value }).to_string();
        let headers = [("content-type", "application/json"), ("if-match", etag)];
        let request = Request::builder().method("PUT").uri("/v1/keys/k");
        let request = headers
            .iter()
            .fold(request, |r, (n, v)| r.header(*n, *v))
            .body(Body::from(body))
            .unwrap();
        api.send(request)
    };
    let swapped = cas("third", &etag).await;
    assert_eq!(swapped.status, StatusCode::OK);
    let stale = cas("fourth", &etag).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.error_code(), "precondition_failed");
    assert_eq!(
        stale.header("etag"),
        swapped.header("etag"),
        "a failed CAS reports the current version"
    );
    assert_eq!(api.get("/v1/keys/k").await.json()["value"], json!("third"));
    let missing = api
        .call(
            "DELETE",
            "/v1/keys/nope",
            &[("if-match", "*")],
            Body::empty(),
        )
        .await;
    assert_eq!(missing.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn delete_is_idempotent() {
    let api = api();
    api.put_json("k", json!({ "value": "v" })).await;
    let first = api.call("DELETE", "/v1/keys/k", &[], Body::empty()).await;
    assert_eq!(
        (first.status, first.json()["deleted"].clone()),
        (StatusCode::OK, json!(true))
    );
    let second = api.call("DELETE", "/v1/keys/k", &[], Body::empty()).await;
    assert_eq!(
        (second.status, second.json()["deleted"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert_eq!(api.get("/v1/keys/k").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let api = api();
    let cases: Vec<(Answer, StatusCode, &str)> = vec![
        (
            api.call(
                "PUT",
                "/v1/keys/k",
                &[("content-type", "application/json")],
                "{not json",
            )
            .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.put_json("k", json!({ "value": "v", "ttl": 0 })).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.put_json("k", json!({ "value": "v", "ttl": "soon" }))
                .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.put_json("k", json!({ "value": "v", "colour": "red" }))
                .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.put_json("k", json!({ "value": 5 })).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.call(
                "PUT",
                "/v1/keys/k?ttl=-1",
                &[("content-type", "application/octet-stream")],
                "v",
            )
            .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.call("PATCH", "/v1/keys/k", &[], Body::empty()).await,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            api.call(
                "PUT",
                "/v1/keys/k",
                &[("content-type", "application/x-www-form-urlencoded")],
                "a=b",
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            api.get("/v2/nothing").await,
            StatusCode::NOT_FOUND,
            "no_such_route",
        ),
        (
            api.get("/v1/keys?limit=0").await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.get("/v1/keys?cursor=%%%").await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            api.call(
                "PUT",
                "/v1/keys/k",
                &[
                    ("content-type", "application/json"),
                    ("if-match", "not-an-etag"),
                ],
                "{\"value\":\"v\"}",
            )
            .await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (index, (answer, status, code)) in cases.iter().enumerate() {
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (*status, *code),
            "case {index}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert!(!answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn limits_on_value_and_key_size() {
    let api = api();
    let too_large = vec![b'x'; ringkv_core::limits::VALUE_BYTES_MAX + 1];
    let answer = api
        .call(
            "PUT",
            "/v1/keys/big",
            &[("content-type", "application/octet-stream")],
            too_large,
        )
        .await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large")
    );
    let largest = vec![b'x'; ringkv_core::limits::VALUE_BYTES_MAX];
    let answer = api
        .call(
            "PUT",
            "/v1/keys/big",
            &[("content-type", "application/octet-stream")],
            largest,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "a 10 MiB value is accepted");
}

#[tokio::test]
async fn a_key_over_the_limit_is_refused_on_the_wire() {
    // A path that long cannot even be a URI in process, so this one goes over a socket.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (running, _dir) = start_listening(|_| {}).await;
    let mut stream = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    let key = "k".repeat(ringkv_core::limits::KEY_BYTES_MAX + 1);
    let request = format!(
        "PUT /v1/keys/{key} HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\nv"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut reply),
    )
    .await
    .unwrap()
    .unwrap();
    let status_line = String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        status_line.contains(" 414 ") || status_line.contains(" 400 "),
        "{status_line}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn listing_pages_through_keys_in_order() {
    let api = api();
    for i in (0..25).rev() {
        api.put_json(&format!("user{i:02}"), json!({ "value": "v" }))
            .await;
    }
    api.put_json("other", json!({ "value": "v" })).await;
    let mut keys = Vec::new();
    let mut uri = "/v1/keys?prefix=user&limit=10".to_string();
    for _ in 0..10 {
        let page = api.get(&uri).await.json();
        keys.extend(
            page["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_owned()),
        );
        match page["cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/keys?prefix=user&limit=10&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("user{i:02}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn metrics_count_requests_and_expose_store_figures() {
    let api = api();
    api.put_json("k", json!({ "value": "v" })).await;
    api.get("/v1/keys/k").await;
    api.get("/v1/keys/missing").await;
    let text = String::from_utf8(api.get("/metrics").await.body).unwrap();
    for expected in [
        "ringkv_http_requests_total{operation=\"put\",status=\"200\"} 1",
        "ringkv_http_requests_total{operation=\"get\",status=\"404\"} 1",
        "ringkv_http_request_seconds_count{operation=\"get\"} 2",
        "ringkv_store_corruption_total 0",
        "ringkv_store_disk_bytes ",
        "ringkv_store_engine_entries ",
        "ringkv_store_changes_refused_at_open 0",
        "ringkv_cluster_hints_stored_total 0",
        "ringkv_cluster_hints_refused_total 0",
        "ringkv_cluster_hints_pending_all 0",
        "ringkv_cluster_anti_entropy_exchanges_total 0",
        "ringkv_cluster_anti_entropy_bytes_total 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(api.get("/healthz").await.json()["status"], json!("ok"));
}

/// Goal: `docs/metrics.md` stays the complete table of the metrics a node serves. Method:
/// every metric a node's `/metrics` describes (`# HELP` lines) must have a row there.
#[tokio::test]
async fn every_metric_a_node_serves_is_in_the_documented_table() {
    let api = api();
    api.put_json("k", json!({ "value": "v" })).await;
    let text = String::from_utf8(api.get("/metrics").await.body).unwrap();
    let table = include_str!("../../../docs/metrics.md");
    let served: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP "))
        .filter_map(|help| help.split_whitespace().next())
        .collect();
    assert!(served.len() > 20, "{text}");
    for name in served {
        assert!(
            table.contains(&format!("| `{name}` |")),
            "{name} is served but not in docs/metrics.md"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_the_router_serves() {
    let api = api();
    let document = api.get("/v1/openapi.json").await.json();
    assert_eq!(document["openapi"], json!("3.0.3"));
    let paths = document["paths"].as_object().unwrap();
    for operation in ringkv_server::http::openapi::OPERATIONS {
        assert!(
            paths[operation.path][operation.method].is_object(),
            "{} {}",
            operation.method,
            operation.path
        );
        // The router serves the documented path (never the fallback's no_such_route).
        let mut uri = operation
            .path
            .replace("{key}", "some-key")
            .replace("{keyspace}", "default");
        if operation.id == "dashboardEvents" {
            // A stream lasts an hour unless told otherwise.
            uri.push_str("?events=1");
        }
        let answer = api
            .call(
                &operation.method.to_uppercase(),
                &uri,
                &[("content-type", "application/json")],
                "{\"value\":\"v\"}",
            )
            .await;
        assert_ne!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert!(
            answer.status != StatusCode::NOT_FOUND || answer.error_code().ends_with("not_found"),
            "{uri}: {}",
            answer.error_code()
        );
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_connections_are_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (running, _dir) = start_listening(|config| {
        config.connections_max = 1;
        config.request_timeout_ms = 300;
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    // While the silent client holds the only slot, a second client is not served...
    let mut waiting = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut early = [0u8; 1];
    let served_early = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        waiting.read(&mut early),
    )
    .await;
    assert!(
        served_early.is_err(),
        "the second connection waited for a slot"
    );
    // ...until the silent one is timed out, after which it is.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        silent.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent client was disconnected"
    );
    let mut reply = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        waiting.read_to_end(&mut reply),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_gets_503_instead_of_an_unbounded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        http_in_flight_max: 2,
        ..ServerConfig::default()
    };
    let node = Node::open(config).unwrap();
    let router = ringkv_server::http::router(node);
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let router = router.clone();
            tokio::spawn(async move {
                let request = Request::builder()
                    .method("PUT")
                    .uri(format!("/v1/keys/flood{i}"))
                    .header("content-type", "application/json")
                    .body(Body::from("{\"value\":\"v\"}"))
                    .unwrap();
                router.oneshot(request).await.unwrap().status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::OK));
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE));
}

#[tokio::test]
async fn keyspaces_are_created_and_a_siblings_keyspace_keeps_concurrent_writes() {
    let api = api();
    let created = api
        .call(
            "PUT",
            "/v1/ks/carts",
            &[],
            r#"{"replication": 3, "conflict": "siblings"}"#,
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    assert_eq!(created.json()["conflict"], json!("siblings"));
    assert_eq!(
        api.get("/v1/ks/carts").await.json()["replication"],
        json!(3)
    );
    let names: Vec<Value> = api.get("/v1/ks").await.json()["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("carts"), json!("default")]);

    // Two writes without a context become siblings; a read answers 300 with both and one
    // context; a write with that context resolves them.
    let put = |value: &str, context: Option<String>| {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(context.map(|c| ("x-ringkv-context".to_string(), c)));
        let request = Request::builder()
            .method("PUT")
            .uri("/v1/ks/carts/keys/alice");
        let request = headers.iter().fold(request, |r, (n, v)| r.header(n, v));
        api.send(
            request
                .body(Body::from(json!({ "value": value }).to_string()))
                .unwrap(),
        )
    };
    assert_eq!(put("apples", None).await.status, StatusCode::OK);
    assert_eq!(put("pears", None).await.status, StatusCode::OK);
    let both = api.get("/v1/ks/carts/keys/alice").await;
    assert_eq!(both.status, StatusCode::MULTIPLE_CHOICES);
    let body = both.json();
    let values: Vec<Value> = body["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].clone())
        .collect();
    assert_eq!(values, vec![json!("apples"), json!("pears")]);
    let context = body["context"].as_str().unwrap().to_owned();
    assert_eq!(both.header("x-ringkv-context"), context);
    assert_eq!(
        put("apples,pears", Some(context)).await.status,
        StatusCode::OK
    );
    let resolved = api.get("/v1/ks/carts/keys/alice").await;
    assert_eq!(
        (resolved.status, resolved.json()["value"].clone()),
        (StatusCode::OK, json!("apples,pears"))
    );

    // In the default (lww) keyspace the later write simply wins.
    api.put_json("alice", json!({ "value": "first" })).await;
    api.put_json("alice", json!({ "value": "second" })).await;
    assert_eq!(
        api.get("/v1/keys/alice").await.json()["value"],
        json!("second")
    );
    assert_eq!(
        api.get("/v1/ks/default/keys/alice").await.json()["value"],
        json!("second")
    );

    let missing = api.get("/v1/ks/nope/keys/k").await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (StatusCode::NOT_FOUND, "keyspace_not_found")
    );
    let change = api
        .call("PUT", "/v1/ks/carts", &[], r#"{"conflict": "lww"}"#)
        .await;
    assert_eq!(change.status, StatusCode::CONFLICT);
    let bad = api.call("PUT", "/v1/ks/bad!name", &[], "{}").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    for refused in [
        r#"{"mode": "strong", "conflict": "siblings"}"#,
        r#"{"mode": "strong", "shards": 0}"#,
        r#"{"mode": "leaderless", "shards": 4}"#,
        r#"{"mode": "eventual"}"#,
    ] {
        let answer = api.call("PUT", "/v1/ks/ledger", &[], refused).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{refused}");
    }
    let listed = api.get("/v1/ks/carts/keys?prefix=al").await.json();
    assert_eq!(listed["keys"], json!(["alice"]));
}

#[tokio::test]
async fn keyspace_definitions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let request: ringkv_server::keyspaces::KeyspaceRequest =
        serde_json::from_str(r#"{"replication": 2, "conflict": "siblings"}"#).unwrap();
    {
        let node = Node::open(config.clone()).unwrap();
        node.keyspaces
            .define(node.local_store(), "carts", request, |_| Vec::new())
            .unwrap();
    }
    let node = Node::open(config).unwrap();
    let def = node
        .keyspaces
        .get("carts")
        .expect("the definition was reloaded");
    assert_eq!(
        (def.replication, def.conflict),
        (2, ringkv_server::keyspaces::Conflict::Siblings)
    );
}

#[tokio::test]
async fn consistency_parameters_are_checked_and_met_by_a_single_node() {
    let api = api();
    let put = |query: &str| {
        let uri = format!("/v1/keys/k{query}");
        let request = Request::builder()
            .method("PUT")
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"value":"v"}"#))
            .unwrap();
        api.send(request)
    };
    assert_eq!(put("?consistency=quorum").await.status, StatusCode::OK);
    assert_eq!(put("?w=3").await.status, StatusCode::OK);
    for bad in ["?consistency=most", "?w=0", "?w=4", "?w=x", "?colour=red"] {
        let answer = put(bad).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad}"
        );
    }
    assert_eq!(
        api.get("/v1/keys/k?consistency=all&r=2").await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/keys/k?local=true").await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/keys/k?local=maybe").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(api.get("/v1/keys/k?r=9").await.error_code(), "bad_request");
    assert_eq!(
        api.call("DELETE", "/v1/keys/k?consistency=one", &[], Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/v1/keys?prefix=k&bogus=1").await.error_code(),
        "bad_request"
    );
}
