//! Per-request consistency: how many of a key's N replicas must answer a read (R) or
//! acknowledge a write (W). Clients name a level (`one`, `quorum`, `all`) or give `r`/`w`
//! explicitly; both are bounded by the keyspace's replication and, while the cluster has fewer
//! nodes than that, by the nodes there are.
//!
//! `local_quorum` and `each_quorum` are accepted for Cassandra users and mean `quorum`: a
//! ringkv cluster is one data centre (zones are racks within it).
//!
//! A strong keyspace's reads are linearizable by default (`linearizable`, the same as
//! `quorum` there); `serializable` (or `one`) reads any member's copy, which may be behind.
//! On a leaderless keyspace `serializable` means `one`, and `linearizable` `quorum`.

use std::fmt;

/// A named consistency level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Level {
    /// One replica.
    One,
    /// A majority of the replicas.
    #[default]
    Quorum,
    /// Every replica.
    All,
    /// A strong keyspace's read from any member, which may be behind (`one` elsewhere).
    Serializable,
}

/// An explicit `r` or `w`: a number of replicas, or a level name as Riak accepts
/// (`w=quorum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many replicas (bounded by those that exist).
    Exact(usize),
    /// As many as the level needs.
    Level(Level),
}

impl Count {
    fn of(self, n: usize) -> usize {
        match self {
            Count::Exact(count) => count.clamp(1, n.max(1)),
            Count::Level(level) => level.of(n),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::Exact(count) => write!(f, "{count}"),
            Count::Level(level) => write!(f, "{level}"),
        }
    }
}

/// What one request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Consistency {
    /// The level, used where no explicit count is given.
    pub level: Level,
    /// Replicas that must answer a read, if given explicitly.
    pub r: Option<Count>,
    /// Replicas that must acknowledge a write, if given explicitly.
    pub w: Option<Count>,
    /// How many of a write's W acknowledgements must come from the key's own replicas, not
    /// from fallback nodes holding a hint for one (Riak's `pw`); none when not given.
    pub pw: Option<Count>,
}

impl Level {
    /// Parses a level name as clients send it.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "one" => Ok(Level::One),
            "quorum" | "local_quorum" | "each_quorum" | "linearizable" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            "serializable" => Ok(Level::Serializable),
            _ => Err(format!(
                "consistency {name:?} is not one of one, quorum, all, local_quorum, \
                 each_quorum, linearizable, serializable"
            )),
        }
    }

    /// Replicas this level needs out of `n`.
    pub fn of(self, n: usize) -> usize {
        match self {
            Level::One | Level::Serializable => 1,
            Level::Quorum => n / 2 + 1,
            Level::All => n,
        }
        .clamp(1, n.max(1))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
            Level::Serializable => "serializable",
        })
    }
}

impl Consistency {
    /// Whether a strong keyspace's read must be linearizable: unless the client asked for a
    /// read of any member's copy.
    pub fn linearizable(&self) -> bool {
        let local = |count: Option<Count>| {
            matches!(count, Some(Count::Exact(1) | Count::Level(Level::One)))
        };
        !matches!(self.level, Level::One | Level::Serializable) && !local(self.r)
    }

    /// A plain level.
    pub fn level(level: Level) -> Self {
        Self {
            level,
            r: None,
            w: None,
            pw: None,
        }
    }

    /// Parses `?consistency=` and an explicit count (`r` or `w`), checking the count against
    /// the keyspace's replication `replication`.
    pub fn parse(
        level: Option<&str>,
        counts: &[(&str, Option<&str>)],
        replication: u32,
    ) -> Result<Self, String> {
        let mut consistency = Self::level(level.map(Level::parse).transpose()?.unwrap_or_default());
        for (name, text) in counts {
            let Some(text) = text else { continue };
            let count = parse_count(name, text, replication)?;
            match *name {
                "r" => consistency.r = Some(count),
                "pw" => consistency.pw = Some(count),
                _ => consistency.w = Some(count),
            }
        }
        Ok(consistency)
    }

    /// Replicas that must answer a read out of `n`.
    pub fn reads(&self, n: usize) -> usize {
        self.r.unwrap_or(Count::Level(self.level)).of(n)
    }

    /// Replicas that must acknowledge a write out of `n`.
    pub fn writes(&self, n: usize) -> usize {
        self.w.unwrap_or(Count::Level(self.level)).of(n)
    }

    /// How many of the key's own `n` replicas must acknowledge a write (0: fallbacks may
    /// stand in for any of them).
    pub fn primary_writes(&self, n: usize) -> usize {
        self.pw.map_or(0, |pw| pw.of(n))
    }
}

/// An explicit `r` or `w`: 1 to the keyspace's replication, or a level name.
pub fn parse_count(name: &str, text: &str, replication: u32) -> Result<Count, String> {
    if let Ok(level) = Level::parse(text) {
        return Ok(Count::Level(level));
    }
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=replication).contains(n))
        .map(|n| Count::Exact(n as usize))
        .ok_or_else(|| {
            format!(
                "{name} must be 1 to {replication} (the keyspace's replication) or one, quorum, \
                 all; not {text:?}"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_need_the_right_share_of_replicas() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(|n| Level::Quorum.of(n)),
            [1, 2, 2, 3, 3]
        );
        assert_eq!(Level::All.of(3), 3);
        assert_eq!(Level::One.of(3), 1);
        // A cluster smaller than the replication: levels apply to the replicas that exist.
        assert_eq!(Level::All.of(1), 1);
    }

    #[test]
    fn explicit_counts_override_the_level_and_are_bounded() {
        let c = Consistency::parse(Some("one"), &[("r", Some("3"))], 3).unwrap();
        assert_eq!((c.reads(3), c.writes(3)), (3, 1));
        assert_eq!(c.reads(2), 2, "bounded by the replicas that exist");
        assert!(Consistency::parse(None, &[("w", Some("4"))], 3).is_err());
        assert!(Consistency::parse(None, &[("w", Some("0"))], 3).is_err());
        assert!(Consistency::parse(Some("most"), &[], 3).is_err());
        let named = Consistency::parse(None, &[("w", Some("all")), ("r", Some("one"))], 3).unwrap();
        assert_eq!((named.reads(3), named.writes(3)), (1, 3));
        assert_eq!(
            Consistency::parse(Some("LOCAL_QUORUM"), &[], 3).unwrap(),
            Consistency::default()
        );
        let strict = Consistency::parse(None, &[("pw", Some("all"))], 3).unwrap();
        assert_eq!((strict.writes(3), strict.primary_writes(3)), (2, 3));
        assert_eq!(Consistency::default().primary_writes(3), 0);
    }
}
