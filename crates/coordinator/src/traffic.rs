//! What clients ask of this node, summed up each second for the dashboard, `cluster status`
//! and `/metrics`: reads and writes per second, the latency of requests (p50, p99), how long
//! a write's copies take to reach every replica (replication lag), and the hottest keys.
//!
//! Recording must cost the request paths next to nothing, since the Redis protocol serves
//! hundreds of thousands of commands a second on two cores:
//! - latencies go into fixed log-scale buckets of relaxed atomic counters, and the Redis
//!   protocol records a whole read of pipelined commands at once;
//! - hot keys are a *sample*: one request in [`SAMPLE_EVERY`] per thread on average (a
//!   thread-local countdown of random length, no shared counter) goes into a Space-Saving top-k sketch (Metwally et al.)
//!   of [`HOT_KEYS_TRACKED`] entries behind a mutex. Its counts decay each second, so the
//!   sketch follows what is hot now; a key's rate is estimated from its count.

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One request in this many (per thread) is sampled for the hot-keys sketch.
pub const SAMPLE_EVERY: u32 = 16;

/// Keys the sketch tracks; the top [`HOT_KEYS_SHOWN`] are reported. A key with more than
/// 1 / `HOT_KEYS_TRACKED` of the sampled requests is always among them.
pub const HOT_KEYS_TRACKED: usize = 64;

/// Hot keys reported (and exported to `/metrics`, one series each).
pub const HOT_KEYS_SHOWN: usize = 10;

/// What each count keeps from one second to the next: with a steady rate r, a count settles
/// at r / SAMPLE_EVERY / (1 - DECAY).
const DECAY: f64 = 0.75;

/// Bytes of a key shown (longer keys are cut, and marked so).
const KEY_SHOWN_BYTES_MAX: usize = 96;

/// Latency buckets: two per power of two of microseconds, from 1 µs to about 16 s.
const BUCKETS: usize = 48;

/// How often the summary is made.
pub const TICK: Duration = Duration::from_secs(1);

/// Whether a request read or wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A read (GET, MGET, EXISTS, a scan...).
    Read,
    /// A write (SET, DEL, INCR...).
    Write,
}

/// Counts of latencies in log-scale buckets.
struct Buckets([AtomicU64; BUCKETS]);

impl Buckets {
    fn new() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// The bucket of `micros`: two per power of two.
    fn index(micros: u64) -> usize {
        let micros = micros.max(1);
        let octave = 63 - micros.leading_zeros() as usize;
        // The half of the octave: whether the bit below the top one is set.
        let half = if octave > 0 {
            (micros >> (octave - 1)) & 1
        } else {
            0
        };
        (octave * 2 + half as usize).min(BUCKETS - 1)
    }

    /// A latency that falls in bucket `index` (its lower bound).
    fn lower_bound(index: usize) -> u64 {
        let (octave, half) = (index / 2, index % 2);
        (1u64 << octave)
            + if octave > 0 {
                (half as u64) << (octave - 1)
            } else {
                0
            }
    }

    fn record(&self, micros: u64, count: u64) {
        self.0[Self::index(micros)].fetch_add(count, Ordering::Relaxed);
    }

    fn counts(&self) -> [u64; BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The `q` quantile (0 to 1) of the latencies counted in `delta`, in microseconds (the
/// lower bound of its bucket: up to a third below the true value); `None` if it is empty.
fn quantile(delta: &[u64; BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, count) in delta.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(Buckets::lower_bound(index));
        }
    }
    None
}

/// A key and the estimate of its requests per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HotKey {
    /// Its keyspace.
    pub keyspace: String,
    /// The key, as text (invalid UTF-8 replaced; a long key cut, ending in `…`).
    pub key: String,
    /// Estimated requests per second.
    pub per_second: f64,
}

/// This node's traffic over the last second.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficSummary {
    /// Reads served per second (by either API, as coordinator).
    pub reads_per_second: f64,
    /// Writes served per second.
    pub writes_per_second: f64,
    /// Median request latency, µs, as the node measures it (`None`: no requests).
    pub latency_p50_us: Option<u64>,
    /// 99th percentile request latency, µs.
    pub latency_p99_us: Option<u64>,
    /// 99th percentile of the time from a write's start until every replica holds its copy
    /// (or a fallback holds a hint for it), µs; `None` when no write needed copies.
    pub replication_lag_p99_us: Option<u64>,
    /// The hottest keys, hottest first.
    pub hot_keys: Vec<HotKey>,
}

/// The Space-Saving sketch: each tracked key's count and the most it may be over-counted by.
#[derive(Default)]
struct Sketch {
    counts: HashMap<(String, Vec<u8>), Tracked>,
}

#[derive(Clone, Copy)]
struct Tracked {
    count: f64,
    /// How much of `count` may belong to keys it replaced.
    error: f64,
}

impl Sketch {
    fn add(&mut self, keyspace: &str, key: &[u8]) {
        if let Some(tracked) = self.counts.get_mut(&(keyspace.to_owned(), key.to_vec())) {
            tracked.count += 1.0;
            return;
        }
        let mut tracked = Tracked {
            count: 1.0,
            error: 0.0,
        };
        if self.counts.len() >= HOT_KEYS_TRACKED {
            // The least counted key gives its place, and its count, to the new one.
            let least = self
                .counts
                .iter()
                .min_by(|a, b| a.1.count.total_cmp(&b.1.count))
                .map(|(key, tracked)| (key.clone(), *tracked));
            if let Some((evicted, least)) = least {
                self.counts.remove(&evicted);
                tracked = Tracked {
                    count: least.count + 1.0,
                    error: least.count,
                };
            }
        }
        self.counts
            .insert((keyspace.to_owned(), key.to_vec()), tracked);
    }

    /// The top keys by guaranteed count (count less error), with their rates; then decays.
    fn report_and_decay(&mut self) -> Vec<HotKey> {
        let mut top: Vec<_> = self
            .counts
            .iter()
            .filter(|(_, t)| t.count - t.error >= 1.0)
            .map(|((keyspace, key), t)| (keyspace, key, t.count - t.error))
            .collect();
        top.sort_by(|a, b| b.2.total_cmp(&a.2));
        let report = top
            .into_iter()
            .take(HOT_KEYS_SHOWN)
            .map(|(keyspace, key, count)| HotKey {
                keyspace: keyspace.clone(),
                key: shown(key),
                per_second: count * f64::from(SAMPLE_EVERY) * (1.0 - DECAY),
            })
            .collect();
        self.counts.retain(|_, tracked| {
            tracked.count *= DECAY;
            tracked.error *= DECAY;
            tracked.count >= 0.05
        });
        report
    }
}

fn shown(key: &[u8]) -> String {
    if key.len() <= KEY_SHOWN_BYTES_MAX {
        return String::from_utf8_lossy(key).into_owned();
    }
    format!("{}…", String::from_utf8_lossy(&key[..KEY_SHOWN_BYTES_MAX]))
}

thread_local! {
    /// Requests this thread may serve before it samples the next one, and the state of the
    /// generator that draws that gap. The gap is random (uniform in 0 to 2 × SAMPLE_EVERY - 1,
    /// one in SAMPLE_EVERY on average): a fixed gap would alias with traffic that repeats with
    /// a period sharing a factor with it, and never see some of its keys.
    static UNTIL_SAMPLE: Cell<(u32, u64)> = const { Cell::new((0, 0x9E37_79B9_7F4A_7C15)) };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HotKeyLabels {
    rank: u32,
    keyspace: String,
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuantileLabels {
    quantile: &'static str,
}

/// The exported form (prefix `ringkv_traffic_`).
#[derive(Clone, Default)]
struct TrafficMetrics {
    requests: Family<KindLabels, Counter>,
    latency: Family<QuantileLabels, Gauge<f64, AtomicU64>>,
    replication_lag: Family<QuantileLabels, Gauge<f64, AtomicU64>>,
    hot_keys: Family<HotKeyLabels, Gauge<f64, AtomicU64>>,
}

/// What the summary's deltas are taken from.
#[derive(Default)]
struct Previous {
    reads: u64,
    writes: u64,
    latency: Option<[u64; BUCKETS]>,
    lag: Option<[u64; BUCKETS]>,
}

/// A node's traffic recorder.
pub struct Traffic {
    reads: AtomicU64,
    writes: AtomicU64,
    latency: Buckets,
    lag: Buckets,
    sketch: Mutex<Sketch>,
    previous: Mutex<Previous>,
    summary: RwLock<TrafficSummary>,
    metrics: TrafficMetrics,
}

impl Traffic {
    /// A recorder with its metrics registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = TrafficMetrics::default();
        let traffic = registry.sub_registry_with_prefix("ringkv_traffic");
        traffic.register(
            "requests",
            "Key requests this node served as coordinator, by kind (read, write)",
            metrics.requests.clone(),
        );
        traffic.register(
            "latency_seconds",
            "Request latency over the last second as the node measures it, by quantile (0.5, 0.99)",
            metrics.latency.clone(),
        );
        traffic.register(
            "replication_lag_seconds",
            "Over the last second, how long writes took until every replica held its copy, by quantile (0.5, 0.99)",
            metrics.replication_lag.clone(),
        );
        traffic.register(
            "hot_key_requests_per_second",
            "The hottest keys by estimated requests per second (a sampled top-k sketch), ranked 1 (hottest) to 10",
            metrics.hot_keys.clone(),
        );
        Self {
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            latency: Buckets::new(),
            lag: Buckets::new(),
            sketch: Mutex::default(),
            previous: Mutex::default(),
            summary: RwLock::default(),
            metrics,
        }
    }

    /// Records `count` requests of `kind` that each took `latency`.
    pub fn record(&self, kind: Kind, count: u64, latency: Duration) {
        if count == 0 {
            return;
        }
        let counter = match kind {
            Kind::Read => &self.reads,
            Kind::Write => &self.writes,
        };
        counter.fetch_add(count, Ordering::Relaxed);
        self.latency.record(latency.as_micros() as u64, count);
    }

    /// Records one write's replication lag.
    pub fn record_replication(&self, lag: Duration) {
        self.lag.record(lag.as_micros() as u64, 1);
    }

    /// Offers a request's key to the hot-keys sketch: one call in [`SAMPLE_EVERY`] per
    /// thread is taken, on average.
    pub fn sample(&self, keyspace: &str, key: &[u8]) {
        let take = UNTIL_SAMPLE.with(|until| match until.get() {
            (0, mut state) => {
                // xorshift64: statistical quality is all this needs.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                until.set(((state % u64::from(2 * SAMPLE_EVERY)) as u32, state));
                true
            }
            (left, state) => {
                until.set((left - 1, state));
                false
            }
        });
        if take {
            self.sketch.lock().add(keyspace, key);
        }
    }

    /// Requests served so far, by kind.
    pub fn totals(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    /// The summary of the last second.
    pub fn summary(&self) -> TrafficSummary {
        self.summary.read().clone()
    }

    /// Makes the summary of the time since the last call (about [`TICK`]), and exports it.
    pub fn tick(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        let (reads, writes) = self.totals();
        let (latency, lag) = (self.latency.counts(), self.lag.counts());
        let mut previous = self.previous.lock();
        let delta = |now: &[u64; BUCKETS], before: &Option<[u64; BUCKETS]>| -> [u64; BUCKETS] {
            std::array::from_fn(|i| now[i] - before.map_or(0, |b| b[i]))
        };
        let (latency_delta, lag_delta) = (
            delta(&latency, &previous.latency),
            delta(&lag, &previous.lag),
        );
        let hot_keys = self.sketch.lock().report_and_decay();
        let summary = TrafficSummary {
            reads_per_second: (reads - previous.reads) as f64 / seconds,
            writes_per_second: (writes - previous.writes) as f64 / seconds,
            latency_p50_us: quantile(&latency_delta, 0.5),
            latency_p99_us: quantile(&latency_delta, 0.99),
            replication_lag_p99_us: quantile(&lag_delta, 0.99),
            hot_keys,
        };
        self.metrics
            .requests
            .get_or_create(&KindLabels { kind: "read" })
            .inc_by(reads - previous.reads);
        self.metrics
            .requests
            .get_or_create(&KindLabels { kind: "write" })
            .inc_by(writes - previous.writes);
        let export = |family: &Family<QuantileLabels, Gauge<f64, AtomicU64>>,
                      delta: &[u64; BUCKETS]| {
            for (name, q) in [("0.5", 0.5), ("0.99", 0.99)] {
                let seconds = quantile(delta, q).map_or(0.0, |us| us as f64 / 1e6);
                family
                    .get_or_create(&QuantileLabels { quantile: name })
                    .set(seconds);
            }
        };
        export(&self.metrics.latency, &latency_delta);
        export(&self.metrics.replication_lag, &lag_delta);
        self.metrics.hot_keys.clear();
        for (rank, hot) in summary.hot_keys.iter().enumerate() {
            let labels = HotKeyLabels {
                rank: rank as u32 + 1,
                keyspace: hot.keyspace.clone(),
                key: hot.key.clone(),
            };
            self.metrics
                .hot_keys
                .get_or_create(&labels)
                .set(hot.per_second);
        }
        *previous = Previous {
            reads,
            writes,
            latency: Some(latency),
            lag: Some(lag),
        };
        *self.summary.write() = summary;
    }
}

/// Makes the summary every [`TICK`] until `signal` turns true.
pub async fn run(
    node: std::sync::Arc<crate::node::Node>,
    mut signal: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = signal.wait_for(|stop| *stop) => return,
        }
        let now = tokio::time::Instant::now();
        node.traffic.tick(now - last);
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Traffic {
        Traffic::register(&mut Registry::default())
    }

    #[test]
    fn buckets_order_latencies_and_bound_them_from_below() {
        let mut last = 0;
        for micros in [1, 2, 3, 4, 6, 7, 8, 100, 1000, 65_000, 10_000_000] {
            let index = Buckets::index(micros);
            assert!(index >= last, "{micros}");
            last = index;
            let lower = Buckets::lower_bound(index);
            assert!(
                lower <= micros && micros < lower * 3 / 2 + 1,
                "{micros} in [{lower}, ..)"
            );
        }
    }

    #[test]
    fn the_summary_gives_rates_and_quantiles_of_the_last_tick_only() {
        let traffic = recorder();
        traffic.record(Kind::Read, 98, Duration::from_micros(100));
        traffic.record(Kind::Write, 2, Duration::from_millis(50));
        traffic.tick(Duration::from_secs(2));
        let summary = traffic.summary();
        assert_eq!(summary.reads_per_second, 49.0);
        assert_eq!(summary.writes_per_second, 1.0);
        let p50 = summary.latency_p50_us.unwrap();
        assert!((64..=100).contains(&p50), "{p50}");
        let p99 = summary.latency_p99_us.unwrap();
        assert!((32_768..=50_000).contains(&p99), "{p99}");
        traffic.tick(Duration::from_secs(1));
        let idle = traffic.summary();
        assert_eq!((idle.reads_per_second, idle.latency_p99_us), (0.0, None));
    }

    #[test]
    fn the_sketch_finds_the_hot_keys_among_many_cold_ones_and_forgets_them_when_they_cool() {
        let traffic = recorder();
        // 20,000 requests in a second: a quarter to `hot`, a tenth to `warm`, the rest spread
        // over 10,000 keys, far more than the sketch tracks.
        for i in 0..20_000u32 {
            let key = match i % 20 {
                0..=4 => b"hot".to_vec(),
                5 | 6 => b"warm".to_vec(),
                _ => format!("cold{}", i % 10_000).into_bytes(),
            };
            traffic.sample("default", &key);
        }
        traffic.tick(TICK);
        let hot = traffic.summary().hot_keys;
        assert_eq!(hot[0].key, "hot");
        assert_eq!(hot[1].key, "warm");
        // The estimate of the first second is its count, decayed once: 5000 × (1 - DECAY).
        assert!((1000.0..1500.0).contains(&hot[0].per_second), "{hot:?}");
        for _ in 0..30 {
            traffic.tick(TICK);
        }
        assert!(traffic.summary().hot_keys.is_empty());
    }
}
