//! What a benchmark does, as pure logic: the YCSB core workloads (operation mixes and key
//! distributions), the key choosers (uniform, zipfian, latest), and key naming. No I/O, so
//! the distributions are unit-tested.

use rand::Rng;

/// One kind of operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl Op {
    /// Every kind, in report order.
    pub const ALL: [Op; 5] = [
        Op::Read,
        Op::Update,
        Op::Insert,
        Op::Scan,
        Op::ReadModifyWrite,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Update => "update",
            Op::Insert => "insert",
            Op::Scan => "scan",
            Op::ReadModifyWrite => "rmw",
        }
    }

    /// Index into per-operation tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Every existing key equally likely.
    Uniform,
    /// A few keys are hot (YCSB's scrambled zipfian, constant 0.99).
    Zipfian,
    /// The most recently inserted keys are hot.
    Latest,
}

impl std::str::FromStr for Distribution {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" => Ok(Distribution::Zipfian),
            "latest" => Ok(Distribution::Latest),
            other => Err(format!(
                "unknown distribution {other:?}: use uniform, zipfian or latest"
            )),
        }
    }
}

/// A workload: proportions of each operation (summing to 1) and a key distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub name: &'static str,
    /// (operation, proportion) pairs.
    pub mix: Vec<(Op, f64)>,
    pub distribution: Distribution,
}

impl Workload {
    /// The YCSB core workloads A to F, and plain `set` / `get` (uniform, like
    /// `redis-benchmark -r`).
    pub fn named(name: &str) -> Result<Workload, String> {
        use Distribution::*;
        use Op::*;
        let (name, mix, distribution): (&'static str, Vec<(Op, f64)>, Distribution) = match name {
            "a" => ("a", vec![(Read, 0.5), (Update, 0.5)], Zipfian),
            "b" => ("b", vec![(Read, 0.95), (Update, 0.05)], Zipfian),
            "c" => ("c", vec![(Read, 1.0)], Zipfian),
            "d" => ("d", vec![(Read, 0.95), (Insert, 0.05)], Latest),
            "e" => ("e", vec![(Scan, 0.95), (Insert, 0.05)], Zipfian),
            "f" => ("f", vec![(Read, 0.5), (ReadModifyWrite, 0.5)], Zipfian),
            "set" => ("set", vec![(Update, 1.0)], Uniform),
            "get" => ("get", vec![(Read, 1.0)], Uniform),
            other => {
                return Err(format!(
                    "unknown workload {other:?}: use a, b, c, d, e, f, set or get"
                ))
            }
        };
        Ok(Workload {
            name,
            mix,
            distribution,
        })
    }

    /// Picks the next operation.
    pub fn next_op(&self, rng: &mut impl Rng) -> Op {
        let mut point: f64 = rng.random();
        for &(op, share) in &self.mix {
            if point < share {
                return op;
            }
            point -= share;
        }
        self.mix.last().expect("a workload has operations").0
    }
}

/// The key of record number `n`: YCSB's "user" plus a hash, so that insertion order is not
/// key order.
pub fn key_name(n: u64) -> String {
    format!("user{}", fnv1a(n))
}

fn fnv1a(value: u64) -> u64 {
    value
        .to_le_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): item 0 is the most popular.
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// YCSB's default skew.
    pub const THETA: f64 = 0.99;

    /// A generator over `items` items.
    pub fn new(items: u64) -> Self {
        let items = items.max(1);
        let theta = Self::THETA;
        let zetan: f64 = (1..=items).map(|i| 1.0 / (i as f64).powf(theta)).sum();
        let zeta2 = 1.0 + 0.5f64.powf(theta);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// The next item, in `0..items`.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let item = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        item.min(self.items - 1)
    }
}

/// Picks record numbers for reads, updates and scans.
pub struct KeyChooser {
    distribution: Distribution,
    zipfian: Zipfian,
}

impl KeyChooser {
    /// A chooser over `records` records (inserts during the run extend the range).
    pub fn new(distribution: Distribution, records: u64) -> Self {
        Self {
            distribution,
            zipfian: Zipfian::new(records),
        }
    }

    /// A record number below `inserted`.
    pub fn next(&self, rng: &mut impl Rng, inserted: u64) -> u64 {
        let inserted = inserted.max(1);
        match self.distribution {
            Distribution::Uniform => rng.random_range(0..inserted),
            // Scrambled: hash the popularity rank so hot keys are spread over the keyspace.
            Distribution::Zipfian => fnv1a(self.zipfian.next(rng)) % inserted,
            Distribution::Latest => inserted - 1 - self.zipfian.next(rng).min(inserted - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipfian_makes_a_few_items_hot() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let zipf = Zipfian::new(1000);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.next(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
        let top_ten: u32 = counts[..10].iter().sum();
        assert!(
            top_ten > 30_000,
            "the ten hottest items draw {top_ten} of 100000"
        );
    }

    #[test]
    fn latest_prefers_recent_records() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let chooser = KeyChooser::new(Distribution::Latest, 1000);
        let recent = (0..10_000)
            .filter(|_| chooser.next(&mut rng, 1000) >= 990)
            .count();
        assert!(recent > 3_000, "{recent}");
    }

    #[test]
    fn workload_mixes_follow_their_proportions() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let workload = Workload::named("b").unwrap();
        let reads = (0..10_000)
            .filter(|_| workload.next_op(&mut rng) == Op::Read)
            .count();
        assert!((9_300..9_700).contains(&reads), "{reads}");
        assert!(Workload::named("z").is_err());
    }

    #[test]
    fn every_key_choice_is_an_existing_record() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for distribution in [
            Distribution::Uniform,
            Distribution::Zipfian,
            Distribution::Latest,
        ] {
            let chooser = KeyChooser::new(distribution, 100);
            assert!((0..1000).all(|_| chooser.next(&mut rng, 50) < 50));
        }
    }
}
