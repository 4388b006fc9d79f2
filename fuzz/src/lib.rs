//! What the fuzz targets share: one in-process node per fuzzing process (the in-memory
//! engine without syncs, in a directory that lives as long as the process) and a runtime to
//! drive its async handlers.

use ringkv_coordinator::{Node, ServerConfig};
use std::sync::{Arc, OnceLock};

/// The process's node and runtime, made on first use.
pub fn node() -> &'static FuzzNode {
    static NODE: OnceLock<FuzzNode> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            engine: ringkv_storage::EngineKind::Memory,
            sync: ringkv_replica::SyncPolicy::None,
            ..ServerConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let node = Node::open(config).expect("the fuzzing node opens");
        FuzzNode {
            node,
            runtime,
            _dir: dir,
        }
    })
}

/// A node for fuzzing, and the runtime to call it on.
pub struct FuzzNode {
    /// The node.
    pub node: Arc<Node>,
    /// A current-thread runtime.
    pub runtime: tokio::runtime::Runtime,
    /// The node's data directory, kept for the process's life.
    _dir: tempfile::TempDir,
}
