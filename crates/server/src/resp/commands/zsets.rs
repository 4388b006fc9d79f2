//! Sorted sets: add-wins maps of members to last-writer-wins scores
//! ([`ringkv_core::crdt::register::Score`]); `ZINCRBY` and `ZADD INCR` count like counters.
//! Orderings and ranges are computed on the merged value as each command reads it.

use super::typed::{
    apply, apply_reply, members, paired, random_picks, read_typed, read_value, scan_reply, score,
    score_frame,
};
use super::{Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_coordinator::request::ReplicaError;
use ringkv_core::crdt::op::{ranked, AddFlags, Answer, Contents, Op};
use ringkv_core::crdt::typed::{Typed, Value};
use ringkv_core::record::DataType;

/// Members with scores, lowest first (ties by member).
type Ranked = Vec<(f64, Vec<u8>)>;

async fn read_zset(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Ranked, CommandError> {
    Ok(
        match read_typed(shared, session, key, DataType::SortedSet).await? {
            Some(Typed::SortedSet(zset)) => ranked(&zset),
            _ => Vec::new(),
        },
    )
}

fn err(message: &str) -> CommandError {
    CommandError::Reply(Frame::err(message))
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
pub async fn zadd(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let mut rest = args.rest().into_iter().peekable();
    let mut flags = AddFlags::default();
    while let Some(word) = rest.peek() {
        match word.to_ascii_uppercase().as_slice() {
            b"NX" => flags.nx = true,
            b"XX" => flags.xx = true,
            b"GT" => flags.gt = true,
            b"LT" => flags.lt = true,
            b"CH" => flags.ch = true,
            b"INCR" => flags.incr = true,
            _ => break,
        }
        rest.next();
    }
    let rest: Vec<_> = rest.collect();
    if flags.nx && flags.xx {
        return Err(err("XX and NX options at the same time are not compatible"));
    }
    if (flags.gt && flags.lt) || (flags.nx && (flags.gt || flags.lt)) {
        return Err(err(
            "GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return Err(CommandError::Syntax);
    }
    if flags.incr && rest.len() != 2 {
        return Err(err("INCR option supports a single increment-element pair"));
    }
    let mut pairs = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        pairs.push((score(&pair[0])?, pair[1].to_vec()));
    }
    let answer = apply(shared, session, &key, Op::SortedAdd { pairs, flags }).await?;
    Ok(score_answer(answer))
}

/// `ZINCRBY key increment member`.
pub async fn zincrby(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let by = score(&args.bytes()?)?;
    let member = args.bytes()?.to_vec();
    let flags = AddFlags {
        incr: true,
        ..AddFlags::default()
    };
    let op = Op::SortedAdd {
        pairs: vec![(by, member)],
        flags,
    };
    Ok(score_answer(apply(shared, session, &key, op).await?))
}

/// A score the lead answered as text, as a double reply.
fn score_answer(answer: Answer) -> Frame {
    match answer {
        Answer::Bulk(Some(score)) => Frame::Double(String::from_utf8_lossy(&score).into_owned()),
        other => super::typed::answer_frame(other),
    }
}

/// Members with their scores: flat in RESP2, pairs in RESP3.
fn scored(members: Ranked, protocol: u8) -> Frame {
    let items = members
        .into_iter()
        .map(|(score, member)| (Frame::Bulk(member.into()), score_frame(score)))
        .collect();
    paired(items, protocol, true)
}

/// `ZREM key member [member ...]`.
pub async fn zrem(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let members = members(&mut args)?;
    apply_reply(shared, session, &key, Op::SortedRemove(members)).await
}

/// `ZCARD key`.
pub async fn zcard(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    Ok(Frame::Integer(
        read_zset(shared, session, &key).await?.len() as i64,
    ))
}

/// `ZSCORE key member`.
pub async fn zscore(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let member = args.bytes()?;
    let zset = read_zset(shared, session, &key).await?;
    Ok(zset
        .iter()
        .find(|(_, m)| m[..] == member[..])
        .map_or(Frame::Null, |(s, _)| score_frame(*s)))
}

/// `ZMSCORE key member [member ...]`.
pub async fn zmscore(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let asked = members(&mut args)?;
    let zset = read_zset(shared, session, &key).await?;
    Ok(Frame::Array(
        asked
            .iter()
            .map(|member| {
                zset.iter()
                    .find(|(_, m)| m == member)
                    .map_or(Frame::Null, |(s, _)| score_frame(*s))
            })
            .collect(),
    ))
}

/// `ZRANK key member` and `ZREVRANK`.
async fn rank(shared: &RespShared, session: &Session, mut args: Args, rev: bool) -> Reply {
    let key = args.bytes()?;
    let member = args.bytes()?;
    args.finish()?;
    let zset = read_zset(shared, session, &key).await?;
    Ok(match zset.iter().position(|(_, m)| m[..] == member[..]) {
        None => Frame::Null,
        Some(at) if rev => Frame::Integer((zset.len() - 1 - at) as i64),
        Some(at) => Frame::Integer(at as i64),
    })
}

/// `ZRANK key member`.
pub async fn zrank(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    rank(shared, session, args, false).await
}

/// `ZREVRANK key member`.
pub async fn zrevrank(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    rank(shared, session, args, true).await
}

/// One end of a score range.
#[derive(Clone, Copy)]
struct ScoreBound {
    value: f64,
    exclusive: bool,
}

impl ScoreBound {
    fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        let (exclusive, text) = match bytes.strip_prefix(b"(") {
            Some(rest) => (true, rest),
            None => (false, bytes),
        };
        let value = ringkv_core::crdt::register::parse_float(text)
            .ok_or_else(|| err("min or max is not a float"))?;
        Ok(Self { value, exclusive })
    }

    fn below(&self, score: f64) -> bool {
        if self.exclusive {
            self.value < score
        } else {
            self.value <= score
        }
    }

    fn above(&self, score: f64) -> bool {
        if self.exclusive {
            score < self.value
        } else {
            score <= self.value
        }
    }
}

/// One end of a lexicographic range.
#[derive(Clone)]
enum LexBound {
    Lowest,
    Highest,
    Inclusive(Vec<u8>),
    Exclusive(Vec<u8>),
}

impl LexBound {
    fn parse(bytes: &[u8]) -> Result<Self, CommandError> {
        match bytes {
            b"-" => Ok(LexBound::Lowest),
            b"+" => Ok(LexBound::Highest),
            [b'[', rest @ ..] => Ok(LexBound::Inclusive(rest.to_vec())),
            [b'(', rest @ ..] => Ok(LexBound::Exclusive(rest.to_vec())),
            _ => Err(err("min or max not valid string range item")),
        }
    }

    fn below(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Lowest => true,
            LexBound::Highest => false,
            LexBound::Inclusive(bound) => bound.as_slice() <= member,
            LexBound::Exclusive(bound) => bound.as_slice() < member,
        }
    }

    fn above(&self, member: &[u8]) -> bool {
        match self {
            LexBound::Lowest => false,
            LexBound::Highest => true,
            LexBound::Inclusive(bound) => member <= bound.as_slice(),
            LexBound::Exclusive(bound) => member < bound.as_slice(),
        }
    }
}

/// What a range selects by.
enum RangeBy {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

/// A parsed range query.
struct Range {
    by: RangeBy,
    rev: bool,
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

impl Range {
    /// The members selected, in the order of the reply.
    fn select(&self, mut zset: Ranked) -> Ranked {
        if self.rev {
            zset.reverse();
        }
        let selected: Ranked = match &self.by {
            RangeBy::Rank(start, stop) => {
                let len = zset.len() as i64;
                let start = if *start < 0 { len + start } else { *start }.max(0);
                let stop = if *stop < 0 { len + stop } else { *stop }.min(len - 1);
                if start > stop || start >= len {
                    return Vec::new();
                }
                zset.drain(start as usize..=stop as usize).collect()
            }
            RangeBy::Score(min, max) => zset
                .into_iter()
                .filter(|(s, _)| min.below(*s) && max.above(*s))
                .collect(),
            RangeBy::Lex(min, max) => zset
                .into_iter()
                .filter(|(_, m)| min.below(m) && max.above(m))
                .collect(),
        };
        match self.limit {
            None => selected,
            Some((offset, _)) if offset < 0 => Vec::new(),
            Some((offset, count)) => {
                let taken = selected.into_iter().skip(offset as usize);
                if count < 0 {
                    taken.collect()
                } else {
                    taken.take(count as usize).collect()
                }
            }
        }
    }

    fn reply(&self, selected: Ranked, protocol: u8) -> Frame {
        if !self.with_scores {
            return Frame::Array(
                selected
                    .into_iter()
                    .map(|(_, member)| Frame::Bulk(member.into()))
                    .collect(),
            );
        }
        scored(selected, protocol)
    }
}

/// Which form of range command is parsed.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    /// `ZRANGE` (and `ZRANGESTORE`): the kind and direction come as options.
    General,
    ByScore {
        rev: bool,
    },
    ByLex {
        rev: bool,
    },
    ByRank {
        rev: bool,
    },
}

/// Parses `min max [options]` of a range command of `form`.
fn parse_range(args: &mut Args, form: Form) -> Result<Range, CommandError> {
    let (first, second) = (args.bytes()?, args.bytes()?);
    let (mut by_score, mut by_lex, mut rev) = match form {
        Form::General => (false, false, false),
        Form::ByScore { rev } => (true, false, rev),
        Form::ByLex { rev } => (false, true, rev),
        Form::ByRank { rev } => (false, false, rev),
    };
    let (mut limit, mut with_scores) = (None, false);
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "BYSCORE" if form == Form::General => by_score = true,
            "BYLEX" if form == Form::General => by_lex = true,
            "REV" if form == Form::General => rev = true,
            "WITHSCORES" if !matches!(form, Form::ByLex { .. }) => with_scores = true,
            "LIMIT" if !matches!(form, Form::ByRank { .. }) => {
                limit = Some((args.integer()?, args.integer()?));
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    if by_score && by_lex {
        return Err(CommandError::Syntax);
    }
    if limit.is_some() && !by_score && !by_lex {
        return Err(err(
            "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    if with_scores && by_lex {
        return Err(err(
            "syntax error, WITHSCORES not supported in combination with BYLEX",
        ));
    }
    // Reversed ranges name the high end first.
    let (low, high) = if rev && (by_score || by_lex) {
        (&second, &first)
    } else {
        (&first, &second)
    };
    let by = if by_score {
        RangeBy::Score(ScoreBound::parse(low)?, ScoreBound::parse(high)?)
    } else if by_lex {
        RangeBy::Lex(LexBound::parse(low)?, LexBound::parse(high)?)
    } else {
        RangeBy::Rank(
            super::parse_integer(&first)?,
            super::parse_integer(&second)?,
        )
    };
    // A reversed score or lex range walks from the high end.
    Ok(Range {
        by,
        rev,
        limit,
        with_scores,
    })
}

async fn range_reply(shared: &RespShared, session: &Session, mut args: Args, form: Form) -> Reply {
    let key = args.bytes()?;
    let range = parse_range(&mut args, form)?;
    let zset = read_zset(shared, session, &key).await?;
    Ok(range.reply(range.select(zset), session.protocol))
}

/// `ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]`.
pub async fn zrange(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    range_reply(shared, session, args, Form::General).await
}

/// `ZREVRANGE key start stop [WITHSCORES]`.
pub async fn zrevrange(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    range_reply(shared, session, args, Form::ByRank { rev: true }).await
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`.
pub async fn zrangebyscore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    range_reply(shared, session, args, Form::ByScore { rev: false }).await
}

/// `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`.
pub async fn zrevrangebyscore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    range_reply(shared, session, args, Form::ByScore { rev: true }).await
}

/// `ZRANGEBYLEX key min max [LIMIT offset count]`.
pub async fn zrangebylex(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    range_reply(shared, session, args, Form::ByLex { rev: false }).await
}

/// `ZREVRANGEBYLEX key max min [LIMIT offset count]`.
pub async fn zrevrangebylex(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    range_reply(shared, session, args, Form::ByLex { rev: true }).await
}

/// `ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]`.
pub async fn zrangestore(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let destination = args.bytes()?;
    let key = args.bytes()?;
    let range = parse_range(&mut args, Form::General)?;
    if range.with_scores {
        return Err(CommandError::Syntax);
    }
    let selected = range.select(read_zset(shared, session, &key).await?);
    store(shared, session, &destination, selected).await
}

/// Replaces `destination` with `members` (deleting it when there are none).
async fn store(
    shared: &RespShared,
    session: &Session,
    destination: &[u8],
    members: Ranked,
) -> Reply {
    let len = members.len() as i64;
    apply(
        shared,
        session,
        destination,
        Op::Replace(Contents::SortedSet(members)),
    )
    .await?;
    Ok(Frame::Integer(len))
}

/// `ZCOUNT key min max`.
pub async fn zcount(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let (min, max) = (
        ScoreBound::parse(&args.bytes()?)?,
        ScoreBound::parse(&args.bytes()?)?,
    );
    let zset = read_zset(shared, session, &key).await?;
    Ok(Frame::Integer(
        zset.iter()
            .filter(|(s, _)| min.below(*s) && max.above(*s))
            .count() as i64,
    ))
}

/// `ZLEXCOUNT key min max`.
pub async fn zlexcount(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let (min, max) = (
        LexBound::parse(&args.bytes()?)?,
        LexBound::parse(&args.bytes()?)?,
    );
    let zset = read_zset(shared, session, &key).await?;
    Ok(Frame::Integer(
        zset.iter()
            .filter(|(_, m)| min.below(m) && max.above(m))
            .count() as i64,
    ))
}

async fn remove_range(shared: &RespShared, session: &Session, mut args: Args, form: Form) -> Reply {
    let key = args.bytes()?;
    let (first, second) = (args.bytes()?, args.bytes()?);
    args.finish()?;
    let by = match form {
        Form::ByScore { .. } => {
            RangeBy::Score(ScoreBound::parse(&first)?, ScoreBound::parse(&second)?)
        }
        Form::ByLex { .. } => RangeBy::Lex(LexBound::parse(&first)?, LexBound::parse(&second)?),
        _ => RangeBy::Rank(
            super::parse_integer(&first)?,
            super::parse_integer(&second)?,
        ),
    };
    let range = Range {
        by,
        rev: false,
        limit: None,
        with_scores: false,
    };
    let doomed: Vec<Vec<u8>> = range
        .select(read_zset(shared, session, &key).await?)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    if doomed.is_empty() {
        return Ok(Frame::Integer(0));
    }
    apply_reply(shared, session, &key, Op::SortedRemove(doomed)).await
}

/// `ZREMRANGEBYSCORE key min max`.
pub async fn zremrangebyscore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    remove_range(shared, session, args, Form::ByScore { rev: false }).await
}

/// `ZREMRANGEBYLEX key min max`.
pub async fn zremrangebylex(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    remove_range(shared, session, args, Form::ByLex { rev: false }).await
}

/// `ZREMRANGEBYRANK key start stop`.
pub async fn zremrangebyrank(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    remove_range(shared, session, args, Form::ByRank { rev: false }).await
}

/// `ZPOPMIN key [count]` and `ZPOPMAX`.
async fn pop(shared: &RespShared, session: &Session, mut args: Args, max: bool) -> Reply {
    let key = args.bytes()?;
    let count = super::typed::pop_count(&mut args)?;
    args.finish()?;
    let popped = pop_members(shared, session, &key, max, count.unwrap_or(1)).await?;
    // With a count, RESP3 nests the pairs; without, one flat pair.
    let items = popped
        .into_iter()
        .map(|(score, member)| (Frame::Bulk(member.into()), score_frame(score)))
        .collect();
    Ok(paired(items, session.protocol, count.is_some()))
}

/// Pops up to `count` members from the low (or `max`: high) end; nothing is written when
/// there is nothing to pop.
async fn pop_members(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
    max: bool,
    count: u64,
) -> Result<Ranked, CommandError> {
    if read_zset(shared, session, key).await?.is_empty() || count == 0 {
        return Ok(Vec::new());
    }
    let answer = apply(shared, session, key, Op::SortedPop { max, count }).await?;
    let Answer::Array(flat) = answer else {
        return Ok(Vec::new());
    };
    Ok(flat
        .chunks(2)
        .map(|pair| {
            let score = ringkv_core::crdt::register::parse_float(&pair[1]).unwrap_or(0.0);
            (score, pair[0].clone())
        })
        .collect())
}

/// `ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]`: pops from the first non-empty key.
pub async fn zmpop(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    let request = parse_mpop(args, false)?;
    Ok(mpop(shared, session, &request)
        .await?
        .unwrap_or(Frame::NullArray))
}

/// What `ZMPOP` and `BZMPOP` ask.
struct Mpop {
    keys: Vec<bytes::Bytes>,
    max: bool,
    count: u64,
    timeout_ms: u64,
}

fn parse_mpop(mut args: Args, blocking: bool) -> Result<Mpop, CommandError> {
    let timeout_ms = if blocking {
        timeout_ms(&args.bytes()?)?
    } else {
        0
    };
    let count = super::typed::numkeys(&mut args)?;
    let mut keys = Vec::new();
    for _ in 0..count {
        keys.push(args.bytes().map_err(|_| CommandError::Syntax)?);
    }
    let max = match args.word()?.as_str() {
        "MIN" => false,
        "MAX" => true,
        _ => return Err(CommandError::Syntax),
    };
    let mut pop_count = 1;
    let mut counted = false;
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "COUNT" if !counted && args.remaining() > 0 => {
                counted = true;
                let n = super::parse_integer(&args.bytes()?).unwrap_or(0);
                if n <= 0 {
                    return Err(err("count should be greater than 0"));
                }
                pop_count = n as u64;
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(Mpop {
        keys,
        max,
        count: pop_count,
        timeout_ms,
    })
}

async fn mpop(
    shared: &RespShared,
    session: &Session,
    request: &Mpop,
) -> Result<Option<Frame>, CommandError> {
    for key in &request.keys {
        let popped = pop_members(shared, session, key, request.max, request.count).await?;
        if popped.is_empty() {
            continue;
        }
        let members = scored(popped, session.protocol);
        let members = match members {
            // ZMPOP nests the pairs in RESP2 too.
            Frame::Array(flat) if session.protocol < 3 => Frame::Array(
                flat.chunks(2)
                    .map(|pair| Frame::Array(pair.to_vec()))
                    .collect(),
            ),
            nested => nested,
        };
        return Ok(Some(Frame::Array(vec![Frame::Bulk(key.clone()), members])));
    }
    Ok(None)
}

/// A blocking command's timeout in seconds (fractions allowed), as milliseconds; 0: forever.
fn timeout_ms(bytes: &[u8]) -> Result<u64, CommandError> {
    let seconds = ringkv_core::crdt::register::parse_float(bytes)
        .filter(|s| s.is_finite())
        .ok_or_else(|| err("timeout is not a float or out of range"))?;
    if seconds < 0.0 {
        return Err(err("timeout is negative"));
    }
    Ok((seconds * 1000.0) as u64)
}

/// Runs `attempt` until it finds something or `timeout_ms` passes (0: no limit, until the
/// node stops), checking every 10 ms: how the blocking pops wait, without the wake-ups Redis
/// has. The connection counts as blocked meanwhile.
async fn poll<F, Fut>(
    shared: &RespShared,
    timeout_ms: u64,
    mut attempt: F,
) -> Result<Option<Frame>, CommandError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Frame>, CommandError>>,
{
    use std::sync::atomic::Ordering;
    if let Some(found) = attempt().await? {
        return Ok(Some(found));
    }
    let deadline = (timeout_ms > 0)
        .then(|| std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms));
    /// Counts the connection as blocked while alive, however the wait ends.
    struct Blocked<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Blocked<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    shared.blocked.fetch_add(1, Ordering::Relaxed);
    let _blocked = Blocked(&shared.blocked);
    async {
        loop {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d)
                || shared.stopping.load(Ordering::Relaxed)
            {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Some(found) = attempt().await? {
                return Ok(Some(found));
            }
        }
    }
    .await
}

/// `BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]`.
pub async fn bzmpop(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    let request = parse_mpop(args, true)?;
    let session = &*session;
    let found = poll(shared, request.timeout_ms, || {
        mpop(shared, session, &request)
    })
    .await?;
    Ok(found.unwrap_or(Frame::NullArray))
}

/// `BZPOPMIN key [key ...] timeout` and `BZPOPMAX`.
async fn blocking_pop(shared: &RespShared, session: &Session, mut args: Args, max: bool) -> Reply {
    let mut all = args.rest();
    let timeout = all.pop().ok_or(CommandError::Syntax)?;
    let timeout_ms = timeout_ms(&timeout)?;
    let found = poll(shared, timeout_ms, || async {
        for key in &all {
            let popped = pop_members(shared, session, key, max, 1).await?;
            if let Some((score, member)) = popped.into_iter().next() {
                return Ok(Some(Frame::Array(vec![
                    Frame::Bulk(key.clone()),
                    Frame::Bulk(member.into()),
                    score_frame(score),
                ])));
            }
        }
        Ok(None)
    })
    .await?;
    Ok(found.unwrap_or(Frame::NullArray))
}

/// `BZPOPMIN key [key ...] timeout`.
pub async fn bzpopmin(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    blocking_pop(shared, session, args, false).await
}

/// `BZPOPMAX key [key ...] timeout`.
pub async fn bzpopmax(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    blocking_pop(shared, session, args, true).await
}

/// `ZPOPMIN key [count]`.
pub async fn zpopmin(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    pop(shared, session, args, false).await
}

/// `ZPOPMAX key [count]`.
pub async fn zpopmax(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    pop(shared, session, args, true).await
}

/// `ZRANDMEMBER key [count [WITHSCORES]]`.
pub async fn zrandmember(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let count = (args.remaining() > 0).then(|| args.integer()).transpose()?;
    let with_scores = match args.remaining() {
        0 => false,
        _ if args.word()? == "WITHSCORES" => true,
        _ => return Err(CommandError::Syntax),
    };
    args.finish()?;
    let zset = read_zset(shared, session, &key).await?;
    let picks = random_picks(zset.len(), count.unwrap_or(1))?;
    let Some(_) = count else {
        return Ok(Frame::optional_bulk(
            picks.first().map(|&i| zset[i].1.clone()),
        ));
    };
    let chosen = picks.into_iter().map(|i| zset[i].clone()).collect();
    if with_scores {
        return Ok(scored(chosen, session.protocol));
    }
    Ok(Frame::Array(
        chosen
            .into_iter()
            .map(|(_, member)| Frame::Bulk(member.into()))
            .collect(),
    ))
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`.
pub async fn zscan(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let zset = read_zset(shared, session, &key).await?;
    let items = zset
        .into_iter()
        .map(|(s, m)| {
            (
                m,
                Some(ringkv_core::crdt::register::format_score(s).into_bytes()),
            )
        })
        .collect();
    scan_reply(args, items)
}

/// How `ZUNIONSTORE` and its kin combine the scores of a member in several inputs.
#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// How several sorted sets (or sets, whose members score 1) combine.
#[derive(Clone, Copy, PartialEq)]
enum SetOp {
    Union,
    Inter,
    Diff,
}

/// An input of a combination: a sorted set, a set (scores 1), or nothing.
async fn read_input(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Ranked, CommandError> {
    Ok(match read_value(shared, session, key).await? {
        None => Vec::new(),
        Some(Value::Typed(Typed::SortedSet(zset))) => ranked(&zset),
        Some(Value::Typed(Typed::Set(set))) => set.elements().map(|m| (1.0, m.to_vec())).collect(),
        Some(_) => return Err(ReplicaError::WrongType.into()),
    })
}

/// `numkeys key [key ...] [WEIGHTS w ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]`, combined.
async fn combine(
    shared: &RespShared,
    session: &Session,
    args: &mut Args,
    op: SetOp,
    allow_with_scores: bool,
) -> Result<(Ranked, bool), CommandError> {
    let count = super::typed::numkeys(args)?;
    let mut keys = Vec::new();
    for _ in 0..count {
        keys.push(args.bytes().map_err(|_| CommandError::Syntax)?);
    }
    let mut weights = vec![1.0; keys.len()];
    let (mut aggregate, mut with_scores) = (Aggregate::Sum, false);
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "WEIGHTS" if op != SetOp::Diff => {
                for weight in weights.iter_mut() {
                    let bytes = args.bytes().map_err(|_| CommandError::Syntax)?;
                    *weight = ringkv_core::crdt::register::parse_float(&bytes)
                        .ok_or_else(|| err("weight value is not a float"))?;
                }
            }
            "AGGREGATE" if op != SetOp::Diff => {
                aggregate = match args.word()?.as_str() {
                    "SUM" => Aggregate::Sum,
                    "MIN" => Aggregate::Min,
                    "MAX" => Aggregate::Max,
                    _ => return Err(CommandError::Syntax),
                }
            }
            "WITHSCORES" if allow_with_scores => with_scores = true,
            _ => return Err(CommandError::Syntax),
        }
    }
    let mut inputs = Vec::new();
    for key in &keys {
        inputs.push(read_input(shared, session, key).await?);
    }
    let mut result: std::collections::BTreeMap<Vec<u8>, f64> = Default::default();
    for (index, input) in inputs.iter().enumerate() {
        let weight = weights[index];
        let weighted = |score: f64| {
            let product = score * weight;
            if product.is_nan() {
                0.0
            } else {
                product
            }
        };
        match op {
            SetOp::Diff if index > 0 => {
                for (_, member) in input {
                    result.remove(member);
                }
            }
            SetOp::Inter if index > 0 => {
                let here: std::collections::HashMap<&Vec<u8>, f64> =
                    input.iter().map(|(s, m)| (m, *s)).collect();
                result.retain(|member, total| match here.get(member) {
                    Some(score) => {
                        *total = combine_scores(*total, weighted(*score), aggregate);
                        true
                    }
                    None => false,
                });
            }
            _ => {
                for (score, member) in input {
                    let score = weighted(*score);
                    result
                        .entry(member.clone())
                        .and_modify(|total| *total = combine_scores(*total, score, aggregate))
                        .or_insert(score);
                }
            }
        }
    }
    let mut ranked: Ranked = result.into_iter().map(|(m, s)| (s, m)).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok((ranked, with_scores))
}

fn combine_scores(total: f64, score: f64, aggregate: Aggregate) -> f64 {
    match aggregate {
        Aggregate::Sum => {
            let sum = total + score;
            if sum.is_nan() {
                0.0
            } else {
                sum
            }
        }
        Aggregate::Min => total.min(score),
        Aggregate::Max => total.max(score),
    }
}

async fn combine_reply(shared: &RespShared, session: &Session, mut args: Args, op: SetOp) -> Reply {
    let (ranked, with_scores) = combine(shared, session, &mut args, op, true).await?;
    let range = Range {
        by: RangeBy::Rank(0, -1),
        rev: false,
        limit: None,
        with_scores,
    };
    Ok(range.reply(ranked, session.protocol))
}

async fn combine_store(shared: &RespShared, session: &Session, mut args: Args, op: SetOp) -> Reply {
    let destination = args.bytes()?;
    let (ranked, _) = combine(shared, session, &mut args, op, false).await?;
    store(shared, session, &destination, ranked).await
}

/// `ZUNIONSTORE destination numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...]`.
pub async fn zunionstore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_store(shared, session, args, SetOp::Union).await
}

/// `ZINTERSTORE destination numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...]`.
pub async fn zinterstore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_store(shared, session, args, SetOp::Inter).await
}

/// `ZDIFFSTORE destination numkeys key [key ...]`.
pub async fn zdiffstore(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_store(shared, session, args, SetOp::Diff).await
}

/// `ZUNION numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...] [WITHSCORES]`.
pub async fn zunion(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_reply(shared, session, args, SetOp::Union).await
}

/// `ZINTER numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...] [WITHSCORES]`.
pub async fn zinter(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_reply(shared, session, args, SetOp::Inter).await
}

/// `ZDIFF numkeys key [key ...] [WITHSCORES]`.
pub async fn zdiff(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    combine_reply(shared, session, args, SetOp::Diff).await
}

/// `ZINTERCARD numkeys key [key ...] [LIMIT limit]`.
pub async fn zintercard(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    let (keys, limit) = super::typed::intercard_args(args)?;
    let mut common: Option<std::collections::BTreeSet<Vec<u8>>> = None;
    for key in &keys {
        let members = read_input(shared, session, key)
            .await?
            .into_iter()
            .map(|(_, m)| m);
        common = Some(match common {
            None => members.collect(),
            Some(common) => {
                let here: std::collections::BTreeSet<_> = members.collect();
                common.intersection(&here).cloned().collect()
            }
        });
    }
    let len = common.map_or(0, |c| c.len()) as i64;
    Ok(Frame::Integer(if limit > 0 { len.min(limit) } else { len }))
}
