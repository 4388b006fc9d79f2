//! Strong keyspaces between real nodes in one process: each shard a Raft group over the
//! cluster RPC on loopback, requests driven through each node's REST router. Every wait is
//! bounded.

mod support;

use axum::http::StatusCode;
use ringkv_faultlab::linearizability::{
    check, CasInput, CasOutput, CasRegister, Operation, Verdict,
};
use ringkv_server::strong::{types::raft_id, GroupId};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use support::cluster::{call, cluster, eventually, partition, restart, stop, Answer};
use support::{bulk, ok, start_node, Reply, RespClient, TestNode};

const RAW: (&str, &str) = ("content-type", "application/octet-stream");

/// Creates strong keyspace `name` with `shards` through the first of `nodes` and waits until
/// every node has its definition.
async fn create_strong(nodes: &[TestNode], name: &str, shards: u32) {
    let uri = format!("/v1/ks/{name}");
    let body = json!({ "mode": "strong", "shards": shards }).to_string();
    let created = call(&nodes[0], "PUT", &uri, &[], &body).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    assert_eq!(created.body["mode"], "strong");
    eventually("the definition reaches every node", async || {
        let mut all = true;
        for node in nodes {
            all &= call(node, "GET", &uri, &[], "").await.body["mode"] == "strong";
        }
        all
    })
    .await;
}

async fn put_raw(node: &TestNode, uri: &str, value: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![RAW];
    all.extend_from_slice(headers);
    call(node, "PUT", uri, &all, value).await
}

async fn increment(node: &TestNode, uri: &str) -> Answer {
    let headers = [("content-type", "application/json")];
    call(node, "POST", uri, &headers, r#"{"incr": 1}"#).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_puts_conditions_and_increments_and_keeps_them_across_a_restart() {
    let node = start_node(|_| {}).await;
    let nodes = [node];
    create_strong(&nodes, "ledger", 2).await;
    let [node] = nodes;

    let stored = put_raw(&node, "/v1/ks/ledger/keys/a", "one", &[]).await;
    assert_eq!(stored.status, StatusCode::OK, "{:?}", stored.body);
    let version = stored.body["version"].as_str().unwrap().to_owned();
    let read = call(&node, "GET", "/v1/ks/ledger/keys/a", &[], "").await;
    assert_eq!(read.body["value"], "one");
    assert_eq!(read.body["version"], version.as_str());

    // Create-only fails on a present key, answering what is there.
    let create = put_raw(
        &node,
        "/v1/ks/ledger/keys/a",
        "x",
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(create.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(create.body["current"]["value"], "one");
    assert_eq!(create.body["current"]["version"], version.as_str());
    // Compare-and-set on the version: the current one applies, a stale one does not.
    let etag = format!("\"{version}\"");
    let swapped = put_raw(&node, "/v1/ks/ledger/keys/a", "two", &[("if-match", &etag)]).await;
    assert_eq!(swapped.status, StatusCode::OK, "{:?}", swapped.body);
    let stale = put_raw(
        &node,
        "/v1/ks/ledger/keys/a",
        "three",
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["current"]["value"], "two");
    // An absent key answers a failed condition with null.
    let absent = put_raw(&node, "/v1/ks/ledger/keys/b", "x", &[("if-match", &etag)]).await;
    assert_eq!(absent.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(absent.body["current"], serde_json::Value::Null);

    for expected in 1..=3 {
        let counted = increment(&node, "/v1/ks/ledger/keys/count").await;
        assert_eq!(counted.body["value"], expected, "{:?}", counted.body);
    }
    let deleted = call(&node, "DELETE", "/v1/ks/ledger/keys/b", &[], "").await;
    assert_eq!(deleted.status, StatusCode::OK);

    // After a restart the log and the store agree: nothing lost, nothing applied twice.
    let id = node.running.node.node_id.clone();
    let (id, dir, listen) = {
        let listen = node.running.cluster_addr.to_string();
        let TestNode { running, dir } = node;
        running.shutdown().await;
        (id, dir, listen)
    };
    let node = restart(&id, dir, listen, |_| {}).await;
    let read = call(&node, "GET", "/v1/ks/ledger/keys/a", &[], "").await;
    assert_eq!(read.body["value"], "two", "{:?}", read.body);
    let counted = increment(&node, "/v1/ks/ledger/keys/count").await;
    assert_eq!(counted.body["value"], 4, "{:?}", counted.body);
}

/// The node of `nodes` that leads `group`, once one does.
async fn leader_of(nodes: &[TestNode], group: &GroupId) -> usize {
    let mut found = None;
    eventually("the shard has a leader", async || {
        found = nodes.iter().position(|node| {
            let node = &node.running.node;
            node.strong.get(group).is_some_and(|raft| {
                raft.metrics().borrow().current_leader == Some(raft_id(&node.node_id))
            })
        });
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_increments_from_every_node_count_exactly_once_each() {
    let nodes = Arc::new(cluster(3).await);
    create_strong(&nodes, "locks", 2).await;
    let uri = "/v1/ks/locks/keys/counter";
    let created = put_raw(&nodes[0], uri, "0", &[("if-none-match", "*")]).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);

    // Six clients, two per node, race in rounds: all read the counter, then all write it
    // plus one if its version is unchanged. Exactly one write per round may apply.
    const ROUNDS: usize = 8;
    const CLIENTS: usize = 6;
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (nodes, barrier) = (Arc::clone(&nodes), Arc::clone(&barrier));
            tokio::spawn(async move {
                let node = &nodes[client % 3];
                let mut won = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait().await;
                    let read = call(node, "GET", uri, &[], "").await;
                    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
                    let value: u64 = read.body["value"].as_str().unwrap().parse().unwrap();
                    assert_eq!(
                        value, round as u64,
                        "each round starts where the last ended"
                    );
                    let etag = format!("\"{}\"", read.body["version"].as_str().unwrap());
                    barrier.wait().await;
                    let next = (value + 1).to_string();
                    let written = put_raw(node, uri, &next, &[("if-match", &etag)]).await;
                    match written.status {
                        StatusCode::OK => won.push(round),
                        StatusCode::PRECONDITION_FAILED => {}
                        other => panic!("unexpected {other}: {:?}", written.body),
                    }
                }
                won
            })
        })
        .collect();
    let mut winners = vec![0; ROUNDS];
    // Bounded: a client that fails leaves the others waiting at the barrier.
    let all = futures_util::future::join_all(clients);
    let results = tokio::time::timeout(std::time::Duration::from_secs(120), all)
        .await
        .expect("the clients finish within two minutes");
    for won in results {
        for round in won.expect("no client failed") {
            winners[round] += 1;
        }
    }
    assert_eq!(
        winners,
        vec![1; ROUNDS],
        "exactly one compare-and-set per round applied"
    );
    let total = ROUNDS.to_string();
    for node in nodes.iter() {
        let read = call(node, "GET", uri, &[], "").await;
        assert_eq!(read.body["value"].as_str(), Some(total.as_str()));
    }
    // Every member applied the same log: each one's own copy agrees.
    eventually("every member's copy has every increment", async || {
        let mut all = true;
        for node in nodes.iter() {
            let local = call(node, "GET", &format!("{uri}?local=true"), &[], "").await;
            all &= local.body["value"].as_str() == Some(total.as_str());
        }
        all
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_leader_stops_writes_resume_and_every_acknowledged_write_survives() {
    let mut nodes = cluster(3).await;
    create_strong(&nodes, "config", 1).await;
    let group = GroupId {
        keyspace: "config".into(),
        shard: 0,
    };
    for i in 0..10 {
        let written = put_raw(&nodes[i % 3], &format!("/v1/ks/config/keys/k{i}"), "v", &[]).await;
        assert_eq!(written.status, StatusCode::OK, "{:?}", written.body);
    }
    // Every member holds the group with all three voting before the leader goes.
    eventually("three voters", async || {
        nodes.iter().all(|node| {
            node.running.node.strong.get(&group).is_some_and(|raft| {
                let metrics = raft.metrics();
                let voters = metrics
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .count();
                voters == 3
            })
        })
    })
    .await;
    let leader = leader_of(&nodes, &group).await;
    let old = nodes.remove(leader);
    let (id, dir, listen) = stop(old, &[]).await;

    // Writes through the survivors resume once they elect a leader; none is refused.
    let started = Instant::now();
    for i in 10..20 {
        let written = put_raw(&nodes[i % 2], &format!("/v1/ks/config/keys/k{i}"), "v", &[]).await;
        assert_eq!(written.status, StatusCode::OK, "{:?}", written.body);
    }
    eprintln!(
        "10 writes after the leader stopped took {:?}",
        started.elapsed()
    );
    for i in 0..20 {
        let read = call(
            &nodes[(i + 1) % 2],
            "GET",
            &format!("/v1/ks/config/keys/k{i}"),
            &[],
            "",
        )
        .await;
        assert_eq!(read.status, StatusCode::OK, "k{i}: {:?}", read.body);
    }

    // The operator sees the new leader, its term and its members.
    let status = call(&nodes[0], "GET", "/v1/cluster", &[], "").await;
    let shards: Vec<&serde_json::Value> = status.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["shards"].as_array())
        .flatten()
        .filter(|shard| shard["group"] == "config/0")
        .collect();
    assert_eq!(
        shards.len(),
        1,
        "one leader reports the shard: {status:?}",
        status = status.body
    );
    assert_ne!(shards[0]["leader"], id.as_str());
    assert!(shards[0]["term"].as_u64().unwrap() >= 2);
    assert!(shards[0]["commit_index"].as_u64().unwrap() >= 20);
    assert_eq!(shards[0]["members"].as_array().unwrap().len(), 3);
    eventually("the survivors count the election", async || {
        nodes[0].running.node.strong.metrics.elections.get() >= 1
    })
    .await;

    // The old leader comes back and catches up from the new one.
    let back = restart(&id, dir, listen, |_| {}).await;
    eventually("the old leader's copy catches up", async || {
        let uri = "/v1/ks/config/keys/k19?local=true";
        call(&back, "GET", uri, &[], "").await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_reach_a_strong_keyspace_by_name_with_conditional_and_multi_key_writes() {
    let nodes = cluster(3).await;
    create_strong(&nodes, "accounts", 4).await;
    let mut client = RespClient::connect(&nodes[1]).await;
    assert_eq!(client.call(&["SELECT", "accounts"]).await, ok());
    assert!(matches!(
        client.call(&["SELECT", "nowhere"]).await,
        Reply::Error(_)
    ));

    assert_eq!(client.call(&["SET", "a", "1", "NX"]).await, ok());
    assert_eq!(client.call(&["SET", "a", "2", "NX"]).await, Reply::Nil);
    assert_eq!(
        client.call(&["SET", "a", "2", "XX", "GET"]).await,
        bulk("1")
    );
    assert_eq!(
        client.call(&["INCRBY", "a", "10"]).await,
        Reply::Integer(12)
    );
    // CAS on the value: applies only against what is stored.
    assert_eq!(
        client.call(&["CAS", "a", "11", "x"]).await,
        Reply::Integer(0)
    );
    assert_eq!(
        client.call(&["CAS", "a", "12", "x"]).await,
        Reply::Integer(1)
    );
    assert_eq!(client.call(&["GETSET", "a", "y"]).await, bulk("x"));
    assert_eq!(client.call(&["GETDEL", "a"]).await, bulk("y"));
    assert_eq!(client.call(&["GET", "a"]).await, Reply::Nil);
    assert_eq!(client.call(&["SETNX", "b", "1"]).await, Reply::Integer(1));
    assert_eq!(client.call(&["SETNX", "b", "2"]).await, Reply::Integer(0));

    // Keys with one hash tag share a shard: one MSET is one entry of its log.
    assert_eq!(
        client
            .call(&["MSET", "{user1}.name", "ann", "{user1}.mail", "a@x"])
            .await,
        ok()
    );
    let group = GroupId {
        keyspace: "accounts".into(),
        shard: ringkv_server::strong::shard_of(b"{user1}.name", 4),
    };
    assert_eq!(
        group.shard,
        ringkv_server::strong::shard_of(b"{user1}.mail", 4)
    );
    // Through another node, linearizably.
    let mut other = RespClient::connect(&nodes[2]).await;
    assert_eq!(other.call(&["SELECT", "accounts"]).await, ok());
    assert_eq!(
        other
            .call(&["MGET", "{user1}.name", "{user1}.mail", "b"])
            .await,
        Reply::Array(vec![bulk("ann"), bulk("a@x"), bulk("1")])
    );
    assert_eq!(
        other.call(&["DEL", "{user1}.name", "{user1}.mail"]).await,
        Reply::Integer(2)
    );
    assert_eq!(
        client.call(&["EXISTS", "{user1}.name"]).await,
        Reply::Integer(0)
    );
}

/// One client's recorded operations on one key each, for the linearizability checker.
type Recorded = Vec<(usize, Operation<CasInput, CasOutput>)>;

/// Runs one client through `node`'s Redis port until `stop`: random reads, writes and
/// compare-and-sets (against the value it last read) of `KEYS` keys, each recorded with
/// when it was sent and answered (micros since `epoch`). A refusal that applied nothing
/// (`-TRYAGAIN`) is left out; an unknown outcome (`-UNKNOWN`, a lost connection) is kept
/// without an answer: it may have applied.
async fn linearizability_client(
    node: &TestNode,
    client: u64,
    epoch: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Recorded {
    const KEYS: usize = 3;
    let mut recorded = Recorded::new();
    let mut session = RespClient::connect(node).await;
    assert_eq!(session.call(&["SELECT", "lin"]).await, ok());
    let mut last_read = [None; KEYS];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(client);
    let now = || epoch.elapsed().as_micros() as u64;
    for sequence in 0..10_000u64 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let key = rand::Rng::random_range(&mut rng, 0..KEYS);
        let name = format!("k{key}");
        let value = client * 1_000_000 + sequence;
        let input = match rand::Rng::random_range(&mut rng, 0..3) {
            0 => CasInput::Read,
            1 => CasInput::Write(value),
            _ => CasInput::Cas {
                expected: last_read[key],
                new: value,
            },
        };
        let start = now();
        let reply = match &input {
            CasInput::Read => session.call(&["GET", &name]).await,
            CasInput::Write(v) => session.call(&["SET", &name, &v.to_string()]).await,
            CasInput::Cas {
                expected: Some(old),
                new,
            } => {
                let args = ["CAS", &name, &old.to_string(), &new.to_string()];
                session.call(&args).await
            }
            CasInput::Cas {
                expected: None,
                new,
            } => session.call(&["SET", &name, &new.to_string(), "NX"]).await,
            CasInput::Delete => unreachable!("the clients do not delete"),
        };
        let end = now();
        let output = match (&input, reply) {
            (_, Reply::Error(error)) if error.starts_with("TRYAGAIN") => continue,
            (_, Reply::Error(error)) if error.starts_with("UNKNOWN") => None,
            (_, Reply::Error(error)) => panic!("unexpected error {error}"),
            (CasInput::Read, Reply::Nil) => Some(CasOutput::Read(None)),
            (CasInput::Read, Reply::Bulk(bytes)) => {
                let read = String::from_utf8(bytes).unwrap().parse().unwrap();
                Some(CasOutput::Read(Some(read)))
            }
            (CasInput::Write(_), Reply::Simple(_)) => Some(CasOutput::Done),
            (CasInput::Cas { .. }, Reply::Integer(applied)) => Some(CasOutput::Cas(applied == 1)),
            (CasInput::Cas { .. }, Reply::Simple(_)) => Some(CasOutput::Cas(true)),
            (CasInput::Cas { .. }, Reply::Nil) => Some(CasOutput::Cas(false)),
            (input, reply) => panic!("{input:?} answered {reply:?}"),
        };
        if let Some(CasOutput::Read(read)) = &output {
            last_read[key] = *read;
        }
        let end = output.as_ref().map(|_| end);
        recorded.push((
            key,
            Operation {
                input,
                output,
                start,
                end,
            },
        ));
    }
    recorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_a_partitioned_leader_and_a_partitioned_follower_are_linearizable() {
    let nodes = Arc::new(cluster(3).await);
    create_strong(&nodes, "lin", 1).await;
    let group = GroupId {
        keyspace: "lin".into(),
        shard: 0,
    };
    let epoch = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6u64)
        .map(|client| {
            let (nodes, stop) = (Arc::clone(&nodes), Arc::clone(&stop));
            tokio::spawn(async move {
                let node = &nodes[client as usize % 3];
                linearizability_client(node, client, epoch, stop).await
            })
        })
        .collect();
    // The leader is cut off from the majority, which elects another; then the cluster heals
    // and a follower is cut off instead.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let leader = leader_of(&nodes, &group).await;
    partition(&nodes, Some(leader));
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    partition(&nodes, None);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let leader = leader_of(&nodes, &group).await;
    partition(&nodes, Some((leader + 1) % 3));
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    partition(&nodes, None);
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut by_key: std::collections::BTreeMap<usize, Vec<Operation<CasInput, CasOutput>>> =
        Default::default();
    let all = futures_util::future::join_all(clients);
    let finished = tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("the clients stop within a minute");
    for recorded in finished {
        for (key, operation) in recorded.expect("no client failed") {
            by_key.entry(key).or_default().push(operation);
        }
    }
    let total: usize = by_key.values().map(Vec::len).sum();
    let answered = by_key.values().flatten().filter(|o| o.output.is_some());
    let cas_applied = answered
        .clone()
        .filter(|o| o.output == Some(CasOutput::Cas(true)))
        .count();
    eprintln!(
        "{total} operations, {} answered, {cas_applied} compare-and-sets applied",
        answered.count()
    );
    assert!(total > 100, "the clients ran: {total} operations");
    assert!(cas_applied > 0, "some compare-and-sets applied");
    for (key, history) in &by_key {
        let verdict = check(&CasRegister, history, 50_000_000);
        assert_eq!(verdict, Verdict::Linearizable, "key k{key}");
    }
}
