//! Scans: the memtables' entries merged over the tables', a pass at a time.
//!
//! Each source (the active memtable, each sealed one, the tables) gives at most as many
//! entries as the page wants. Where a source gave that many it may hold more, so the merge is
//! exact only up to the smallest last key among such sources: its *horizon*. Deletes in a
//! memtable hide entries below, so a pass can end with fewer visible entries than wanted; the
//! next pass starts after the horizon, which moves past at least one entry every time.

use super::memtable::{Memtable, Slot};
use super::TableRange;
use crate::engine::{KeyValue, ScanRange, StorageError};
use std::collections::BTreeMap;
use std::ops::Bound;

/// Up to `limit` visible entries of `range`, merged from the runs `pass` gives for what is
/// left of the range, a pass at a time.
pub fn in_passes(
    range: &ScanRange,
    limit: usize,
    mut pass: impl FnMut(&ScanRange) -> Result<Vec<Run>, StorageError>,
) -> Result<Vec<KeyValue>, StorageError> {
    let mut page = Vec::new();
    let mut range = range.clone();
    while page.len() < limit {
        let runs = pass(&range)?;
        match merge_pass(runs, limit, &mut page) {
            Some(horizon) => range = range.after(&horizon),
            None => break,
        }
    }
    Ok(page)
}

/// One run per memtable (given newest first) of its entries within `bounds`, at most
/// `fetch` each.
pub fn memtable_runs<'a>(
    newest_first: impl Iterator<Item = &'a Memtable>,
    bounds: (Bound<&[u8]>, Bound<&[u8]>),
    fetch: usize,
) -> Vec<Run> {
    newest_first
        .map(|memtable| Run::new(memtable.range(bounds, fetch), fetch))
        .collect()
}

/// The run of at most `fetch` entries of the tables' range.
pub fn table_run(tables: TableRange<'_>, fetch: usize) -> Result<Run, StorageError> {
    let mut stored = Vec::new();
    for entry in tables.take(fetch) {
        let (key, value) = entry?;
        stored.push((key, Some(value)));
    }
    Ok(Run::new(stored, fetch))
}

/// One source's entries for a pass, in key order.
pub struct Run {
    /// The entries (`None`: a delete).
    pub entries: Vec<(Vec<u8>, Slot)>,
    /// Whether the source may hold more entries in the range than it gave.
    pub truncated: bool,
}

impl Run {
    /// A run of the entries a source gave when asked for at most `fetched`.
    pub fn new(entries: Vec<(Vec<u8>, Slot)>, fetched: usize) -> Self {
        let truncated = entries.len() >= fetched;
        Self { entries, truncated }
    }
}

/// Merges one pass of `runs` (newest first: a newer run's entry wins) and appends the visible
/// entries to `page` until it holds `limit`. Returns the horizon when some run was truncated:
/// the caller continues after it if the page is not full.
pub fn merge_pass(runs: Vec<Run>, limit: usize, page: &mut Vec<KeyValue>) -> Option<Vec<u8>> {
    let horizon = runs
        .iter()
        .filter(|run| run.truncated)
        .filter_map(|run| run.entries.last().map(|(key, _)| key.clone()))
        .min();
    let mut merged: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
    for run in runs.into_iter().rev() {
        for (key, slot) in run.entries {
            if horizon.as_ref().is_some_and(|horizon| key > *horizon) {
                break;
            }
            merged.insert(key, slot);
        }
    }
    let visible = merged
        .into_iter()
        .filter_map(|(key, slot)| Some((key, slot?.to_vec())));
    page.extend(visible.take(limit.saturating_sub(page.len())));
    horizon
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn put(key: &str, value: &str) -> (Vec<u8>, Slot) {
        (key.as_bytes().to_vec(), Some(Bytes::from(value.to_owned())))
    }

    fn delete(key: &str) -> (Vec<u8>, Slot) {
        (key.as_bytes().to_vec(), None)
    }

    fn keys(page: &[KeyValue]) -> Vec<&str> {
        page.iter()
            .map(|(k, _)| std::str::from_utf8(k).unwrap())
            .collect()
    }

    #[test]
    fn newer_runs_win_and_deletes_hide_older_values() {
        let newest = Run::new(vec![put("a", "new"), delete("b")], 10);
        let oldest = Run::new(vec![put("a", "old"), put("b", "old"), put("c", "old")], 10);
        let mut page = Vec::new();
        assert_eq!(merge_pass(vec![newest, oldest], 10, &mut page), None);
        assert_eq!(
            page,
            vec![
                (b"a".to_vec(), b"new".to_vec()),
                (b"c".to_vec(), b"old".to_vec())
            ]
        );
    }

    #[test]
    fn a_truncated_run_bounds_the_pass_at_its_last_key() {
        // The memtable gave its first two entries of more: the table's "c" may be hidden by
        // a delete the memtable did not give yet, so it must wait for the next pass.
        let memtable = Run::new(vec![delete("a"), delete("b")], 2);
        let table = Run::new(vec![put("a", "1"), put("c", "3")], 2);
        let mut page = Vec::new();
        assert_eq!(
            merge_pass(vec![memtable, table], 2, &mut page),
            Some(b"b".to_vec())
        );
        assert!(page.is_empty());
    }

    #[test]
    fn a_page_stops_at_its_limit() {
        let run = Run::new(vec![put("a", "1"), put("b", "2"), put("c", "3")], 10);
        let mut page = vec![(b"0".to_vec(), b"0".to_vec())];
        merge_pass(vec![run], 3, &mut page);
        assert_eq!(keys(&page), vec!["0", "a", "b"]);
    }
}
