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
