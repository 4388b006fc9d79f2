//! A cluster of real `ringkv server` processes on loopback, end to end: quorum writes through
//! one node read through another, every key on exactly the replicas `ringkv cluster
//! endpoints` names, and a node killed with SIGKILL: quorum still works, `all` fails with a
//! clear error. Every wait is bounded.

mod support;

use ringkv_client::{Client, ClientError};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};
use support::ServerProcess;

/// Longest any convergence wait may take.
const CONVERGE_WITHIN: Duration = Duration::from_secs(40);

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {CONVERGE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The replicas `ringkv cluster endpoints` names for `key`, asked of the node at `url`.
fn endpoints(url: &str, key: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["cluster", "endpoints", key, "--json", "--node", url])
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    serde_json::from_value(answer["endpoints"].clone()).unwrap()
}

#[test]
fn a_four_process_cluster_replicates_and_survives_a_killed_node() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = ServerProcess::start(dirs[0].path(), &["--zone", "a"]);
    let join = first.cluster_address.clone();
    let mut nodes = vec![first];
    for (i, zone) in ["b", "c", "d"].iter().enumerate() {
        nodes.push(ServerProcess::start(
            dirs[i + 1].path(),
            &["--zone", zone, "--join", &join],
        ));
    }
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::new(&n.url).with_consistency("quorum"))
        .collect();
    for client in &clients {
        wait_until("every node sees four alive members, done joining", || {
            client.cluster().is_ok_and(|view| {
                view.members.len() == 4
                    && view
                        .members
                        .iter()
                        .all(|m| m.liveness == "alive" && m.status == "normal")
            })
        });
    }
    // Node ids by REST address, to match endpoints with the nodes holding copies.
    let view = clients[0].cluster().unwrap();
    let id_of = |url: &str| -> String {
        let member = view
            .members
            .iter()
            .find(|m| url.ends_with(&m.http))
            .expect("every node is a member");
        member.id.clone()
    };
    let ids: Vec<String> = nodes.iter().map(|n| id_of(&n.url)).collect();

    for i in 0..30 {
        clients[0]
            .put(&format!("key{i}"), format!("value{i}").as_bytes(), None)
            .unwrap();
    }
    for i in 0..30 {
        let read = clients[1].get(&format!("key{i}")).unwrap().expect("found");
        assert_eq!(read.value, format!("value{i}").as_bytes());
    }
    for i in 0..30 {
        let key = format!("key{i}");
        let named = endpoints(&nodes[2].url, &key);
        assert_eq!(named.len(), 3, "N = 3 replicas: {named:?}");
        wait_until("every replica holds its copy, and no other node", || {
            let holders: BTreeSet<String> = clients
                .iter()
                .zip(&ids)
                .filter(|(client, _)| client.get_local(&key).unwrap().is_some())
                .map(|(_, id)| id.clone())
                .collect();
            holders == named
        });
    }

    // A crash: the others see it down, quorum still succeeds, `all` fails clearly.
    let killed_id = ids[3].clone();
    nodes.pop().unwrap().kill_9();
    wait_until("the survivors see the killed node down", || {
        clients[..3].iter().all(|client| {
            client.cluster().is_ok_and(|view| {
                view.members
                    .iter()
                    .any(|m| m.id == killed_id && m.liveness == "down")
            })
        })
    });
    for i in 0..30 {
        let key = format!("after{i}");
        clients[0].put(&key, b"quorum", None).unwrap();
        let read = clients[2].get(&key).unwrap().expect("found");
        assert_eq!(read.value, b"quorum");
    }
    // Some key has the killed node among its replicas: writing it with `all` succeeds through
    // the fourth node, which keeps a hint for the killed one (a sloppy quorum), and fails
    // when every acknowledgement must come from the key's own replicas (`pw=all`).
    let key = (0..1000)
        .map(|i| format!("probe{i}"))
        .find(|key| endpoints(&nodes[0].url, key).contains(&killed_id))
        .expect("the killed node owns part of the ring");
    let all = Client::new(&nodes[1].url).with_consistency("all");
    all.put(&key, b"sloppy", None)
        .expect("a fallback stands in for the killed replica");
    match all.with_primary_writes("all").put(&key, b"everyone", None) {
        Err(ClientError::Server {
            status, message, ..
        }) => {
            assert_eq!(status, 503);
            assert!(
                message.starts_with("2 of the 3 replicas needed answered"),
                "{message}"
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
}
