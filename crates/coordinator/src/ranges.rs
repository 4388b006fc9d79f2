//! Ranges of the ring: the sets of key positions a node shares with a peer, streams while
//! joining or hands off while leaving, and how far each one's move has gone.
//!
//! A key's replicas are those of the first token at or after its hash, so they change only
//! at tokens: over the tokens of one or more rings, the arc that ends at a token (after the
//! one before it) has the same replicas in each ring throughout, those at that token, and the
//! arc after the last token wraps round to the first's. A property of the replicas therefore
//! holds on whole arcs, and the positions where it holds are a few sorted, disjoint,
//! inclusive ranges `[low, high]`.

use ringkv_core::ring::{key_hash, Ring};
use ringkv_replica::LocalStore;
use serde::{Deserialize, Serialize};

/// The ring positions where `holds` is true of the replicas, given the position of an arc's
/// end (where the replicas of every ring in `rings` are those of the whole arc): sorted,
/// disjoint, inclusive ranges, neighbours joined.
pub fn ranges_where(rings: &[&Ring], holds: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
    let mut tokens: Vec<u64> = rings
        .iter()
        .flat_map(|ring| ring.tokens().map(|(token, _)| token))
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut add = |low: u64, high: u64| {
        if !holds(high) {
            return;
        }
        match ranges.last_mut() {
            Some(previous) if previous.1.checked_add(1) == Some(low) => previous.1 = high,
            _ => ranges.push((low, high)),
        }
    };
    if tokens.is_empty() {
        return Vec::new();
    }
    let mut start = 0u64;
    for &token in &tokens {
        add(start, token);
        match token.checked_add(1) {
            Some(next) => start = next,
            None => return ranges,
        }
    }
    // After the last token: a position past every token walks round to the first.
    add(start, u64::MAX);
    ranges
}

/// The parts of `[low, high]` inside `ranges` (sorted and disjoint).
pub fn covered(
    ranges: &[(u64, u64)],
    low: u64,
    high: u64,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    let first = ranges.partition_point(|&(_, end)| end < low);
    ranges[first..]
        .iter()
        .take_while(move |&&(start, _)| start <= high)
        .map(move |&(start, end)| (start.max(low), end.min(high)))
}

/// How far the move of one range of one keyspace has gone, as `cluster status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeProgress {
    /// The keyspace.
    pub keyspace: String,
    /// The range's first ring position, as 16 hex digits.
    pub low: String,
    /// Its last ring position (inclusive), as 16 hex digits.
    pub high: String,
    /// The other side of the move: the donor a joining node streams the range from, or
    /// empty for a leaving node (whose keys go to several new owners).
    pub peer: String,
    /// Records of the range the sender held when the move began (from its hash trees'
    /// index); `None` if it could not count them.
    pub expected: Option<u64>,
    /// Records of the range moved so far.
    pub moved: u64,
}

/// The ranges of one stream (one keyspace from or to one peer) and how many records of each
/// have moved, found by each key's ring hash.
pub struct RangeTally {
    /// Sorted, disjoint, inclusive.
    bounds: Vec<(u64, u64)>,
    progress: Vec<RangeProgress>,
}

impl RangeTally {
    /// The stream of `keyspace`'s `ranges` (sorted, disjoint) from or to `peer`, with the
    /// records the sender holds in each when known.
    pub fn new(
        keyspace: &str,
        peer: &str,
        ranges: &[(u64, u64)],
        expected: &[Option<u64>],
    ) -> Self {
        let progress = ranges
            .iter()
            .enumerate()
            .map(|(index, &(low, high))| RangeProgress {
                keyspace: keyspace.to_owned(),
                low: format!("{low:016x}"),
                high: format!("{high:016x}"),
                peer: peer.to_owned(),
                expected: expected.get(index).copied().flatten(),
                moved: 0,
            })
            .collect();
        Self {
            bounds: ranges.to_vec(),
            progress,
        }
    }

    /// The stream of ranges as [`RangeTally::progress`] gave them, to go on counting after
    /// a restart; a range whose bounds do not parse is left out.
    pub fn resumed(progress: Vec<RangeProgress>) -> Self {
        let parse = |hex: &str| u64::from_str_radix(hex, 16).ok();
        let (bounds, progress) = progress
            .into_iter()
            .filter_map(|range| Some(((parse(&range.low)?, parse(&range.high)?), range)))
            .unzip();
        Self { bounds, progress }
    }

    /// The tally saved under metadata `name` by [`RangeTally::save`], if any can be read.
    pub fn load(store: &LocalStore, name: &str) -> Option<Self> {
        let saved = store.meta_get(name).ok().flatten()?;
        match serde_json::from_slice::<Vec<RangeProgress>>(&saved) {
            Ok(progress) => Some(Self::resumed(progress)),
            Err(error) => {
                tracing::warn!(name, %error, "saved range progress is unreadable");
                None
            }
        }
    }

    /// Saves the tally under metadata `name`, beside a stream's cursor, so a restarted stream
    /// goes on counting where it stood.
    pub fn save(&self, store: &LocalStore, name: &str) -> Result<(), String> {
        let json = serde_json::to_vec(&self.progress).map_err(|error| error.to_string())?;
        store
            .meta_put(name, &json)
            .map_err(|error| error.to_string())
    }

    /// Counts moved records by key; a key outside every range (a write that moved with
    /// them) counts nowhere.
    pub fn count<'a>(&mut self, keys: impl IntoIterator<Item = &'a [u8]>) {
        for key in keys {
            let hash = key_hash(key);
            let index = self.bounds.partition_point(|&(_, high)| high < hash);
            if self.bounds.get(index).is_some_and(|&(low, _)| low <= hash) {
                self.progress[index].moved += 1;
            }
        }
    }

    /// The ranges, sorted and disjoint.
    pub fn bounds(&self) -> &[(u64, u64)] {
        &self.bounds
    }

    /// Every range and how far it has gone.
    pub fn progress(&self) -> &[RangeProgress] {
        &self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::ring::Member;

    fn ring(ids: &[&str]) -> Ring {
        let members: Vec<Member> = ids
            .iter()
            .map(|id| Member {
                id: (*id).to_owned(),
                zone: (*id).to_owned(),
                weight: 1,
            })
            .collect();
        Ring::new(&members, 8)
    }

    proptest::proptest! {
        /// Goal: the ranges hold exactly the positions where the property holds of the
        /// replicas, over two rings at once, and a tally counts each key in its range.
        /// Method: a property of both rings' preference lists, checked at random positions
        /// and at every range's ends; random keys tallied against the same check.
        #[test]
        fn ranges_hold_exactly_the_positions_where_the_replicas_qualify(
            positions in proptest::collection::vec(proptest::prelude::any::<u64>(), 64),
            keys in proptest::collection::vec(proptest::prelude::any::<u64>(), 64),
        ) {
            let now = ring(&["a", "b", "c"]);
            let future = ring(&["a", "b", "c", "d"]);
            let holds = |position: u64| {
                future.preference_list_at(position, 2).iter().any(|m| m.id == "d")
                    && now.preference_list_at(position, 2)[0].id == "b"
            };
            let ranges = ranges_where(&[&now, &future], holds);
            proptest::prop_assert!(!ranges.is_empty());
            proptest::prop_assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "sorted and disjoint");
            let inside = |position: u64| covered(&ranges, position, position).next().is_some();
            let ends = ranges.iter().flat_map(|&(l, h)| [l, h]);
            for position in positions.into_iter().chain(ends) {
                proptest::prop_assert_eq!(inside(position), holds(position), "{:x}", position);
            }
            let mut tally = RangeTally::new("ks", "b", &ranges, &[]);
            let keys: Vec<[u8; 8]> = keys.iter().map(|k| k.to_le_bytes()).collect();
            tally.count(keys.iter().map(|k| &k[..]));
            let resumed = RangeTally::resumed(tally.progress().to_vec());
            proptest::prop_assert_eq!(resumed.progress(), tally.progress());
            proptest::prop_assert_eq!(&resumed.bounds, &tally.bounds);
            let counted: u64 = tally.progress().iter().map(|r| r.moved).sum();
            let qualifying = keys.iter().filter(|k| holds(key_hash(&k[..]))).count() as u64;
            proptest::prop_assert_eq!(counted, qualifying);
        }
    }
}
