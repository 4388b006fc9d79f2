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
        Self::start_with(data_dir, extra, Stdio::inherit(), None)
    }

    /// [`ServerProcess::start`] for a node serving TLS with a certificate `ca_pem` signed:
    /// its `url` is `https://`.
    pub fn start_tls(data_dir: &Path, extra: &[&str], ca_pem: &[u8]) -> Self {
        Self::start_with(data_dir, extra, Stdio::inherit(), Some(ca_pem))
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// [`ServerProcess::start`] with the node's log (its standard error) written to `log`.
    pub fn start_logging_to(data_dir: &Path, extra: &[&str], log: &Path) -> Self {
        let file = std::fs::File::create(log).expect("the log file can be created");
        Self::start_with(data_dir, extra, Stdio::from(file), None)
    }

    fn start_with(data_dir: &Path, extra: &[&str], stderr: Stdio, ca_pem: Option<&[u8]>) -> Self {
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
            .stderr(stderr)
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
        let scheme = if ca_pem.is_some() { "https" } else { "http" };
        let server = Self {
            child,
            url: format!("{scheme}://{address}"),
            resp_port,
            cluster_address,
        };
        server.wait_healthy(ca_pem);
        server
    }

    fn wait_healthy(&self, ca_pem: Option<&[u8]>) {
        let mut client = ringkv_client::Client::with_timeout(&self.url, Duration::from_secs(2));
        if let Some(pem) = ca_pem {
            client = client
                .with_ca_certificates(pem)
                .expect("the CA file parses");
        }
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

    /// Waits up to `limit` for the process to end by itself; its exit status if it did.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("the child can be polled") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
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

/// A RESP command, encoded by the server's own frame encoder (an array of bulk strings).
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    use ringkv_server::resp::frame::Frame;
    let frame = Frame::Array(
        args.iter()
            .map(|arg| Frame::Bulk(bytes::Bytes::copy_from_slice(arg)))
            .collect(),
    );
    let mut out = bytes::BytesMut::new();
    frame.encode(2, &mut out);
    out.to_vec()
}

/// Reads one simple or bulk reply (`None`: a nil bulk); `Err` once the connection is gone.
pub fn resp_reply(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let line = &line[..line.len().saturating_sub(2)];
    match line.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&line[1..]).unwrap().parse().unwrap();
            if len < 0 {
                return Ok(None);
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data)?;
            data.truncate(len as usize);
            Ok(Some(data))
        }
        _ => Ok(Some(line.to_vec())),
    }
}

/// Runs `commands` as one pipeline and returns their replies.
pub fn resp_pipeline(
    stream: &mut std::net::TcpStream,
    reader: &mut impl std::io::BufRead,
    commands: &[Vec<u8>],
) -> std::io::Result<Vec<Option<Vec<u8>>>> {
    use std::io::Write;
    stream.write_all(&commands.concat())?;
    commands.iter().map(|_| resp_reply(reader)).collect()
}

/// A RESP connection to `port` with a reader over it, bounded by a 30 s timeout per read.
pub fn resp_connect(port: u16) -> (std::net::TcpStream, BufReader<std::net::TcpStream>) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("RESP connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout can be set");
    let reader = BufReader::new(stream.try_clone().expect("the stream can be cloned"));
    (stream, reader)
}

/// One REST request over a fresh connection (`Connection: close`): the status code and the
/// body. `path` is sent exactly as given, so a test controls its percent-encoding.
pub fn http_request(
    url: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let address = url.strip_prefix("http://").expect("an http:// URL");
    let mut stream = std::net::TcpStream::connect(address).expect("REST connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout can be set");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .expect("the request is sent");
    stream.write_all(body).expect("the body is sent");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("the reply is read");
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let status = std::str::from_utf8(&reply[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, reply[split + 4..].to_vec())
}

/// `bytes` with every byte percent-encoded: the longest form a key can take in a URL.
pub fn percent_encode_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}
