//! Mutual TLS on the cluster RPC, over real loopback sockets: nodes with certificates of the
//! cluster CA talk; a node with another CA's certificate, or none, is refused; and what
//! crosses the wire is encrypted (a relay between two nodes never sees a request's bytes,
//! which it does see without TLS).

use ringkv_cluster::rpc::{serve, Peer, RpcError, Service};
use ringkv_cluster::tls::ClusterTls;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A marker no encrypted stream will carry in clear.
const MARKER: &str = "a-request-everyone-could-read-in-clear";

struct Echo {
    tls: Option<Arc<ClusterTls>>,
}

impl Service<String, String> for Echo {
    async fn handle(&self, request: String) -> Result<String, String> {
        Ok(request)
    }

    fn cluster_tls(&self) -> Option<Arc<ClusterTls>> {
        self.tls.clone()
    }
}

/// A CA, and a node certificate it signed, written as PEM files under `dir` named `name`:
/// the node's TLS and its files (certificate, key, CA).
fn authority(dir: &Path, name: &str) -> Arc<ClusterTls> {
    let [cert, key, ca] = authority_files(dir, name);
    Arc::new(ClusterTls::load(&cert, &key, &ca).unwrap())
}

fn authority_files(dir: &Path, name: &str) -> [std::path::PathBuf; 3] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let node_key = KeyPair::generate().unwrap();
    // Named for a host peers do not dial: only the chain is checked, not the name.
    let mut node = CertificateParams::new(vec![format!("{name}.example")]).unwrap();
    node.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_cert = node.signed_by(&node_key, &ca_cert, &ca_key).unwrap();
    let file = |suffix: &str, text: String| {
        let path = dir.join(format!("{name}-{suffix}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let cert = file("node.pem", node_cert.pem());
    let key = file("node.key", node_key.serialize_pem());
    let ca = file("ca.pem", ca_cert.pem());
    [cert, key, ca]
}

async fn start(tls: Option<Arc<ClusterTls>>) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve::<String, String, Echo>(
        listener,
        Arc::new(Echo { tls }),
        stopped,
    ));
    (address, stop)
}

/// Forwards connections to `target`, recording what the client sent.
async fn relay(target: String) -> (String, Arc<parking_lot::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&target).await.unwrap();
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let recorded = Arc::clone(&recorded);
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = client_read.read(&mut buffer).await {
                    if n == 0 || server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    recorded.lock().extend_from_slice(&buffer[..n]);
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            });
        }
    });
    (address, seen)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

const CALL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_the_cluster_ca_talk_encrypted_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = authority(dir.path(), "cluster");
    let stranger = authority(dir.path(), "stranger");
    let (address, _stop) = start(Some(Arc::clone(&cluster))).await;

    // A member: its call goes through a relay, which sees only ciphertext.
    let (relayed, seen) = relay(address.clone()).await;
    let member = Peer::<String, String>::secured(relayed, None, Some(Arc::clone(&cluster)));
    assert_eq!(
        member.call(MARKER.into(), CALL).await,
        Ok(MARKER.to_owned())
    );
    let captured = seen.lock().clone();
    assert!(
        captured.len() > MARKER.len(),
        "the relay saw the connection"
    );
    assert!(
        !contains(&captured, MARKER),
        "the request crossed the wire encrypted"
    );

    // A node whose certificate another CA signed, and a node without TLS, are refused.
    let impostor = Peer::<String, String>::secured(address.clone(), None, Some(stranger));
    assert!(matches!(
        impostor.call("hello".into(), CALL).await,
        Err(RpcError::Unavailable { .. } | RpcError::ConnectionLost(_))
    ));
    let plain = Peer::<String, String>::new(address.clone());
    assert!(plain.call("hello".into(), CALL).await.is_err());

    // The control: without TLS the same relay sees the request in clear.
    let (plain_address, _plain_stop) = start(None).await;
    let (relayed, seen) = relay(plain_address).await;
    let plain_member = Peer::<String, String>::new(relayed);
    assert_eq!(
        plain_member.call(MARKER.into(), CALL).await,
        Ok(MARKER.to_owned())
    );
    assert!(contains(&seen.lock(), MARKER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_connections_with_the_new_files_and_a_failed_one_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = authority_files(dir.path(), "first");
    let second = authority_files(dir.path(), "second");
    let served = [
        dir.path().join("s.pem"),
        dir.path().join("s.key"),
        dir.path().join("s-ca.pem"),
    ];
    let install = |from: &[std::path::PathBuf; 3]| {
        for (source, target) in from.iter().zip(&served) {
            std::fs::copy(source, target).unwrap();
        }
    };
    install(&first);
    let server_tls = Arc::new(ClusterTls::load(&served[0], &served[1], &served[2]).unwrap());
    let (address, _stop) = start(Some(Arc::clone(&server_tls))).await;
    let load = |files: &[std::path::PathBuf; 3]| {
        Arc::new(ClusterTls::load(&files[0], &files[1], &files[2]).unwrap())
    };
    let old_member = Peer::<String, String>::secured(address.clone(), None, Some(load(&first)));
    assert_eq!(
        old_member.call("before".into(), CALL).await,
        Ok("before".into())
    );

    // The files rotated to the second CA: new connections must use it.
    install(&second);
    server_tls.reload().unwrap();
    let new_member = Peer::<String, String>::secured(address.clone(), None, Some(load(&second)));
    assert_eq!(
        new_member.call("after".into(), CALL).await,
        Ok("after".into())
    );
    let stale = Peer::<String, String>::secured(address.clone(), None, Some(load(&first)));
    assert!(
        stale.call("stale".into(), CALL).await.is_err(),
        "the old CA no longer admits"
    );

    // A broken file: the reload fails and the second CA still admits.
    std::fs::write(&served[0], "not a certificate").unwrap();
    assert!(server_tls.reload().is_err());
    let another = Peer::<String, String>::secured(address, None, Some(load(&second)));
    assert_eq!(another.call("still".into(), CALL).await, Ok("still".into()));
}
