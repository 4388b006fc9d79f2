//! What kind of value a sibling holds: plain bytes (a Redis string), or the state of one of
//! the data types in [`crate::crdt`], which replicas merge by that type's law instead of
//! picking one writer's version.

/// A data type a key can hold (what Redis's `TYPE` reports, but with counters apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DataType {
    /// Plain bytes, replaced whole by each write.
    Bytes,
    /// A PN-counter ([`crate::crdt::counter`]); reads as its decimal value, like a Redis
    /// string holding an integer.
    Counter,
    /// An add-wins observed-remove set ([`crate::crdt::orset`]).
    Set,
    /// A map of fields to last-writer-wins registers ([`crate::crdt::hash`]).
    Hash,
    /// An observed-remove set of members with last-writer-wins scores
    /// ([`crate::crdt::zset`]).
    SortedSet,
    /// A list, replaced whole by each write: concurrent writes resolve by last writer wins.
    List,
}

impl DataType {
    const ALL: [DataType; 6] = [
        DataType::Bytes,
        DataType::Counter,
        DataType::Set,
        DataType::Hash,
        DataType::SortedSet,
        DataType::List,
    ];

    /// The name Redis's `TYPE` gives it (a counter is a string to Redis).
    pub fn redis_name(self) -> &'static str {
        match self {
            DataType::Bytes | DataType::Counter => "string",
            DataType::Set => "set",
            DataType::Hash => "hash",
            DataType::SortedSet => "zset",
            DataType::List => "list",
        }
    }

    /// Whether concurrent versions of this type merge by a law, so last-writer-wins keeps
    /// them all for the merge instead of picking one.
    pub fn merges(self) -> bool {
        matches!(
            self,
            DataType::Counter | DataType::Set | DataType::Hash | DataType::SortedSet
        )
    }
}

/// A sibling's kind as stored: its [`DataType`], and whether it is a collection emptied by
/// its last write. An emptied collection keeps its state (what it removed, for merges) but
/// reads as absent, as Redis deletes a key whose last member is removed; the flag lets the
/// read paths tell so without decoding the state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ValueKind(u8);

const EMPTIED: u8 = 0x80;

impl ValueKind {
    /// Plain bytes: every value before typed values existed.
    pub const BYTES: ValueKind = ValueKind(0);

    /// The kind of a value of `data_type`, `emptied` if it holds no element.
    pub fn new(data_type: DataType, emptied: bool) -> Self {
        let index = DataType::ALL
            .iter()
            .position(|t| *t == data_type)
            .expect("every type is listed") as u8;
        ValueKind(index | if emptied { EMPTIED } else { 0 })
    }

    /// The data type.
    pub fn data_type(self) -> DataType {
        DataType::ALL[usize::from(self.0 & !EMPTIED)]
    }

    /// Whether this is an emptied collection, which reads as absent.
    pub fn is_emptied(self) -> bool {
        self.0 & EMPTIED != 0
    }

    /// Whether the value is plain bytes.
    pub fn is_bytes(self) -> bool {
        self == ValueKind::BYTES
    }

    /// The stored byte.
    pub fn to_byte(self) -> u8 {
        self.0
    }

    /// The kind a stored byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        let index = usize::from(byte & !EMPTIED);
        (index < DataType::ALL.len() && !(index == 0 && byte & EMPTIED != 0))
            .then_some(ValueKind(byte))
    }
}

impl Default for ValueKind {
    fn default() -> Self {
        ValueKind::BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_byte_and_unknown_bytes_are_refused() {
        for data_type in DataType::ALL {
            for emptied in [false, true] {
                if data_type == DataType::Bytes && emptied {
                    continue;
                }
                let kind = ValueKind::new(data_type, emptied);
                assert_eq!(ValueKind::from_byte(kind.to_byte()), Some(kind));
                assert_eq!((kind.data_type(), kind.is_emptied()), (data_type, emptied));
            }
        }
        assert_eq!(ValueKind::from_byte(6), None);
        assert_eq!(ValueKind::from_byte(EMPTIED), None);
        assert!(ValueKind::BYTES.is_bytes());
    }
}
