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
pub mod request;

use crate::node::Node;
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

/// The keyspace of Redis database `db`.
pub fn keyspace_of(db: u8) -> String {
    if db == 0 {
        crate::http::keys::DEFAULT_KEYSPACE.to_owned()
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
    /// Commands executed since start.
    pub commands: AtomicU64,
    next_client_id: AtomicU64,
    cursors: parking_lot::Mutex<Cursors>,
}

/// SCAN cursors: Redis clients expect a decimal cursor, but our scans resume after a key, so
/// each cursor handed out names the key to resume after (as kvrocks does). Shared by every
/// connection, so a client may continue a scan on another connection of its pool.
#[derive(Default)]
struct Cursors {
    next: u64,
    positions: HashMap<u64, (u8, Vec<u8>)>,
    order: VecDeque<u64>,
}

impl RespShared {
    /// Shared state for `node`'s connections.
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            started: Instant::now(),
            connected: AtomicUsize::new(0),
            commands: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            cursors: parking_lot::Mutex::new(Cursors::default()),
        }
    }

    /// A fresh client id.
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Remembers where a scan of `db` stopped; returns the cursor to hand out (never 0).
    pub fn save_cursor(&self, db: u8, after: Vec<u8>) -> u64 {
        let mut cursors = self.cursors.lock();
        cursors.next += 1;
        let id = cursors.next;
        cursors.positions.insert(id, (db, after));
        cursors.order.push_back(id);
        while cursors.order.len() > CURSORS_MAX {
            if let Some(oldest) = cursors.order.pop_front() {
                cursors.positions.remove(&oldest);
            }
        }
        id
    }

    /// Where cursor `id` of `db` resumes; `None` if unknown or forgotten.
    pub fn cursor(&self, db: u8, id: u64) -> Option<Vec<u8>> {
        let cursors = self.cursors.lock();
        cursors
            .positions
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
        let (stream, _peer) = match accepted {
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
                loops.serve(stream, move |stream| async move {
                    connection::handle(stream, shared, shutdown).await;
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
