//! One client connection: reads requests into a buffer, executes every complete request in
//! order, and writes all their replies with one syscall (so pipelined commands cost one write,
//! not one each). Pipelined SETs are collected and submitted to the store together when their
//! replies are due, so they share one queue slot and one group commit; any other command first
//! waits for the writes before it. A connection idle past `resp_idle_timeout_ms` is closed;
//! so is one that takes longer than `request_timeout_ms` to send one request (however slowly
//! its bytes trickle in), or that reads nothing of its replies for that long.
//!
//! A large reply is counted against the bounds on reply memory ([`super::replies`]) and
//! written from the values it holds, as the client reads it.

use super::commands::{self, DeferredSets, Session};
use super::frame::Frame;
use super::metrics::Disconnect;
use super::replies::REPLY_METERED_BYTES_MIN;
use super::request::{self, Common};
use super::RespShared;
use bytes::{Buf, BytesMut};
use ringkv_coordinator::users::{Api, Principal};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// Replies buffered before they are written even though more requests are pending.
const WRITE_BUFFER_FLUSH_BYTES: usize = 1 << 20;

/// Writes of one pipeline submitted before the connection waits for them.
const DEFERRED_WRITES_MAX: usize = 1024;

/// Bytes the read buffer grows by when full.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Serves one connection until the client leaves, errs, times out, or the node stops.
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: Option<std::net::IpAddr>,
    shared: Arc<RespShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let principal = Principal::default_for(&shared.node, peer, Api::Resp);
    let mut session = Session::new(shared.next_client_id(), principal, peer);
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let config = &shared.node.config;
    let idle = Duration::from_millis(config.resp_idle_timeout_ms);
    let request_time = Duration::from_millis(config.request_timeout_ms);
    // When the request the buffer holds the start of must be whole.
    let mut request_deadline: Option<Instant> = None;
    let mut deferred = DeferredSets::default();
    // One wait for the whole connection rather than a new one per read: each new one locks
    // the channel and registers a waiter, about 300 instructions per request at -P 1.
    let stop = shutdown.wait_for(|stop| *stop);
    tokio::pin!(stop);
    'connection: loop {
        // Counted here and added once per read: a shared counter bumped by every command
        // would bounce its cache line between the cores serving connections.
        let mut commands = 0;
        // Every command of one read is answered by one write, so each is given the time from
        // the read to the write as its latency (as the client sees it, give or take the
        // network); the fast paths' reads and writes are counted here, the rest by `execute`.
        let timed = shared.node.traffic.start();
        let (mut reads, mut writes) = (0, 0);
        session.refresh_keyspace(&shared.node.keyspaces);
        session.refresh_access(&shared.node.users);
        loop {
            match request::check(&input) {
                Ok(Some(found)) => {
                    // The reply, or `None` for a SET deferred until its pipeline's end.
                    let reply = match found.common(&input) {
                        // The most common commands, run in place: no argument vector, no
                        // command lookup.
                        Some(Common::Get { key })
                            if commands::serves_locally(&shared, &session) =>
                        {
                            commands += 1;
                            reads += 1;
                            shared.node.traffic.sample(&session.keyspace, key);
                            // A read must see the writes before it.
                            finish(&shared, &session, &mut deferred, &mut output).await;
                            let reply = commands::get_local(&shared, &session, key);
                            input.advance(found.bytes());
                            Some(reply)
                        }
                        Some(Common::Set { key, value })
                            if commands::serves_locally(&shared, &session) =>
                        {
                            commands += 1;
                            writes += 1;
                            shared.node.traffic.sample(&session.keyspace, key);
                            let started = commands::start_plain_set(
                                &shared,
                                &session,
                                key,
                                value,
                                &mut deferred,
                            );
                            input.advance(found.bytes());
                            started.err()
                        }
                        _ => {
                            let arguments = request::parse(&mut input, found);
                            if arguments.is_empty() {
                                continue;
                            }
                            commands += 1;
                            if commands::defers(&shared, &session, &arguments) {
                                writes += 1;
                                if let Some(key) = arguments.get(1) {
                                    shared.node.traffic.sample(&session.keyspace, key);
                                }
                                commands::start_deferred(
                                    &shared,
                                    &session,
                                    arguments,
                                    &mut deferred,
                                )
                                .err()
                            } else {
                                // Whatever comes next must see the writes before it, and its
                                // reply must follow theirs.
                                finish(&shared, &session, &mut deferred, &mut output).await;
                                Some(commands::execute(&shared, &mut session, arguments).await)
                            }
                        }
                    };
                    let Some(reply) = reply else {
                        if deferred.len() >= DEFERRED_WRITES_MAX {
                            finish(&shared, &session, &mut deferred, &mut output).await;
                        }
                        continue;
                    };
                    finish(&shared, &session, &mut deferred, &mut output).await;
                    // Most replies are small and charged nothing: encoded in place, without
                    // the large replies' path.
                    if session.reply_bytes == 0 && reply.is_small(REPLY_METERED_BYTES_MIN) {
                        reply.encode(session.protocol, &mut output);
                    } else {
                        let sent =
                            send_large(&shared, &mut session, &mut stream, &mut output, reply)
                                .await;
                        if ended(&shared, &session, sent) {
                            break 'connection;
                        }
                    }
                    if session.closing {
                        break;
                    }
                    if output.len() >= WRITE_BUFFER_FLUSH_BYTES {
                        let written = write_out(&mut stream, &mut output, request_time).await;
                        if ended(&shared, &session, written) {
                            break 'connection;
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    finish(&shared, &session, &mut deferred, &mut output).await;
                    Frame::err(error).encode(session.protocol, &mut output);
                    session.closing = true;
                    break;
                }
            }
        }
        shared.commands.fetch_add(commands, Ordering::Relaxed);
        finish(&shared, &session, &mut deferred, &mut output).await;
        let written = write_out(&mut stream, &mut output, request_time).await;
        if commands > 0 {
            let (executed_reads, executed_writes) = std::mem::take(&mut session.served);
            let (reads, writes) = (reads + executed_reads, writes + executed_writes);
            shared.node.traffic.finish(timed, reads, writes);
        }
        if ended(&shared, &session, written) || session.closing {
            break;
        }
        if input.capacity() - input.len() < READ_CHUNK_BYTES / 4 {
            input.reserve(READ_CHUNK_BYTES);
        }
        // A request's time runs from its first byte: what is left in the buffer started
        // arriving in this round if a request was completed in it, else earlier.
        request_deadline = match (input.is_empty(), request_deadline) {
            (true, _) => None,
            (false, Some(deadline)) if commands == 0 => Some(deadline),
            (false, _) => Some(Instant::now() + request_time),
        };
        let read = async {
            match (request_deadline, Some(idle).filter(|d| !d.is_zero())) {
                (Some(deadline), _) => {
                    let read = tokio::time::timeout_at(deadline, stream.read_buf(&mut input));
                    read.await.map_err(|_| Disconnect::RequestTimeout)
                }
                // Zero idle timeout means none (Redis's `timeout 0`).
                (None, Some(idle)) => tokio::time::timeout(idle, stream.read_buf(&mut input))
                    .await
                    .or(Ok(Ok(0))),
                (None, None) => Ok(stream.read_buf(&mut input).await),
            }
        };
        let read = tokio::select! {
            read = read => read,
            _ = &mut stop => break,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {
                // The first bytes of a request start its time.
                request_deadline.get_or_insert_with(|| Instant::now() + request_time);
            }
            Err(reason) => {
                ended(&shared, &session, Err(Ended::Disconnected(reason)));
                break;
            }
        }
    }
    shared.replies.release(&mut session.reply_bytes);
    let _ = stream.shutdown().await;
    shared.connected.fetch_sub(1, Ordering::Relaxed);
}

/// Why a connection stopped being served before the client closed it.
enum Ended {
    /// The client went away or the socket failed.
    ClientGone,
    /// The node closed it.
    Disconnected(Disconnect),
}

/// Whether `outcome` ends the connection; a disconnection by the node is counted and logged.
fn ended(shared: &RespShared, session: &Session, outcome: Result<(), Ended>) -> bool {
    match outcome {
        Ok(()) => false,
        Err(Ended::ClientGone) => true,
        Err(Ended::Disconnected(reason)) => {
            shared.metrics.disconnected(reason);
            tracing::info!(
                client = session.id,
                reason = reason.name(),
                "disconnecting a Redis-protocol client"
            );
            true
        }
    }
}

/// Adds a reply that is large, or was charged while it was built, to the connection's output.
/// A large one is counted against the bounds on reply memory (a client past them gets an
/// error and is disconnected), then written out after the buffer, from the values it holds.
async fn send_large(
    shared: &RespShared,
    session: &mut Session,
    stream: &mut (impl AsyncWrite + Unpin),
    output: &mut BytesMut,
    reply: Frame,
) -> Result<(), Ended> {
    let bytes = reply.encoded_bytes_max();
    if bytes < REPLY_METERED_BYTES_MIN {
        shared.replies.release(&mut session.reply_bytes);
        reply.encode(session.protocol, output);
        return Ok(());
    }
    if let Err(limit) = shared.replies.settle(&mut session.reply_bytes, bytes) {
        commands::refuse_reply(shared, session, limit).encode(session.protocol, output);
        return Ok(());
    }
    let stall = Duration::from_millis(shared.node.config.request_timeout_ms);
    let written = async {
        write_out(stream, output, stall).await?;
        for piece in reply.encode_pieces(session.protocol) {
            write_progressing(stream, &piece, stall).await?;
        }
        Ok(())
    }
    .await;
    drop(reply);
    shared.replies.release(&mut session.reply_bytes);
    written
}

/// Writes and empties the output buffer.
async fn write_out(
    stream: &mut (impl AsyncWrite + Unpin),
    output: &mut BytesMut,
    stall: Duration,
) -> Result<(), Ended> {
    if output.is_empty() {
        return Ok(());
    }
    write_progressing(stream, output, stall).await?;
    output.clear();
    Ok(())
}

/// Writes all of `bytes` as the client reads them; a client that reads nothing for `stall`
/// is disconnected (it would hold its reply's memory for ever).
async fn write_progressing(
    stream: &mut (impl AsyncWrite + Unpin),
    mut bytes: &[u8],
    stall: Duration,
) -> Result<(), Ended> {
    while !bytes.is_empty() {
        match tokio::time::timeout(stall, stream.write(bytes)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Ended::ClientGone),
            Ok(Ok(written)) => bytes = &bytes[written..],
            Err(_) => return Err(Ended::Disconnected(Disconnect::ReplyStalled)),
        }
    }
    Ok(())
}

/// Submits the deferred SETs, waits for them, and encodes their replies in order.
async fn finish(
    shared: &RespShared,
    session: &Session,
    deferred: &mut DeferredSets,
    output: &mut BytesMut,
) {
    commands::finish_deferred(shared, deferred, |reply| {
        reply.encode(session.protocol, output)
    })
    .await;
}

/// Tells a connection it cannot be served, and closes it.
pub async fn refuse(mut stream: TcpStream, message: &'static str) {
    let mut output = BytesMut::new();
    Frame::Error(message.into()).encode(2, &mut output);
    let _ = stream.write_all(&output).await;
    let _ = stream.shutdown().await;
}
