//! Stored and transferred records: any bytes decode (checksum, lengths, siblings) or are
//! refused, and a record that decodes encodes back to one that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_core::record::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        let again = Record::decode(&record.encode()).expect("a record it encoded decodes");
        assert_eq!(again, record);
    }
});
