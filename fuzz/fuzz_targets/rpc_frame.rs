//! Cluster RPC as a forged peer would send it: bytes split into frames by the codec, each
//! decoded as a peer request and, if it decodes, answered by a real node; nothing panics
//! and every answer is a value or an error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_coordinator::peers::{answer, PeerRequest};
use ringkv_cluster::frames::FrameCodec;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let ringkv_fuzz::FuzzNode { node, runtime, .. } = ringkv_fuzz::node();
    let mut codec = FrameCodec::new(1 << 20);
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buffer) {
        let Ok(request) = postcard::from_bytes::<PeerRequest>(&frame) else { continue };
        // Bounded so that one input cannot stall the fuzzer (a scan of u32::MAX keys of an
        // empty store is quick; a join or repair waits on peers that do not exist).
        let _ = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), answer(node, request)).await
        });
    }
    // The plain postcard decoding too, without the framing.
    if let Ok(request) = postcard::from_bytes::<PeerRequest>(data) {
        let _ = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(1), answer(node, request)).await
        });
    }
});
