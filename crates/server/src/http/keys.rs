//! `/v1/keys` and `/v1/ks/{keyspace}/keys`: the key-value REST surface. Each handler parses and validates the request,
//! hands it to the coordinator, and shapes the answer; no storage or cluster logic lives here.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ringkv_coordinator::consistency::Consistency;
use ringkv_coordinator::coordinator;
use ringkv_coordinator::keyspaces::KeyspaceDef;
use ringkv_coordinator::node::Node;
use ringkv_coordinator::request::{Condition, Version, VisibleValue, WriteOutcome, WriteRequest};
use ringkv_core::causal::VersionVector;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub use ringkv_coordinator::keyspaces::DEFAULT_KEYSPACE;

/// The response and request header carrying the opaque causal context.
pub const CONTEXT_HEADER: &str = "x-ringkv-context";

/// Longest TTL accepted: 100 years, far past any real use, short of overflowing unix ms.
const TTL_SECONDS_MAX: u64 = 100 * 365 * 24 * 3600;

/// Keys a list request returns when it names no limit, and the most it may ask for.
const LIST_LIMIT_DEFAULT: usize = 100;
const LIST_LIMIT_MAX: usize = 10_000;

/// The keyspace and key a `/v1/keys/{key}` or `/v1/ks/{keyspace}/keys/{key}` request
/// addresses; an unknown keyspace is a 404.
pub struct Addressed {
    /// The keyspace's definition.
    pub keyspace: KeyspaceDef,
    /// The key, percent-decoded to bytes: any key a Redis client stores, UTF-8 or not, is
    /// addressable here (empty for the listing routes).
    pub key: Vec<u8>,
}

impl FromRequestParts<Arc<Node>> for Addressed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        // Read from the raw path rather than axum's path parameters, which refuse a key
        // that is not UTF-8 once percent-decoded.
        let segments: Vec<&str> = parts.uri.path().split('/').collect();
        let (name, raw_key) = match segments.as_slice() {
            ["", "v1", "keys"] => (DEFAULT_KEYSPACE, ""),
            ["", "v1", "keys", key] => (DEFAULT_KEYSPACE, *key),
            ["", "v1", "ks", name, "keys"] => (*name, ""),
            ["", "v1", "ks", name, "keys", key] => (*name, *key),
            _ => {
                return Err(ApiError::bad_request(
                    "not a path of a key or of a keyspace's keys",
                ))
            }
        };
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let key: Vec<u8> = percent_encoding::percent_decode_str(raw_key).collect();
        let keyspace = node
            .keyspaces
            .get(&name)
            .ok_or_else(|| ApiError::keyspace_not_found(&name))?;
        if !key.is_empty() {
            node.traffic.sample(&keyspace.name, &key);
        }
        Ok(Self { keyspace, key })
    }
}

/// A key as the JSON answers show it (a key that is not UTF-8 with its bad bytes replaced:
/// binary keys are best read with the key the client sent).
/// Whether a delete removed a value: `null` when it was issued by a stand-in, which cannot
/// know ([`WriteOutcome::previous_unknown`]).
fn deleted(outcome: &WriteOutcome) -> Value {
    match outcome.previous_unknown {
        true => Value::Null,
        false => Value::Bool(outcome.previous.is_some()),
    }
}

fn key_text(key: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(key)
}

/// Query parameters, with a bad query answered as the API's own JSON error (axum's plain
/// `Query` answers in plain text).
pub struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> FromRequestParts<Arc<Node>> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let Query(params) = Query::<T>::from_request_parts(parts, node)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(Self(params))
    }
}

/// Query parameters of `PUT /v1/keys/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutParams {
    /// Time to live in seconds, for raw-byte bodies.
    ttl: Option<String>,
    /// one | quorum | all | local_quorum | each_quorum.
    consistency: Option<String>,
    /// Replicas that must acknowledge, 1 to the keyspace's replication.
    w: Option<String>,
    /// How many of those must be the key's own replicas, not fallbacks holding hints.
    pw: Option<String>,
}

/// Query parameters of reads and deletes of one key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyParams {
    /// one | quorum | all | local_quorum | each_quorum.
    consistency: Option<String>,
    /// Replicas that must answer a read.
    r: Option<String>,
    /// Replicas that must acknowledge a delete.
    w: Option<String>,
    /// How many of those must be the key's own replicas (deletes).
    pw: Option<String>,
    /// `true`: read only this node's own replica (operators, debugging).
    local: Option<bool>,
}

/// The consistency a request asks for, checked against the keyspace.
fn consistency(
    keyspace: &KeyspaceDef,
    level: Option<&str>,
    counts: &[(&str, Option<&str>)],
) -> Result<Consistency, ApiError> {
    Consistency::parse(level, counts, keyspace.replication).map_err(ApiError::bad_request)
}

/// The JSON body of `PUT /v1/keys/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    value: String,
    #[serde(default)]
    ttl: Option<Value>,
    /// `"base64"` if `value` is base64 of binary data.
    #[serde(default)]
    encoding: Option<String>,
}

/// Stores a value: JSON `{"value": "...", "ttl": 60}`, or raw bytes with `?ttl=`.
pub async fn put_key(
    State(node): State<Arc<Node>>,
    Addressed { keyspace, key }: Addressed,
    Params(params): Params<PutParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let consistency = consistency(
        &keyspace,
        params.consistency.as_deref(),
        &[("w", params.w.as_deref()), ("pw", params.pw.as_deref())],
    )?;
    let query_ttl = params.ttl.as_deref().map(parse_ttl).transpose()?;
    let (value, body_ttl) = match body_kind(&headers)? {
        BodyKind::Json => parse_json_body(&body)?,
        BodyKind::Raw => (body.to_vec(), None),
    };
    // The body's ttl, if it gives one, wins over the query's.
    let ttl_seconds = body_ttl.or(query_ttl);
    let mut request = from_headers(
        WriteRequest::put(&keyspace.name, &key, &value),
        &keyspace,
        &headers,
    )?;
    if let Some(ttl) = ttl_seconds {
        request = request.expiring_at(node.now_ms() + ttl * 1000);
    }
    let outcome = coordinator::write(&node, &keyspace, request, consistency).await?;
    let body = json!({ "key": key_text(&key), "version": outcome.version().to_string() });
    Ok(with_version(
        Json(body).into_response(),
        outcome.version(),
        &outcome.context,
    ))
}

/// Reads a key: JSON by default, raw bytes when the client accepts only
/// `application/octet-stream`; 300 with every sibling when there are several.
pub async fn get_key(
    State(node): State<Arc<Node>>,
    Addressed { keyspace, key }: Addressed,
    Params(params): Params<KeyParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = consistency(
        &keyspace,
        params.consistency.as_deref(),
        &[("r", params.r.as_deref())],
    )?;
    let entry = if params.local == Some(true) {
        coordinator::read_local(&node, &keyspace, &key)?
    } else {
        coordinator::read(&node, &keyspace, &key, consistency).await?
    }
    .ok_or_else(ApiError::key_not_found)?;
    let now_ms = node.now_ms();
    if !entry.winner().kind.is_bytes() {
        // A typed value: its versions merged by its type's law, shown as JSON.
        let ttl = entry
            .winner()
            .expires_at_ms
            .map(|at| at.saturating_sub(now_ms).div_ceil(1000));
        let value = entry.value()?;
        let body = json!({
            "key": key_text(&key),
            "type": value.data_type().redis_name(),
            "value": typed_json(&value),
            "ttl": ttl,
            "version": entry.version().to_string(),
        });
        return Ok(with_version(
            Json(body).into_response(),
            entry.version(),
            &entry.context,
        ));
    }
    if entry.values.len() > 1 {
        let siblings: Vec<Value> = entry.values.iter().map(|v| value_json(v, now_ms)).collect();
        let body = json!({ "key": key_text(&key), "siblings": siblings, "context": entry.context.to_token() });
        let response = (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response();
        return Ok(with_version(response, entry.version(), &entry.context));
    }
    let (version, context) = (entry.version(), entry.context.clone());
    let response = if wants_raw(&headers) {
        let mut response = entry.into_winner().value.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        response
    } else {
        let mut body = value_json(entry.winner(), now_ms);
        body["key"] = json!(key_text(&key));
        body["version"] = json!(version.to_string());
        Json(body).into_response()
    };
    Ok(with_version(response, version, &context))
}

/// Deletes a key; succeeds whether or not it existed (`"deleted"` says which, or is null
/// when that is not known).
pub async fn delete_key(
    State(node): State<Arc<Node>>,
    Addressed { keyspace, key }: Addressed,
    Params(params): Params<KeyParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let consistency = consistency(
        &keyspace,
        params.consistency.as_deref(),
        &[("w", params.w.as_deref()), ("pw", params.pw.as_deref())],
    )?;
    if params.local.is_some() {
        return Err(ApiError::bad_request("local applies to reads only"));
    }
    let request = from_headers(
        WriteRequest::delete(&keyspace.name, &key),
        &keyspace,
        &headers,
    )?;
    let outcome = coordinator::write(&node, &keyspace, request, consistency).await?;
    Ok(
        // Null when the key's replicas were all down: the delete was kept by stand-ins that
        // cannot tell whether the key existed.
        Json(json!({ "key": key_text(&key), "deleted": deleted(&outcome) })).into_response(),
    )
}

/// Query parameters of `GET /v1/keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    prefix: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Lists keys with a prefix in key order, a page at a time; `cursor` resumes after the page.
pub async fn list_keys(
    State(node): State<Arc<Node>>,
    Addressed { keyspace, .. }: Addressed,
    Params(params): Params<ListParams>,
) -> Result<Response, ApiError> {
    let limit = match params.limit.as_deref() {
        None => LIST_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {LIST_LIMIT_MAX}")))?,
    };
    let prefix = params.prefix.unwrap_or_default().into_bytes();
    if prefix.len() > ringkv_core::limits::KEY_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "prefix of {} bytes is longer than any key ({} bytes at most)",
            prefix.len(),
            ringkv_core::limits::KEY_BYTES_MAX
        )));
    }
    let after = match params.cursor.as_deref() {
        Some(cursor) => Some([prefix.as_slice(), &decode_cursor(cursor)?].concat()),
        None => None,
    };
    let page = coordinator::scan(&node, &keyspace, &prefix, after.as_deref(), limit).await?;
    let keys: Vec<String> = page
        .entries
        .iter()
        .map(|(key, _)| String::from_utf8_lossy(key).into_owned())
        .collect();
    // The cursor names the key to resume after by what follows the prefix: the prefix is
    // in the URL already, and the two together must fit a URI for any key.
    let cursor = page.next_after.map(|key| {
        let suffix = key.get(prefix.len()..).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(suffix)
    });
    Ok(Json(json!({ "keys": keys, "cursor": cursor })).into_response())
}

fn decode_cursor(cursor: &str) -> Result<Vec<u8>, ApiError> {
    // Lenient about the unused bits of the last symbol: a cursor only names a key to resume
    // after, so any base64url text is one (as the OpenAPI document's pattern says).
    const CURSOR_ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    CURSOR_ENGINE
        .decode(cursor)
        .map_err(|_| ApiError::bad_request("cursor is not one this server returned"))
}

enum BodyKind {
    Json,
    Raw,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Json);
    };
    let essence = content_type
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/octet-stream" => Ok(BodyKind::Raw),
        _ if essence.starts_with("text/") => Ok(BodyKind::Raw),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {essence:?} is not supported: send application/json or application/octet-stream"),
        )),
    }
}

fn parse_json_body(body: &[u8]) -> Result<(Vec<u8>, Option<u64>), ApiError> {
    let parsed: PutBody = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "body must be JSON like {{\"value\": \"...\", \"ttl\": 60}}: {error}"
        ))
    })?;
    let value = match parsed.encoding.as_deref() {
        None | Some("utf-8") => parsed.value.into_bytes(),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(parsed.value)
            .map_err(|error| {
                ApiError::bad_request(format!("value is not valid base64: {error}"))
            })?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown encoding {other:?}: use base64"
            )))
        }
    };
    let ttl = match parsed.ttl {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => Some(parse_ttl(&number.to_string())?),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "ttl must be a number of seconds, not {other}"
            )))
        }
    };
    Ok((value, ttl))
}

fn parse_ttl(text: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|ttl| (1..=TTL_SECONDS_MAX).contains(ttl))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "ttl must be a whole number of seconds from 1 to {TTL_SECONDS_MAX}, not {text:?}"
            ))
        })
}

/// Completes a write from the request's headers: its precondition, the causal context the
/// client sent back, and the keyspace's conflict mode.
fn from_headers(
    request: WriteRequest,
    keyspace: &KeyspaceDef,
    headers: &HeaderMap,
) -> Result<WriteRequest, ApiError> {
    // Every header is checked for form (400) before preconditions are weighed (412).
    let context = context(headers)?;
    let request = request
        .when(condition(headers)?)
        .conflict(keyspace.conflict.into());
    Ok(match context {
        Some(context) => request.with_context(context),
        None => request,
    })
}

/// The condition HTTP preconditions ask for: `If-None-Match: *` creates only, `If-Match: *`
/// needs the key present, `If-Match: "<etag>"` compares and sets.
fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    let text = |name| {
        headers
            .get(name)
            .map(|v: &HeaderValue| v.to_str().unwrap_or("").trim().to_owned())
    };
    let if_match = match text(header::IF_MATCH) {
        None => None,
        Some(star) if star == "*" => Some(Condition::IfPresent),
        Some(etag) => Some(
            etag.parse::<Version>()
                .map(Condition::IfVersion)
                .map_err(|error| ApiError::bad_request(format!("If-Match: {error}")))?,
        ),
    };
    let if_none_match = match text(header::IF_NONE_MATCH) {
        None => None,
        Some(star) if star == "*" => Some(Condition::IfAbsent),
        Some(_) => {
            return Err(ApiError::bad_request(
                "If-None-Match on writes supports only *",
            ))
        }
    };
    match (if_match, if_none_match) {
        // The key must both exist and not exist: as RFC 9110 evaluates the two, one of them
        // fails whatever is stored.
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-Match and If-None-Match: * cannot both hold",
        )),
        (Some(condition), None) | (None, Some(condition)) => Ok(condition),
        (None, None) => Ok(Condition::Always),
    }
}

fn context(headers: &HeaderMap) -> Result<Option<VersionVector>, ApiError> {
    let Some(token) = headers.get(CONTEXT_HEADER) else {
        return Ok(None);
    };
    let token = token
        .to_str()
        .map_err(|_| ApiError::bad_request("causal context is not ASCII"))?;
    VersionVector::from_token(token)
        .map(Some)
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

fn wants_raw(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/octet-stream") && !accept.contains("json")
}

/// A typed value as JSON: a counter as a number, a set or list as an array, a hash as an
/// object, a sorted set as members with scores, lowest first. Bytes that are not UTF-8 are
/// shown with replacement characters.
fn typed_json(value: &ringkv_core::crdt::typed::Value) -> Value {
    use ringkv_core::crdt::typed::{Typed, Value as Held};
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match value {
        Held::Bytes(bytes, _) => json!(text(bytes)),
        Held::Typed(Typed::Counter(counter)) => json!(counter.value() as i64),
        Held::Typed(Typed::Set(set)) => json!(set.elements().map(text).collect::<Vec<_>>()),
        Held::Typed(Typed::List(list)) => json!(list.iter().map(|i| text(i)).collect::<Vec<_>>()),
        Held::Typed(Typed::Hash(hash)) => {
            let fields: serde_json::Map<String, Value> = hash
                .iter()
                .map(|(field, value)| (text(field), json!(text(&value.value()))))
                .collect();
            Value::Object(fields)
        }
        Held::Typed(Typed::SortedSet(zset)) => json!(ringkv_core::crdt::op::ranked(zset)
            .into_iter()
            .map(|(score, member)| json!({ "member": text(&member), "score": score }))
            .collect::<Vec<_>>()),
    }
}

fn value_json(value: &VisibleValue, now_ms: u64) -> Value {
    let ttl = value
        .expires_at_ms
        .map(|at| at.saturating_sub(now_ms).div_ceil(1000));
    match std::str::from_utf8(&value.value) {
        Ok(text) => json!({ "value": text, "ttl": ttl }),
        Err(_) => json!({
            "value": base64::engine::general_purpose::STANDARD.encode(&value.value),
            "encoding": "base64",
            "ttl": ttl,
        }),
    }
}

fn with_version(mut response: Response, version: Version, context: &VersionVector) -> Response {
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(token) = HeaderValue::from_str(&context.to_token()) {
        headers.insert(CONTEXT_HEADER, token);
    }
    response
}

/// The body of `POST /v1/keys/{key}`: operations on the key's typed value, all of one type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedBody {
    /// Add to a counter (negative: subtract).
    incr: Option<i64>,
    /// Set members to add.
    add: Option<Vec<String>>,
    /// Set members to remove.
    remove: Option<Vec<String>>,
    /// Hash fields to set.
    set: Option<std::collections::BTreeMap<String, String>>,
    /// Hash fields to delete.
    delete: Option<Vec<String>>,
    /// Sorted-set members to add, with their scores.
    zadd: Option<std::collections::BTreeMap<String, f64>>,
    /// Sorted-set members to remove.
    zrem: Option<Vec<String>>,
    /// Items to append to a list.
    push: Option<Vec<String>>,
}

/// The operations a typed body asks for, in order; one type per request.
fn typed_ops(body: &[u8]) -> Result<Vec<ringkv_core::crdt::op::Op>, ApiError> {
    use ringkv_core::crdt::op::{AddFlags, Op};
    let parsed: TypedBody = serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "body must be JSON like {{\"incr\": 5}}, {{\"add\": [...], \"remove\": [...]}}, \
             {{\"set\": {{...}}, \"delete\": [...]}}, {{\"zadd\": {{...}}, \"zrem\": [...]}} \
             or {{\"push\": [...]}}: {error}"
        ))
    })?;
    let bytes = |items: Vec<String>| -> Vec<Vec<u8>> {
        items.into_iter().map(String::into_bytes).collect()
    };
    let groups = [
        parsed.incr.is_some(),
        parsed.add.is_some() || parsed.remove.is_some(),
        parsed.set.is_some() || parsed.delete.is_some(),
        parsed.zadd.is_some() || parsed.zrem.is_some(),
        parsed.push.is_some(),
    ];
    match groups.iter().filter(|&&g| g).count() {
        0 => return Err(ApiError::bad_request("the body names no operation")),
        1 => {}
        _ => {
            return Err(ApiError::bad_request(
                "one request takes the operations of one type: incr; add/remove; set/delete; zadd/zrem; push",
            ))
        }
    }
    let mut ops = Vec::new();
    ops.extend(parsed.incr.map(Op::Increment));
    ops.extend(parsed.add.map(|m| Op::SetAdd(bytes(m))));
    ops.extend(parsed.remove.map(|m| Op::SetRemove(bytes(m))));
    ops.extend(parsed.set.map(|fields| {
        Op::HashSet {
            pairs: fields
                .into_iter()
                .map(|(f, v)| (f.into_bytes(), v.into_bytes()))
                .collect(),
            only_new: false,
        }
    }));
    ops.extend(parsed.delete.map(|f| Op::HashDelete(bytes(f))));
    if let Some(members) = parsed.zadd {
        if members.values().any(|score| score.is_nan()) {
            return Err(ApiError::bad_request("a score is not a number"));
        }
        let pairs = members
            .into_iter()
            .map(|(member, score)| (score, member.into_bytes()))
            .collect();
        ops.push(Op::SortedAdd {
            pairs,
            flags: AddFlags::default(),
        });
    }
    ops.extend(parsed.zrem.map(|m| Op::SortedRemove(bytes(m))));
    ops.extend(parsed.push.map(|items| Op::ListPush {
        left: false,
        values: bytes(items),
        only_existing: false,
    }));
    // An empty list of members is a request for nothing.
    ops.retain(|op| !is_empty_op(op));
    if ops.is_empty() {
        return Err(ApiError::bad_request(
            "the body names no member, field or item",
        ));
    }
    Ok(ops)
}

/// Whether an operation lists no element at all.
fn is_empty_op(op: &ringkv_core::crdt::op::Op) -> bool {
    use ringkv_core::crdt::op::Op;
    match op {
        Op::SetAdd(items) | Op::SetRemove(items) | Op::HashDelete(items) => items.is_empty(),
        Op::SortedRemove(items) => items.is_empty(),
        Op::HashSet { pairs, .. } => pairs.is_empty(),
        Op::SortedAdd { pairs, .. } => pairs.is_empty(),
        Op::ListPush { values, .. } => values.is_empty(),
        _ => false,
    }
}

/// Applies typed operations to a key (`POST`): counters, sets, hashes, sorted sets and lists,
/// each merged by its type's law across replicas. Answers with the value after them.
pub async fn post_key(
    State(node): State<Arc<Node>>,
    Addressed { keyspace, key }: Addressed,
    Params(params): Params<KeyParams>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if params.local.is_some() {
        return Err(ApiError::bad_request("local applies to reads only"));
    }
    let consistency = consistency(
        &keyspace,
        params.consistency.as_deref(),
        &[("w", params.w.as_deref()), ("pw", params.pw.as_deref())],
    )?;
    for op in typed_ops(&body)? {
        let change = ringkv_coordinator::request::Change::Typed(op);
        let request =
            WriteRequest::new(&keyspace.name, &key, change).conflict(keyspace.conflict.into());
        coordinator::write(&node, &keyspace, request, consistency).await?;
    }
    let entry = coordinator::read(&node, &keyspace, &key, consistency).await?;
    let body = match entry {
        None => json!({ "key": key_text(&key), "type": "none", "value": null }),
        Some(entry) => {
            let value = entry.value()?;
            json!({
                "key": key_text(&key),
                "type": value.data_type().redis_name(),
                "value": typed_json(&value),
                "version": entry.version().to_string(),
            })
        }
    };
    Ok(Json(body).into_response())
}
