//! A key's typed value: the state of one of the data types, its binary form, and how the
//! versions a read finds (siblings) become one value.

use super::counter::Counter;
use super::ormap::OrMap;
use super::orset::OrSet;
use super::register::{Field, Score};
use super::StateError;
use crate::codec::{put_bytes, put_varint, Reader};
use crate::hlc::Timestamp;
use crate::limits::VALUE_BYTES_MAX;
use crate::record::{DataType, ValueKind};

/// The state of a typed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Typed {
    /// A PN-counter.
    Counter(Counter),
    /// An add-wins set.
    Set(OrSet),
    /// Fields to last-writer-wins registers with counters.
    Hash(OrMap<Field>),
    /// Members to last-writer-wins scores with counters.
    SortedSet(OrMap<Score>),
    /// A list, replaced whole (last writer wins).
    List(Vec<Vec<u8>>),
}

impl Typed {
    /// The empty value of `data_type` (`None` for bytes).
    pub fn empty(data_type: DataType) -> Option<Typed> {
        Some(match data_type {
            DataType::Bytes => return None,
            DataType::Counter => Typed::Counter(Counter::new()),
            DataType::Set => Typed::Set(OrSet::new()),
            DataType::Hash => Typed::Hash(OrMap::new()),
            DataType::SortedSet => Typed::SortedSet(OrMap::new()),
            DataType::List => Typed::List(Vec::new()),
        })
    }

    /// Its data type.
    pub fn data_type(&self) -> DataType {
        match self {
            Typed::Counter(_) => DataType::Counter,
            Typed::Set(_) => DataType::Set,
            Typed::Hash(_) => DataType::Hash,
            Typed::SortedSet(_) => DataType::SortedSet,
            Typed::List(_) => DataType::List,
        }
    }

    /// How many elements it holds (a counter holds one number).
    pub fn len(&self) -> usize {
        match self {
            Typed::Counter(_) => 1,
            Typed::Set(set) => set.len(),
            Typed::Hash(hash) => hash.len(),
            Typed::SortedSet(zset) => zset.len(),
            Typed::List(list) => list.len(),
        }
    }

    /// Whether it is a collection without elements (which reads as an absent key).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind its sibling is stored with.
    pub fn kind(&self) -> ValueKind {
        ValueKind::new(self.data_type(), self.is_empty())
    }

    /// The binary form of the state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Typed::Counter(counter) => counter.encode_into(&mut out),
            Typed::Set(set) => set.encode_into(&mut out),
            Typed::Hash(hash) => hash.encode_into(&mut out),
            Typed::SortedSet(zset) => zset.encode_into(&mut out),
            Typed::List(list) => {
                put_varint(&mut out, list.len() as u64);
                for item in list {
                    put_bytes(&mut out, item);
                }
            }
        }
        out
    }

    /// Reads a state stored with `kind`, checking it whole.
    pub fn decode(kind: ValueKind, bytes: &[u8]) -> Result<Typed, StateError> {
        let mut reader = Reader::new(bytes);
        let typed = match kind.data_type() {
            DataType::Bytes => return Err(StateError::Invalid("bytes are not a typed value")),
            DataType::Counter => Typed::Counter(Counter::decode_from(&mut reader)?),
            DataType::Set => Typed::Set(OrSet::decode_from(&mut reader)?),
            DataType::Hash => Typed::Hash(OrMap::decode_from(&mut reader)?),
            DataType::SortedSet => Typed::SortedSet(OrMap::decode_from(&mut reader)?),
            DataType::List => {
                let count = reader.bounded_varint("list items", VALUE_BYTES_MAX)?;
                let mut list = Vec::with_capacity(count.min(4096));
                for _ in 0..count {
                    list.push(reader.bytes("list item", VALUE_BYTES_MAX)?.to_vec());
                }
                Typed::List(list)
            }
        };
        reader.finish()?;
        Ok(typed)
    }

    /// Takes in `other`, a concurrent state of the same type, by the type's law. A list
    /// keeps itself: the caller merges lists by last writer wins.
    pub fn merge(&mut self, other: &Typed) {
        match (self, other) {
            (Typed::Counter(a), Typed::Counter(b)) => a.merge(b),
            (Typed::Set(a), Typed::Set(b)) => a.merge(b),
            (Typed::Hash(a), Typed::Hash(b)) => a.merge(b),
            (Typed::SortedSet(a), Typed::SortedSet(b)) => a.merge(b),
            _ => {}
        }
    }
}

/// What a key holds, as a read or a write's lead sees it once its versions are merged.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Plain bytes, and when they were written.
    Bytes(Vec<u8>, Timestamp),
    /// A typed value.
    Typed(Typed),
}

impl Value {
    /// The one value of a key's visible versions `(kind, bytes, timestamp)`: the newest
    /// decides the type; a type that merges by law folds in every version of its type, any
    /// other keeps the newest alone (last writer wins). `None` when there is no version.
    pub fn of_versions<'a>(
        versions: impl IntoIterator<Item = (ValueKind, &'a [u8], Timestamp)>,
    ) -> Result<Option<Value>, StateError> {
        let mut versions: Vec<_> = versions.into_iter().collect();
        versions.sort_by_key(|&(_, _, timestamp)| timestamp);
        let Some(&(kind, bytes, timestamp)) = versions.last() else {
            return Ok(None);
        };
        let data_type = kind.data_type();
        if data_type == DataType::Bytes {
            return Ok(Some(Value::Bytes(bytes.to_vec(), timestamp)));
        }
        let mut merged = Typed::decode(kind, bytes)?;
        if data_type.merges() {
            for &(other, bytes, _) in &versions[..versions.len() - 1] {
                if other.data_type() == data_type {
                    merged.merge(&Typed::decode(other, bytes)?);
                }
            }
        }
        Ok(Some(Value::Typed(merged)))
    }

    /// Its data type.
    pub fn data_type(&self) -> DataType {
        match self {
            Value::Bytes(..) => DataType::Bytes,
            Value::Typed(typed) => typed.data_type(),
        }
    }

    /// The string a Redis string command sees: the bytes, or a counter's decimal value;
    /// `None` for a collection (a WRONGTYPE error).
    pub fn as_string(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Value::Bytes(bytes, _) => Some(bytes.as_slice().into()),
            Value::Typed(Typed::Counter(counter)) => {
                Some(counter.value().to_string().into_bytes().into())
            }
            Value::Typed(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::ReplicaId;

    #[test]
    fn versions_of_a_merging_type_merge_and_others_resolve_by_last_writer() {
        let mut a = Counter::new();
        a.increment(ReplicaId(1), 2).unwrap();
        let mut b = Counter::new();
        b.increment(ReplicaId(2), 3).unwrap();
        let (a, b) = (Typed::Counter(a), Typed::Counter(b));
        let kind = a.kind();
        let (a_bytes, b_bytes) = (a.encode(), b.encode());
        let merged = Value::of_versions([
            (kind, &a_bytes[..], Timestamp(1)),
            (ValueKind::BYTES, &b"old"[..], Timestamp(0)),
            (kind, &b_bytes[..], Timestamp(2)),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(merged.as_string().unwrap().as_ref(), b"5");
        let newest_bytes = Value::of_versions([
            (kind, &a_bytes[..], Timestamp(1)),
            (ValueKind::BYTES, &b"new"[..], Timestamp(3)),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(newest_bytes, Value::Bytes(b"new".to_vec(), Timestamp(3)));
        let list = Typed::List(vec![b"x".to_vec()]);
        assert_eq!(Typed::decode(list.kind(), &list.encode()).unwrap(), list);
        assert!(Value::Typed(list).as_string().is_none());
    }
}
