//! Serving a node's client APIs: binds REST and the Redis protocol over an opened
//! [`Node`], starts its cluster services, and returns a [`RunningNode`] that reports the
//! bound addresses and shuts down cleanly.

use crate::resp::metrics::RespMetrics;
use ringkv_coordinator::node::start_cluster_services;
use ringkv_coordinator::{Node, NodeError, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a node could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The node itself could not open or bind.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The Redis-protocol event loops could not be started (no threads left, and the like).
    #[error("cannot start the Redis-protocol event loops: {0}")]
    EventLoops(std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A node serving its APIs.
pub struct RunningNode {
    /// The node.
    pub node: Arc<Node>,
    /// Where the REST API listens (the real port when the config asked for port 0).
    pub http_addr: SocketAddr,
    /// Where the Redis protocol listens.
    pub resp_addr: SocketAddr,
    /// Where gossip listens (UDP).
    pub cluster_addr: SocketAddr,
    /// The Redis-protocol server's metrics.
    pub resp_metrics: RespMetrics,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Opens the node and starts serving its APIs.
pub async fn start(config: ServerConfig) -> Result<RunningNode, StartError> {
    let node = Node::open(config)?;
    serve(node).await
}

/// Starts serving the APIs of an opened node.
pub async fn serve(node: Arc<Node>) -> Result<RunningNode, StartError> {
    let (shutdown, signal) = watch::channel(false);
    let tls = match (&node.config.tls_cert_file, &node.config.tls_key_file) {
        (Some(cert), Some(key)) => Some(crate::tls::Tls::load(cert, key)?),
        _ => None,
    };
    let http = bind(&node.config.http).await?;
    let http_addr = http.local_addr().map_err(|source| NodeError::Bind {
        address: node.config.http.clone(),
        source,
    })?;
    let router = crate::http::router(Arc::clone(&node));
    let mut stopped = signal.clone();
    let http_tls = tls.as_ref().map(|tls| tls.http());
    let connections_max = node.config.connections_max;
    let read_timeout = std::time::Duration::from_millis(node.config.request_timeout_ms.max(1));
    let http_task = tokio::spawn(async move {
        let http = crate::http::listener::LimitedListener::new(http, connections_max, read_timeout)
            .with_tls(http_tls);
        let service =
            router.into_make_service_with_connect_info::<crate::http::listener::ClientAddr>();
        let serving = axum::serve(http, service).with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        });
        if let Err(error) = serving.await {
            tracing::error!(%error, "REST API stopped");
        }
    });
    let resp = bind(&node.config.resp).await?;
    let resp_addr = resp.local_addr().map_err(|source| NodeError::Bind {
        address: node.config.resp.clone(),
        source,
    })?;
    let resp_shared = Arc::new(crate::resp::RespShared::new(Arc::clone(&node)));
    let resp_metrics = resp_shared.metrics.clone();
    {
        // Blocked commands (BZPOPMIN...) stop waiting when the node stops.
        let (shared, mut stopping) = (Arc::clone(&resp_shared), signal.clone());
        tokio::spawn(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
            shared
                .stopping
                .store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let loops = crate::resp::loops::RespLoops::start(node.config.resp_loops(), &node, &signal)
        .map_err(StartError::EventLoops)?;
    let resp_tls = tls.as_ref().map(|tls| tls.resp());
    let resp_task = tokio::spawn(crate::resp::serve(
        resp,
        resp_tls,
        resp_shared,
        loops,
        signal.clone(),
    ));
    if tls.is_some() || node.cluster_tls.is_some() {
        let cluster_tls = node.cluster_tls.clone();
        tokio::spawn(reload_on_sighup(tls.clone(), cluster_tls, signal.clone()));
    }
    let (cluster_addr, mut tasks) = start_cluster_services(&node, http_addr, signal).await?;
    tasks.extend([http_task, resp_task]);
    Ok(RunningNode {
        node,
        http_addr,
        resp_addr,
        cluster_addr,
        resp_metrics,
        shutdown,
        tasks,
    })
}

/// Reads the TLS certificates and keys (the client APIs', the cluster's) again on every
/// SIGHUP, until `stop` turns true.
async fn reload_on_sighup(
    tls: Option<Arc<crate::tls::Tls>>,
    cluster_tls: Option<Arc<ringkv_cluster::tls::ClusterTls>>,
    mut stop: watch::Receiver<bool>,
) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        tracing::warn!("cannot listen for SIGHUP: TLS certificates reload only on restart");
        return;
    };
    loop {
        tokio::select! {
            _ = hangups.recv() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(error) => tracing::error!(
                    %error,
                    "SIGHUP: TLS reload failed; still serving the old certificate"
                ),
            }
        }
        if let Some(cluster_tls) = &cluster_tls {
            match cluster_tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the cluster TLS files"),
                Err(error) => tracing::error!(
                    %error,
                    "SIGHUP: cluster TLS reload failed; peers still get the old certificate"
                ),
            }
        }
    }
}

async fn bind(address: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Bind {
            address: address.to_owned(),
            source,
        })
}

/// How long a shutdown waits for the last work holding the node.
const RELEASE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

impl RunningNode {
    /// Stops accepting requests, lets in-flight ones finish, and waits for the listeners;
    /// then waits (a bounded time) for the last work still holding the node — a peer's
    /// request being answered, a save of the member list — so that on return the node has
    /// let go of its data directory and can be opened again at once.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT_MAX;
        while Arc::strong_count(&self.node) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
