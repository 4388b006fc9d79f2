//! The Redis-protocol request parser: any bytes, split into requests until one is
//! incomplete or malformed, never panic, and every request parsed is no larger than the
//! bytes it came from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_server::resp::request;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(found)) = request::check(&buffer) {
        let before = buffer.len();
        assert!(found.bytes() <= before, "a request longer than its buffer");
        let _ = found.common(&buffer);
        let arguments = request::parse(&mut buffer, found);
        let argument_bytes: usize = arguments.iter().map(|a| a.len()).sum();
        assert!(argument_bytes <= before);
        assert!(buffer.len() < before, "parsing made no progress");
    }
});
