//! Sets: add-wins observed-remove sets ([`ringkv_core::crdt::orset`]). Adds and removes
//! through different nodes at once merge: an add wins over a concurrent remove of the same
//! member, and a remove is never lost to a concurrent add of another.

use super::typed::{apply, apply_reply, bulks, members, random_picks, read_typed, scan_reply};
use super::{Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_core::crdt::op::{Answer, Contents, Op};
use ringkv_core::crdt::typed::Typed;
use ringkv_core::record::DataType;
use std::collections::BTreeSet;

/// The members of the set at `key` (empty if absent).
async fn read_set(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<BTreeSet<Vec<u8>>, CommandError> {
    Ok(
        match read_typed(shared, session, key, DataType::Set).await? {
            Some(Typed::Set(set)) => set.elements().map(<[u8]>::to_vec).collect(),
            _ => BTreeSet::new(),
        },
    )
}

/// `SADD key member [member ...]`.
pub async fn sadd(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let members = members(&mut args)?;
    apply_reply(shared, session, &key, Op::SetAdd(members)).await
}

/// `SREM key member [member ...]`.
pub async fn srem(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let members = members(&mut args)?;
    apply_reply(shared, session, &key, Op::SetRemove(members)).await
}

/// `SMEMBERS key`.
pub async fn smembers(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(bulks(read_set(shared, session, &key).await?))
}

/// `SISMEMBER key member`.
pub async fn sismember(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let member = args.bytes()?;
    let set = read_set(shared, session, &key).await?;
    Ok(Frame::Integer(i64::from(set.contains(member.as_ref()))))
}

/// `SMISMEMBER key member [member ...]`.
pub async fn smismember(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let asked = members(&mut args)?;
    let set = read_set(shared, session, &key).await?;
    Ok(Frame::Array(
        asked
            .iter()
            .map(|m| Frame::Integer(i64::from(set.contains(m))))
            .collect(),
    ))
}

/// `SCARD key`.
pub async fn scard(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(Frame::Integer(
        read_set(shared, session, &key).await?.len() as i64
    ))
}

/// `SPOP key [count]`.
pub async fn spop(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let count = super::typed::pop_count(&mut args)?;
    args.finish()?;
    let op = Op::SetPop {
        count,
        seed: rand::random(),
    };
    match apply(shared, session, &key, op).await? {
        // A missing key: nil, or an empty array when a count was given.
        Answer::NullArray => Ok(Frame::Array(Vec::new())),
        answer => Ok(super::typed::answer_frame(answer)),
    }
}

/// `SRANDMEMBER key [count]`.
pub async fn srandmember(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let count = (args.remaining() > 0).then(|| args.integer()).transpose()?;
    args.finish()?;
    let set: Vec<Vec<u8>> = read_set(shared, session, &key).await?.into_iter().collect();
    let picks = random_picks(set.len(), count.unwrap_or(1))?;
    let mut chosen = picks.into_iter().map(|i| set[i].clone());
    Ok(match count {
        None => Frame::optional_bulk(chosen.next()),
        Some(_) => bulks(chosen),
    })
}

/// How several sets combine.
#[derive(Clone, Copy)]
enum Combine {
    Inter,
    Union,
    Diff,
}

async fn combine(
    shared: &RespShared,
    session: &Session,
    keys: &[Vec<u8>],
    how: Combine,
) -> Result<BTreeSet<Vec<u8>>, CommandError> {
    let mut sets = Vec::with_capacity(keys.len());
    for key in keys {
        sets.push(read_set(shared, session, key).await?);
    }
    let mut sets = sets.into_iter();
    let mut result = sets.next().unwrap_or_default();
    for set in sets {
        match how {
            Combine::Inter => result.retain(|m| set.contains(m)),
            Combine::Union => result.extend(set),
            Combine::Diff => result.retain(|m| !set.contains(m)),
        }
    }
    Ok(result)
}

async fn combine_reply(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
    how: Combine,
) -> Reply {
    let keys = members(&mut args)?;
    Ok(bulks(combine(shared, session, &keys, how).await?))
}

async fn combine_store(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
    how: Combine,
) -> Reply {
    let destination = args.bytes()?;
    let keys = members(&mut args)?;
    let result = combine(shared, session, &keys, how).await?;
    let len = result.len() as i64;
    let contents = Contents::Set(result.into_iter().collect());
    apply(shared, session, &destination, Op::Replace(contents)).await?;
    Ok(Frame::Integer(len))
}

/// `SINTER key [key ...]`.
pub async fn sinter(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_reply(shared, session, args, Combine::Inter).await
}

/// `SUNION key [key ...]`.
pub async fn sunion(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_reply(shared, session, args, Combine::Union).await
}

/// `SDIFF key [key ...]`.
pub async fn sdiff(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_reply(shared, session, args, Combine::Diff).await
}

/// `SINTERSTORE destination key [key ...]`.
pub async fn sinterstore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_store(shared, session, args, Combine::Inter).await
}

/// `SUNIONSTORE destination key [key ...]`.
pub async fn sunionstore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_store(shared, session, args, Combine::Union).await
}

/// `SDIFFSTORE destination key [key ...]`.
pub async fn sdiffstore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_store(shared, session, args, Combine::Diff).await
}

/// `SINTERCARD numkeys key [key ...] [LIMIT limit]`.
pub async fn sintercard(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    let (keys, limit) = super::typed::intercard_args(args)?;
    let len = combine(shared, session, &keys, Combine::Inter).await?.len() as i64;
    Ok(Frame::Integer(if limit > 0 { len.min(limit) } else { len }))
}

/// `SMOVE source destination member`: a remove, then an add (not atomic across the keys).
pub async fn smove(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (source, destination, member) = (args.bytes()?, args.bytes()?, args.bytes()?);
    args.finish()?;
    // Both keys must be sets (or absent) before anything moves.
    read_set(shared, session, &destination).await?;
    if !read_set(shared, session, &source)
        .await?
        .contains(member.as_ref())
    {
        return Ok(Frame::Integer(0));
    }
    let removed = apply(
        shared,
        session,
        &source,
        Op::SetRemove(vec![member.to_vec()]),
    )
    .await?;
    if removed != Answer::Integer(1) {
        return Ok(Frame::Integer(0));
    }
    apply(
        shared,
        session,
        &destination,
        Op::SetAdd(vec![member.to_vec()]),
    )
    .await?;
    Ok(Frame::Integer(1))
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`.
pub async fn sscan(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let set = read_set(shared, session, &key).await?;
    scan_reply(args, set.into_iter().map(|m| (m, None)).collect())
}
