//! Iteration: SCAN (cursor-based, with MATCH, COUNT and TYPE) and KEYS.
//!
//! SCAN gives Redis's guarantee: a key present for the whole iteration is returned at least
//! once (here exactly once, since keys come in order and each cursor resumes after the last
//! key examined). Cursors are decimal numbers naming a saved position; see `RespShared`.

use super::{keyspace_def, Args, CommandError, Reply, Session};
use crate::resp::frame::Frame;
use crate::resp::glob;
use crate::resp::RespShared;
use ringkv_coordinator::coordinator;
use ringkv_coordinator::keyspaces::KeyspaceDef;

/// SCAN's COUNT when none is given, as in Redis.
const SCAN_COUNT_DEFAULT: usize = 10;
/// The largest COUNT honoured; larger ones are clamped.
const SCAN_COUNT_MAX: usize = 10_000;
/// Most keys KEYS returns before refusing (use SCAN beyond that).
const KEYS_MAX: usize = 1_000_000;

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub async fn scan(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let cursor_text = args.text()?;
    let cursor: u64 = cursor_text
        .parse()
        .map_err(|_| CommandError::Reply(Frame::err("invalid cursor")))?;
    let (mut pattern, mut count, mut type_filter) = (None, SCAN_COUNT_DEFAULT, None);
    while args.remaining() > 0 {
        match args.word()?.as_str() {
            "MATCH" => pattern = Some(args.bytes()?.to_vec()),
            "COUNT" => {
                let requested = args.integer()?;
                if requested < 1 {
                    return Err(CommandError::Syntax);
                }
                count = (requested as usize).min(SCAN_COUNT_MAX);
            }
            "TYPE" => type_filter = Some(args.text()?.to_ascii_lowercase()),
            _ => return Err(CommandError::Syntax),
        }
    }
    let after = match cursor {
        0 => None,
        id => Some(
            shared
                .cursor(session.db, id)
                .ok_or(CommandError::Reply(Frame::err("invalid cursor")))?,
        ),
    };
    let prefix = pattern
        .as_deref()
        .map(glob::literal_prefix)
        .unwrap_or_default();
    let keyspace = keyspace_def(shared, session)?;
    let page = coordinator::scan(&shared.node, &keyspace, &prefix, after.as_deref(), count).await?;
    let mut keys = Vec::new();
    for (key, entry) in page.entries {
        let type_matches = || match &type_filter {
            None => Ok::<_, CommandError>(true),
            Some(wanted) => Ok(entry.value()?.data_type().redis_name() == wanted),
        };
        if pattern.as_deref().is_none_or(|p| glob::matches(p, &key)) && type_matches()? {
            super::charge_reply(shared, session, key.len() + 16)?;
            keys.push(Frame::Bulk(key.into()));
        }
    }
    let next = page
        .next_after
        .map_or(0, |after| shared.save_cursor(session.db, after));
    Ok(scan_reply(next, keys))
}

fn scan_reply(cursor: u64, keys: Vec<Frame>) -> Frame {
    Frame::Array(vec![Frame::text(cursor.to_string()), Frame::Array(keys)])
}

/// Walks the keys of a keyspace with a prefix, a page at a time, in order.
pub struct KeyPages {
    keyspace: KeyspaceDef,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    done: bool,
}

impl KeyPages {
    /// Keys of `keyspace` starting with `prefix`.
    pub fn new(keyspace: KeyspaceDef, prefix: Vec<u8>) -> Self {
        Self {
            keyspace,
            prefix,
            after: None,
            done: false,
        }
    }

    /// The next page of keys, `None` once every key was returned.
    pub async fn next_page(
        &mut self,
        shared: &RespShared,
    ) -> Result<Option<Vec<Vec<u8>>>, CommandError> {
        if self.done {
            return Ok(None);
        }
        let after = self.after.as_deref();
        let page =
            coordinator::scan(&shared.node, &self.keyspace, &self.prefix, after, 1000).await?;
        self.done = page.next_after.is_none();
        self.after = page.next_after;
        Ok(Some(page.entries.into_iter().map(|(key, _)| key).collect()))
    }
}

/// `KEYS pattern`: every matching key, in order.
pub async fn keys(shared: &RespShared, session: &mut Session, mut args: Args) -> Reply {
    let pattern = args.bytes()?;
    let mut pages = KeyPages::new(
        keyspace_def(shared, session)?.into_owned(),
        glob::literal_prefix(&pattern),
    );
    let mut found = Vec::new();
    while let Some(page) = pages.next_page(shared).await? {
        for key in page.into_iter().filter(|key| glob::matches(&pattern, key)) {
            if found.len() == KEYS_MAX {
                let message = format!("more than {KEYS_MAX} keys match; use SCAN");
                return Err(CommandError::Reply(Frame::err(message)));
            }
            super::charge_reply(shared, session, key.len() + 16)?;
            found.push(Frame::Bulk(key.into()));
        }
    }
    Ok(Frame::Array(found))
}

/// Counts the keys of a keyspace by scanning it (`DBSIZE`).
pub async fn count_keys(shared: &RespShared, keyspace: KeyspaceDef) -> Result<i64, CommandError> {
    let mut pages = KeyPages::new(keyspace, Vec::new());
    let mut count = 0;
    while let Some(page) = pages.next_page(shared).await? {
        count += page.len() as i64;
    }
    Ok(count)
}
