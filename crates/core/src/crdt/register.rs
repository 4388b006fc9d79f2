//! Last-writer-wins registers with counters inside: a hash's field ([`Field`]) and a sorted
//! set's score ([`Score`]). A write stamps the register with its hybrid-clock timestamp and
//! replica, and the later stamp wins a merge. Increments (`HINCRBY`, `HINCRBYFLOAT`,
//! `ZINCRBY`) do not restamp it: they count in a PN-counter that belongs to the stamp, so
//! concurrent increments through different replicas all count, while a later plain write
//! replaces the value and its increments alike.

use super::counter::{Counter, FloatCounter, Overflow};
use super::ormap::Lattice;
use super::StateError;
use crate::causal::ReplicaId;
use crate::codec::{put_bytes, Reader};
use crate::hlc::Timestamp;
use crate::limits::VALUE_BYTES_MAX;

/// When a register was written, and by whom: the total order last-writer-wins uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// The write's hybrid-clock timestamp.
    pub timestamp: Timestamp,
    /// The replica that wrote it (a tie-break).
    pub replica: ReplicaId,
}

impl Stamp {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.0.to_le_bytes());
        out.extend_from_slice(&self.replica.0.to_le_bytes());
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError> {
        Ok(Stamp {
            timestamp: Timestamp(reader.u64()?),
            replica: ReplicaId(reader.u64()?),
        })
    }
}

/// Why an increment cannot apply to a register.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IncrementError {
    /// The value is not a decimal integer.
    #[error("hash value is not an integer")]
    NotAnInteger,
    /// The value is not a number.
    #[error("hash value is not a float")]
    NotAFloat,
    /// The result would leave the 64-bit range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// The result would be infinite or not a number.
    #[error("increment would produce NaN or Infinity")]
    NotFinite,
}

impl From<Overflow> for IncrementError {
    fn from(_: Overflow) -> Self {
        IncrementError::Overflow
    }
}

/// A hash field: bytes written last, plus the integer or float increments made since.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    stamp: Stamp,
    base: Vec<u8>,
    integers: Counter,
    floats: FloatCounter,
}

impl Field {
    /// A field written with `value` at `stamp`.
    pub fn new(stamp: Stamp, value: Vec<u8>) -> Self {
        Field {
            stamp,
            base: value,
            integers: Counter::new(),
            floats: FloatCounter::default(),
        }
    }

    /// The value a read returns: the bytes, or the number the increments made of them.
    pub fn value(&self) -> Vec<u8> {
        if !self.floats.is_empty() {
            let base = parse_float(&self.base).unwrap_or(0.0);
            let integers = self.integers.value() as f64;
            return format_float(base + integers + self.floats.value()).into_bytes();
        }
        if self.integers.replicas() == 0 {
            return self.base.clone();
        }
        let base = parse_integer(&self.base).unwrap_or(0);
        (i128::from(base) + self.integers.value())
            .to_string()
            .into_bytes()
    }

    /// Adds `by` to the integer the field holds, as an operation of `replica`; the new value.
    pub fn increment(&mut self, replica: ReplicaId, by: i64) -> Result<i64, IncrementError> {
        if !self.floats.is_empty() {
            // Float increments made it a float: HINCRBY then needs an integer as it stands.
            let now = parse_integer(&self.value()).ok_or(IncrementError::NotAnInteger)?;
            let next = now.checked_add(by).ok_or(IncrementError::Overflow)?;
            *self = Field::new(self.stamp, next.to_string().into_bytes());
            return Ok(next);
        }
        let base = parse_integer(&self.base).ok_or(IncrementError::NotAnInteger)?;
        let mut counted = self.integers.clone();
        counted.increment(replica, by)?;
        let next = i128::from(base) + counted.value();
        let next = i64::try_from(next).map_err(|_| IncrementError::Overflow)?;
        self.integers = counted;
        Ok(next)
    }

    /// Adds the float `by`, as an operation of `replica`; the new value as Redis prints it.
    pub fn increment_float(
        &mut self,
        replica: ReplicaId,
        by: f64,
    ) -> Result<String, IncrementError> {
        let now = parse_float(&self.value()).ok_or(IncrementError::NotAFloat)?;
        let next = now + by;
        if !next.is_finite() || !by.is_finite() {
            return Err(IncrementError::NotFinite);
        }
        if parse_float(&self.base).is_none() {
            // Only a number can take increments: restate the value as one first.
            *self = Field::new(self.stamp, format_float(now).into_bytes());
        }
        self.floats.add(replica, by);
        Ok(format_float(self.value_float()))
    }

    fn value_float(&self) -> f64 {
        parse_float(&self.value()).unwrap_or(0.0)
    }
}

impl Lattice for Field {
    fn merge(&mut self, other: &Self) {
        if other.stamp > self.stamp {
            *self = other.clone();
        } else if other.stamp == self.stamp {
            self.integers.merge(&other.integers);
            self.floats.merge(&other.floats);
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        self.stamp.encode_into(out);
        put_bytes(out, &self.base);
        self.integers.encode_into(out);
        self.floats.encode_into(out);
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError> {
        Ok(Field {
            stamp: Stamp::decode_from(reader)?,
            base: reader.bytes("field value", VALUE_BYTES_MAX)?.to_vec(),
            integers: Counter::decode_from(reader)?,
            floats: FloatCounter::decode_from(reader)?,
        })
    }
}

/// A sorted set member's score: the score written last, plus the increments made since.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    stamp: Stamp,
    base: f64,
    increments: FloatCounter,
}

impl Score {
    /// A score written as `score` at `stamp`.
    pub fn new(stamp: Stamp, score: f64) -> Self {
        Score {
            stamp,
            base: score,
            increments: FloatCounter::default(),
        }
    }

    /// The score.
    pub fn value(&self) -> f64 {
        if self.increments.is_empty() {
            self.base
        } else {
            self.base + self.increments.value()
        }
    }

    /// Adds `by` as an operation of `replica`; the new score. NaN is refused (as Redis does).
    pub fn increment(&mut self, replica: ReplicaId, by: f64) -> Result<f64, IncrementError> {
        let next = self.value() + by;
        if next.is_nan() {
            return Err(IncrementError::NotFinite);
        }
        if self.value().is_infinite() || by.is_infinite() {
            // Infinities do not count back down: restate the score instead.
            *self = Score::new(self.stamp, next);
        } else {
            self.increments.add(replica, by);
        }
        Ok(self.value())
    }
}

impl Lattice for Score {
    fn merge(&mut self, other: &Self) {
        if other.stamp > self.stamp {
            *self = other.clone();
        } else if other.stamp == self.stamp {
            self.increments.merge(&other.increments);
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        self.stamp.encode_into(out);
        out.extend_from_slice(&self.base.to_le_bytes());
        self.increments.encode_into(out);
    }

    fn decode_from(reader: &mut Reader<'_>) -> Result<Self, StateError> {
        let stamp = Stamp::decode_from(reader)?;
        let base = f64::from_bits(reader.u64()?);
        if base.is_nan() {
            return Err(StateError::Invalid("a score is NaN"));
        }
        Ok(Score {
            stamp,
            base,
            increments: FloatCounter::decode_from(reader)?,
        })
    }
}

/// A canonical decimal i64, as Redis's integer commands accept one (no "+1", " 1", "01").
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let parsed: i64 = text.parse().ok()?;
    (parsed.to_string() == text).then_some(parsed)
}

/// A float as Redis's float commands accept one: no spaces, no NaN, `inf` allowed.
pub fn parse_float(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.trim() != text {
        return None;
    }
    let parsed = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => text.parse::<f64>().ok()?,
    };
    (!parsed.is_nan()).then_some(parsed)
}

/// A float as INCRBYFLOAT and HINCRBYFLOAT print it: the shortest decimal that reads back
/// as the same number, with no exponent and no trailing zeros (`3`, `10.5`, `0.00001`).
pub fn format_float(number: f64) -> String {
    if number == number.trunc() && number.abs() < 1e17 {
        return format!("{}", number as i64);
    }
    let text = format!("{number}");
    if !text.contains('e') {
        return text;
    }
    // Rust writes very large or small numbers with an exponent; Redis never does.
    let precise = format!("{number:.17}");
    precise
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_owned()
}

/// A score as Redis 7.0 prints one (C's `%.17g`): 17 significant digits, trailing zeros
/// dropped, an exponent below 1e-4 or from 1e17; `inf` and `-inf`.
pub fn format_score(score: f64) -> String {
    if score.is_infinite() {
        return if score > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if score == 0.0 {
        return if score.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let scientific = format!("{score:.16e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes a decimal exponent");
    if !(-4..17).contains(&exponent) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let decimals = (16 - exponent).max(0) as usize;
    trim_fraction(&format!("{score:.decimals$}")).to_owned()
}

fn trim_fraction(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(timestamp: u64, replica: u64) -> Stamp {
        Stamp {
            timestamp: Timestamp(timestamp),
            replica: ReplicaId(replica),
        }
    }

    #[test]
    fn concurrent_increments_of_one_field_all_count_and_a_later_write_replaces_them() {
        let mut left = Field::new(stamp(1, 1), b"10".to_vec());
        let mut right = left.clone();
        assert_eq!(left.increment(ReplicaId(1), 5), Ok(15));
        assert_eq!(right.increment(ReplicaId(2), -3), Ok(7));
        let mut merged = left.clone();
        merged.merge(&right);
        assert_eq!(merged.value(), b"12");
        let mut other_way = right.clone();
        other_way.merge(&left);
        assert_eq!(other_way, merged);
        let rewritten = Field::new(stamp(2, 2), b"x".to_vec());
        merged.merge(&rewritten);
        assert_eq!(merged.value(), b"x");
        assert_eq!(
            merged.increment(ReplicaId(1), 1),
            Err(IncrementError::NotAnInteger)
        );
    }

    #[test]
    fn float_increments_count_too() {
        let mut left = Field::new(stamp(1, 1), b"10.5".to_vec());
        let mut right = left.clone();
        assert_eq!(left.increment_float(ReplicaId(1), 0.1).unwrap(), "10.6");
        right.increment_float(ReplicaId(2), 1.0).unwrap();
        left.merge(&right);
        assert_eq!(left.value(), b"11.6");
        let mut score = Score::new(stamp(1, 1), 1.0);
        let mut other = score.clone();
        score.increment(ReplicaId(1), 2.0).unwrap();
        other.increment(ReplicaId(2), -0.5).unwrap();
        score.merge(&other);
        assert_eq!(score.value(), 2.5);
        assert_eq!(
            Score::new(stamp(1, 1), f64::INFINITY).increment(ReplicaId(1), f64::NEG_INFINITY),
            Err(IncrementError::NotFinite)
        );
    }

    #[test]
    fn scores_print_as_redis_prints_them() {
        for (score, text) in [
            (1.0, "1"),
            (1.5, "1.5"),
            (1.1, "1.1000000000000001"),
            (-2.25, "-2.25"),
            (1e17, "1e+17"),
            (123456789.0, "123456789"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_score(score), text, "{score}");
        }
    }
}
