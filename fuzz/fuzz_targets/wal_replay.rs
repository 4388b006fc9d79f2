//! Write-ahead-log replay: any file content, as the newest log (where a torn tail is
//! allowed) or an older one, is replayed or refused as corrupt, never a panic, and the valid
//! part never extends past the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_storage::wal;

fuzz_target!(|data: &[u8]| {
    for newest in [true, false] {
        if let Ok(replay) = wal::replay(data, 7, newest, "fuzz") {
            assert!(replay.valid_bytes <= data.len() as u64);
            assert!(newest || !replay.torn_tail, "only the newest log may be torn");
        }
    }
});
