//! Key commands: DEL, UNLINK, EXISTS, TYPE, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL,
//! PERSIST.

use super::{keyspace, read_entry, write, write_many, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::RespShared;
use ringkv_coordinator::coordinator::CoordinatorError;
use ringkv_coordinator::request::{Change, Condition, Expiry, ReplicaError, WriteRequest};

/// `DEL key [key ...]` and `UNLINK`: how many existed. On a single node all keys go in one
/// atomic batch.
pub async fn del(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let keyspace = keyspace(session);
    let requests = args
        .rest()
        .iter()
        .map(|key| WriteRequest::delete(keyspace, key).when(Condition::IfPresent))
        .collect();
    let mut deleted = 0;
    for outcome in write_many(shared, session, requests).await? {
        match outcome {
            Ok(_) => deleted += 1,
            Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Frame::Integer(deleted))
}

/// `EXISTS key [key ...]`: how many of the keys exist (a key named twice counts twice).
pub async fn exists(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let mut count = 0;
    for key in args.rest() {
        if read_entry(shared, session, &key).await?.is_some() {
            count += 1;
        }
    }
    Ok(Frame::Integer(count))
}

/// `TYPE key`: `string` or `none` (ringkv stores strings only).
pub async fn type_of(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let name = match read_entry(shared, session, &key).await? {
        None => "none",
        Some(entry) => entry.value()?.data_type().redis_name(),
    };
    Ok(Frame::Simple(name.into()))
}

/// Which expiry-changing command, for its time unit and error messages.
struct ExpireCommand {
    name: &'static str,
    unit_ms: i64,
    absolute: bool,
}

/// The NX / XX / GT / LT option of the EXPIRE family.
/// EXPIRE's NX, XX, GT and LT options.
#[derive(Clone, Copy, Default)]
struct ExpireOptions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl ExpireOptions {
    /// Whether the new expiry `at_ms` may replace `current` (`None`: the key has none,
    /// which counts as an infinite expiry for GT and LT, as in Redis).
    fn allow(self, current: Option<i64>, at_ms: i64) -> bool {
        (!self.nx || current.is_none())
            && (!self.xx || current.is_some())
            && (!self.gt || current.is_some_and(|c| at_ms > c))
            && (!self.lt || current.is_none_or(|c| at_ms < c))
    }
}

fn expire_option(args: &mut Args) -> Result<ExpireOptions, CommandError> {
    let mut options = ExpireOptions::default();
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "NX" => options.nx = true,
            "XX" => options.xx = true,
            "GT" => options.gt = true,
            "LT" => options.lt = true,
            other => {
                return Err(CommandError::Reply(Frame::err(format!(
                    "Unsupported option {other}"
                ))));
            }
        }
    }
    if options.nx && (options.xx || options.gt || options.lt) {
        return Err(CommandError::Reply(Frame::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        )));
    }
    if options.gt && options.lt {
        return Err(CommandError::Reply(Frame::err(
            "GT and LT options at the same time are not compatible",
        )));
    }
    Ok(options)
}

async fn expire_with(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
    command: ExpireCommand,
) -> Reply {
    let key = args.bytes()?;
    let amount = args.integer()?;
    let option = expire_option(&mut args)?;
    let invalid = || {
        CommandError::Reply(Frame::err(format!(
            "invalid expire time in '{}' command",
            command.name
        )))
    };
    let now_ms = shared.node.now_ms() as i64;
    let offset_ms = amount.checked_mul(command.unit_ms).ok_or_else(invalid)?;
    let at_ms = if command.absolute {
        offset_ms
    } else {
        now_ms.checked_add(offset_ms).ok_or_else(invalid)?
    };
    let keyspace = keyspace(session);
    let Some(entry) = read_entry(shared, session, &key).await? else {
        return Ok(Frame::Integer(0));
    };
    // Options are checked against what was just read; a concurrent change between the read
    // and the write may slip past them (the write itself is atomic).
    let current = entry.winner().expires_at_ms.map(|at| at as i64);
    let allowed = option.allow(current, at_ms);
    if !allowed {
        return Ok(Frame::Integer(0));
    }
    let request = if at_ms <= now_ms {
        WriteRequest::delete(keyspace, &key).when(Condition::IfPresent)
    } else {
        WriteRequest::new(keyspace, &key, Change::Expire(Expiry::At(at_ms as u64)))
    };
    match write(shared, session, request).await {
        Ok(_) => Ok(Frame::Integer(1)),
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => {
            Ok(Frame::Integer(0))
        }
        Err(error) => Err(error.into()),
    }
}

/// `EXPIRE key seconds [NX | XX | GT | LT]`.
pub async fn expire(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    expire_with(
        shared,
        session,
        args,
        ExpireCommand {
            name: "expire",
            unit_ms: 1000,
            absolute: false,
        },
    )
    .await
}

/// `PEXPIRE key milliseconds [NX | XX | GT | LT]`.
pub async fn pexpire(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    expire_with(
        shared,
        session,
        args,
        ExpireCommand {
            name: "pexpire",
            unit_ms: 1,
            absolute: false,
        },
    )
    .await
}

/// `EXPIREAT key unix-seconds [NX | XX | GT | LT]`.
pub async fn expireat(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    expire_with(
        shared,
        session,
        args,
        ExpireCommand {
            name: "expireat",
            unit_ms: 1000,
            absolute: true,
        },
    )
    .await
}

/// `PEXPIREAT key unix-milliseconds [NX | XX | GT | LT]`.
pub async fn pexpireat(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    expire_with(
        shared,
        session,
        args,
        ExpireCommand {
            name: "pexpireat",
            unit_ms: 1,
            absolute: true,
        },
    )
    .await
}

async fn remaining_ms(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
) -> Result<Option<Option<i64>>, CommandError> {
    let key = args.bytes()?;
    let Some(entry) = read_entry(shared, session, &key).await? else {
        return Ok(None);
    };
    let now_ms = shared.node.now_ms();
    Ok(Some(
        entry
            .winner()
            .expires_at_ms
            .map(|at| at.saturating_sub(now_ms) as i64),
    ))
}

/// `TTL key`: seconds left, -1 without expiry, -2 if absent.
pub async fn ttl(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    Ok(Frame::Integer(
        match remaining_ms(shared, session, args).await? {
            None => -2,
            Some(None) => -1,
            Some(Some(ms)) => (ms + 500) / 1000,
        },
    ))
}

/// `PTTL key`: milliseconds left, -1 without expiry, -2 if absent.
pub async fn pttl(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    Ok(Frame::Integer(
        match remaining_ms(shared, session, args).await? {
            None => -2,
            Some(None) => -1,
            Some(Some(ms)) => ms,
        },
    ))
}

/// `PERSIST key`: 1 if an expiry was removed.
pub async fn persist(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let key = args.bytes()?;
    let keyspace = keyspace(session);
    let Some(entry) = read_entry(shared, session, &key).await? else {
        return Ok(Frame::Integer(0));
    };
    if entry.winner().expires_at_ms.is_none() {
        return Ok(Frame::Integer(0));
    }
    match write(
        shared,
        session,
        WriteRequest::new(keyspace, &key, Change::Expire(Expiry::Never)),
    )
    .await
    {
        Ok(_) => Ok(Frame::Integer(1)),
        Err(CoordinatorError::Replica(ReplicaError::ConditionFailed { .. })) => {
            Ok(Frame::Integer(0))
        }
        Err(error) => Err(error.into()),
    }
}

/// When a key expires, in unix milliseconds: `None` if absent, `Some(None)` without expiry.
async fn expires_at(
    shared: &RespShared,
    session: &Session,
    mut args: Args,
) -> Result<Option<Option<u64>>, CommandError> {
    let key = args.bytes()?;
    let entry = read_entry(shared, session, &key).await?;
    Ok(entry.map(|entry| entry.winner().expires_at_ms))
}

/// `EXPIRETIME key`: the unix time in seconds at which it expires; -1 without expiry, -2 if
/// absent.
pub async fn expiretime(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    Ok(Frame::Integer(
        match expires_at(shared, session, args).await? {
            None => -2,
            Some(None) => -1,
            Some(Some(ms)) => (ms / 1000) as i64,
        },
    ))
}

/// `PEXPIRETIME key`: the same in milliseconds.
pub async fn pexpiretime(shared: &RespShared, session: &mut Session, args: Args) -> Reply {
    Ok(Frame::Integer(
        match expires_at(shared, session, args).await? {
            None => -2,
            Some(None) => -1,
            Some(Some(ms)) => ms as i64,
        },
    ))
}

/// The longest string Redis keeps in its `embstr` encoding.
const EMBSTR_BYTES_MAX: usize = 44;

/// `OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT | HELP`. ringkv stores every value the same
/// way, so ENCODING answers what Redis would for the string (`int`, `embstr` or `raw`), for
/// clients that look; it tracks no access times or frequencies, so IDLETIME answers 0 and FREQ
/// the error Redis gives when its eviction policy does not count them.
pub async fn object(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let subcommand = args.word()?;
    if subcommand == "HELP" {
        let lines = [
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key> (int, embstr or raw: what Redis would use).",
            "FREQ <key>",
            "    Not tracked by ringkv: an error, as Redis gives without an LFU policy.",
            "IDLETIME <key>",
            "    Not tracked by ringkv: 0.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>: always 1.",
            "HELP",
            "    Print this help.",
        ];
        return Ok(Frame::Array(
            lines
                .iter()
                .map(|line| Frame::Simple((*line).into()))
                .collect(),
        ));
    }
    let key = args.bytes()?;
    args.finish()?;
    let Some(entry) = read_entry(shared, session, &key).await? else {
        return Ok(Frame::Null);
    };
    match subcommand.as_str() {
        "ENCODING" if !entry.winner().kind.is_bytes() => {
            let value = entry.value()?;
            Ok(Frame::text(super::server::encoding_of(shared, &value)))
        }
        "ENCODING" => {
            let value = &entry.winner().value;
            let integer = value.len() <= 20 && super::parse_integer(value).is_ok();
            let encoding = match value.len() {
                _ if integer => "int",
                len if len <= EMBSTR_BYTES_MAX => "embstr",
                _ => "raw",
            };
            Ok(Frame::text(encoding))
        }
        "IDLETIME" => Ok(Frame::Integer(0)),
        "REFCOUNT" => Ok(Frame::Integer(1)),
        "FREQ" => Err(CommandError::Reply(Frame::err(
            "An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
        ))),
        other => Err(CommandError::Reply(Frame::err(format!(
            "unknown subcommand '{other}'. Try OBJECT HELP."
        )))),
    }
}
