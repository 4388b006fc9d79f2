//! Causal-context tokens (`X-Ringkv-Context`), which clients send back: any text decodes
//! or is refused, and a context that decodes encodes back to a token that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::causal::VersionVector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(context) = VersionVector::from_token(text) {
        let again = VersionVector::from_token(&context.to_token()).expect("a token it made decodes");
        assert!(again == context, "a context changed in a round trip");
    }
});
