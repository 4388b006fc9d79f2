//! How core types travel between nodes: serde implementations that reuse the binary forms
//! already defined for storage, so a record crosses the network with the same checksum it
//! has on disk, and a receiver verifies it before trusting any length inside.

use crate::causal::VersionVector;
use crate::codec::Reader;
use crate::record::Record;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

impl Serialize for VersionVector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        self.encode_into(&mut bytes);
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_compat::Bytes = Deserialize::deserialize(deserializer)?;
        let mut reader = Reader::new(&bytes.0);
        VersionVector::decode_from(&mut reader).map_err(D::Error::custom)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_compat::Bytes = Deserialize::deserialize(deserializer)?;
        Record::decode(&bytes.0).map_err(D::Error::custom)
    }
}

/// A byte string read from any serde format, borrowed or owned.
mod serde_bytes_compat {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use std::fmt;

    pub struct Bytes(pub Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Bytes {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_bytes(BytesVisitor)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Bytes;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
            Ok(Bytes(bytes.to_vec()))
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
            Ok(Bytes(bytes))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(Bytes(bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::causal::{ReplicaId, VersionVector};
    use crate::hlc::Timestamp;
    use crate::record::{Mutation, Record};

    #[test]
    fn records_and_contexts_round_trip_through_serde_and_damage_is_refused() {
        let mut context = VersionVector::new();
        context.observe(ReplicaId(7), 3);
        let record = Record::update(
            None,
            &VersionVector::new(),
            Mutation::bytes(b"v".to_vec(), None),
            ReplicaId(9),
            Timestamp(42),
        )
        .unwrap();
        let json = serde_json::to_vec(&(&context, &record)).unwrap();
        let (back_context, back_record): (VersionVector, Record) =
            serde_json::from_slice(&json).unwrap();
        assert_eq!((back_context, back_record), (context, record.clone()));

        let mut damaged = record.encode();
        damaged[3] ^= 1;
        let json = serde_json::to_vec(&damaged).unwrap();
        assert!(serde_json::from_slice::<Record>(&json).is_err());
    }
}
