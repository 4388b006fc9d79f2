//! The cluster RPC over real loopback sockets: multiplexing, deadlines, remote errors, and
//! reconnecting after a peer comes back.

use ringkv_cluster::rpc::{serve, Peer, RpcError, Service};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Answer `n` after sleeping `delay_ms`.
    Echo {
        n: u64,
        delay_ms: u64,
    },
    Fail,
}

struct Echo;

impl Service<Request, u64> for Echo {
    async fn handle(&self, request: Request) -> Result<u64, String> {
        match request {
            Request::Echo { n, delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(n)
            }
            Request::Fail => Err("refused on purpose".into()),
        }
    }
}

async fn start_server(listener: TcpListener) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve::<Request, u64, Echo>(
        listener,
        Arc::new(Echo),
        stopped,
    ));
    stop
}

const LONG: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_replies_even_out_of_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = Arc::new(Peer::<Request, u64>::new(
        listener.local_addr().unwrap().to_string(),
    ));
    let _stop = start_server(listener).await;
    let calls: Vec<_> = (0..300u64)
        .map(|n| {
            let peer = Arc::clone(&peer);
            // Later calls answer sooner, so replies come back out of order.
            tokio::spawn(async move {
                peer.call(
                    Request::Echo {
                        n,
                        delay_ms: (300 - n) / 30,
                    },
                    LONG,
                )
                .await
            })
        })
        .collect();
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), Ok(n as u64));
    }
}

#[tokio::test]
async fn a_call_past_its_deadline_times_out_and_remote_errors_come_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = Peer::<Request, u64>::new(listener.local_addr().unwrap().to_string());
    let _stop = start_server(listener).await;
    let slow = peer
        .call(
            Request::Echo {
                n: 1,
                delay_ms: 5_000,
            },
            Duration::from_millis(100),
        )
        .await;
    assert_eq!(slow, Err(RpcError::Timeout(Duration::from_millis(100))));
    assert_eq!(
        peer.call(Request::Fail, LONG).await,
        Err(RpcError::Remote("refused on purpose".into()))
    );
    assert_eq!(
        peer.call(Request::Echo { n: 7, delay_ms: 0 }, LONG).await,
        Ok(7),
        "the connection is still usable"
    );
}

/// A client of a loopback port nothing listens on (yet), and that port's address.
async fn peer_of_a_free_port() -> (std::net::SocketAddr, Peer<Request, u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    (address, Peer::new(address.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_peer_is_unavailable_and_reconnected_once_it_returns() {
    let (address, peer) = peer_of_a_free_port().await;
    let down = peer.call(Request::Echo { n: 1, delay_ms: 0 }, LONG).await;
    assert!(
        matches!(down, Err(RpcError::Unavailable { .. })),
        "{down:?}"
    );

    // The peer comes back on the same address; calls succeed again after the backoff.
    let listener = TcpListener::bind(address).await.unwrap();
    let stop = start_server(listener).await;
    let mut answered = None;
    for _ in 0..100 {
        match peer.call(Request::Echo { n: 2, delay_ms: 0 }, LONG).await {
            Ok(n) => {
                answered = Some(n);
                break;
            }
            Err(RpcError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, Some(2));

    // The server stops: in-flight and new calls fail instead of hanging.
    let _ = stop.send(true);
    let mut failed = false;
    for _ in 0..100 {
        if peer
            .call(
                Request::Echo { n: 3, delay_ms: 0 },
                Duration::from_millis(500),
            )
            .await
            .is_err()
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(failed, "calls to a stopped peer fail");
}

/// When the caller learns the peer is back (from the failure detector), `retry_now` makes the
/// very next call connect instead of failing fast for the rest of the backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_ends_the_backoff_at_once() {
    let (address, peer) = peer_of_a_free_port().await;
    // Failed connects, each after the previous backoff ran out, grow it (100, 200, 400,
    // 800 ms): the last one ends ~500 ms after this loop, far beyond the next steps.
    for _ in 0..8 {
        let _ = peer.call(Request::Echo { n: 1, delay_ms: 0 }, LONG).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let listener = TcpListener::bind(address).await.unwrap();
    let _stop = start_server(listener).await;
    let backing_off = peer.call(Request::Echo { n: 2, delay_ms: 0 }, LONG).await;
    assert!(
        matches!(backing_off, Err(RpcError::Unavailable { .. })),
        "still backing off: {backing_off:?}"
    );

    peer.retry_now();
    assert_eq!(
        peer.call(Request::Echo { n: 3, delay_ms: 0 }, LONG)
            .await
            .unwrap(),
        3
    );
}

/// A connection that speaks raw frames to the server, as a stranger on the network could.
async fn raw_connection(address: std::net::SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(address).await.unwrap()
}

/// Whether the server closes `stream` within `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Goal: connections that declare huge frames and then stop, or send nothing, are closed
/// within the frame time limit, while a real peer is still served. (That the declared size
/// takes no memory ahead of its bytes is `frames`' unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_silent_connections_are_closed_and_real_peers_served() {
    use ringkv_cluster::rpc::{FRAME_BYTES_MAX, FRAME_RECEIVE_MAX};
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let _stop = start_server(listener).await;
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut stream = raw_connection(address).await;
        stream
            .write_all(&(FRAME_BYTES_MAX as u32).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&[0; 100]).await.unwrap();
        stalled.push(stream);
    }
    let mut silent = raw_connection(address).await;
    let peer = Peer::<Request, u64>::new(address.to_string());
    assert_eq!(
        peer.call(Request::Echo { n: 5, delay_ms: 0 }, LONG).await,
        Ok(5)
    );
    let limit = FRAME_RECEIVE_MAX + Duration::from_secs(5);
    for stream in stalled.iter_mut().chain([&mut silent]) {
        assert!(
            closed_within(stream, limit).await,
            "closed within {limit:?}"
        );
    }
    assert_eq!(
        peer.call(Request::Echo { n: 6, delay_ms: 0 }, LONG).await,
        Ok(6)
    );
}

/// Goal: the number of connections is bounded: one past the limit is closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_at_once() {
    use ringkv_cluster::rpc::CONNECTIONS_MAX;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let _stop = start_server(listener).await;
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        held.push(raw_connection(address).await);
    }
    let mut extra = raw_connection(address).await;
    assert!(closed_within(&mut extra, Duration::from_secs(3)).await);
    assert!(!closed_within(&mut held[0], Duration::from_millis(200)).await);
}

/// Counts how many of its requests run at once.
#[derive(Default)]
struct Counting {
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

impl Service<Request, u64> for Counting {
    async fn handle(&self, request: Request) -> Result<u64, String> {
        use std::sync::atomic::Ordering;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        if let Request::Echo { delay_ms, .. } = request {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(0)
    }
}

/// Goal: one connection cannot make the server run more than `REQUESTS_IN_FLIGHT_MAX` of its
/// requests at once; the rest wait unread, and all are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_runs_at_most_its_share_of_requests_at_once() {
    use ringkv_cluster::rpc::REQUESTS_IN_FLIGHT_MAX;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = Arc::new(Peer::<Request, u64>::new(
        listener.local_addr().unwrap().to_string(),
    ));
    let service = Arc::new(Counting::default());
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(serve::<Request, u64, Counting>(
        listener,
        Arc::clone(&service),
        stopped,
    ));
    let calls: Vec<_> = (0..REQUESTS_IN_FLIGHT_MAX as u64 + 50)
        .map(|n| {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move { peer.call(Request::Echo { n, delay_ms: 300 }, LONG).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), Ok(0));
    }
    let most = service.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= REQUESTS_IN_FLIGHT_MAX, "{most} ran at once");
    assert!(
        most > REQUESTS_IN_FLIGHT_MAX / 2,
        "requests do run concurrently: {most}"
    );
}

/// Runs every request it reads, counting them, with no clock skew tolerated.
#[derive(Default)]
struct Strict {
    handled: std::sync::atomic::AtomicUsize,
}

impl Service<Request, u64> for Strict {
    async fn handle(&self, request: Request) -> Result<u64, String> {
        self.handled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Request::Echo { delay_ms, .. } = request {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        Ok(0)
    }

    fn clock_skew_max(&self) -> Duration {
        Duration::ZERO
    }
}

/// Goal: a request that reaches the server after its caller stopped waiting is dropped
/// unread, never run late (a write held up in the network must not land after its caller
/// gave up). Method: the connection's every slot is taken by slow requests, so the next
/// frames wait unread in the network; those sent with a short deadline are read only after
/// it passed, and are not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_read_after_its_deadline_is_dropped_unrun() {
    use ringkv_cluster::rpc::REQUESTS_IN_FLIGHT_MAX;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = Arc::new(Peer::<Request, u64>::new(
        listener.local_addr().unwrap().to_string(),
    ));
    let service = Arc::new(Strict::default());
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(serve::<Request, u64, Strict>(
        listener,
        Arc::clone(&service),
        stopped,
    ));
    let slow: Vec<_> = (0..REQUESTS_IN_FLIGHT_MAX as u64)
        .map(|n| {
            let peer = Arc::clone(&peer);
            tokio::spawn(async move { peer.call(Request::Echo { n, delay_ms: 1500 }, LONG).await })
        })
        .collect();
    // Let the slow ones take every slot before the late ones are sent (a loaded machine
    // needs a while to send a thousand frames).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late = (0..10u64).map(|n| {
        let peer = Arc::clone(&peer);
        async move {
            let call = Request::Echo { n, delay_ms: 0 };
            peer.call(call, Duration::from_millis(50)).await
        }
    });
    for outcome in futures_util::future::join_all(late).await {
        assert!(matches!(outcome, Err(RpcError::Timeout(_))), "{outcome:?}");
    }
    for call in slow {
        assert_eq!(call.await.unwrap(), Ok(0));
    }
    // The late frames have been read by now (the slots freed a moment ago).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service.handled.load(std::sync::atomic::Ordering::SeqCst),
        REQUESTS_IN_FLIGHT_MAX,
        "only the requests read in time ran"
    );
    let on_time = peer.call(Request::Echo { n: 1, delay_ms: 0 }, LONG).await;
    assert_eq!(on_time, Ok(0), "the connection still serves");
}

/// Echo behind a cluster secret.
struct Guarded {
    key: Arc<ringkv_cluster::auth::ClusterKey>,
    handled: std::sync::atomic::AtomicUsize,
}

impl Service<Request, u64> for Guarded {
    async fn handle(&self, request: Request) -> Result<u64, String> {
        self.handled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Echo.handle(request).await
    }

    fn cluster_key(&self) -> Option<Arc<ringkv_cluster::auth::ClusterKey>> {
        Some(Arc::clone(&self.key))
    }
}

/// Goal: with a cluster secret, only a peer that proves it knows the secret is served: a
/// client without it, or with another, never gets a request run, and each refusal is
/// counted; a client with the secret is refused by a server without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_peers_that_know_the_cluster_secret_are_served() {
    use ringkv_cluster::auth::ClusterKey;
    let secret = Arc::new(ClusterKey::new(b"a cluster secret of 32 bytes....").unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = Arc::new(Guarded {
        key: Arc::clone(&secret),
        handled: Default::default(),
    });
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(serve::<Request, u64, Guarded>(
        listener,
        Arc::clone(&service),
        stopped,
    ));
    let echo = || Request::Echo { n: 7, delay_ms: 0 };
    let member = Peer::<Request, u64>::with_key(address.clone(), Some(Arc::clone(&secret)));
    assert_eq!(member.call(echo(), LONG).await, Ok(7));

    let stranger = Peer::<Request, u64>::new(address.clone());
    let other = ClusterKey::new(b"another secret, just as long....").unwrap();
    let impostor = Peer::<Request, u64>::with_key(address, Some(Arc::new(other)));
    for peer in [&stranger, &impostor] {
        let refused = peer.call(echo(), Duration::from_secs(5)).await;
        assert!(refused.is_err(), "{refused:?}");
    }
    assert_eq!(
        service.handled.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the member's request ran"
    );
    // The stranger's connection waits for a frame the server never reads; it is refused
    // when its handshake times out or closes. The impostor's proof is counted at once.
    assert!(secret.rejected_rpc().get() >= 1);

    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_address = open.local_addr().unwrap().to_string();
    let _open_server = start_server(open).await;
    let careful = Peer::<Request, u64>::with_key(open_address, Some(secret));
    let refused = careful.call(echo(), Duration::from_secs(5)).await;
    assert!(
        refused.is_err(),
        "a server without the secret is not talked to: {refused:?}"
    );
}
