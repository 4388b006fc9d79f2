//! Memory held for Redis-protocol replies, bounded per connection and per node: a request of
//! a few hundred bytes (`MGET` of one large value a hundred times, `KEYS *`) must not make
//! the node build a reply of gigabytes. Redis bounds only clients that stop reading, and
//! leaves normal clients unbounded by default (`client-output-buffer-limit normal 0 0 0`);
//! here every reply is bounded while it is built, before its memory is taken.
//!
//! Small replies are not counted: the connection writes its buffer of them out once it
//! holds [`REPLY_METERED_BYTES_MIN`], so each connection holds little of them. A reply of at
//! least that size is counted while it is built (commands that gather many values charge
//! each as it comes) and until the client has read it; it is written straight from the
//! values it holds, as the client reads it, with no copy into the connection's buffer.

use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replies below this size are not counted: the connection's write buffer flushes at about
/// this size, which bounds them per connection.
pub const REPLY_METERED_BYTES_MIN: usize = 64 * 1024;

/// Why a reply could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyLimit {
    /// The reply would pass `resp_reply_bytes_max`.
    #[error("reply of over {bytes} bytes is above this connection's limit of {max} bytes (resp_reply_bytes_max)")]
    Connection { bytes: usize, max: usize },
    /// The node's replies together would pass `resp_replies_bytes_max`.
    #[error("the node's replies hold {max} bytes, its limit (resp_replies_bytes_max)")]
    Node { max: usize },
}

/// The node's count of reply bytes held, and the two bounds.
pub struct ReplyMemory {
    /// Bytes held by all connections' replies: the count itself is the exported gauge.
    held_bytes: Gauge<u64, AtomicU64>,
    connection_bytes_max: usize,
    node_bytes_max: usize,
}

impl ReplyMemory {
    /// Bounds of `connection_bytes_max` per connection and `node_bytes_max` in all, counted
    /// in `held_bytes`.
    pub fn new(
        connection_bytes_max: usize,
        node_bytes_max: usize,
        held_bytes: Gauge<u64, AtomicU64>,
    ) -> Self {
        Self {
            held_bytes,
            connection_bytes_max,
            node_bytes_max,
        }
    }

    /// Bytes all connections' replies hold now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.get() as usize
    }

    /// Counts `bytes` more for the reply a connection is building, of which it holds
    /// `*held` already; on success `*held` includes them. Nothing is taken on failure.
    pub fn charge(&self, held: &mut usize, bytes: usize) -> Result<(), ReplyLimit> {
        let wanted = held.saturating_add(bytes);
        if wanted > self.connection_bytes_max {
            return Err(ReplyLimit::Connection {
                bytes: wanted,
                max: self.connection_bytes_max,
            });
        }
        let taken =
            self.held_bytes
                .inner()
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |all| {
                    all.checked_add(bytes as u64)
                        .filter(|&sum| sum <= self.node_bytes_max as u64)
                });
        if taken.is_err() {
            return Err(ReplyLimit::Node {
                max: self.node_bytes_max,
            });
        }
        *held = wanted;
        Ok(())
    }

    /// Counts a reply of `bytes` in all that a connection built while holding `*held`: only
    /// what it did not charge yet.
    pub fn settle(&self, held: &mut usize, bytes: usize) -> Result<(), ReplyLimit> {
        self.charge(held, bytes.saturating_sub(*held))
    }

    /// Gives back everything a connection holds (its reply was written, or dropped).
    pub fn release(&self, held: &mut usize) {
        let held = std::mem::take(held) as u64;
        self.held_bytes.dec_by(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_bounded_alone_and_the_node_in_all() {
        let memory = ReplyMemory::new(100, 150, Gauge::default());
        let (mut first, mut second) = (0, 0);
        memory.charge(&mut first, 60).unwrap();
        assert_eq!(
            memory.charge(&mut first, 41),
            Err(ReplyLimit::Connection {
                bytes: 101,
                max: 100
            })
        );
        assert_eq!(first, 60, "nothing is taken on failure");
        memory.charge(&mut second, 90).unwrap();
        assert_eq!(
            memory.charge(&mut first, 1),
            Err(ReplyLimit::Node { max: 150 })
        );
        assert_eq!(memory.held_bytes(), 150);
        memory.release(&mut second);
        assert_eq!((second, memory.held_bytes()), (0, 60));
        memory.settle(&mut first, 100).unwrap();
        assert_eq!((first, memory.held_bytes()), (100, 100));
        memory.settle(&mut first, 10).unwrap();
        assert_eq!(
            first, 100,
            "a reply smaller than its charge takes nothing more"
        );
        memory.release(&mut first);
        assert_eq!(memory.held_bytes(), 0);
    }
}
