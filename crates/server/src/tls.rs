//! TLS for REST and the Redis protocol (rustls), from the PEM files `tls_cert_file` and
//! `tls_key_file`.
//!
//! The certificate is served through a resolver whose key can be swapped while the node
//! runs: [`Tls::reload`] (on SIGHUP) reads the files again, and new connections get the new
//! certificate while open ones keep theirs. A reload that fails (a half-written file, a key
//! that does not match) is logged and changes nothing.

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("cannot read {what} from {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// rustls refused the certificate or key.
    #[error("unusable TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A node's TLS: one certificate for both APIs, reloadable.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<Resolver>,
    /// For REST: offers HTTP/1.1 by ALPN.
    http: TlsAcceptor,
    /// For the Redis protocol.
    resp: TlsAcceptor,
}

impl Tls {
    /// Reads the certificate chain and key and builds the acceptors.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Tls>, TlsError> {
        let resolver = Arc::new(Resolver {
            current: RwLock::new(certified_key(cert_file, key_file)?),
        });
        let config = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Arc::new(Tls {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            http: config(&[b"http/1.1"])?,
            resp: config(&[])?,
            resolver,
        }))
    }

    /// Reads the files again and serves the new certificate to new connections.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.cert_file, &self.key_file)?;
        *self.resolver.current.write() = key;
        Ok(())
    }

    /// The acceptor of REST connections.
    pub fn http(&self) -> TlsAcceptor {
        self.http.clone()
    }

    /// The acceptor of Redis-protocol connections.
    pub fn resp(&self) -> TlsAcceptor {
        self.resp.clone()
    }
}

/// The certificate served now.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read()))
    }
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    fn file_error<'p>(
        what: &'static str,
        path: &'p Path,
    ) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + 'p {
        move |error| TlsError::File {
            what,
            path: path.to_owned(),
            message: error.to_string(),
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(file_error("certificates", cert_file))?
        .collect::<Result<_, _>>()
        .map_err(file_error("certificates", cert_file))?;
    if chain.is_empty() {
        return Err(TlsError::File {
            what: "certificates",
            path: cert_file.to_owned(),
            message: "no PEM certificate in the file".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_file(key_file).map_err(file_error("a private key", key_file))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider)?;
    Ok(Arc::new(key))
}

/// A client connection, in the clear or over TLS; a TLS one does its handshake within its
/// first reads and writes, so a slow handshake holds up no other connection and counts
/// against the connection's own deadlines.
pub enum ClientStream {
    /// No TLS.
    Plain(TcpStream),
    /// The TLS handshake is under way (boxed: it holds the whole TLS state).
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    /// TLS, established.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The handshake failed.
    Failed,
}

impl ClientStream {
    /// `stream`, with TLS by `acceptor` if one is given.
    pub fn new(stream: TcpStream, acceptor: Option<&TlsAcceptor>) -> Self {
        match acceptor {
            Some(acceptor) => ClientStream::Handshaking(Box::new(acceptor.accept(stream))),
            None => ClientStream::Plain(stream),
        }
    }

    /// Drives the handshake; ready once the stream can carry data (or has failed).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let ClientStream::Handshaking(accept) = self {
            match Pin::new(accept.as_mut()).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(stream)) => *self = ClientStream::Tls(Box::new(stream)),
                Poll::Ready(Err(error)) => {
                    *self = ClientStream::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match self {
            ClientStream::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the TLS handshake failed",
            ))),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// Runs `$call` on the stream under the TLS, whichever it is, once the handshake is done.
macro_rules! ready_then {
    ($self:ident, $cx:ident, |$stream:ident| $call:expr) => {{
        let this = $self.get_mut();
        match this.poll_ready($cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(())) => {}
        }
        match this {
            ClientStream::Plain($stream) => {
                let $stream = Pin::new($stream);
                $call
            }
            ClientStream::Tls($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $call
            }
            // poll_ready leaves a plain or TLS stream, or fails; never reached.
            _ => Poll::Ready(Err(io::Error::other("no stream"))),
        }
    }};
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready_then!(self, cx, |stream| stream.poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready_then!(self, cx, |stream| stream.poll_write(cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready_then!(self, cx, |stream| stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready_then!(self, cx, |stream| stream.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready_then!(self, cx, |stream| stream.poll_write_vectored(cx, buffers))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(stream) => stream.is_write_vectored(),
            ClientStream::Tls(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }
}
