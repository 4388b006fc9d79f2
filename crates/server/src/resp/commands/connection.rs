//! Connection commands: PING, ECHO, HELLO, AUTH, CLIENT, SELECT, QUIT, RESET, and ringkv's
//! own RINGKV.CONSISTENCY.

use super::{Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::{RespShared, DATABASES};
use ringkv_coordinator::consistency::{parse_count, Consistency, Level};
use ringkv_coordinator::keyspaces::REPLICATION_MAX;
use ringkv_coordinator::users::{self, Api, Credential, LoginRefused, Principal};
use subtle::ConstantTimeEq;

/// `PING [message]`.
pub async fn ping(_: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    match args.remaining() {
        0 => Ok(Frame::Simple("PONG".into())),
        1 => Ok(Frame::Bulk(args.bytes()?)),
        _ => Err(CommandError::Arity("ping")),
    }
}

/// `ECHO message`.
pub async fn echo(_: &RespShared, _: &mut Session, mut args: Args) -> Reply {
    Ok(Frame::Bulk(args.bytes()?))
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`: switches the protocol and
/// describes the server.
pub async fn hello(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let mut protocol = session.protocol;
    if args.remaining() > 0 {
        let requested = args.integer().map_err(|_| {
            CommandError::Reply(Frame::err(
                "Protocol version is not an integer or out of range",
            ))
        })?;
        if !(2..=3).contains(&requested) {
            return Err(CommandError::Reply(Frame::Error(
                "NOPROTO unsupported protocol version".into(),
            )));
        }
        protocol = requested as u8;
    }
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "AUTH" => {
                let (user, password) = (args.bytes()?, args.bytes()?);
                log_in(shared, session, Some(&user), &password).await?;
            }
            "SETNAME" => session.name = Some(args.text()?),
            _ => return Err(CommandError::Syntax),
        }
    }
    if session.principal == Principal::Anonymous {
        return Err(CommandError::Reply(Frame::Error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time"
                .into(),
        )));
    }
    session.protocol = protocol;
    Ok(Frame::Map(vec![
        (Frame::text("server"), Frame::text("redis")),
        (
            Frame::text("version"),
            Frame::text(super::server::REDIS_VERSION),
        ),
        (Frame::text("proto"), Frame::Integer(protocol.into())),
        (Frame::text("id"), Frame::Integer(session.id as i64)),
        (Frame::text("mode"), Frame::text("standalone")),
        (Frame::text("role"), Frame::text("master")),
        (Frame::text("modules"), Frame::Array(Vec::new())),
    ]))
}

/// `AUTH [username] password`: without a user name, the password of `default` (the
/// `resp_password`, or the user named `default`), or an API token.
pub async fn auth(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let mut credentials = args.rest();
    if credentials.len() > 2 {
        return Err(CommandError::Syntax);
    }
    let password = credentials.pop().unwrap_or_default();
    let user = credentials.pop();
    log_in(shared, session, user.as_deref(), &password).await?;
    Ok(Frame::ok())
}

/// Logs the session in as `user` (or `default`) with `password`, or refuses: failures are
/// rate limited per client address and counted.
async fn log_in(
    shared: &RespShared,
    session: &mut Session,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), CommandError> {
    let node = &shared.node;
    let user = match user {
        None => DEFAULT_USER,
        Some(user) => std::str::from_utf8(user).map_err(|_| wrong_pass())?,
    };
    let no_credentials = node.config.resp_password.is_none() && !node.users.any();
    if no_credentials && user == DEFAULT_USER {
        return Err(CommandError::Reply(Frame::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )));
    }
    // A token names its user: `AUTH token`, or `AUTH user token` for that user.
    let credential = match std::str::from_utf8(password) {
        Ok(token) if users::is_token(password) => Credential::Token(token),
        _ => Credential::Password { user, password },
    };
    let principal = match &node.config.resp_password {
        // `resp_password` is the built-in superuser's, checked here under the same throttle.
        Some(expected) if user == DEFAULT_USER => {
            node.logins
                .admit(Api::Resp, session.peer)
                .map_err(throttled)?;
            let equal: bool = expected.as_bytes().ct_eq(password).into();
            node.logins.record(Api::Resp, session.peer, equal);
            equal
                .then_some(Principal::Superuser)
                .ok_or_else(wrong_pass)?
        }
        _ => {
            let named = |name: &str| user == DEFAULT_USER || name == user;
            match users::log_in(node, Api::Resp, session.peer, credential, named).await {
                Ok(name) => Principal::User(name),
                Err(LoginRefused::Throttled(wait)) => return Err(throttled(wait)),
                Err(LoginRefused::Wrong) => return Err(wrong_pass()),
            }
        }
    };
    session.log_in(principal);
    session.refresh_access(&node.users);
    Ok(())
}

fn throttled(wait: std::time::Duration) -> CommandError {
    CommandError::Reply(Frame::err(format!(
        "too many failed logins from this address; retry in {} s",
        wait.as_secs().max(1)
    )))
}

/// The user `AUTH password` logs in as, as in Redis.
const DEFAULT_USER: &str = "default";

fn wrong_pass() -> CommandError {
    CommandError::Reply(Frame::Error(
        "WRONGPASS invalid username-password pair or user is disabled.".into(),
    ))
}

/// `CLIENT ID | GETNAME | SETNAME name | SETINFO attr value | INFO | LIST | NO-EVICT | NO-TOUCH`.
pub async fn client(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let subcommand = args.word()?;
    let reply = match subcommand.as_str() {
        "ID" => Frame::Integer(session.id as i64),
        "GETNAME" => Frame::optional_bulk(session.name.clone().map(String::into_bytes)),
        "SETNAME" => {
            let name = args.text()?;
            if name.contains(' ') || name.contains('\n') {
                return Err(CommandError::Reply(Frame::err(
                    "Client names cannot contain spaces, newlines or special characters.",
                )));
            }
            session.name = Some(name).filter(|n| !n.is_empty());
            Frame::ok()
        }
        "SETINFO" => {
            let (_attribute, _value) = (args.bytes()?, args.bytes()?);
            Frame::ok()
        }
        "NO-EVICT" | "NO-TOUCH" => {
            args.bytes()?;
            Frame::ok()
        }
        "INFO" | "LIST" => Frame::text(client_line(shared, session)),
        other => {
            return Err(CommandError::Reply(Frame::err(format!(
                "unknown subcommand '{}'. Try CLIENT HELP.",
                other.to_ascii_lowercase()
            ))))
        }
    };
    args.finish()?;
    Ok(reply)
}

fn client_line(_: &RespShared, session: &Session) -> String {
    format!(
        "id={} name={} db={} resp={}\n",
        session.id,
        session.name.as_deref().unwrap_or(""),
        session.db,
        session.protocol
    )
}

/// `SELECT index`: databases 0 to 15; or `SELECT name`: any keyspace by its name (a strong
/// keyspace is reached this way).
pub async fn select(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let argument = args.bytes()?;
    let Ok(index) = std::str::from_utf8(&argument).unwrap_or("").parse::<i64>() else {
        let name = String::from_utf8_lossy(&argument);
        let keyspaces = &shared.node.keyspaces;
        let generation = keyspaces.generation();
        let def = keyspaces
            .get(&name)
            .ok_or_else(|| CommandError::Reply(Frame::err(format!("no keyspace {name:?}"))))?;
        session.select_keyspace(def, generation);
        return Ok(Frame::ok());
    };
    if !(0..i64::from(DATABASES)).contains(&index) {
        return Err(CommandError::Reply(Frame::err("DB index is out of range")));
    }
    session.select(index as u8);
    Ok(Frame::ok())
}

/// `QUIT`: replies OK and closes the connection.
pub async fn quit(_: &RespShared, session: &mut Session, _: Args) -> Reply {
    session.closing = true;
    Ok(Frame::ok())
}

/// `RESET`: back to a fresh connection's state.
pub async fn reset(shared: &RespShared, session: &mut Session, _: Args) -> Reply {
    let principal = Principal::default_for(&shared.node, session.peer, Api::Resp);
    *session = Session::new(session.id, principal, session.peer);
    Ok(Frame::Simple("RESET".into()))
}

/// `RINGKV.CONSISTENCY [ONE | QUORUM | ALL] [R count] [W count] [PW count]`: sets the
/// consistency of this connection's reads (R) and writes (W) — a level, explicit counts (a
/// number or a level name), or both (counts override the level; all are bounded by each
/// keyspace's replication when used). PW is how many of a write's acknowledgements must come
/// from the key's own replicas rather than fallbacks holding hints (Riak's `pw`). Without
/// arguments, replies with the current setting, e.g. `quorum` or `one r=2`. New connections
/// and `RESET` start at `quorum`.
pub async fn consistency(_: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    if args.remaining() == 0 {
        return Ok(Frame::text(describe(&session.consistency)));
    }
    let invalid = |message: String| CommandError::Reply(Frame::err(message));
    let mut consistency = Consistency::default();
    while args.remaining() > 0 {
        let word = args.word()?;
        match word.as_str() {
            "R" | "W" | "PW" => {
                let text = args.text()?;
                let name = word.to_ascii_lowercase();
                let count = parse_count(&name, &text, REPLICATION_MAX).map_err(invalid)?;
                match word.as_str() {
                    "R" => consistency.r = Some(count),
                    "W" => consistency.w = Some(count),
                    _ => consistency.pw = Some(count),
                }
            }
            level => consistency.level = Level::parse(level).map_err(invalid)?,
        }
    }
    session.consistency = consistency;
    Ok(Frame::ok())
}

fn describe(consistency: &Consistency) -> String {
    let mut text = consistency.level.to_string();
    if let Some(r) = consistency.r {
        text.push_str(&format!(" r={r}"));
    }
    if let Some(w) = consistency.w {
        text.push_str(&format!(" w={w}"));
    }
    if let Some(pw) = consistency.pw {
        text.push_str(&format!(" pw={pw}"));
    }
    text
}
