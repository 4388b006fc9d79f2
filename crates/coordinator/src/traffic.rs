//! What clients ask of this node, summed up each second for the dashboard, `cluster status`
//! and `/metrics`: reads and writes per second, the latency of requests (p50, p99), how long
//! a write's copies take to reach every replica (replication lag), and the hottest keys.
//!
//! Recording must cost the request paths next to nothing, since the Redis protocol serves
//! hundreds of thousands of commands a second on two cores. Every request is counted, but
//! only a sample is looked at closely, drawn per thread (a thread-local countdown of random
//! length: no shared counter, no lock):
//! - one request in [`TIME_EVERY`] is timed (the Redis protocol times a whole read of
//!   pipelined commands at once), into fixed log-scale buckets of relaxed atomic counters;
//! - one key in [`SAMPLE_EVERY`] goes into the hot-keys sketch (a count-min sketch in front
//!   of a short list of the keys it estimates highest) behind a mutex. Its counts decay each
//!   second, so it follows what is hot now; a key's rate is estimated from its count.
//!
//! Measured with callgrind (`bench/instructions-per-op.sh`, GET at -P 16): timing every read
//! and a Space-Saving sketch keyed by owned strings cost 279 more instructions per GET (17 %);
//! this way costs a few.

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One key in this many (per thread, on average) is sampled for the hot-keys sketch: at
/// 100,000 requests a second still 1,500 samples, enough to find keys with a share of a
/// fraction of a percent.
pub const SAMPLE_EVERY: u32 = 64;

/// One request (or read of pipelined requests) in this many (per thread, on average) is
/// timed; each timed one stands for this many in the latency buckets.
pub const TIME_EVERY: u32 = 8;

/// Keys the sketch keeps by name; the top [`HOT_KEYS_SHOWN`] are reported.
pub const HOT_KEYS_TRACKED: usize = 16;

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

/// Rows of the count-min sketch: a key's estimate is the least of its counters, one per row.
const ROWS: usize = 4;

/// Counters per row (a power of two: a row's index is bits of the key's hash).
const COLUMNS: usize = 2048;

/// The hot-keys sketch: a count-min sketch estimates every sampled key's count at a fixed cost
/// (one hash, a counter per row, no allocation), and the keys whose estimates are highest are
/// kept, with their names, in a short list. A key enters the list only when its estimate
/// passes the least in it, so uniform traffic rarely touches it. Count-min never
/// under-counts; it over-counts a key by what others sharing its counters add, about
/// samples / COLUMNS per row, and the least of four rows is rarely much above the truth.
/// So that keys of uniform traffic do not churn through the list (each entry costs copies of
/// its names), a key enters it only once its estimate is twice that background.
struct Sketch {
    counters: Box<[[f32; COLUMNS]; ROWS]>,
    /// Samples counted (decayed as the counters are): the background is `total / COLUMNS`.
    total: f32,
    /// The keys with the highest estimates, at most [`HOT_KEYS_TRACKED`].
    top: Vec<Candidate>,
}

struct Candidate {
    hash: u64,
    keyspace: String,
    key: Vec<u8>,
    estimate: f32,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            counters: Box::new([[0.0; COLUMNS]; ROWS]),
            total: 0.0,
            top: Vec::with_capacity(HOT_KEYS_TRACKED),
        }
    }
}

impl Sketch {
    fn add(&mut self, keyspace: &str, key: &[u8]) {
        let seed = xxhash_rust::xxh3::xxh3_64(keyspace.as_bytes());
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key, seed);
        self.total += 1.0;
        let mut estimate = f32::MAX;
        for (row, counters) in self.counters.iter_mut().enumerate() {
            let column = (hash >> (row * 16)) as usize & (COLUMNS - 1);
            counters[column] += 1.0;
            estimate = estimate.min(counters[column]);
        }
        if let Some(known) = self.top.iter_mut().find(|c| c.hash == hash) {
            known.estimate = estimate;
            return;
        }
        if estimate < 2.0 * self.total / COLUMNS as f32 {
            return;
        }
        let candidate = || Candidate {
            hash,
            keyspace: keyspace.to_owned(),
            key: key.to_vec(),
            estimate,
        };
        if self.top.len() < HOT_KEYS_TRACKED {
            self.top.push(candidate());
            return;
        }
        let least = self
            .top
            .iter_mut()
            .min_by(|a, b| a.estimate.total_cmp(&b.estimate))
            .expect("the list is full");
        if estimate > least.estimate {
            *least = candidate();
        }
    }

    /// The top keys by estimate, with their rates; then every count decays.
    fn report_and_decay(&mut self) -> Vec<HotKey> {
        self.top.sort_by(|a, b| b.estimate.total_cmp(&a.estimate));
        let report = self
            .top
            .iter()
            .take(HOT_KEYS_SHOWN)
            .filter(|c| c.estimate >= 1.0)
            .map(|c| HotKey {
                keyspace: c.keyspace.clone(),
                key: shown(&c.key),
                per_second: f64::from(c.estimate) * f64::from(SAMPLE_EVERY) * (1.0 - DECAY),
            })
            .collect();
        let decay = DECAY as f32;
        for counter in self.counters.iter_mut().flatten() {
            *counter *= decay;
        }
        self.total *= decay;
        for candidate in &mut self.top {
            candidate.estimate *= decay;
        }
        self.top.retain(|c| c.estimate >= 0.05);
        report
    }
}

fn shown(key: &[u8]) -> String {
    if key.len() <= KEY_SHOWN_BYTES_MAX {
        return String::from_utf8_lossy(key).into_owned();
    }
    format!("{}…", String::from_utf8_lossy(&key[..KEY_SHOWN_BYTES_MAX]))
}

/// What a thread draws its samples with.
#[derive(Clone, Copy)]
struct Sampler {
    /// Keys offered before the next one is taken into the sketch.
    until_key: u32,
    /// Requests (or reads of pipelined requests) before the next one is timed.
    until_timed: u32,
    /// xorshift64 state: the gaps are random (uniform, so one in N on average), since a fixed
    /// gap would alias with traffic that repeats with a period sharing a factor with it.
    state: u64,
}

impl Sampler {
    fn gap(&mut self, every: u32) -> u32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state % u64::from(2 * every)) as u32
    }
}

thread_local! {
    static SAMPLER: Cell<Sampler> = const {
        Cell::new(Sampler { until_key: 0, until_timed: 0, state: 0x9E37_79B9_7F4A_7C15 })
    };
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

    /// When a request (or a read of pipelined requests) starts, if it is one of those timed;
    /// hand it to [`Traffic::finish`].
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        let timed = SAMPLER.with(|cell| {
            let mut sampler = cell.get();
            let timed = sampler.until_timed == 0;
            sampler.until_timed = match timed {
                true => sampler.gap(TIME_EVERY),
                false => sampler.until_timed - 1,
            };
            cell.set(sampler);
            timed
        });
        timed.then(Instant::now)
    }

    /// Counts `reads` and `writes` served, and, if they were timed from `started`, their
    /// latency.
    pub fn finish(&self, started: Option<Instant>, reads: u64, writes: u64) {
        if reads > 0 {
            self.reads.fetch_add(reads, Ordering::Relaxed);
        }
        if writes > 0 {
            self.writes.fetch_add(writes, Ordering::Relaxed);
        }
        if let Some(started) = started.filter(|_| reads + writes > 0) {
            let micros = started.elapsed().as_micros() as u64;
            self.latency
                .record(micros, (reads + writes) * u64::from(TIME_EVERY));
        }
    }

    /// Records one write's replication lag.
    pub fn record_replication(&self, lag: Duration) {
        self.lag.record(lag.as_micros() as u64, 1);
    }

    /// Offers a request's key to the hot-keys sketch: one call in [`SAMPLE_EVERY`] per
    /// thread is taken, on average.
    #[inline]
    pub fn sample(&self, keyspace: &str, key: &[u8]) {
        let take = SAMPLER.with(|cell| {
            let mut sampler = cell.get();
            let take = sampler.until_key == 0;
            sampler.until_key = match take {
                true => sampler.gap(SAMPLE_EVERY),
                false => sampler.until_key - 1,
            };
            cell.set(sampler);
            take
        });
        if take {
            self.add_sample(keyspace, key);
        }
    }

    #[cold]
    fn add_sample(&self, keyspace: &str, key: &[u8]) {
        self.sketch.lock().add(keyspace, key);
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
    fn about_one_request_in_time_every_is_timed_and_one_key_in_sample_every_sampled() {
        let traffic = recorder();
        let timed = (0..80_000).filter(|_| traffic.start().is_some()).count();
        let expected = 80_000 / TIME_EVERY as usize;
        assert!(timed.abs_diff(expected) < expected / 10, "{timed}");
        for i in 0..80_000u32 {
            traffic.sample("default", &i.to_be_bytes());
        }
        // Each sampled key entered the count-min sketch once.
        let counted: f32 = traffic.sketch.lock().counters[0].iter().sum();
        let expected = 80_000.0 / SAMPLE_EVERY as f32;
        assert!((counted - expected).abs() < expected / 10.0, "{counted}");
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
        let ago = |latency| Some(Instant::now() - latency);
        traffic.finish(ago(Duration::from_micros(100)), 98, 0);
        traffic.finish(ago(Duration::from_millis(50)), 0, 2);
        traffic.finish(None, 2, 0);
        traffic.tick(Duration::from_secs(2));
        let summary = traffic.summary();
        assert_eq!(summary.reads_per_second, 50.0);
        assert_eq!(summary.writes_per_second, 1.0);
        let p50 = summary.latency_p50_us.unwrap();
        assert!((64..=200).contains(&p50), "{p50}");
        let p99 = summary.latency_p99_us.unwrap();
        assert!((32_768..=60_000).contains(&p99), "{p99}");
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
        // The estimate after the first second is its sampled count, 5000 / SAMPLE_EVERY, as
        // if it were a steady rate's: 5000 × (1 - DECAY).
        assert!((1000.0..1500.0).contains(&hot[0].per_second), "{hot:?}");
        for _ in 0..30 {
            traffic.tick(TICK);
        }
        assert!(traffic.summary().hot_keys.is_empty());
    }
}
