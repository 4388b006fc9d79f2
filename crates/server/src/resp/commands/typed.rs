//! What the commands of Redis's data types share: applying an operation to a key's typed
//! value through its lead replica, reading the value with its versions merged, and the
//! replies of both.

use super::{keyspace, read_entry, write, Args, CommandError, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_coordinator::request::ReplicaError;
use ringkv_coordinator::request::{Change, WriteRequest};
use ringkv_core::crdt::op::{Answer, Op};
use ringkv_core::crdt::register::{format_score, parse_float};
use ringkv_core::crdt::typed::{Typed, Value};
use ringkv_core::record::DataType;

/// Applies `op` to `key`'s value; the operation's answer.
pub async fn apply(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
    op: Op,
) -> Result<Answer, CommandError> {
    let request = WriteRequest::new(keyspace(session), key, Change::Typed(op));
    let outcome = write(shared, session, request).await?;
    Ok(outcome.answer.map_or(Answer::Ok, |answer| *answer))
}

/// [`apply`], answering as Redis does.
pub async fn apply_reply(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
    op: Op,
) -> Result<Frame, CommandError> {
    Ok(answer_frame(apply(shared, session, key, op).await?))
}

/// The reply Redis gives for an operation's answer.
pub fn answer_frame(answer: Answer) -> Frame {
    match answer {
        Answer::Integer(n) => Frame::Integer(n),
        Answer::Bulk(value) => Frame::optional_bulk(value),
        Answer::Array(items) => bulks(items),
        Answer::NullArray => Frame::NullArray,
        Answer::Ok => Frame::ok(),
    }
}

/// An array of bulk strings.
pub fn bulks(items: impl IntoIterator<Item = Vec<u8>>) -> Frame {
    Frame::Array(
        items
            .into_iter()
            .map(|item| Frame::Bulk(item.into()))
            .collect(),
    )
}

/// The value `key` holds, its versions merged; `None` if absent.
pub async fn read_value(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Option<Value>, CommandError> {
    match read_entry(shared, session, key).await? {
        None => Ok(None),
        Some(entry) => Ok(Some(entry.value()?)),
    }
}

/// The value of `key` if it is of `data_type`; `None` if absent; WRONGTYPE otherwise.
pub async fn read_typed(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
    data_type: DataType,
) -> Result<Option<Typed>, CommandError> {
    match read_value(shared, session, key).await? {
        None => Ok(None),
        Some(Value::Typed(typed)) if typed.data_type() == data_type => Ok(Some(typed)),
        Some(_) => Err(ReplicaError::WrongType.into()),
    }
}

/// The optional count of `SPOP`, `LPOP`, `ZPOPMIN` and the like: `None` when absent; a
/// negative one is refused as Redis refuses it.
pub fn pop_count(args: &mut Args) -> Result<Option<u64>, CommandError> {
    if args.remaining() == 0 {
        return Ok(None);
    }
    let count = args.integer()?;
    if count < 0 {
        return Err(CommandError::Reply(Frame::err(
            "value is out of range, must be positive",
        )));
    }
    Ok(Some(count as u64))
}

/// The remaining arguments, at least one, as byte strings.
pub fn members(args: &mut Args) -> Result<Vec<Vec<u8>>, CommandError> {
    let rest = args.rest();
    if rest.is_empty() {
        return Err(CommandError::Arity(args.command));
    }
    Ok(rest.into_iter().map(|b| b.to_vec()).collect())
}

/// A score argument, as Redis reads one.
pub fn score(bytes: &[u8]) -> Result<f64, CommandError> {
    parse_float(bytes).ok_or_else(|| CommandError::Reply(Frame::err("value is not a valid float")))
}

/// A score as a reply: a double in RESP3, a bulk string in RESP2.
pub fn score_frame(score: f64) -> Frame {
    Frame::Double(format_score(score))
}

/// Members each followed by a second item (a score, a value): flat in RESP2 and, when
/// `nested`, pairs in RESP3, as Redis replies.
pub fn paired(items: Vec<(Frame, Frame)>, protocol: u8, nested: bool) -> Frame {
    if protocol >= 3 && nested {
        return Frame::Array(
            items
                .into_iter()
                .map(|(a, b)| Frame::Array(vec![a, b]))
                .collect(),
        );
    }
    Frame::Array(items.into_iter().flat_map(|(a, b)| [a, b]).collect())
}

/// `*SCAN key cursor [MATCH pattern] [COUNT count]` over `items` (each one or two replies):
/// the whole collection at once, cursor 0, as Redis answers for small collections.
pub fn scan_reply(
    mut args: Args,
    items: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<Frame, CommandError> {
    let cursor = args.text()?;
    if cursor.parse::<u64>().is_err() {
        return Err(CommandError::Reply(Frame::err("invalid cursor")));
    }
    let mut pattern = None;
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "MATCH" => pattern = Some(args.bytes()?.to_vec()),
            "COUNT" => {
                if args.integer()? < 1 {
                    return Err(CommandError::Syntax);
                }
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    let mut out = Vec::new();
    for (item, extra) in items {
        if pattern
            .as_deref()
            .is_none_or(|p| crate::resp::glob::matches(p, &item))
        {
            out.push(Frame::Bulk(item.into()));
            if let Some(extra) = extra {
                out.push(Frame::Bulk(extra.into()));
            }
        }
    }
    Ok(Frame::Array(vec![Frame::text("0"), Frame::Array(out)]))
}

/// `numkeys key [key ...] [LIMIT limit]` of `SINTERCARD` and `ZINTERCARD`: the keys and the
/// limit (0: none).
pub fn intercard_args(mut args: Args) -> Result<(Vec<Vec<u8>>, i64), CommandError> {
    let invalid = |message: &str| CommandError::Reply(Frame::err(message));
    let count = numkeys(&mut args)?;
    let mut keys = Vec::new();
    for _ in 0..count {
        let key = args
            .bytes()
            .map_err(|_| invalid("Number of keys can't be greater than number of args"))?;
        keys.push(key.to_vec());
    }
    let mut limit = 0;
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "LIMIT" if args.remaining() > 0 => {
                limit = super::parse_integer(&args.bytes()?)
                    .ok()
                    .filter(|limit| *limit >= 0)
                    .ok_or_else(|| invalid("LIMIT can't be negative"))?;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok((keys, limit))
}

/// The `numkeys` argument of a command over several keys: at least 1, with the words Redis
/// uses for each command.
pub fn numkeys(args: &mut Args) -> Result<i64, CommandError> {
    let count = super::parse_integer(&args.bytes()?).unwrap_or(0);
    if count > 0 {
        return Ok(count);
    }
    let message = match args.command {
        "zintercard" | "zunion" | "zinter" | "zdiff" | "zunionstore" | "zinterstore"
        | "zdiffstore" => format!(
            "at least 1 input key is needed for '{}' command",
            args.command
        ),
        _ => "numkeys should be greater than 0".to_owned(),
    };
    Err(CommandError::Reply(Frame::err(message)))
}

/// Picks from `len` items as `SRANDMEMBER`/`HRANDFIELD`/`ZRANDMEMBER` do: `count` distinct
/// ones (all if fewer), or with a negative count that many, repeats allowed.
pub fn random_picks(len: usize, count: i64) -> Result<Vec<usize>, CommandError> {
    // Redis refuses counts whose doubled reply length would overflow.
    if count < -(i64::MAX / 2) {
        return Err(CommandError::Reply(Frame::err("value is out of range")));
    }
    Ok(random_indexes(len, count))
}

fn random_indexes(len: usize, count: i64) -> Vec<usize> {
    use rand::seq::index::sample;
    use rand::Rng;
    if len == 0 {
        return Vec::new();
    }
    let mut rng = rand::rng();
    if count >= 0 {
        let want = (count as usize).min(len);
        return sample(&mut rng, len, want).into_vec();
    }
    (0..count.unsigned_abs().min(1 << 24))
        .map(|_| rng.random_range(0..len))
        .collect()
}
