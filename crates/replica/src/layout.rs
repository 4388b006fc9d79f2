//! How the replica's data maps onto engine keys. Every engine key starts with a tag byte:
//!
//! - `r | keyspace number (u16 big-endian) | key` → an encoded record. Keys of one keyspace
//!   are contiguous and in key order, so a prefix scan of a keyspace is one engine range scan.
//!   The number is this node's own for the keyspace name (see
//!   [`keyspace_ids`](crate::keyspace_ids)): a short prefix keeps typical keys short, and
//!   within the 20 bytes fjall's table keys hold inline (measured when fjall's memtable took
//!   every write: ~15 % less server CPU per SET than with the name in every key).
//! - `d | keyspace length (u8) | keyspace | key` → a record in the first layout, which named
//!   the keyspace in every key; found only in data directories not yet migrated.
//! - `x | due (u64 big-endian ms) | keyspace length | keyspace | key` → empty: the expiry
//!   index. A record has one entry, at the moment its earliest sibling dies (expires or was
//!   deleted), so the sweeper reads only what is due instead of scanning everything.
//! - `m | name` → node metadata, such as the replica id.
//! - `h | target length (u8) | target | sequence (u64 big-endian)` → a hint: a record to
//!   deliver to node `target` (see [`crate::hints`]).
//! - `t | keyspace number (u16 big-endian) | key hash (u64 big-endian) | key` → the digest
//!   (u64 little-endian) of the key's record: the hash-tree index anti-entropy reads (see
//!   [`crate::hashtree`]), in ring order, so the keys of a range of the ring are one scan.
//! - `q | group length (u8) | group | part (u8) | index (u64 big-endian)` → a strong
//!   keyspace's Raft group state, kept by the coordinator: its log entries (one part) and its
//!   vote, applied position and snapshot (another), in index order.

use ringkv_core::limits::{ENGINE_KEY_PREFIX_BYTES_MAX, KEYSPACE_NAME_BYTES_MAX};
use ringkv_storage::{BatchKey, ScanRange};
use smallvec::SmallVec;

const DATA: u8 = b'r';
const NAMED_DATA: u8 = b'd';
const EXPIRY: u8 = b'x';
const META: u8 = b'm';
const HINT: u8 = b'h';
const TREE: u8 = b't';
const CONSENSUS: u8 = b'q';

/// A keyspace's number in this node's engine keys.
pub type KeyspaceId = u16;

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

/// The engine key of a record of keyspace number `keyspace`.
pub fn data_key(keyspace: KeyspaceId, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DATA_PREFIX_BYTES + key.len());
    out.extend_from_slice(&data_prefix(keyspace));
    out.extend_from_slice(key);
    out
}

/// A record's engine key for a write batch (and the record cache, whose keys are of the same
/// type): inline unless the key is long, so a write allocates nothing for it.
pub fn batch_key(keyspace: KeyspaceId, key: &[u8]) -> BatchKey {
    inline_key(keyspace, key)
}

/// A record's engine key to look up and drop: on the stack unless the key is long, so a
/// point read allocates nothing for it.
pub fn lookup_key(keyspace: KeyspaceId, key: &[u8]) -> SmallVec<[u8; LOOKUP_KEY_INLINE_BYTES]> {
    inline_key(keyspace, key)
}

/// A record's engine key in a `SmallVec` of `N` inline bytes, written in place: growing one
/// by `extend_from_slice` checks its room and spill state per call, over a hundred
/// instructions per key where a plain SET makes several.
fn inline_key<const N: usize>(keyspace: KeyspaceId, key: &[u8]) -> SmallVec<[u8; N]> {
    let len = DATA_PREFIX_BYTES + key.len();
    if len > N {
        return SmallVec::from_vec(data_key(keyspace, key));
    }
    let mut inline = [0; N];
    inline[..DATA_PREFIX_BYTES].copy_from_slice(&data_prefix(keyspace));
    inline[DATA_PREFIX_BYTES..len].copy_from_slice(key);
    SmallVec::from_buf_and_len(inline, len)
}

/// Engine key bytes [`lookup_key`] holds without allocating.
const LOOKUP_KEY_INLINE_BYTES: usize = 64;

/// What every engine key of keyspace number `keyspace`'s records starts with.
fn data_prefix(keyspace: KeyspaceId) -> [u8; DATA_PREFIX_BYTES] {
    let [high, low] = keyspace.to_be_bytes();
    [DATA, high, low]
}

/// Bytes a record's engine key has before the user key.
const DATA_PREFIX_BYTES: usize = 1 + std::mem::size_of::<KeyspaceId>();

/// Most bytes an expiry-index key has before the user key: tag, due time, name length, name.
const EXPIRY_PREFIX_BYTES_MAX: usize = 1 + 8 + 1 + KEYSPACE_NAME_BYTES_MAX;

// Every engine key the replica makes of a user key within the limit fits every engine.
const _: () = assert!(DATA_PREFIX_BYTES <= ENGINE_KEY_PREFIX_BYTES_MAX);
const _: () = assert!(EXPIRY_PREFIX_BYTES_MAX <= ENGINE_KEY_PREFIX_BYTES_MAX);

/// The engine range holding the records of keyspace `keyspace` whose keys start with
/// `prefix`.
pub fn data_range(keyspace: KeyspaceId, prefix: &[u8]) -> ScanRange {
    ScanRange::prefix(&data_key(keyspace, prefix))
}

/// The engine range holding every record of every keyspace.
pub fn all_data_range() -> ScanRange {
    ScanRange::prefix(&[DATA])
}

/// The user key of a record's engine key.
pub fn user_key(data_key: &[u8]) -> &[u8] {
    &data_key[DATA_PREFIX_BYTES..]
}

/// Every record in the first layout (`d | length | name | key`).
pub fn named_data_range() -> ScanRange {
    ScanRange::prefix(&[NAMED_DATA])
}

/// The keyspace name and user key of a record's engine key in the first layout; `None` if it
/// is not one.
pub fn parse_named_data_key(engine_key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = engine_key.strip_prefix(&[NAMED_DATA])?;
    let length = *rest.first()? as usize;
    let name = std::str::from_utf8(rest.get(1..1 + length)?).ok()?;
    Some((name, rest.get(1 + length..)?))
}

/// The expiry-index key for a record of `keyspace`/`key` due at `due_ms`.
pub fn expiry_key(due_ms: u64, keyspace: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EXPIRY_PREFIX_BYTES_MAX + key.len());
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

/// The engine key of `target`'s hint number `sequence` (`target` at most 255 bytes).
pub fn hint_key(target: &str, sequence: u64) -> Vec<u8> {
    let mut out = hint_prefix(target);
    out.extend_from_slice(&sequence.to_be_bytes());
    out
}

fn hint_prefix(target: &str) -> Vec<u8> {
    let target = &target.as_bytes()[..target.len().min(u8::MAX as usize)];
    let mut out = Vec::with_capacity(2 + target.len() + 8);
    out.push(HINT);
    out.push(target.len() as u8);
    out.extend_from_slice(target);
    out
}

/// The engine range of every hint of every target.
pub fn hints_range() -> ScanRange {
    ScanRange::prefix(&[HINT])
}

/// The engine range of `target`'s hints, in the order they were stored.
pub fn hints_of(target: &str) -> ScanRange {
    ScanRange::prefix(&hint_prefix(target))
}

/// The target and sequence of a hint's engine key; `None` if it is not one.
pub fn parse_hint_key(engine_key: &[u8]) -> Option<(&str, u64)> {
    let rest = engine_key.strip_prefix(&[HINT])?;
    let length = *rest.first()? as usize;
    let target = std::str::from_utf8(rest.get(1..1 + length)?).ok()?;
    let sequence = rest.get(1 + length..)?.try_into().ok()?;
    Some((target, u64::from_be_bytes(sequence)))
}

/// The keyspace number and user key of a record's engine key; `None` if it is not one.
pub fn parse_data_key(engine_key: &[u8]) -> Option<(KeyspaceId, &[u8])> {
    let rest = engine_key.strip_prefix(&[DATA])?;
    let id = KeyspaceId::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    Some((id, &rest[2..]))
}

/// The hash-tree index key of `key` (whose ring hash is `hash`) in keyspace number
/// `keyspace`.
pub fn tree_key(keyspace: KeyspaceId, hash: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TREE_PREFIX_BYTES + key.len());
    out.push(TREE);
    out.extend_from_slice(&keyspace.to_be_bytes());
    out.extend_from_slice(&hash.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Bytes a hash-tree index key has before the user key.
const TREE_PREFIX_BYTES: usize = 1 + std::mem::size_of::<KeyspaceId>() + 8;

const _: () = assert!(TREE_PREFIX_BYTES <= ENGINE_KEY_PREFIX_BYTES_MAX);

/// The hash-tree index entries of keyspace number `keyspace` whose key hashes lie in
/// `[low, high]`.
pub fn tree_range(keyspace: KeyspaceId, low: u64, high: u64) -> ScanRange {
    let start = tree_key(keyspace, low, b"");
    match high.checked_add(1) {
        Some(end) => ScanRange::between(&start, &tree_key(keyspace, end, b"")),
        None => {
            let mut range = ScanRange::prefix(&start[..1 + std::mem::size_of::<KeyspaceId>()]);
            range.start = std::ops::Bound::Included(start);
            range
        }
    }
}

/// The whole hash-tree index, of every keyspace.
pub fn trees_range() -> ScanRange {
    ScanRange::prefix(&[TREE])
}

/// The keyspace number, key hash and user key of a hash-tree index key; `None` if it is not
/// one.
pub fn parse_tree_key(engine_key: &[u8]) -> Option<(KeyspaceId, u64, &[u8])> {
    let rest = engine_key.strip_prefix(&[TREE])?;
    let id = KeyspaceId::from_be_bytes(rest.get(..2)?.try_into().ok()?);
    let hash = u64::from_be_bytes(rest.get(2..10)?.try_into().ok()?);
    Some((id, hash, &rest[10..]))
}

/// The engine key of a metadata item.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut out = vec![META];
    out.extend_from_slice(name.as_bytes());
    out
}

/// The engine key of item `index` of part `part` of Raft group `group` (see the module
/// documentation); group names are at most 255 bytes.
pub fn consensus_key(group: &str, part: u8, index: u64) -> Vec<u8> {
    let name = &group.as_bytes()[..group.len().min(u8::MAX as usize)];
    let mut key = Vec::with_capacity(12 + name.len());
    key.push(CONSENSUS);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key.push(part);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// Items `from..` of part `part` of Raft group `group`, in index order.
pub fn consensus_range(group: &str, part: u8, from: u64) -> ScanRange {
    let start = consensus_key(group, part, from);
    let end = consensus_key(group, part, u64::MAX);
    let mut end_exclusive = end;
    end_exclusive.push(0);
    ScanRange::between(&start, &end_exclusive)
}

/// The index of a key [`consensus_key`] made.
pub fn consensus_index(engine_key: &[u8]) -> Option<u64> {
    let tail = engine_key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(engine_key[tail..].try_into().ok()?))
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
        assert!(!data_range(1, b"").contains(&data_key(2, b"")));
        assert!(!data_range(1, b"").contains(&data_key(0, b"\xff\xff")));
        assert!(data_range(1, b"ab").contains(&data_key(1, b"abc")));
        assert!(all_data_range().contains(&data_key(KeyspaceId::MAX, b"k")));
        assert_eq!(user_key(&data_key(7, b"key")), b"key");
    }

    #[test]
    fn lookup_and_batch_keys_are_data_keys_short_or_long() {
        let batch_inline = BatchKey::new().inline_size();
        for len in [
            0,
            1,
            batch_inline - 3,
            batch_inline - 2,
            LOOKUP_KEY_INLINE_BYTES - 3,
            LOOKUP_KEY_INLINE_BYTES - 2,
            300,
        ] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let data = data_key(258, &key);
            let lookup = lookup_key(258, &key);
            assert_eq!(&lookup[..], &data[..], "key of {len} bytes");
            assert_eq!(lookup.spilled(), len + 3 > LOOKUP_KEY_INLINE_BYTES);
            let batch = batch_key(258, &key);
            assert_eq!(&batch[..], &data[..], "key of {len} bytes");
            assert_eq!(batch.spilled(), len + 3 > batch_inline);
        }
    }

    #[test]
    fn tree_keys_sort_by_hash_and_ranges_hold_their_hashes() {
        let (low, mid, top) = (
            tree_key(3, 5, b"zz"),
            tree_key(3, 6, b"a"),
            tree_key(3, u64::MAX, b"k"),
        );
        assert!(low < mid && mid < top);
        assert_eq!(parse_tree_key(&top), Some((3, u64::MAX, &b"k"[..])));
        assert!(tree_range(3, 5, 5).contains(&low) && !tree_range(3, 5, 5).contains(&mid));
        assert!(tree_range(3, 6, u64::MAX).contains(&top));
        assert!(!tree_range(3, 0, u64::MAX).contains(&tree_key(4, 0, b"")));
        assert!(trees_range().contains(&top) && !trees_range().contains(&data_key(3, b"k")));
        assert_eq!(
            parse_data_key(&data_key(258, b"key")),
            Some((258, &b"key"[..]))
        );
        assert_eq!(parse_data_key(&top), None);
    }

    #[test]
    fn first_layout_keys_parse() {
        let mut old = vec![b'd', 3];
        old.extend_from_slice(b"db1key");
        assert_eq!(parse_named_data_key(&old), Some(("db1", &b"key"[..])));
        assert!(named_data_range().contains(&old));
        assert!(!all_data_range().contains(&old));
        assert_eq!(parse_named_data_key(&data_key(1, b"k")), None);
    }

    #[test]
    fn hint_keys_round_trip_and_keep_targets_apart() {
        let key = hint_key("node-a", 258);
        assert_eq!(parse_hint_key(&key), Some(("node-a", 258)));
        assert!(hints_of("node-a").contains(&key));
        assert!(
            !hints_of("node-").contains(&key),
            "a target is not a prefix of another"
        );
        assert!(hint_key("node-a", 1) < hint_key("node-a", 256));
        assert!(hints_range().contains(&key));
        assert!(!all_data_range().contains(&key));
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(validate_keyspace("default").is_ok());
        assert!(validate_keyspace("").is_err());
        assert!(validate_keyspace("a/b").is_err());
        assert!(validate_keyspace(&"x".repeat(65)).is_err());
    }
}
