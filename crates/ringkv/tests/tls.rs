//! TLS on REST and the Redis protocol, end to end with the real tools: `curl --cacert`,
//! `redis-cli --tls --cacert` and the `ringkv` client, against the binary serving a
//! certificate of a test CA made with `openssl`; then a SIGHUP that swaps in a certificate
//! of another CA without a restart, and one that finds broken files and changes nothing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{tool_available, ServerProcess};

/// A CA and a server certificate for 127.0.0.1 signed by it, under `dir` with `name`.
struct Authority {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

fn authority(dir: &Path, name: &str) -> Authority {
    let file = |suffix: &str| format!("{name}-{suffix}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            &file("ca.key"),
            "-out",
            &file("ca.pem"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &file("server.key"),
            "-out",
            &file("server.csr"),
        ],
    );
    std::fs::write(
        dir.join(file("ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.pem"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &file("ext"),
            "-out",
            &file("server.pem"),
        ],
    );
    Authority {
        ca: dir.join(file("ca.pem")),
        cert: dir.join(file("server.pem")),
        key: dir.join(file("server.key")),
    }
}

/// Puts `from`'s certificate and key where the server reads them, each by a rename so the
/// server never reads half a file.
fn install(from: &Authority, cert: &Path, key: &Path) {
    for (source, target) in [(&from.cert, cert), (&from.key, key)] {
        let staging = target.with_extension("new");
        std::fs::copy(source, &staging).unwrap();
        std::fs::rename(&staging, target).unwrap();
    }
}

/// curl with `ca`; `Ok(body)` or `Err(curl's exit code)`.
fn curl(ca: &Path, args: &[&str]) -> Result<String, i32> {
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl runs");
    match output.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        code => Err(code.unwrap_or(-1)),
    }
}

fn redis_cli_tls(ca: &Path, port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    let stdout = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_owned();
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_owned();
    if output.status.success() && !stdout.starts_with("Could not connect") {
        Ok(stdout)
    } else {
        Err(format!("{stdout} {stderr}"))
    }
}

#[test]
fn curl_redis_cli_and_the_ringkv_client_work_over_tls_and_sighup_swaps_the_certificate() {
    if !tool_available("openssl") || !tool_available("curl") || !tool_available("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = authority(dir.path(), "first");
    let second = authority(dir.path(), "second");
    let (cert, key) = (dir.path().join("node.pem"), dir.path().join("node.key"));
    install(&first, &cert, &key);
    let data = dir.path().join("data");
    let ca_pem = std::fs::read(&first.ca).unwrap();
    let server = ServerProcess::start_tls(
        &data,
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
        &ca_pem,
    );
    let url = |path: &str| format!("{}{path}", server.url);
    assert!(server.url.starts_with("https://"));

    // REST with curl: trusted with the CA, refused without it, and no plain HTTP.
    let put = curl(
        &first.ca,
        &[
            "-X",
            "PUT",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"value": "over tls"}"#,
            &url("/v1/keys/k"),
        ],
    );
    assert!(put.is_ok(), "{put:?}");
    let got = curl(&first.ca, &[&url("/v1/keys/k")]).unwrap();
    assert!(got.contains("over tls"), "{got}");
    assert_eq!(
        curl(&second.ca, &[&url("/v1/keys/k")]),
        Err(60),
        "an unknown CA is refused"
    );
    let plain = url("/v1/keys/k").replace("https://", "http://");
    assert!(
        curl(&first.ca, &[&plain]).is_err(),
        "no plain HTTP on a TLS port"
    );

    // The Redis protocol with redis-cli --tls.
    let port = server.resp_port;
    assert_eq!(
        redis_cli_tls(&first.ca, port, &["SET", "r", "resp over tls"]).unwrap(),
        "OK"
    );
    assert_eq!(
        redis_cli_tls(&first.ca, port, &["GET", "k"]).unwrap(),
        "over tls"
    );
    assert!(redis_cli_tls(&second.ca, port, &["PING"]).is_err());

    // The ringkv command-line client with --ca-file.
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["get", "r", "--node", &server.url, "--ca-file"])
        .arg(&first.ca)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        "resp over tls"
    );

    // SIGHUP with the second CA's certificate installed: new connections get it.
    install(&second, &cert, &key);
    let hup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hup(server.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&second.ca, &[&url("/healthz")]).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        curl(&first.ca, &[&url("/healthz")]),
        Err(60),
        "the old certificate is gone"
    );
    assert_eq!(
        redis_cli_tls(&second.ca, port, &["GET", "r"]).unwrap(),
        "resp over tls"
    );

    // A SIGHUP that finds a broken certificate keeps the one being served.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup(server.pid());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        curl(&second.ca, &[&url("/healthz")]).is_ok(),
        "still serving after a failed reload"
    );
    assert_eq!(redis_cli_tls(&second.ca, port, &["PING"]).unwrap(), "PONG");
}
