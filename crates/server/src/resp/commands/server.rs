//! Server commands: COMMAND, INFO, CONFIG GET, DBSIZE, FLUSHDB, FLUSHALL, TIME, DEBUG.

use super::scan::{count_keys, KeyPages};
use super::{keyspace_def, Args, CommandError, Reply, Session, COMMANDS};
use crate::resp::frame::Frame;
use crate::resp::{keyspace_of, RespShared, DATABASES};
use ringkv_coordinator::consistency::Consistency;
use ringkv_coordinator::coordinator;
use ringkv_coordinator::keyspaces::KeyspaceDef;
use ringkv_coordinator::request::WriteRequest;
use std::sync::atomic::Ordering;

/// The Redis version ringkv answers as: the command set and semantics it follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// `COMMAND [COUNT | INFO name... | DOCS ... | LIST]`.
pub async fn command(_: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    let describe = |spec: &super::CommandSpec| {
        Frame::Array(vec![
            Frame::text(spec.name),
            Frame::Integer(spec.arity),
            Frame::Array(
                spec.flags
                    .iter()
                    .map(|f| Frame::Simple((*f).into()))
                    .collect(),
            ),
            Frame::Integer(spec.keys.0),
            Frame::Integer(spec.keys.1),
            Frame::Integer(spec.keys.2),
        ])
    };
    if args.remaining() == 0 {
        return Ok(Frame::Array(COMMANDS.iter().map(describe).collect()));
    }
    match args.word()?.as_str() {
        "COUNT" => Ok(Frame::Integer(COMMANDS.len() as i64)),
        "LIST" => Ok(Frame::Array(
            COMMANDS.iter().map(|c| Frame::text(c.name)).collect(),
        )),
        "INFO" => Ok(Frame::Array(
            args.rest()
                .iter()
                .map(|name| {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    COMMANDS
                        .iter()
                        .find(|c| c.name == name)
                        .map_or(Frame::Null, describe)
                })
                .collect(),
        )),
        // Documentation is optional for clients (redis-cli uses it for hints only).
        "DOCS" => Ok(Frame::Map(Vec::new())),
        other => Err(CommandError::Reply(Frame::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            other.to_ascii_lowercase()
        )))),
    }
}

/// `INFO [section ...]`.
pub async fn info(shared: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    let sections: Vec<String> = args
        .rest()
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    let wants = |name: &str| {
        sections.is_empty()
            || sections
                .iter()
                .any(|s| s == name || s == "all" || s == "everything" || s == "default")
    };
    let node = &shared.node;
    let mut text = String::new();
    if wants("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nringkv_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            node.config.resp.rsplit(':').next().unwrap_or(""),
            shared.started.elapsed().as_secs(),
        ));
    }
    if wants("clients") {
        text.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\nblocked_clients:{}\r\nmaxclients:{}\r\n\r\n",
            shared.connected.load(Ordering::Relaxed),
            shared.blocked.load(Ordering::Relaxed),
            node.config.connections_max
        ));
    }
    if wants("persistence") {
        text.push_str(&format!(
            "# Persistence\r\nloading:0\r\nengine:{}\r\nsync:{}\r\ndisk_bytes:{}\r\n\r\n",
            node.config.engine,
            node.config.sync,
            node.disk_bytes()
        ));
    }
    if wants("stats") {
        text.push_str(&format!(
            "# Stats\r\ntotal_commands_processed:{}\r\n\r\n",
            shared.commands.load(Ordering::Relaxed)
        ));
    }
    if wants("replication") {
        text.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    // Counting keys scans the keyspace, so it is only done when asked for by name.
    if sections.iter().any(|s| s == "keyspace") {
        text.push_str("# Keyspace\r\n");
        for db in 0..DATABASES {
            let keys = count_keys(shared, named_keyspace(shared, &keyspace_of(db))?).await?;
            if keys > 0 {
                text.push_str(&format!("db{db}:keys={keys},expires=0,avg_ttl=0\r\n"));
            }
        }
    }
    Ok(Frame::text(text))
}

/// `CONFIG GET parameter...` (a few read-only values clients and redis-benchmark ask for);
/// `CONFIG SET` is refused, `CONFIG RESETSTAT` accepted.
pub async fn config(shared: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    match args.word()?.as_str() {
        "GET" => {
            let config = &shared.node.config;
            let known = [
                ("save", String::new()),
                (
                    "appendonly",
                    if config.sync == ringkv_coordinator::request::SyncPolicy::None {
                        "no"
                    } else {
                        "yes"
                    }
                    .into(),
                ),
                ("appendfsync", config.sync.to_string()),
                ("databases", DATABASES.to_string()),
                ("maxclients", config.connections_max.to_string()),
                ("maxmemory", "0".into()),
                ("timeout", (config.resp_idle_timeout_ms / 1000).to_string()),
            ];
            let inert = shared.inert_config.lock().clone();
            let known = known
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .chain(inert);
            let known: Vec<(String, String)> = known.collect();
            let mut pairs = Vec::new();
            for pattern in args.rest() {
                for (name, value) in &known {
                    let already = pairs
                        .iter()
                        .any(|(k, _): &(Frame, Frame)| *k == Frame::text(name.clone()));
                    if !already
                        && crate::resp::glob::matches(
                            &pattern.to_ascii_lowercase(),
                            name.as_bytes(),
                        )
                    {
                        pairs.push((Frame::text(name.clone()), Frame::text(value.clone())));
                    }
                }
            }
            Ok(Frame::Map(pairs))
        }
        "RESETSTAT" => Ok(Frame::ok()),
        "SET" => {
            let pairs = args.rest();
            if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
                return Err(CommandError::Arity("config|set"));
            }
            let mut settings = Vec::new();
            for pair in pairs.chunks(2) {
                let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
                if !is_inert(&name) {
                    return Err(CommandError::Reply(Frame::err(format!(
                        "CONFIG SET {name} is not supported; set the node's options in its configuration file"
                    ))));
                }
                settings.push((name, String::from_utf8_lossy(&pair[1]).into_owned()));
            }
            shared.inert_config.lock().extend(settings);
            Ok(Frame::ok())
        }
        other => Err(CommandError::Reply(Frame::err(format!(
            "unknown subcommand '{}'. Try CONFIG HELP.",
            other.to_ascii_lowercase()
        )))),
    }
}

/// Whether `name` is one of Redis's tunables of its in-memory encodings or of replication,
/// which have no meaning in ringkv: `CONFIG SET` takes them, so that clients and test suites
/// that tune them keep working, and `CONFIG GET` shows what was set. Nothing else changes.
fn is_inert(name: &str) -> bool {
    let encodings = ["-max-ziplist-", "-max-listpack-", "-max-intset-"];
    encodings.iter().any(|part| name.contains(part))
        || matches!(
            name,
            "repl-ping-replica-period" | "list-compress-depth" | "active-expire-effort"
        )
        || name.starts_with("lazyfree-lazy-")
}

/// The encoding Redis 7.0 would report for a typed value, by the thresholds `CONFIG SET`
/// kept (Redis's defaults otherwise), so clients and tests that check it see what they
/// expect. ringkv stores every value the same way whatever it reports.
pub fn encoding_of(shared: &RespShared, value: &ringkv_core::crdt::typed::Value) -> &'static str {
    use ringkv_core::crdt::typed::{Typed, Value};
    let tunable = |names: &[&str], default: usize| {
        let config = shared.inert_config.lock();
        names
            .iter()
            .find_map(|name| config.get(*name).and_then(|v| v.parse().ok()))
            .unwrap_or(default)
    };
    let small = |len: usize, longest: usize, kind: &str| {
        let entries = tunable(
            &[
                &format!("{kind}-max-listpack-entries"),
                &format!("{kind}-max-ziplist-entries"),
            ],
            128,
        );
        let value = tunable(
            &[
                &format!("{kind}-max-listpack-value"),
                &format!("{kind}-max-ziplist-value"),
            ],
            64,
        );
        len <= entries && longest <= value
    };
    match value {
        Value::Bytes(..) | Value::Typed(Typed::Counter(_)) => "int",
        Value::Typed(Typed::Set(set)) => {
            let integers = set
                .elements()
                .all(|m| ringkv_core::crdt::register::parse_integer(m).is_some());
            if integers && set.len() <= tunable(&["set-max-intset-entries"], 512) {
                "intset"
            } else {
                "hashtable"
            }
        }
        Value::Typed(Typed::Hash(hash)) => {
            let longest = hash
                .iter()
                .map(|(f, v)| f.len().max(v.value().len()))
                .max()
                .unwrap_or(0);
            if small(hash.len(), longest, "hash") {
                "listpack"
            } else {
                "hashtable"
            }
        }
        Value::Typed(Typed::SortedSet(zset)) => {
            let longest = zset.keys().map(<[u8]>::len).max().unwrap_or(0);
            if small(zset.len(), longest, "zset") {
                "listpack"
            } else {
                "skiplist"
            }
        }
        Value::Typed(Typed::List(_)) => "quicklist",
    }
}

/// `DBSIZE`: the number of keys in the selected database (counted by a scan).
pub async fn dbsize(shared: &RespShared, session: &mut Session, _: Args) -> Reply {
    Ok(Frame::Integer(
        count_keys(shared, keyspace_def(shared, session)?.into_owned()).await?,
    ))
}

fn flush_allowed(shared: &RespShared, command: &str) -> Result<(), CommandError> {
    if shared.node.config.resp_flush_enabled {
        Ok(())
    } else {
        Err(CommandError::Reply(Frame::err(format!(
            "{command} is disabled by configuration (resp_flush_enabled)"
        ))))
    }
}

fn flush_mode(args: &mut Args) -> Result<(), CommandError> {
    if args.remaining() > 0 && !matches!(args.word()?.as_str(), "ASYNC" | "SYNC") {
        return Err(CommandError::Syntax);
    }
    args.finish()
}

/// Deletes every key of a keyspace, a page at a time.
async fn flush_keyspace(
    shared: &RespShared,
    keyspace: KeyspaceDef,
    consistency: Consistency,
) -> Result<(), CommandError> {
    let mut pages = KeyPages::new(keyspace.clone(), Vec::new());
    while let Some(page) = pages.next_page(shared).await? {
        let deletes = page
            .iter()
            .map(|key| WriteRequest::delete(&keyspace.name, key).conflict(keyspace.conflict.into()))
            .collect();
        let outcomes = coordinator::write_many(&shared.node, &keyspace, deletes, consistency);
        for outcome in outcomes.await? {
            outcome?;
        }
    }
    Ok(())
}

/// The definition of a Redis database's keyspace.
fn named_keyspace(shared: &RespShared, name: &str) -> Result<KeyspaceDef, CommandError> {
    shared
        .node
        .keyspaces
        .get(name)
        .ok_or_else(|| CommandError::Reply(Frame::err(format!("keyspace {name} does not exist"))))
}

/// `FLUSHDB [ASYNC | SYNC]`.
pub async fn flushdb(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    flush_allowed(shared, "FLUSHDB")?;
    flush_mode(&mut args)?;
    flush_keyspace(
        shared,
        keyspace_def(shared, session)?.into_owned(),
        session.consistency,
    )
    .await?;
    Ok(Frame::ok())
}

/// `FLUSHALL [ASYNC | SYNC]`: every database.
pub async fn flushall(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    flush_allowed(shared, "FLUSHALL")?;
    flush_mode(&mut args)?;
    for db in 0..DATABASES {
        let keyspace = named_keyspace(shared, &keyspace_of(db))?;
        flush_keyspace(shared, keyspace, session.consistency).await?;
    }
    Ok(Frame::ok())
}

/// `FUNCTION FLUSH | LIST | STATS | HELP`: ringkv runs no server-side functions, so there is
/// never one to list or flush (FLUSH answers OK, as on a Redis that has none); loading one is
/// refused.
pub async fn function(_: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    match args.word()?.as_str() {
        "FLUSH" => {
            if args.remaining() > 0 {
                match args.word()?.as_str() {
                    "ASYNC" | "SYNC" => {}
                    _ => return Err(CommandError::Syntax),
                }
            }
            args.finish()?;
            Ok(Frame::ok())
        }
        "LIST" => Ok(Frame::Array(Vec::new())),
        "STATS" => Ok(Frame::Map(vec![
            (Frame::text("running_script"), Frame::Null),
            (Frame::text("engines"), Frame::Map(Vec::new())),
        ])),
        "HELP" => Ok(Frame::Array(
            [
                "FUNCTION FLUSH: a no-op (ringkv runs no functions)",
                "FUNCTION LIST: always empty",
            ]
            .iter()
            .map(|line| Frame::Simple((*line).into()))
            .collect(),
        )),
        other => Err(CommandError::Reply(Frame::err(format!(
            "ringkv runs no server-side functions (FUNCTION {other})"
        )))),
    }
}

/// `TIME`: unix seconds and microseconds.
pub async fn time(shared: &RespShared, _: &mut Session, _: Args) -> Reply {
    let now_ms = shared.node.now_ms();
    Ok(Frame::Array(vec![
        Frame::text((now_ms / 1000).to_string()),
        Frame::text(((now_ms % 1000) * 1000).to_string()),
    ]))
}

/// `DEBUG PANIC`, only where `resp_debug_enabled` allows it: panics the connection's thread,
/// as a bug would, so tests can see that a node stops on a panic instead of serving on with a
/// dead thread.
pub async fn debug(shared: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    if !shared.node.config.resp_debug_enabled {
        return Err(CommandError::Reply(Frame::err(
            "DEBUG command not allowed: set resp_debug_enabled = true in the node's configuration",
        )));
    }
    match args.word()?.as_str() {
        "PANIC" => panic!("DEBUG PANIC from a Redis-protocol client"),
        other => Err(CommandError::Reply(Frame::err(format!(
            "unknown subcommand '{}'. Try DEBUG PANIC.",
            other.to_ascii_lowercase()
        )))),
    }
}

/// `MEMORY USAGE key [SAMPLES count]`: the bytes the key's value takes as stored (its
/// versions and their metadata, plus the key), nil if absent; `MEMORY HELP`. Other
/// subcommands describe Redis's allocator, which ringkv does not have.
pub async fn memory(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    match args.word()?.as_str() {
        "USAGE" => {
            let key = args.bytes()?;
            if args.remaining() > 0 {
                if args.word()? != "SAMPLES" {
                    return Err(CommandError::Syntax);
                }
                args.integer()?;
            }
            args.finish()?;
            let entry = super::read_entry(shared, session, &key).await?;
            Ok(entry.map_or(Frame::Null, |entry| {
                let values: usize = entry.values.iter().map(|v| v.value.len() + 24).sum();
                Frame::Integer((key.len() + values + 16) as i64)
            }))
        }
        "HELP" => Ok(Frame::Array(vec![
            Frame::Simple("MEMORY USAGE <key> [SAMPLES <count>]".into()),
            Frame::Simple("    Return memory in bytes used by <key> and its value.".into()),
        ])),
        other => Err(CommandError::Reply(Frame::err(format!(
            "unknown subcommand '{}'. Try MEMORY HELP.",
            other.to_ascii_lowercase()
        )))),
    }
}
