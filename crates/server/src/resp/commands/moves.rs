//! Commands that move or copy a value to another key: RENAME, RENAMENX and COPY (within or
//! across databases). Each reads the source, writes the destination with the source's value
//! and expiry, then (RENAME) deletes the source: three coordinated steps, not one atomic
//! one. A write to either key between them can interleave; in a cluster these are
//! last-writer-wins read-modify-writes, as the README says.

use super::{keyspace, read_entry, write, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::{keyspace_of, RespShared, DATABASES};
use ringkv_coordinator::coordinator::{self, CoordinatorError};
use ringkv_coordinator::request::{Change, Condition, Expiry, ReplicaError, WriteRequest};

/// A put of `value` with `expires_at_ms` (or none) into `keyspace`/`key`, created only if
/// absent unless `replace`.
fn copy_request(
    keyspace: &str,
    key: &[u8],
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
    replace: bool,
) -> WriteRequest {
    let expiry = expires_at_ms.map_or(Expiry::Never, Expiry::At);
    let request = WriteRequest::new(keyspace, key, Change::Put { value, expiry });
    if replace {
        request
    } else {
        request.when(Condition::IfAbsent)
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
    let value = entry.into_winner();
    let request = copy_request(
        keyspace(session),
        &destination,
        value.value,
        value.expires_at_ms,
        replace,
    );
    let copied = write(shared, session, request).await.map(drop);
    if !replace && condition_failed(&copied) {
        return Ok(false);
    }
    copied?;
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
    let value = entry.into_winner();
    let request = copy_request(
        &target,
        &destination,
        value.value,
        value.expires_at_ms,
        replace,
    )
    .conflict(definition.conflict.into());
    let copied = coordinator::write(&shared.node, &definition, request, session.consistency)
        .await
        .map(drop);
    if condition_failed(&copied) {
        return Ok(Frame::Integer(0));
    }
    copied?;
    Ok(Frame::Integer(1))
}
