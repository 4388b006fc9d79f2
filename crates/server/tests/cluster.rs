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
