//! The web dashboard in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) against a cluster of real `ringkv server` processes. The page must load
//! with no console errors, draw every node on the ring, find a key's replicas, and show a
//! killed node down. Screenshots of each state are saved under `target/tmp/screenshots`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them and sets
//! `RINGKV_REQUIRE_TOOLS=1`; without them, and without that variable, the test is skipped).

mod support;

use ringkv_client::Client;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{tool_available, ServerProcess};

/// Longest any wait may take (the failure detector declares a node down within seconds).
const WAIT_MAX: Duration = Duration::from_secs(40);

/// A headless Chromium session through a chromedriver process, both ended on drop.
struct Browser {
    driver: Child,
    session: String,
    base: String,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(started.elapsed() < WAIT_MAX, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Browser {
            driver,
            session: String::new(),
            base,
        };
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let session = browser.call("POST", "/session", Some(capabilities));
        browser.session = session["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut answer = match (method, body) {
            ("GET", _) => ureq::get(&url).call(),
            ("DELETE", _) => ureq::delete(&url).call(),
            (_, body) => ureq::post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        }
        .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"));
        let text = answer.body_mut().read_to_string().unwrap();
        let reply: Value = serde_json::from_str(&text).unwrap();
        reply["value"].clone()
    }

    fn in_session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn open(&self, url: &str) {
        self.in_session("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; what it returns.
    fn run(&self, script: &str) -> Value {
        self.in_session(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Waits (bounded) until `script` returns true in the page.
    fn wait_for(&self, what: &str, script: &str) {
        let started = Instant::now();
        while self.run(script) != json!(true) {
            assert!(
                started.elapsed() < WAIT_MAX,
                "{what}: not within {WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a screenshot as `target/tmp/screenshots/{name}.png`.
    fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.in_session("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }

    /// The browser console's messages of level SEVERE (errors) since the last call.
    fn console_errors(&self) -> Vec<String> {
        let logs = self.in_session("POST", "/se/log", Some(json!({ "type": "browser" })));
        logs.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = ureq::delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_dashboard_shows_the_ring_a_keys_replicas_and_a_killed_node_down() {
    if !tool_available("chromedriver") || !tool_available("chromium") {
        return;
    }
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = ServerProcess::start(dirs[0].path(), &["--zone", "a"]);
    let join = first.cluster_address.clone();
    let mut nodes = vec![first];
    for (dir, zone) in dirs[1..].iter().zip(["b", "c"]) {
        nodes.push(ServerProcess::start(
            dir.path(),
            &["--zone", zone, "--join", &join],
        ));
    }
    let client = Client::new(&nodes[0].url);
    let started = Instant::now();
    while !client.cluster().is_ok_and(|view| {
        view.members.len() == 3
            && view
                .members
                .iter()
                .all(|m| m.liveness == "alive" && m.status == "normal")
    }) {
        assert!(started.elapsed() < WAIT_MAX, "the cluster did not form");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..20 {
        client
            .put(&format!("key{i}"), format!("value{i}").as_bytes(), None)
            .unwrap();
    }

    let browser = Browser::start();
    browser.open(&format!("{}/", nodes[0].url));
    browser.wait_for(
        "the page is live with three members",
        "return document.getElementById('live').textContent === 'live' \
         && document.querySelectorAll('#members tbody tr').length === 3",
    );
    browser.wait_for(
        "the ring has arcs of every node, and a legend entry each",
        "const nodes = new Set([...document.querySelectorAll('#arcs path')] \
           .map((p) => p.dataset.node)); \
         return nodes.size === 3 && document.querySelectorAll('#legend .legend-item').length === 3",
    );
    browser.screenshot("1-healthy");

    browser.run(
        "const form = document.getElementById('lookup'); form.key.value = 'key7'; \
         form.requestSubmit(); return true;",
    );
    browser.wait_for(
        "the lookup lists the key's three replicas, each holding the value",
        "const cells = [...document.querySelectorAll('#placement tbody tr td:last-child')]; \
         return cells.length === 3 && cells.every((c) => c.textContent === 'value') \
           && document.querySelectorAll('#marker circle').length === 1",
    );
    browser.screenshot("2-key-lookup");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let killed = client
        .cluster()
        .unwrap()
        .members
        .into_iter()
        .find(|m| nodes[2].url.ends_with(&m.http))
        .expect("the third node is a member")
        .id;
    nodes.pop().unwrap().kill_9();
    browser.wait_for(
        "the killed node's row says down and its arcs fade",
        &format!(
            "const row = document.querySelector('#members tr[data-node=\"{killed}\"]'); \
             const arc = document.querySelector('#arcs path[data-node=\"{killed}\"]'); \
             return !!row && row.dataset.liveness === 'down' \
               && !!arc && arc.getAttribute('fill-opacity') === '0.25'"
        ),
    );
    browser.screenshot("3-node-down");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// A `ringkv dev-cluster` process, ended (SIGTERM, so it ends its nodes) on drop.
struct DevCluster {
    process: Child,
    urls: Vec<String>,
}

impl DevCluster {
    fn start(nodes: usize, dir: &std::path::Path) -> DevCluster {
        use std::io::{BufRead, BufReader};
        let mut process = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args([
                "dev-cluster",
                "--nodes",
                &nodes.to_string(),
                "--base-port",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("RINGKV_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
        let urls = (0..nodes)
            .map(|_| {
                let line = lines.next().expect("a line per node").unwrap();
                let http = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("http="))
                    .unwrap();
                format!("http://{http}")
            })
            .collect();
        DevCluster { process, urls }
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let pid = self.process.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.process.wait();
    }
}

/// The liveness node-0 sees of node `name`.
fn liveness(client: &Client, name: &str) -> Option<String> {
    let view = client.cluster().ok()?;
    let member = view.members.into_iter().find(|m| m.id == name)?;
    Some(member.liveness)
}

/// `POST /v1/chaos/{target}/{action}` on node `url`; the state it answers.
fn chaos(url: &str, target: &str, action: &str) -> Value {
    let mut answer = ureq::post(&format!("{url}/v1/chaos/{target}/{action}"))
        .send_empty()
        .unwrap_or_else(|error| panic!("{action} {target}: {error}"));
    serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
}

/// Goal: in a cluster started by `ringkv dev-cluster`, the dashboard's chaos panel kills a
/// node, which the page then shows down (and, with a second replica paused, the rate of
/// requests refused for want of replicas), and restarts it, which brings it back; the load
/// starts and stops, and a node pauses and resumes (through `/v1/chaos`, as the panel's
/// buttons do); a node isolated by a partition is down to the others and they to it, and
/// healing the network brings every link back. Method: headless Chromium clicks the panel's
/// buttons on node-0's page.
#[test]
fn the_chaos_panel_kills_and_restarts_a_node_and_the_page_follows() {
    if !tool_available("chromedriver") || !tool_available("chromium") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(3, dir.path());
    let client = Client::new(&cluster.urls[0]);
    let wait = |what: &str, check: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !check() {
            assert!(
                started.elapsed() < WAIT_MAX,
                "{what}: not within {WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait("the dev cluster forms", &|| {
        client.cluster().is_ok_and(|view| {
            view.members.len() == 3
                && view
                    .members
                    .iter()
                    .all(|m| m.liveness == "alive" && m.status == "normal")
        })
    });

    let browser = Browser::start();
    browser.open(&format!("{}/", cluster.urls[0]));
    browser.wait_for(
        "the chaos panel shows three running nodes",
        "return !document.getElementById('chaos').hidden \
         && [...document.querySelectorAll('#chaos-nodes tr')] \
              .filter((r) => r.dataset.state === 'running').length === 3",
    );
    browser.run("document.getElementById('chaos-load-start').click(); return true;");
    browser.wait_for(
        "the load runs",
        "return document.getElementById('load-state').textContent === 'running'",
    );
    browser.run("document.getElementById('chaos-node-2-kill').click(); return true;");
    browser.wait_for(
        "the page shows node-2 down, its process killed",
        "const row = document.querySelector('#members tr[data-node=\"node-2\"]'); \
         const process = document.querySelector('#chaos-nodes tr[data-node=\"node-2\"]'); \
         return !!row && row.dataset.liveness === 'down' && process.dataset.state === 'killed'",
    );
    assert_eq!(liveness(&client, "node-2").as_deref(), Some("down"));
    browser.screenshot("4-chaos-node-killed");

    // A second replica lost: the load's quorum writes fail, and the page shows the rate of
    // refused requests; the paused node resumed, they succeed again.
    browser.run("document.getElementById('chaos-node-1-pause').click(); return true;");
    browser.wait_for(
        "the page shows requests refused for want of replicas",
        "return parseFloat(document.getElementById('unavailable').textContent) > 0",
    );
    browser.screenshot("4b-chaos-quorum-lost");
    browser.run("document.getElementById('chaos-node-1-resume').click(); return true;");
    browser.wait_for(
        "the page shows node-1 alive again",
        "const row = document.querySelector('#members tr[data-node=\"node-1\"]'); \
         return !!row && row.dataset.liveness === 'alive'",
    );

    browser.run("document.getElementById('chaos-node-2-restart').click(); return true;");
    browser.wait_for(
        "the page shows node-2 alive again",
        "const row = document.querySelector('#members tr[data-node=\"node-2\"]'); \
         return !!row && row.dataset.liveness === 'alive'",
    );
    browser.screenshot("5-chaos-node-restarted");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let paused = chaos(&cluster.urls[0], "node-1", "pause");
    assert_eq!(paused["nodes"][1]["state"], "paused", "{paused}");
    wait("node-1, paused, is declared down", &|| {
        liveness(&client, "node-1").as_deref() == Some("down")
    });
    let resumed = chaos(&cluster.urls[0], "node-1", "resume");
    assert_eq!(resumed["nodes"][1]["state"], "running", "{resumed}");
    wait("node-1, resumed, is alive again", &|| {
        liveness(&client, "node-1").as_deref() == Some("alive")
    });

    // A partition from the panel: node-2 isolated; each side sees the other down.
    browser.run("document.getElementById('chaos-node-2-isolate').click(); return true;");
    browser.wait_for(
        "the page shows node-2 cut off and down",
        "const row = document.querySelector('#members tr[data-node=\"node-2\"]'); \
         const process = document.querySelector('#chaos-nodes tr[data-node=\"node-2\"]'); \
         return !!row && row.dataset.liveness === 'down' && process.dataset.isolated === 'true'",
    );
    let isolated = Client::new(&cluster.urls[2]);
    wait("node-2 sees the other side down", &|| {
        liveness(&isolated, "node-0").as_deref() == Some("down")
            && liveness(&isolated, "node-1").as_deref() == Some("down")
    });
    assert_eq!(liveness(&client, "node-1").as_deref(), Some("alive"));
    browser.screenshot("6-chaos-partitioned");
    let slowed = chaos(&cluster.urls[0], "node-1", "slow");
    assert_eq!(slowed["nodes"][1]["delay_ms"], 200, "{slowed}");
    browser.run("document.getElementById('chaos-network-heal').click(); return true;");
    browser.wait_for(
        "the page shows node-2 back after the heal",
        "const row = document.querySelector('#members tr[data-node=\"node-2\"]'); \
         const process = document.querySelector('#chaos-nodes tr[data-node=\"node-2\"]'); \
         return !!row && row.dataset.liveness === 'alive' && process.dataset.isolated === 'false'",
    );
    wait("node-2 sees every node alive again", &|| {
        ["node-0", "node-1"]
            .iter()
            .all(|name| liveness(&isolated, name).as_deref() == Some("alive"))
    });
    browser.screenshot("7-chaos-healed");
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let stopped = chaos(&cluster.urls[0], "load", "stop");
    assert_eq!(stopped["load"], "stopped", "{stopped}");
}
