//! Hybrid logical clock (Kulkarni et al.): timestamps that follow wall time but never go
//! backwards and always advance past any timestamp this node has observed, so last-writer-wins
//! stays causal even when wall clocks are skewed.
//!
//! A timestamp is a u64: the upper 48 bits are unix milliseconds, the lower 16 a logical
//! counter that breaks ties inside one millisecond.

use std::sync::atomic::{AtomicU64, Ordering};

const LOGICAL_BITS: u32 = 16;

/// A hybrid-logical-clock timestamp; ordered like the u64 it wraps.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The wall-clock part, in unix milliseconds.
    pub fn wall_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The smallest timestamp at wall time `wall_ms`.
    pub fn from_wall_ms(wall_ms: u64) -> Self {
        Self(wall_ms << LOGICAL_BITS)
    }
}

/// A node's clock. Thread-safe; the wall time is passed in, so tests drive it.
#[derive(Debug, Default)]
pub struct HybridClock {
    last: AtomicU64,
}

impl HybridClock {
    /// A clock that has observed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh timestamp above every one issued or observed so far, and at least `wall_ms`.
    /// Once a peer's record has made the clock observe the largest timestamp, ticks stay
    /// there instead of wrapping to zero (which would make every later write lose).
    pub fn tick(&self, wall_ms: u64) -> Timestamp {
        let floor = Timestamp::from_wall_ms(wall_ms).0;
        let previous = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(floor.max(last.saturating_add(1)))
            })
            .expect("the update closure always returns Some");
        Timestamp(floor.max(previous.saturating_add(1)))
    }

    /// Records a timestamp seen from elsewhere so later ticks exceed it.
    pub fn observe(&self, seen: Timestamp) {
        self.last.fetch_max(seen.0, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_increase_even_when_wall_time_goes_back() {
        let clock = HybridClock::new();
        let a = clock.tick(1_000);
        let b = clock.tick(999);
        let c = clock.tick(1_000);
        assert!(a < b && b < c);
        assert_eq!(a.wall_ms(), 1_000);
    }

    #[test]
    fn observing_the_largest_timestamp_does_not_wrap_the_clock() {
        let clock = HybridClock::new();
        clock.observe(Timestamp(u64::MAX));
        assert_eq!(clock.tick(1_000), Timestamp(u64::MAX));
        assert_eq!(clock.tick(u64::MAX), Timestamp(u64::MAX));
    }

    #[test]
    fn ticks_pass_observed_timestamps() {
        let clock = HybridClock::new();
        let remote = Timestamp::from_wall_ms(5_000);
        clock.observe(remote);
        assert!(clock.tick(10) > remote);
    }
}
