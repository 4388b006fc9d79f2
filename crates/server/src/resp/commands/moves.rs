//! Commands that move or copy a value to another key: RENAME, RENAMENX and COPY (within or
//! across databases). Each reads the source, writes the destination with the source's value
//! and expiry, then (RENAME) deletes the source: three coordinated steps, not one atomic
//! one. A write to either key between them can interleave; in a cluster these are
//! last-writer-wins read-modify-writes, as the README says.

use super::{keyspace, read_entry, write, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::{keyspace_of, RespShared, DATABASES};
use ringkv_coordinator::coordinator::{self, CoordinatorError};
use ringkv_coordinator::request::{Change, Condition, Entry, Expiry, ReplicaError, WriteRequest};
use ringkv_core::crdt::op::{ranked, Contents, Op};
use ringkv_core::crdt::typed::{Typed, Value};

/// The writes that copy `entry`'s value and expiry into `keyspace`/`key`, created only if
/// absent unless `replace`: a put of plain bytes; for a typed value, a replacement of the
/// destination's contents, then its expiry.
fn copy_requests(
    keyspace: &str,
    key: &[u8],
    entry: Entry,
    replace: bool,
) -> Result<Vec<WriteRequest>, CommandError> {
    let expires_at_ms = entry.winner().expires_at_ms;
    let expiry = expires_at_ms.map_or(Expiry::Never, Expiry::At);
    let (first, then) = match entry.value()? {
        Value::Bytes(value, _) => (Change::Put { value, expiry }, None),
        Value::Typed(typed) => (
            Change::Typed(Op::Replace(contents_of(typed))),
            Some(Change::Expire(expiry)),
        ),
    };
    let request = WriteRequest::new(keyspace, key, first);
    let request = if replace {
        request
    } else {
        request.when(Condition::IfAbsent)
    };
    let then = then.map(|change| WriteRequest::new(keyspace, key, change));
    Ok(std::iter::once(request).chain(then).collect())
}

/// Everything a typed value holds, to write elsewhere.
fn contents_of(typed: Typed) -> Contents {
    match typed {
        Typed::Counter(counter) => Contents::Counter(counter.value() as i64),
        Typed::Set(set) => Contents::Set(set.elements().map(<[u8]>::to_vec).collect()),
        Typed::Hash(hash) => Contents::Hash(
            hash.iter()
                .map(|(field, value)| (field.to_vec(), value.value()))
                .collect(),
        ),
        Typed::SortedSet(zset) => Contents::SortedSet(ranked(&zset)),
        Typed::List(list) => Contents::List(list),
    }
}

/// Whether a write failed only because its condition did not hold.
fn condition_failed(result: &Result<(), CoordinatorError>) -> bool {
    matches!(
        result,
        Err(CoordinatorError::Replica(
            ReplicaError::ConditionFailed { .. }
        ))
    )
}

/// RENAME (`replace`) or RENAMENX: whether the key was renamed.
async fn rename_with(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
    replace: bool,
) -> Result<bool, CommandError> {
    let (source, destination) = (args.bytes()?, args.bytes()?);
    let Some(entry) = read_entry(shared, session, &source).await? else {
        return Err(CommandError::Reply(Frame::err("no such key")));
    };
    if source == destination {
        return Ok(replace);
    }
    let mut requests = copy_requests(keyspace(session), &destination, entry, replace)?.into_iter();
    for (index, request) in requests.by_ref().enumerate() {
        let copied = write(shared, session, request).await.map(drop);
        if index == 0 && !replace && condition_failed(&copied) {
            return Ok(false);
        }
        copied?;
    }
    write(
        shared,
        session,
        WriteRequest::delete(keyspace(session), &source),
    )
    .await?;
    Ok(true)
}

/// `RENAME key newkey`.
pub async fn rename(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    rename_with(shared, session, args, true).await?;
    Ok(Frame::ok())
}

/// `RENAMENX key newkey`: 1 if renamed, 0 if `newkey` exists.
pub async fn renamenx(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    Ok(Frame::Integer(i64::from(
        rename_with(shared, session, args, false).await?,
    )))
}

/// `COPY source destination [DB destination-db] [REPLACE]`: 1 if copied.
pub async fn copy(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (source, destination) = (args.bytes()?, args.bytes()?);
    let (mut db, mut replace) = (session.db, false);
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "REPLACE" => replace = true,
            "DB" => {
                let index = args.integer()?;
                if !(0..i64::from(DATABASES)).contains(&index) {
                    return Err(CommandError::Reply(Frame::err("DB index is out of range")));
                }
                db = index as u8;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    if db == session.db && source == destination {
        return Err(CommandError::Reply(Frame::err(
            "source and destination objects are the same",
        )));
    }
    let Some(entry) = read_entry(shared, session, &source).await? else {
        return Ok(Frame::Integer(0));
    };
    let target = keyspace_of(db);
    let definition = shared.node.keyspaces.get(&target).ok_or_else(|| {
        CommandError::Reply(Frame::err(format!("keyspace {target} does not exist")))
    })?;
    for (index, request) in copy_requests(&target, &destination, entry, replace)?
        .into_iter()
        .enumerate()
    {
        let request = request.conflict(definition.conflict.into());
        let copied = coordinator::write(&shared.node, &definition, request, session.consistency)
            .await
            .map(drop);
        if index == 0 && condition_failed(&copied) {
            return Ok(Frame::Integer(0));
        }
        copied?;
    }
    Ok(Frame::Integer(1))
}

/// Marks a `DUMP` payload of this release.
const DUMP_MAGIC: &[u8] = b"RKV1";

/// `DUMP key`: the value as an opaque payload for `RESTORE` (ringkv's own format, checked by
/// a CRC32C; not Redis's RDB encoding), nil if absent.
pub async fn dump(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    args.finish()?;
    let Some(entry) = read_entry(shared, session, &key).await? else {
        return Ok(Frame::Null);
    };
    let (kind, bytes) = match entry.value()? {
        Value::Bytes(bytes, _) => (ringkv_core::record::ValueKind::BYTES, bytes),
        Value::Typed(typed) => (typed.kind(), typed.encode()),
    };
    let mut payload = DUMP_MAGIC.to_vec();
    payload.push(kind.to_byte());
    payload.extend_from_slice(&bytes);
    let checksum = crc32c::crc32c(&payload);
    payload.extend_from_slice(&checksum.to_le_bytes());
    Ok(Frame::Bulk(payload.into()))
}

/// The value a `DUMP` payload holds, once its checksum and contents are checked.
fn undump(payload: &[u8]) -> Option<Value> {
    let body_len = payload.len().checked_sub(4)?;
    let (body, checksum) = payload.split_at(body_len);
    if crc32c::crc32c(body).to_le_bytes() != checksum {
        return None;
    }
    let rest = body.strip_prefix(DUMP_MAGIC)?;
    let (&kind, bytes) = rest.split_first()?;
    let kind = ringkv_core::record::ValueKind::from_byte(kind)?;
    if kind.is_bytes() {
        return Some(Value::Bytes(bytes.to_vec(), Default::default()));
    }
    Typed::decode(kind, bytes).ok().map(Value::Typed)
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME seconds] [FREQ frequency]`.
pub async fn restore(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let ttl = args.integer()?;
    let payload = args.bytes()?;
    let (mut replace, mut absolute) = (false, false);
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "REPLACE" => replace = true,
            "ABSTTL" => absolute = true,
            "IDLETIME" | "FREQ" => {
                if args.integer()? < 0 {
                    return Err(CommandError::Reply(Frame::err(
                        "Invalid IDLETIME or FREQ value, must be >= 0",
                    )));
                }
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    if ttl < 0 {
        return Err(CommandError::Reply(Frame::err(
            "Invalid TTL value, must be >= 0",
        )));
    }
    let value = undump(&payload).ok_or_else(|| {
        CommandError::Reply(Frame::err("DUMP payload version or checksum are wrong"))
    })?;
    let now_ms = shared.node.now_ms();
    let expires_at_ms = match (ttl, absolute) {
        (0, _) => None,
        (at, true) => Some(at as u64),
        (ms, false) => Some(now_ms.saturating_add(ms as u64)),
    };
    if expires_at_ms.is_some_and(|at| at <= now_ms) {
        // Already expired: Redis deletes the key instead.
        write(
            shared,
            session,
            WriteRequest::delete(keyspace(session), &key),
        )
        .await?;
        return Ok(Frame::ok());
    }
    let expiry = expires_at_ms.map_or(Expiry::Never, Expiry::At);
    let (first, then) = match value {
        Value::Bytes(value, _) => (Change::Put { value, expiry }, None),
        Value::Typed(typed) => (
            Change::Typed(Op::Replace(contents_of(typed))),
            Some(Change::Expire(expiry)),
        ),
    };
    let request = WriteRequest::new(keyspace(session), &key, first);
    let request = if replace {
        request
    } else {
        request.when(Condition::IfAbsent)
    };
    let written = write(shared, session, request).await.map(drop);
    if condition_failed(&written) {
        return Err(CommandError::Reply(Frame::Error(
            "BUSYKEY Target key name already exists.".into(),
        )));
    }
    written?;
    if let Some(change) = then {
        write(
            shared,
            session,
            WriteRequest::new(keyspace(session), &key, change),
        )
        .await?;
    }
    Ok(Frame::ok())
}
