//! The Redis protocol (RESP2, and RESP3 after `HELLO 3`), so `redis-cli`, `redis-benchmark`
//! and Redis client libraries work unchanged. The layer is thin: [`request`] parses with hard
//! limits, [`commands`] maps each command onto one store request, [`frame`] encodes replies.
//!
//! Databases `SELECT 0..15` are keyspaces: 0 is `default` (the one `/v1/keys` serves), n is
//! `dbN`.

pub mod commands;
pub mod connection;
pub mod frame;
pub mod glob;
pub mod loops;
pub mod metrics;
pub mod replies;
pub mod request;

use ringkv_coordinator::node::Node;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Databases `SELECT` accepts, as in Redis.
pub const DATABASES: u8 = 16;

/// SCAN cursors remembered per node; the oldest is forgotten first.
const CURSORS_MAX: usize = 65_536;

/// Bytes of keys the remembered SCAN cursors may hold together (each holds the key its scan
/// resumes after, up to `KEY_BYTES_MAX`); the oldest are forgotten first.
const CURSOR_BYTES_MAX: usize = 64 << 20;

/// What one remembered cursor costs beyond its key: its id, database and place in the order.
const CURSOR_OVERHEAD_BYTES: usize = 64;

const _: () = assert!(
    CURSOR_BYTES_MAX >= 1024 * (ringkv_core::limits::KEY_BYTES_MAX + CURSOR_OVERHEAD_BYTES)
);

/// The keyspace of Redis database `db`.
pub fn keyspace_of(db: u8) -> String {
    if db == 0 {
        ringkv_coordinator::keyspaces::DEFAULT_KEYSPACE.to_owned()
    } else {
        format!("db{db}")
    }
}

/// State the Redis-protocol connections of one node share.
pub struct RespShared {
    /// The node.
    pub node: Arc<Node>,
    /// When the node started serving (for INFO).
    pub started: Instant,
    /// Connections open now.
    pub connected: AtomicUsize,
    /// Connections waiting in a blocking command now (INFO's `blocked_clients`).
    pub blocked: AtomicUsize,
    /// Set when the node stops: blocking commands return at once.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Commands executed since start.
    pub commands: AtomicU64,
    /// Memory held by large replies, bounded.
    pub replies: replies::ReplyMemory,
    /// The Redis-protocol server's metrics.
    pub metrics: metrics::RespMetrics,
    next_client_id: AtomicU64,
    cursors: parking_lot::Mutex<Cursors>,
    /// Redis tunables that mean nothing here, as `CONFIG SET` last set them (see
    /// `commands::server::config`).
    pub inert_config: parking_lot::Mutex<std::collections::BTreeMap<String, String>>,
}

/// SCAN cursors: Redis clients expect a decimal cursor, but our scans resume after a key, so
/// each cursor handed out names the key to resume after (as kvrocks does). Shared by every
/// connection, so a client may continue a scan on another connection of its pool. Cursor ids
/// are random, so one client cannot guess another's, and the table is bounded in count and
/// in bytes, the oldest forgotten first.
#[derive(Default)]
struct Cursors {
    positions: HashMap<u64, (u8, Vec<u8>)>,
    order: VecDeque<u64>,
    /// Bytes the remembered cursors hold, by [`cursor_bytes`].
    bytes: usize,
}

/// What remembering a cursor at `key` costs.
fn cursor_bytes(key: &[u8]) -> usize {
    key.len() + CURSOR_OVERHEAD_BYTES
}

impl RespShared {
    /// Shared state for `node`'s connections.
    pub fn new(node: Arc<Node>) -> Self {
        let config = &node.config;
        let metrics = metrics::RespMetrics::register(&mut node.registry.lock());
        let replies = replies::ReplyMemory::new(
            usize::try_from(config.resp_reply_bytes_max).unwrap_or(usize::MAX),
            usize::try_from(config.resp_replies_bytes_max).unwrap_or(usize::MAX),
            metrics.reply_bytes.clone(),
        );
        Self {
            replies,
            metrics,
            node,
            started: Instant::now(),
            connected: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            commands: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            cursors: parking_lot::Mutex::new(Cursors::default()),
            inert_config: parking_lot::Mutex::default(),
        }
    }

    /// A fresh client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Remembers where a scan of `db` stopped; returns the cursor to hand out (a random
    /// number, never 0).
    pub fn save_cursor(&self, db: u8, after: Vec<u8>) -> u64 {
        self.cursors.lock().save(db, after)
    }

    /// Where cursor `id` of `db` resumes; `None` if unknown, forgotten, or of another
    /// database.
    pub fn cursor(&self, db: u8, id: u64) -> Option<Vec<u8>> {
        self.cursors.lock().get(db, id)
    }
}

impl Cursors {
    fn save(&mut self, db: u8, after: Vec<u8>) -> u64 {
        let id = loop {
            let id = rand::random::<u64>();
            if id != 0 && !self.positions.contains_key(&id) {
                break id;
            }
        };
        self.bytes += cursor_bytes(&after);
        self.positions.insert(id, (db, after));
        self.order.push_back(id);
        while self.order.len() > CURSORS_MAX || self.bytes > CURSOR_BYTES_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, key)) = self.positions.remove(&oldest) {
                self.bytes -= cursor_bytes(&key);
            }
        }
        id
    }

    fn get(&self, db: u8, id: u64) -> Option<Vec<u8>> {
        self.positions
            .get(&id)
            .filter(|(cursor_db, _)| *cursor_db == db)
            .map(|(_, key)| key.clone())
    }
}

/// Accepts Redis-protocol connections until `shutdown` turns true, and serves them on the
/// node's event loops ([`loops`]); returns once those have stopped. At most
/// `connections_max` are served at once; one more is told so and closed, as Redis does.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<RespShared>,
    loops: loops::RespLoops,
    shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.node.config.connections_max));
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting a Redis-protocol connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let (shared, shutdown) = (Arc::clone(&shared), shutdown.clone());
                let tls = tls.clone();
                loops.serve(stream, move |stream| async move {
                    let peer = Some(peer.ip());
                    match tls {
                        None => connection::handle(stream, peer, shared, shutdown).await,
                        Some(tls) => {
                            let handshake_time = std::time::Duration::from_millis(
                                shared.node.config.request_timeout_ms,
                            );
                            let handshake =
                                tokio::time::timeout(handshake_time, tls.accept(stream));
                            if let Ok(Ok(stream)) = handshake.await {
                                connection::handle(stream, peer, shared, shutdown).await;
                            }
                        }
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(connection::refuse(
                    stream,
                    "ERR max number of clients reached",
                ));
            }
        }
    }
    drop(shared);
    loops.stopped().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::limits::KEY_BYTES_MAX;

    #[test]
    fn cursors_are_bounded_in_bytes_and_count_and_not_guessable() {
        let mut cursors = Cursors::default();
        let first = cursors.save(0, vec![b'k'; KEY_BYTES_MAX]);
        let second = cursors.save(0, b"short".to_vec());
        assert_ne!(second, first + 1, "ids are not handed out in sequence");
        assert_eq!(cursors.get(0, second).as_deref(), Some(&b"short"[..]));
        assert_eq!(
            cursors.get(1, second),
            None,
            "a cursor serves its own database only"
        );
        for i in 0..2 * CURSOR_BYTES_MAX / KEY_BYTES_MAX {
            cursors.save(0, vec![i as u8; KEY_BYTES_MAX]);
            assert!(cursors.bytes <= CURSOR_BYTES_MAX);
        }
        assert_eq!(cursors.get(0, first), None, "the oldest is forgotten first");
        let held: usize = cursors
            .positions
            .values()
            .map(|(_, k)| cursor_bytes(k))
            .sum();
        assert_eq!(held, cursors.bytes);
        for _ in 0..CURSORS_MAX + 10 {
            cursors.save(0, Vec::new());
        }
        assert_eq!(cursors.positions.len(), CURSORS_MAX);
        assert_eq!(cursors.order.len(), CURSORS_MAX);
    }
}
