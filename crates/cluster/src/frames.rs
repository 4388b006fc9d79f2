//! The cluster RPC's framing: `u32 big-endian length | payload`, the same bytes as
//! tokio-util's length-delimited codec, with a decoder that never reserves memory for what a
//! peer merely declares. The library's decoder reserves a frame's whole declared length as
//! soon as its header arrives, so forty connections that each declared a 48 MiB frame and
//! stopped held 3 GB. Here the buffer grows with the bytes that arrive, and the decoder
//! remembers when an unfinished frame started, so the connection can give up on one that
//! takes too long.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length header.
const HEADER_BYTES: usize = 4;

/// Most the read buffer grows by ahead of the bytes that have arrived.
const GROWTH_BYTES_MAX: usize = 64 * 1024;

/// Frames of at most `frame_bytes_max`, read into a buffer that grows only as bytes arrive.
pub struct FrameCodec {
    frame_bytes_max: usize,
    /// When the unfinished frame in the buffer started to arrive; `None` when the buffer
    /// holds no part of a frame.
    partial_since: Option<Instant>,
}

impl FrameCodec {
    /// A codec for frames of at most `frame_bytes_max` payload bytes.
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            frame_bytes_max,
            partial_since: None,
        }
    }

    /// When the frame still arriving started to, if one is.
    pub fn partial_since(&self) -> Option<Instant> {
        self.partial_since
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if src.is_empty() {
            self.partial_since = None;
            return Ok(None);
        }
        let partial = |codec: &mut Self, src: &mut BytesMut, missing: usize| {
            codec.partial_since.get_or_insert_with(Instant::now);
            src.reserve(missing.min(GROWTH_BYTES_MAX));
            Ok(None)
        };
        let Some(header) = src.get(..HEADER_BYTES) else {
            return partial(self, src, HEADER_BYTES - src.len());
        };
        let len = u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize;
        if len > self.frame_bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes is above the limit of {}",
                    self.frame_bytes_max
                ),
            ));
        }
        let whole = HEADER_BYTES + len;
        if src.len() < whole {
            return partial(self, src, whole - src.len());
        }
        src.advance(HEADER_BYTES);
        let frame = src.split_to(len);
        self.partial_since = None;
        Ok(Some(frame))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&len| len as usize <= self.frame_bytes_max)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("frame of {} bytes is above the limit", frame.len()),
                )
            })?;
        dst.reserve(HEADER_BYTES + frame.len());
        dst.put_u32(len);
        dst.put_slice(&frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_frame_takes_memory_only_as_its_bytes_arrive() {
        let mut codec = FrameCodec::new(48 << 20);
        let mut buffer = BytesMut::new();
        buffer.put_u32(48 << 20);
        assert_eq!(codec.decode(&mut buffer).unwrap(), None);
        assert!(buffer.capacity() <= HEADER_BYTES + GROWTH_BYTES_MAX);
        assert!(codec.partial_since().is_some());
    }

    #[test]
    fn frames_round_trip_whole_and_split_and_oversized_ones_are_refused() {
        let mut codec = FrameCodec::new(1000);
        let mut wire = BytesMut::new();
        for payload in [&b"first"[..], b"", b"third"] {
            codec
                .encode(Bytes::copy_from_slice(payload), &mut wire)
                .unwrap();
        }
        // Fed a byte at a time, as a slow network would.
        let (mut buffer, mut frames) = (BytesMut::new(), Vec::new());
        for byte in wire.iter() {
            buffer.put_u8(*byte);
            while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                frames.push(frame.to_vec());
            }
        }
        assert_eq!(
            frames,
            vec![b"first".to_vec(), Vec::new(), b"third".to_vec()]
        );
        assert_eq!(codec.partial_since(), None);
        let mut oversized = BytesMut::new();
        oversized.put_u32(1001);
        assert!(codec.decode(&mut oversized).is_err());
        assert!(codec
            .encode(Bytes::from(vec![0; 1001]), &mut BytesMut::new())
            .is_err());
    }
}
