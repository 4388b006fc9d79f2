//! Hostile and buggy clients against one in-process node: replies far larger than their
//! requests, clients that read nothing, and clients that trickle their requests a byte at a
//! time. Each test checks the node's memory or connections stay bounded and that other
//! clients are still served.

mod support;

use ringkv_server::resp::metrics::Disconnect;
use std::time::{Duration, Instant};
use support::{bulk, ok, start_node, Reply, RespClient, TestNode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1 << 20;

/// Polls `done` every 20 ms for up to 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reply_bytes(node: &TestNode) -> u64 {
    node.running.resp_metrics.reply_bytes.get()
}

fn disconnects(node: &TestNode, reason: Disconnect) -> u64 {
    node.running.resp_metrics.disconnects(reason)
}

/// `MGET big big ...` with `count` copies of the key.
fn mget_big(count: usize) -> Vec<u8> {
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], count));
    RespClient::encode(&args)
}

/// Goal: a small request cannot make the node hold a reply past the bounds. Method: a 1 MiB
/// value; `MGET` of it past the connection's bound is refused and its client disconnected;
/// a client that asks for a reply within its bound and reads nothing holds it, so a second
/// such client passes the node's bound and is refused; the first then reads its whole reply
/// intact, and the memory held returns to zero.
#[tokio::test]
async fn replies_are_bounded_per_connection_and_per_node() {
    let node = start_node(|config| {
        config.resp_reply_bytes_max = 32 * MIB as u64;
        config.resp_replies_bytes_max = 48 * MIB as u64;
    })
    .await;
    let value = vec![b'v'; MIB];
    let mut writer = RespClient::connect(&node).await;
    writer
        .send_raw(&RespClient::encode(&[b"SET", b"big", &value]))
        .await;
    assert_eq!(writer.read().await, ok());

    let mut greedy = RespClient::connect(&node).await;
    greedy.send_raw(&mget_big(40)).await;
    assert!(
        matches!(greedy.read().await, Reply::Error(e) if e.contains("resp_reply_bytes_max")),
        "a reply past the connection's bound is refused"
    );
    assert!(greedy.closed().await, "and its client disconnected");
    assert_eq!(disconnects(&node, Disconnect::ReplyLimit), 1);

    // Far more than the kernel's socket buffers take: most of it waits for the client.
    let mut holding = RespClient::connect(&node).await;
    holding.send_raw(&mget_big(30)).await;
    eventually("the unread reply is held", || {
        reply_bytes(&node) >= 30 * MIB as u64
    })
    .await;
    let mut second = RespClient::connect(&node).await;
    second.send_raw(&mget_big(30)).await;
    assert!(
        matches!(second.read().await, Reply::Error(e) if e.contains("resp_replies_bytes_max")),
        "the node's bound holds across connections"
    );
    assert!(second.closed().await);

    let Reply::Array(values) = holding.read().await else {
        panic!("MGET answers an array");
    };
    assert_eq!(values.len(), 30);
    assert!(values.iter().all(|v| *v == Reply::Bulk(value.clone())));
    eventually("the reply's memory is given back", || {
        reply_bytes(&node) == 0
    })
    .await;
    assert_eq!(
        writer.call(&["GET", "big"]).await,
        Reply::Bulk(value),
        "the node serves on"
    );
}

/// Goal: a client that asks for a large reply and never reads it does not hold the reply's
/// memory (or its connection) for ever. Method: a short `request_timeout_ms`, an unread
/// `MGET`; the node disconnects the client and gives the memory back.
#[tokio::test]
async fn a_client_that_reads_nothing_of_its_reply_is_disconnected() {
    let node = start_node(|config| config.request_timeout_ms = 500).await;
    let mut writer = RespClient::connect(&node).await;
    writer
        .send_raw(&RespClient::encode(&[b"SET", b"big", &vec![b'v'; MIB]]))
        .await;
    assert_eq!(writer.read().await, ok());
    let mut stalled = TcpStream::connect(node.running.resp_addr).await.unwrap();
    stalled.write_all(&mget_big(40)).await.unwrap();
    eventually("the reader is disconnected", || {
        disconnects(&node, Disconnect::ReplyStalled) == 1
    })
    .await;
    eventually("its reply's memory is given back", || {
        reply_bytes(&node) == 0
    })
    .await;
    assert_eq!(writer.call(&["PING"]).await, Reply::Simple("PONG".into()));
}

/// Goal: `request_timeout_ms` bounds the whole time to send one Redis-protocol request, not
/// the gap between its bytes. Method: a request sent a byte every 50 ms, which would take
/// 3 s; the node closes the connection after the 400 ms bound, and counts it.
#[tokio::test]
async fn a_request_trickled_a_byte_at_a_time_is_cut_off() {
    let node = start_node(|config| config.request_timeout_ms = 400).await;
    let mut slow = TcpStream::connect(node.running.resp_addr).await.unwrap();
    let request = RespClient::encode(&[b"SET", b"slow-key", b"0123456789012345678901234567"]);
    let started = Instant::now();
    let mut cut_off = false;
    for byte in request.chunks(1) {
        if slow.write_all(byte).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(cut_off || matches!(closed, Ok(Ok(0)) | Ok(Err(_))));
    assert!(rest.is_empty(), "the trickled request was never run");
    assert_eq!(disconnects(&node, Disconnect::RequestTimeout), 1);
    let mut c = RespClient::connect(&node).await;
    assert_eq!(c.call(&["GET", "slow-key"]).await, Reply::Nil);
    assert!(started.elapsed() < Duration::from_secs(30));

    // A steady pipeline of whole requests is not cut off, however long it runs.
    for i in 0..20 {
        assert_eq!(c.call(&["SET", "k", &i.to_string()]).await, ok());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(c.call(&["GET", "k"]).await, bulk("19"));
}

/// Goal: over REST too, clients that trickle their requests cannot hold every connection.
/// Method: two connections allowed, both taken by clients sending a header byte every 100 ms;
/// a third client is still served once the node cuts them off at `request_timeout_ms`.
#[tokio::test]
async fn rest_clients_that_trickle_requests_cannot_lock_others_out() {
    let node = start_node(|config| {
        config.connections_max = 2;
        config.request_timeout_ms = 500;
    })
    .await;
    let address = node.running.http_addr;
    let trickle = |_| {
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            for byte in request.chunks(1) {
                if stream.write_all(byte).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let slow: Vec<_> = (0..2).map(trickle).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut other = TcpStream::connect(address).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut reply))
        .await
        .expect("served within a few seconds while the slow clients trickle")
        .unwrap();
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    for task in slow {
        task.abort();
    }
}

/// Goal: an unknown command's error quotes at most 128 bytes of its arguments, as Redis's
/// does, whatever the request holds; an inline command with an unclosed quote gets Redis's
/// protocol error and its connection is closed.
#[tokio::test]
async fn error_replies_stay_small_and_unclosed_quotes_are_refused() {
    let node = start_node(|_| {}).await;
    let mut c = RespClient::connect(&node).await;
    let argument = vec![b'a'; 1000];
    let mut request: Vec<&[u8]> = vec![b"NOSUCHCOMMAND"];
    request.extend(std::iter::repeat_n(&argument[..], 10_000));
    c.send_raw(&RespClient::encode(&request)).await;
    let Reply::Error(error) = c.read().await else {
        panic!("an error reply");
    };
    let quoted = error
        .split_once("with args beginning with: ")
        .expect("Redis's wording")
        .1;
    assert!(quoted.starts_with("'aaaa"), "{error}");
    assert!(quoted.len() <= 128 + 3, "{} bytes quoted", quoted.len());

    c.send_raw(b"SET k \"open\r\n").await;
    assert_eq!(
        c.read().await,
        Reply::Error("ERR Protocol error: unbalanced quotes in request".into())
    );
    assert!(c.closed().await);
}

/// Goal: a keyspace definition heard from a peer cannot carry a version from which the next
/// change would wrap to zero. Method: the node is handed a definition of version u64::MAX, as
/// a forged cluster frame would bring: it is refused, and the keyspace can still be changed.
#[tokio::test]
async fn a_definition_version_past_the_highest_is_refused() {
    use ringkv_server::keyspaces::DEFINITION_VERSION_MAX;
    let node = start_node(|_| {}).await;
    let (keyspaces, store) = (
        &node.running.node.keyspaces,
        node.running.node.local_store(),
    );
    let forged = |version: u64| {
        serde_json::from_value(serde_json::json!({
            "name": "forged", "replication": 1, "conflict": "lww", "version": version
        }))
        .unwrap()
    };
    assert!(keyspaces.adopt(store, forged(u64::MAX)).is_err());
    assert!(keyspaces
        .adopt(store, forged(DEFINITION_VERSION_MAX))
        .unwrap());
    let request = serde_json::from_value(serde_json::json!({"replication": 2})).unwrap();
    assert!(
        keyspaces
            .define(store, "forged", request, |_| Vec::new())
            .is_err(),
        "no change can take a version past the highest"
    );
    assert_eq!(
        keyspaces.get("forged").unwrap().version,
        DEFINITION_VERSION_MAX
    );
}
