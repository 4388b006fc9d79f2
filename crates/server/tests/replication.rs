//! Replicated reads and writes between real nodes in one process: gossip over UDP and the
//! cluster RPC over TCP on loopback, client requests driven through each node's REST router
//! (and its Redis port). Every wait is bounded.

mod support;

use axum::http::StatusCode;
use std::collections::BTreeSet;
use support::cluster::{
    call, cluster, cluster_with, eventually, partition, put, restart, stop, view,
};
use support::{start_node, RespClient, TestNode};

/// Creates keyspace `name` (N = 3, concurrent writes kept as siblings) through the first of
/// `nodes`, and waits until every one of them has its definition.
async fn create_siblings_keyspace(nodes: &[TestNode], name: &str) {
    let uri = format!("/v1/ks/{name}");
    let body = r#"{"replication": 3, "conflict": "siblings"}"#;
    let created = call(&nodes[0], "PUT", &uri, &[], body).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    eventually("the definition reaches every node", async || {
        let mut all = true;
        for node in nodes {
            all &= call(node, "GET", &uri, &[], "").await.body["conflict"] == "siblings";
        }
        all
    })
    .await;
}

/// Which nodes hold a local copy of `key` in the default keyspace.
async fn holders(nodes: &[TestNode], key: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for node in nodes {
        let answer = call(node, "GET", &format!("/v1/keys/{key}?local=true"), &[], "").await;
        if answer.status == StatusCode::OK {
            found.insert(node.running.node.node_id.clone());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_writes_through_one_node_are_read_through_another_and_land_on_their_replicas() {
    let nodes = cluster(4).await;
    for i in 0..40 {
        let answer = put(
            &nodes[0],
            &format!("/v1/keys/k{i}?consistency=quorum"),
            &format!("v{i}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    for i in 0..40 {
        let answer = call(
            &nodes[1],
            "GET",
            &format!("/v1/keys/k{i}?consistency=quorum"),
            &[],
            "",
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "k{i}: {:?}", answer.body);
        assert_eq!(answer.body["value"], format!("v{i}"));
    }
    // Each key ends up on exactly N = 3 of the 4 nodes: the ones its preference list names.
    for i in 0..40 {
        let key = format!("k{i}");
        let expected: BTreeSet<String> = view(&nodes[2])
            .ring
            .preference_list(key.as_bytes(), 3)
            .into_iter()
            .map(|member| member.id.clone())
            .collect();
        eventually("the write reaches all three replicas", async || {
            holders(&nodes, &key).await == expected
        })
        .await;
    }
    // A listing through any node sees every key once, in order.
    let listed = call(&nodes[3], "GET", "/v1/keys?prefix=k&limit=1000", &[], "").await;
    let keys: Vec<String> = serde_json::from_value(listed.body["keys"].clone()).unwrap();
    let mut expected: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    expected.sort();
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_node_down_quorum_succeeds_and_all_fails_naming_how_many_answered() {
    let mut nodes = cluster(3).await;
    let stopped = nodes.pop().unwrap();
    let stopped_id = stopped.running.node.node_id.clone();
    stopped.running.shutdown().await;
    eventually("the others see the stopped node down", async || {
        nodes.iter().all(|node| view(node).is_down(&stopped_id))
    })
    .await;

    let answer = put(&nodes[0], "/v1/keys/survivor?consistency=quorum", "yes").await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let answer = call(
        &nodes[1],
        "GET",
        "/v1/keys/survivor?consistency=quorum",
        &[],
        "",
    )
    .await;
    assert_eq!(answer.body["value"], "yes");

    let answer = put(&nodes[0], "/v1/keys/everyone?consistency=all", "no").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["error"]["code"], "unavailable");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("2 of the 3 replicas needed answered"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{stopped_id} is down")),
        "{message}"
    );

    // A key this coordinator does not hold, whose first replica is the stopped node: it is
    // tried as the lead and again as a follower, and the error names it once. (Without
    // `pw`, the coordinator, which is not one of its replicas, would keep a hint for it and
    // count as the second acknowledgement: a sloppy quorum.)
    let pair = call(
        &nodes[0],
        "PUT",
        "/v1/ks/pair",
        &[],
        r#"{"replication": 2}"#,
    )
    .await;
    assert_eq!(pair.status, StatusCode::OK, "{:?}", pair.body);
    eventually("the definition reaches the other node", async || {
        call(&nodes[1], "GET", "/v1/ks/pair", &[], "").await.status == StatusCode::OK
    })
    .await;
    let coordinator_id = &nodes[0].running.node.node_id;
    let ring_view = view(&nodes[0]);
    let key = (0..10_000)
        .map(|i| format!("p{i}"))
        .find(|key| {
            let replicas = ring_view.ring.preference_list(key.as_bytes(), 2);
            replicas[0].id == stopped_id && replicas[1].id != *coordinator_id
        })
        .expect("some key starts at the stopped node");
    let answer = put(&nodes[0], &format!("/v1/ks/pair/keys/{key}?w=2&pw=2"), "x").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message.matches(&format!("{stopped_id} is down")).count(),
        1,
        "{message}"
    );
    let answer = call(&nodes[1], "GET", "/v1/keys/survivor?r=3", &[], "").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answer.body
    );

    // The Redis protocol: a per-connection consistency, and -UNAVAILABLE when it cannot be met.
    let mut redis = RespClient::connect(&nodes[1]).await;
    assert_eq!(redis.call(&["SET", "r", "1"]).await, support::ok());
    assert_eq!(
        redis.call(&["RINGKV.CONSISTENCY", "ALL"]).await,
        support::ok()
    );
    assert_eq!(redis.call(&["RINGKV.CONSISTENCY"]).await.text(), "all");
    match redis.call(&["SET", "r", "2"]).await {
        support::Reply::Error(message) => {
            assert!(message.starts_with("UNAVAILABLE 2 of the 3"), "{message}")
        }
        other => panic!("expected -UNAVAILABLE, got {other:?}"),
    }
    assert_eq!(
        redis.call(&["RINGKV.CONSISTENCY", "ONE"]).await,
        support::ok()
    );
    assert_eq!(
        redis.call(&["GET", "r"]).await.text(),
        "2",
        "the lead applied it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_become_siblings_only_where_the_keyspace_asks_for_them() {
    let nodes = cluster(3).await;
    create_siblings_keyspace(&nodes, "carts").await;

    // Two writes without a context, through two nodes: two siblings, one context.
    assert_eq!(
        put(&nodes[0], "/v1/ks/carts/keys/cart?w=3", "apple")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        put(&nodes[1], "/v1/ks/carts/keys/cart?w=3", "pear")
            .await
            .status,
        StatusCode::OK
    );
    let read = call(&nodes[2], "GET", "/v1/ks/carts/keys/cart", &[], "").await;
    assert_eq!(read.status, StatusCode::MULTIPLE_CHOICES, "{:?}", read.body);
    let mut values: Vec<String> = read.body["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap().to_owned())
        .collect();
    values.sort();
    assert_eq!(values, ["apple", "pear"]);
    // A write with that context resolves them.
    let context = read.header("x-ringkv-context");
    let body = serde_json::json!({ "value": "apple+pear" }).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("x-ringkv-context", context.as_str()),
    ];
    let resolved = call(
        &nodes[2],
        "PUT",
        "/v1/ks/carts/keys/cart?w=3",
        &headers,
        &body,
    )
    .await;
    assert_eq!(resolved.status, StatusCode::OK);
    let read = call(&nodes[0], "GET", "/v1/ks/carts/keys/cart", &[], "").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["value"], "apple+pear");

    // In `default` (last-writer-wins) the later write simply wins.
    put(&nodes[0], "/v1/keys/plain?w=3", "first").await;
    put(&nodes[1], "/v1/keys/plain?w=3", "second").await;
    let read = call(&nodes[2], "GET", "/v1/keys/plain", &[], "").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["value"], "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_read_repairs_a_replica_that_lost_the_key() {
    let nodes = cluster(3).await;
    assert_eq!(
        put(&nodes[0], "/v1/keys/fragile?w=3", "kept").await.status,
        StatusCode::OK
    );
    // Replica 2 loses its copy behind the cluster's back.
    let lost = &nodes[2].running.node;
    let mut batch = ringkv_storage::WriteBatch::new();
    batch.delete(lost.local_store().data_key("default", b"fragile").unwrap());
    lost.local_store().engine().write_durable(batch).unwrap();
    lost.local_store().reload_from_engine();
    assert_eq!(
        call(&nodes[2], "GET", "/v1/keys/fragile?local=true", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let read = call(
        &nodes[0],
        "GET",
        "/v1/keys/fragile?consistency=quorum",
        &[],
        "",
    )
    .await;
    assert_eq!(read.body["value"], "kept");
    eventually("the lost copy is repaired", async || {
        call(&nodes[2], "GET", "/v1/keys/fragile?local=true", &[], "")
            .await
            .status
            == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_remembers_the_ring_rejoins_and_catches_up_by_read_repair() {
    let mut nodes = cluster(3).await;
    let (id, dir, listen) = stop(nodes.pop().unwrap(), &nodes).await;
    assert_eq!(
        put(&nodes[0], "/v1/keys/missed?w=2", "while away")
            .await
            .status,
        StatusCode::OK
    );

    // Back on the same address, with no --join: the saved members are its way back.
    let back = restart(&id, dir, listen, |_| {}).await;
    assert_eq!(
        view(&back).members.len(),
        3,
        "the ring is known before anyone answers"
    );
    eventually("everyone sees everyone alive again", async || {
        nodes.iter().chain([&back]).all(|node| {
            let view = view(node);
            view.members.len() == 3 && view.members.keys().all(|id| !view.is_down(id))
        })
    })
    .await;
    let read = call(&back, "GET", "/v1/keys/missed?r=3", &[], "").await;
    assert_eq!(read.body["value"], "while away");
    eventually(
        "the missed write is repaired onto the returned node",
        async || {
            call(&back, "GET", "/v1/keys/missed?local=true", &[], "")
                .await
                .status
                == StatusCode::OK
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_sees_what_a_quorum_read_saw_even_through_a_stale_lead() {
    let nodes = cluster(3).await;
    assert_eq!(
        put(&nodes[0], "/v1/keys/cas?w=3", "v1").await.status,
        StatusCode::OK
    );
    // The key's first replica — the lead of conditional writes — misses v2: v2 is written on
    // the second replica's own store and copied to the third behind the coordinator's back.
    let order: Vec<String> = view(&nodes[0])
        .ring
        .preference_list(b"cas", 3)
        .into_iter()
        .map(|m| m.id.clone())
        .collect();
    let by_id = |id: &str| nodes.iter().find(|n| n.running.node.node_id == id).unwrap();
    let (second, third) = (
        &by_id(&order[1]).running.node,
        &by_id(&order[2]).running.node,
    );
    second
        .local_store()
        .write(ringkv_replica::WriteRequest::put("default", b"cas", b"v2"))
        .await
        .unwrap();
    let record = second
        .local_store()
        .get_record("default", b"cas")
        .unwrap()
        .unwrap();
    third
        .local_store()
        .merge(ringkv_replica::MergeRequest {
            keyspace: "default".into(),
            key: b"cas".to_vec(),
            record,
            conflict: ringkv_replica::ConflictMode::LastWriterWins,
        })
        .await
        .unwrap();
    let lead = by_id(&order[0]);
    assert_eq!(
        call(lead, "GET", "/v1/keys/cas?local=true", &[], "")
            .await
            .body["value"],
        "v1",
        "the lead is stale"
    );

    // What a quorum read would answer, taken from a fresh replica's own copy so that no read
    // repair reaches the lead before the write does.
    let read = call(by_id(&order[1]), "GET", "/v1/keys/cas?local=true", &[], "").await;
    assert_eq!(read.body["value"], "v2");
    let etag = read.header("etag");
    let body = serde_json::json!({ "value": "v3" }).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("if-match", etag.as_str()),
    ];
    let swapped = call(&nodes[1], "PUT", "/v1/keys/cas", &headers, &body).await;
    assert_eq!(swapped.status, StatusCode::OK, "{:?}", swapped.body);
    let read = call(&nodes[2], "GET", "/v1/keys/cas", &[], "").await;
    assert_eq!(read.body["value"], "v3");
}

/// Goal: writes made while a replica is down reach it once it is back, with no read of their
/// keys (hinted handoff). Method: one of three nodes stops; 40 quorum writes go through
/// another; the coordinator keeps a hint for each; the node restarts on its data directory,
/// and its own copies (read with `?local=true`, which repairs nothing) fill up, the hints
/// are delivered and none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_missed_by_a_down_replica_reach_it_when_it_returns_without_reads() {
    const KEYS: usize = 40;
    let mut nodes = cluster(3).await;
    let (id, dir, listen) = stop(nodes.pop().unwrap(), &nodes).await;
    for i in 0..KEYS {
        let answer = put(&nodes[0], &format!("/v1/keys/handoff-{i}?w=2"), "missed").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let metrics = &nodes[0].running.node.handoff.metrics;
    eventually("a hint is stored for every missed copy", async || {
        metrics.stored.get() >= KEYS as u64
    })
    .await;

    let back = restart(&id, dir, listen, |_| {}).await;
    eventually("every missed write is on the returned node", async || {
        let mut held = 0;
        for i in 0..KEYS {
            let uri = format!("/v1/keys/handoff-{i}?local=true");
            held += usize::from(call(&back, "GET", &uri, &[], "").await.status == StatusCode::OK);
        }
        held == KEYS
    })
    .await;
    assert!(metrics.replayed.get() >= KEYS as u64);
    eventually("no hint is left", async || metrics.pending_total.get() == 0).await;
    assert!(nodes[0]
        .running
        .node
        .local_store()
        .hints()
        .queues()
        .is_empty());
}

/// Goal: with one of a key's replicas down, a write still reaches W = all through a
/// fallback node that keeps a hint for it (sloppy quorum), unless the client demands that
/// every acknowledgement come from the key's own replicas (`pw`); the fallback delivers the
/// copy once the replica is back. Method: four nodes, N = 3; the key's third replica stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_stands_in_for_a_down_replica_unless_pw_forbids_it() {
    let mut nodes = cluster(4).await;
    let key = "sloppy";
    let replicas: Vec<String> = view(&nodes[0])
        .ring
        .preference_list(key.as_bytes(), 3)
        .into_iter()
        .map(|member| member.id.clone())
        .collect();
    let id_of = |node: &TestNode| node.running.node.node_id.clone();
    let down_at = nodes.iter().position(|n| id_of(n) == replicas[2]).unwrap();
    let (id, dir, listen) = stop(nodes.remove(down_at), &nodes).await;

    let strict = put(&nodes[0], &format!("/v1/keys/{key}?w=all&pw=all"), "v1").await;
    assert_eq!(
        strict.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "pw=all refuses fallbacks"
    );
    let sloppy = put(&nodes[0], &format!("/v1/keys/{key}?w=all"), "v2").await;
    assert_eq!(
        sloppy.status,
        StatusCode::OK,
        "a fallback's hint counts towards w=all"
    );
    let fallback = nodes
        .iter()
        .find(|n| !replicas.contains(&id_of(n)))
        .expect("one node is not a replica");
    assert!(fallback.running.node.handoff.metrics.stored.get() >= 1);

    let back = restart(&id, dir, listen, |_| {}).await;
    eventually(
        "the fallback delivers the copy to the returned replica",
        async || {
            let local = call(&back, "GET", &format!("/v1/keys/{key}?local=true"), &[], "").await;
            local.status == StatusCode::OK && local.body["value"] == "v2"
        },
    )
    .await;
    assert!(fallback.running.node.handoff.metrics.replayed.get() >= 1);
}

/// Goal: with every replica of a key down, a blind write is still taken (sloppy quorum):
/// the coordinator issues it as a stand-in and fallbacks keep it as hints, delivered when the
/// replicas return; a write that reads first, or demands pw, is refused. Two stand-in writes
/// of one key without a context, through one node, in a siblings keyspace, stay two siblings
/// beside the value written before: a stand-in's dot covers nothing else (were it stamped
/// with the node's own id, the second write's context would cover the first's dot and the
/// merge would drop it). Method: five nodes, N = 3; a key none of whose replicas is one of
/// the two nodes left up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_replica_down_blind_writes_are_kept_by_fallbacks_and_none_is_lost() {
    let mut nodes = cluster(5).await;
    create_siblings_keyspace(&nodes, "carts").await;
    let id_of = |node: &TestNode| node.running.node.node_id.clone();
    let up = [id_of(&nodes[0]), id_of(&nodes[1])];
    let replicas_of = |key: &str| -> Vec<String> {
        view(&nodes[0])
            .ring
            .preference_list(key.as_bytes(), 3)
            .into_iter()
            .map(|member| member.id.clone())
            .collect()
    };
    let key = (0..1000)
        .map(|i| format!("stand-in-{i}"))
        .find(|key| replicas_of(key).iter().all(|id| !up.contains(id)))
        .expect("some key has its replicas on the other three nodes");
    let (carts, plain) = (
        format!("/v1/ks/carts/keys/{key}"),
        format!("/v1/keys/{key}"),
    );
    for uri in [&carts, &plain] {
        let old = put(&nodes[0], &format!("{uri}?w=all"), "old").await;
        assert_eq!(old.status, StatusCode::OK, "{:?}", old.body);
    }

    let mut stopped = Vec::new();
    while nodes.len() > 2 {
        let node = nodes.pop().unwrap();
        stopped.push(stop(node, &nodes).await);
    }
    for value in ["a", "b"] {
        let answer = put(&nodes[0], &format!("{carts}?w=2"), value).await;
        assert_eq!(answer.status, StatusCode::OK, "{value}: {:?}", answer.body);
    }
    let deleted = call(&nodes[1], "DELETE", &format!("{plain}?w=2"), &[], "").await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    assert_eq!(
        deleted.body["deleted"],
        serde_json::Value::Null,
        "a stand-in cannot know whether the key existed"
    );
    let strict = put(&nodes[0], &format!("{carts}?w=2&pw=1"), "pw").await;
    assert_eq!(strict.status, StatusCode::SERVICE_UNAVAILABLE);
    let conditional = call(
        &nodes[0],
        "PUT",
        &carts,
        &[("content-type", "application/json"), ("if-none-match", "*")],
        r#"{"value": "conditional"}"#,
    )
    .await;
    assert_eq!(conditional.status, StatusCode::SERVICE_UNAVAILABLE);
    let stored: u64 = nodes
        .iter()
        .map(|node| node.running.node.handoff.metrics.stored.get())
        .sum();
    assert!(
        stored >= 4,
        "two fallbacks keep each of the two writes: {stored}"
    );

    let mut back = Vec::new();
    for (id, dir, listen) in stopped {
        back.push(restart(&id, dir, listen, |_| {}).await);
    }
    for node in &back {
        eventually(
            "every returned replica holds both stand-in writes and the old value",
            async || {
                let local = call(node, "GET", &format!("{carts}?local=true"), &[], "").await;
                let mut values: Vec<String> = local.body["siblings"]
                    .as_array()
                    .map(|siblings| {
                        siblings
                            .iter()
                            .map(|s| s["value"].as_str().unwrap_or_default().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                values.sort();
                local.status == StatusCode::MULTIPLE_CHOICES && values == ["a", "b", "old"]
            },
        )
        .await;
        eventually("the stand-in delete reached every replica", async || {
            let local = call(node, "GET", &format!("{plain}?local=true"), &[], "").await;
            local.status == StatusCode::NOT_FOUND
        })
        .await;
    }
}

/// Stops `node` and waits until every one of `others` sees it down; its id, data directory
/// and cluster address, to start it again.
/// Stops `node`, empties its data directory and starts it again on the same id and
/// address, joining through `seed`, with `configure` applied.
async fn wipe_and_restart(
    node: TestNode,
    seed: &TestNode,
    zone: &str,
    configure: impl FnOnce(&mut ringkv_server::ServerConfig),
) -> TestNode {
    let TestNode { running, dir } = node;
    let (id, listen) = (
        running.node.node_id.clone(),
        running.cluster_addr.to_string(),
    );
    running.shutdown().await;
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let mut config = ringkv_server::ServerConfig {
        node_id: Some(id),
        data_dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".into(),
        resp: "127.0.0.1:0".into(),
        listen,
        join: vec![seed.running.cluster_addr.to_string()],
        zone: zone.into(),
        ..ringkv_server::ServerConfig::default()
    };
    configure(&mut config);
    TestNode {
        running: ringkv_server::start(config).await.unwrap(),
        dir,
    }
}

/// Writes keys `{prefix}0..count` holding `v0..` through `node`, on every replica (w=all).
async fn write_keys(node: &TestNode, prefix: &str, count: usize) {
    for i in 0..count {
        let answer = put(
            node,
            &format!("/v1/keys/{prefix}{i}?w=all"),
            &format!("v{i}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
}

/// Deletes `node`'s own copies of keys `{prefix}0..count` behind the coordinator's back, as a
/// lost disk sector would, keeping the node's membership (a wiped data directory would make
/// it join again and stream its ranges back instead).
fn lose_copies(node: &TestNode, prefix: &str, count: usize) {
    let store = node.running.node.local_store();
    let mut batch = ringkv_storage::WriteBatch::new();
    for i in 0..count {
        let key = format!("{prefix}{i}");
        batch.delete(store.data_key("default", key.as_bytes()).unwrap());
    }
    store.engine().write_durable(batch).unwrap();
    store.reload_from_engine();
}

/// How many of `keys` (holding `v{i}`) `node` holds its own copy of.
async fn local_copies(node: &TestNode, prefix: &str, keys: usize) -> usize {
    let mut held = 0;
    for i in 0..keys {
        let local = call(
            node,
            "GET",
            &format!("/v1/keys/{prefix}{i}?local=true"),
            &[],
            "",
        )
        .await;
        held +=
            usize::from(local.status == StatusCode::OK && local.body["value"] == format!("v{i}"));
    }
    held
}

/// Goal: with anti-entropy's schedule off, `POST /v1/cluster/repair` (what `ringkv cluster
/// repair` sends) refills a replica that lost its copies, and its progress says when it is
/// done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_on_demand_refills_a_replica_that_lost_its_copies() {
    const KEYS: usize = 40;
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let nodes = cluster_with(3, off).await;
    write_keys(&nodes[0], "rp-", KEYS).await;
    let wiped = &nodes[2];
    lose_copies(wiped, "rp-", KEYS);
    assert_eq!(
        local_copies(wiped, "rp-", KEYS).await,
        0,
        "nothing refills it on its own"
    );

    let started = call(wiped, "POST", "/v1/cluster/repair", &[], "").await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let before = started.body["last_finished_ms"].as_u64().unwrap();
    eventually("the round finishes", async || {
        let progress = call(wiped, "GET", "/v1/cluster/repair", &[], "").await.body;
        progress["running"] == false && progress["last_finished_ms"].as_u64().unwrap() > before
    })
    .await;
    let progress = call(wiped, "GET", "/v1/cluster/repair", &[], "").await.body;
    assert_eq!(progress["exchanges_done"], progress["exchanges_total"]);
    assert!(
        progress["keys_repaired"].as_u64().unwrap() >= KEYS as u64,
        "{progress}"
    );
    assert_eq!(local_copies(wiped, "rp-", KEYS).await, KEYS);
    let missing = call(wiped, "POST", "/v1/cluster/repair?keyspace=nope", &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Goal: `ringkv cluster remove` takes a dead node out of the ring on every member, and the
/// survivors stream the ranges they take over from the other replicas until every key has N
/// copies again, with no wait for anti-entropy (off here), showing progress per range.
/// Method: four nodes, N = 3; 40 keys on their replicas; one node stops and is removed
/// through another (a live node's removal is refused first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_dead_node_leaves_the_ring_and_its_copies_are_restored() {
    const KEYS: usize = 40;
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let mut nodes = cluster_with(4, off).await;
    write_keys(&nodes[0], "rm-", KEYS).await;
    let live = nodes[1].running.node.node_id.clone();
    let refused = call(
        &nodes[0],
        "DELETE",
        &format!("/v1/cluster/members/{live}"),
        &[],
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);

    let TestNode { running, dir: _dir } = nodes.pop().unwrap();
    let gone = running.node.node_id.clone();
    running.shutdown().await;
    eventually("the others see it down", async || {
        nodes.iter().all(|node| view(node).is_down(&gone))
    })
    .await;
    let removed = call(
        &nodes[0],
        "DELETE",
        &format!("/v1/cluster/members/{gone}"),
        &[],
        "",
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    eventually("every member's ring leaves it out", async || {
        nodes
            .iter()
            .all(|node| view(node).members.len() == 3 && !view(node).members.contains_key(&gone))
    })
    .await;
    eventually("every key has its three copies again", async || {
        let mut whole = true;
        for i in 0..KEYS {
            whole &= holders(&nodes, &format!("rm-{i}")).await.len() == 3;
        }
        whole
    })
    .await;
    // Each survivor streamed the ranges it took over, every range whole: the records moved
    // are the donors' counts, and they add up to the keys the removed node held.
    let mut moved = 0;
    for node in &nodes {
        let restores = node.running.node.restoring.progress();
        assert_eq!(restores.len(), 1, "{restores:?}");
        assert_eq!(restores[0].removed, gone);
        eventually("the restore is done", async || {
            node.running.node.restoring.progress()[0].state == "done"
        })
        .await;
        let restore = &node.running.node.restoring.progress()[0];
        for range in restore.transfers.iter().flat_map(|t| &t.ranges) {
            if range.keyspace == "default" {
                assert_eq!(Some(range.moved), range.expected, "{range:?}");
                moved += range.moved;
            }
        }
    }
    let held_by_gone = (0..KEYS)
        .filter(|i| {
            let mut members: Vec<ringkv_core::ring::Member> =
                view(&nodes[0]).ring.members().to_vec();
            members.push(ringkv_core::ring::Member {
                id: gone.clone(),
                zone: "z3".into(),
                weight: 1,
            });
            let before = ringkv_core::ring::Ring::new(&members, ringkv_core::ring::VNODES_DEFAULT);
            before
                .preference_list(format!("rm-{i}").as_bytes(), 3)
                .iter()
                .any(|member| member.id == gone)
        })
        .count() as u64;
    assert_eq!(
        moved, held_by_gone,
        "one copy of each key the removed node held moved"
    );
}

/// Waits until every node of `nodes` (three) has dropped `gone` from its ring, then checks
/// that each of keys `{prefix}0..count` is on all three.
async fn assert_gone_and_every_key_on_the_rest(
    nodes: &[TestNode],
    gone: &str,
    prefix: &str,
    count: usize,
) {
    eventually("every other member's ring drops it", async || {
        nodes
            .iter()
            .all(|node| view(node).members.len() == 3 && !view(node).members.contains_key(gone))
    })
    .await;
    for i in 0..count {
        let key = format!("{prefix}{i}");
        assert_eq!(holders(nodes, &key).await.len(), 3, "{key}");
    }
}

/// Goal: `ringkv cluster leave` hands a node's ranges to their next owners before it leaves
/// the ring, so every key keeps its three copies on the nodes that stay, with no wait for
/// anti-entropy (off here). Method: four nodes, N = 3, 60 keys on their replicas; one node
/// leaves; every member's ring drops it, and every key is on all three others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_ranges_off_before_it_leaves_the_ring() {
    const KEYS: usize = 60;
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let mut nodes = cluster_with(4, off).await;
    write_keys(&nodes[0], "lv-", KEYS).await;
    let leaving = nodes.pop().unwrap();
    let gone = leaving.running.node.node_id.clone();
    let held = (0..KEYS)
        .filter(|i| {
            let key = format!("lv-{i}");
            let ring = &view(&leaving).ring;
            ring.preference_list(key.as_bytes(), 3)
                .iter()
                .any(|member| member.id == gone)
        })
        .count() as u64;
    let started = call(&leaving, "POST", "/v1/cluster/leave", &[], "").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    eventually("the node has left", async || {
        call(&leaving, "GET", "/v1/cluster/leave", &[], "")
            .await
            .body["state"]
            == "left"
    })
    .await;
    let progress = call(&leaving, "GET", "/v1/cluster/leave", &[], "")
        .await
        .body;
    assert!(progress["records_sent"].as_u64().unwrap() > 0, "{progress}");
    assert_eq!(progress["sends_failed"], 0, "{progress}");
    // Progress per range: the ranges it replicated, each handed off whole, its counts adding
    // up to the keys it held.
    let ranges: Vec<&serde_json::Value> = progress["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["keyspace"] == "default")
        .collect();
    assert!(ranges.len() >= 3, "{progress}");
    for range in &ranges {
        assert_eq!(range["moved"], range["expected"], "{range}");
    }
    let expected: u64 = ranges.iter().map(|r| r["expected"].as_u64().unwrap()).sum();
    assert_eq!(expected, held);
    assert_gone_and_every_key_on_the_rest(&nodes, &gone, "lv-", KEYS).await;
    leaving.running.shutdown().await;
}

/// Goal: a node restarted in the middle of leaving goes on leaving where it stopped: it comes
/// back `leaving` (not `normal`), streams only the keys after the last page it recorded as
/// handed off, and leaves; the keys it streamed are on all three other nodes. Method: four
/// nodes, N = 3, anti-entropy off; the leaver's metadata is set as a crash after handing
/// off the keys up to `rl-3` would leave it (every record of `rl-0..=rl-3` is handed off by
/// hand, as its stream would have); it is stopped and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_interrupted_by_a_restart_resumes_after_the_last_page_it_handed_off() {
    const KEYS: usize = 40;
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let mut nodes = cluster_with(4, off).await;
    write_keys(&nodes[0], "rl-", KEYS).await;
    let leaver = nodes.pop().unwrap();
    let gone = leaver.running.node.node_id.clone();
    // The keys up to the cursor (in key order) count as handed off: merged into every other
    // node, as the stream would have.
    let cursor = "rl-3";
    let mut streamed_before: Vec<String> = (0..KEYS)
        .map(|i| format!("rl-{i}"))
        .filter(|key| key.as_str() <= cursor)
        .collect();
    streamed_before.sort();
    for key in &streamed_before {
        let leavers = leaver.running.node.local_store();
        let Some(record) = leavers.get_record("default", key.as_bytes()).unwrap() else {
            continue; // not one of its keys
        };
        for node in &nodes {
            let merge = ringkv_replica::MergeRequest {
                keyspace: "default".into(),
                key: key.as_bytes().to_vec(),
                record: record.clone(),
                conflict: ringkv_replica::ConflictMode::LastWriterWins,
            };
            node.running.node.local_store().merge(merge).await.unwrap();
        }
    }
    // The metadata a crash after that page would leave (names as in crates/coordinator's leave.rs).
    let store = leaver.running.node.local_store();
    let held_after_cursor = (0..KEYS)
        .map(|i| format!("rl-{i}"))
        .filter(|key| key.as_str() > cursor)
        .filter(|key| {
            store
                .get_record("default", key.as_bytes())
                .unwrap()
                .is_some()
        })
        .count();
    assert!(held_after_cursor > 0);
    store.meta_put("cluster/leaving", b"leaving").unwrap();
    store
        .meta_put("cluster/leave/default", cursor.as_bytes())
        .unwrap();
    let (id, dir, listen) = stop(leaver, &nodes).await;
    let back = restart(&id, dir, listen, off).await;
    eventually("the restarted node has left", async || {
        call(&back, "GET", "/v1/cluster/leave", &[], "").await.body["state"] == "left"
    })
    .await;
    let progress = call(&back, "GET", "/v1/cluster/leave", &[], "").await.body;
    assert_eq!(
        progress["records_examined"].as_u64().unwrap() as usize,
        held_after_cursor,
        "only the keys after the cursor were streamed again: {progress}"
    );
    assert_eq!(progress["sends_failed"], 0, "{progress}");
    assert_gone_and_every_key_on_the_rest(&nodes, &gone, "rl-", KEYS).await;
    back.running.shutdown().await;
}

/// Goal: a node that joins a loaded cluster streams its share of the copies from the three
/// holders at once before it serves them (`joining`, then `normal`), each key from one
/// donor, nothing lost, with no read. Method: three nodes, 60 keys; a fourth joins; once it
/// is normal, it holds a copy of every key whose replicas now include it, its transfers
/// carried exactly those, and every key still reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_is_filled_with_its_share_of_the_keys() {
    const KEYS: usize = 60;
    let nodes = cluster(3).await;
    write_keys(&nodes[0], "jn-", KEYS).await;
    let seed = nodes[0].running.cluster_addr.to_string();
    let joined = start_node(move |config| {
        config.zone = "z3".into();
        config.join = vec![seed];
        config.anti_entropy_interval_ms = 2_000;
    })
    .await;
    let id = joined.running.node.node_id.clone();
    eventually("every node sees the new one alive and joined", async || {
        nodes.iter().chain([&joined]).all(|node| {
            let view = view(node);
            view.members.len() == 4 && !view.is_down(&id) && !view.is_joining(&id)
        })
    })
    .await;
    let progress = joined.running.node.joining.progress().expect("it joined");
    assert_eq!(progress.state, "normal");
    assert_eq!(progress.transfers.len(), 3, "one per donor: {progress:?}");
    let streamed: u64 = progress.transfers.iter().map(|t| t.records).sum();
    assert!(
        progress.transfers.iter().all(|t| t.state == "done"),
        "{progress:?}"
    );
    let owned: Vec<String> = (0..KEYS)
        .map(|i| format!("jn-{i}"))
        .filter(|key| {
            view(&nodes[0])
                .ring
                .preference_list(key.as_bytes(), 3)
                .iter()
                .any(|member| member.id == id)
        })
        .collect();
    eventually(
        "the joined node holds every key it now replicates",
        async || {
            let mut held = 0;
            for key in &owned {
                let uri = format!("/v1/keys/{key}?local=true");
                held +=
                    usize::from(call(&joined, "GET", &uri, &[], "").await.status == StatusCode::OK);
            }
            held == owned.len()
        },
    )
    .await;
    assert!(owned.len() > KEYS / 2, "it owns {} of {KEYS}", owned.len());
    assert_eq!(
        streamed,
        owned.len() as u64,
        "each key it owns came from one donor, and no other key"
    );
    // Progress per range: every range of every transfer complete, the donors' counts adding
    // up to the keys it owns, and `cluster status` (`/v1/cluster`) showing them.
    let ranges: Vec<_> = progress
        .transfers
        .iter()
        .filter(|t| t.keyspace == "default")
        .flat_map(|t| t.ranges.clone())
        .collect();
    assert!(ranges.len() >= 3, "{ranges:?}");
    for range in &ranges {
        assert_eq!(Some(range.moved), range.expected, "{range:?}");
    }
    let expected: u64 = ranges.iter().filter_map(|r| r.expected).sum();
    assert_eq!(expected, owned.len() as u64);
    let status = call(&joined, "GET", "/v1/cluster", &[], "").await;
    let shown = status.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .and_then(|m| m["joining"]["transfers"].as_array().cloned())
        .unwrap_or_default();
    let shown_ranges: usize = shown
        .iter()
        .filter(|t| t["keyspace"] == "default")
        .map(|t| t["ranges"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(shown_ranges, ranges.len());
    for i in 0..KEYS {
        let read = call(&joined, "GET", &format!("/v1/keys/jn-{i}"), &[], "").await;
        assert_eq!(read.body["value"], format!("v{i}"));
    }
}

/// Goal: a copy that fails its checksum is replaced by anti-entropy like a missing one, and
/// does not stop the exchange of the keys around it. Method: three nodes, schedule off; one
/// node's copy of one key is overwritten with damaged bytes and another key's copy deleted;
/// a repair asked of that node restores both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_copy_is_replaced_by_anti_entropy() {
    const KEYS: usize = 20;
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let nodes = cluster_with(3, off).await;
    write_keys(&nodes[0], "dm-", KEYS).await;
    let damaged = nodes[2].running.node.local_store();
    let mut batch = ringkv_storage::WriteBatch::new();
    let bad_key = damaged.data_key("default", b"dm-3").unwrap();
    batch.put(bad_key, b"\x01not a record".as_slice());
    batch.delete(damaged.data_key("default", b"dm-7").unwrap());
    damaged.engine().write_durable(batch).unwrap();
    damaged.reload_from_engine();
    let local = call(&nodes[2], "GET", "/v1/keys/dm-3?local=true", &[], "").await;
    assert_eq!(
        local.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        local.body
    );

    let before = call(&nodes[2], "POST", "/v1/cluster/repair", &[], "")
        .await
        .body;
    let before = before["last_finished_ms"].as_u64().unwrap();
    eventually("the round finishes", async || {
        let progress = call(&nodes[2], "GET", "/v1/cluster/repair", &[], "")
            .await
            .body;
        progress["running"] == false && progress["last_finished_ms"].as_u64().unwrap() > before
    })
    .await;
    assert_eq!(local_copies(&nodes[2], "dm-", KEYS).await, KEYS);
}

/// Goal: a replica that lost its copies is refilled by anti-entropy alone: no read of its
/// keys, no hints (it missed no write). Method: three nodes comparing trees every 300 ms;
/// 60 keys on every node; the third node loses its copies of them: they come back (read
/// with `?local=true`, which repairs nothing), every value intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_copies_is_refilled_by_anti_entropy_alone() {
    const KEYS: usize = 60;
    let often = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 300;
    let nodes = cluster_with(3, often).await;
    write_keys(&nodes[0], "ae-", KEYS).await;
    let wiped = &nodes[2];
    lose_copies(wiped, "ae-", KEYS);
    eventually("every key is back on the replica", async || {
        local_copies(wiped, "ae-", KEYS).await == KEYS
    })
    .await;
    let repaired: u64 = nodes
        .iter()
        .map(|n| {
            let metrics = &n.running.node.anti_entropy.metrics;
            metrics.repaired_here.get() + metrics.repaired_there.get()
        })
        .sum();
    assert!(repaired >= KEYS as u64, "{repaired} repairs counted");
    let hints: u64 = nodes
        .iter()
        .map(|n| n.running.node.handoff.metrics.stored.get())
        .sum();
    assert_eq!(
        hints, 0,
        "no hint was needed: anti-entropy alone refilled it"
    );
}

/// Goal: a delete that a replica missed while it was down for longer than the tombstone
/// grace never comes back: the replicas that took it keep the tombstone until every replica
/// of the key holds it, and then all of them remove it. Method: grace and hint window 0 (no
/// hint carries the delete; the reaper waits the RPC timeout plus the clock skew), sweeps
/// every 50 ms; a replica stops, the key is deleted, the
/// others are seen keeping the tombstone round after round; the replica returns holding the
/// old value, anti-entropy brings it the tombstone, and the key ends with no record anywhere
/// and reads as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_missed_by_a_down_replica_stays_deleted_and_its_tombstone_goes_once_all_hold_it() {
    let fast = |config: &mut ringkv_server::ServerConfig| {
        config.tombstone_grace_ms = 0;
        config.hint_window_ms = 0;
        // One process, one clock: the reaper's wait is then the RPC timeout and a little.
        config.clock_skew_max_ms = 100;
        config.sweep_interval_ms = 50;
        config.anti_entropy_interval_ms = 300;
    };
    let mut nodes = cluster_with(3, fast).await;
    let key = "deleted-while-away";
    let answer = put(&nodes[0], &format!("/v1/keys/{key}?w=all"), "old").await;
    assert_eq!(answer.status, StatusCode::OK);
    let (id, dir, listen) = stop(nodes.pop().unwrap(), &nodes).await;
    let deleted = call(&nodes[0], "DELETE", &format!("/v1/keys/{key}?w=2"), &[], "").await;
    assert!(deleted.status.is_success(), "{:?}", deleted.status);

    let record = |node: &TestNode| {
        node.running
            .node
            .local_store()
            .get_record("default", key.as_bytes())
            .unwrap()
    };
    for node in &nodes {
        let metrics = &node.running.node.reaper;
        eventually("the reaper has looked at the tombstone", async || {
            metrics.unconfirmed.get() >= 3
        })
        .await;
    }
    for node in &nodes {
        let tombstone = record(node).expect("the tombstone is kept while a replica is away");
        assert!(tombstone.siblings.iter().all(|s| s.value.is_none()));
    }

    let back = restart(&id, dir, listen, fast).await;
    nodes.push(back);
    eventually("every replica has removed the tombstone", async || {
        nodes.iter().all(|node| record(node).is_none())
    })
    .await;
    // Only a reaper removes a whole record here (the stores' sweepers leave them); its
    // counter is not asserted, as one slow answer leaves a removal uncounted.
    for node in &nodes {
        let read = call(node, "GET", &format!("/v1/keys/{key}?r=all"), &[], "").await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "the delete stays");
    }
}

/// Goal: a replica whose data directory is wiped comes back as a joining node and streams its
/// ranges back from the other replicas before it serves them; reads through it never miss a
/// key meanwhile. Method: three nodes, anti-entropy off (so only the join stream can refill
/// it); 60 keys; the third node is wiped and restarted with its seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_rejoins_and_streams_its_ranges_back_before_serving() {
    const KEYS: usize = 60;
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let mut nodes = cluster_with(3, off).await;
    write_keys(&nodes[0], "wj-", KEYS).await;
    let last = nodes.pop().unwrap();
    let wiped = wipe_and_restart(last, &nodes[0], "z2", off).await;
    let id = wiped.running.node.node_id.clone();
    eventually("the wiped node has joined again", async || {
        nodes
            .iter()
            .chain([&wiped])
            .all(|node| !view(node).is_joining(&id) && !view(node).is_down(&id))
    })
    .await;
    assert_eq!(local_copies(&wiped, "wj-", KEYS).await, KEYS);
    let progress = wiped.running.node.joining.progress().expect("it joined");
    let streamed: u64 = progress.transfers.iter().map(|t| t.records).sum();
    assert_eq!(streamed, KEYS as u64, "{progress:?}");
    for i in 0..KEYS {
        let read = call(&wiped, "GET", &format!("/v1/keys/wj-{i}?r=all"), &[], "").await;
        assert_eq!(read.body["value"], format!("v{i}"));
    }
}

/// Goal: a transfer broken part-way resumes where it stopped: a node that restarts while
/// joining goes on joining, and asks each donor only for the keys after the last one it
/// recorded. Method: three nodes (anti-entropy off), 60 keys `jr-00..59` (key order is
/// number order); a new node's data directory is left as a break would leave it — joining,
/// each donor's transfer recorded up to `jr-29` — and the node starts: it joins, holds its
/// keys from `jr-30` on and none before (never asked for), and its transfers carried exactly
/// those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_join_resumes_after_the_last_key_it_recorded() {
    let off = |config: &mut ringkv_server::ServerConfig| config.anti_entropy_interval_ms = 0;
    let nodes = cluster_with(3, off).await;
    for i in 0..60 {
        let answer = put(
            &nodes[0],
            &format!("/v1/keys/jr-{i:02}?w=all"),
            &format!("v{i}"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = ringkv_server::ServerConfig {
        node_id: Some("resumer".into()),
        data_dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".into(),
        resp: "127.0.0.1:0".into(),
        listen: "127.0.0.1:0".into(),
        zone: "z3".into(),
        join: vec![nodes[0].running.cluster_addr.to_string()],
        anti_entropy_interval_ms: 0,
        ..ringkv_server::ServerConfig::default()
    };
    {
        let prepared = ringkv_server::Node::open(config.clone()).unwrap();
        let store = prepared.local_store();
        store.meta_put("cluster/joining", b"1").unwrap();
        for donor in &nodes {
            let cursor = format!("cluster/join/{}/default", donor.running.node.node_id);
            store.meta_put(&cursor, b"jr-29").unwrap();
        }
    }
    let resumer = TestNode {
        running: ringkv_server::start(config).await.unwrap(),
        dir,
    };
    eventually("the resumed node has joined", async || {
        nodes
            .iter()
            .chain([&resumer])
            .all(|node| view(node).members.len() == 4 && !view(node).is_joining("resumer"))
    })
    .await;
    let owned: Vec<usize> = (0..60)
        .filter(|i| {
            view(&nodes[0])
                .ring
                .preference_list(format!("jr-{i:02}").as_bytes(), 3)
                .iter()
                .any(|member| member.id == "resumer")
        })
        .collect();
    let mut expected = 0;
    for &i in &owned {
        let local = call(
            &resumer,
            "GET",
            &format!("/v1/keys/jr-{i:02}?local=true"),
            &[],
            "",
        )
        .await;
        let held = local.status == StatusCode::OK;
        assert_eq!(held, i >= 30, "jr-{i:02}: held {held}");
        expected += u64::from(i >= 30);
    }
    assert!(expected > 0 && expected < owned.len() as u64, "{owned:?}");
    let progress = resumer.running.node.joining.progress().expect("it joined");
    let streamed: u64 = progress.transfers.iter().map(|t| t.records).sum();
    assert_eq!(streamed, expected, "{progress:?}");
}

/// A RESP session to `node` whose writes need one replica and whose reads ask every one, so
/// that each side of a partition keeps taking writes.
async fn one_replica_session(node: &TestNode) -> RespClient {
    let mut client = RespClient::connect(node).await;
    let set = client
        .call(&["RINGKV.CONSISTENCY", "W", "1", "R", "1"])
        .await;
    assert_eq!(set, support::ok());
    client
}

/// One INCRBY through each client at once; the sum they acknowledged.
async fn increment_round(clients: &mut [RespClient], step: i64) -> i64 {
    let calls = clients
        .iter_mut()
        .enumerate()
        .map(|(i, client)| async move {
            let by = (step * 7 + i as i64 * 3) % 11 + 1;
            match client.call(&["INCRBY", "hits", &by.to_string()]).await {
                support::Reply::Integer(_) => by,
                other => panic!("INCRBY through node {i}: {other:?}"),
            }
        });
    futures_util::future::join_all(calls).await.iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_through_every_node_all_count_across_a_partition() {
    let nodes = cluster(3).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(one_replica_session(node).await);
    }
    let mut acknowledged = 0i64;
    for step in 0..20 {
        acknowledged += increment_round(&mut clients, step).await;
    }
    // Node 2 is cut off: both sides keep counting, each on its own copy.
    partition(&nodes, Some(2));
    let address2 = nodes[2].running.node.node_id.clone();
    eventually("the majority sees node 2 down", async || {
        view(&nodes[0]).is_down(&address2)
    })
    .await;
    for step in 20..60 {
        acknowledged += increment_round(&mut clients, step).await;
    }
    partition(&nodes, None);
    eventually("every node sees every other alive", async || {
        nodes.iter().all(|node| {
            let seen = view(node);
            seen.members.keys().all(|id| !seen.is_down(id))
        })
    })
    .await;
    // Reads merge the two sides' counters (and repair the replicas they read).
    for client in &mut clients {
        let all = client.call(&["RINGKV.CONSISTENCY", "R", "3"]).await;
        assert_eq!(all, support::ok());
    }
    eventually(
        "every node reads the sum of every acknowledged increment",
        async || {
            let mut agreed = true;
            for client in clients.iter_mut() {
                agreed &=
                    client.call(&["GET", "hits"]).await == support::bulk(&acknowledged.to_string());
            }
            agreed
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_and_removes_of_set_members_converge_to_add_wins_on_every_replica() {
    let nodes = cluster(3).await;
    let mut majority = one_replica_session(&nodes[0]).await;
    let mut minority = one_replica_session(&nodes[2]).await;
    let added = majority.call(&["SADD", "tags", "x", "y", "kept"]).await;
    assert_eq!(added, support::Reply::Integer(3));
    eventually("node 2 holds the set", async || {
        minority.call(&["SCARD", "tags"]).await == support::Reply::Integer(3)
    })
    .await;
    partition(&nodes, Some(2));
    let address2 = nodes[2].running.node.node_id.clone();
    eventually("the majority sees node 2 down", async || {
        view(&nodes[0]).is_down(&address2)
    })
    .await;
    // At once on the two sides: x removed here and added again there; y removed there while
    // z is added here.
    assert_eq!(
        majority.call(&["SREM", "tags", "x"]).await,
        support::Reply::Integer(1)
    );
    assert_eq!(
        minority.call(&["SADD", "tags", "x"]).await,
        support::Reply::Integer(0)
    );
    assert_eq!(
        minority.call(&["SREM", "tags", "y"]).await,
        support::Reply::Integer(1)
    );
    assert_eq!(
        majority.call(&["SADD", "tags", "z"]).await,
        support::Reply::Integer(1)
    );
    partition(&nodes, None);
    let expected = support::Reply::Array(
        ["kept", "x", "z"]
            .iter()
            .map(|m| support::bulk(m))
            .collect(),
    );
    eventually("every node reads the add-wins set", async || {
        majority.call(&["RINGKV.CONSISTENCY", "R", "3"]).await;
        majority.call(&["SMEMBERS", "tags"]).await == expected
    })
    .await;
    // Each replica's own copy converges too (read repair, anti-entropy).
    eventually("every replica holds the add-wins set", async || {
        let mut all = true;
        for node in &nodes {
            let answer = call(node, "GET", "/v1/keys/tags?local=true", &[], "").await;
            all &= answer.body["value"] == serde_json::json!(["kept", "x", "z"]);
        }
        all
    })
    .await;
}
