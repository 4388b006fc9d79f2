//! Redis commands: the table of what is supported, argument parsing shared by all, dispatch,
//! and the one mapping from store errors to Redis error replies. Each family of commands is
//! its own module with the same shape: parse the arguments, call the store, build the reply.

mod connection;
mod edits;
mod hashes;
mod keys;
mod lists;
mod moves;
mod scan;
mod server;
mod sets;
mod strings;
mod typed;
mod zsets;

use super::frame::Frame;
use super::metrics::Disconnect;
use super::replies::ReplyLimit;
use super::RespShared;
use bytes::Bytes;
use ringkv_coordinator::consistency::Consistency;
use ringkv_coordinator::coordinator::local::{self, LocalWrite};
use ringkv_coordinator::coordinator::{self, CoordinatorError};
use ringkv_coordinator::keyspaces::KeyspaceDef;
use ringkv_coordinator::request::{
    ConflictMode, Entry, ReplicaError, Report, WriteOutcome, WriteRequest,
};
use ringkv_coordinator::users::{Principal, Scope, Users, Verbs};
use std::borrow::Cow;

/// Per-connection state.
pub struct Session {
    /// The client id (`CLIENT ID`).
    pub id: u64,
    /// The selected database.
    pub db: u8,
    /// The keyspace of the selected database (kept, not rebuilt per command).
    pub keyspace: String,
    /// The protocol version, 2 or 3.
    pub protocol: u8,
    /// The name set by `CLIENT SETNAME`.
    pub name: Option<String>,
    /// Who the client acts as: the default principal until it logs in.
    pub principal: Principal,
    /// The client's address (`None`: an in-process caller), for the default principal and
    /// the rate limit on failed logins.
    pub peer: Option<std::net::IpAddr>,
    /// Set by `QUIT` or a protocol error: close after writing the pending replies.
    pub closing: bool,
    /// The consistency of this connection's reads and writes (`RINGKV.CONSISTENCY`).
    pub consistency: Consistency,
    /// Commands queued since `MULTI` (`None`: not in a transaction), and whether one was
    /// refused while queueing (`EXEC` then runs none).
    pub queued: Option<(Vec<Vec<Bytes>>, bool)>,
    /// Bytes of reply memory the connection holds (see [`crate::resp::replies`]).
    pub reply_bytes: usize,
    /// Reads and writes run by [`execute`] since the connection last counted them into the
    /// node's traffic.
    pub served: (u64, u64),
    /// The selected keyspace's definition as last looked up (`None` inside: it does not
    /// exist), with the keyspaces' generation it was looked up at; `None` until looked up.
    keyspace_def: Option<(u64, Option<KeyspaceDef>)>,
    /// The verbs the principal holds on the selected keyspace, with the users' generation
    /// they were worked out at (0: not yet).
    verbs: (u64, Verbs),
}

impl Session {
    /// A new connection's state, acting as `principal` until it logs in.
    pub fn new(id: u64, principal: Principal, peer: Option<std::net::IpAddr>) -> Self {
        Self {
            id,
            principal,
            peer,
            verbs: (0, Verbs::default()),
            db: 0,
            keyspace: super::keyspace_of(0),
            protocol: 2,
            name: None,
            closing: false,
            consistency: Consistency::default(),
            queued: None,
            reply_bytes: 0,
            served: (0, 0),
            keyspace_def: None,
        }
    }

    /// Selects database `db` and its keyspace.
    pub fn select(&mut self, db: u8) {
        self.db = db;
        self.keyspace = super::keyspace_of(db);
        self.keyspace_def = None;
        self.verbs = (0, Verbs::default());
    }

    /// Selects keyspace `def` by name (`SELECT name`); the database number stays as it was.
    pub fn select_keyspace(&mut self, def: KeyspaceDef, generation: u64) {
        self.keyspace = def.name.clone();
        self.keyspace_def = Some((generation, Some(def)));
        self.verbs = (0, Verbs::default());
    }

    /// Whether the selected keyspace is a strong one: its commands go through its shards'
    /// leaders, never straight to this node's store.
    fn is_strong(&self) -> bool {
        matches!(&self.keyspace_def, Some((_, Some(def))) if def.is_strong())
    }

    /// Acts as `principal` from now on.
    pub fn log_in(&mut self, principal: Principal) {
        self.principal = principal;
        self.verbs = (0, Verbs::default());
    }

    /// Works out again what the principal may do on the selected keyspace if any user
    /// changed since the last look.
    pub fn refresh_access(&mut self, users: &Users) {
        let generation = users.generation();
        if self.verbs.0 != generation {
            let verbs = self.principal.verbs(users, Scope::Keyspace(&self.keyspace));
            self.verbs = (generation, verbs);
        }
    }

    /// Looks the selected keyspace's definition up again if any definition changed since
    /// the last look, so commands read it from the session instead of the shared table.
    pub fn refresh_keyspace(&mut self, keyspaces: &ringkv_coordinator::keyspaces::Keyspaces) {
        let generation = keyspaces.generation();
        if !matches!(&self.keyspace_def, Some((seen, _)) if *seen == generation) {
            self.keyspace_def = Some((generation, keyspaces.get(&self.keyspace)));
        }
    }
}

/// Why a command could not run; becomes an error reply.
#[derive(Debug)]
pub enum CommandError {
    /// Wrong number of arguments for the named command.
    Arity(&'static str),
    /// Redis's `ERR syntax error`.
    Syntax,
    /// An argument that should be an integer is not.
    NotInteger,
    /// A ready-made error reply.
    Reply(Frame),
    /// The reply would pass a bound on reply memory: the client is disconnected.
    ReplyTooLarge(ReplyLimit),
}

impl From<CoordinatorError> for CommandError {
    fn from(error: CoordinatorError) -> Self {
        match error {
            CoordinatorError::Replica(error) => error.into(),
            unavailable @ CoordinatorError::Unavailable { .. } => {
                CommandError::Reply(Frame::Error(format!("UNAVAILABLE {unavailable}")))
            }
            failed @ CoordinatorError::ShardFailed { .. } => {
                CommandError::Reply(Frame::Error(format!("UNAVAILABLE {failed}")))
            }
            // Redis Cluster's code for "nothing done, try again".
            no_leader @ CoordinatorError::NoLeader { .. } => {
                CommandError::Reply(Frame::Error(format!("TRYAGAIN {no_leader}")))
            }
            unknown @ CoordinatorError::OutcomeUnknown(_) => {
                CommandError::Reply(Frame::Error(format!("UNKNOWN {unknown}")))
            }
        }
    }
}

impl From<ReplicaError> for CommandError {
    fn from(error: ReplicaError) -> Self {
        CommandError::Reply(match error {
            ReplicaError::Busy => Frame::Error("BUSY node overloaded, try again later".into()),
            ReplicaError::NotAnInteger => Frame::err("value is not an integer or out of range"),
            ReplicaError::Overflow => Frame::err("increment or decrement would overflow"),
            // Redis's WRONGTYPE is an error code of its own, not an ERR.
            ReplicaError::WrongType => Frame::Error(error.to_string()),
            ReplicaError::KeyTooLong { .. } | ReplicaError::ValueTooLarge { .. } => {
                Frame::err(format!("string exceeds maximum allowed size ({error})"))
            }
            other => Frame::err(other),
        })
    }
}

/// What a command handler returns.
pub type Reply = Result<Frame, CommandError>;

/// The arguments of a command after its name, consumed front to back.
pub struct Args {
    /// The command's canonical lowercase name, for error messages.
    pub command: &'static str,
    items: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// How many arguments are left.
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// The next argument as bytes.
    pub fn bytes(&mut self) -> Result<Bytes, CommandError> {
        self.items.next().ok_or(CommandError::Arity(self.command))
    }

    /// The next argument as UTF-8 text.
    pub fn text(&mut self) -> Result<String, CommandError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CommandError::Syntax)
    }

    /// The next argument, uppercased, for matching option words.
    pub fn word(&mut self) -> Result<String, CommandError> {
        Ok(self.text()?.to_ascii_uppercase())
    }

    /// The next argument as a decimal i64.
    pub fn integer(&mut self) -> Result<i64, CommandError> {
        parse_integer(&self.bytes()?)
    }

    /// Every remaining argument.
    pub fn rest(&mut self) -> Vec<Bytes> {
        self.items.by_ref().collect()
    }

    /// Fails if arguments are left over.
    pub fn finish(&self) -> Result<(), CommandError> {
        if self.items.len() == 0 {
            Ok(())
        } else {
            Err(CommandError::Syntax)
        }
    }
}

/// Parses a decimal i64 exactly as Redis does (no spaces, no `+`).
pub fn parse_integer(bytes: &[u8]) -> Result<i64, CommandError> {
    super::request::parse_decimal(bytes).ok_or(CommandError::NotInteger)
}

/// One supported command.
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis arity: the exact count including the name, or `-n` for at least n.
    pub arity: i64,
    /// Redis command flags for `COMMAND`.
    pub flags: &'static [&'static str],
    /// First key position, last key position (-1: last argument), step, for `COMMAND`.
    pub keys: (i64, i64, i64),
}

macro_rules! command {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $handler:path) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
        }
    };
}

macro_rules! dispatch_table {
    ($($name:literal, $arity:expr, $flags:expr, $keys:expr, $handler:path;)*) => {
        /// Every supported command.
        pub static COMMANDS: &[CommandSpec] = &[$(command!($name, $arity, $flags, $keys, $handler)),*];

        /// Runs the handler of `name` (a name from [`COMMANDS`]).
        async fn dispatch(name: &'static str, shared: &RespShared, session: &mut Session, args: Args) -> Reply {
            match name {
                $($name => $handler(shared, session, args).await,)*
                other => Err(CommandError::Reply(Frame::err(format!("unknown command {other}")))),
            }
        }
    };
}

const READ: &[&str] = &["readonly", "fast"];
const WRITE: &[&str] = &["write", "denyoom"];
const ADMIN: &[&str] = &["fast", "loading", "stale"];
const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);

dispatch_table! {
    "ping", -1, ADMIN, NO_KEYS, connection::ping;
    "echo", 2, ADMIN, NO_KEYS, connection::echo;
    "hello", -1, ADMIN, NO_KEYS, connection::hello;
    "auth", -2, ADMIN, NO_KEYS, connection::auth;
    "client", -2, ADMIN, NO_KEYS, connection::client;
    "select", 2, ADMIN, NO_KEYS, connection::select;
    "quit", -1, ADMIN, NO_KEYS, connection::quit;
    "reset", 1, ADMIN, NO_KEYS, connection::reset;
    "command", -1, ADMIN, NO_KEYS, server::command;
    "info", -1, ADMIN, NO_KEYS, server::info;
    "config", -2, ADMIN, NO_KEYS, server::config;
    "dbsize", 1, READ, NO_KEYS, server::dbsize;
    "flushdb", -1, WRITE, NO_KEYS, server::flushdb;
    "flushall", -1, WRITE, NO_KEYS, server::flushall;
    "time", 1, ADMIN, NO_KEYS, server::time;
    "function", -2, ADMIN, NO_KEYS, server::function;
    "debug", -2, ADMIN, NO_KEYS, server::debug;
    "memory", -2, READ, NO_KEYS, server::memory;
    "ringkv.consistency", -1, ADMIN, NO_KEYS, connection::consistency;
    "multi", 1, ADMIN, NO_KEYS, multi;
    "exec", 1, ADMIN, NO_KEYS, exec;
    "discard", 1, ADMIN, NO_KEYS, discard;
    "watch", -2, ADMIN, ALL_KEYS, watch;
    "unwatch", 1, ADMIN, NO_KEYS, watch;
    "get", 2, READ, ONE_KEY, strings::get;
    "set", -3, WRITE, ONE_KEY, strings::set;
    "setnx", 3, WRITE, ONE_KEY, strings::setnx;
    "setex", 4, WRITE, ONE_KEY, strings::setex;
    "psetex", 4, WRITE, ONE_KEY, strings::psetex;
    "getset", 3, WRITE, ONE_KEY, strings::getset;
    "getdel", 2, WRITE, ONE_KEY, strings::getdel;
    "getex", -2, WRITE, ONE_KEY, strings::getex;
    "mget", -2, READ, ALL_KEYS, strings::mget;
    "mset", -3, WRITE, (1, -1, 2), strings::mset;
    "strlen", 2, READ, ONE_KEY, strings::strlen;
    "incr", 2, WRITE, ONE_KEY, strings::incr;
    "decr", 2, WRITE, ONE_KEY, strings::decr;
    "incrby", 3, WRITE, ONE_KEY, strings::incrby;
    "decrby", 3, WRITE, ONE_KEY, strings::decrby;
    "incrbyfloat", 3, WRITE, ONE_KEY, edits::incrbyfloat;
    "append", 3, WRITE, ONE_KEY, edits::append;
    "setrange", 4, WRITE, ONE_KEY, edits::setrange;
    "getrange", 4, READ, ONE_KEY, edits::getrange;
    "substr", 4, READ, ONE_KEY, edits::getrange;
    "setbit", 4, WRITE, ONE_KEY, edits::setbit;
    "getbit", 3, READ, ONE_KEY, edits::getbit;
    "bitcount", -2, READ, ONE_KEY, edits::bitcount;
    "bitpos", -3, READ, ONE_KEY, edits::bitpos;
    "lcs", -3, READ, (1, 2, 1), edits::lcs;
    "msetnx", -3, WRITE, (1, -1, 2), edits::msetnx;
    "cas", 4, WRITE, ONE_KEY, strings::cas;
    "rename", 3, WRITE, (1, 2, 1), moves::rename;
    "renamenx", 3, WRITE, (1, 2, 1), moves::renamenx;
    "copy", -3, WRITE, (1, 2, 1), moves::copy;
    "dump", 2, READ, ONE_KEY, moves::dump;
    "restore", -4, WRITE, ONE_KEY, moves::restore;
    "expiretime", 2, READ, ONE_KEY, keys::expiretime;
    "pexpiretime", 2, READ, ONE_KEY, keys::pexpiretime;
    "object", -2, READ, (2, 2, 1), keys::object;
    "del", -2, WRITE, ALL_KEYS, keys::del;
    "unlink", -2, WRITE, ALL_KEYS, keys::del;
    "exists", -2, READ, ALL_KEYS, keys::exists;
    "type", 2, READ, ONE_KEY, keys::type_of;
    "expire", -3, WRITE, ONE_KEY, keys::expire;
    "pexpire", -3, WRITE, ONE_KEY, keys::pexpire;
    "expireat", -3, WRITE, ONE_KEY, keys::expireat;
    "pexpireat", -3, WRITE, ONE_KEY, keys::pexpireat;
    "ttl", 2, READ, ONE_KEY, keys::ttl;
    "pttl", 2, READ, ONE_KEY, keys::pttl;
    "persist", 2, WRITE, ONE_KEY, keys::persist;
    "scan", -2, READ, NO_KEYS, scan::scan;
    "keys", 2, READ, NO_KEYS, scan::keys;
    "sadd", -3, WRITE, ONE_KEY, sets::sadd;
    "srem", -3, WRITE, ONE_KEY, sets::srem;
    "smembers", 2, READ, ONE_KEY, sets::smembers;
    "sismember", 3, READ, ONE_KEY, sets::sismember;
    "smismember", -3, READ, ONE_KEY, sets::smismember;
    "scard", 2, READ, ONE_KEY, sets::scard;
    "spop", -2, WRITE, ONE_KEY, sets::spop;
    "srandmember", -2, READ, ONE_KEY, sets::srandmember;
    "sinter", -2, READ, ALL_KEYS, sets::sinter;
    "sunion", -2, READ, ALL_KEYS, sets::sunion;
    "sdiff", -2, READ, ALL_KEYS, sets::sdiff;
    "sinterstore", -3, WRITE, ALL_KEYS, sets::sinterstore;
    "sunionstore", -3, WRITE, ALL_KEYS, sets::sunionstore;
    "sdiffstore", -3, WRITE, ALL_KEYS, sets::sdiffstore;
    "sintercard", -3, READ, NO_KEYS, sets::sintercard;
    "smove", 4, WRITE, (1, 2, 1), sets::smove;
    "sscan", -3, READ, ONE_KEY, sets::sscan;
    "hset", -4, WRITE, ONE_KEY, hashes::hset;
    "hmset", -4, WRITE, ONE_KEY, hashes::hmset;
    "hsetnx", 4, WRITE, ONE_KEY, hashes::hsetnx;
    "hget", 3, READ, ONE_KEY, hashes::hget;
    "hmget", -3, READ, ONE_KEY, hashes::hmget;
    "hdel", -3, WRITE, ONE_KEY, hashes::hdel;
    "hgetall", 2, READ, ONE_KEY, hashes::hgetall;
    "hkeys", 2, READ, ONE_KEY, hashes::hkeys;
    "hvals", 2, READ, ONE_KEY, hashes::hvals;
    "hlen", 2, READ, ONE_KEY, hashes::hlen;
    "hexists", 3, READ, ONE_KEY, hashes::hexists;
    "hstrlen", 3, READ, ONE_KEY, hashes::hstrlen;
    "hincrby", 4, WRITE, ONE_KEY, hashes::hincrby;
    "hincrbyfloat", 4, WRITE, ONE_KEY, hashes::hincrbyfloat;
    "hrandfield", -2, READ, ONE_KEY, hashes::hrandfield;
    "hscan", -3, READ, ONE_KEY, hashes::hscan;
    "zadd", -4, WRITE, ONE_KEY, zsets::zadd;
    "zincrby", 4, WRITE, ONE_KEY, zsets::zincrby;
    "zrem", -3, WRITE, ONE_KEY, zsets::zrem;
    "zcard", 2, READ, ONE_KEY, zsets::zcard;
    "zscore", 3, READ, ONE_KEY, zsets::zscore;
    "zmscore", -3, READ, ONE_KEY, zsets::zmscore;
    "zrank", 3, READ, ONE_KEY, zsets::zrank;
    "zrevrank", 3, READ, ONE_KEY, zsets::zrevrank;
    "zcount", 4, READ, ONE_KEY, zsets::zcount;
    "zlexcount", 4, READ, ONE_KEY, zsets::zlexcount;
    "zrange", -4, READ, ONE_KEY, zsets::zrange;
    "zrevrange", -4, READ, ONE_KEY, zsets::zrevrange;
    "zrangebyscore", -4, READ, ONE_KEY, zsets::zrangebyscore;
    "zrevrangebyscore", -4, READ, ONE_KEY, zsets::zrevrangebyscore;
    "zrangebylex", -4, READ, ONE_KEY, zsets::zrangebylex;
    "zrevrangebylex", -4, READ, ONE_KEY, zsets::zrevrangebylex;
    "zrangestore", -5, WRITE, (1, 2, 1), zsets::zrangestore;
    "zremrangebyscore", 4, WRITE, ONE_KEY, zsets::zremrangebyscore;
    "zremrangebylex", 4, WRITE, ONE_KEY, zsets::zremrangebylex;
    "zremrangebyrank", 4, WRITE, ONE_KEY, zsets::zremrangebyrank;
    "zpopmin", -2, WRITE, ONE_KEY, zsets::zpopmin;
    "zpopmax", -2, WRITE, ONE_KEY, zsets::zpopmax;
    "zrandmember", -2, READ, ONE_KEY, zsets::zrandmember;
    "zscan", -3, READ, ONE_KEY, zsets::zscan;
    "zunionstore", -4, WRITE, ONE_KEY, zsets::zunionstore;
    "zinterstore", -4, WRITE, ONE_KEY, zsets::zinterstore;
    "zdiffstore", -4, WRITE, ONE_KEY, zsets::zdiffstore;
    "zunion", -3, READ, NO_KEYS, zsets::zunion;
    "zinter", -3, READ, NO_KEYS, zsets::zinter;
    "zdiff", -3, READ, NO_KEYS, zsets::zdiff;
    "zintercard", -3, READ, NO_KEYS, zsets::zintercard;
    "zmpop", -4, WRITE, NO_KEYS, zsets::zmpop;
    "bzmpop", -5, WRITE, NO_KEYS, zsets::bzmpop;
    "bzpopmin", -3, WRITE, ALL_KEYS, zsets::bzpopmin;
    "bzpopmax", -3, WRITE, ALL_KEYS, zsets::bzpopmax;
    "lpush", -3, WRITE, ONE_KEY, lists::lpush;
    "rpush", -3, WRITE, ONE_KEY, lists::rpush;
    "lpushx", -3, WRITE, ONE_KEY, lists::lpushx;
    "rpushx", -3, WRITE, ONE_KEY, lists::rpushx;
    "lpop", -2, WRITE, ONE_KEY, lists::lpop;
    "rpop", -2, WRITE, ONE_KEY, lists::rpop;
    "llen", 2, READ, ONE_KEY, lists::llen;
    "lrange", 4, READ, ONE_KEY, lists::lrange;
    "lindex", 3, READ, ONE_KEY, lists::lindex;
    "lset", 4, WRITE, ONE_KEY, lists::lset;
    "lrem", 4, WRITE, ONE_KEY, lists::lrem;
    "ltrim", 4, WRITE, ONE_KEY, lists::ltrim;
    "linsert", 5, WRITE, ONE_KEY, lists::linsert;
    "lmove", 5, WRITE, (1, 2, 1), lists::lmove;
    "rpoplpush", 3, WRITE, (1, 2, 1), lists::rpoplpush;
}

/// Commands that act on a transaction rather than join its queue.
const TRANSACTION: &[&str] = &[
    "multi", "exec", "discard", "watch", "unwatch", "quit", "reset",
];

/// Marks the open transaction, if any, as refused: a command could not be queued.
fn refuse_queueing(session: &mut Session) {
    if let Some((_, refused)) = &mut session.queued {
        *refused = true;
    }
}

/// `MULTI`: queue the commands that follow until `EXEC`.
async fn multi(_: &RespShared, session: &mut Session, _: Args) -> Reply {
    if session.queued.is_some() {
        return Err(CommandError::Reply(Frame::err(
            "MULTI calls can not be nested",
        )));
    }
    session.queued = Some((Vec::new(), false));
    Ok(Frame::ok())
}

/// `EXEC`: runs the queued commands in order and replies with their replies. They run one
/// after another on this connection, but other clients' commands may interleave, and in a
/// cluster each is coordinated on its own: not the isolation of a Redis transaction.
async fn exec(shared: &RespShared, session: &mut Session, _: Args) -> Reply {
    let Some((queued, refused)) = session.queued.take() else {
        return Err(CommandError::Reply(Frame::err("EXEC without MULTI")));
    };
    if refused {
        return Err(CommandError::Reply(Frame::Error(
            "EXECABORT Transaction discarded because of previous errors.".into(),
        )));
    }
    let mut replies = Vec::with_capacity(queued.len());
    for command in queued {
        replies.push(Box::pin(execute(shared, session, command)).await);
    }
    Ok(Frame::Array(replies))
}

/// `DISCARD`: drops the queued commands.
async fn discard(_: &RespShared, session: &mut Session, _: Args) -> Reply {
    match session.queued.take() {
        Some(_) => Ok(Frame::ok()),
        None => Err(CommandError::Reply(Frame::err("DISCARD without MULTI"))),
    }
}

/// `WATCH` and `UNWATCH`: accepted, but keys are not watched: `EXEC` never aborts for a
/// changed key (use `SET ... GET` with conditions or the REST API's `If-Match` for
/// compare-and-set).
async fn watch(_: &RespShared, session: &mut Session, _: Args) -> Reply {
    if session.queued.is_some() {
        return Err(CommandError::Reply(Frame::err(
            "WATCH inside MULTI is not allowed",
        )));
    }
    Ok(Frame::ok())
}

/// Commands a client may send before `AUTH` when a password is set.
const BEFORE_AUTH: &[&str] = &["auth", "hello", "quit", "reset"];

/// Runs one request and returns its reply; never panics on any input.
pub async fn execute(shared: &RespShared, session: &mut Session, arguments: Vec<Bytes>) -> Frame {
    session.refresh_keyspace(&shared.node.keyspaces);
    session.refresh_access(&shared.node.users);
    let mut items = arguments.into_iter();
    let name_bytes = items.next().unwrap_or_default();

    let Some(spec) = COMMANDS
        .iter()
        .find(|spec| spec.name.as_bytes().eq_ignore_ascii_case(&name_bytes))
    else {
        refuse_queueing(session);
        return unknown_command(&name_bytes, items.as_slice());
    };
    let count = items.len() as i64 + 1;
    if (spec.arity >= 0 && count != spec.arity) || (spec.arity < 0 && count < -spec.arity) {
        refuse_queueing(session);
        return Frame::err(format!(
            "wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    if let Some((queued, _)) = &mut session.queued {
        if !TRANSACTION.contains(&spec.name) {
            queued.push(std::iter::once(name_bytes).chain(items).collect());
            return Frame::Simple("QUEUED".into());
        }
    }
    if needs_auth(session) && !BEFORE_AUTH.contains(&spec.name) {
        return Frame::Error(not_logged_in(shared));
    }
    if !permitted(shared, session, spec) {
        return Frame::Error(format!(
            "NOPERM User {} has no permissions to run the '{}' command",
            session.principal.name(),
            spec.name
        ));
    }
    count_served(shared, session, spec, items.as_slice());
    let args = Args {
        command: spec.name,
        items,
    };
    match dispatch(spec.name, shared, session, args).await {
        Ok(reply) => reply,
        Err(CommandError::ReplyTooLarge(limit)) => refuse_reply(shared, session, limit),
        Err(error) => error_frame(error),
    }
}

/// Counts a key command as a read or a write of the session, and offers its first key to the
/// node's hot-keys sketch.
fn count_served(shared: &RespShared, session: &mut Session, spec: &CommandSpec, args: &[Bytes]) {
    match spec.flags.first() {
        Some(&"readonly") => session.served.0 += 1,
        Some(&"write") => session.served.1 += 1,
        _ => return,
    }
    if spec.keys.0 > 0 {
        if let Some(key) = args.first() {
            shared.node.traffic.sample(&session.keyspace, key);
        }
    }
}

/// Counts `bytes` more of the reply being built against the bounds on reply memory, so a
/// command that gathers many values stops before it holds too many.
pub fn charge_reply(
    shared: &RespShared,
    session: &mut Session,
    bytes: usize,
) -> Result<(), CommandError> {
    shared
        .replies
        .charge(&mut session.reply_bytes, bytes)
        .map_err(CommandError::ReplyTooLarge)
}

/// The last reply of a client whose reply would pass `limit`: what it held is let go, and
/// the connection closes once this is written (logged and counted).
pub fn refuse_reply(shared: &RespShared, session: &mut Session, limit: ReplyLimit) -> Frame {
    shared.replies.release(&mut session.reply_bytes);
    session.closing = true;
    shared.metrics.disconnected(Disconnect::ReplyLimit);
    tracing::warn!(client = session.id, %limit, "disconnecting a Redis-protocol client");
    Frame::err(format!("{limit}; closing the connection"))
}

/// The reply for a command that failed.
fn error_frame(error: CommandError) -> Frame {
    match error {
        CommandError::Arity(command) => {
            Frame::err(format!("wrong number of arguments for '{command}' command"))
        }
        CommandError::Syntax => Frame::err("syntax error"),
        CommandError::NotInteger => Frame::err("value is not an integer or out of range"),
        CommandError::Reply(frame) => frame,
        CommandError::ReplyTooLarge(limit) => Frame::err(limit),
    }
}

/// A pipeline's SETs, parsed and checked but not yet submitted: they go to the store as one
/// job when the connection next needs their replies (one queue slot and one wake-up for the
/// lot), and share a group commit with each other and with other connections' writes. Each
/// asks only for what its reply needs: whether it applied, and with the GET option what it
/// replaced.
#[derive(Default)]
pub struct DeferredSets {
    requests: Vec<LocalWrite>,
}

impl DeferredSets {
    /// How many SETs are waiting.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Adds a prepared SET; `Err` is the reply of one that could not be prepared.
    fn push(&mut self, prepared: Result<LocalWrite, ReplicaError>) -> Result<(), Frame> {
        let prepared = prepared.map_err(|error| error_frame(error.into()))?;
        self.requests.push(prepared);
        Ok(())
    }
}

/// Whether `arguments` are a command [`start_deferred`] can take: a SET this session may
/// run on a single node. Any other command runs with [`execute`] once the deferred SETs
/// before it have finished.
pub fn defers(shared: &RespShared, session: &Session, arguments: &[Bytes]) -> bool {
    let is_set = arguments.len() >= 3 && arguments[0].eq_ignore_ascii_case(b"set");
    // SET ... GET checks the key's type first (see `strings::set`).
    let get = || {
        arguments[3..]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(b"get"))
    };
    is_set && serves_locally(shared, session) && !get()
}

/// Whether this session's GETs and SETs are served by this node's own replica without
/// [`execute`]: GETs answered by [`get_local`], SETs deferred ([`start_deferred`],
/// [`start_plain_set`]). So when the node is alone in its ring (in a cluster each read and
/// write is coordinated, run in order like any other command) and the session needs no
/// `AUTH` first.
pub fn serves_locally(shared: &RespShared, session: &Session) -> bool {
    session.verbs.1.contains(READ_WRITE)
        && shared.node.is_alone()
        && session.queued.is_none()
        && !session.is_strong()
}

/// `GET key` from this node's own replica, when [`serves_locally`] allows it: the reply
/// [`execute`] would give, without building the request's arguments.
pub fn get_local(shared: &RespShared, session: &Session, key: &[u8]) -> Frame {
    strings::get_local(shared, session, key).unwrap_or_else(error_frame)
}

/// Whether the session must authenticate before running anything but [`BEFORE_AUTH`].
fn needs_auth(session: &Session) -> bool {
    session.principal == Principal::Anonymous
}

/// The refusal of a command from a client that has not logged in: Redis's protected-mode
/// refusal when the node has no credentials at all, else `NOAUTH`.
fn not_logged_in(shared: &RespShared) -> String {
    let node = &shared.node;
    if node.users.any() || node.config.resp_password.is_some() {
        return "NOAUTH Authentication required.".into();
    }
    "DENIED ringkv is running in protected mode: no user exists, so only clients on this \
     machine's loopback are served. Create a user there (ringkv user add NAME --grant \
     all@*) and log in with AUTH, or set protected_mode = false on a network you trust."
        .into()
}

/// What GET and SET need to be served in place.
const READ_WRITE: Verbs = Verbs::ALL_DATA;

/// Whether the session's principal may run `spec`, in the spirit of Redis's ACL categories:
/// `@read` commands need `read` on the selected database's keyspace, `@write` ones `write`,
/// FLUSHDB `admin` there, FLUSHALL, CONFIG and DEBUG `admin` on every keyspace; connection
/// commands need nothing.
fn permitted(shared: &RespShared, session: &Session, spec: &CommandSpec) -> bool {
    let cluster = |session: &Session| {
        session
            .principal
            .may(&shared.node.users, Verbs::ADMIN, Scope::Cluster)
    };
    match spec.name {
        "flushall" | "config" | "debug" => cluster(session),
        "flushdb" => session.verbs.1.contains(Verbs::ADMIN),
        _ if spec.flags == WRITE => session.verbs.1.contains(Verbs::WRITE),
        _ if spec.flags == READ => session.verbs.1.contains(Verbs::READ),
        _ => true,
    }
}

/// Parses a `SET` that [`defers`] accepted and adds it to `sets`; `Err` is its immediate
/// error reply (the SETs before it must be answered first).
pub fn start_deferred(
    shared: &RespShared,
    session: &Session,
    arguments: Vec<Bytes>,
    sets: &mut DeferredSets,
) -> Result<(), Frame> {
    let mut items = arguments.into_iter();
    items.next(); // the command's name
    let args = Args {
        command: "set",
        items,
    };
    let (request, get) = strings::parse_set(shared, session, args).map_err(error_frame)?;
    defer(shared, session, request, get, sets)
}

/// [`start_deferred`] of a `SET key value` without options, read in place from the request:
/// the value is copied once, into the record the store encodes ahead of its writer
/// ([`local::prepare_put`]).
pub fn start_plain_set(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
    value: &[u8],
    sets: &mut DeferredSets,
) -> Result<(), Frame> {
    let conflict = keyspace_conflict(shared, session)?;
    let report = set_report(false);
    let prepared = local::prepare_put(
        &shared.node,
        keyspace(session),
        key,
        value,
        conflict,
        report,
    );
    sets.push(prepared)
}

/// Checks a parsed SET and adds it to `sets`, in the keyspace's conflict mode.
fn defer(
    shared: &RespShared,
    session: &Session,
    request: WriteRequest,
    get: bool,
    sets: &mut DeferredSets,
) -> Result<(), Frame> {
    let conflict = keyspace_conflict(shared, session)?;
    let prepared = local::prepare(&shared.node, request.conflict(conflict), set_report(get));
    sets.push(prepared)
}

/// What a SET's reply needs of its outcome: with the GET option, what it replaced.
fn set_report(get: bool) -> Report {
    Report {
        previous: get,
        context: false,
    }
}

/// How the session's keyspace resolves concurrent writes.
fn keyspace_conflict(shared: &RespShared, session: &Session) -> Result<ConflictMode, Frame> {
    Ok(keyspace_def(shared, session)
        .map_err(error_frame)?
        .conflict
        .into())
}

/// Submits the deferred SETs, waits for them and hands each one's reply, in order, to
/// `reply`.
pub async fn finish_deferred(
    shared: &RespShared,
    sets: &mut DeferredSets,
    mut reply: impl FnMut(Frame),
) {
    if sets.is_empty() {
        return;
    }
    // The next pipeline is likely as deep as this one: room for it, not growth by doubling.
    let depth = sets.requests.len();
    let requests = std::mem::replace(&mut sets.requests, Vec::with_capacity(depth));
    let gets: Vec<bool> = requests.iter().map(LocalWrite::wants_previous).collect();
    let outcomes = local::commit(&shared.node, requests).await;
    match outcomes {
        Ok(outcomes) => {
            for (outcome, get) in outcomes.into_iter().zip(gets) {
                let outcome = outcome.map_err(CoordinatorError::from);
                reply(strings::set_reply(get, outcome).unwrap_or_else(error_frame));
            }
        }
        // Not stored (a full queue, a failed commit): each SET gets the error.
        Err(error) => {
            let frame = error_frame(error.into());
            for _ in 0..gets.len() {
                reply(frame.clone());
            }
        }
    }
}

/// Redis 7's reply to an unknown command, word for word: the arguments are quoted until the
/// list reaches 128 bytes, each cut to what is left of those, so a request of a million
/// arguments gets a short reply.
fn unknown_command(name: &[u8], arguments: &[Bytes]) -> Frame {
    const ARGUMENTS_SHOWN_BYTES_MAX: usize = 128;
    let mut quoted = String::new();
    for argument in arguments {
        let room = ARGUMENTS_SHOWN_BYTES_MAX.saturating_sub(quoted.len());
        if room == 0 {
            break;
        }
        let shown = &argument[..argument.len().min(room)];
        quoted.push_str(&format!("'{}' ", String::from_utf8_lossy(shown)));
    }
    let name = String::from_utf8_lossy(&name[..name.len().min(128)]);
    Frame::err(format!(
        "unknown command '{name}', with args beginning with: {quoted}"
    ))
}

/// The keyspace of the session's database.
pub fn keyspace(session: &Session) -> &str {
    &session.keyspace
}

/// The definition of the session's keyspace: the session's copy while it is current.
pub fn keyspace_def<'s>(
    shared: &RespShared,
    session: &'s Session,
) -> Result<Cow<'s, KeyspaceDef>, CommandError> {
    let keyspaces = &shared.node.keyspaces;
    let def = match &session.keyspace_def {
        Some((seen, def)) if *seen == keyspaces.generation() => def.as_ref().map(Cow::Borrowed),
        _ => keyspaces.get(&session.keyspace).map(Cow::Owned),
    };
    def.ok_or_else(|| {
        CommandError::Reply(Frame::err(format!(
            "keyspace {} does not exist",
            session.keyspace
        )))
    })
}

/// The visible value(s) of a key, read at the session's consistency.
pub async fn read_entry(
    shared: &RespShared,
    session: &Session,
    key: &[u8],
) -> Result<Option<Entry>, CommandError> {
    let keyspace = keyspace_def(shared, session)?;
    Ok(coordinator::read(&shared.node, &keyspace, key, session.consistency).await?)
}

/// Applies one write at the session's consistency, refusing at once when the node is
/// overloaded.
pub async fn write(
    shared: &RespShared,
    session: &Session,
    request: WriteRequest,
) -> Result<WriteOutcome, CoordinatorError> {
    let keyspace = keyspace_def(shared, session).map_err(|_| {
        ReplicaError::Invalid(format!("keyspace {} does not exist", session.keyspace))
    })?;
    let request = request.conflict(keyspace.conflict.into());
    coordinator::write(&shared.node, &keyspace, request, session.consistency).await
}

/// Applies several writes: one atomic batch on a single node, each on its own in a cluster.
pub async fn write_many(
    shared: &RespShared,
    session: &Session,
    requests: Vec<WriteRequest>,
) -> Result<Vec<Result<WriteOutcome, CoordinatorError>>, CommandError> {
    let keyspace = keyspace_def(shared, session)?;
    let requests = requests
        .into_iter()
        .map(|request| request.conflict(keyspace.conflict.into()))
        .collect();
    Ok(coordinator::write_many(&shared.node, &keyspace, requests, session.consistency).await?)
}
