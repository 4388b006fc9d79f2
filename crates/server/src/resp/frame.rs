//! Replies of the Redis protocol and their encoding in RESP2 or RESP3 (chosen per connection
//! by `HELLO`). Types RESP3 adds (null, map, set) degrade to their RESP2 forms.

use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `+OK` (borrowed when static: the replies most sent allocate nothing).
    Simple(Cow<'static, str>),
    /// `-ERR ...`: the text includes the error prefix (`ERR`, `WRONGTYPE`, `BUSY`...).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo` (shared bytes: a stored value is sent without a copy of its own).
    Bulk(Bytes),
    /// Nil: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// `*n` followed by the elements.
    Array(Vec<Frame>),
    /// A null array: `*-1` in RESP2, `_` in RESP3.
    NullArray,
    /// A floating-point number, as its text: `,1.5` in RESP3, a bulk string in RESP2.
    Double(String),
    /// `%n` in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Frame, Frame)>),
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Self {
        Frame::Simple("OK".into())
    }

    /// An error with the generic `ERR` prefix.
    pub fn err(message: impl std::fmt::Display) -> Self {
        Frame::Error(format!("ERR {message}"))
    }

    /// A bulk string from text.
    pub fn text(text: impl Into<String>) -> Self {
        Frame::Bulk(text.into().into_bytes().into())
    }

    /// Bulk string or nil.
    pub fn optional_bulk(value: Option<Vec<u8>>) -> Self {
        value.map_or(Frame::Null, |value| Frame::Bulk(value.into()))
    }

    /// Appends the encoding of this frame for protocol version `protocol` (2 or 3).
    pub fn encode(&self, protocol: u8, out: &mut BytesMut) {
        let mut digits = itoa::Buffer::new();
        match self {
            Frame::Simple(text) => line(out, b'+', text.as_bytes()),
            Frame::Error(text) => line(out, b'-', text.as_bytes()),
            Frame::Integer(value) => line(out, b':', decimal(&mut digits, *value)),
            Frame::Bulk(bytes) => {
                line(out, b'$', decimal(&mut digits, bytes.len()));
                out.put_slice(bytes);
                out.put_slice(b"\r\n");
            }
            Frame::Null if protocol >= 3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::NullArray if protocol >= 3 => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Double(text) if protocol >= 3 => line(out, b',', text.as_bytes()),
            Frame::Double(text) => {
                line(out, b'$', decimal(&mut digits, text.len()));
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
            }
            Frame::Array(items) => {
                line(out, b'*', decimal(&mut digits, items.len()));
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Frame::Map(pairs) => {
                let (marker, count) = if protocol >= 3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                line(out, marker, decimal(&mut digits, count));
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
        }
    }
}

impl Frame {
    /// Whether the encoding takes fewer than `bytes`: [`Frame::encoded_bytes_max`] with
    /// the common single replies answered at once.
    #[inline]
    pub fn is_small(&self, bytes: usize) -> bool {
        match self {
            Frame::Bulk(value) => value.len() + 64 < bytes,
            Frame::Integer(_) | Frame::Null => true,
            Frame::Simple(text) => text.len() + 3 < bytes,
            other => other.encoded_bytes_max() < bytes,
        }
    }

    /// Bytes the encoding takes at most (each length counted at its longest).
    pub fn encoded_bytes_max(&self) -> usize {
        const HEADER_BYTES_MAX: usize = 1 + 20 + 2;
        match self {
            Frame::Simple(text) => text.len() + 3,
            Frame::Error(text) => text.len() + 3,
            Frame::Double(text) => HEADER_BYTES_MAX + text.len() + 2,
            Frame::Integer(_) | Frame::Null | Frame::NullArray => HEADER_BYTES_MAX,
            Frame::Bulk(bytes) => HEADER_BYTES_MAX + bytes.len() + 2,
            Frame::Array(items) => {
                HEADER_BYTES_MAX + items.iter().map(Frame::encoded_bytes_max).sum::<usize>()
            }
            Frame::Map(pairs) => {
                let pair_bytes = |(key, value): &(Frame, Frame)| {
                    key.encoded_bytes_max() + value.encoded_bytes_max()
                };
                HEADER_BYTES_MAX + pairs.iter().map(pair_bytes).sum::<usize>()
            }
        }
    }

    /// The encoding as pieces to write in order: bulk strings of at least
    /// [`SHARED_PIECE_BYTES_MIN`] are their own pieces, shared with the frame rather than
    /// copied, so a large reply is written from the values it holds.
    pub fn encode_pieces(&self, protocol: u8) -> Vec<Bytes> {
        let mut pieces = Vec::new();
        let mut small = BytesMut::new();
        self.encode_into_pieces(protocol, &mut small, &mut pieces);
        if !small.is_empty() {
            pieces.push(small.freeze());
        }
        pieces
    }

    fn encode_into_pieces(&self, protocol: u8, small: &mut BytesMut, pieces: &mut Vec<Bytes>) {
        let mut digits = itoa::Buffer::new();
        match self {
            Frame::Bulk(bytes) if bytes.len() >= SHARED_PIECE_BYTES_MIN => {
                line(small, b'$', decimal(&mut digits, bytes.len()));
                pieces.push(small.split().freeze());
                pieces.push(bytes.clone());
                small.put_slice(b"\r\n");
            }
            Frame::Array(items) => {
                line(small, b'*', decimal(&mut digits, items.len()));
                for item in items {
                    item.encode_into_pieces(protocol, small, pieces);
                }
            }
            Frame::Map(pairs) => {
                let (marker, count) = if protocol >= 3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                line(small, marker, decimal(&mut digits, count));
                for (key, value) in pairs {
                    key.encode_into_pieces(protocol, small, pieces);
                    value.encode_into_pieces(protocol, small, pieces);
                }
            }
            other => other.encode(protocol, small),
        }
    }
}

/// Bulk strings at least this long are written from the frame's own bytes, not copied.
pub const SHARED_PIECE_BYTES_MIN: usize = 16 * 1024;

fn line(out: &mut BytesMut, marker: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(marker);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// `value` in decimal, formatted in `digits` (on the stack: a reply allocates nothing for its
/// lengths).
fn decimal(digits: &mut itoa::Buffer, value: impl itoa::Integer) -> &[u8] {
    digits.format(value).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frame: &Frame, protocol: u8) -> String {
        let mut out = BytesMut::new();
        frame.encode(protocol, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn pieces_encode_as_the_frame_does_and_share_large_values() {
        let large = Bytes::from(vec![b'v'; SHARED_PIECE_BYTES_MIN]);
        let frame = Frame::Array(vec![
            Frame::text("small"),
            Frame::Bulk(large.clone()),
            Frame::Null,
            Frame::Map(vec![(Frame::Bulk(large.clone()), Frame::Integer(7))]),
        ]);
        for protocol in [2, 3] {
            let pieces = frame.encode_pieces(protocol);
            let joined: Vec<u8> = pieces.concat();
            assert_eq!(joined, encoded(&frame, protocol).into_bytes());
            let shared = pieces
                .iter()
                .filter(|p| p.as_ptr() == large.as_ptr())
                .count();
            assert_eq!(
                shared, 2,
                "each large value is written from the frame's own bytes"
            );
            assert!(frame.encoded_bytes_max() >= joined.len());
        }
    }

    #[test]
    fn frames_encode_as_redis_does() {
        assert_eq!(encoded(&Frame::ok(), 2), "+OK\r\n");
        assert_eq!(
            encoded(&Frame::err("syntax error"), 2),
            "-ERR syntax error\r\n"
        );
        assert_eq!(encoded(&Frame::Integer(-2), 2), ":-2\r\n");
        assert_eq!(
            encoded(&Frame::Bulk(Bytes::from_static(b"hi")), 2),
            "$2\r\nhi\r\n"
        );
        assert_eq!(encoded(&Frame::Null, 2), "$-1\r\n");
        assert_eq!(encoded(&Frame::Null, 3), "_\r\n");
        let map = Frame::Map(vec![(Frame::text("a"), Frame::Integer(1))]);
        assert_eq!(encoded(&map, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&map, 3), "%1\r\n$1\r\na\r\n:1\r\n");
    }
}
