//! The rest of Redis's string family: APPEND, SETRANGE, SETBIT and INCRBYFLOAT (edits the
//! key's lead replica applies to the value it holds, see `StringEdit`), GETRANGE, SUBSTR,
//! GETBIT, BITCOUNT, BITPOS and LCS (reads), and MSETNX.

use super::strings::read;
use super::{keyspace, parse_integer, read_entry, write, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_coordinator::request::{add_floats, format_float, Change, StringEdit, WriteRequest};
use ringkv_core::limits::VALUE_BYTES_MAX;

/// The most cells of LCS's table (the product of the two lengths): 4 Mi cells of 4 bytes. Redis
/// has no bound, and two values of 10 MiB would need 400 TB; a longer pair is refused.
pub const LCS_CELLS_MAX: usize = 4 << 20;

/// The highest bit offset SETBIT and GETBIT take, as in Redis (2^32 - 1); offsets past the
/// largest value are refused by its size limit.
const BIT_OFFSET_MAX: i64 = u32::MAX as i64;

fn error(message: &str) -> CommandError {
    CommandError::Reply(Frame::err(message))
}

/// Applies `edit` to `key`; the outcome's integer answer.
async fn apply(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
    edit: StringEdit,
) -> Result<Option<i64>, CommandError> {
    let request = WriteRequest::new(keyspace(session), key, Change::Edit(edit));
    Ok(write(shared, session, request).await?.integer)
}

/// `APPEND key value`: the new length.
pub async fn append(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (key, value) = (args.bytes()?, args.bytes()?);
    let length = apply(shared, session, &key, StringEdit::Append(value.to_vec())).await?;
    Ok(Frame::Integer(length.unwrap_or_default()))
}

/// `SETRANGE key offset value`: the new length. An empty value changes nothing (and creates
/// no key).
pub async fn setrange(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let offset = args.integer()?;
    let value = args.bytes()?;
    if offset < 0 {
        return Err(error("offset is out of range"));
    }
    let offset = offset as usize;
    if value.is_empty() {
        let length = read(shared, session, &key).await?.map_or(0, |v| v.len());
        return Ok(Frame::Integer(length as i64));
    }
    if offset.saturating_add(value.len()) > VALUE_BYTES_MAX {
        return Err(error(
            "string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    let edit = StringEdit::SetRange {
        offset,
        bytes: value.to_vec(),
    };
    let length = apply(shared, session, &key, edit).await?;
    Ok(Frame::Integer(length.unwrap_or_default()))
}

/// The byte range `[start, end]` of a string of `len` bytes, Redis's way: negative indexes
/// count from the end, and an empty range is `None`.
fn byte_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    let clamp = |index: i64| {
        if index < 0 {
            (len + index).max(0)
        } else {
            index
        }
    };
    let (start, end) = (clamp(start), clamp(end).min(len - 1));
    (len > 0 && start <= end && start < len).then_some((start as usize, end as usize))
}

/// `GETRANGE key start end` (and `SUBSTR`): the bytes from start to end, inclusive.
pub async fn getrange(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let (start, end) = (args.integer()?, args.integer()?);
    let value = read(shared, session, &key).await?.unwrap_or_default();
    let range = byte_range(start, end, value.len());
    Ok(Frame::Bulk(match range {
        Some((start, end)) => value[start..=end].to_vec().into(),
        None => Default::default(),
    }))
}

fn bit_offset(args: &mut Args) -> Result<usize, CommandError> {
    let invalid = || error("bit offset is not an integer or out of range");
    let offset = parse_integer(&args.bytes()?).map_err(|_| invalid())?;
    if !(0..=BIT_OFFSET_MAX).contains(&offset) {
        return Err(invalid());
    }
    Ok(offset as usize)
}

/// `SETBIT key offset value`: the bit's old value.
pub async fn setbit(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let offset = bit_offset(&mut args)?;
    let bit = match args.bytes()?.as_ref() {
        b"0" => false,
        b"1" => true,
        _ => return Err(error("bit is not an integer or out of range")),
    };
    if offset / 8 >= VALUE_BYTES_MAX {
        return Err(error(
            "string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    let old = apply(shared, session, &key, StringEdit::SetBit { offset, bit }).await?;
    Ok(Frame::Integer(old.unwrap_or_default()))
}

/// Bit `offset` of `value` (0 past its end).
fn bit_at(value: &[u8], offset: usize) -> bool {
    value
        .get(offset / 8)
        .is_some_and(|byte| byte & (0x80 >> (offset % 8)) != 0)
}

/// `GETBIT key offset`.
pub async fn getbit(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let offset = bit_offset(&mut args)?;
    let value = read(shared, session, &key).await?.unwrap_or_default();
    Ok(Frame::Integer(i64::from(bit_at(&value, offset))))
}

/// Whether a range is in bytes or bits (BITCOUNT and BITPOS take either, bytes by default).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Byte,
    Bit,
}

fn unit(args: &mut Args) -> Result<Unit, CommandError> {
    if args.remaining() == 0 {
        return Ok(Unit::Byte);
    }
    let unit = match args.word()?.as_str() {
        "BYTE" => Unit::Byte,
        "BIT" => Unit::Bit,
        _ => return Err(CommandError::Syntax),
    };
    args.finish()?;
    Ok(unit)
}

/// The bit range `[first, last]` of `value` a BITCOUNT or BITPOS range names; `None` if empty.
fn bit_range(value: &[u8], start: i64, end: i64, unit: Unit) -> Option<(usize, usize)> {
    match unit {
        Unit::Byte => byte_range(start, end, value.len()).map(|(s, e)| (s * 8, e * 8 + 7)),
        Unit::Bit => byte_range(start, end, value.len() * 8),
    }
}

/// `BITCOUNT key [start end [BYTE | BIT]]`: the set bits in the range.
pub async fn bitcount(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let range = match args.remaining() {
        0 => None,
        1 => return Err(CommandError::Syntax),
        _ => Some((args.integer()?, args.integer()?, unit(&mut args)?)),
    };
    let value = read(shared, session, &key).await?.unwrap_or_default();
    let (first, last) = match range {
        None if value.is_empty() => return Ok(Frame::Integer(0)),
        None => (0, value.len() * 8 - 1),
        Some((start, end, unit)) => match bit_range(&value, start, end, unit) {
            Some(range) => range,
            None => return Ok(Frame::Integer(0)),
        },
    };
    let count = (first..=last).filter(|&bit| bit_at(&value, bit)).count();
    Ok(Frame::Integer(count as i64))
}

/// `BITPOS key bit [start [end [BYTE | BIT]]]`: the first bit set to `bit` in the range, -1
/// if none. Looking for a 0 without an end, past a value all ones, finds the bit after it, as
/// in Redis (the value reads as padded with zeros).
pub async fn bitpos(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let wanted = match args.bytes()?.as_ref() {
        b"0" => false,
        b"1" => true,
        _ => return Err(error("The bit argument must be 1 or 0.")),
    };
    let start = if args.remaining() > 0 {
        Some(args.integer()?)
    } else {
        None
    };
    let end = if args.remaining() > 0 {
        Some(args.integer()?)
    } else {
        None
    };
    let unit = unit(&mut args)?;
    let Some(value) = read(shared, session, &key).await? else {
        return Ok(Frame::Integer(if wanted { -1 } else { 0 }));
    };
    let Some((first, last)) = bit_range(&value, start.unwrap_or(0), end.unwrap_or(-1), unit) else {
        return Ok(Frame::Integer(-1));
    };
    if let Some(found) = (first..=last).find(|&bit| bit_at(&value, bit) == wanted) {
        return Ok(Frame::Integer(found as i64));
    }
    let open_ended = end.is_none();
    Ok(Frame::Integer(if !wanted && open_ended {
        (last + 1) as i64
    } else {
        -1
    }))
}

/// `INCRBYFLOAT key increment`: the new value, as stored.
pub async fn incrbyfloat(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let by = String::from_utf8(args.bytes()?.to_vec())
        .map_err(|_| error("value is not a valid float"))?;
    // Checked here too, so a bad increment is answered without a write.
    add_floats(b"", &by)?;
    let request = WriteRequest::new(
        keyspace(session),
        &key,
        Change::Edit(StringEdit::IncrementFloat(by.clone())),
    );
    let outcome = write(shared, session, request).await?;
    // The lead added `by` to what it held, which it reports as `previous`: the same sum.
    let previous = outcome
        .previous
        .map(|entry| entry.string())
        .transpose()?
        .unwrap_or_default();
    let sum = add_floats(&previous, &by)?;
    Ok(Frame::text(format_float(sum)))
}

/// `MSETNX key value [key value ...]`: sets every key if none exists (1), else none (0). The
/// check and the writes are not one atomic step: a key created between them by another
/// client is overwritten (documented, as for the other multi-key commands in a cluster).
pub async fn msetnx(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let pairs = args.rest();
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(CommandError::Arity("msetnx"));
    }
    for pair in pairs.chunks(2) {
        if read_entry(shared, session, &pair[0]).await?.is_some() {
            return Ok(Frame::Integer(0));
        }
    }
    super::strings::set_pairs(shared, session, &pairs).await?;
    Ok(Frame::Integer(1))
}

/// `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]`: the longest common
/// subsequence of two values, its length, or where its runs lie in each.
pub async fn lcs(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let (first, second) = (args.bytes()?, args.bytes()?);
    let (mut len_only, mut indexes, mut min_match, mut with_match_len) = (false, false, 0, false);
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "LEN" => len_only = true,
            "IDX" => indexes = true,
            "WITHMATCHLEN" => with_match_len = true,
            "MINMATCHLEN" => min_match = args.integer()?.max(0) as usize,
            _ => return Err(CommandError::Syntax),
        }
    }
    if len_only && indexes {
        return Err(error(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    let a = read(shared, session, &first).await?.unwrap_or_default();
    let b = read(shared, session, &second).await?.unwrap_or_default();
    if a.len().saturating_mul(b.len()) > LCS_CELLS_MAX {
        return Err(error(&format!(
            "LCS of values whose lengths multiply past {LCS_CELLS_MAX} is refused (ringkv's bound on its memory)"
        )));
    }
    let table = lcs_table(&a, &b);
    let length = table.last().copied().unwrap_or(0);
    if len_only {
        return Ok(Frame::Integer(i64::from(length)));
    }
    let runs = lcs_runs(&a, &b, &table);
    if !indexes {
        let mut common: Vec<u8> = runs
            .iter()
            .rev()
            .flat_map(|run| a[run.a.0..=run.a.1].iter().copied())
            .collect();
        common.truncate(length as usize);
        return Ok(Frame::Bulk(common.into()));
    }
    let matches = runs
        .iter()
        .filter(|run| run.len() >= min_match)
        .map(|run| {
            let pair = |(from, to): (usize, usize)| {
                Frame::Array(vec![Frame::Integer(from as i64), Frame::Integer(to as i64)])
            };
            let mut entry = vec![pair(run.a), pair(run.b)];
            if with_match_len {
                entry.push(Frame::Integer(run.len() as i64));
            }
            Frame::Array(entry)
        })
        .collect();
    Ok(Frame::Map(vec![
        (Frame::text("matches"), Frame::Array(matches)),
        (Frame::text("len"), Frame::Integer(i64::from(length))),
    ]))
}

/// The dynamic-programming table of LCS lengths, `(a.len() + 1) × (b.len() + 1)`, row major.
fn lcs_table(a: &[u8], b: &[u8]) -> Vec<u32> {
    let width = b.len() + 1;
    let mut table = vec![0u32; (a.len() + 1) * width];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * width + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }
    table
}

/// A run of the common subsequence: inclusive ranges in each value.
struct Run {
    a: (usize, usize),
    b: (usize, usize),
}

impl Run {
    fn len(&self) -> usize {
        self.a.1 - self.a.0 + 1
    }
}

/// The runs of one longest common subsequence, last first (as Redis lists them), walking the
/// table back from its end as Redis does.
fn lcs_runs(a: &[u8], b: &[u8], table: &[u32]) -> Vec<Run> {
    let width = b.len() + 1;
    let (mut i, mut j) = (a.len(), b.len());
    let mut runs: Vec<Run> = Vec::new();
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            let (ai, bj) = (i - 1, j - 1);
            match runs.last_mut() {
                // Extends the current run backwards when both positions are adjacent.
                Some(run) if run.a.0 == ai + 1 && run.b.0 == bj + 1 => {
                    run.a.0 = ai;
                    run.b.0 = bj;
                }
                _ => runs.push(Run {
                    a: (ai, ai),
                    b: (bj, bj),
                }),
            }
            i -= 1;
            j -= 1;
        } else if table[(i - 1) * width + j] > table[i * width + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_count_from_either_end_as_redis_does() {
        assert_eq!(byte_range(0, -1, 5), Some((0, 4)));
        assert_eq!(byte_range(-3, -1, 5), Some((2, 4)));
        assert_eq!(byte_range(3, 100, 5), Some((3, 4)));
        assert_eq!(byte_range(4, 2, 5), None);
        assert_eq!(byte_range(0, -1, 0), None);
        assert_eq!(byte_range(-100, 1, 5), Some((0, 1)));
    }

    #[test]
    fn lcs_finds_redis_s_example() {
        let (a, b) = (b"ohmytext".as_slice(), b"mynewtext".as_slice());
        let table = lcs_table(a, b);
        assert_eq!(*table.last().unwrap(), 6);
        let runs = lcs_runs(a, b, &table);
        let spans: Vec<_> = runs.iter().map(|r| (r.a, r.b)).collect();
        // Redis: LCS key1 key2 IDX -> [[4,7],[5,8]] then [[2,3],[0,1]].
        assert_eq!(spans, [((4, 7), (5, 8)), ((2, 3), (0, 1))]);
    }
}
