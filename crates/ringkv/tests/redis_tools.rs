//! The real Redis tools against the real binary: `redis-cli`, `redis-benchmark` and the
//! Python `redis` client library must work unchanged (Debian packages redis-tools and
//! python3-redis; CI installs them and sets RINGKV_REQUIRE_TOOLS=1).

mod support;

use std::process::Command;
use support::{tool_available, ServerProcess};

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {output:?}"
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned()
}

#[test]
fn redis_cli_works_unchanged() {
    if !tool_available("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let port = server.resp_port;
    assert_eq!(redis_cli(port, &["PING"]), "PONG");
    assert_eq!(redis_cli(port, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(redis_cli(port, &["GET", "greeting"]), "hello world");
    assert_eq!(redis_cli(port, &["INCRBY", "counter", "5"]), "5");
    assert_eq!(redis_cli(port, &["EXPIRE", "greeting", "100"]), "1");
    assert_eq!(redis_cli(port, &["TTL", "greeting"]), "100");
    assert_eq!(redis_cli(port, &["TTL", "nothing"]), "-2");
    assert_eq!(redis_cli(port, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(redis_cli(port, &["MGET", "a", "b", "c"]), "1\n2");
    assert_eq!(redis_cli(port, &["DBSIZE"]), "4");
    let mut scanned: Vec<String> = redis_cli(port, &["--scan"])
        .lines()
        .map(str::to_owned)
        .collect();
    scanned.sort();
    assert_eq!(scanned, ["a", "b", "counter", "greeting"]);
    let unknown = redis_cli(port, &["FROB", "x"]);
    assert!(
        unknown.starts_with("ERR unknown command 'FROB'"),
        "{unknown}"
    );
    // The same data is visible through the REST API (database 0 is the default keyspace).
    let client = ringkv_client::Client::new(&server.url);
    assert_eq!(client.get("a").unwrap().unwrap().value, b"1");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    if !tool_available("redis-benchmark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--sync", "periodic"]);
    let output = Command::new("redis-benchmark")
        .args([
            "-p",
            &server.resp_port.to_string(),
            "-q",
            "-t",
            "set,get,incr,mset",
            "-n",
            "2000",
            "-c",
            "10",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    for test in ["SET", "GET", "INCR", "MSET"] {
        // Progress lines end in \r; results in \n.
        let line = text
            .split(['\r', '\n'])
            .find(|l| l.trim_start().starts_with(test) && l.contains("requests per second"));
        assert!(line.is_some(), "no result for {test} in\n{text}");
    }
    assert!(!text.contains("ERR"), "{text}");
    // Every INCR landed: redis-benchmark increments "counter:__rand_int__", one key without -r.
    let counted: i64 = redis_cli(server.resp_port, &["GET", "counter:__rand_int__"])
        .parse()
        .unwrap();
    assert_eq!(counted, 2000);
}

#[test]
fn the_python_redis_client_works_unchanged() {
    if !tool_available("/usr/bin/python3")
        || !Command::new("/usr/bin/python3")
            .args(["-c", "import redis"])
            .status()
            .unwrap()
            .success()
    {
        assert!(
            std::env::var("RINGKV_REQUIRE_TOOLS").is_err(),
            "python3-redis is required"
        );
        eprintln!("SKIPPED: python3-redis is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
assert r.ping()
assert r.set("k", "v", ex=100) is True
assert r.get("k") == "v"
assert 99 <= r.ttl("k") <= 100
assert r.set("k", "w", nx=True) is None
assert r.incr("n") == 1 and r.incrby("n", 9) == 10
pipe = r.pipeline(transaction=False)
for i in range(100):
    pipe.set(f"p{i}", i)
assert all(pipe.execute())
assert sorted(r.scan_iter(match="p1*", count=7)) == sorted(f"p{i}" for i in range(100) if str(i).startswith("1"))
assert r.mget(["p1", "p2", "missing"]) == ["1", "2", None]
assert r.delete("k", "missing") == 1
assert r.exists("k") == 0
assert r.info()["redis_version"]
try:
    r.incr("p1x") ; r.set("s", "abc"); r.incr("s")
    raise SystemExit("INCR of a non-integer did not fail")
except redis.ResponseError as error:
    assert "not an integer" in str(error)
print("ok")
"#;
    let output = Command::new("/usr/bin/python3")
        .args(["-c", script, &server.resp_port.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}
