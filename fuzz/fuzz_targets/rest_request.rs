//! The REST API as any client could call it: an arbitrary method, path and query, headers
//! and body go through the real router of a real node; every answer is an HTTP response
//! (never a panic), and never a 5xx other than 503 for what the client sent.
#![no_main]

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    path: String,
    headers: Vec<(u8, String)>,
    body: Vec<u8>,
}

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];
const PREFIXES: [&str; 6] = ["/v1/keys/", "/v1/keys?", "/v1/ks/", "/v1/users/", "/v1/cluster/", "/"];
const HEADERS: [&str; 6] = [
    "content-type",
    "if-match",
    "if-none-match",
    "x-ringkv-context",
    "authorization",
    "accept",
];

fuzz_target!(|input: Input| {
    let ringkv_fuzz::FuzzNode { node, runtime, .. } = ringkv_fuzz::node();
    let prefix = PREFIXES[input.path.len() % PREFIXES.len()];
    let uri = format!("{prefix}{}", input.path);
    let mut request = Request::builder().method(METHODS[input.method as usize % METHODS.len()]);
    request = request.uri(uri);
    for (name, value) in &input.headers {
        request = request.header(HEADERS[*name as usize % HEADERS.len()], value.as_str());
    }
    let Ok(request) = request.body(Body::from(input.body)) else { return };
    // One router for the process: each new one registers its metrics again.
    static ROUTER: std::sync::OnceLock<axum::Router> = std::sync::OnceLock::new();
    let router = ROUTER
        .get_or_init(|| ringkv_server::http::router(std::sync::Arc::clone(node)))
        .clone();
    let response = runtime.block_on(router.oneshot(request)).expect("the router is infallible");
    let status = response.status().as_u16();
    assert!(status < 500 || status == 503, "a client's request made a {status}");
});
