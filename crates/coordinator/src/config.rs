//! The node's configuration: one struct, every field documented once here, every field with a
//! default so `ringkv server` runs with none. Sources, lowest precedence first: these
//! defaults, a TOML file (`--config`), `RINGKV_*` environment variables, command-line flags
//! (the last two are applied by the binary, which owns the command line).

use ringkv_replica::{StoreOptions, SyncPolicy};
use ringkv_storage::EngineKind;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One day: long enough for a replica that missed a delete to hear of it through read
/// repair or replication after an outage; short enough that expired data does not pile up.
pub const TOMBSTONE_GRACE_MS_DEFAULT: u64 = 24 * 3600 * 1000;

/// Everything a node needs to start.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's name in the cluster; defaults to a name derived from the cluster address.
    pub node_id: Option<String>,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Storage engine: `lsm`, `btree` or `memory`.
    #[serde(with = "engine_name")]
    pub engine: EngineKind,
    /// Address of the REST API.
    pub http: String,
    /// Address of the Redis-protocol API.
    pub resp: String,
    /// Address for node-to-node RPC and gossip.
    pub listen: String,
    /// Address other nodes use to reach this one, if not `listen`.
    pub advertise: Option<String>,
    /// Seed nodes to join; empty for a new cluster.
    pub join: Vec<String>,
    /// A file holding the cluster secret (at least 16 bytes; 32 random bytes, base64, are a
    /// good choice), the same on every node: gossip and RPC from a node that does not prove
    /// it knows the secret are dropped, logged and counted (`ringkv_cluster_unauthenticated`).
    /// Without one, anyone who reaches the cluster address can join the ring and send
    /// requests: set it on every cluster whose address is not loopback.
    pub cluster_secret_file: Option<PathBuf>,
    /// Failure domain (rack, data center): replicas prefer distinct zones.
    pub zone: String,
    /// Relative share of data this node takes.
    pub weight: u32,
    /// When writes are acknowledged: `always` (after fsync), `periodic` or `none`.
    #[serde(with = "sync_name")]
    pub sync: SyncPolicy,
    /// fsync interval under `sync = "periodic"`.
    pub sync_interval_ms: u64,
    /// How long tombstones and expired values are kept at least before being removed for
    /// good (Cassandra's `gc_grace_seconds`, without its danger): a record whose every
    /// sibling is dead goes only once every replica of its key is seen to hold it or
    /// nothing, so a replica down for longer than this cannot bring a delete back. While the
    /// node has peers, the wait is at least `hint_window_ms`.
    pub tombstone_grace_ms: u64,
    /// How often expired data is looked for.
    pub sweep_interval_ms: u64,
    /// Writes queued for the writer before further writers are told the node is busy.
    pub write_queue_max: usize,
    /// Client connections served at once, per API; more wait to be accepted.
    pub connections_max: usize,
    /// Requests handled at once by the REST API; more get 503.
    pub http_in_flight_max: usize,
    /// A Redis-protocol connection idle this long is closed (Redis's `timeout`; 0 = never).
    pub resp_idle_timeout_ms: u64,
    /// How long a client may take to send one whole request, and to read any part of an
    /// answer; past it the connection is closed (silent, slow and stalled clients). For REST
    /// the time runs from the connection's start or the node's last answer on it; for the
    /// Redis protocol from a request's first byte (a connection idle between requests is
    /// `resp_idle_timeout_ms`'s business).
    pub request_timeout_ms: u64,
    /// Most bytes one Redis-protocol connection's reply may hold (a large `MGET`, `KEYS`,
    /// `SCAN`): a command whose reply would pass it is answered with an error and its client
    /// disconnected, logged and counted in `ringkv_resp_disconnects{reason="reply_limit"}`.
    /// Redis's `client-output-buffer-limit` leaves normal clients unbounded; this must at
    /// least hold one value of the largest size.
    pub resp_reply_bytes_max: u64,
    /// Most bytes all Redis-protocol connections' large replies may hold together; a reply
    /// that would pass it is refused the same way.
    pub resp_replies_bytes_max: u64,
    /// Password Redis-protocol clients must send with AUTH (Redis's `requirepass`): the
    /// password of the built-in superuser `default`, for the Redis protocol only. Users
    /// (`ringkv user add`) are the way to protect both APIs.
    pub resp_password: Option<String>,
    /// The user clients that have not logged in act as (Redis's `default` user), if that
    /// user exists; none: they must log in, unless `protected_mode` lets them in.
    pub default_user: Option<String>,
    /// Set only by `ringkv dev-cluster` on the nodes it runs: the address (`HOST:PORT`) of its
    /// supervisor, which carries out chaos actions — killing, pausing, restarting a node,
    /// running a load — asked through `/v1/chaos` (the dashboard's chaos panel). A node
    /// without it refuses every chaos action.
    pub chaos_control: Option<String>,
    /// Redis's protected mode: while no user exists, only clients on this machine's
    /// loopback may use the node (as a superuser). `false` lets every client in as
    /// superuser while no user exists; use it only on a network you trust.
    pub protected_mode: bool,
    /// PEM certificate chain of this node for the cluster RPC: with `cluster_tls_key_file`
    /// and `cluster_tls_ca_file`, peers talk mutual TLS, each presenting a certificate
    /// signed by the cluster CA, so node-to-node traffic is encrypted.
    pub cluster_tls_cert_file: Option<PathBuf>,
    /// PEM private key of `cluster_tls_cert_file`.
    pub cluster_tls_key_file: Option<PathBuf>,
    /// PEM certificates of the cluster CA: peers must present a certificate it signed.
    pub cluster_tls_ca_file: Option<PathBuf>,
    /// Failed logins one client address may make in a burst before it is throttled.
    pub login_failures_burst: u32,
    /// Failed logins forgiven per minute per address once its burst is spent: a throttled
    /// attempt is refused unchecked (429, or `-ERR too many failed logins`).
    pub login_failures_per_minute: u32,
    /// PEM certificate chain for TLS on REST and the Redis protocol (with `tls_key_file`);
    /// re-read on SIGHUP, so renewed certificates need no restart.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Whether FLUSHDB and FLUSHALL are allowed.
    pub resp_flush_enabled: bool,
    /// Whether the `DEBUG` command is allowed (Redis's `enable-debug-command`, off by
    /// default as there): `DEBUG PANIC` stops the node as a bug would, for testing what
    /// follows.
    pub resp_debug_enabled: bool,
    /// How long a node waits for a peer's answer before counting it as failed.
    pub rpc_timeout_ms: u64,
    /// How far apart the nodes' clocks may be (keep them synced, by NTP or the like). A
    /// request that reaches a node later than its send time plus its deadline plus this is
    /// dropped unread, so a write held up in the network cannot land after its caller gave
    /// up; and tombstones are kept at least `hint_window_ms` plus `rpc_timeout_ms` plus this,
    /// so no older write can arrive once its delete is forgotten.
    pub clock_skew_max_ms: u64,
    /// How long a hint (a copy of a write kept for a replica that could not take it) waits
    /// for its replica before it is dropped, as Cassandra's `max_hint_window`: a replica down
    /// for longer is brought up to date by anti-entropy instead.
    pub hint_window_ms: u64,
    /// Most hints kept for one replica; further ones are refused and counted
    /// (`ringkv_cluster_hints_refused`).
    pub hints_per_replica_max: u64,
    /// Most bytes of hints kept for one replica.
    pub hint_bytes_per_replica_max: u64,
    /// How often this node compares hash trees with every live peer and repairs what
    /// differs (anti-entropy, always on; 0 turns it off).
    pub anti_entropy_interval_ms: u64,
    /// Most records a joining node takes per second from all its donors together (0: no
    /// limit), so that streaming its ranges leaves the cluster to its clients (Cassandra's
    /// `stream_throughput_outbound`). At 20,000 a node of 100 k keys joins in about 5 s.
    pub join_records_per_second: u64,
    /// MiB of recently used records cached in front of the `lsm` and `btree` engines
    /// (0: none; the `memory` engine needs none). Defaults to an eighth of the machine's
    /// memory (or of the container's limit), at least 64 MiB; it only fills as records are
    /// read and written.
    pub record_cache_mb: u64,
    /// Threads serving REST and cluster requests (the async runtime); 0: one per core.
    pub io_threads: usize,
    /// Event loops serving Redis-protocol connections, each a thread that commits its
    /// connections' writes itself (see [`ServerConfig::resp_loops`]); 0: one per core.
    pub resp_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let defaults = StoreOptions::default();
        Self {
            node_id: None,
            data_dir: PathBuf::from("./ringkv-data"),
            engine: EngineKind::Lsm,
            http: "127.0.0.1:7080".into(),
            resp: "127.0.0.1:7379".into(),
            listen: "127.0.0.1:7946".into(),
            advertise: None,
            join: Vec::new(),
            cluster_secret_file: None,
            zone: "default".into(),
            weight: 1,
            sync: SyncPolicy::Always,
            sync_interval_ms: defaults.sync_interval_ms,
            tombstone_grace_ms: TOMBSTONE_GRACE_MS_DEFAULT,
            sweep_interval_ms: defaults.sweep_interval_ms,
            write_queue_max: defaults.write_queue_max,
            connections_max: 1024,
            http_in_flight_max: 4096,
            resp_idle_timeout_ms: 0,
            request_timeout_ms: 30_000,
            resp_reply_bytes_max: 128 << 20,
            resp_replies_bytes_max: 1 << 30,
            resp_password: None,
            default_user: None,
            chaos_control: None,
            protected_mode: true,
            cluster_tls_cert_file: None,
            cluster_tls_key_file: None,
            cluster_tls_ca_file: None,
            login_failures_burst: 10,
            login_failures_per_minute: 60,
            tls_cert_file: None,
            tls_key_file: None,
            resp_flush_enabled: true,
            resp_debug_enabled: false,
            rpc_timeout_ms: 2_000,
            clock_skew_max_ms: ringkv_cluster::rpc::CLOCK_SKEW_MAX_DEFAULT.as_millis() as u64,
            hint_window_ms: 3 * 3600 * 1000,
            hints_per_replica_max: defaults.hint_limits.count_max,
            hint_bytes_per_replica_max: defaults.hint_limits.bytes_max,
            anti_entropy_interval_ms: 30_000,
            join_records_per_second: 20_000,
            record_cache_mb: record_cache_share_mb(memory_bytes()),
            io_threads: 0,
            resp_threads: RESP_THREADS_DEFAULT,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this struct.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.weight == 0 {
            return Err(ConfigError::Invalid("weight must be at least 1".into()));
        }
        if self.advertise.is_none() && is_unspecified_host(&self.listen) {
            return Err(ConfigError::Invalid(format!(
                "listen address {} is not one peers can reach; give --advertise HOST:PORT \
                 (the address other nodes use for this one)",
                self.listen
            )));
        }
        if self.rpc_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "rpc_timeout_ms must be at least 1".into(),
            ));
        }
        let largest_reply = ringkv_core::limits::VALUE_BYTES_MAX as u64 + 64;
        if self.resp_reply_bytes_max < largest_reply
            || self.resp_replies_bytes_max < self.resp_reply_bytes_max
        {
            return Err(ConfigError::Invalid(format!(
                "resp_reply_bytes_max must be at least {largest_reply} (one value of the \
                 largest size), and resp_replies_bytes_max at least resp_reply_bytes_max"
            )));
        }
        if self.connections_max == 0 || self.http_in_flight_max == 0 || self.write_queue_max == 0 {
            return Err(ConfigError::Invalid(
                "connection, request and queue limits must be at least 1".into(),
            ));
        }
        let cluster_tls = [
            &self.cluster_tls_cert_file,
            &self.cluster_tls_key_file,
            &self.cluster_tls_ca_file,
        ];
        let given = cluster_tls.iter().filter(|f| f.is_some()).count();
        if given != 0 && given != 3 {
            return Err(ConfigError::Invalid(
                "cluster TLS needs cluster_tls_cert_file, cluster_tls_key_file and \
                 cluster_tls_ca_file together"
                    .into(),
            ));
        }
        // TLS secures the RPC; gossip (UDP) is authenticated only by the secret's tag, and
        // without it a stranger could still gossip its way into the ring.
        if given == 3 && self.cluster_secret_file.is_none() {
            return Err(ConfigError::Invalid(
                "cluster TLS needs cluster_secret_file as well: TLS protects the RPC, the \
                 secret authenticates gossip"
                    .into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "TLS needs both tls_cert_file and tls_key_file".into(),
            ));
        }
        Ok(())
    }

    /// How many threads the async runtime gets (REST, cluster RPC, gossip, and the replicas'
    /// reads and writes they serve): `io_threads`, or one per core. Redis-protocol
    /// connections have event loops of their own ([`ServerConfig::resp_loops`]).
    pub fn runtime_threads(&self) -> usize {
        if self.io_threads > 0 {
            return self.io_threads;
        }
        cores()
    }

    /// How many event loops serve Redis-protocol connections: `resp_threads`, or one per
    /// core when that is 0. Each loop commits the writes of its own connections as one group
    /// per turn, so more loops read and parse in parallel but split the writes into smaller
    /// groups, each with a sync of its own.
    pub fn resp_loops(&self) -> usize {
        if self.resp_threads > 0 {
            return self.resp_threads;
        }
        cores()
    }

    /// The local store's options.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            sync: self.sync,
            sync_interval_ms: self.sync_interval_ms,
            tombstone_grace_ms: self.tombstone_grace_ms,
            sweep_interval_ms: self.sweep_interval_ms,
            write_queue_max: self.write_queue_max,
            cache_bytes: match self.engine {
                EngineKind::Memory => 0,
                EngineKind::Lsm | EngineKind::Btree => self.record_cache_mb << 20,
            },
            hint_limits: ringkv_replica::hints::HintLimits {
                count_max: self.hints_per_replica_max,
                bytes_max: self.hint_bytes_per_replica_max,
            },
            // The node's reaper removes wholly dead records, once every replica is seen to
            // hold them: a sweeper alone could bring a delete back (crate::reaper).
            reaping: ringkv_replica::Reaping::WhenConfirmed,
            ..StoreOptions::default()
        }
    }
}

/// Least record cache a default gives, in MiB.
const RECORD_CACHE_MB_MIN: u64 = ringkv_replica::store::CACHE_BYTES_DEFAULT >> 20;

/// The default record cache for a machine with `memory` bytes (`None`: unknown): an eighth.
/// A write of a key the cache does not hold must first read the key's record from the
/// engine; with a million keys written at random, 64 MiB held too few of them: 3 M SETs ran
/// at 71 k/s with 64 MiB, 119 k/s with this default on a 24 GiB machine (3 GiB;
/// `redis-benchmark -t set -n 3000000 -r 1000000 -c 50 -d 100 -P 16`, `--sync none`).
/// Redis-protocol event loops by default: one, as Redis has. Measured on 2 cores with the
/// client on the same machine (`redis-benchmark -c 50 -d 100`, sync always, `perf stat` on
/// the node, 2 runs each): one loop served 52-56 k SETs/s at `-P 1` on 12.6-13.0 µs of CPU per
/// SET, where two served 45-49 k on 17.3-17.7 µs (each loop's groups are smaller, and the
/// loops wake each other); at `-P 16`, 292-312 k SETs/s against 256-281 k. Two loops read in
/// parallel, which served a few more GETs at `-P 16` (628-678 k against 618-631 k).
pub const RESP_THREADS_DEFAULT: usize = 1;

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn record_cache_share_mb(memory: Option<u64>) -> u64 {
    memory.map_or(RECORD_CACHE_MB_MIN, |bytes| {
        ((bytes / 8) >> 20).max(RECORD_CACHE_MB_MIN)
    })
}

/// Memory this process may use: the machine's, or its cgroup's limit if that is lower.
fn memory_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| meminfo_total_bytes(&text));
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    match (machine, limit) {
        (Some(machine), Some(limit)) => Some(machine.min(limit)),
        (machine, limit) => machine.or(limit),
    }
}

/// `MemTotal` from the text of `/proc/meminfo`, in bytes.
fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

/// Whether `address` (`HOST:PORT`) binds every interface (`0.0.0.0`, `[::]`) rather than
/// naming one.
pub fn is_unspecified_host(address: &str) -> bool {
    address
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|socket| socket.ip().is_unspecified())
}

macro_rules! named_enum_serde {
    ($module:ident, $type:ty, $name:expr) => {
        mod $module {
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(
                value: &$type,
                serializer: S,
            ) -> Result<S::Ok, S::Error> {
                let name: fn(&$type) -> String = $name;
                serializer.serialize_str(&name(value))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<$type, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

named_enum_serde!(engine_name, ringkv_storage::EngineKind, |kind| kind
    .name()
    .to_owned());
named_enum_serde!(sync_name, ringkv_replica::SyncPolicy, |policy| policy
    .to_string());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(
            toml::from_str::<ServerConfig>("").unwrap(),
            ServerConfig::default()
        );
    }

    #[test]
    fn file_values_override_defaults_and_unknown_keys_are_refused() {
        let config: ServerConfig =
            toml::from_str("engine = \"btree\"\nsync = \"periodic\"\n").unwrap();
        assert_eq!(config.engine, EngineKind::Btree);
        assert_eq!(config.sync, SyncPolicy::Periodic);
        assert!(toml::from_str::<ServerConfig>("engnie = \"lsm\"").is_err());
        assert!(toml::from_str::<ServerConfig>("engine = \"rocks\"").is_err());
    }

    #[test]
    fn the_record_cache_defaults_to_an_eighth_of_memory_but_never_below_64_mib() {
        assert_eq!(record_cache_share_mb(Some(24 << 30)), 3072);
        assert_eq!(record_cache_share_mb(Some(256 << 20)), 64);
        assert_eq!(record_cache_share_mb(None), 64);
        let meminfo = "MemTotal:       24607340 kB\nMemFree:        20000000 kB\n";
        assert_eq!(meminfo_total_bytes(meminfo), Some(24_607_340 * 1024));
        assert_eq!(meminfo_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total_bytes("MemTotal: many kB\n"), None);
    }

    #[test]
    fn runtime_threads_are_one_per_core_unless_given() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(ServerConfig::default().runtime_threads(), cores);
        let given: ServerConfig = toml::from_str("io_threads = 3").unwrap();
        assert_eq!(given.runtime_threads(), 3);
    }

    #[test]
    fn redis_protocol_loops_are_one_unless_given_and_zero_means_one_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(ServerConfig::default().resp_loops(), 1);
        let given: ServerConfig = toml::from_str("resp_threads = 3").unwrap();
        assert_eq!(given.resp_loops(), 3);
        let per_core: ServerConfig = toml::from_str("resp_threads = 0").unwrap();
        assert_eq!(per_core.resp_loops(), cores);
    }

    #[test]
    fn listening_on_every_interface_needs_an_address_peers_can_use() {
        let mut config = ServerConfig {
            listen: "0.0.0.0:7946".into(),
            ..ServerConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("--advertise"), "{error}");
        config.advertise = Some("10.0.0.5:7946".into());
        config.validate().unwrap();
    }

    #[test]
    fn cluster_tls_needs_all_three_files_and_the_secret() {
        let file = |name: &str| Some(PathBuf::from(name));
        let mut config = ServerConfig {
            cluster_tls_cert_file: file("node.pem"),
            cluster_tls_key_file: file("node.key"),
            ..ServerConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("together"), "{error}");
        config.cluster_tls_ca_file = file("ca.pem");
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cluster_secret_file"), "{error}");
        config.cluster_secret_file = file("secret");
        config.validate().unwrap();
    }
}
