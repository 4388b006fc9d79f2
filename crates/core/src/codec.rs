//! A small bounded binary codec: little-endian fixed integers, LEB128 varints and
//! length-prefixed byte strings. The reader checks every length against what is left of the
//! input before slicing, so corrupt input yields [`CodecError`], never a panic or a huge
//! allocation.

use thiserror::Error;

/// Why bytes could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    /// The input ended before the value did.
    #[error("input truncated: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    /// A varint ran past 64 bits.
    #[error("varint overflow at offset {offset}")]
    VarintOverflow { offset: usize },
    /// A declared length or count is above its limit.
    #[error("{what} is {value}, above the limit of {limit}")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    /// A tag or flag byte has a value this version does not know.
    #[error("unknown {what} {value}")]
    Unknown { what: &'static str, value: u64 },
    /// Bytes were left after the value ended.
    #[error("{count} trailing bytes")]
    Trailing { count: usize },
}

/// Appends encoded values to a byte vector.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a varint length followed by the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads values from a byte slice, tracking the offset for error messages.
pub struct Reader<'a> {
    input: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, offset: 0 }
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.input.len() - self.offset
    }

    /// Takes exactly `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if len > self.remaining() {
            return Err(CodecError::Truncated {
                offset: self.offset,
                needed: len - self.remaining(),
            });
        }
        let bytes = &self.input[self.offset..self.offset + len];
        self.offset += len;
        Ok(bytes)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(
            bytes.try_into().expect("take returned 4 bytes"),
        ))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().expect("take returned 8 bytes"),
        ))
    }

    /// Reads a LEB128 varint of at most 64 bits.
    pub fn varint(&mut self) -> Result<u64, CodecError> {
        let start = self.offset;
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(CodecError::VarintOverflow { offset: start });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CodecError::VarintOverflow { offset: start })
    }

    /// Reads a varint that must not exceed `limit`; `what` names it in the error.
    pub fn bounded_varint(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<usize, CodecError> {
        let value = self.varint()?;
        if value > limit as u64 {
            return Err(CodecError::TooLarge {
                what,
                value,
                limit: limit as u64,
            });
        }
        Ok(value as usize)
    }

    /// Reads a varint-length-prefixed byte string of at most `limit` bytes.
    pub fn bytes(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], CodecError> {
        let len = self.bounded_varint(what, limit)?;
        self.take(len)
    }

    /// Fails unless the whole input was consumed.
    pub fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::Trailing { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(value: u64) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.varint().unwrap(), value);
            prop_assert!(reader.finish().is_ok());
        }

        #[test]
        fn arbitrary_input_never_panics(input: Vec<u8>) {
            let mut reader = Reader::new(&input);
            let _ = reader.varint();
            let _ = reader.bytes("b", 1 << 20);
            let _ = reader.u64();
        }
    }

    #[test]
    fn oversized_length_is_refused_before_slicing() {
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 40);
        let error = Reader::new(&out).bytes("value", 1024).unwrap_err();
        assert!(matches!(error, CodecError::TooLarge { what: "value", .. }));
    }

    #[test]
    fn eleven_byte_varint_is_an_overflow() {
        let input = [0xffu8; 11];
        assert!(matches!(
            Reader::new(&input).varint(),
            Err(CodecError::VarintOverflow { .. })
        ));
    }
}
