//! Mutual TLS for the cluster RPC (rustls): every node holds a certificate signed by the
//! cluster's own certificate authority, and each side of a connection must present one.
//!
//! Peers are addressed by `host:port` as gossip advertised them, often an IP address that a
//! certificate does not name, so a peer's certificate is checked against the cluster CA for
//! its chain, validity and key usage, but not for the name: holding a certificate of this
//! CA is what admits a node (as Cassandra's `require_endpoint_verification: false`). The
//! cluster secret, when set as well, is proven inside the encrypted connection.
//!
//! Gossip datagrams (UDP) are not encrypted: they carry membership only, never data, and
//! are authenticated by the cluster secret's tag.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Why the cluster's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("cluster TLS: cannot read {what} from {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// rustls refused the certificates or key.
    #[error("cluster TLS: {0}")]
    Rustls(String),
}

/// The node's side of mutual TLS: an acceptor for connections from peers and a connector
/// for connections to them, both rebuilt from the files by [`ClusterTls::reload`] (on
/// SIGHUP); connections already open keep what they started with.
pub struct ClusterTls {
    files: [PathBuf; 3],
    current: parking_lot::RwLock<(TlsAcceptor, TlsConnector)>,
}

impl ClusterTls {
    /// Reads this node's certificate chain and key, and the cluster CA's certificates.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        ca_file: &Path,
    ) -> Result<Self, ClusterTlsError> {
        Ok(Self {
            current: parking_lot::RwLock::new(configs(cert_file, key_file, ca_file)?),
            files: [
                cert_file.to_owned(),
                key_file.to_owned(),
                ca_file.to_owned(),
            ],
        })
    }

    /// Reads the files again; new connections use what they hold. On an error nothing
    /// changes.
    pub fn reload(&self) -> Result<(), ClusterTlsError> {
        let [cert, key, ca] = &self.files;
        *self.current.write() = configs(cert, key, ca)?;
        Ok(())
    }

    /// Accepts connections from peers.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.read().0.clone()
    }

    /// Connects to peers.
    pub fn connector(&self) -> TlsConnector {
        self.current.read().1.clone()
    }
}

/// The acceptor and connector the files make.
fn configs(
    cert_file: &Path,
    key_file: &Path,
    ca_file: &Path,
) -> Result<(TlsAcceptor, TlsConnector), ClusterTlsError> {
    let chain = certificates(cert_file, "the node's certificates")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| ClusterTlsError::File {
        what: "the node's private key",
        path: key_file.to_owned(),
        message: error.to_string(),
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certificates(ca_file, "the cluster CA's certificates")? {
        roots
            .add(ca)
            .map_err(|error| ClusterTlsError::Rustls(error.to_string()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_error = |error: rustls::Error| ClusterTlsError::Rustls(error.to_string());

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|error| ClusterTlsError::Rustls(error.to_string()))?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(rustls_error)?;

    let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::clone(&roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|error| ClusterTlsError::Rustls(error.to_string()))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyNameOfTheCa(server_verifier)))
        .with_client_auth_cert(chain, key)
        .map_err(rustls_error)?;
    Ok((
        TlsAcceptor::from(Arc::new(server)),
        TlsConnector::from(Arc::new(client)),
    ))
}

/// The name a connection to `address` (`host:port`) asks for: only sent, never checked.
pub fn server_name(address: &str) -> ServerName<'static> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("ringkv-node").expect("a valid DNS name"))
}

fn certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClusterTlsError> {
    let file_error = |message: String| ClusterTlsError::File {
        what,
        path: path.to_owned(),
        message,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| file_error(error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| file_error(error.to_string()))?;
    if certificates.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certificates)
}

/// Checks a peer's certificate as the cluster CA's WebPKI verifier does, except for its
/// name (see the module's documentation).
#[derive(Debug)]
struct AnyNameOfTheCa(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameOfTheCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};

    /// A CA, and a certificate it signed for `name`.
    fn signed(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        (ca_cert.der().clone(), leaf.der().clone())
    }

    #[test]
    fn the_name_is_not_checked_but_the_ca_is() {
        let (cluster_ca, member) = signed("node-a.example");
        let (_, stranger) = signed("10.0.0.1");
        let mut roots = RootCertStore::empty();
        roots.add(cluster_ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let verifier = AnyNameOfTheCa(inner);
        let dialled = server_name("10.0.0.1:7946");
        let now = UnixTime::now();
        assert!(
            verifier
                .verify_server_cert(&member, &[], &dialled, &[], now)
                .is_ok(),
            "a member's certificate passes whatever address it is dialled at"
        );
        assert!(
            verifier
                .verify_server_cert(&stranger, &[], &dialled, &[], now)
                .is_err(),
            "a certificate of another CA fails even when its name matches"
        );
    }
}
