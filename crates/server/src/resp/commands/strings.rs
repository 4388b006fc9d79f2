//! String commands: GET, SET (with every Redis 7 option), SETNX, SETEX, PSETEX, GETSET,
//! GETDEL, GETEX, MGET, MSET, STRLEN, INCR, DECR, INCRBY, DECRBY.

use super::{
    keyspace, keyspace_def, parse_integer, read_entry, write, write_many, Args, CommandError,
    Reply, Session,
};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_coordinator::coordinator::CoordinatorError;
use ringkv_coordinator::request::{
    Change, Condition, Expiry, ReplicaError, WriteOutcome, WriteRequest,
};

/// `GET key`: the value, or nil. A node alone in its ring answers from its own replica with
/// the stored bytes themselves (no copy of the value, no merge of replicas' answers).
pub async fn get(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    if shared.node.is_alone() {
        return get_local(shared, session, &key);
    }
    Ok(Frame::optional_bulk(read(shared, session, &key).await?))
}

/// `GET key` from this node's own replica.
pub fn get_local(shared: &RespShared, session: &Session, key: &[u8]) -> Reply {
    let keyspace = keyspace_def(shared, session)?;
    let value =
        ringkv_coordinator::coordinator::local::get_value(&shared.node, &keyspace.name, key)?;
    Ok(value.map_or(Frame::Null, Frame::Bulk))
}

/// The string a write replaced, as a Redis string command reports it (a counter as its
/// value); a collection is the wrong type.
pub fn previous_string(
    previous: Option<Box<ringkv_coordinator::request::Entry>>,
) -> Result<Option<Vec<u8>>, CommandError> {
    Ok(previous.map(|entry| entry.string()).transpose()?)
}

/// The visible value of a key as a string (the newest sibling, if there are several; a
/// counter's value); a collection is the wrong type.
pub async fn read(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Option<Vec<u8>>, CommandError> {
    let entry = read_entry(shared, session, key).await?;
    Ok(entry.map(|entry| entry.string()).transpose()?)
}

/// What an expiry option of SET or GETEX asks for.
fn expiry_option(
    shared: &RespShared,
    option: &str,
    args: &mut Args,
    command: &str,
) -> Result<Option<Expiry>, CommandError> {
    let unit_ms = match option {
        "EX" | "EXAT" => 1000,
        "PX" | "PXAT" => 1,
        _ => return Ok(None),
    };
    let invalid = || {
        CommandError::Reply(Frame::err(format!(
            "invalid expire time in '{command}' command"
        )))
    };
    let amount = args.integer()?;
    if amount <= 0 {
        return Err(invalid());
    }
    let ms = (amount as u64)
        .checked_mul(unit_ms)
        .filter(|&ms| ms < i64::MAX as u64 / 2)
        .ok_or_else(invalid)?;
    let at = if option.ends_with("AT") {
        ms
    } else {
        shared.node.now_ms().saturating_add(ms)
    };
    Ok(Some(Expiry::At(at)))
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`.
pub async fn set(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    let (request, get) = parse_set(shared, session, args)?;
    if get {
        // SET ... GET leaves a key of another type alone (checked just before the write).
        read(shared, session, &request.key).await?;
    }
    set_reply(get, write(shared, session, request).await)
}

/// Parses SET's arguments into the write it asks for, and whether it has the GET option.
pub fn parse_set(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
) -> Result<(WriteRequest, bool), CommandError> {
    let (key, value) = (args.bytes()?, args.bytes()?);
    let (mut condition, mut expiry, mut get) = (None, None, false);
    while args.remaining() > 0 {
        let option = args.word()?;
        match option.as_str() {
            "NX" | "XX" if condition.is_none() => {
                condition = Some(if option == "NX" {
                    Condition::IfAbsent
                } else {
                    Condition::IfPresent
                });
            }
            "GET" if !get => get = true,
            "KEEPTTL" if expiry.is_none() => expiry = Some(Expiry::Keep),
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() => {
                expiry = expiry_option(shared, &option, &mut args, "set")?;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let change = Change::Put {
        value: value.to_vec(),
        expiry: expiry.unwrap_or(Expiry::Never),
    };
    let request =
        WriteRequest::new(keyspace(session), &key, change).when(condition.unwrap_or_default());
    Ok((request, get))
}

/// SET's reply once its write finished.
pub fn set_reply(get: bool, outcome: Result<WriteOutcome, CoordinatorError>) -> Reply {
    match outcome {
        Ok(outcome) if get => Ok(Frame::optional_bulk(previous_string(outcome.previous)?)),
        Ok(_) => Ok(Frame::ok()),
        // NX GET on an existing key returns its value without setting it (Redis 7): the value
        // seen when the condition was checked, not one read later.
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { current })) if get => {
            Ok(Frame::optional_bulk(previous_string(current)?))
        }
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => Ok(Frame::Null),
        Err(error) => Err(error.into()),
    }
}

/// `SETNX key value`: 1 if set, 0 if the key existed.
pub async fn setnx(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (key, value) = (args.bytes()?, args.bytes()?);
    let request = WriteRequest::put(keyspace(session), &key, &value).when(Condition::IfAbsent);
    match write(shared, session, request).await {
        Ok(_) => Ok(Frame::Integer(1)),
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => {
            Ok(Frame::Integer(0))
        }
        Err(error) => Err(error.into()),
    }
}

/// `CAS key expected new`: sets `key` to `new` only if it holds the string `expected`,
/// atomically (in a strong keyspace, decided by the shard's log); 1 if it did, 0 if not.
pub async fn cas(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (key, expected, value) = (args.bytes()?, args.bytes()?, args.bytes()?);
    let condition = Condition::IfValue(Condition::value_digest(&expected));
    let request = WriteRequest::put(keyspace(session), &key, &value).when(condition);
    match write(shared, session, request).await {
        Ok(_) => Ok(Frame::Integer(1)),
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => {
            Ok(Frame::Integer(0))
        }
        Err(error) => Err(error.into()),
    }
}

async fn set_expiring(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
    unit: &str,
    command: &str,
) -> Reply {
    let key = args.bytes()?;
    let expiry = expiry_option(shared, unit, &mut args, command)?.unwrap_or_default();
    let value = args.bytes()?;
    let change = Change::Put {
        value: value.to_vec(),
        expiry,
    };
    write(
        shared,
        session,
        WriteRequest::new(keyspace(session), &key, change),
    )
    .await?;
    Ok(Frame::ok())
}

/// `SETEX key seconds value`.
pub async fn setex(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    set_expiring(shared, session, args, "EX", "setex").await
}

/// `PSETEX key milliseconds value`.
pub async fn psetex(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    set_expiring(shared, session, args, "PX", "psetex").await
}

/// `GETSET key value`: sets, returning the old value.
pub async fn getset(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (key, value) = (args.bytes()?, args.bytes()?);
    // A key of another type is left alone (checked just before the write).
    read(shared, session, &key).await?;
    let outcome = write(
        shared,
        session,
        WriteRequest::put(keyspace(session), &key, &value),
    )
    .await?;
    Ok(Frame::optional_bulk(previous_string(outcome.previous)?))
}

/// `GETDEL key`: deletes, returning the old value.
pub async fn getdel(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    if read(shared, session, &key).await?.is_none() {
        return Ok(Frame::Null);
    }
    let outcome = write(
        shared,
        session,
        WriteRequest::delete(keyspace(session), &key),
    )
    .await?;
    Ok(Frame::optional_bulk(previous_string(outcome.previous)?))
}

/// `GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]`: reads, changing the expiry.
pub async fn getex(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let expiry = match args.remaining() {
        0 => None,
        _ => {
            let option = args.word()?;
            match option.as_str() {
                "PERSIST" => Some(Expiry::Never),
                _ => Some(
                    expiry_option(shared, &option, &mut args, "getex")?
                        .ok_or(CommandError::Syntax)?,
                ),
            }
        }
    };
    args.finish()?;
    let Some(expiry) = expiry else {
        return Ok(Frame::optional_bulk(read(shared, session, &key).await?));
    };
    match write(
        shared,
        session,
        WriteRequest::new(keyspace(session), &key, Change::Expire(expiry)),
    )
    .await
    {
        Ok(outcome) => Ok(Frame::optional_bulk(previous_string(outcome.previous)?)),
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => Ok(Frame::Null),
        Err(error) => Err(error.into()),
    }
}

/// `MGET key [key ...]`.
pub async fn mget(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let mut values = Vec::new();
    for key in args.rest() {
        // A key of another type reads as nil here, as in Redis.
        let value = match read(shared, session, &key).await {
            Err(CommandError::Reply(Frame::Error(e))) if e.starts_with("WRONGTYPE") => None,
            other => other?,
        };
        super::charge_reply(shared, session, value.as_ref().map_or(0, Vec::len) + 16)?;
        values.push(Frame::optional_bulk(value));
    }
    Ok(Frame::Array(values))
}

/// `MSET key value [key value ...]`: on a single node all keys are set in one atomic batch.
pub async fn mset(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let pairs = args.rest();
    if !pairs.len().is_multiple_of(2) {
        return Err(CommandError::Arity("mset"));
    }
    set_pairs(shared, session, &pairs).await?;
    Ok(Frame::ok())
}

/// Sets each `key value` pair of `pairs` (MSET, MSETNX): one atomic batch on a single node.
pub async fn set_pairs(
    shared: &RespShared,
    session: &Session,
    pairs: &[bytes::Bytes],
) -> Result<(), CommandError> {
    let keyspace = keyspace(session);
    let requests = pairs
        .chunks(2)
        .map(|pair| WriteRequest::put(keyspace, &pair[0], &pair[1]))
        .collect();
    for outcome in write_many(shared, session, requests).await? {
        outcome?;
    }
    Ok(())
}

/// `STRLEN key`.
pub async fn strlen(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(Frame::Integer(
        read(shared, session, &key)
            .await?
            .map_or(0, |v| v.len() as i64),
    ))
}

async fn increment(shared: &RespShared, session: &Session, key: &[u8], by: i64) -> Reply {
    let outcome = write(
        shared,
        session,
        WriteRequest::new(keyspace(session), key, Change::Increment(by)),
    )
    .await?;
    Ok(Frame::Integer(outcome.integer.unwrap_or_default()))
}

/// `INCR key`.
pub async fn incr(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    increment(shared, session, &args.bytes()?, 1).await
}

/// `DECR key`.
pub async fn decr(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    increment(shared, session, &args.bytes()?, -1).await
}

/// `INCRBY key increment`.
pub async fn incrby(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let by = parse_integer(&args.bytes()?)?;
    increment(shared, session, &key, by).await
}

/// `DECRBY key decrement`.
pub async fn decrby(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let by = parse_integer(&args.bytes()?)?;
    let negated = by
        .checked_neg()
        .ok_or(CommandError::Reply(Frame::err("decrement would overflow")))?;
    increment(shared, session, &key, negated).await
}
