//! Hashes: maps of fields to last-writer-wins registers ([`ringkv_core::crdt::register`]),
//! whose fields are kept by an add-wins map, so fields set and deleted through different nodes
//! at once merge field by field; `HINCRBY` and `HINCRBYFLOAT` count like counters.

use super::typed::{apply_reply, bulks, members, random_picks, read_typed, scan_reply};
use super::{parse_integer, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_core::crdt::op::Op;
use ringkv_core::crdt::typed::Typed;
use ringkv_core::record::DataType;

/// The fields and values of the hash at `key`, in field order (empty if absent).
async fn read_hash(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Pairs, CommandError> {
    Ok(
        match read_typed(shared, session, key, DataType::Hash).await? {
            Some(Typed::Hash(hash)) => hash
                .iter()
                .map(|(field, value)| (field.to_vec(), value.value()))
                .collect(),
            _ => Vec::new(),
        },
    )
}

/// Fields with their values.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn field_pairs(args: &mut Args) -> Result<Pairs, CommandError> {
    let rest = args.rest();
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(CommandError::Arity(args.command));
    }
    Ok(rest
        .chunks(2)
        .map(|pair| (pair[0].to_vec(), pair[1].to_vec()))
        .collect())
}

/// `HSET key field value [field value ...]`.
pub async fn hset(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let pairs = field_pairs(&mut args)?;
    let op = Op::HashSet {
        pairs,
        only_new: false,
    };
    apply_reply(shared, session, &key, op).await
}

/// `HMSET key field value [field value ...]`.
pub async fn hmset(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    hset(shared, session, args).await?;
    Ok(Frame::ok())
}

/// `HSETNX key field value`.
pub async fn hsetnx(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let (field, value) = (args.bytes()?.to_vec(), args.bytes()?.to_vec());
    let op = Op::HashSet {
        pairs: vec![(field, value)],
        only_new: true,
    };
    apply_reply(shared, session, &key, op).await
}

/// `HGET key field`.
pub async fn hget(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let field = args.bytes()?;
    let hash = read_hash(shared, session, &key).await?;
    Ok(Frame::optional_bulk(
        hash.into_iter()
            .find(|(f, _)| f[..] == field[..])
            .map(|(_, v)| v),
    ))
}

/// `HMGET key field [field ...]`.
pub async fn hmget(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let fields = members(&mut args)?;
    let hash = read_hash(shared, session, &key).await?;
    let lookup: std::collections::HashMap<_, _> = hash.into_iter().collect();
    Ok(Frame::Array(
        fields
            .iter()
            .map(|f| Frame::optional_bulk(lookup.get(f).cloned()))
            .collect(),
    ))
}

/// `HDEL key field [field ...]`.
pub async fn hdel(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let fields = members(&mut args)?;
    apply_reply(shared, session, &key, Op::HashDelete(fields)).await
}

/// `HGETALL key`.
pub async fn hgetall(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let hash = read_hash(shared, session, &key).await?;
    Ok(Frame::Map(
        hash.into_iter()
            .map(|(f, v)| (Frame::Bulk(f.into()), Frame::Bulk(v.into())))
            .collect(),
    ))
}

/// `HKEYS key`.
pub async fn hkeys(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(bulks(
        read_hash(shared, session, &key)
            .await?
            .into_iter()
            .map(|(f, _)| f),
    ))
}

/// `HVALS key`.
pub async fn hvals(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(bulks(
        read_hash(shared, session, &key)
            .await?
            .into_iter()
            .map(|(_, v)| v),
    ))
}

/// `HLEN key`.
pub async fn hlen(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(Frame::Integer(
        read_hash(shared, session, &key).await?.len() as i64,
    ))
}

/// `HEXISTS key field`.
pub async fn hexists(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let field = args.bytes()?;
    let hash = read_hash(shared, session, &key).await?;
    Ok(Frame::Integer(i64::from(
        hash.iter().any(|(f, _)| f[..] == field[..]),
    )))
}

/// `HSTRLEN key field`.
pub async fn hstrlen(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let field = args.bytes()?;
    let hash = read_hash(shared, session, &key).await?;
    Ok(Frame::Integer(
        hash.iter()
            .find(|(f, _)| f[..] == field[..])
            .map_or(0, |(_, v)| v.len() as i64),
    ))
}

/// `HINCRBY key field increment`.
pub async fn hincrby(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let field = args.bytes()?.to_vec();
    let by = parse_integer(&args.bytes()?)?;
    apply_reply(shared, session, &key, Op::HashIncrement { field, by }).await
}

/// `HINCRBYFLOAT key field increment`.
pub async fn hincrbyfloat(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let field = args.bytes()?.to_vec();
    let by = ringkv_core::crdt::register::parse_float(&args.bytes()?)
        .ok_or_else(|| CommandError::Reply(Frame::err("value is not a valid float")))?;
    if !by.is_finite() {
        return Err(CommandError::Reply(Frame::err("value is NaN or Infinity")));
    }
    apply_reply(shared, session, &key, Op::HashIncrementFloat { field, by }).await
}

/// `HRANDFIELD key [count [WITHVALUES]]`.
pub async fn hrandfield(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let count = (args.remaining() > 0).then(|| args.integer()).transpose()?;
    let with_values = match args.remaining() {
        0 => false,
        _ if args.word()? == "WITHVALUES" => true,
        _ => return Err(CommandError::Syntax),
    };
    args.finish()?;
    let hash = read_hash(shared, session, &key).await?;
    let picks = random_picks(hash.len(), count.unwrap_or(1))?;
    let Some(_) = count else {
        return Ok(Frame::optional_bulk(
            picks.first().map(|&i| hash[i].0.clone()),
        ));
    };
    if with_values {
        let items = picks
            .into_iter()
            .map(|i| {
                let (field, value) = hash[i].clone();
                (Frame::Bulk(field.into()), Frame::Bulk(value.into()))
            })
            .collect();
        return Ok(super::typed::paired(items, session.protocol, true));
    }
    Ok(bulks(picks.into_iter().map(|i| hash[i].0.clone())))
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`.
pub async fn hscan(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let hash = read_hash(shared, session, &key).await?;
    scan_reply(args, hash.into_iter().map(|(f, v)| (f, Some(v))).collect())
}
