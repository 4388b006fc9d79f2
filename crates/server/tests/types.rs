//! Redis's data types over the Redis protocol and REST, on one in-process node. The command
//! tables were replayed against redis-server 7.0.15, whose replies they hold (except where a
//! line says ringkv differs, and why).

mod support;

use support::{bulk, ok, start_node, Reply, RespClient};

fn int(n: i64) -> Reply {
    Reply::Integer(n)
}

fn bulks(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|i| bulk(i)).collect())
}

fn wrongtype() -> Reply {
    Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into())
}

/// Runs each command in order and checks its reply.
async fn replay(c: &mut RespClient, table: &[(&[&str], Reply)]) {
    for (command, expected) in table {
        assert_eq!(&c.call(command).await, expected, "{command:?}");
    }
}

#[tokio::test]
async fn sets_answer_as_redis_does() {
    let node = start_node(|_| {}).await;
    let mut c = RespClient::connect(&node).await;
    replay(
        &mut c,
        &[
            (&["SADD", "s", "a", "b", "c", "a"], int(3)),
            (&["SADD", "s", "c", "d"], int(1)),
            (&["SCARD", "s"], int(4)),
            (&["SISMEMBER", "s", "a"], int(1)),
            (
                &["SMISMEMBER", "s", "a", "z"],
                Reply::Array(vec![int(1), int(0)]),
            ),
            (&["SREM", "s", "a", "z"], int(1)),
            (&["SMEMBERS", "s"], bulks(&["b", "c", "d"])),
            (&["SADD", "t", "c", "d", "e"], int(3)),
            (&["SINTER", "s", "t"], bulks(&["c", "d"])),
            (&["SUNION", "s", "t"], bulks(&["b", "c", "d", "e"])),
            (&["SDIFF", "s", "t"], bulks(&["b"])),
            (&["SINTERSTORE", "u", "s", "t"], int(2)),
            (&["SMEMBERS", "u"], bulks(&["c", "d"])),
            (&["SINTERCARD", "2", "s", "t", "LIMIT", "1"], int(1)),
            (&["SMOVE", "s", "t", "b"], int(1)),
            (&["SISMEMBER", "t", "b"], int(1)),
            (&["TYPE", "s"], Reply::Simple("set".into())),
            (&["GET", "s"], wrongtype()),
            (&["INCR", "s"], wrongtype()),
            (&["SREM", "s", "c", "d"], int(2)),
            // The last member gone, the key is gone.
            (&["EXISTS", "s"], int(0)),
            (&["TYPE", "s"], Reply::Simple("none".into())),
            (&["SET", "str", "x"], ok()),
            (&["SADD", "str", "a"], wrongtype()),
            (&["SCARD", "nothing"], int(0)),
        ],
    )
    .await;
}

#[tokio::test]
async fn hashes_answer_as_redis_does() {
    let node = start_node(|_| {}).await;
    let mut c = RespClient::connect(&node).await;
    replay(
        &mut c,
        &[
            (&["HSET", "h", "f", "1", "g", "x"], int(2)),
            (&["HSET", "h", "f", "2"], int(0)),
            (&["HGET", "h", "f"], bulk("2")),
            (&["HINCRBY", "h", "f", "5"], int(7)),
            (
                &["HINCRBY", "h", "g", "1"],
                Reply::Error("ERR hash value is not an integer".into()),
            ),
            (&["HINCRBYFLOAT", "h", "f", "0.5"], bulk("7.5")),
            (&["HSETNX", "h", "f", "9"], int(0)),
            (&["HSETNX", "h", "n", "9"], int(1)),
            (
                &["HMGET", "h", "f", "nope", "n"],
                Reply::Array(vec![bulk("7.5"), Reply::Nil, bulk("9")]),
            ),
            (&["HLEN", "h"], int(3)),
            (&["HSTRLEN", "h", "f"], int(3)),
            (&["HEXISTS", "h", "g"], int(1)),
            (&["HDEL", "h", "g", "nope"], int(1)),
            (&["HKEYS", "h"], bulks(&["f", "n"])),
            (&["HVALS", "h"], bulks(&["7.5", "9"])),
            (&["HGETALL", "h"], bulks(&["f", "7.5", "n", "9"])),
            (&["TYPE", "h"], Reply::Simple("hash".into())),
            (&["SADD", "h", "x"], wrongtype()),
        ],
    )
    .await;
}

#[tokio::test]
async fn sorted_sets_answer_as_redis_does() {
    let node = start_node(|_| {}).await;
    let mut c = RespClient::connect(&node).await;
    replay(
        &mut c,
        &[
            (&["ZADD", "z", "1", "a", "2", "b", "3", "c"], int(3)),
            (&["ZADD", "z", "CH", "5", "a", "2", "b"], int(1)),
            (&["ZADD", "z", "NX", "9", "a", "4", "d"], int(1)),
            (&["ZADD", "z", "XX", "GT", "0", "a"], int(0)),
            (&["ZADD", "z", "INCR", "1.5", "b"], bulk("3.5")),
            (
                &["ZADD", "z", "NX", "XX", "1", "a"],
                Reply::Error("ERR XX and NX options at the same time are not compatible".into()),
            ),
            (&["ZINCRBY", "z", "1.1", "c"], bulk("4.0999999999999996")),
            (&["ZSCORE", "z", "a"], bulk("5")),
            (
                &["ZMSCORE", "z", "a", "nope"],
                Reply::Array(vec![bulk("5"), Reply::Nil]),
            ),
            (&["ZCARD", "z"], int(4)),
            (&["ZRANGE", "z", "0", "-1"], bulks(&["b", "d", "c", "a"])),
            (
                &["ZRANGE", "z", "0", "1", "WITHSCORES"],
                bulks(&["b", "3.5", "d", "4"]),
            ),
            (
                &["ZRANGE", "z", "(4", "+inf", "BYSCORE", "LIMIT", "0", "1"],
                bulks(&["c"]),
            ),
            (
                &["ZRANGE", "z", "+inf", "-inf", "BYSCORE", "REV"],
                bulks(&["a", "c", "d", "b"]),
            ),
            (&["ZREVRANGE", "z", "0", "0"], bulks(&["a"])),
            (&["ZRANGEBYSCORE", "z", "-inf", "4"], bulks(&["b", "d"])),
            (&["ZCOUNT", "z", "(3.5", "5"], int(3)),
            (&["ZRANK", "z", "c"], int(2)),
            (&["ZREVRANK", "z", "c"], int(1)),
            (&["ZREM", "z", "d", "nope"], int(1)),
            (&["ZPOPMIN", "z"], bulks(&["b", "3.5"])),
            (
                &["ZPOPMAX", "z", "2"],
                bulks(&["a", "5", "c", "4.0999999999999996"]),
            ),
            (&["EXISTS", "z"], int(0)),
            (&["ZADD", "lex", "0", "a", "0", "b", "0", "c"], int(3)),
            (&["ZRANGEBYLEX", "lex", "(a", "[c"], bulks(&["b", "c"])),
            (&["ZLEXCOUNT", "lex", "-", "+"], int(3)),
            (&["ZADD", "w", "2", "b", "3", "x"], int(2)),
            (
                &["ZUNIONSTORE", "out", "2", "lex", "w", "WEIGHTS", "1", "2"],
                int(4),
            ),
            (
                &["ZRANGE", "out", "0", "-1", "WITHSCORES"],
                bulks(&["a", "0", "c", "0", "b", "4", "x", "6"]),
            ),
            (
                &["ZINTER", "2", "lex", "w", "WITHSCORES"],
                bulks(&["b", "2"]),
            ),
            (&["TYPE", "w"], Reply::Simple("zset".into())),
        ],
    )
    .await;
}

#[tokio::test]
async fn lists_counters_transactions_and_dumps_answer_as_redis_does() {
    let node = start_node(|_| {}).await;
    let mut c = RespClient::connect(&node).await;
    replay(
        &mut c,
        &[
            (&["RPUSH", "l", "a", "b", "c"], int(3)),
            (&["LPUSH", "l", "z"], int(4)),
            (&["LRANGE", "l", "0", "-1"], bulks(&["z", "a", "b", "c"])),
            (&["LINDEX", "l", "-1"], bulk("c")),
            (&["LSET", "l", "1", "A"], ok()),
            (
                &["LSET", "l", "9", "x"],
                Reply::Error("ERR index out of range".into()),
            ),
            (&["LINSERT", "l", "BEFORE", "b", "y"], int(5)),
            (&["LREM", "l", "0", "y"], int(1)),
            (&["LTRIM", "l", "1", "-1"], ok()),
            (&["LPOP", "l"], bulk("A")),
            (&["RPOP", "l", "5"], bulks(&["c", "b"])),
            (&["LPOP", "l"], Reply::Nil),
            (&["LLEN", "l"], int(0)),
            // A string holding an integer becomes a counter, which reads as a string.
            (&["SET", "n", "10"], ok()),
            (&["INCRBY", "n", "5"], int(15)),
            (&["GET", "n"], bulk("15")),
            (&["TYPE", "n"], Reply::Simple("string".into())),
            (&["APPEND", "n", "0"], int(3)),
            (&["INCR", "n"], int(151)),
            (&["SET", "word", "x"], ok()),
            (
                &["INCR", "word"],
                Reply::Error("ERR value is not an integer or out of range".into()),
            ),
            (&["MULTI"], ok()),
            (&["SADD", "ms", "a"], Reply::Simple("QUEUED".into())),
            (&["SCARD", "ms"], Reply::Simple("QUEUED".into())),
            (&["EXEC"], Reply::Array(vec![int(1), int(1)])),
            (&["EXEC"], Reply::Error("ERR EXEC without MULTI".into())),
            (&["HSET", "src", "f", "v"], int(1)),
            (&["EXPIRE", "src", "100"], int(1)),
            (&["RENAME", "src", "dst"], ok()),
            (&["HGET", "dst", "f"], bulk("v")),
            (&["TTL", "dst"], int(100)),
            (&["EXISTS", "src"], int(0)),
        ],
    )
    .await;
    // DUMP and RESTORE round-trip a typed value (ringkv's own payload, not Redis's RDB).
    let Reply::Bulk(payload) = c.call(&["DUMP", "dst"]).await else {
        panic!("DUMP answers a bulk string");
    };
    let payload = String::from_utf8_lossy(&payload).into_owned();
    let mut args: Vec<Vec<u8>> = vec![b"RESTORE".to_vec(), b"copy".to_vec(), b"0".to_vec()];
    args.push(match c.call(&["DUMP", "dst"]).await {
        Reply::Bulk(bytes) => bytes,
        other => panic!("{other:?}"),
    });
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    c.send_raw(&RespClient::encode(&refs)).await;
    assert_eq!(c.read().await, ok());
    assert_eq!(c.call(&["HGETALL", "copy"]).await, bulks(&["f", "v"]));
    c.send_raw(&RespClient::encode(&refs)).await;
    assert_eq!(
        c.read().await,
        Reply::Error("BUSYKEY Target key name already exists.".into())
    );
    let damaged = payload.replace('f', "g");
    assert_eq!(
        c.call(&["RESTORE", "other", "0", &damaged]).await,
        Reply::Error("ERR DUMP payload version or checksum are wrong".into())
    );
}

#[tokio::test]
async fn rest_applies_typed_operations_and_shows_typed_values_as_json() {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let node = start_node(|_| {}).await;
    let call = |method: &str, uri: &str, body: &str| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let router = ringkv_server::http::router(std::sync::Arc::clone(&node.running.node));
        async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default(),
            )
        }
    };
    let (status, body) = call("POST", "/v1/keys/visits", r#"{"incr": 5}"#).await;
    assert_eq!((status, &body["value"]), (200, &serde_json::json!(5)));
    let (_, body) = call("POST", "/v1/keys/visits", r#"{"incr": -2}"#).await;
    assert_eq!(body["value"], 3);
    let (status, body) = call(
        "POST",
        "/v1/keys/tags",
        r#"{"add": ["b", "a", "c"], "remove": ["c"]}"#,
    )
    .await;
    assert_eq!((status, body["type"].as_str()), (200, Some("set")));
    assert_eq!(body["value"], serde_json::json!(["a", "b"]));
    let (_, body) = call(
        "POST",
        "/v1/keys/user",
        r#"{"set": {"name": "ada", "age": "36"}, "delete": ["age"]}"#,
    )
    .await;
    assert_eq!(body["value"], serde_json::json!({"name": "ada"}));
    let (_, body) = call("POST", "/v1/keys/board", r#"{"zadd": {"x": 2.5, "y": 1}}"#).await;
    assert_eq!(
        body["value"],
        serde_json::json!([{"member": "y", "score": 1.0}, {"member": "x", "score": 2.5}])
    );
    let (status, body) = call("GET", "/v1/keys/tags", "").await;
    assert_eq!((status, body["type"].as_str()), (200, Some("set")));
    assert_eq!(body["value"], serde_json::json!(["a", "b"]));
    // The wrong type, a mixed body and an empty one are refused.
    let (status, body) = call("POST", "/v1/keys/tags", r#"{"incr": 1}"#).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("wrong_type"))
    );
    let (status, _) = call("POST", "/v1/keys/tags", r#"{"incr": 1, "add": ["x"]}"#).await;
    assert_eq!(status, 400);
    let (status, _) = call("POST", "/v1/keys/tags", r#"{"add": []}"#).await;
    assert_eq!(status, 400);
    // Through the Redis protocol, the same values.
    let mut c = RespClient::connect(&node).await;
    assert_eq!(c.call(&["GET", "visits"]).await, bulk("3"));
    assert_eq!(c.call(&["SMEMBERS", "tags"]).await, bulks(&["a", "b"]));
    assert_eq!(c.call(&["HGET", "user", "name"]).await, bulk("ada"));
}
