//! A node: the layers below the client APIs assembled from a [`ServerConfig`], and its
//! cluster services.
//!
//! [`Node::open`] takes the data directory (locking it, so two processes never share one),
//! opens the engine and the local store; [`start_cluster_services`] binds the cluster
//! address and starts gossip, the peer RPC service and the spreading of keyspace
//! definitions. The API crate serves clients on top.

use crate::config::{ConfigError, ServerConfig};
use crate::gossip::ClusterView;
use prometheus_client::registry::Registry;
use ringkv_cluster::membership::NodeIdentity;
use ringkv_core::clock::{SystemClock, WallClock};
use ringkv_replica::{LocalStore, ReplicaError};
use ringkv_storage::StorageError;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory is unusable.
    #[error("data directory {path}: {message}")]
    DataDir { path: String, message: String },
    /// The storage engine failed to open.
    #[error("cannot open storage")]
    Storage(#[from] StorageError),
    /// The local store failed to open.
    #[error("cannot open local store")]
    Replica(#[from] ReplicaError),
    /// The cluster secret could not be read, or is too short.
    #[error(transparent)]
    Secret(#[from] ringkv_cluster::auth::SecretError),
    /// The cluster's TLS files could not be loaded.
    #[error(transparent)]
    ClusterTls(#[from] ringkv_cluster::tls::ClusterTlsError),
    /// An address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// One node's state, shared by every API handler.
pub struct Node {
    /// This node's name.
    pub node_id: String,
    /// The configuration it started with.
    pub config: ServerConfig,
    /// The local replica: the coordinator's to use. The client APIs, in the crate above,
    /// cannot reach it (Cargo enforces the layers); tests that inject faults below them use
    /// [`Node::local_store`].
    pub(crate) store: LocalStore,
    /// The keyspaces this node knows.
    pub keyspaces: crate::keyspaces::Keyspaces,
    /// The users clients log in as, and what each may do.
    pub users: crate::users::Users,
    /// Failed logins per client address, rate limited.
    pub logins: crate::logins::LoginThrottle,
    /// Every metric of this node; the APIs register theirs when they start serving.
    pub registry: parking_lot::Mutex<Registry>,
    /// Cluster membership, once the node serves.
    pub gossip: std::sync::OnceLock<Arc<crate::gossip::Gossip>>,
    /// Connections to other nodes.
    pub peers: crate::peers::Peers,
    /// The cluster secret gossip and RPC are authenticated with, if one is configured.
    pub cluster_key: Option<Arc<ringkv_cluster::auth::ClusterKey>>,
    /// Mutual TLS for the cluster RPC, if configured.
    pub cluster_tls: Option<Arc<ringkv_cluster::tls::ClusterTls>>,
    /// The coordinator's metrics.
    pub cluster_metrics: crate::coordinator::ClusterMetrics,
    /// Hinted handoff: copies of writes that replicas missed.
    pub handoff: crate::handoff::Handoff,
    /// Anti-entropy: its rounds' state and metrics.
    pub anti_entropy: crate::anti_entropy::AntiEntropy,
    /// Leaving the cluster, once asked.
    pub leaving: crate::leave::Leaving,
    /// Joining the cluster, when this node started as a new member.
    pub joining: crate::join::Joining,
    /// Restoring copies of the ranges it took over from removed nodes.
    pub restoring: crate::restore::Restoring,
    /// The reaping of wholly dead records: its metrics.
    pub reaper: crate::reaper::ReaperMetrics,
    /// What clients ask of this node: rates, latencies, hot keys.
    pub traffic: crate::traffic::Traffic,
    /// The Raft groups of the strong keyspaces' shards this node is a member of.
    pub strong: crate::strong::Groups,
    /// The view of a node that is not serving yet: itself alone.
    alone: std::sync::OnceLock<Arc<ClusterView>>,
    clock: Arc<dyn WallClock>,
    /// Held for the node's life: the lock on the data directory.
    _lock: File,
}

impl Node {
    /// Opens the node's storage as `config` says, with the system clock.
    pub fn open(config: ServerConfig) -> Result<Arc<Node>, NodeError> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens the node's storage with an injected clock (tests).
    pub fn open_with_clock(
        config: ServerConfig,
        clock: Arc<dyn WallClock>,
    ) -> Result<Arc<Node>, NodeError> {
        config.validate()?;
        let cluster_key = match &config.cluster_secret_file {
            Some(path) => Some(Arc::new(ringkv_cluster::auth::ClusterKey::load(path)?)),
            None => None,
        };
        let cluster_tls = match (
            &config.cluster_tls_cert_file,
            &config.cluster_tls_key_file,
            &config.cluster_tls_ca_file,
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(Arc::new(
                ringkv_cluster::tls::ClusterTls::load(cert, key, ca)?,
            )),
            _ => None,
        };
        let lock = lock_data_dir(&config)?;
        let engine = ringkv_storage::open(config.engine, &config.data_dir)?;
        let mut registry = Registry::default();
        let store = LocalStore::open(
            engine,
            config.store_options(),
            Arc::clone(&clock),
            &mut registry,
        )?;
        let keyspaces = crate::keyspaces::Keyspaces::load(&store)?;
        let users = crate::users::Users::load(&store)?;
        let cluster_metrics = crate::coordinator::ClusterMetrics::register(&mut registry);
        let traffic = crate::traffic::Traffic::register(&mut registry);
        let logins = crate::logins::LoginThrottle::new(
            &mut registry,
            config.login_failures_burst,
            config.login_failures_per_minute,
        );
        let handoff = crate::handoff::Handoff::new(&mut registry);
        let anti_entropy = crate::anti_entropy::AntiEntropy::new(&mut registry);
        let reaper = crate::reaper::ReaperMetrics::register(&mut registry);
        let strong = crate::strong::Groups::new(&mut registry);
        if let Some(key) = &cluster_key {
            let cluster = registry.sub_registry_with_prefix("ringkv_cluster_unauthenticated");
            cluster.register(
                "gossip",
                "Gossip datagrams dropped: no valid tag of the cluster secret",
                key.rejected_gossip().clone(),
            );
            cluster.register(
                "rpc",
                "RPC connections refused: the peer did not prove it knows the cluster secret",
                key.rejected_rpc().clone(),
            );
        }
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id(&config));
        Ok(Arc::new(Node {
            node_id,
            gossip: std::sync::OnceLock::new(),
            peers: crate::peers::Peers::new(cluster_key.clone(), cluster_tls.clone()),
            cluster_key,
            cluster_tls,
            cluster_metrics,
            handoff,
            anti_entropy,
            leaving: crate::leave::Leaving::default(),
            reaper,
            traffic,
            strong,
            joining: crate::join::Joining::default(),
            restoring: crate::restore::Restoring::default(),
            alone: std::sync::OnceLock::new(),
            config,
            store,
            keyspaces,
            users,
            logins,
            registry: parking_lot::Mutex::new(registry),
            clock,
            _lock: lock,
        }))
    }

    /// The current unix time in milliseconds, from the node's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Whether this node is alone in its ring, so it serves every key itself; the same as
    /// `view().is_single()`, without taking the view.
    pub fn is_alone(&self) -> bool {
        self.gossip.get().is_none_or(|gossip| gossip.is_single())
    }

    /// The ring and member states requests are routed by.
    pub fn view(&self) -> Arc<ClusterView> {
        match self.gossip.get() {
            Some(gossip) => gossip.view(),
            None => Arc::clone(self.alone.get_or_init(|| {
                Arc::new(ClusterView::alone(
                    &self.node_id,
                    &self.config.zone,
                    self.config.weight,
                ))
            })),
        }
    }

    /// This node's figures, as `ringkv cluster status` shows them: keys are counted
    /// exactly up to [`KEYS_COUNTED_MAX`] records, estimated by the engine beyond.
    pub fn stats(&self) -> crate::peers::NodeStats {
        let engine = self.store.engine();
        let (keys, keys_exact) = match self.store.count_keys(KEYS_COUNTED_MAX) {
            Ok((keys, true)) => (keys, true),
            Ok((_, false)) | Err(_) => (engine.approximate_entries(), false),
        };
        let repair = self.anti_entropy.progress();
        crate::peers::NodeStats {
            keys,
            keys_exact,
            disk_bytes: engine.disk_bytes(),
            anti_entropy_last_ms: repair.last_finished_ms,
            anti_entropy_divergence: repair.last_divergence,
            hints_pending: self
                .store
                .hints()
                .queues()
                .iter()
                .map(|(_, q)| q.count)
                .sum(),
            joining: self.joining.progress(),
            leaving: Some(self.leaving.progress()).filter(|progress| progress.state != "normal"),
            restoring: self.restoring.progress(),
            traffic: self.traffic.summary(),
            shards: self.strong.led(),
            counters: crate::peers::NodeCounters {
                writes: self.store.metrics().writes.get(),
                merges: self.store.metrics().merges.get(),
                read_repairs: self.cluster_metrics.read_repairs.get(),
                unavailable: self.cluster_metrics.unavailable.get(),
            },
        }
    }

    /// Creates keyspace `name`, or changes its definition, and tells the other nodes.
    pub fn define_keyspace(
        self: &Arc<Self>,
        name: &str,
        request: crate::keyspaces::KeyspaceRequest,
    ) -> Result<crate::keyspaces::KeyspaceDef, crate::keyspaces::KeyspaceError> {
        let view = self.view();
        let def = self.keyspaces.define(&self.store, name, request, |def| {
            crate::strong::placement(&view, def)
        })?;
        crate::keyspaces::announce(self, &def);
        Ok(def)
    }

    /// The local replica, for tests and tools that inject faults below the coordinator (a
    /// replica's lost copy, a record merged by hand); only with the `test-support` feature,
    /// which no build of the node turns on.
    #[cfg(feature = "test-support")]
    pub fn local_store(&self) -> &LocalStore {
        &self.store
    }

    /// Bytes the node's engine occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.store.engine().disk_bytes()
    }

    /// Brings gauges that are sampled, not counted, up to date before an export.
    pub fn refresh_gauges(&self) {
        self.store.refresh_gauges();
    }
}

/// Records `cluster status` examines per node to count keys exactly.
pub const KEYS_COUNTED_MAX: u64 = 100_000;

/// A node's name when none is configured: its cluster address, or a random name when that
/// address is not known before binding (port 0, as tests use).
fn default_node_id(config: &ServerConfig) -> String {
    let address = config
        .advertise
        .clone()
        .unwrap_or_else(|| config.listen.clone());
    if address.ends_with(":0") {
        format!("node-{:08x}", rand::random::<u32>())
    } else {
        address
    }
}

/// Creates the data directory, takes its lock, and checks it holds this engine's data.
fn lock_data_dir(config: &ServerConfig) -> Result<File, NodeError> {
    let dir = &config.data_dir;
    let fail = |message: String| NodeError::DataDir {
        path: dir.display().to_string(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let lock = File::create(dir.join("LOCK")).map_err(|e| fail(e.to_string()))?;
    lock.try_lock()
        .map_err(|_| fail("in use by another ringkv process".into()))?;
    check_engine_marker(dir, config.engine.name()).map_err(fail)?;
    Ok(lock)
}

/// The first start records the engine; later starts must use the same one, or the node would
/// come up empty beside its real data.
fn check_engine_marker(dir: &Path, engine: &str) -> Result<(), String> {
    let marker = dir.join("ENGINE");
    match std::fs::read_to_string(&marker) {
        Ok(found) if found.trim() == engine => Ok(()),
        Ok(found) => Err(format!(
            "holds data of engine {:?}; start with --engine {}",
            found.trim(),
            found.trim()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&marker, format!("{engine}\n")).map_err(|e| e.to_string())
        }
        Err(error) => Err(error.to_string()),
    }
}

/// Starts the node's cluster services once its REST API is bound at `http_addr` (peers
/// and clients learn that address through gossip): binds the cluster address, joins the
/// seeds, answers peers over the RPC, spreads keyspace definitions, hands hints off, runs
/// anti-entropy and reaps tombstones, until
/// `signal` turns true. Returns the bound cluster address and the services' tasks.
pub async fn start_cluster_services(
    node: &Arc<Node>,
    http_addr: SocketAddr,
    signal: watch::Receiver<bool>,
) -> Result<(SocketAddr, Vec<JoinHandle<()>>), NodeError> {
    let (cluster_addr, rpc, joining) = start_gossip(node, http_addr, signal.clone()).await?;
    let rpc_task = tokio::spawn(ringkv_cluster::rpc::serve(
        rpc,
        Arc::new(crate::peers::PeerService::new(node)),
        signal.clone(),
    ));
    let metadata_task = tokio::spawn(crate::keyspaces::spread(Arc::clone(node), signal.clone()));
    let hint_writer = tokio::spawn(crate::handoff::run_writer(Arc::clone(node), signal.clone()));
    let hint_replay = tokio::spawn(crate::handoff::run_replay(Arc::clone(node), signal.clone()));
    let anti_entropy = tokio::spawn(crate::anti_entropy::run(Arc::clone(node), signal.clone()));
    let reaper = tokio::spawn(crate::reaper::run(Arc::clone(node), signal.clone()));
    let leave = tokio::spawn(crate::leave::resume(Arc::clone(node), signal.clone()));
    let traffic = tokio::spawn(crate::traffic::run(Arc::clone(node), signal.clone()));
    let strong = tokio::spawn(crate::strong::run(Arc::clone(node), signal.clone()));
    let mut tasks = vec![
        rpc_task,
        metadata_task,
        hint_writer,
        hint_replay,
        anti_entropy,
        reaper,
        leave,
        traffic,
        strong,
    ];
    if joining {
        tasks.push(tokio::spawn(crate::join::run(Arc::clone(node), signal)));
    }
    Ok((cluster_addr, tasks))
}

/// Binds the cluster address — UDP for gossip and TCP for RPC, on the same port, so peers
/// need one address per node — and joins the seeds. Returns the bound address, the RPC
/// listener, and whether this node is joining (it must stream its ranges first).
async fn start_gossip(
    node: &Arc<Node>,
    http_addr: SocketAddr,
    signal: watch::Receiver<bool>,
) -> Result<(SocketAddr, TcpListener, bool), NodeError> {
    let config = &node.config;
    let (socket, rpc) = bind_cluster(&config.listen).await?;
    let bind_error = |source| NodeError::Bind {
        address: config.listen.clone(),
        source,
    };
    let bound = socket.local_addr().map_err(bind_error)?;
    let remembered = remembered_members(node);
    let joining = crate::join::starts_joining(node, !remembered.is_empty());
    let me = NodeIdentity {
        id: node.node_id.clone(),
        address: config
            .advertise
            .clone()
            .unwrap_or_else(|| bound.to_string()),
        http: advertised_http(config.advertise.as_deref(), http_addr),
        zone: config.zone.clone(),
        weight: config.weight,
        // A node that was leaving when it stopped goes on leaving; one that left stays out.
        status: if joining {
            ringkv_cluster::membership::NodeStatus::Joining
        } else {
            crate::leave::recorded_status(node)
                .unwrap_or(ringkv_cluster::membership::NodeStatus::Normal)
        },
        // Newer than any identity of this node's earlier runs (each change of status adds
        // one), so a restarted node's settings — a wiped node now joining — win over what
        // the others remember of it.
        generation: node.now_ms(),
    };
    let removed = removed_members(node);
    let saver = Arc::downgrade(node);
    let saves = Arc::new(Saves::default());
    let peers = Arc::downgrade(node);
    let hooks = crate::gossip::Hooks {
        members_changed: Box::new(move |members: Vec<NodeIdentity>| {
            if let Some(node) = saver.upgrade() {
                remember_members(node, Arc::clone(&saves), members);
            }
        }),
        back_alive: Box::new(move |address: &str| {
            if let Some(node) = peers.upgrade() {
                node.peers.retry_now(address);
            }
        }),
    };
    if node.cluster_key.is_none() && !is_loopback(&config.listen) {
        tracing::warn!(
            listen = %config.listen,
            "no cluster_secret_file: anyone who reaches this address can join the ring and \
             send this node requests"
        );
    }
    if node.cluster_tls.is_none() && !is_loopback(&config.listen) {
        tracing::warn!(
            listen = %config.listen,
            "no cluster_tls_*_file: node-to-node traffic crosses the network unencrypted"
        );
    }
    let membership = crate::gossip::Start {
        seeds: &config.join,
        remembered,
        removed,
        hooks,
        key: node.cluster_key.clone(),
        faults: Arc::clone(&node.peers.faults),
    };
    let gossip = crate::gossip::start(socket, me, membership, signal)
        .await
        .map_err(bind_error)?;
    let _ = node.gossip.set(gossip);
    Ok((bound, rpc, joining))
}

/// Whether `address` (`host:port`) is on the loopback interface.
fn is_loopback(address: &str) -> bool {
    address
        .parse::<SocketAddr>()
        .is_ok_and(|address| address.ip().is_loopback())
        || address.starts_with("localhost:")
}

/// The REST address to tell peers and clients: the bound one, or — when it binds every
/// interface — the advertised host with the bound port.
fn advertised_http(advertise: Option<&str>, http_addr: SocketAddr) -> String {
    let host = advertise
        .filter(|_| http_addr.ip().is_unspecified())
        .and_then(|address| address.rsplit_once(':'))
        .map(|(host, _)| host);
    match host {
        Some(host) => format!("{host}:{}", http_addr.port()),
        None => http_addr.to_string(),
    }
}

/// Where the ring members are saved between runs.
const MEMBERS_META: &str = "cluster/members";

/// Where the nodes an operator removed are saved.
const REMOVED_META: &str = "cluster/removed";

/// The removed nodes saved at the last run.
fn removed_members(node: &Node) -> std::collections::BTreeMap<String, u64> {
    let saved = node.store.meta_get(REMOVED_META).ok().flatten();
    saved
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Why a node could not be removed from the ring.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No such member.
    #[error("no member {0} in the ring")]
    Unknown(String),
    /// The member is alive: only a dead node is removed (a live one leaves).
    #[error("{0} is not down: only a node the failure detector declared down can be removed")]
    Alive(String),
    /// The node asked is the one to remove.
    #[error("a node cannot remove itself")]
    Itself,
    /// This node has no membership yet.
    #[error("this node is not serving its cluster address yet")]
    NotServing,
    /// The removal could not be saved.
    #[error(transparent)]
    Store(#[from] ReplicaError),
}

impl Node {
    /// Takes dead node `id` out of the ring for good (`ringkv cluster remove`), here and on
    /// every live member; its key ranges pass to the next nodes of the ring, which
    /// anti-entropy fills from the surviving replicas until every key has N copies again.
    pub async fn remove_member(self: &Arc<Self>, id: &str) -> Result<(), RemoveError> {
        let view = self.view();
        if id == view.me {
            return Err(RemoveError::Itself);
        }
        let (identity, _) = view
            .members
            .get(id)
            .ok_or_else(|| RemoveError::Unknown(id.to_owned()))?;
        if !view.is_down(id) {
            return Err(RemoveError::Alive(id.to_owned()));
        }
        let generation = identity.generation;
        self.adopt_removal(id, generation).await?;
        let request = || crate::peers::PeerRequest::RemoveMember {
            id: id.to_owned(),
            generation,
        };
        let timeout = std::time::Duration::from_millis(self.config.rpc_timeout_ms);
        let calls = view
            .members
            .iter()
            .filter(|(peer, _)| **peer != view.me && *peer != id && !view.is_down(peer))
            .map(|(_, (peer, _))| {
                let client = self.peers.get(&peer.address);
                async move { client.call(request(), timeout).await }
            });
        // Best effort: a member that misses it learns it from the metadata spread.
        futures_util::future::join_all(calls).await;
        Ok(())
    }

    /// Applies and saves the removal of `id` at `generation`, as asked by an operator here or
    /// told by another member.
    pub async fn adopt_removal(
        self: &Arc<Self>,
        id: &str,
        generation: u64,
    ) -> Result<(), RemoveError> {
        let gossip = self.gossip.get().ok_or(RemoveError::NotServing)?;
        if id == self.node_id {
            return Ok(());
        }
        let before = self.view();
        if gossip.remove_member(id, generation) {
            let (node, removed) = (Arc::clone(self), id.to_owned());
            tokio::spawn(crate::restore::run(node, removed, before));
        }
        let bytes = serde_json::to_vec(&gossip.removed()).expect("a map of ids always serializes");
        let node = Arc::clone(self);
        tokio::task::spawn_blocking(move || node.store.meta_put(REMOVED_META, &bytes))
            .await
            .map_err(|error| ReplicaError::Invalid(error.to_string()))??;
        Ok(())
    }
}

/// The ring members saved at the last run (none for a new node, or if unreadable).
fn remembered_members(node: &Node) -> Vec<NodeIdentity> {
    let saved = node.store.meta_get(MEMBERS_META).ok().flatten();
    saved
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Orders saves of the member list: the number of the last change asked for, and of the
/// last one written.
#[derive(Default)]
struct Saves {
    requested: std::sync::atomic::AtomicU64,
    written: parking_lot::Mutex<u64>,
}

/// Saves the ring members, off the gossip task (it syncs to disk); a save overtaken by a
/// newer one is skipped, so the newest list is the one that stays.
fn remember_members(node: Arc<Node>, saves: Arc<Saves>, members: Vec<NodeIdentity>) {
    let number = saves
        .requested
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    tokio::task::spawn_blocking(move || {
        let mut written = saves.written.lock();
        if *written > number {
            return;
        }
        let Ok(bytes) = serde_json::to_vec(&members) else {
            return;
        };
        match node.store.meta_put(MEMBERS_META, &bytes) {
            Ok(()) => *written = number,
            Err(error) => tracing::warn!(%error, "cannot save the cluster members"),
        }
    });
}

/// Binds UDP and TCP on one port. With port 0 the UDP port is chosen first; if its TCP twin
/// is taken, another is tried.
async fn bind_cluster(listen: &str) -> Result<(tokio::net::UdpSocket, TcpListener), NodeError> {
    const ATTEMPTS: usize = 16;
    let bind_error = |source| NodeError::Bind {
        address: listen.to_owned(),
        source,
    };
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(bind_error)?;
        let bound = socket.local_addr().map_err(bind_error)?;
        match TcpListener::bind(bound).await {
            Ok(rpc) => return Ok((socket, rpc)),
            Err(error) if listen.ends_with(":0") => last_error = Some(error),
            Err(error) => return Err(bind_error(error)),
        }
    }
    Err(bind_error(last_error.expect("at least one attempt")))
}
