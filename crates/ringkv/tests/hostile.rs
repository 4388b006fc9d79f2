//! Hostile and buggy input against the real binary: keys at and around the size limit over
//! both APIs, through a flush, a clean restart and a kill -9; and a panic in a server thread,
//! which must stop the node rather than leave it half alive.

mod support;

use ringkv_core::limits::KEY_BYTES_MAX;
use std::time::Duration;
use support::{
    http_request, percent_encode_all, resp_command, resp_connect, resp_pipeline, ServerProcess,
};

/// A key of `len` bytes using every byte value, so no encoding step can pass it by luck.
fn binary_key(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt))
        .collect()
}

/// The REST path of `key` in Redis database `db`, every byte percent-encoded.
fn rest_path(db: u8, key: &[u8]) -> String {
    match db {
        0 => format!("/v1/keys/{}", percent_encode_all(key)),
        db => format!("/v1/ks/db{db}/keys/{}", percent_encode_all(key)),
    }
}

/// Goal: a key of exactly the limit, in `default` and in another database, is stored over
/// RESP, survives the flush of a clean stop and the replay after a kill -9, and reads back
/// over REST with every byte percent-encoded; keys over the limit (the 65,533-byte key that
/// used to kill the node among them) are refused with a clear error on both APIs, and the
/// node goes on serving.
#[test]
fn keys_at_the_limit_are_served_and_longer_ones_refused_through_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = ServerProcess::start(dir.path(), &[]);
    let (mut stream, mut reader) = resp_connect(node.resp_port);
    let mut expected = Vec::new();
    for db in [0u8, 1] {
        let select = resp_command(&[b"SELECT", db.to_string().as_bytes()]);
        let longest = binary_key(KEY_BYTES_MAX, db);
        let value = format!("value in db{db}").into_bytes();
        let mut commands = vec![select, resp_command(&[b"SET", &longest, &value])];
        for len in [KEY_BYTES_MAX + 1, 65_533, 65_536, 70_000] {
            commands.push(resp_command(&[b"SET", &binary_key(len, db), b"v"]));
            commands.push(resp_command(&[b"GET", &binary_key(len, db)]));
        }
        let replies = resp_pipeline(&mut stream, &mut reader, &commands).unwrap();
        assert_eq!(replies[0].as_deref(), Some(&b"+OK"[..]));
        assert_eq!(
            replies[1].as_deref(),
            Some(&b"+OK"[..]),
            "the longest key is stored"
        );
        for refused in &replies[2..] {
            let text = String::from_utf8_lossy(refused.as_deref().unwrap_or_default());
            assert!(
                text.starts_with("-ERR") && text.contains("above the limit of 16384"),
                "{text}"
            );
        }
        expected.push((db, longest, value));
    }
    drop((stream, reader));

    // Over REST: a key over the limit is refused; the longest one, as a path of 48 KiB,
    // is not too long a URI.
    let (status, body) = http_request(
        &node.url,
        "PUT",
        &rest_path(0, &binary_key(KEY_BYTES_MAX + 1, 9)),
        "",
        b"{\"value\":\"v\"}",
    );
    assert_eq!(status, 414, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("key_too_long"));

    // A clean stop flushes the memtables into the tables, where the long key used to panic.
    node.stop();
    let node = ServerProcess::start(dir.path(), &[]);
    let (mut stream, mut reader) = resp_connect(node.resp_port);
    let again = binary_key(KEY_BYTES_MAX, 200);
    let replies = resp_pipeline(
        &mut stream,
        &mut reader,
        &[
            resp_command(&[b"SET", &again, b"logged only"]),
            resp_command(&[b"PING"]),
        ],
    )
    .unwrap();
    assert_eq!(
        replies,
        vec![Some(b"+OK".to_vec()), Some(b"+PONG".to_vec())]
    );
    expected.push((0, again, b"logged only".to_vec()));
    node.kill_9();

    let node = ServerProcess::start(dir.path(), &[]);
    for (db, key, value) in &expected {
        let (status, body) = http_request(
            &node.url,
            "GET",
            &rest_path(*db, key),
            "accept: application/octet-stream\r\n",
            b"",
        );
        assert_eq!(status, 200, "db{db}: {}", String::from_utf8_lossy(&body));
        assert_eq!(&body, value, "db{db}");
    }
    let (mut stream, mut reader) = resp_connect(node.resp_port);
    let replies = resp_pipeline(
        &mut stream,
        &mut reader,
        &[
            resp_command(&[b"SET", b"after", b"1"]),
            resp_command(&[b"GET", b"after"]),
        ],
    )
    .unwrap();
    assert_eq!(replies, vec![Some(b"+OK".to_vec()), Some(b"1".to_vec())]);
}

/// Goal: a panic in a server thread (here the Redis-protocol loop's, by `DEBUG PANIC`, as
/// the over-long key once caused) stops the whole node with a logged error, instead of
/// leaving `/healthz` answering while no Redis client can be served.
#[test]
fn a_panic_in_a_server_thread_stops_the_node_with_a_logged_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringkv.toml");
    std::fs::write(&config, "resp_debug_enabled = true\n").unwrap();
    let log = dir.path().join("node.log");
    let data = dir.path().join("data");
    let config_flag = config.to_str().unwrap();
    let mut node = ServerProcess::start_logging_to(&data, &["--config", config_flag], &log);
    let (mut stream, mut reader) = resp_connect(node.resp_port);
    let _ = resp_pipeline(
        &mut stream,
        &mut reader,
        &[resp_command(&[b"DEBUG", b"PANIC"])],
    );
    let status = node
        .wait_for_exit(Duration::from_secs(20))
        .expect("the node stops after a panic");
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("panicked, so the node stops now") && log.contains("ringkv-resp-0"),
        "{log}"
    );

    // Without the setting, DEBUG is refused and the node serves on.
    let node = ServerProcess::start(&data, &[]);
    let (mut stream, mut reader) = resp_connect(node.resp_port);
    let replies = resp_pipeline(
        &mut stream,
        &mut reader,
        &[
            resp_command(&[b"DEBUG", b"PANIC"]),
            resp_command(&[b"PING"]),
        ],
    )
    .unwrap();
    assert!(replies[0]
        .as_deref()
        .unwrap()
        .starts_with(b"-ERR DEBUG command not allowed"));
    assert_eq!(replies[1].as_deref(), Some(&b"+PONG"[..]));
}
