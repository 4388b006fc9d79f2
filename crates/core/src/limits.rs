//! Hard limits, one named constant each, so every parser can refuse oversized input before
//! allocating for it. Layers above may lower them through configuration, never raise them.

/// Longest key a client may store (Redis and Cassandra use the same order of magnitude).
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// Largest value a client may store.
pub const VALUE_BYTES_MAX: usize = 10 * 1024 * 1024;

/// Most entries a causal context may hold. An entry is added per node that ever coordinated a
/// write of the key, so this bounds contexts even in large clusters with many fallbacks.
pub const CONTEXT_ENTRIES_MAX: usize = 256;

/// Most siblings one key may hold (Riak's `siblings_maximum` default is 100). A write that
/// would exceed it is refused: the client must resolve the siblings with a context.
pub const SIBLINGS_MAX: usize = 100;

/// Largest encoded record: every sibling may not be maximal, but the sum is bounded so a
/// corrupt length can never make a reader allocate more than this.
pub const RECORD_BYTES_MAX: usize = 4 * VALUE_BYTES_MAX;

/// Longest keyspace name.
pub const KEYSPACE_NAME_BYTES_MAX: usize = 64;

const _: () = assert!(KEY_BYTES_MAX < VALUE_BYTES_MAX);
const _: () = assert!(RECORD_BYTES_MAX >= VALUE_BYTES_MAX + KEY_BYTES_MAX);
const _: () = assert!(KEYSPACE_NAME_BYTES_MAX <= u8::MAX as usize);
