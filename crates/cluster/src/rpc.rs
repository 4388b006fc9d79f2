//! The cluster RPC: one long-lived TCP connection per peer, many requests in flight on it.
//!
//! Wire format: frames of `u32 length | postcard(Envelope)`, at most [`FRAME_BYTES_MAX`]
//! ([`crate::frames`] refuses longer ones, and buffers a frame only as its bytes arrive). A
//! request carries an id, when it was sent and a deadline; the reply carries the same id, so
//! replies may come back in any order. A request that arrives after its caller stopped
//! waiting — its send time plus its deadline plus the clocks' tolerated skew
//! ([`Service::clock_skew_max`]) — is dropped unread: a write held up in the network (a
//! partition that heals, a paused process that resumes) never lands after its caller gave up
//! on it, which is what lets a node bound how late an old write can arrive. Messages start with a protocol version so adjacent releases can talk
//! during a rolling upgrade: a node refuses frames of a version it does not know.
//!
//! The port is open to the network, so the server bounds what a connection can hold: at
//! most [`CONNECTIONS_MAX`] connections, [`REQUESTS_IN_FLIGHT_MAX`] requests running per
//! connection (further frames wait unread), a deadline of at most [`DEADLINE_MAX`] whatever
//! the caller asks, a frame (and a new connection's first one) finished within
//! [`FRAME_RECEIVE_MAX`], and a connection idle for [`IDLE_MAX`] closed.

use crate::auth::{ClusterKey, HANDSHAKE_TAG_BYTES, NONCE_BYTES};
use crate::frames::FrameCodec;
use crate::tls::ClusterTls;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::{FramedRead, FramedWrite};

/// Largest frame: a maximal value plus its record and envelope.
pub const FRAME_BYTES_MAX: usize = 48 << 20;

/// The protocol version this release speaks.
pub const PROTOCOL_VERSION: u16 = 6;

/// Frames queued for one connection's writer before callers wait for room.
const OUTGOING_QUEUE_MAX: usize = 1024;

/// Connections served at once; one more is closed at once. Each peer keeps one connection
/// to this node, so this bounds the cluster's size to about as many nodes.
pub const CONNECTIONS_MAX: usize = 128;

/// Requests one connection may have running at once; the connection's next frame is read
/// only when one finishes.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;

/// The longest a request runs, whatever deadline its caller sent: long enough for an
/// anti-entropy question, which scans the keys two replicas share.
pub const DEADLINE_MAX: Duration = Duration::from_secs(300);

/// How long a frame may take to arrive once its first byte has, and a new connection to
/// send its first whole frame; past it the connection is closed.
pub const FRAME_RECEIVE_MAX: Duration = Duration::from_secs(10);

/// A connection that sends no frame for this long is closed (its peer reconnects on its
/// next call).
pub const IDLE_MAX: Duration = Duration::from_secs(300);

/// How often a connection checks its time limits.
const LIMITS_CHECK_INTERVAL: Duration = Duration::from_millis(500);

const _: () = assert!(FRAME_RECEIVE_MAX.as_millis() < IDLE_MAX.as_millis());
const _: () = assert!(REQUESTS_IN_FLIGHT_MAX <= OUTGOING_QUEUE_MAX);

/// Longest a connection to a peer may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Wait before reconnecting to a peer after a failure; doubles per failure up to the max.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A request frame.
#[derive(Serialize, Deserialize)]
struct RequestFrame<Req> {
    version: u16,
    id: u64,
    /// When the caller sent it, by its clock (unix ms).
    sent_ms: u64,
    /// How long the caller waits, from when the frame was sent.
    deadline_ms: u32,
    body: Req,
}

/// A reply frame.
#[derive(Serialize, Deserialize)]
struct ReplyFrame<Resp> {
    version: u16,
    id: u64,
    body: Result<Resp, String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// No answer before the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer cannot be reached now (connect failed, or backing off after a failure).
    #[error("peer {peer} unavailable: {reason}")]
    Unavailable { peer: String, reason: String },
    /// The connection broke while the call was in flight.
    #[error("connection to {0} lost")]
    ConnectionLost(String),
    /// The peer ran the request and reported an error.
    #[error("peer error: {0}")]
    Remote(String),
    /// A message could not be encoded.
    #[error("cannot encode request: {0}")]
    Encode(String),
}

/// What a node does with requests from its peers.
pub trait Service<Req, Resp>: Send + Sync + 'static {
    /// Handles one request; an `Err` reaches the caller as [`RpcError::Remote`].
    fn handle(&self, request: Req) -> impl Future<Output = Result<Resp, String>> + Send;

    /// How far apart this node's and its peers' clocks may be: a request arriving later
    /// than its send time plus its deadline plus this is dropped unread.
    fn clock_skew_max(&self) -> Duration {
        CLOCK_SKEW_MAX_DEFAULT
    }

    /// The cluster secret a connection must prove it knows before any frame is read
    /// ([`crate::auth`]); `None`: connections are not authenticated.
    fn cluster_key(&self) -> Option<Arc<ClusterKey>> {
        None
    }

    /// Mutual TLS every connection must speak ([`crate::tls`]); `None`: plain TCP.
    fn cluster_tls(&self) -> Option<Arc<ClusterTls>> {
        None
    }
}

/// A connection's bytes: TCP, or TLS over TCP.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// A connection of either kind.
type Stream = Box<dyn Connection>;

/// The clock skew tolerated between nodes unless configured otherwise.
pub const CLOCK_SKEW_MAX_DEFAULT: Duration = Duration::from_secs(10);

/// The current unix time in milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Serves RPC connections on `listener` until `shutdown` turns true.
pub async fn serve<Req, Resp, S>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: watch::Receiver<bool>,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    S: Service<Req, Resp>,
{
    let mut stop = shutdown.clone();
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(%peer, "refusing an RPC connection: {CONNECTIONS_MAX} are open");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (service, shutdown) = (Arc::clone(&service), shutdown.clone());
                tokio::spawn(async move {
                    serve_connection::<Req, Resp, S>(stream, service, shutdown).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accepting an RPC connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn codec() -> FrameCodec {
    FrameCodec::new(FRAME_BYTES_MAX)
}

/// Why a connection must be closed for its pace, if it must: a frame (or the first one)
/// taking too long to arrive, or no frame for too long.
fn too_slow(codec: &FrameCodec, last_frame: Instant, frames_seen: bool) -> Option<&'static str> {
    let started = codec.partial_since();
    if started.is_some_and(|started| started.elapsed() > FRAME_RECEIVE_MAX) {
        return Some("a frame took too long to arrive");
    }
    if !frames_seen && last_frame.elapsed() > FRAME_RECEIVE_MAX {
        return Some("no frame arrived in time after connecting");
    }
    (last_frame.elapsed() > IDLE_MAX).then_some("idle")
}

/// The server's side of the handshake: a challenge, the client's proof checked, its own
/// proof sent.
async fn prove_server(stream: &mut Stream, key: &ClusterKey) -> Result<(), String> {
    let io = |error: std::io::Error| error.to_string();
    let ours = crate::auth::nonce();
    stream.write_all(&ours).await.map_err(io)?;
    let mut answer = [0u8; NONCE_BYTES + HANDSHAKE_TAG_BYTES];
    stream.read_exact(&mut answer).await.map_err(io)?;
    let (theirs, proof) = answer.split_at(NONCE_BYTES);
    if !key.check_client(&ours, theirs, proof) {
        return Err("it does not know the cluster secret".into());
    }
    stream
        .write_all(&key.server_proof(&ours, theirs))
        .await
        .map_err(io)
}

/// The client's side of the handshake: the server's challenge answered, its proof checked.
async fn prove_client(stream: &mut Stream, key: &ClusterKey) -> Result<(), String> {
    let io = |error: std::io::Error| error.to_string();
    let mut challenge = [0u8; NONCE_BYTES];
    stream.read_exact(&mut challenge).await.map_err(io)?;
    let ours = crate::auth::nonce();
    let mut answer = Vec::with_capacity(NONCE_BYTES + HANDSHAKE_TAG_BYTES);
    answer.extend_from_slice(&ours);
    answer.extend_from_slice(&key.client_proof(&challenge, &ours));
    stream.write_all(&answer).await.map_err(io)?;
    let mut proof = [0u8; HANDSHAKE_TAG_BYTES];
    stream.read_exact(&mut proof).await.map_err(io)?;
    if key.check_server(&challenge, &ours, &proof) {
        Ok(())
    } else {
        Err("the peer does not know the cluster secret".into())
    }
}

async fn serve_connection<Req, Resp, S>(
    tcp: TcpStream,
    service: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    S: Service<Req, Resp>,
{
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let opened = tokio::time::timeout(FRAME_RECEIVE_MAX, accept(tcp, service.as_ref()))
        .await
        .unwrap_or_else(|_| Err("no handshake in time".into()));
    let stream = match opened {
        Ok(stream) => stream,
        Err(why) => {
            if let Some(key) = service.cluster_key() {
                key.rejected_rpc().inc();
            }
            crate::auth::log_refusal("an RPC connection", &peer, &why);
            return;
        }
    };
    let (read_half, write_half) = tokio::io::split(stream);
    let mut frames = FramedRead::new(read_half, codec());
    let mut sink = FramedWrite::new(write_half, codec());
    let (replies, mut outgoing) = mpsc::channel::<Bytes>(OUTGOING_QUEUE_MAX);
    let writer = tokio::spawn(async move { while write_batch(&mut sink, &mut outgoing).await {} });
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let mut check = tokio::time::interval(LIMITS_CHECK_INTERVAL);
    let (mut last_frame, mut frames_seen) = (Instant::now(), false);
    // Late requests are logged once per connection, not once each.
    let mut warned_late = false;
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = check.tick() => {
                if let Some(why) = too_slow(frames.decoder(), last_frame, frames_seen) {
                    tracing::warn!(%peer, "closing an RPC connection: {why}");
                    break;
                }
                continue;
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::warn!(%peer, %error, "closing an RPC connection");
                break;
            }
            None => break,
        };
        (last_frame, frames_seen) = (Instant::now(), true);
        let Ok(RequestFrame {
            version,
            id,
            sent_ms,
            deadline_ms,
            body,
        }) = postcard::from_bytes::<RequestFrame<Req>>(&frame)
        else {
            tracing::warn!("dropping an RPC connection that sent an undecodable frame");
            break;
        };
        if version != PROTOCOL_VERSION {
            tracing::warn!(
                version,
                "dropping an RPC connection of an unknown protocol version"
            );
            break;
        }
        // Waits while the connection has its fill of requests running: its next frames
        // wait in the network instead of in tasks.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let given_up_at = sent_ms
            .saturating_add(deadline_ms.into())
            .saturating_add(service.clock_skew_max().as_millis() as u64);
        let now_ms = unix_ms();
        if now_ms > given_up_at {
            if !warned_late {
                warned_late = true;
                tracing::warn!(
                    %peer,
                    late_ms = now_ms - given_up_at,
                    "dropping a request that arrived after its caller gave up (held up in the \
                     network, or the clocks are further apart than clock_skew_max_ms)"
                );
            }
            continue;
        }
        let (service, replies) = (Arc::clone(&service), replies.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let deadline = Duration::from_millis(deadline_ms.into()).min(DEADLINE_MAX);
            // Past its deadline nobody waits for the answer: stop working on it.
            let Ok(body) = tokio::time::timeout(deadline, service.handle(body)).await else {
                return;
            };
            let reply = ReplyFrame {
                version: PROTOCOL_VERSION,
                id,
                body,
            };
            if let Ok(bytes) = postcard::to_stdvec(&reply) {
                let _ = replies.send(Bytes::from(bytes)).await;
            }
        });
    }
    drop(replies);
    let _ = writer.await;
}

/// The server's side of opening a connection: TLS if the service speaks it, then the
/// secret's challenge if it has one.
async fn accept<Req, Resp, S: Service<Req, Resp>>(
    tcp: TcpStream,
    service: &S,
) -> Result<Stream, String> {
    let mut stream: Stream = match service.cluster_tls() {
        Some(tls) => Box::new(
            tls.acceptor()
                .accept(tcp)
                .await
                .map_err(|error| format!("TLS handshake failed: {error}"))?,
        ),
        None => Box::new(tcp),
    };
    if let Some(key) = service.cluster_key() {
        prove_server(&mut stream, &key).await?;
    }
    Ok(stream)
}

/// Writes the next queued frame and every other one already queued, then flushes once: under
/// load many frames share one system call. `false` once the queue is closed or the
/// connection broke.
async fn write_batch(
    sink: &mut FramedWrite<WriteHalf<Stream>, FrameCodec>,
    queue: &mut mpsc::Receiver<Bytes>,
) -> bool {
    let Some(first) = queue.recv().await else {
        return false;
    };
    if sink.feed(first).await.is_err() {
        return false;
    }
    while let Ok(frame) = queue.try_recv() {
        if sink.feed(frame).await.is_err() {
            return false;
        }
    }
    sink.flush().await.is_ok()
}

type Waiters<Resp> = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Resp, RpcError>>>>>;

/// An open connection to a peer.
struct Link<Resp> {
    outgoing: mpsc::Sender<Bytes>,
    waiters: Waiters<Resp>,
    closed: watch::Receiver<bool>,
}

/// Whether, and until when, the peer is being left alone after a failure.
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    reason: String,
}

/// A client of one peer: connects on first use, multiplexes calls over one connection, and
/// after a failure fails fast until the backoff has passed.
pub struct Peer<Req, Resp> {
    address: String,
    key: Option<Arc<ClusterKey>>,
    tls: Option<Arc<ClusterTls>>,
    next_id: AtomicU64,
    link: tokio::sync::Mutex<Option<Link<Resp>>>,
    backoff: Mutex<Backoff>,
    /// Faults injected on this node's links (chaos mode), if any may be.
    faults: Option<Arc<crate::faults::LinkFaults>>,
    _request: PhantomData<fn(Req)>,
}

impl<Req, Resp> Peer<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// A client of the peer at `address` (`host:port`); nothing is connected yet.
    pub fn new(address: impl Into<String>) -> Self {
        Self::with_key(address, None)
    }

    /// A client that proves it knows the cluster secret `key` on every connection, and
    /// talks only to a peer that proves it too.
    pub fn with_key(address: impl Into<String>, key: Option<Arc<ClusterKey>>) -> Self {
        Self::secured(address, key, None)
    }

    /// A client that speaks mutual TLS by `tls` if given, and proves the cluster secret
    /// `key` if given, on every connection.
    pub fn secured(
        address: impl Into<String>,
        key: Option<Arc<ClusterKey>>,
        tls: Option<Arc<ClusterTls>>,
    ) -> Self {
        Self {
            address: address.into(),
            key,
            tls,
            next_id: AtomicU64::new(1),
            link: tokio::sync::Mutex::new(None),
            backoff: Mutex::new(Backoff {
                until: None,
                delay: RECONNECT_BACKOFF_MIN,
                reason: String::new(),
            }),
            faults: None,
            _request: PhantomData,
        }
    }

    /// The same client, obeying the faults `faults` injects: a call to a peer cut off fails
    /// at once, and every call waits for the added latency first.
    pub fn with_faults(mut self, faults: Arc<crate::faults::LinkFaults>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Ends any backoff, so the next call connects at once: for when the caller has learned
    /// another way (the failure detector) that the peer is back.
    pub fn retry_now(&self) {
        let mut backoff = self.backoff.lock();
        backoff.until = None;
        backoff.delay = RECONNECT_BACKOFF_MIN;
    }

    /// The peer's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` and waits at most `timeout` for the reply.
    pub async fn call(&self, request: Req, timeout: Duration) -> Result<Resp, RpcError> {
        if let Some(faults) = &self.faults {
            if faults.blocks(&self.address) {
                return Err(self.unavailable("the link is cut (chaos mode)"));
            }
            if let Some(delay) = faults.delay() {
                tokio::time::sleep(delay.min(timeout)).await;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let deadline_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let envelope = RequestFrame {
            version: PROTOCOL_VERSION,
            id,
            sent_ms: unix_ms(),
            deadline_ms,
            body: request,
        };
        let frame = Bytes::from(
            postcard::to_stdvec(&envelope).map_err(|e| RpcError::Encode(e.to_string()))?,
        );
        let (outgoing, waiters) = tokio::time::timeout(timeout, self.link())
            .await
            .map_err(|_| RpcError::Timeout(timeout))??;
        let (reply, answer) = oneshot::channel();
        waiters.lock().insert(id, reply);
        let sent = tokio::time::timeout(timeout, outgoing.send(frame)).await;
        if !matches!(sent, Ok(Ok(()))) {
            waiters.lock().remove(&id);
            return Err(RpcError::ConnectionLost(self.address.clone()));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RpcError::ConnectionLost(self.address.clone())),
            Err(_) => {
                waiters.lock().remove(&id);
                Err(RpcError::Timeout(timeout))
            }
        }
    }

    /// The live connection, connecting if there is none and the backoff allows.
    async fn link(&self) -> Result<(mpsc::Sender<Bytes>, Waiters<Resp>), RpcError> {
        let mut link = self.link.lock().await;
        if let Some(existing) = link.as_ref().filter(|l| !*l.closed.borrow()) {
            return Ok((existing.outgoing.clone(), Arc::clone(&existing.waiters)));
        }
        {
            let backoff = self.backoff.lock();
            if backoff.until.is_some_and(|until| Instant::now() < until) {
                return Err(self.unavailable(&backoff.reason));
            }
        }
        // Bounded: a peer cut off by a partition drops the handshake silently, and the kernel
        // would try for two minutes while every caller waited on this lock.
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {CONNECT_TIMEOUT:?}")));
        match connected {
            Ok(stream) => {
                *self.backoff.lock() = Backoff {
                    until: None,
                    delay: RECONNECT_BACKOFF_MIN,
                    reason: String::new(),
                };
                let fresh = self.open(stream);
                let handles = (fresh.outgoing.clone(), Arc::clone(&fresh.waiters));
                *link = Some(fresh);
                Ok(handles)
            }
            Err(error) => {
                let mut backoff = self.backoff.lock();
                backoff.until = Some(Instant::now() + backoff.delay);
                backoff.delay = (backoff.delay * 2).min(RECONNECT_BACKOFF_MAX);
                backoff.reason = error;
                Err(self.unavailable(&backoff.reason))
            }
        }
    }

    /// Opens a connection, with TLS when configured, and proves the secret both ways when
    /// there is one.
    async fn connect(&self) -> Result<Stream, String> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|error| error.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Stream = match &self.tls {
            Some(tls) => Box::new(
                tls.connector()
                    .connect(crate::tls::server_name(&self.address), tcp)
                    .await
                    .map_err(|error| format!("TLS handshake failed: {error}"))?,
            ),
            None => Box::new(tcp),
        };
        if let Some(key) = &self.key {
            prove_client(&mut stream, key).await?;
        }
        Ok(stream)
    }

    fn unavailable(&self, reason: &str) -> RpcError {
        RpcError::Unavailable {
            peer: self.address.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Starts the reader and writer tasks of a new connection.
    fn open(&self, stream: Stream) -> Link<Resp> {
        let (read_half, write_half) = tokio::io::split(stream);
        let mut frames = FramedRead::new(read_half, codec());
        let mut sink = FramedWrite::new(write_half, codec());
        let (outgoing, mut queue) = mpsc::channel::<Bytes>(OUTGOING_QUEUE_MAX);
        let waiters: Waiters<Resp> = Arc::default();
        let (closed_tx, closed) = watch::channel(false);
        let closed_tx = Arc::new(closed_tx);
        let writer_closed = Arc::clone(&closed_tx);
        tokio::spawn(async move {
            while write_batch(&mut sink, &mut queue).await {}
            let _ = writer_closed.send(true);
        });
        let reader_waiters = Arc::clone(&waiters);
        let address = self.address.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = frames.next().await {
                match postcard::from_bytes::<ReplyFrame<Resp>>(&frame) {
                    Ok(ReplyFrame {
                        version: PROTOCOL_VERSION,
                        id,
                        body,
                    }) => {
                        if let Some(waiter) = reader_waiters.lock().remove(&id) {
                            let _ = waiter.send(body.map_err(RpcError::Remote));
                        }
                    }
                    _ => {
                        tracing::warn!(peer = %address, "closing an RPC connection that sent an unexpected frame");
                        break;
                    }
                }
            }
            let _ = closed_tx.send(true);
            // Calls still waiting on this connection will not be answered.
            for (_, waiter) in reader_waiters.lock().drain() {
                let _ = waiter.send(Err(RpcError::ConnectionLost(address.clone())));
            }
        });
        Link {
            outgoing,
            waiters,
            closed,
        }
    }
}
