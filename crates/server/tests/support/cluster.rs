//! Clusters of in-process nodes for tests: started joined through the first, driven
//! through each node's REST router, stopped and restarted, partitioned. Every wait is
//! bounded.

use super::{start_node, TestNode};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ringkv_server::gossip::ClusterView;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Longest any convergence wait may take.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

/// Sends one REST request to `node` through its router.
pub async fn call(
    node: &TestNode,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::from(body.to_owned())).unwrap();
    let router = ringkv_server::http::router(Arc::clone(&node.running.node));
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn put(node: &TestNode, uri: &str, value: &str) -> Answer {
    let body = serde_json::json!({ "value": value }).to_string();
    call(
        node,
        "PUT",
        uri,
        &[("content-type", "application/json")],
        &body,
    )
    .await
}

pub fn view(node: &TestNode) -> Arc<ClusterView> {
    node.running.node.view()
}

/// Waits (bounded) until `check` holds, polling.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not reached within {CONVERGE_WITHIN:?}");
}

/// Starts `count` nodes, each in its own zone, joined through the first; returns once every
/// node sees every other alive.
pub async fn cluster(count: usize) -> Vec<TestNode> {
    cluster_with(count, |_| {}).await
}

/// [`cluster`] with `configure` applied to every node's configuration.
pub async fn cluster_with(
    count: usize,
    configure: impl Fn(&mut ringkv_server::ServerConfig) + Clone + Send + 'static,
) -> Vec<TestNode> {
    let seed_configure = configure.clone();
    let seed = start_node(move |config| {
        config.zone = "z0".into();
        seed_configure(config);
    })
    .await;
    let seed_address = seed.running.cluster_addr.to_string();
    let mut nodes = vec![seed];
    for i in 1..count {
        let (join, configure) = (seed_address.clone(), configure.clone());
        nodes.push(
            start_node(move |config| {
                config.zone = format!("z{i}");
                config.join = vec![join];
                configure(config);
            })
            .await,
        );
    }
    for node in &nodes {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        loop {
            let seen = view(node);
            if seen.members.len() == count
                && seen
                    .members
                    .keys()
                    .all(|id| !seen.is_down(id) && !seen.is_joining(id))
            {
                break;
            }
            if Instant::now() > deadline {
                // What each node sees, for whoever has to find out why.
                for other in &nodes {
                    eprintln!("joining: {:?}", other.running.node.joining.progress());
                    let other = view(other);
                    let ids = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
                        other
                            .members
                            .keys()
                            .filter(|id| keep(id))
                            .cloned()
                            .collect()
                    };
                    eprintln!(
                        "{} sees members {:?}, down {:?}, joining {:?}",
                        other.me,
                        ids(&|_| true),
                        ids(&|id| other.is_down(id)),
                        ids(&|id| other.is_joining(id)),
                    );
                }
                panic!("every node sees the whole cluster alive and joined: not within {CONVERGE_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes
}

pub async fn stop(node: TestNode, others: &[TestNode]) -> (String, tempfile::TempDir, String) {
    let TestNode { running, dir } = node;
    let (id, listen) = (
        running.node.node_id.clone(),
        running.cluster_addr.to_string(),
    );
    running.shutdown().await;
    eventually("the others see it down", async || {
        others.iter().all(|node| view(node).is_down(&id))
    })
    .await;
    (id, dir, listen)
}

/// Starts node `id` again on its data directory and cluster address, with no `--join`: the
/// saved members are its way back. `configure` is applied to its configuration.
pub async fn restart(
    id: &str,
    dir: tempfile::TempDir,
    listen: String,
    configure: impl FnOnce(&mut ringkv_server::ServerConfig),
) -> TestNode {
    let mut config = ringkv_server::ServerConfig {
        node_id: Some(id.to_owned()),
        data_dir: dir.path().to_path_buf(),
        http: "127.0.0.1:0".into(),
        resp: "127.0.0.1:0".into(),
        listen,
        ..ringkv_server::ServerConfig::default()
    };
    configure(&mut config);
    TestNode {
        running: ringkv_server::start(config).await.unwrap(),
        dir,
    }
}

/// Cuts the links between `isolated` and every other node (both ways), or heals them all.
pub fn partition(nodes: &[TestNode], isolated: Option<usize>) {
    let address = |i: usize| nodes[i].running.cluster_addr.to_string();
    for (i, node) in nodes.iter().enumerate() {
        let blocked: BTreeSet<String> = match isolated {
            None => BTreeSet::new(),
            Some(cut) if cut == i => (0..nodes.len()).filter(|&j| j != i).map(address).collect(),
            Some(cut) => BTreeSet::from([address(cut)]),
        };
        node.running.node.peers.faults.set(blocked, Duration::ZERO);
    }
}
