//! Client authentication and authorization, over real connections to an in-process node on
//! loopback: users made through REST, then REST and the Redis protocol refusing clients
//! without credentials and holding each user to its grants per keyspace and verb.

mod support;

use ringkv_client::{Client, ClientError, Credentials};
use serde_json::json;
use support::{bulk, ok, start_node, Reply, RespClient, TestNode};

const ADMIN_PASSWORD: &str = "admin-password-1";
const READER_PASSWORD: &str = "reader-password-1";

/// Runs a blocking client call off the test's runtime.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call).await.unwrap()
}

fn rest(node: &TestNode) -> Client {
    Client::new(&format!("http://{}", node.running.http_addr))
}

fn as_user(node: &TestNode, user: &str, password: &str) -> Client {
    rest(node).with_credentials(Credentials::Password {
        user: user.into(),
        password: password.into(),
    })
}

/// Whether `check` holds within 30 s (polled every 100 ms).
fn within_30_s(check: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

fn status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(error) => error.status().unwrap_or_else(|| panic!("{error}")),
    }
}

/// Makes `admin` (all@*) with the loopback superuser, then `reader` (read@default).
async fn with_users(node: &TestNode) {
    let anyone = rest(node);
    blocking(move || {
        anyone
            .put_user(
                "admin",
                &json!({ "password": ADMIN_PASSWORD, "grants": ["all@*"] }),
            )
            .unwrap();
    })
    .await;
    let admin = as_user(node, "admin", ADMIN_PASSWORD);
    blocking(move || {
        admin
            .put_user(
                "reader",
                &json!({ "password": READER_PASSWORD, "grants": ["read@default"] }),
            )
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refuses_clients_without_credentials_once_users_exist_and_holds_grants() {
    let node = start_node(|_| {}).await;
    let anyone = rest(&node);
    let before = blocking(move || anyone.put("k", b"v", None)).await;
    assert!(
        before.is_ok(),
        "a loopback client of a node without users is let in"
    );
    with_users(&node).await;

    let (anyone, admin, reader) = (
        rest(&node),
        as_user(&node, "admin", ADMIN_PASSWORD),
        as_user(&node, "reader", READER_PASSWORD),
    );
    let wrong = as_user(&node, "reader", "not-the-password");
    let statuses = blocking(move || {
        let anonymous_get = status(anyone.get("k"));
        let anonymous_health = status(anyone.whoami());
        let wrong_get = status(wrong.get("k"));
        let reader_get = reader.get("k").unwrap().map(|v| v.value);
        let reader_put = status(reader.put("k", b"x", None));
        let reader_users = status(reader.users());
        let reader_repair = status(reader.start_repair(None));
        let admin_put = status(admin.put("k", b"w", None));
        let listed = admin.users().unwrap();
        (
            anonymous_get,
            anonymous_health,
            wrong_get,
            reader_get,
            reader_put,
            reader_users,
            reader_repair,
            admin_put,
            listed,
        )
    })
    .await;
    assert_eq!(statuses.0, 401, "no credentials");
    assert_eq!(statuses.1, 401, "whoami needs a login too");
    assert_eq!(statuses.2, 401, "a wrong password");
    assert_eq!(statuses.3, Some(b"v".to_vec()), "reader reads default");
    assert_eq!(statuses.4, 403, "reader may not write");
    assert_eq!(statuses.5, 403, "reader may not manage users");
    assert_eq!(statuses.6, 403, "reader may not run cluster operations");
    assert_eq!(statuses.7, 200, "admin writes");
    let listed = statuses.8.to_string();
    assert!(
        listed.contains("reader") && listed.contains("read@default"),
        "{listed}"
    );
    assert!(
        !listed.contains("argon2"),
        "no hash is ever shown: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_hold_per_keyspace_and_tokens_and_removal_take_effect_at_once() {
    let node = start_node(|_| {}).await;
    with_users(&node).await;
    let base = format!("http://{}", node.running.http_addr);
    let admin = as_user(&node, "admin", ADMIN_PASSWORD);
    let made = blocking(move || {
        let http = raw(
            &base,
            "PUT",
            "/v1/ks/orders",
            &basic("admin", ADMIN_PASSWORD),
        );
        assert_eq!(http, 200, "admin creates a keyspace");
        admin
            .put_user(
                "app",
                &json!({ "new_token": true, "grants": ["read,write@orders", "read@default"] }),
            )
            .unwrap()
    })
    .await;
    let token = made["new_token"].as_str().expect("a new token").to_owned();
    assert!(token.starts_with("rk1."), "{token}");

    // The same token logs in over the Redis protocol, alone or with its user's name.
    let mut c = RespClient::connect(&node).await;
    assert_eq!(c.call(&["AUTH", "app", &token]).await, ok());
    assert_eq!(c.call(&["AUTH", &token]).await, ok());
    assert!(matches!(c.call(&["SET", "k", "v"]).await, Reply::Error(e) if e.starts_with("NOPERM")));
    assert!(
        matches!(c.call(&["AUTH", "admin", &token]).await, Reply::Error(e) if e.starts_with("WRONGPASS"))
    );

    let base = format!("http://{}", node.running.http_addr);
    let app = rest(&node).with_credentials(Credentials::Token(token.clone()));
    let forged = rest(&node).with_credentials(Credentials::Token(format!("{token}x")));
    let admin = as_user(&node, "admin", ADMIN_PASSWORD);
    let outcome = blocking(move || {
        let orders_put = raw(&base, "PUT", "/v1/ks/orders/keys/o1", &bearer(&token));
        let default_put = raw(&base, "PUT", "/v1/keys/d1", &bearer(&token));
        let default_get = status(app.get("k"));
        let define = raw(&base, "PUT", "/v1/ks/orders", &bearer(&token));
        let forged_get = status(forged.get("k"));
        admin.remove_user("app").unwrap();
        let after_removal = status(app.get("k"));
        (
            orders_put,
            default_put,
            default_get,
            define,
            forged_get,
            after_removal,
        )
    })
    .await;
    assert_eq!(outcome.0, 200, "write@orders");
    assert_eq!(outcome.1, 403, "no write@default");
    assert_eq!(outcome.2, 200, "read@default: allowed (the key is absent)");
    assert_eq!(outcome.3, 403, "no admin@orders");
    assert_eq!(outcome.4, 401, "a changed token is refused");
    assert_eq!(outcome.5, 401, "a removed user's token stops working");
}

/// A raw REST call (for routes the client has no method for) with an `Authorization`
/// header; answers the status.
fn raw(base: &str, method: &str, path: &str, authorization: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = if path.contains("/keys/") {
        "{\"value\": \"v\"}"
    } else {
        "{}"
    };
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .body(body.to_owned())
        .unwrap();
    agent.run(request).unwrap().status().as_u16()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_log_in_as_users_and_are_held_to_their_grants() {
    let node = start_node(|_| {}).await;
    with_users(&node).await;
    let mut c = RespClient::connect(&node).await;
    assert_eq!(
        c.call(&["GET", "k"]).await,
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        c.call(&["AUTH", "reader", "wrong-password"]).await,
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
    );
    assert_eq!(c.call(&["AUTH", "reader", READER_PASSWORD]).await, ok());
    assert_eq!(c.call(&["GET", "k"]).await, Reply::Nil, "read@default");
    assert_eq!(
        c.call(&["SET", "k", "v"]).await,
        Reply::Error("NOPERM User reader has no permissions to run the 'set' command".into())
    );
    assert_eq!(c.call(&["SELECT", "1"]).await, ok());
    assert!(
        matches!(c.call(&["GET", "k"]).await, Reply::Error(e) if e.starts_with("NOPERM")),
        "db1 is keyspace db1, which reader has no grant on"
    );
    assert!(matches!(c.call(&["FLUSHALL"]).await, Reply::Error(e) if e.starts_with("NOPERM")));

    // HELLO 3 AUTH logs in and switches protocol at once; admin may do anything.
    let mut admin = RespClient::connect(&node).await;
    let hello = admin
        .call(&["HELLO", "3", "AUTH", "admin", ADMIN_PASSWORD])
        .await;
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    assert_eq!(admin.call(&["SET", "k", "v"]).await, ok());
    assert_eq!(admin.call(&["GET", "k"]).await, bulk("v"));
    assert_eq!(admin.call(&["FLUSHALL"]).await, ok());

    // A grant taken away applies to a connection already logged in.
    let admin_rest = as_user(&node, "admin", ADMIN_PASSWORD);
    blocking(move || {
        admin_rest
            .put_user("reader", &json!({ "grants": [] }))
            .unwrap()
    })
    .await;
    assert_eq!(c.call(&["SELECT", "0"]).await, ok());
    assert!(matches!(c.call(&["GET", "k"]).await, Reply::Error(e) if e.starts_with("NOPERM")));
    // RESET logs out.
    assert_eq!(admin.call(&["RESET"]).await, Reply::Simple("RESET".into()));
    assert_eq!(
        admin.call(&["GET", "k"]).await,
        Reply::Error("NOAUTH Authentication required.".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_wrong_passwords_is_throttled_and_counted() {
    let node = start_node(|_| {}).await;
    with_users(&node).await;
    let mut c = RespClient::connect(&node).await;
    const GUESSES: usize = 200;
    let mut pipeline = Vec::new();
    for i in 0..GUESSES {
        let guess = format!("guess-{i}");
        pipeline.extend(RespClient::encode(&[b"AUTH", b"admin", guess.as_bytes()]));
    }
    c.send_raw(&pipeline).await;
    let (mut wrong, mut throttled) = (0, 0);
    for _ in 0..GUESSES {
        match c.read().await {
            Reply::Error(e) if e.starts_with("WRONGPASS") => wrong += 1,
            Reply::Error(e) if e.contains("too many failed logins") => throttled += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(
        wrong <= 12,
        "{wrong} guesses were checked; the burst allows 10"
    );
    assert_eq!(wrong + throttled, GUESSES);
    // A password this node verified before is not a guess: it still logs in from here.
    assert_eq!(c.call(&["AUTH", "admin", ADMIN_PASSWORD]).await, ok());
    let unverified = c.call(&["AUTH", "reader", READER_PASSWORD]).await;
    assert!(
        matches!(&unverified, Reply::Error(e) if e.contains("too many failed logins")),
        "{unverified:?}"
    );
    let metrics = node.running.node.registry.lock();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &metrics).unwrap();
    assert!(
        text.contains(&format!(
            "ringkv_auth_logins_total{{api=\"resp\",outcome=\"throttled\"}} {}",
            throttled + 1
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_users_serves_only_loopback_unless_told_otherwise() {
    use ringkv_coordinator::users::{Api, Principal};
    let remote = Some("192.0.2.7".parse().unwrap());
    let local = Some("127.0.0.1".parse().unwrap());
    let protected = start_node(|_| {}).await;
    let node = &protected.running.node;
    assert_eq!(
        Principal::default_for(node, local, Api::Rest),
        Principal::Superuser
    );
    assert_eq!(
        Principal::default_for(node, remote, Api::Rest),
        Principal::Anonymous
    );
    assert_eq!(
        Principal::default_for(node, remote, Api::Resp),
        Principal::Anonymous
    );

    let open = start_node(|config| config.protected_mode = false).await;
    let node = &open.running.node;
    assert_eq!(
        Principal::default_for(node, remote, Api::Resp),
        Principal::Superuser
    );

    let with_password =
        start_node(|config| config.resp_password = Some("pw-pw-pw-pw".into())).await;
    let node = &with_password.running.node;
    assert_eq!(
        Principal::default_for(node, local, Api::Resp),
        Principal::Anonymous
    );
    assert_eq!(
        Principal::default_for(node, local, Api::Rest),
        Principal::Superuser
    );

    // Once a user exists, even loopback clients must log in, unless a default user is set.
    with_users(&protected).await;
    let node = &protected.running.node;
    assert_eq!(
        Principal::default_for(node, local, Api::Rest),
        Principal::Anonymous
    );
    let guest = start_node(|config| config.default_user = Some("reader".into())).await;
    with_users(&guest).await;
    let node = &guest.running.node;
    assert_eq!(
        Principal::default_for(node, remote, Api::Resp),
        Principal::User("reader".into())
    );
    let mut c = RespClient::connect(&guest).await;
    assert_eq!(
        c.call(&["GET", "k"]).await,
        Reply::Nil,
        "the default user reads"
    );
    assert!(matches!(c.call(&["SET", "k", "v"]).await, Reply::Error(e) if e.starts_with("NOPERM")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_made_on_one_node_logs_in_on_every_node_and_its_removal_spreads() {
    let first = start_node(|_| {}).await;
    let seed = first.running.cluster_addr.to_string();
    let second = start_node(|config| config.join = vec![seed]).await;
    with_users(&first).await;
    let reader_on_second = as_user(&second, "reader", READER_PASSWORD);
    let logged_in = blocking(move || within_30_s(|| reader_on_second.whoami().is_ok())).await;
    assert!(logged_in, "the user reached the second node within 30 s");
    let admin = as_user(&first, "admin", ADMIN_PASSWORD);
    let reader_on_second = as_user(&second, "reader", READER_PASSWORD);
    let refused = blocking(move || {
        admin.remove_user("reader").unwrap();
        within_30_s(|| status(reader_on_second.whoami()) == 401)
    })
    .await;
    assert!(refused, "the removal reached the second node within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_at_the_resp_password_are_throttled_too() {
    let node = start_node(|config| config.resp_password = Some("the-right-one".into())).await;
    let mut c = RespClient::connect(&node).await;
    let mut pipeline = Vec::new();
    for i in 0..100 {
        pipeline.extend(RespClient::encode(&[
            b"AUTH",
            format!("guess-{i}").as_bytes(),
        ]));
    }
    c.send_raw(&pipeline).await;
    let mut throttled = 0;
    for _ in 0..100 {
        if let Reply::Error(e) = c.read().await {
            throttled += usize::from(e.contains("too many failed logins"));
        }
    }
    assert!(
        throttled >= 85,
        "only {throttled} of 100 guesses were throttled"
    );
}
