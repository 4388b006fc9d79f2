//! The command line as users and scripts meet it: help on every command, the client commands
//! against a real node, one-line errors with a non-zero exit, and configuration precedence.

mod support;

use std::process::{Command, Output};
use support::ServerProcess;

fn ringkv(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    command.args(args).env_remove("RINGKV_NODE");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_has_help() {
    for command in [
        &[][..],
        &["server"],
        &["put"],
        &["get"],
        &["del"],
        &["scan"],
        &["bench"],
        &["cluster", "status"],
        &["cluster", "endpoints"],
        &["cluster", "repair"],
        &["cluster", "remove"],
        &["cluster", "leave"],
        &["dev-cluster"],
        &["engine-bench"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let output = ringkv(&args, &[]);
        assert!(output.status.success(), "{args:?}");
        assert!(
            stdout(&output).contains("Usage:"),
            "{args:?}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn client_commands_work_against_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let node = [("RINGKV_NODE", server.url.as_str())];
    assert_eq!(
        stdout(&ringkv(&["put", "user:1", "ada"], &node)).trim(),
        "OK"
    );
    ringkv(&["put", "user:2", "grace", "--ttl", "100"], &node);
    ringkv(&["put", "other", "x"], &node);
    assert_eq!(stdout(&ringkv(&["get", "user:1"], &node)).trim(), "ada");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&ringkv(&["get", "user:2", "--json"], &node))).unwrap();
    assert_eq!(json["value"], "grace");
    assert_eq!(json["ttl"], 100);
    assert_eq!(
        stdout(&ringkv(&["scan", "user:"], &node))
            .lines()
            .collect::<Vec<_>>(),
        ["user:1", "user:2"]
    );
    assert_eq!(stdout(&ringkv(&["del", "user:1"], &node)).trim(), "deleted");
    let missing = ringkv(&["get", "user:1"], &node);
    assert_eq!(missing.status.code(), Some(1));
    let error = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(error.lines().count(), 1, "one readable line: {error}");
    assert!(error.contains("not found"), "{error}");
    // --node on the command line wins over the environment.
    let flag = ringkv(
        &["get", "other", "--node", &server.url],
        &[("RINGKV_NODE", "http://127.0.0.1:1")],
    );
    assert_eq!(stdout(&flag).trim(), "x");
}

#[test]
fn an_unreachable_node_is_one_line_and_a_failure() {
    let output = ringkv(&["get", "k", "--node", "http://127.0.0.1:1"], &[]);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.starts_with("ringkv: cannot reach"), "{error}");
}

#[test]
fn configuration_precedence_is_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringkv.toml");
    std::fs::write(
        &file,
        "engine = \"btree\"\nzone = \"from-file\"\nweight = 3\nhttp = \"127.0.0.1:1111\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let output = ringkv(
        &[
            "server",
            "--config",
            file,
            "--http",
            "127.0.0.1:3333",
            "--print-config",
        ],
        &[
            ("RINGKV_ZONE", "from-env"),
            ("RINGKV_HTTP", "127.0.0.1:2222"),
        ],
    );
    assert!(output.status.success(), "{output:?}");
    let printed: toml::Value = toml::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        printed["engine"].as_str(),
        Some("btree"),
        "file over default"
    );
    assert_eq!(printed["weight"].as_integer(), Some(3), "file over default");
    assert_eq!(
        printed["zone"].as_str(),
        Some("from-env"),
        "environment over file"
    );
    assert_eq!(
        printed["http"].as_str(),
        Some("127.0.0.1:3333"),
        "flag over environment"
    );
    let bad = ringkv(&["server", "--config", "/nonexistent/ringkv.toml"], &[]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read config file"));
    let bad_engine = ringkv(&["server", "--engine", "rocks", "--print-config"], &[]);
    assert!(!bad_engine.status.success());
}

#[test]
fn bench_drives_both_protocols_and_reports_every_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--sync", "none"]);
    let targets = [
        server.url.clone(),
        format!("redis://127.0.0.1:{}", server.resp_port),
    ];
    for target in &targets {
        for workload in ["a", "e", "f"] {
            let args = [
                "bench",
                "--target",
                target,
                "--workload",
                workload,
                "--records",
                "200",
                "-n",
                "400",
                "-c",
                "4",
                "-P",
                "2",
                "--json",
            ];
            let output = ringkv(&args, &[]);
            assert!(
                output.status.success(),
                "{target} {workload}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let phases: Vec<serde_json::Value> = stdout(&output)
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            assert_eq!(phases.len(), 2, "a load and a run phase");
            assert_eq!(phases[0]["operations"]["insert"]["count"], 200);
            let run = &phases[1]["operations"];
            let total: u64 = run
                .as_object()
                .unwrap()
                .values()
                .map(|op| op["count"].as_u64().unwrap())
                .sum();
            let errors: u64 = run
                .as_object()
                .unwrap()
                .values()
                .map(|op| op["errors"].as_u64().unwrap())
                .sum();
            assert_eq!((total, errors), (400, 0), "{target} {workload}: {run}");
            assert!(run
                .as_object()
                .unwrap()
                .values()
                .all(|op| op["p50_us"].as_u64().unwrap() > 0));
        }
    }
    // The loaded records are really there.
    let client = ringkv_client::Client::new(&server.url);
    assert!(!client.list("user", 10, None).unwrap().keys.is_empty());
}

#[test]
fn cluster_status_and_endpoints_show_joined_nodes() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = ServerProcess::start(dir_a.path(), &["--zone", "east"]);
    let second = ServerProcess::start(
        dir_b.path(),
        &["--zone", "west", "--join", &first.cluster_address],
    );
    let node = [("RINGKV_NODE", first.url.as_str())];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let view = loop {
        let output = ringkv(&["cluster", "status", "--json"], &node);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let view: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        let members = view["members"].as_array().unwrap();
        let serving = |m: &serde_json::Value| m["liveness"] == "alive" && m["status"] == "normal";
        if members.len() == 2 && members.iter().all(serving) {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes never saw each other: {view}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let shares: f64 = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ownership"].as_f64().unwrap())
        .sum();
    assert!(
        (shares - 1.0).abs() < 1e-6,
        "ownership adds up to the whole ring: {view}"
    );
    let table = stdout(&ringkv(&["cluster", "status"], &node));
    assert!(table.contains("east") && table.contains("west"), "{table}");
    // The joined node streamed its ranges from the first: each is listed with the donor's
    // count of its records (none here) and the records moved.
    let joined = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["zone"] == "west")
        .unwrap();
    let ranges = joined["joining"]["transfers"][0]["ranges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!ranges.is_empty(), "{joined}");
    assert!(
        ranges.iter().all(|r| r["expected"] == 0 && r["moved"] == 0),
        "{joined}"
    );
    assert!(ringkv(&["cluster", "status", "--ranges"], &node)
        .status
        .success());
    let endpoints = stdout(&ringkv(
        &["cluster", "endpoints", "some-key", "--replicas", "2"],
        &node,
    ));
    assert_eq!(endpoints.lines().count(), 2, "{endpoints}");

    // A repair asked for now runs one exchange with the one peer and says so.
    let repair = ringkv(&["cluster", "repair", "--json"], &node);
    assert!(
        repair.status.success(),
        "{}",
        String::from_utf8_lossy(&repair.stderr)
    );
    let finished: serde_json::Value = serde_json::from_str(&stdout(&repair)).unwrap();
    assert_eq!(
        finished["exchanges_done"], finished["exchanges_total"],
        "{finished}"
    );
    assert!(
        finished["last_finished_ms"].as_u64().unwrap() > 0,
        "{finished}"
    );
    let table = stdout(&ringkv(&["cluster", "status"], &node));
    assert!(
        table.contains("synced") && table.contains("s ago"),
        "{table}"
    );

    // A live node cannot be removed; once dead it can, and it leaves the ring.
    let second_id = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["zone"] == "west")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .unwrap();
    let refused = ringkv(&["cluster", "remove", &second_id], &node);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("not down"), "{message}");
    second.kill_9();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let removed = ringkv(&["cluster", "remove", &second_id], &node);
        if removed.status.success() {
            assert!(stdout(&removed).contains("removed from the ring"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never seen down");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let view: serde_json::Value =
        serde_json::from_str(&stdout(&ringkv(&["cluster", "status", "--json"], &node))).unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 1, "{view}");
}

#[test]
fn dev_cluster_runs_joined_nodes_and_stops_them_all() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args([
            "dev-cluster",
            "--nodes",
            "3",
            "--base-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RINGKV_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cluster.stdout.take().unwrap()).lines();
    let urls: Vec<String> = (0..3)
        .map(|i| {
            let line = lines.next().expect("a line per node").unwrap();
            assert!(line.starts_with(&format!("node-{i} ")), "{line}");
            let http = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http="))
                .unwrap();
            format!("http://{http}")
        })
        .collect();
    let client = ringkv_client::Client::new(&urls[0]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let view = client.cluster().unwrap();
        let serving =
            |m: &ringkv_client::ClusterMember| m.liveness == "alive" && m.status == "normal";
        if view.members.len() == 3 && view.members.iter().all(serving) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dev cluster never formed: {view:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = cluster.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = cluster.wait().unwrap();
    assert!(
        status.success(),
        "dev-cluster exits cleanly on SIGTERM: {status}"
    );
    for url in &urls {
        let probe = ringkv_client::Client::with_timeout(url, std::time::Duration::from_secs(2));
        assert!(
            probe.cluster().is_err(),
            "{url} still answers after dev-cluster stopped"
        );
    }
}

/// Goal: `ringkv --version` names the release and the git commit the binary was built from.
#[test]
fn version_names_the_release_and_the_commit() {
    let output = ringkv(&["--version"], &[]);
    assert!(output.status.success());
    let line = stdout(&output);
    let release = env!("CARGO_PKG_VERSION");
    assert!(
        line.starts_with(&format!("ringkv {release} (commit ")),
        "{line}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    // In a checkout (as in CI) it is HEAD's commit; built elsewhere it may say "unknown".
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert!(
            line.contains(&format!("(commit {head})")),
            "{line} is not of {head}"
        );
    }
}

/// Goal: `--log-format json` makes every log line one JSON object with a level, a target and
/// a message, for log collectors. Method: a node started so, its standard error read until
/// its first lines, then stopped.
#[test]
fn logs_can_be_json_lines() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["server", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .args(["--http", "127.0.0.1:0", "--resp", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .env("RINGKV_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let first = receiver.recv_timeout(std::time::Duration::from_secs(30));
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Only lines written before the kill, which cannot be cut short.
    let lines: Vec<String> = first.into_iter().chain(receiver.try_iter()).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!lines.is_empty(), "the node logged nothing within 30 s");
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|error| {
            panic!("not JSON ({error}): {line}");
        });
        assert_eq!(event["level"], "INFO", "{line}");
        assert!(event["target"].is_string(), "{line}");
        assert!(event["message"].is_string(), "{line}");
        assert!(event["timestamp"].is_string(), "{line}");
    }
}
