//! `ringkv backup` and `ringkv restore` end to end, with real server processes on loopback:
//! a one-node cluster's backup (values, a TTL, deletes, siblings in a keyspace of their own)
//! restored into a fresh three-node cluster, where every key reads back as it was, a newer
//! write made there first is kept, a damaged file restores nothing, and restoring twice
//! changes nothing.

mod support;

use ringkv_client::Client;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{http_request, ServerProcess};

const KEYS: usize = 3000;

fn ringkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn succeeded(output: Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

fn backup(node: &str, out: &Path, extra: &[&str]) -> serde_json::Value {
    let out = out.to_str().unwrap();
    let mut args = vec!["backup", "--node", node, "--out", out, "--json"];
    args.extend_from_slice(extra);
    succeeded(ringkv(&args))
}

fn restore(node: &str, file: &Path) -> Output {
    ringkv(&["restore", "--node", node, file.to_str().unwrap(), "--json"])
}

/// The siblings of `key` in keyspace `sib`, sorted, as the node at `url` reads them.
fn siblings(url: &str, key: &str) -> Vec<String> {
    let (status, body) = http_request(url, "GET", &format!("/v1/ks/sib/keys/{key}"), "", b"");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let mut values: Vec<String> = match status {
        300 => body["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["value"].as_str().unwrap().to_owned())
            .collect(),
        200 => vec![body["value"].as_str().unwrap().to_owned()],
        other => panic!("GET {key}: {other} {body}"),
    };
    values.sort();
    values
}

fn three_node_cluster(dirs: &[tempfile::TempDir]) -> Vec<ServerProcess> {
    let first = ServerProcess::start(dirs[0].path(), &[]);
    let join = first.cluster_address.clone();
    let mut nodes = vec![first];
    for dir in &dirs[1..] {
        nodes.push(ServerProcess::start(dir.path(), &["--join", &join]));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    for node in &nodes {
        let client = Client::new(&node.url);
        while !client.cluster().is_ok_and(|view| {
            view.members.len() == 3
                && view
                    .members
                    .iter()
                    .all(|m| m.liveness == "alive" && m.status == "normal")
        }) {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    nodes
}

#[test]
fn a_backup_restores_into_a_cluster_of_another_size_keeping_versions_and_newer_writes() {
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("node.backup");
    let source_dir = tempfile::tempdir().unwrap();
    let source = ServerProcess::start(source_dir.path(), &[]);
    let client = Client::new(&source.url);
    for i in 0..KEYS {
        client
            .put(&format!("key{i}"), format!("value{i}").as_bytes(), None)
            .unwrap();
    }
    client.put("expiring", b"soon gone", Some(3600)).unwrap();
    for i in 0..10 {
        client.delete(&format!("key{i}")).unwrap();
    }
    let (status, _) = http_request(
        &source.url,
        "PUT",
        "/v1/ks/sib",
        "content-type: application/json\r\n",
        br#"{"replication": 3, "conflict": "siblings"}"#,
    );
    assert_eq!(status, 200);
    for value in ["left", "right"] {
        let body = format!(r#"{{"value": "{value}"}}"#);
        let headers = "content-type: application/json\r\n";
        let (status, _) = http_request(
            &source.url,
            "PUT",
            "/v1/ks/sib/keys/both",
            headers,
            body.as_bytes(),
        );
        assert_eq!(status, 200);
    }
    assert_eq!(siblings(&source.url, "both"), ["left", "right"]);

    let written = backup(&source.url, &file, &[]);
    // Every key, the deleted ones as tombstones, and the siblings' record.
    assert_eq!(written["records"], KEYS as u64 + 2, "{written}");
    assert!(!files.path().join("node.backup.partial").exists());
    let only_sib = backup(
        &source.url,
        &files.path().join("sib.backup"),
        &["--keyspace", "sib"],
    );
    assert_eq!(only_sib["records"], 1, "{only_sib}");

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let cluster = three_node_cluster(&dirs);
    let entry = Client::new(&cluster[0].url).with_consistency("quorum");
    let other = Client::new(&cluster[2].url).with_consistency("quorum");
    // Written in the new cluster before the restore, later than the backup's copy.
    entry.put("key20", b"newer", None).unwrap();

    // A damaged file restores nothing.
    let mut damaged = std::fs::read(&file).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    let damaged_file = files.path().join("damaged.backup");
    std::fs::write(&damaged_file, damaged).unwrap();
    let refused = restore(&cluster[0].url, &damaged_file);
    assert!(!refused.status.success());
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(reason.contains("checksum"), "{reason}");
    assert!(other.get("key100").unwrap().is_none());

    let restored = succeeded(restore(&cluster[0].url, &file));
    assert_eq!(restored["records"], written["records"]);
    for i in 10..KEYS {
        let key = format!("key{i}");
        let expected = if i == 20 {
            "newer".to_owned()
        } else {
            format!("value{i}")
        };
        let read = other
            .get(&key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is missing"));
        assert_eq!(read.value, expected.as_bytes(), "{key}");
    }
    for i in 0..10 {
        assert!(
            other.get(&format!("key{i}")).unwrap().is_none(),
            "key{i} came back"
        );
    }
    let expiring = other
        .get("expiring")
        .unwrap()
        .expect("the TTL key is there");
    assert!(
        expiring.ttl.is_some_and(|ttl| ttl <= 3600 && ttl > 3000),
        "{:?}",
        expiring.ttl
    );
    assert_eq!(siblings(&cluster[1].url, "both"), ["left", "right"]);
    let (status, body) = http_request(&cluster[1].url, "GET", "/v1/ks/sib", "", b"");
    assert_eq!(status, 200);
    let definition: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(definition["conflict"], "siblings");

    // Restoring again, into the source itself after a newer write there, changes nothing.
    client.put("key30", b"after the backup", None).unwrap();
    let again = succeeded(restore(&source.url, &file));
    assert_eq!(again["records"], written["records"]);
    let kept = client.get("key30").unwrap().unwrap();
    assert_eq!(kept.value, b"after the backup");
    assert_eq!(siblings(&source.url, "both"), ["left", "right"]);
}

#[test]
fn a_backup_of_a_missing_keyspace_or_a_cut_file_is_refused() {
    let files = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(dir.path(), &[]);
    let client = Client::new(&node.url);
    client.put("a", b"1", None).unwrap();
    let missing = ringkv(&[
        "backup",
        "--node",
        &node.url,
        "--out",
        files.path().join("x").to_str().unwrap(),
        "--keyspace",
        "nope",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    assert!(!files.path().join("x").exists() && !files.path().join("x.partial").exists());

    let file = files.path().join("whole.backup");
    backup(&node.url, &file, &[]);
    let bytes = std::fs::read(&file).unwrap();
    let cut = files.path().join("cut.backup");
    // Without its trailer (the last frame: 8 bytes of head, a kind byte, two varints).
    std::fs::write(&cut, &bytes[..bytes.len() - 11]).unwrap();
    let refused = restore(&node.url, &cut);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cut short"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
