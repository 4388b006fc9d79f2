//! An in-process node on loopback ports chosen by the OS, and a minimal RESP client that
//! speaks raw protocol, so tests see exactly the bytes a Redis client would.

#![allow(dead_code)]

pub mod cluster;

use ringkv_server::{RunningNode, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a test waits for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A node for one test; its data directory goes when it is dropped.
pub struct TestNode {
    pub running: RunningNode,
    pub dir: tempfile::TempDir,
}

/// Starts a node with the given changes to the default configuration.
pub async fn start_node(configure: impl FnOnce(&mut ServerConfig)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".into(),
        resp: "127.0.0.1:0".into(),
        listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    };
    configure(&mut config);
    let running = ringkv_server::start(config).await.unwrap();
    TestNode { running, dir }
}

/// A reply as the test reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// A bulk reply's text.
    pub fn text(&self) -> String {
        match self {
            Reply::Bulk(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Reply::Simple(text) => text.clone(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }
}

/// A raw RESP connection.
pub struct RespClient {
    reader: BufReader<TcpStream>,
}

impl RespClient {
    /// Connects to a node's Redis-protocol port.
    pub async fn connect(node: &TestNode) -> Self {
        let stream = TcpStream::connect(node.running.resp_addr).await.unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Encodes a command as a RESP array.
    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send_raw(&Self::encode(&args)).await;
        self.read().await
    }

    /// Reads one reply.
    pub async fn read(&mut self) -> Reply {
        tokio::time::timeout(REPLY_TIMEOUT, self.read_reply())
            .await
            .expect("a reply in time")
    }

    /// Whether the server closed the connection (EOF within the timeout).
    pub async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.reader.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    fn read_reply(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + '_>> {
        Box::pin(async move {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            let line = line.trim_end_matches("\r\n");
            let (marker, rest) = line.split_at(1);
            match marker {
                "+" => Reply::Simple(rest.into()),
                "-" => Reply::Error(rest.into()),
                ":" => Reply::Integer(rest.parse().unwrap()),
                "_" => Reply::Nil,
                "$" if rest == "-1" => Reply::Nil,
                "$" => {
                    let mut data = vec![0u8; rest.parse::<usize>().unwrap() + 2];
                    self.reader.read_exact(&mut data).await.unwrap();
                    data.truncate(data.len() - 2);
                    Reply::Bulk(data)
                }
                "*" => {
                    let mut items = Vec::new();
                    for _ in 0..rest.parse::<usize>().unwrap() {
                        items.push(self.read_reply().await);
                    }
                    Reply::Array(items)
                }
                "%" => {
                    let mut pairs = Vec::new();
                    for _ in 0..rest.parse::<usize>().unwrap() {
                        let key = self.read_reply().await;
                        pairs.push((key, self.read_reply().await));
                    }
                    Reply::Map(pairs)
                }
                other => panic!("unexpected reply marker {other:?} in {line:?}"),
            }
        })
    }
}

/// `+OK`.
pub fn ok() -> Reply {
    Reply::Simple("OK".into())
}

/// A bulk string.
pub fn bulk(text: &str) -> Reply {
    Reply::Bulk(text.as_bytes().to_vec())
}
