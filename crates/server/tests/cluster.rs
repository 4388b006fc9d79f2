//! Membership between real nodes in one process, over UDP on loopback: nodes started with
//! `join` find each other, see each other alive, share the ring, and see a stopped node leave.

mod support;

use std::time::{Duration, Instant};
use support::{start_node, TestNode};

fn members(node: &TestNode) -> Vec<ringkv_server::gossip::MemberView> {
    node.running
        .node
        .gossip
        .get()
        .expect("gossip runs")
        .members()
}

/// Waits (bounded) until `check` holds for the node's view of the cluster.
async fn eventually(
    node: &TestNode,
    what: &str,
    check: impl Fn(&[ringkv_server::gossip::MemberView]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check(&members(node)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{what}: not reached within 30 s; members seen: {:?}",
        members(node)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_a_seed_see_each_other_alive_and_a_stopped_node_leave() {
    let seed = start_node(|config| config.zone = "a".into()).await;
    let seed_address = seed.running.cluster_addr.to_string();
    let second = start_node(|config| {
        config.zone = "b".into();
        config.join = vec![seed_address.clone()];
    })
    .await;
    let third = start_node(|config| {
        config.zone = "c".into();
        config.join = vec![seed_address.clone()];
    })
    .await;
    for node in [&seed, &second, &third] {
        eventually(node, "all three alive", |members| {
            members.len() == 3
                && members
                    .iter()
                    .all(|m| m.liveness == "alive" && m.status == "normal")
        })
        .await;
    }
    let zones: std::collections::BTreeSet<String> =
        members(&third).into_iter().map(|m| m.zone).collect();
    assert_eq!(
        zones.into_iter().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "settings ride along"
    );

    // The third node stops: the others learn it left.
    let third_id = third.running.node.node_id.clone();
    third.running.shutdown().await;
    eventually(&seed, "third node gone", |members| {
        members
            .iter()
            .any(|m| m.id == third_id && (m.status == "left" || m.liveness != "alive"))
    })
    .await;
}

/// Goal: with a cluster secret, nodes that share it form a cluster, and a node with another
/// secret, or none, is never let into the ring (the rogue of issue 29 that asked for weight
/// 1000): its gossip is dropped and counted. Method: two nodes share a secret; a third with
/// another secret and a fourth with none join through the first; once the first has dropped
/// datagrams of both, and again a second later, its ring holds the two members only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_that_know_the_cluster_secret_join() {
    let secrets = tempfile::tempdir().unwrap();
    let ours = secrets.path().join("ours");
    let theirs = secrets.path().join("theirs");
    std::fs::write(&ours, "c2VjcmV0IG9mIHRoZSByZWFsIGNsdXN0ZXI=\n").unwrap();
    std::fs::write(&theirs, "YW5vdGhlciBjbHVzdGVyJ3Mgc2VjcmV0IQ==\n").unwrap();
    let with = |secret: &std::path::Path| Some(secret.to_path_buf());
    let seed_secret = with(&ours);
    let seed = start_node(move |config| config.cluster_secret_file = seed_secret).await;
    let seed_address = seed.running.cluster_addr.to_string();
    let (join, member_secret) = (seed_address.clone(), with(&ours));
    let member = start_node(move |config| {
        config.cluster_secret_file = member_secret;
        config.join = vec![join];
    })
    .await;
    eventually(&seed, "the member with the secret joins", |members| {
        members.len() == 2 && members.iter().all(|m| m.liveness == "alive")
    })
    .await;

    let (join, rogue_secret) = (seed_address.clone(), with(&theirs));
    let _rogue = start_node(move |config| {
        config.cluster_secret_file = rogue_secret;
        config.join = vec![join];
        config.weight = 1000;
    })
    .await;
    let join = seed_address.clone();
    let _open = start_node(move |config| config.join = vec![join]).await;
    let key = seed
        .running
        .node
        .cluster_key
        .clone()
        .expect("a secret is set");
    let deadline = Instant::now() + Duration::from_secs(30);
    while key.rejected_gossip().get() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        key.rejected_gossip().get() >= 2,
        "the strangers' gossip is dropped"
    );
    for _ in 0..2 {
        let ids: Vec<String> = members(&seed).into_iter().map(|m| m.id).collect();
        let expected = [&seed, &member].map(|n| n.running.node.node_id.clone());
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(expected.iter().all(|id| ids.contains(id)), "{ids:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(seed.running.node.view().ring.members().len() == 2);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &seed.running.node.registry.lock())
        .unwrap();
    assert!(
        text.lines()
            .any(|line| line.starts_with("ringkv_cluster_unauthenticated_gossip_total ")),
        "{text}"
    );
}
