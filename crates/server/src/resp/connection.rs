//! One client connection: reads requests into a buffer, executes every complete request in
//! order, and writes all their replies with one syscall (so pipelined commands cost one write,
//! not one each). Pipelined SETs are collected and submitted to the store together when their
//! replies are due, so they share one queue slot and one group commit; any other command first
//! waits for the writes before it. A connection idle past `resp_idle_timeout_ms`, or that
//! leaves a request half-sent for `request_timeout_ms`, is closed.

use super::commands::{self, DeferredSets, Session};
use super::frame::Frame;
use super::request::{self, Common};
use super::RespShared;
use bytes::{Buf, BytesMut};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Replies buffered before they are written even though more requests are pending.
const WRITE_BUFFER_FLUSH_BYTES: usize = 1 << 20;

/// Writes of one pipeline submitted before the connection waits for them.
const DEFERRED_WRITES_MAX: usize = 1024;

/// Bytes the read buffer grows by when full.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Serves one connection until the client leaves, errs, times out, or the node stops.
pub async fn handle(
    mut stream: TcpStream,
    shared: Arc<RespShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(shared.next_client_id());
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let config = &shared.node.config;
    let idle = Duration::from_millis(config.resp_idle_timeout_ms);
    let partial = Duration::from_millis(config.request_timeout_ms);
    let mut deferred = DeferredSets::default();
    // One wait for the whole connection rather than a new one per read: each new one locks
    // the channel and registers a waiter, about 300 instructions per request at -P 1.
    let stop = shutdown.wait_for(|stop| *stop);
    tokio::pin!(stop);
    'connection: loop {
        // Counted here and added once per read: a shared counter bumped by every command
        // would bounce its cache line between the cores serving connections.
        let mut commands = 0;
        session.refresh_keyspace(&shared.node.keyspaces);
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
                    reply.encode(session.protocol, &mut output);
                    if session.closing {
                        break;
                    }
                    if output.len() >= WRITE_BUFFER_FLUSH_BYTES {
                        if stream.write_all(&output).await.is_err() {
                            break 'connection;
                        }
                        output.clear();
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
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                break;
            }
            output.clear();
        }
        if session.closing {
            break;
        }
        if input.capacity() - input.len() < READ_CHUNK_BYTES / 4 {
            input.reserve(READ_CHUNK_BYTES);
        }
        // Zero idle timeout means none (Redis's `timeout 0`); a half-sent request always has one.
        let limit = if !input.is_empty() {
            Some(partial)
        } else {
            Some(idle).filter(|d| !d.is_zero())
        };
        let read = async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, stream.read_buf(&mut input))
                    .await
                    .ok(),
                None => Some(stream.read_buf(&mut input).await),
            }
        };
        let read = tokio::select! {
            read = read => read,
            _ = &mut stop => break,
        };
        match read {
            Some(Ok(0)) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    let _ = stream.shutdown().await;
    shared.connected.fetch_sub(1, Ordering::Relaxed);
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
