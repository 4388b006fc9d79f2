//! Who a REST request acts as, and whether it may do what it asks: every request to an
//! operation that is not [`Access::Public`] passes through [`authorize`].
//!
//! Credentials travel as `Authorization: Basic` (user and password) or `Bearer` (an API
//! token). A request without them acts as the default principal
//! ([`Principal::default_for`]). Failed logins are rate limited per client address (429 with
//! `Retry-After`); a request that lacks the verb gets 403.

use super::error::ApiError;
use super::listener::ClientAddr;
use super::openapi::{Access, Operation, OPERATIONS};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ringkv_coordinator::keyspaces::DEFAULT_KEYSPACE;
use ringkv_coordinator::node::Node;
use ringkv_coordinator::users::{self, Api, Credential, LoginRefused, Principal, Scope};
use std::sync::Arc;

/// Finds the request's operation, works out who it acts as, and lets it through only if
/// that principal may call the operation; the principal goes on in the request's extensions.
pub async fn authorize(
    State(node): State<Arc<Node>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(operation) = operation_of(&request) else {
        // No such route: the fallback answers 404 or 405.
        return next.run(request).await;
    };
    if operation.access == Access::Public {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|info| info.0 .0.ip());
    let principal = match login(&node, request.headers(), peer).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    let keyspace = keyspace_of(request.uri().path());
    let allowed = match operation.access {
        Access::Public => true,
        Access::LoggedIn => principal != Principal::Anonymous,
        Access::Keyspace(verbs) => principal.may(&node.users, verbs, Scope::Keyspace(&keyspace)),
        Access::Cluster => principal.may(&node.users, users::Verbs::ADMIN, Scope::Cluster),
    };
    if !allowed {
        return match principal {
            Principal::Anonymous if !node.users.any() => unauthorized(
                "this node has no users, so only clients on its own loopback are served \
                 (protected_mode): create a user there with `ringkv user add`, or set \
                 protected_mode = false on a network you trust",
            ),
            Principal::Anonymous => unauthorized("log in: this node requires credentials"),
            _ => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "user {} may not {} ({})",
                    principal.name(),
                    operation.id,
                    needed(operation.access, &keyspace)
                ),
            )
            .into_response(),
        };
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// The principal of a request's credentials, or of none; `Err` is the refusal to send.
async fn login(
    node: &Arc<Node>,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Principal, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Principal::default_for(node, peer, Api::Rest));
    };
    let parsed = parse_authorization(value).ok_or_else(|| {
        unauthorized(
            "the Authorization header must be Basic <base64 user:password> or Bearer <token>",
        )
    })?;
    let credential = match &parsed {
        Authorization::Basic { user, password } => Credential::Password {
            user,
            password: password.as_bytes(),
        },
        Authorization::Bearer(token) => Credential::Token(token),
    };
    match users::log_in(node, Api::Rest, peer, credential, |_| true).await {
        Ok(name) => Ok(Principal::User(name)),
        Err(LoginRefused::Wrong) => Err(unauthorized("invalid username-password pair or token")),
        Err(LoginRefused::Throttled(wait)) => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failed_logins",
                "too many failed logins from this address; retry later",
            )
            .into_response();
            let seconds = wait.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Err(response)
        }
    }
}

/// Credentials as the `Authorization` header carries them.
enum Authorization {
    Basic { user: String, password: String },
    Bearer(String),
}

fn parse_authorization(value: &HeaderValue) -> Option<Authorization> {
    let text = value.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some(Authorization::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Authorization::Bearer(rest.to_owned()))
    } else {
        None
    }
}

/// 401 with the schemes a client may log in by.
fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"ringkv\", Bearer realm=\"ringkv\""),
    );
    response
}

/// The documented operation a routed request is for.
fn operation_of(request: &Request) -> Option<&'static Operation> {
    let path = request.extensions().get::<MatchedPath>()?.as_str();
    let method = request.method().as_str();
    OPERATIONS
        .iter()
        .find(|op| op.path == path && op.method.eq_ignore_ascii_case(method))
}

/// The keyspace a path names: the segment after `/v1/ks/`, percent-decoded, else `default`.
fn keyspace_of(path: &str) -> String {
    match path.strip_prefix("/v1/ks/") {
        Some(rest) => {
            let segment = rest.split('/').next().unwrap_or_default();
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        }
        None => DEFAULT_KEYSPACE.to_owned(),
    }
}

fn needed(access: Access, keyspace: &str) -> String {
    match access {
        Access::Keyspace(verbs) => {
            let verb = if verbs.contains(users::Verbs::ADMIN) {
                "admin"
            } else if verbs.contains(users::Verbs::WRITE) {
                "write"
            } else {
                "read"
            };
            format!("needs {verb}@{keyspace}")
        }
        _ => "needs admin@*".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyspace_is_the_decoded_segment_after_v1_ks() {
        assert_eq!(keyspace_of("/v1/keys/a/b"), "default");
        assert_eq!(keyspace_of("/v1/ks/orders/keys/x"), "orders");
        assert_eq!(keyspace_of("/v1/ks/de%66ault"), "default");
    }

    #[test]
    fn basic_and_bearer_parse_and_nothing_else_does() {
        let basic = HeaderValue::from_static("Basic YWxpY2U6czNjcjN0OnRvbw==");
        let Some(Authorization::Basic { user, password }) = parse_authorization(&basic) else {
            panic!("basic did not parse");
        };
        assert_eq!((user.as_str(), password.as_str()), ("alice", "s3cr3t:too"));
        let bearer = HeaderValue::from_static("bearer rk1.abc.def");
        assert!(
            matches!(parse_authorization(&bearer), Some(Authorization::Bearer(t)) if t == "rk1.abc.def")
        );
        for bad in ["Basic !!!", "Digest x", "Basic", "Basic bm9jb2xvbg=="] {
            let value = HeaderValue::from_static(bad);
            assert!(parse_authorization(&value).is_none(), "{bad} parsed");
        }
    }
}
