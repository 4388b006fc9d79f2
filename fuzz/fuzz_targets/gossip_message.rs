//! Gossip datagrams: the cluster-secret tag check, then the membership state machine, take
//! any bytes without a panic; a datagram with a wrong tag never reaches membership.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_cluster::auth::ClusterKey;
use ringkv_cluster::membership::{Membership, NodeIdentity};
use std::sync::Mutex;

fn membership() -> &'static Mutex<Membership> {
    static MEMBERSHIP: std::sync::OnceLock<Mutex<Membership>> = std::sync::OnceLock::new();
    MEMBERSHIP.get_or_init(|| {
        let mut me = NodeIdentity::seed("127.0.0.1:7946");
        me.id = "fuzz".into();
        Mutex::new(Membership::new(me, 3, 1))
    })
}

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::new(b"a cluster secret for fuzzing").expect("a long enough secret");
    // Raw bytes, as a node without a secret takes them.
    let mut membership = membership().lock().unwrap();
    let _ = membership.receive(data);
    // Bytes that pass the tag check are the sealed ones; random bytes must not.
    if let Some(opened) = key.open_gossip(data) {
        let _ = membership.receive(opened);
    }
    let sealed = key.seal_gossip(data);
    assert_eq!(key.open_gossip(&sealed), Some(data));
});
