//! How the replica's data maps onto engine keys. Every engine key starts with a tag byte:
//!
//! - `d | keyspace length (u8) | keyspace | key` → an encoded record. Keys of one keyspace are
//!   contiguous and in key order, so a prefix scan of a keyspace is one engine range scan.
//! - `x | due (u64 big-endian ms) | keyspace length | keyspace | key` → empty: the expiry
//!   index. A record has one entry, at the moment its earliest sibling dies (expires or was
//!   deleted), so the sweeper reads only what is due instead of scanning everything.
//! - `m | name` → node metadata, such as the replica id.

use ringkv_core::limits::KEYSPACE_NAME_BYTES_MAX;
use ringkv_storage::ScanRange;

const DATA: u8 = b'd';
const EXPIRY: u8 = b'x';
const META: u8 = b'm';

/// Checks a keyspace name: 1 to 64 bytes of ASCII letters, digits, `_` and `-`.
pub fn validate_keyspace(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > KEYSPACE_NAME_BYTES_MAX || !valid_chars {
        return Err(format!(
            "invalid keyspace name {name:?}: use 1 to {KEYSPACE_NAME_BYTES_MAX} letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

fn keyspace_prefix(tag: u8, keyspace: &str, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + keyspace.len() + capacity);
    out.push(tag);
    out.push(keyspace.len() as u8);
    out.extend_from_slice(keyspace.as_bytes());
    out
}

/// The engine key of a record.
pub fn data_key(keyspace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = keyspace_prefix(DATA, keyspace, key.len());
    out.extend_from_slice(key);
    out
}

/// The engine range holding the records of `keyspace` whose keys start with `prefix`.
pub fn data_range(keyspace: &str, prefix: &[u8]) -> ScanRange {
    ScanRange::prefix(&data_key(keyspace, prefix))
}

/// The engine range holding every record of every keyspace.
pub fn all_data_range() -> ScanRange {
    ScanRange::prefix(&[DATA])
}

/// The user key of a record's engine key in `keyspace`.
pub fn user_key<'a>(keyspace: &str, data_key: &'a [u8]) -> &'a [u8] {
    &data_key[2 + keyspace.len()..]
}

/// The expiry-index key for a record of `keyspace`/`key` due at `due_ms`.
pub fn expiry_key(due_ms: u64, keyspace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + keyspace.len() + key.len());
    out.push(EXPIRY);
    out.extend_from_slice(&due_ms.to_be_bytes());
    out.push(keyspace.len() as u8);
    out.extend_from_slice(keyspace.as_bytes());
    out.extend_from_slice(key);
    out
}

/// The expiry-index entries due at or before `due_ms`.
pub fn expiry_due_range(due_ms: u64) -> ScanRange {
    let start = [EXPIRY];
    let mut end = vec![EXPIRY];
    end.extend_from_slice(&due_ms.saturating_add(1).to_be_bytes());
    ScanRange::between(&start, &end)
}

/// An entry of the expiry index, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryEntry {
    /// When the record's earliest sibling died.
    pub due_ms: u64,
    /// The record's keyspace.
    pub keyspace: String,
    /// The record's key.
    pub key: Vec<u8>,
}

/// Decodes an expiry-index key; `None` if it is not one (or is damaged).
pub fn parse_expiry_key(engine_key: &[u8]) -> Option<ExpiryEntry> {
    let rest = engine_key.strip_prefix(&[EXPIRY])?;
    let due_ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let keyspace_len = *rest.get(8)? as usize;
    let keyspace = std::str::from_utf8(rest.get(9..9 + keyspace_len)?)
        .ok()?
        .to_owned();
    let key = rest.get(9 + keyspace_len..)?.to_vec();
    Some(ExpiryEntry {
        due_ms,
        keyspace,
        key,
    })
}

/// The engine key of a metadata item.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut out = vec![META];
    out.extend_from_slice(name.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_sort_by_due_time_and_round_trip() {
        let early = expiry_key(5, "default", b"zzz");
        let late = expiry_key(300, "a", b"a");
        assert!(early < late);
        let parsed = parse_expiry_key(&late).unwrap();
        assert_eq!(
            parsed,
            ExpiryEntry {
                due_ms: 300,
                keyspace: "a".into(),
                key: b"a".to_vec()
            }
        );
        assert!(expiry_due_range(300).contains(&late));
        assert!(!expiry_due_range(299).contains(&late));
    }

    #[test]
    fn keyspaces_do_not_overlap() {
        // "ab" + key "c" must not fall inside keyspace "a"'s range for prefix "bc".
        assert!(!data_range("a", b"bc").contains(&data_key("ab", b"c")));
        assert_eq!(user_key("ks", &data_key("ks", b"key")), b"key");
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(validate_keyspace("default").is_ok());
        assert!(validate_keyspace("").is_err());
        assert!(validate_keyspace("a/b").is_err());
        assert!(validate_keyspace(&"x".repeat(65)).is_err());
    }
}
