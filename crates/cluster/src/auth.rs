//! The cluster secret: node-to-node traffic authenticated with a key every member shares
//! (`cluster_secret_file`), so that a stranger on the network can neither join the ring nor
//! send a node requests.
//!
//! - **Gossip**: each datagram carries an HMAC-SHA256 tag (its first [`GOSSIP_TAG_BYTES`]
//!   bytes) of its contents; one without a valid tag is dropped before it is decoded.
//! - **RPC**: a connection starts with a challenge both ways before any frame: the server
//!   sends a random nonce; the client answers with its own nonce and the tag of both; the
//!   server answers with the tag of both in the other order. Either side that gets a wrong
//!   tag closes the connection, so neither a client nor a server without the secret is
//!   talked to.
//!
//! Every tag is computed over a context label first, so a tag made for one purpose is never
//! accepted for another. The secret authenticates; it does not encrypt (that is TLS's part).

use hmac::{Hmac, Mac};
use prometheus_client::metrics::counter::Counter;
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};

/// Fewest bytes a cluster secret may have.
pub const SECRET_BYTES_MIN: usize = 16;

/// Bytes of the tag a gossip datagram carries.
pub const GOSSIP_TAG_BYTES: usize = 16;

/// Bytes of an RPC handshake nonce.
pub const NONCE_BYTES: usize = 16;

/// Bytes of an RPC handshake tag.
pub const HANDSHAKE_TAG_BYTES: usize = 32;

/// Why a cluster secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the cluster secret file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The secret is too short to be hard to guess.
    #[error("the cluster secret has {0} bytes; it needs at least {SECRET_BYTES_MIN} (for example 32 random bytes, base64-encoded)")]
    TooShort(usize),
}

/// The key every member of a cluster shares, and the count of what it turned away.
pub struct ClusterKey {
    mac: Hmac<Sha256>,
    rejected_gossip: Counter,
    rejected_rpc: Counter,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// The key of `secret` (leading and trailing whitespace ignored, so a file written with a
    /// final newline works).
    pub fn new(secret: &[u8]) -> Result<Self, SecretError> {
        let secret = secret.trim_ascii();
        if secret.len() < SECRET_BYTES_MIN {
            return Err(SecretError::TooShort(secret.len()));
        }
        Ok(Self {
            mac: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length"),
            rejected_gossip: Counter::default(),
            rejected_rpc: Counter::default(),
        })
    }

    /// The key of the secret in file `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, SecretError> {
        let secret = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&secret)
    }

    /// The tag of `parts`, in `context`.
    fn tag(&self, context: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(&(context.len() as u64).to_le_bytes());
        mac.update(context);
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` (possibly truncated, at least 16 bytes) is that of `parts` in `context`;
    /// compared in constant time.
    fn verify(&self, context: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.tag(context, parts);
        tag.len() >= 16 && tag.len() <= expected.len() && {
            use subtle::ConstantTimeEq;
            bool::from(expected[..tag.len()].ct_eq(tag))
        }
    }

    /// `datagram` with its tag in front, to send.
    pub fn seal_gossip(&self, datagram: &[u8]) -> Vec<u8> {
        let tag = self.tag(b"ringkv gossip v1", &[datagram]);
        let mut sealed = Vec::with_capacity(GOSSIP_TAG_BYTES + datagram.len());
        sealed.extend_from_slice(&tag[..GOSSIP_TAG_BYTES]);
        sealed.extend_from_slice(datagram);
        sealed
    }

    /// The contents of a received datagram, if its tag is valid; counted otherwise.
    pub fn open_gossip<'a>(&self, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let opened = sealed
            .split_at_checked(GOSSIP_TAG_BYTES)
            .and_then(|(tag, datagram)| {
                self.verify(b"ringkv gossip v1", &[datagram], tag)
                    .then_some(datagram)
            });
        if opened.is_none() {
            self.rejected_gossip.inc();
        }
        opened
    }

    /// The client's proof in the RPC handshake: its tag of both nonces.
    pub fn client_proof(&self, server_nonce: &[u8], client_nonce: &[u8]) -> [u8; 32] {
        self.tag(b"ringkv rpc client v1", &[server_nonce, client_nonce])
    }

    /// The server's proof in the RPC handshake: its tag of both nonces, in the other order.
    pub fn server_proof(&self, server_nonce: &[u8], client_nonce: &[u8]) -> [u8; 32] {
        self.tag(b"ringkv rpc server v1", &[client_nonce, server_nonce])
    }

    /// Whether `proof` is the client's for these nonces.
    pub fn check_client(&self, server_nonce: &[u8], client_nonce: &[u8], proof: &[u8]) -> bool {
        self.verify(
            b"ringkv rpc client v1",
            &[server_nonce, client_nonce],
            proof,
        )
    }

    /// Whether `proof` is the server's for these nonces.
    pub fn check_server(&self, server_nonce: &[u8], client_nonce: &[u8], proof: &[u8]) -> bool {
        self.verify(
            b"ringkv rpc server v1",
            &[client_nonce, server_nonce],
            proof,
        )
    }

    /// Gossip datagrams dropped for a missing or wrong tag (a metric to register).
    pub fn rejected_gossip(&self) -> &Counter {
        &self.rejected_gossip
    }

    /// RPC connections refused: a wrong proof, or none in time (a metric to register; the
    /// server counts each).
    pub fn rejected_rpc(&self) -> &Counter {
        &self.rejected_rpc
    }
}

/// Logs a refusal (of a connection or a datagram) at most every 10 s: a stranger retrying
/// must not flood the log. Every refusal is counted all the same.
pub fn log_refusal(what: &str, peer: &str, why: &str) {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let last = LAST_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            %peer,
            "refusing {what}: {why} (refusals in the next 10 s are only counted)"
        );
    }
}

/// A random nonce for the RPC handshake.
pub fn nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> ClusterKey {
        ClusterKey::new(secret.as_bytes()).unwrap()
    }

    #[test]
    fn a_short_secret_is_refused_and_whitespace_is_ignored() {
        assert!(matches!(
            ClusterKey::new(b"short"),
            Err(SecretError::TooShort(5))
        ));
        let padded = key("  0123456789abcdef\n");
        let plain = key("0123456789abcdef");
        let sealed = plain.seal_gossip(b"hello");
        assert_eq!(padded.open_gossip(&sealed), Some(&b"hello"[..]));
    }

    #[test]
    fn gossip_opens_only_with_the_same_secret_and_untouched() {
        let ours = key("the cluster secret, 32 bytes....");
        let theirs = key("another secret, also long enough");
        let sealed = ours.seal_gossip(b"member update");
        assert_eq!(ours.open_gossip(&sealed), Some(&b"member update"[..]));
        assert_eq!(theirs.open_gossip(&sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(ours.open_gossip(&tampered), None);
        assert_eq!(ours.open_gossip(b"short"), None);
        assert_eq!(ours.open_gossip(b"member update, with no tag at all"), None);
        assert_eq!(ours.rejected_gossip().get(), 3);
    }

    #[test]
    fn handshake_proofs_are_bound_to_secret_nonces_and_direction() {
        let ours = key("the cluster secret, 32 bytes....");
        let theirs = key("another secret, also long enough");
        let (server, client) = (nonce(), nonce());
        let proof = ours.client_proof(&server, &client);
        assert!(ours.check_client(&server, &client, &proof));
        assert!(!theirs.check_client(&server, &client, &proof));
        assert!(
            !ours.check_client(&nonce(), &client, &proof),
            "another challenge"
        );
        assert!(
            !ours.check_server(&server, &client, &proof),
            "a client's proof is not a server's"
        );
        assert!(ours.check_server(&server, &client, &ours.server_proof(&server, &client)));
    }
}
