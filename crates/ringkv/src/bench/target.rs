//! The systems a benchmark drives: ringkv's REST API (`http://host:port`, or
//! `http://host:port/v1/ks/NAME` for a keyspace), any server speaking the Redis protocol
//! (`redis://host:port`), or etcd's v3 JSON gateway (`etcd://host:port`) — so one tool
//! measures ringkv, Redis and etcd alike. Several addresses, comma-separated
//! (`http://a:1,b:2`), share the connections between them, as clients of a cluster would.
//! Each connection is a plain TCP stream with hand-written framing of its own: the load
//! generator must cost far less per request than the server it measures.

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request a benchmark operation sends.
#[derive(Clone, Debug)]
pub enum Request {
    Get(String),
    Set(String, std::sync::Arc<[u8]>),
    /// Up to this many keys, from the start of the "user" keys.
    Scan(usize),
}

/// How a request went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Ok,
    NotFound,
    Error(String),
}

/// Which protocol a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Redis,
    Etcd,
}

/// A server (or the nodes of a cluster) to benchmark.
#[derive(Clone, Debug)]
pub struct Target {
    pub protocol: Protocol,
    /// The nodes; connection `i` goes to node `i % len`.
    pub addresses: Vec<String>,
    /// REST: where keys are, `/v1/keys` or `/v1/ks/NAME/keys`.
    pub keys_path: String,
    /// `?consistency=` for REST requests; `serializable` makes etcd reads serializable.
    pub consistency: Option<String>,
    /// Connections opened so far, to spread the next one.
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Target {
    /// Parses `http://host:port[,host:port...][/v1/ks/NAME]`, `redis://host:port[,...]` or
    /// `etcd://host:port[,...]`.
    pub fn parse(url: &str, consistency: Option<String>) -> anyhow::Result<Self> {
        let (protocol, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (Protocol::Http, rest)
        } else if let Some(rest) = url.strip_prefix("redis://") {
            (Protocol::Redis, rest)
        } else if let Some(rest) = url.strip_prefix("etcd://") {
            (Protocol::Etcd, rest)
        } else {
            bail!("target {url:?} must start with http://, redis:// or etcd://");
        };
        let (hosts, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let keys_path = match path.strip_prefix("/v1/ks/") {
            Some(keyspace) if protocol == Protocol::Http && !keyspace.is_empty() => {
                format!("/v1/ks/{keyspace}/keys")
            }
            _ if path.is_empty() => "/v1/keys".to_owned(),
            _ => bail!("target {url:?}: the only path a target takes is /v1/ks/NAME (REST)"),
        };
        let addresses: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        if addresses.iter().any(|address| !address.contains(':')) {
            bail!("target {url:?} needs a port for every address");
        }
        Ok(Self {
            protocol,
            addresses,
            keys_path,
            consistency,
            opened: Default::default(),
        })
    }

    /// Opens one connection.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let next = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let address = &self.addresses[next % self.addresses.len()];
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("cannot connect to {address}"))?;
        stream.set_nodelay(true)?;
        let query = match self.protocol {
            Protocol::Etcd => String::new(),
            _ => self
                .consistency
                .as_ref()
                .map(|level| format!("?consistency={level}"))
                .unwrap_or_default(),
        };
        let mut connection = Connection {
            stream,
            protocol: self.protocol,
            host: address.clone(),
            keys_path: self.keys_path.clone(),
            serializable: self.consistency.as_deref() == Some("serializable"),
            query,
            input: BytesMut::with_capacity(64 * 1024),
            output: Vec::with_capacity(64 * 1024),
        };
        // Over RESP the consistency is a setting of the connection.
        if let (Protocol::Redis, Some(level)) = (self.protocol, &self.consistency) {
            encode_command(
                &mut connection.output,
                &[b"RINGKV.CONSISTENCY", level.as_bytes()],
            );
            connection.stream.write_all(&connection.output).await?;
            if let Response::Error(message) = connection.read_responses(1).await?.remove(0) {
                anyhow::bail!("the target refused consistency {level:?}: {message}");
            }
        }
        Ok(connection)
    }
}

/// One connection, sending requests in pipelined batches.
pub struct Connection {
    stream: TcpStream,
    protocol: Protocol,
    host: String,
    keys_path: String,
    /// etcd: reads are serializable (else linearizable, etcd's default).
    serializable: bool,
    query: String,
    input: BytesMut,
    output: Vec<u8>,
}

impl Connection {
    /// Sends every request at once and reads their responses in order.
    pub async fn execute(&mut self, requests: &[Request]) -> io::Result<Vec<Response>> {
        self.output.clear();
        for request in requests {
            match self.protocol {
                Protocol::Redis => encode_redis(&mut self.output, request),
                Protocol::Http => encode_http(
                    &mut self.output,
                    request,
                    &self.host,
                    &self.keys_path,
                    &self.query,
                ),
                Protocol::Etcd => {
                    encode_etcd(&mut self.output, request, &self.host, self.serializable)
                }
            }
        }
        self.stream.write_all(&self.output).await?;
        self.read_responses(requests.len()).await
    }

    /// Reads `count` responses, in order.
    async fn read_responses(&mut self, count: usize) -> io::Result<Vec<Response>> {
        let mut responses = Vec::with_capacity(count);
        while responses.len() < count {
            let parsed = match self.protocol {
                Protocol::Redis => parse_redis(&self.input),
                Protocol::Http | Protocol::Etcd => parse_http(&self.input),
            };
            match parsed? {
                Some((response, length)) => {
                    self.input.advance(length);
                    responses.push(response);
                }
                None => {
                    self.input.reserve(64 * 1024);
                    if self.stream.read_buf(&mut self.input).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed the connection",
                        ));
                    }
                }
            }
        }
        Ok(responses)
    }
}

fn encode_redis(out: &mut Vec<u8>, request: &Request) {
    let count_string;
    let arguments: Vec<&[u8]> = match request {
        Request::Get(key) => vec![b"GET", key.as_bytes()],
        Request::Set(key, value) => vec![b"SET", key.as_bytes(), value],
        Request::Scan(count) => {
            count_string = count.to_string();
            vec![
                b"SCAN",
                b"0",
                b"MATCH",
                b"user*",
                b"COUNT",
                count_string.as_bytes(),
            ]
        }
    };
    encode_command(out, &arguments);
}

/// One RESP command: an array of bulk strings.
fn encode_command(out: &mut Vec<u8>, arguments: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", arguments.len()).as_bytes());
    for argument in arguments {
        out.extend_from_slice(format!("${}\r\n", argument.len()).as_bytes());
        out.extend_from_slice(argument);
        out.extend_from_slice(b"\r\n");
    }
}

fn encode_http(out: &mut Vec<u8>, request: &Request, host: &str, keys: &str, query: &str) {
    match request {
        Request::Get(key) => out.extend_from_slice(
            format!("GET {keys}/{key}{query} HTTP/1.1\r\nhost: {host}\r\naccept: application/octet-stream\r\n\r\n")
                .as_bytes(),
        ),
        Request::Set(key, value) => {
            out.extend_from_slice(
                format!(
                    "PUT {keys}/{key}{query} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/octet-stream\r\n\
                     content-length: {}\r\n\r\n",
                    value.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(value);
        }
        Request::Scan(count) => out.extend_from_slice(
            format!("GET {keys}?prefix=user&limit={count} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes(),
        ),
    }
}

/// A request to etcd's v3 JSON gateway: keys and values in base64; a scan is a range
/// read of the "user" keys.
fn encode_etcd(out: &mut Vec<u8>, request: &Request, host: &str, serializable: bool) {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let (path, body) = match request {
        Request::Get(key) => (
            "/v3/kv/range",
            format!(
                r#"{{"key":"{}","serializable":{serializable}}}"#,
                b64(key.as_bytes())
            ),
        ),
        Request::Set(key, value) => (
            "/v3/kv/put",
            format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64(key.as_bytes()),
                b64(value)
            ),
        ),
        Request::Scan(count) => (
            "/v3/kv/range",
            format!(
                r#"{{"key":"{}","range_end":"{}","limit":{count},"serializable":{serializable}}}"#,
                b64(b"user"),
                b64(b"uses")
            ),
        ),
    };
    out.extend_from_slice(
        format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn protocol_error(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// The end of the line starting at `at` (the index of its `\r`), if complete.
fn line_end(buffer: &[u8], at: usize) -> Option<usize> {
    buffer
        .get(at..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|end| at + end)
}

/// Where the complete RESP value starting at `at` ends, if it is all buffered.
fn redis_value_end(buffer: &[u8], at: usize, depth: usize) -> io::Result<Option<usize>> {
    if depth > 8 {
        return Err(protocol_error("reply nested too deep"));
    }
    let Some(end) = line_end(buffer, at) else {
        return Ok(None);
    };
    let header = &buffer[at..end];
    let number = || {
        std::str::from_utf8(&header[1..])
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
    };
    match header.first() {
        Some(b'+' | b'-' | b':' | b'_') => Ok(Some(end + 2)),
        Some(b'$') => {
            let len = number().ok_or_else(|| protocol_error("bad bulk length"))?;
            if len < 0 {
                return Ok(Some(end + 2));
            }
            let total = end + 2 + len as usize + 2;
            Ok((buffer.len() >= total).then_some(total))
        }
        Some(b'*' | b'%') => {
            let count = number().ok_or_else(|| protocol_error("bad array length"))?;
            let items = if header[0] == b'%' { count * 2 } else { count };
            let mut next = end + 2;
            for _ in 0..items.max(0) {
                match redis_value_end(buffer, next, depth + 1)? {
                    Some(item_end) => next = item_end,
                    None => return Ok(None),
                }
            }
            Ok(Some(next))
        }
        _ => Err(protocol_error("unknown reply type")),
    }
}

fn parse_redis(buffer: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let Some(end) = redis_value_end(buffer, 0, 0)? else {
        return Ok(None);
    };
    let response = match buffer[0] {
        b'-' => Response::Error(String::from_utf8_lossy(&buffer[1..end - 2]).into_owned()),
        b'_' => Response::NotFound,
        b'$' if buffer.starts_with(b"$-1") => Response::NotFound,
        _ => Response::Ok,
    };
    Ok(Some((response, end)))
}

fn parse_http(buffer: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let Some(header_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..header_end])
        .map_err(|_| protocol_error("non-UTF-8 header"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| protocol_error("bad status line"))?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let total = header_end + 4 + length;
    if buffer.len() < total {
        return Ok(None);
    }
    let response = match status {
        200..=300 => Response::Ok,
        404 => Response::NotFound,
        other => Response::Error(format!("HTTP {other}")),
    };
    Ok(Some((response, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_replies_are_framed_and_classified() {
        assert_eq!(parse_redis(b"+OK\r\n").unwrap(), Some((Response::Ok, 5)));
        assert_eq!(
            parse_redis(b"$-1\r\n").unwrap(),
            Some((Response::NotFound, 5))
        );
        assert_eq!(
            parse_redis(b"$3\r\nabc\r\n+OK").unwrap(),
            Some((Response::Ok, 9))
        );
        assert_eq!(parse_redis(b"$3\r\nab").unwrap(), None);
        let scan = b"*2\r\n$1\r\n0\r\n*1\r\n$5\r\nuser1\r\n";
        assert_eq!(parse_redis(scan).unwrap(), Some((Response::Ok, scan.len())));
        assert!(
            matches!(parse_redis(b"-BUSY x\r\n").unwrap(), Some((Response::Error(e), _)) if e == "BUSY x")
        );
    }

    #[test]
    fn http_responses_are_framed_and_classified() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1";
        assert_eq!(parse_http(ok).unwrap(), Some((Response::Ok, ok.len() - 8)));
        assert_eq!(
            parse_http(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap()
                .0,
            Response::NotFound
        );
        assert_eq!(
            parse_http(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").unwrap(),
            None
        );
        assert!(matches!(
            parse_http(b"HTTP/1.1 503 x\r\n\r\n").unwrap(),
            Some((Response::Error(_), _))
        ));
    }
}
