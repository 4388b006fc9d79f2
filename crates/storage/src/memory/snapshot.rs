//! Snapshot files of the memory engine: every key and value at one point of the log.
//!
//! Layout: the magic `RKVSNAP1`, then per entry `key length (u32) | value length (u32) |
//! CRC32C of lengths and key | CRC32C of value | key | value`, then a footer whose key length
//! is `u32::MAX`, followed by the entry count and a CRC32C of that count. A file without a
//! valid footer is incomplete and never used (snapshots are written to a temporary name and
//! renamed only after fsync, so this means damage).
//!
//! The two checksums per entry let a damaged value be pinned to its key: that key reads as
//! corrupted while the rest load. A damaged header loses the entry boundaries, so loading scans
//! forward to the next header whose checksum holds and reports the bytes it skipped.

use crate::engine::StorageError;
use ringkv_core::limits::{RECORD_BYTES_MAX, STORED_KEY_BYTES_READ_MAX};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const HEADER_BYTES: usize = 16;
const FOOTER_MARK: u32 = u32::MAX;
const FOOTER_BYTES: usize = 4 + 8 + 4;

/// Writes `entries` to `path` and fsyncs it.
pub fn write<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    path: &Path,
    entries: impl Iterator<Item = (K, V)>,
) -> Result<(), StorageError> {
    // Synced as it is written, so that the log's syncs never wait behind all of it.
    let paced = crate::background::PacedFile::new(File::create(path)?);
    let mut out = BufWriter::with_capacity(1 << 20, paced);
    out.write_all(MAGIC)?;
    let mut count: u64 = 0;
    for (key, value) in entries {
        let (key, value) = (key.as_ref(), value.as_ref());
        out.write_all(&header(key, value))?;
        out.write_all(key)?;
        out.write_all(value)?;
        count += 1;
    }
    out.write_all(&FOOTER_MARK.to_le_bytes())?;
    out.write_all(&count.to_le_bytes())?;
    out.write_all(&crc32c::crc32c(&count.to_le_bytes()).to_le_bytes())?;
    let paced = out.into_inner().map_err(|e| e.into_error())?;
    paced.into_inner().sync_all()?;
    Ok(())
}

fn header(key: &[u8], value: &[u8]) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&(key.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&(value.len() as u32).to_le_bytes());
    let key_crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..8]), key);
    header[8..12].copy_from_slice(&key_crc.to_le_bytes());
    header[12..16].copy_from_slice(&crc32c::crc32c(value).to_le_bytes());
    header
}

/// What loading a snapshot produced.
#[derive(Default)]
pub struct Loaded {
    /// Every entry whose key and value checked out.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Keys whose value failed its checksum: they must read as corrupted, not as absent.
    pub corrupt_keys: BTreeSet<Vec<u8>>,
    /// Bytes skipped because entry boundaries were lost (keys there are unknown).
    pub skipped_bytes: u64,
}

/// Loads a snapshot file; see the module comment for how damage is handled.
pub fn load(bytes: &[u8], name: &str) -> Result<Loaded, StorageError> {
    let footer_at = bytes
        .len()
        .checked_sub(FOOTER_BYTES)
        .filter(|_| bytes.starts_with(MAGIC));
    let Some(footer_at) = footer_at.filter(|&at| valid_footer(&bytes[at..])) else {
        return Err(StorageError::Corruption(format!(
            "snapshot {name} is incomplete or damaged"
        )));
    };
    let body = &bytes[MAGIC.len()..footer_at];
    let mut loaded = Loaded::default();
    let mut offset = 0;
    while offset < body.len() {
        match entry_at(&body[offset..]) {
            Some((key, value, value_ok, len)) => {
                if value_ok {
                    loaded.entries.insert(key.to_vec(), value.to_vec());
                } else {
                    loaded.corrupt_keys.insert(key.to_vec());
                }
                offset += len;
            }
            None => {
                offset += 1;
                loaded.skipped_bytes += 1;
            }
        }
    }
    Ok(loaded)
}

fn valid_footer(footer: &[u8]) -> bool {
    let mark = u32::from_le_bytes(footer[0..4].try_into().expect("footer length checked"));
    let count = &footer[4..12];
    let crc = u32::from_le_bytes(footer[12..16].try_into().expect("footer length checked"));
    mark == FOOTER_MARK && crc32c::crc32c(count) == crc
}

/// The entry at the start of `rest`, if its header checks out: key, value, whether the value
/// checks out, and the entry's whole length.
fn entry_at(rest: &[u8]) -> Option<(&[u8], &[u8], bool, usize)> {
    let header = rest.get(..HEADER_BYTES)?;
    let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let (key_len, value_len) = (field(0) as usize, field(4) as usize);
    if key_len > STORED_KEY_BYTES_READ_MAX || value_len > RECORD_BYTES_MAX {
        return None;
    }
    let key = rest.get(HEADER_BYTES..HEADER_BYTES + key_len)?;
    if crc32c::crc32c_append(crc32c::crc32c(&header[0..8]), key) != field(8) {
        return None;
    }
    let value_at = HEADER_BYTES + key_len;
    let value = rest.get(value_at..value_at + value_len)?;
    Some((
        key,
        value,
        crc32c::crc32c(value) == field(12),
        value_at + value_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BTreeMap<Vec<u8>, Vec<u8>> {
        (0..50u32)
            .map(|i| {
                (
                    format!("key{i:03}").into_bytes(),
                    format!("value-{i}-{}", "x".repeat(40)).into_bytes(),
                )
            })
            .collect()
    }

    fn written(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write(&path, map.iter()).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn snapshot_round_trips() {
        let map = sample();
        let loaded = load(&written(&map), "s").unwrap();
        assert_eq!(loaded.entries, map);
        assert!(loaded.corrupt_keys.is_empty());
        assert_eq!(loaded.skipped_bytes, 0);
    }

    #[test]
    fn a_flipped_value_byte_marks_only_that_key_corrupt() {
        let map = sample();
        let mut bytes = written(&map);
        let at = bytes.windows(8).position(|w| w == b"value-7-").unwrap();
        bytes[at + 10] ^= 0x01;
        let loaded = load(&bytes, "s").unwrap();
        assert_eq!(
            loaded.corrupt_keys.iter().collect::<Vec<_>>(),
            vec![&b"key007".to_vec()]
        );
        assert_eq!(loaded.entries.len(), map.len() - 1);
    }

    #[test]
    fn a_flipped_header_byte_skips_to_the_next_entry() {
        let map = sample();
        let mut bytes = written(&map);
        let at = bytes.windows(6).position(|w| w == b"key020").unwrap();
        bytes[at - 12] ^= 0x10;
        let loaded = load(&bytes, "s").unwrap();
        assert_eq!(loaded.entries.len(), map.len() - 1);
        assert!(!loaded.entries.contains_key(b"key020".as_slice()));
        assert!(loaded.skipped_bytes > 0);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_loader(mut bytes: Vec<u8>, with_magic: bool) {
            if with_magic {
                let mut framed = MAGIC.to_vec();
                framed.append(&mut bytes);
                bytes = framed;
            }
            let _ = load(&bytes, "fuzz");
        }
    }

    #[test]
    fn a_truncated_snapshot_is_refused() {
        let bytes = written(&sample());
        assert!(load(&bytes[..bytes.len() - 3], "s").is_err());
    }
}
