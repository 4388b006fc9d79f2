//! Lists. A list is one value replaced whole by each write its key's lead applies, so
//! writes through one lead never lose each other; writes led by different nodes at once (a
//! partition) resolve by last writer wins, as a string's do. They are not a CRDT.

use super::typed::{apply, apply_reply, bulks, members, read_typed};
use super::{parse_integer, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_core::crdt::op::Op;
use ringkv_core::crdt::typed::Typed;
use ringkv_core::record::DataType;

async fn read_list(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Vec<Vec<u8>>, CommandError> {
    Ok(
        match read_typed(shared, session, key, DataType::List).await? {
            Some(Typed::List(list)) => list,
            _ => Vec::new(),
        },
    )
}

async fn push(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
    left: bool,
    only_existing: bool,
) -> Reply {
    let key = args.bytes()?;
    let values = members(&mut args)?;
    let op = Op::ListPush {
        left,
        values,
        only_existing,
    };
    apply_reply(shared, session, &key, op).await
}

/// `LPUSH key element [element ...]`.
pub async fn lpush(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    push(shared, session, args, true, false).await
}

/// `RPUSH key element [element ...]`.
pub async fn rpush(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    push(shared, session, args, false, false).await
}

/// `LPUSHX key element [element ...]`.
pub async fn lpushx(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    push(shared, session, args, true, true).await
}

/// `RPUSHX key element [element ...]`.
pub async fn rpushx(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    push(shared, session, args, false, true).await
}

async fn pop(shared: &RespShared, session: &Session, mut args: Args, left: bool) -> Reply {
    let key = args.bytes()?;
    let count = super::typed::pop_count(&mut args)?;
    args.finish()?;
    // Popping a missing key writes nothing.
    if read_list(shared, session, &key).await?.is_empty() {
        return Ok(match count {
            Some(_) => Frame::NullArray,
            None => Frame::Null,
        });
    }
    apply_reply(shared, session, &key, Op::ListPop { left, count }).await
}

/// `LPOP key [count]`.
pub async fn lpop(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    pop(shared, session, args, true).await
}

/// `RPOP key [count]`.
pub async fn rpop(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    pop(shared, session, args, false).await
}

/// `LLEN key`.
pub async fn llen(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(Frame::Integer(
        read_list(shared, session, &key).await?.len() as i64,
    ))
}

/// `LRANGE key start stop`.
pub async fn lrange(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let (start, stop) = (
        parse_integer(&args.bytes()?)?,
        parse_integer(&args.bytes()?)?,
    );
    let list = read_list(shared, session, &key).await?;
    let len = list.len() as i64;
    let start = if start < 0 { len + start } else { start }.max(0);
    let stop = if stop < 0 { len + stop } else { stop }.min(len - 1);
    if start > stop || start >= len {
        return Ok(Frame::Array(Vec::new()));
    }
    Ok(bulks(
        list.into_iter()
            .skip(start as usize)
            .take((stop - start + 1) as usize),
    ))
}

/// `LINDEX key index`.
pub async fn lindex(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let index = parse_integer(&args.bytes()?)?;
    let list = read_list(shared, session, &key).await?;
    let at = if index < 0 {
        list.len() as i64 + index
    } else {
        index
    };
    Ok(Frame::optional_bulk(
        usize::try_from(at)
            .ok()
            .and_then(|at| list.get(at).cloned()),
    ))
}

/// `LSET key index element`.
pub async fn lset(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let index = parse_integer(&args.bytes()?)?;
    let value = args.bytes()?.to_vec();
    apply_reply(shared, session, &key, Op::ListSet { index, value }).await
}

/// `LREM key count element`.
pub async fn lrem(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let count = parse_integer(&args.bytes()?)?;
    let value = args.bytes()?.to_vec();
    if read_list(shared, session, &key).await?.is_empty() {
        return Ok(Frame::Integer(0));
    }
    apply_reply(shared, session, &key, Op::ListRemove { count, value }).await
}

/// `LTRIM key start stop`.
pub async fn ltrim(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let (start, stop) = (
        parse_integer(&args.bytes()?)?,
        parse_integer(&args.bytes()?)?,
    );
    if read_list(shared, session, &key).await?.is_empty() {
        return Ok(Frame::ok());
    }
    apply_reply(shared, session, &key, Op::ListTrim { start, stop }).await
}

/// `LINSERT key BEFORE|AFTER pivot element`.
pub async fn linsert(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let before = match args.word()?.as_str() {
        "BEFORE" => true,
        "AFTER" => false,
        _ => return Err(CommandError::Syntax),
    };
    let (pivot, value) = (args.bytes()?.to_vec(), args.bytes()?.to_vec());
    if read_list(shared, session, &key).await?.is_empty() {
        return Ok(Frame::Integer(0));
    }
    apply_reply(
        shared,
        session,
        &key,
        Op::ListInsert {
            before,
            pivot,
            value,
        },
    )
    .await
}

/// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT`: a pop, then a push (not atomic across
/// the keys).
pub async fn lmove(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (source, destination) = (args.bytes()?, args.bytes()?);
    let side = |word: String| match word.as_str() {
        "LEFT" => Ok(true),
        "RIGHT" => Ok(false),
        _ => Err(CommandError::Syntax),
    };
    let (from_left, to_left) = (side(args.word()?)?, side(args.word()?)?);
    args.finish()?;
    move_item(shared, session, &source, &destination, from_left, to_left).await
}

/// `RPOPLPUSH source destination`.
pub async fn rpoplpush(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (source, destination) = (args.bytes()?, args.bytes()?);
    args.finish()?;
    move_item(shared, session, &source, &destination, false, true).await
}

async fn move_item(
    shared: &RespShared,
    session: &Session,
    source: &[u8],
    destination: &[u8],
    from_left: bool,
    to_left: bool,
) -> Reply {
    read_list(shared, session, destination).await?;
    if read_list(shared, session, source).await?.is_empty() {
        return Ok(Frame::Null);
    }
    let popped = apply(
        shared,
        session,
        source,
        Op::ListPop {
            left: from_left,
            count: None,
        },
    )
    .await?;
    let ringkv_core::crdt::op::Answer::Bulk(Some(item)) = popped else {
        return Ok(Frame::Null);
    };
    let op = Op::ListPush {
        left: to_left,
        values: vec![item.clone()],
        only_existing: false,
    };
    apply(shared, session, destination, op).await?;
    Ok(Frame::Bulk(item.into()))
}
