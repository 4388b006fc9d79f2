//! Hard limits, one named constant each, so every parser can refuse oversized input before
//! allocating for it. Layers above may lower them through configuration, never raise them.
//! The compile-time asserts at the end relate them, so changing one cannot silently break
//! another.

/// Longest key a client may store, over every API. Two bounds meet here:
/// - the engine key the replica stores is the key plus at most
///   [`ENGINE_KEY_PREFIX_BYTES_MAX`] bytes, and must fit [`ENGINE_KEY_BYTES_MAX`];
/// - REST names a key in its URL path, percent-encoded (up to three bytes a byte), and the
///   HTTP library refuses URIs over [`URI_BYTES_MAX`]: every key a Redis client can store
///   must stay readable over REST.
///
/// 16 KiB is far above any real key (Redis's docs advise keys of under 1 KiB; DynamoDB caps
/// keys at 2 KiB, memcached at 250 bytes).
pub const KEY_BYTES_MAX: usize = 16 * 1024;

/// Longest key any engine accepts: fjall's tables hold a key's length in 16 bits (and
/// panic beyond). Engines refuse longer keys with an error, whatever the caller.
pub const ENGINE_KEY_BYTES_MAX: usize = u16::MAX as usize;

/// Most bytes the replica puts before a user key in an engine key: the expiry index's tag,
/// due time (u64), keyspace name length and name (see the replica's `layout`).
pub const ENGINE_KEY_PREFIX_BYTES_MAX: usize = 1 + 8 + 1 + KEYSPACE_NAME_BYTES_MAX;

/// Longest key a log or snapshot file is read with: above anything any build wrote (earlier
/// builds let engine keys a little over [`ENGINE_KEY_BYTES_MAX`] through), so an old file
/// still reads, and its over-long keys are refused one by one instead of the file taken for
/// damaged.
pub const STORED_KEY_BYTES_READ_MAX: usize = 2 * ENGINE_KEY_BYTES_MAX;

/// Longest URI the HTTP library (the `http` crate under hyper and axum) accepts; a longer
/// one is answered `414 URI Too Long` before any handler runs.
pub const URI_BYTES_MAX: usize = u16::MAX as usize - 1;

/// Largest value a client may store.
pub const VALUE_BYTES_MAX: usize = 10 * 1024 * 1024;

/// Most entries a causal context may hold. An entry is added per node that ever coordinated a
/// write of the key, so this bounds contexts even in large clusters with many fallbacks. A
/// write that would pass it prunes the oldest entries (`VersionVector::pruned` says how and
/// what it costs), so what is written always reads back.
pub const CONTEXT_ENTRIES_MAX: usize = 256;

/// Most siblings one key may hold (Riak's `siblings_maximum` default is 100). A write that
/// would exceed it is refused: the client must resolve the siblings with a context.
pub const SIBLINGS_MAX: usize = 100;

/// Largest encoded record: every sibling may not be maximal, but the sum is bounded so a
/// corrupt length can never make a reader allocate more than this.
pub const RECORD_BYTES_MAX: usize = 4 * VALUE_BYTES_MAX;

/// Most records one page of a scan holds, whatever the caller asks for (a client's
/// `limit` or `COUNT`, or a peer's request over the cluster RPC): a page is built in memory.
pub const SCAN_PAGE_RECORDS_MAX: usize = 10_000;

/// Longest keyspace name.
pub const KEYSPACE_NAME_BYTES_MAX: usize = 64;

/// Whether `key` is short enough to store or look up; the API edges answer a longer one with
/// a clear error before any work is done for it.
pub fn key_fits(key: &[u8]) -> bool {
    key.len() <= KEY_BYTES_MAX
}

const _: () = assert!(KEY_BYTES_MAX < VALUE_BYTES_MAX);
// A record's context keeps the entries of its siblings' dots when it is pruned: they must fit.
const _: () = assert!(SIBLINGS_MAX < CONTEXT_ENTRIES_MAX);
const _: () = assert!(KEY_BYTES_MAX + ENGINE_KEY_PREFIX_BYTES_MAX <= ENGINE_KEY_BYTES_MAX);
const _: () = assert!(STORED_KEY_BYTES_READ_MAX > ENGINE_KEY_BYTES_MAX + 1024);
// The longest REST path: `/v1/ks/{name}/keys/{key}` with every key byte percent-encoded,
// leaving room for the query string.
const _: () = assert!(
    "/v1/ks/".len() + KEYSPACE_NAME_BYTES_MAX + "/keys/".len() + 3 * KEY_BYTES_MAX + 4096
        <= URI_BYTES_MAX
);
const _: () = assert!(RECORD_BYTES_MAX >= VALUE_BYTES_MAX + KEY_BYTES_MAX);
const _: () = assert!(KEYSPACE_NAME_BYTES_MAX <= u8::MAX as usize);
