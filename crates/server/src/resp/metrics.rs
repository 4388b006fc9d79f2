//! The Redis-protocol server's metrics (prefix `ringkv_resp_`), registered in the node's
//! registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Why the node closed a client's connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Disconnect {
    /// Its reply would have passed a bound on reply memory.
    ReplyLimit,
    /// It took longer than `request_timeout_ms` to send one request.
    RequestTimeout,
    /// It read nothing of its reply for `request_timeout_ms`.
    ReplyStalled,
}

impl Disconnect {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Disconnect::ReplyLimit => "reply_limit",
            Disconnect::RequestTimeout => "request_timeout",
            Disconnect::ReplyStalled => "reply_stalled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DisconnectLabels {
    reason: &'static str,
}

/// The Redis-protocol server's metrics.
#[derive(Clone)]
pub struct RespMetrics {
    /// Bytes held by replies being built or written (see [`super::replies`]).
    pub reply_bytes: Gauge<u64, AtomicU64>,
    disconnects: Family<DisconnectLabels, Counter>,
}

impl RespMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reply_bytes: Gauge::default(),
            disconnects: Family::default(),
        };
        let resp = registry.sub_registry_with_prefix("ringkv_resp");
        resp.register(
            "reply_bytes",
            "Bytes held by large Redis-protocol replies being built or written",
            metrics.reply_bytes.clone(),
        );
        resp.register(
            "disconnects",
            "Redis-protocol clients the node disconnected, by reason",
            metrics.disconnects.clone(),
        );
        metrics
    }

    /// Counts a client disconnected for `reason`.
    pub fn disconnected(&self, reason: Disconnect) {
        self.disconnects
            .get_or_create(&DisconnectLabels {
                reason: reason.name(),
            })
            .inc();
    }

    /// Clients disconnected for `reason` so far.
    pub fn disconnects(&self, reason: Disconnect) -> u64 {
        self.disconnects
            .get_or_create(&DisconnectLabels {
                reason: reason.name(),
            })
            .get()
    }
}
