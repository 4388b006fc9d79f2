//! A small blocking client for ringkv's REST API (`/v1/keys`). The command-line client and the
//! end-to-end tests use it; it speaks exactly the documented API, nothing private.

use base64::Engine as _;
use serde::Deserialize;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status}, {code})")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {url}: {message}")]
    Transport { url: String, message: String },
    /// The answer was not what the API documents.
    #[error("unexpected answer from server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status of a server error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A stored value as a read returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// The bytes.
    pub value: Vec<u8>,
    /// Seconds left to live, if the value expires.
    pub ttl: Option<u64>,
    /// The version (ETag), for compare-and-set.
    pub version: String,
}

/// One page of a key listing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct KeyPage {
    /// The keys, in order.
    pub keys: Vec<String>,
    /// Pass back to get the next page; `None` at the end.
    pub cursor: Option<String>,
}

/// One member of the cluster, as `GET /v1/cluster` reports it.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
pub struct ClusterMember {
    /// The node's id.
    pub id: String,
    /// Its gossip / RPC address.
    pub address: String,
    /// Its REST address.
    pub http: String,
    /// Its zone.
    pub zone: String,
    /// Its weight.
    pub weight: u32,
    /// joining / normal / leaving / left.
    pub status: String,
    /// alive / suspect / down, as the asked node sees it.
    pub liveness: String,
    /// Its share of the ring (0 to 1).
    pub ownership: f64,
    /// Keys it holds a visible value of, if it answered.
    #[serde(default)]
    pub keys: Option<u64>,
    /// Whether `keys` was counted exactly (false: the engine's estimate, for large stores).
    #[serde(default)]
    pub keys_exact: Option<bool>,
    /// Bytes its storage occupies on disk, if it answered.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// When it last finished an anti-entropy round, unix ms (0: none yet), if it answered.
    #[serde(default)]
    pub anti_entropy_last_ms: Option<u64>,
    /// Tree leaves that differed from its peers' in that round, if it answered.
    #[serde(default)]
    pub anti_entropy_divergence: Option<u64>,
    /// Hints it keeps for other replicas, if it answered.
    #[serde(default)]
    pub hints_pending: Option<u64>,
    /// Where its joining stands, if it joined while it has been running.
    #[serde(default)]
    pub joining: Option<JoinProgress>,
    /// Where its leaving stands, if it was asked to leave.
    #[serde(default)]
    pub leaving: Option<LeaveProgress>,
    /// Its restores of copies of the ranges it took over from removed nodes.
    #[serde(default)]
    pub restoring: Option<Vec<RestoreProgress>>,
    /// The strong keyspaces' shards it leads, if it answered.
    #[serde(default)]
    pub shards: Option<Vec<ShardStatus>>,
}

/// A strong keyspace's shard, as its leader reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ShardStatus {
    /// `keyspace/shard`.
    pub group: String,
    /// The leading node.
    pub leader: String,
    /// The leader's term.
    pub term: u64,
    /// The highest index a majority of the voters hold.
    pub commit_index: u64,
    /// The leader's last log index.
    pub last_index: u64,
    /// The leader's last applied index.
    pub applied_index: u64,
    /// The last snapshot's index.
    pub snapshot_index: Option<u64>,
    /// The members and how far each lags.
    pub members: Vec<ShardMember>,
}

/// One member of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct ShardMember {
    /// The node.
    pub id: String,
    /// Whether it votes (else a learner catching up).
    pub voter: bool,
    /// Entries behind the leader (`None`: not heard from yet).
    pub lag: Option<u64>,
}

/// Where a node's restore of copies after one removal stands: one stream per donor and
/// keyspace, of the ranges it took over.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RestoreProgress {
    /// The removed node.
    pub removed: String,
    /// `restoring`, then `done`.
    pub state: String,
    /// The streams.
    pub transfers: Vec<JoinTransfer>,
}

/// Where a node's joining stands: its transfers, one per donor and keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct JoinProgress {
    /// `joining` until every transfer is done, then `normal`.
    pub state: String,
    /// The transfers.
    pub transfers: Vec<JoinTransfer>,
}

/// One donor's stream of one keyspace's ranges to a joining node.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct JoinTransfer {
    /// The node sending.
    pub donor: String,
    /// The keyspace.
    pub keyspace: String,
    /// Records received so far.
    pub records: u64,
    /// Pages asked again after a failure.
    pub retries: u64,
    /// `streaming`, `done` or `given up`.
    pub state: String,
    /// The ranges of the ring the donor sends, and how far each has come (absent from nodes
    /// of earlier versions).
    #[serde(default)]
    pub ranges: Vec<RangeProgress>,
}

/// How far the move of one range of the ring has gone, as `cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RangeProgress {
    /// The keyspace.
    pub keyspace: String,
    /// The range's first ring position, in hex.
    pub low: String,
    /// Its last ring position (inclusive), in hex.
    pub high: String,
    /// The donor a joining node streams it from (empty for a leaving node).
    pub peer: String,
    /// Records of the range the sender held when the move began, if it counted them.
    pub expected: Option<u64>,
    /// Records moved so far.
    pub moved: u64,
}

impl RangeProgress {
    /// Whether every record the sender counted has moved.
    pub fn complete(&self) -> bool {
        self.expected.is_some_and(|expected| self.moved >= expected)
    }
}

/// Where a node's leaving stands, as `/v1/cluster/leave` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct LeaveProgress {
    /// `normal`, `leaving` or `left`.
    pub state: String,
    /// Records examined so far.
    pub records_examined: u64,
    /// Records sent to a node taking over their range.
    pub records_sent: u64,
    /// Sends that failed and were sent again (absent from nodes of earlier versions).
    #[serde(default)]
    pub send_retries: u64,
    /// Sends that still failed after retrying (anti-entropy repairs those keys later).
    pub sends_failed: u64,
    /// The ranges of the ring the node replicates and how far each has been handed off
    /// (absent from nodes of earlier versions).
    #[serde(default)]
    pub ranges: Vec<RangeProgress>,
}

/// A node's anti-entropy rounds, as `/v1/cluster/repair` reports them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RepairProgress {
    /// Whether a round is under way.
    pub running: bool,
    /// Exchanges (peer × keyspace) of the round under way, or of the last.
    pub exchanges_total: u64,
    /// Of those, how many are done.
    pub exchanges_done: u64,
    /// Tree leaves that differed in that round.
    pub leaves_differing: u64,
    /// Keys that round brought to their merge.
    pub keys_repaired: u64,
    /// When the last round finished, unix ms (0: none yet).
    pub last_finished_ms: u64,
    /// Tree leaves that differed in the last finished round.
    pub last_divergence: u64,
}

/// One member of the ring, as `GET /v1/cluster/ring` reports it.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
pub struct RingMember {
    /// The node's id.
    pub id: String,
    /// Its zone.
    pub zone: String,
    /// Its weight.
    pub weight: u32,
    /// Tokens it owns.
    pub tokens: usize,
    /// Its share of the ring (0 to 1).
    pub ownership: f64,
}

/// The hash ring, as `GET /v1/cluster/ring` reports it.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
pub struct RingView {
    /// The key hash (`xxh3-64`).
    pub hash: String,
    /// Virtual nodes per unit of weight.
    pub vnodes: u32,
    /// Every member.
    pub members: Vec<RingMember>,
    /// Every token (decimal u64) and its owner, in ring order.
    pub tokens: Vec<(String, String)>,
}

/// The cluster as one node sees it.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
pub struct ClusterView {
    /// The node that answered.
    pub node_id: String,
    /// Every member, the answering node first.
    pub members: Vec<ClusterMember>,
}

/// A connection to one node's REST API.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// `?consistency=` sent with every key request, if set.
    consistency: Option<String>,
    /// `?pw=` sent with every key request, if set.
    primary_writes: Option<String>,
    /// Each request's time limit.
    timeout: Duration,
    /// The `Authorization` header sent with every request, if credentials were given.
    authorization: Option<String>,
    /// The certificate authorities trusted, if not the usual web roots.
    roots: Option<ureq::tls::RootCerts>,
}

/// How a client logs in to the node.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A user name and password (HTTP Basic).
    Password { user: String, password: String },
    /// An API token (HTTP Bearer).
    Token(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

#[derive(Deserialize)]
struct GetBody {
    value: String,
    ttl: Option<u64>,
    version: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
struct PutBody {
    version: String,
}

#[derive(Deserialize)]
struct DeleteBody {
    deleted: bool,
}

impl Client {
    /// A client of the node at `base_url` (e.g. `http://127.0.0.1:7080`), with a 30 s limit
    /// on each request.
    pub fn new(base_url: &str) -> Self {
        Self::with_timeout(base_url, Duration::from_secs(30))
    }

    /// A client whose requests each give up after `timeout`.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Self {
        Self {
            agent: agent(timeout, None),
            timeout,
            base: base_url.trim_end_matches('/').to_owned(),
            consistency: None,
            primary_writes: None,
            authorization: None,
            roots: None,
        }
    }

    /// The same client, trusting only the certificate authorities in `pem` (a PEM file's
    /// bytes) for `https://` nodes, as `curl --cacert` does.
    pub fn with_ca_certificates(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => certificates.push(certificate),
                Ok(_) => {}
                Err(error) => return Err(ClientError::Protocol(format!("CA file: {error}"))),
            }
        }
        if certificates.is_empty() {
            return Err(ClientError::Protocol(
                "no certificate in the CA file".into(),
            ));
        }
        let roots = ureq::tls::RootCerts::new_with_certs(&certificates);
        self.agent = agent(self.timeout, Some(roots.clone()));
        self.roots = Some(roots);
        Ok(self)
    }

    /// The same client, logging in with `credentials` on every request.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        use base64::Engine as _;
        self.authorization = Some(match credentials {
            Credentials::Password { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Credentials::Token(token) => format!("Bearer {token}"),
        });
        self
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    fn get_request(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.get(url))
    }

    fn delete_request(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        self.authorized(self.agent.delete(url))
    }

    fn post_request(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.post(url))
    }

    fn put_request(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        self.authorized(self.agent.put(url))
    }

    /// Creates or changes user `name` (`request` is the JSON body of `PUT /v1/users/{name}`);
    /// returns the user as the node shows it, with a new token if one was asked for.
    pub fn put_user(
        &self,
        name: &str,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/v1/users/{}", self.base, percent_encode(name));
        let response = self
            .put_request(&url)
            .header("content-type", "application/json")
            .send(request.to_string())
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// Removes user `name`.
    pub fn remove_user(&self, name: &str) -> Result<(), ClientError> {
        let url = format!("{}/v1/users/{}", self.base, percent_encode(name));
        let response = self
            .delete_request(&url)
            .call()
            .map_err(|e| self.transport(e))?;
        self.check(response).map(|_| ())
    }

    /// Every user, as `GET /v1/users` shows them.
    pub fn users(&self) -> Result<serde_json::Value, ClientError> {
        let response = self
            .get_request(&format!("{}/v1/users", self.base))
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// Who this client's requests act as, and their grants.
    pub fn whoami(&self) -> Result<serde_json::Value, ClientError> {
        let response = self
            .get_request(&format!("{}/v1/auth/whoami", self.base))
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// The same client, sending `level` (`one`, `quorum`, `all`) as the consistency of every
    /// read and write.
    pub fn with_consistency(mut self, level: &str) -> Self {
        self.consistency = Some(level.to_owned());
        self
    }

    /// The same client, demanding that `count` (a number, or `quorum`, `all`) of each
    /// write's acknowledgements come from the key's own replicas, not fallback nodes keeping
    /// hints (`?pw=`).
    pub fn with_primary_writes(mut self, count: &str) -> Self {
        self.primary_writes = Some(count.to_owned());
        self
    }

    /// The URL of `key`, with the consistency and any `extra` query parameters.
    fn key_url(&self, key: &str, extra: &[String]) -> String {
        let mut url = format!("{}/v1/keys/{}", self.base, percent_encode(key));
        let consistency = self
            .consistency
            .as_ref()
            .map(|level| format!("consistency={}", percent_encode(level)));
        let primary_writes = self
            .primary_writes
            .as_ref()
            .map(|count| format!("pw={}", percent_encode(count)));
        let params = consistency.iter().chain(&primary_writes).chain(extra);
        for (i, param) in params.enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(param);
        }
        url
    }

    /// Stores `value` under `key`, expiring after `ttl_seconds` if given; returns the version.
    pub fn put(
        &self,
        key: &str,
        value: &[u8],
        ttl_seconds: Option<u64>,
    ) -> Result<String, ClientError> {
        let ttl: Vec<String> = ttl_seconds
            .map(|ttl| format!("ttl={ttl}"))
            .into_iter()
            .collect();
        let url = self.key_url(key, &ttl);
        let response = self
            .put_request(&url)
            .header("content-type", "application/octet-stream")
            .send(value)
            .map_err(|e| self.transport(e))?;
        Ok(parse::<PutBody>(self.check(response)?)?.version)
    }

    /// Reads `key`; `None` if it is absent, deleted or expired.
    pub fn get(&self, key: &str) -> Result<Option<Value>, ClientError> {
        self.read(key, &[])
    }

    /// Reads only the asked node's own copy of `key` (`?local=true`), for operators.
    pub fn get_local(&self, key: &str) -> Result<Option<Value>, ClientError> {
        self.read(key, &["local=true".to_owned()])
    }

    fn read(&self, key: &str, extra: &[String]) -> Result<Option<Value>, ClientError> {
        let response = self
            .get_request(&self.key_url(key, extra))
            .call()
            .map_err(|e| self.transport(e))?;
        if response.status() == 404 {
            return Ok(None);
        }
        let body: GetBody = parse(self.check(response)?)?;
        let value = match body.encoding.as_deref() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(body.value)
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
            _ => body.value.into_bytes(),
        };
        Ok(Some(Value {
            value,
            ttl: body.ttl,
            version: body.version,
        }))
    }

    /// Deletes `key`; returns whether it held a value.
    pub fn delete(&self, key: &str) -> Result<bool, ClientError> {
        let response = self
            .delete_request(&self.key_url(key, &[]))
            .call()
            .map_err(|e| self.transport(e))?;
        Ok(parse::<DeleteBody>(self.check(response)?)?.deleted)
    }

    /// One page of the keys starting with `prefix`.
    pub fn list(
        &self,
        prefix: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<KeyPage, ClientError> {
        let mut url = format!(
            "{}/v1/keys?prefix={}&limit={limit}",
            self.base,
            percent_encode(prefix)
        );
        if let Some(cursor) = cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = self
            .get_request(&url)
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// The cluster as this node sees it.
    pub fn cluster(&self) -> Result<ClusterView, ClientError> {
        let response = self
            .get_request(&format!("{}/v1/cluster", self.base))
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// Starts an anti-entropy round on the node now (only `keyspace`, if given), or joins
    /// the one under way; returns its progress.
    pub fn start_repair(&self, keyspace: Option<&str>) -> Result<RepairProgress, ClientError> {
        let mut url = format!("{}/v1/cluster/repair", self.base);
        if let Some(keyspace) = keyspace {
            url.push_str(&format!("?keyspace={}", percent_encode(keyspace)));
        }
        let response = self
            .post_request(&url)
            .send_empty()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// Makes the node leave the cluster (it hands its ranges off first); returns at once.
    pub fn leave(&self) -> Result<LeaveProgress, ClientError> {
        let response = self
            .post_request(&format!("{}/v1/cluster/leave", self.base))
            .send_empty()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// Where the node's leaving stands.
    pub fn leave_progress(&self) -> Result<LeaveProgress, ClientError> {
        let response = self
            .get_request(&format!("{}/v1/cluster/leave", self.base))
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// Takes dead node `id` out of the ring for good.
    pub fn remove_member(&self, id: &str) -> Result<(), ClientError> {
        let url = format!("{}/v1/cluster/members/{}", self.base, percent_encode(id));
        let response = self
            .delete_request(&url)
            .call()
            .map_err(|e| self.transport(e))?;
        self.check(response).map(|_| ())
    }

    /// The node's anti-entropy round under way, or its last.
    pub fn repair_progress(&self) -> Result<RepairProgress, ClientError> {
        let response = self
            .get_request(&format!("{}/v1/cluster/repair", self.base))
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// The hash ring as this node sees it.
    pub fn ring(&self) -> Result<RingView, ClientError> {
        let response = self
            .get_request(&format!("{}/v1/cluster/ring", self.base))
            .call()
            .map_err(|e| self.transport(e))?;
        parse(self.check(response)?)
    }

    /// The roots of the node's anti-entropy trees of `keyspace`, one per live peer (by id)
    /// over the keys they share, as 16 hex digits: two replicas have converged when each
    /// one's root for the other is the same.
    pub fn roots(
        &self,
        keyspace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
        #[derive(Deserialize)]
        struct Roots {
            roots: std::collections::BTreeMap<String, String>,
        }
        let url = format!(
            "{}/v1/cluster/roots?keyspace={}",
            self.base,
            percent_encode(keyspace)
        );
        let response = self
            .get_request(&url)
            .call()
            .map_err(|e| self.transport(e))?;
        parse::<Roots>(self.check(response)?).map(|r| r.roots)
    }

    /// Streams a point-in-time backup of the node's records (of `keyspace` only, if given):
    /// the bytes of a backup file. Only connecting and the first byte are time-limited: a
    /// large backup takes as long as it takes.
    pub fn backup(&self, keyspace: Option<&str>) -> Result<impl std::io::Read, ClientError> {
        let mut url = format!("{}/v1/backup", self.base);
        if let Some(keyspace) = keyspace {
            url.push_str(&format!("?keyspace={}", percent_encode(keyspace)));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout));
        if let Some(roots) = &self.roots {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(roots.clone())
                    .build(),
            );
        }
        let streaming: ureq::Agent = config.build().into();
        let response = self
            .authorized(streaming.get(&url))
            .call()
            .map_err(|e| self.transport(e))?;
        if response.status().as_u16() >= 400 {
            self.check(response)?;
            return Err(ClientError::Protocol(
                "an error status without an error".into(),
            ));
        }
        Ok(response.into_body().into_reader())
    }

    /// Sends record frames of a backup (`body`) to be merged into the replicas of their keys;
    /// returns how many records the node merged. Safe to send again after a failure.
    pub fn restore_records(&self, body: &[u8]) -> Result<u64, ClientError> {
        #[derive(Deserialize)]
        struct Restored {
            records: u64,
        }
        let mut url = format!("{}/v1/restore", self.base);
        if let Some(level) = &self.consistency {
            url.push_str(&format!("?consistency={}", percent_encode(level)));
        }
        let response = self
            .post_request(&url)
            .header("content-type", "application/octet-stream")
            .send(body)
            .map_err(|e| self.transport(e))?;
        parse::<Restored>(self.check(response)?).map(|r| r.records)
    }

    /// A keyspace's replication factor and conflict mode, or `None` if it does not exist.
    pub fn keyspace_settings(&self, keyspace: &str) -> Result<Option<(u64, String)>, ClientError> {
        #[derive(Deserialize)]
        struct Definition {
            replication: u64,
            conflict: String,
        }
        let response = self
            .get_request(&format!("{}/v1/ks/{}", self.base, percent_encode(keyspace)))
            .call()
            .map_err(|e| self.transport(e))?;
        match self.check(response) {
            Ok(body) => parse::<Definition>(body).map(|d| Some((d.replication, d.conflict))),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates (or changes) a keyspace.
    pub fn define_keyspace(
        &self,
        keyspace: &str,
        replication: u64,
        conflict: &str,
    ) -> Result<(), ClientError> {
        let body = serde_json::json!({ "replication": replication, "conflict": conflict });
        let response = self
            .put_request(&format!("{}/v1/ks/{}", self.base, percent_encode(keyspace)))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| self.transport(e))?;
        self.check(response).map(drop)
    }

    /// Sets the faults on the node's links (dev clusters' chaos mode only): the cluster
    /// addresses it is cut off from, and milliseconds added to its messages.
    pub fn set_links(&self, blocked: &[String], delay_ms: u64) -> Result<(), ClientError> {
        let body = serde_json::json!({ "blocked": blocked, "delay_ms": delay_ms });
        let response = self
            .put_request(&format!("{}/v1/chaos/links", self.base))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| self.transport(e))?;
        self.check(response).map(drop)
    }

    /// The replication factor of a keyspace.
    pub fn keyspace_replication(&self, keyspace: &str) -> Result<usize, ClientError> {
        #[derive(Deserialize)]
        struct Definition {
            replication: usize,
        }
        let response = self
            .get_request(&format!("{}/v1/ks/{}", self.base, percent_encode(keyspace)))
            .call()
            .map_err(|e| self.transport(e))?;
        parse::<Definition>(self.check(response)?).map(|d| d.replication)
    }

    fn transport(&self, error: ureq::Error) -> ClientError {
        ClientError::Transport {
            url: self.base.clone(),
            message: error.to_string(),
        }
    }

    /// Turns an error status into [`ClientError::Server`], reading the JSON error body.
    fn check(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Vec<u8>, ClientError> {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(|e| self.transport(e))?;
        if status < 400 {
            return Ok(body);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(parsed) => (parsed.error.code, parsed.error.message),
            Err(_) => (
                "unknown".into(),
                String::from_utf8_lossy(&body).into_owned(),
            ),
        };
        Err(ClientError::Server {
            status,
            code,
            message,
        })
    }
}

/// An HTTP agent with a time limit per request, trusting `roots` if given (else the usual
/// web roots).
fn agent(timeout: Duration, roots: Option<ureq::tls::RootCerts>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout));
    if let Some(roots) = roots {
        config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
    }
    config.build().into()
}

fn parse<T: for<'de> Deserialize<'de>>(body: Vec<u8>) -> Result<T, ClientError> {
    serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reserved_characters_are_encoded() {
        assert_eq!(super::percent_encode("a b/c?d%é"), "a%20b%2Fc%3Fd%25%C3%A9");
    }
}
