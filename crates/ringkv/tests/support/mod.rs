//! Helpers for tests that run the real `ringkv` binary as a child process: start a node on a
//! free loopback port (the node binds port 0 and prints the address it got), and make sure
//! it is killed when the test ends, pass or fail.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `ringkv server` child process, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// The REST API base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The Redis-protocol port.
    pub resp_port: u16,
    /// The cluster (gossip) address.
    pub cluster_address: String,
}

impl ServerProcess {
    /// Starts a node on `data_dir` with extra flags, and waits until it serves.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--http",
                "127.0.0.1:0",
                "--resp",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RINGKV_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the ringkv binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(name).map(str::to_owned))
                };
                if let (Some(http), Some(resp), Some(cluster)) =
                    (field("http="), field("resp="), field("cluster="))
                {
                    let _ = sender.send((http, resp, cluster));
                }
            }
        });
        let (address, resp, cluster_address) = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(addresses) => addresses,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("the child can be waited for");
                panic!("ringkv server did not report its address within {START_TIMEOUT:?} (exit: {status})");
            }
        };
        let resp_port = resp
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("resp=HOST:PORT");
        let server = Self {
            child,
            url: format!("http://{address}"),
            resp_port,
            cluster_address,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let client = ringkv_client::Client::with_timeout(&self.url, Duration::from_secs(2));
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if client.list("", 1, None).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ringkv server at {} never became healthy", self.url);
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill_9(mut self) {
        self.child.kill().expect("the child can be killed");
        self.child.wait().expect("the child can be reaped");
    }

    /// Stops the process with SIGTERM (a clean shutdown) and waits for it to exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + START_TIMEOUT;
        while self.is_running() {
            assert!(
                Instant::now() < deadline,
                "server did not stop within {START_TIMEOUT:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the child can be polled")
            .is_none()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an external tool is installed; tests that need one fail when it is missing and
/// `RINGKV_REQUIRE_TOOLS=1` (as in CI), and are skipped with a note otherwise.
pub fn tool_available(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("RINGKV_REQUIRE_TOOLS").is_err(),
            "{name} is required (RINGKV_REQUIRE_TOOLS is set)"
        );
        eprintln!("SKIPPED: {name} is not installed (apt-get install redis-tools python3-redis)");
    }
    found
}
