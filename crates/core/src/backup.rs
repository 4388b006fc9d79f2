//! The backup file format: what `ringkv backup` writes and `ringkv restore` reads.
//!
//! A file is the magic `RKVBACK1` and then frames, each `body length (u32 LE) | CRC32C of the
//! body (u32 LE) | body`, whose first byte says what it is:
//!
//! - `H` [`Header`], first and once: which node, when, which keyspaces and their settings;
//! - `R` [`BackupRecord`], one per key: the record exactly as the replica stores it, with its
//!   causal context and dead siblings, so a restore *merges* it like any replica's copy and
//!   never overwrites a newer write;
//! - `E` [`Trailer`], last and once: how many records came before it. A file without it was
//!   cut short, and is refused.
//!
//! A restore request's body is record frames alone, without the magic.
//!
//! Reading checks every length against a limit before trusting it, so a damaged or hostile
//! file fails with an error naming its offset, never with a huge allocation.

use crate::codec::{put_bytes, put_varint, CodecError, Reader};
use crate::limits::{KEYSPACE_NAME_BYTES_MAX, KEY_BYTES_MAX, RECORD_BYTES_MAX};
use std::io::Read;

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"RKVBACK1";

/// The format version in the header; readers refuse later ones.
pub const FORMAT: u64 = 1;

/// The most bytes a frame's body may hold: one record of the largest size, its key and
/// keyspace name, and room for the fields around them.
pub const FRAME_BYTES_MAX: usize = RECORD_BYTES_MAX + KEY_BYTES_MAX + KEYSPACE_NAME_BYTES_MAX + 64;

/// The most keyspaces a header lists (a node numbers at most 65,536).
const KEYSPACES_MAX: usize = 1 << 16;

/// Bytes of a frame's length and checksum.
const FRAME_HEAD_BYTES: usize = 8;

const HEADER: u8 = b'H';
const RECORD: u8 = b'R';
const END: u8 = b'E';

/// Why a backup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading the file failed.
    #[error("reading the backup: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a backup, or is damaged.
    #[error("not a valid backup at byte {offset}: {detail}")]
    Invalid {
        /// Where in the file.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
}

/// A keyspace's settings, so a restore into a fresh cluster can create it as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyspaceSettings {
    /// The keyspace's name.
    pub name: String,
    /// Its replication factor N.
    pub replication: u64,
    /// Its conflict mode, as the REST API spells it (`lww`, `siblings`).
    pub conflict: String,
}

/// What a backup is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The id of the node it was taken from.
    pub node: String,
    /// When its snapshot was taken, in unix milliseconds.
    pub taken_ms: u64,
    /// The one keyspace it holds, or `None` for every keyspace.
    pub keyspace: Option<String>,
    /// The settings of the keyspaces it holds records of.
    pub keyspaces: Vec<KeyspaceSettings>,
}

/// One key's record, as a replica stores it ([`crate::record::Record::encode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    /// Its keyspace.
    pub keyspace: String,
    /// The key.
    pub key: Vec<u8>,
    /// The encoded record, with its own checksum.
    pub record: Vec<u8>,
}

/// The end of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// How many records the backup holds.
    pub records: u64,
    /// Records the node found damaged and left out (its other replicas hold them).
    pub damaged: u64,
}

/// One frame of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The header.
    Header(Header),
    /// A record.
    Record(BackupRecord),
    /// The trailer.
    End(Trailer),
}

impl Frame {
    /// Appends the frame, with its length and checksum, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
        match self {
            Frame::Header(header) => {
                out.push(HEADER);
                put_varint(out, FORMAT);
                put_bytes(out, header.node.as_bytes());
                put_varint(out, header.taken_ms);
                put_bytes(out, header.keyspace.as_deref().unwrap_or("").as_bytes());
                put_varint(out, header.keyspaces.len() as u64);
                for keyspace in &header.keyspaces {
                    put_bytes(out, keyspace.name.as_bytes());
                    put_varint(out, keyspace.replication);
                    put_bytes(out, keyspace.conflict.as_bytes());
                }
            }
            Frame::Record(record) => {
                out.push(RECORD);
                put_bytes(out, record.keyspace.as_bytes());
                put_bytes(out, &record.key);
                put_bytes(out, &record.record);
            }
            Frame::End(trailer) => {
                out.push(END);
                put_varint(out, trailer.records);
                put_varint(out, trailer.damaged);
            }
        }
        let body = &out[start + FRAME_HEAD_BYTES..];
        let (len, crc) = (body.len() as u32, crc32c::crc32c(body));
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes a frame's body (its checksum already verified).
    fn decode_body(body: &[u8]) -> Result<Frame, String> {
        let mut reader = Reader::new(body);
        let kind = reader.u8().map_err(|e| e.to_string())?;
        let frame = match kind {
            HEADER => Self::decode_header(&mut reader)?,
            RECORD => Self::decode_record(&mut reader).map_err(|e| e.to_string())?,
            END => Self::decode_trailer(&mut reader).map_err(|e| e.to_string())?,
            other => return Err(format!("unknown frame kind {other:#04x}")),
        };
        reader.finish().map_err(|e| e.to_string())?;
        Ok(frame)
    }

    fn decode_header(reader: &mut Reader<'_>) -> Result<Frame, String> {
        let format = reader.varint().map_err(|e| e.to_string())?;
        if format > FORMAT {
            return Err(format!(
                "backup format {format} is newer than this ringkv reads ({FORMAT}); use a newer ringkv"
            ));
        }
        let fields = |reader: &mut Reader<'_>| -> Result<Header, CodecError> {
            let node = text(reader, "node id", 1024)?;
            let taken_ms = reader.varint()?;
            let keyspace = text(reader, "keyspace", KEYSPACE_NAME_BYTES_MAX)?;
            let count = reader.bounded_varint("keyspaces", KEYSPACES_MAX)?;
            let mut keyspaces = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                keyspaces.push(KeyspaceSettings {
                    name: text(reader, "keyspace", KEYSPACE_NAME_BYTES_MAX)?,
                    replication: reader.varint()?,
                    conflict: text(reader, "conflict mode", 64)?,
                });
            }
            Ok(Header {
                node,
                taken_ms,
                keyspace: Some(keyspace).filter(|name| !name.is_empty()),
                keyspaces,
            })
        };
        fields(reader).map(Frame::Header).map_err(|e| e.to_string())
    }

    fn decode_record(reader: &mut Reader<'_>) -> Result<Frame, CodecError> {
        Ok(Frame::Record(BackupRecord {
            keyspace: text(reader, "keyspace", KEYSPACE_NAME_BYTES_MAX)?,
            key: reader.bytes("key", KEY_BYTES_MAX)?.to_vec(),
            record: reader.bytes("record", RECORD_BYTES_MAX)?.to_vec(),
        }))
    }

    fn decode_trailer(reader: &mut Reader<'_>) -> Result<Frame, CodecError> {
        Ok(Frame::End(Trailer {
            records: reader.varint()?,
            damaged: reader.varint()?,
        }))
    }
}

/// A length-prefixed UTF-8 string of at most `limit` bytes (invalid UTF-8 is replaced: names
/// are checked again where they are used).
fn text(reader: &mut Reader<'_>, what: &'static str, limit: usize) -> Result<String, CodecError> {
    let bytes = reader.bytes(what, limit)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Reads frames one at a time from a stream of them, checking each.
pub struct FrameReader<R> {
    input: R,
    /// Bytes read so far, for errors.
    offset: u64,
    body: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// A reader of the frames in `input`, which starts at a frame (after the magic, for a
    /// file: see [`FrameReader::file`]).
    pub fn new(input: R) -> Self {
        Self {
            input,
            offset: 0,
            body: Vec::new(),
        }
    }

    /// A reader of a backup file: checks its magic.
    pub fn file(mut input: R) -> Result<Self, BackupError> {
        let mut magic = [0; MAGIC.len()];
        read_all(&mut input, &mut magic, 0)?;
        if &magic != MAGIC {
            return Err(BackupError::Invalid {
                offset: 0,
                detail: "this is not a ringkv backup (it does not start with RKVBACK1)".into(),
            });
        }
        let mut reader = Self::new(input);
        reader.offset = MAGIC.len() as u64;
        Ok(reader)
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame, or `None` at the end of the input.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, BackupError> {
        let start = self.offset;
        let mut head = [0; FRAME_HEAD_BYTES];
        let got = read_some(&mut self.input, &mut head)?;
        if got == 0 {
            return Ok(None);
        }
        if got < head.len() {
            return Err(invalid(
                start,
                "the input ends inside a frame's header".into(),
            ));
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len > FRAME_BYTES_MAX {
            return Err(invalid(
                start,
                format!("a frame of {len} bytes, above the limit of {FRAME_BYTES_MAX}"),
            ));
        }
        self.body.resize(len, 0);
        read_all(&mut self.input, &mut self.body, start)?;
        self.offset += (FRAME_HEAD_BYTES + len) as u64;
        if crc32c::crc32c(&self.body) != crc {
            return Err(invalid(
                start,
                "a frame fails its checksum: the file is damaged".into(),
            ));
        }
        Frame::decode_body(&self.body)
            .map(Some)
            .map_err(|detail| invalid(start, detail))
    }
}

fn invalid(offset: u64, detail: String) -> BackupError {
    BackupError::Invalid { offset, detail }
}

/// Fills `buffer` as far as the input allows; how many bytes it got.
fn read_some(input: &mut impl Read, buffer: &mut [u8]) -> Result<usize, BackupError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(filled)
}

fn read_all(input: &mut impl Read, buffer: &mut [u8], offset: u64) -> Result<(), BackupError> {
    if read_some(input, buffer)? < buffer.len() {
        return Err(invalid(offset, "the input ends inside a frame".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Frame> {
        vec![
            Frame::Header(Header {
                node: "n1".into(),
                taken_ms: 1_700_000_000_000,
                keyspace: None,
                keyspaces: vec![KeyspaceSettings {
                    name: "default".into(),
                    replication: 3,
                    conflict: "lww".into(),
                }],
            }),
            Frame::Record(BackupRecord {
                keyspace: "default".into(),
                key: b"k\x00\xff".to_vec(),
                record: vec![1, 2, 3],
            }),
            Frame::End(Trailer {
                records: 1,
                damaged: 0,
            }),
        ]
    }

    fn file_of(frames: &[Frame]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for frame in frames {
            frame.encode_into(&mut out);
        }
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<Frame>, BackupError> {
        let mut reader = FrameReader::file(bytes)?;
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    #[test]
    fn frames_read_back_as_written() {
        let frames = sample();
        assert_eq!(read(&file_of(&frames)).unwrap(), frames);
    }

    #[test]
    fn a_damaged_byte_or_a_cut_is_an_error_naming_the_frame() {
        let bytes = file_of(&sample());
        for at in MAGIC.len()..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(read(&damaged).is_err(), "damage at {at} went unnoticed");
        }
        for cut in MAGIC.len() + 1..bytes.len() {
            let frames = read(&bytes[..cut]);
            // A cut at a frame boundary reads as fewer frames (the trailer then is missing,
            // which the restore refuses); anywhere else it is an error.
            if let Ok(frames) = frames {
                assert!(
                    !frames.iter().any(|f| matches!(f, Frame::End(_))),
                    "cut at {cut}"
                );
            }
        }
        assert!(matches!(
            read(b"RKVBACK0"),
            Err(BackupError::Invalid { offset: 0, .. })
        ));
    }

    #[test]
    fn a_huge_length_is_refused_before_anything_is_allocated() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        let error = read(&bytes).unwrap_err().to_string();
        assert!(error.contains("above the limit"), "{error}");
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut input = MAGIC.to_vec();
            input.extend_from_slice(&bytes);
            let _ = read(&input);
        }

        #[test]
        fn any_record_round_trips(
            keyspace in "[a-z0-9_-]{1,64}",
            key in proptest::collection::vec(any::<u8>(), 0..64),
            record in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let frame = Frame::Record(BackupRecord { keyspace, key, record });
            let mut bytes = Vec::new();
            frame.encode_into(&mut bytes);
            let mut reader = FrameReader::new(bytes.as_slice());
            prop_assert_eq!(reader.next_frame().unwrap(), Some(frame));
            prop_assert_eq!(reader.next_frame().unwrap(), None);
        }
    }
}
