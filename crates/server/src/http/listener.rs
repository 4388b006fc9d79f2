//! The REST API's listener: at most `connections_max` connections at once (further clients
//! wait in the kernel's accept queue, not in our memory), and each request must arrive whole
//! within `request_timeout_ms` of the connection's start or of the node's last answer on it:
//! the clock is not restarted by the bytes a client sends, so a client that trickles a byte
//! a second cannot hold a connection, and silent clients are closed too.

use crate::tls::ClientStream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// A TCP listener that bounds and times out its connections.
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    read_timeout: Duration,
    tls: Option<TlsAcceptor>,
}

impl LimitedListener {
    /// Wraps `inner`: at most `connections_max` open connections, each closed when a read
    /// is still waiting `read_timeout` after the connection opened or last answered.
    pub fn new(inner: TcpListener, connections_max: usize, read_timeout: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(connections_max)),
            read_timeout,
            tls: None,
        }
    }

    /// The same listener, speaking TLS by `acceptor` (the handshake is bound by the same
    /// deadline as a request).
    pub fn with_tls(mut self, acceptor: Option<TlsAcceptor>) -> Self {
        self.tls = acceptor;
        self
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    let deadline = Box::pin(tokio::time::sleep(self.read_timeout));
                    let io = LimitedStream {
                        stream: ClientStream::new(stream, self.tls.as_ref()),
                        _permit: permit,
                        deadline,
                        timeout: self.read_timeout,
                    };
                    return (io, address);
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a REST connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds one permit and fails a read still waiting at its deadline: the
/// time of its start or of its last write, plus the timeout.
pub struct LimitedStream {
    stream: ClientStream,
    _permit: OwnedSemaphorePermit,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client did not send its request in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl LimitedStream {
    /// Starts the next request's time once the node has written (part of) an answer: the
    /// client may not send its next request before it has read this one.
    /// A write still waiting at the deadline fails too: a client that reads nothing of its
    /// answer for the timeout would otherwise hold the connection for ever.
    fn answered(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(bytes)) if bytes > 0 => {
                let next = Instant::now() + self.timeout;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Ok(bytes))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client read nothing of its answer in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, data);
        self.answered(cx, written)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, buffers);
        self.answered(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The client's address, as REST handlers find it (`ConnectInfo<ClientAddr>`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, LimitedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, LimitedListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}
