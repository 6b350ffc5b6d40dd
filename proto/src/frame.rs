//! Frame payloads and pre-encoded `ServerMessage` pieces.
//!
//! A server encodes and compresses each (batch, resource, scope) payload once, wraps the frame
//! in a `ServerMessage{frames: [frame]}` piece once, and joins pieces into gRPC messages without
//! encoding again: concatenated protobuf messages decode as one, with repeated fields appended.
//! Decoding is bounded: a payload whose declared or actual uncompressed size is over the
//! caller's limit is refused before more than that limit is allocated.

use std::io;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::pb::{Encoding, Frame, FramePayload, ServerMessage};
use crate::{Error, Result};

/// The zstd level servers use unless configured: fast to compress, about 4:1 on projected JSON.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Encodes a payload, compressing it when `encoding` asks for it.
///
/// The result goes in `Frame.payload`; `Frame.uncompressed_length` is
/// `payload.encoded_len()`. [`encode_frame`] fills in both.
///
/// # Errors
/// [`Error::UnsupportedEncoding`] for `ENCODING_UNSPECIFIED`, [`Error::Compress`] if zstd fails.
pub fn encode_payload(
    payload: &FramePayload,
    encoding: Encoding,
    zstd_level: i32,
) -> Result<Bytes> {
    let raw = payload.encode_to_vec();
    match encoding {
        Encoding::Proto => Ok(Bytes::from(raw)),
        Encoding::ProtoZstd => zstd::bulk::compress(&raw, zstd_level)
            .map(Bytes::from)
            .map_err(Error::Compress),
        Encoding::Unspecified => Err(Error::UnsupportedEncoding(encoding as i32)),
    }
}

/// Everything a [`Frame`] says about itself apart from its payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    /// The revision the frame brings the agent to for this resource and scope.
    pub revision: u64,
    /// The resource, such as `v1/pods`.
    pub resource: String,
    /// The node name for a node-scoped frame, otherwise empty.
    pub scope: String,
    /// True for a frame of a snapshot or digest resync.
    pub replace: bool,
    /// When the server published the batch, in nanoseconds since the Unix epoch.
    pub publish_time_unix_nanos: i64,
    /// For a replace frame of a digest resync, the buckets it covers; empty for all of them.
    pub replaced_buckets: Vec<u32>,
}

/// Builds a complete frame: the header's fields, the encoded payload and its length.
///
/// # Errors
/// As [`encode_payload`], plus [`Error::PayloadTooLarge`] for a payload of 4 GiB or more,
/// whose length `Frame.uncompressed_length` cannot hold.
pub fn encode_frame(
    header: FrameHeader,
    payload: &FramePayload,
    encoding: Encoding,
    zstd_level: i32,
) -> Result<Frame> {
    let length = payload.encoded_len();
    let uncompressed_length = u32::try_from(length).map_err(|_| Error::PayloadTooLarge {
        size: length as u64,
        limit: u64::from(u32::MAX),
    })?;
    Ok(Frame {
        revision: header.revision,
        resource: header.resource,
        scope: header.scope,
        replace: header.replace,
        encoding: encoding as i32,
        payload: encode_payload(payload, encoding, zstd_level)?,
        publish_time_unix_nanos: header.publish_time_unix_nanos,
        uncompressed_length,
        replaced_buckets: header.replaced_buckets,
    })
}

/// Decodes a frame's payload, refusing anything over `max_uncompressed` bytes once decompressed.
///
/// A `ENCODING_PROTO` payload is decoded in place: the `Upsert.value`s share the frame's
/// buffer. A `ENCODING_PROTO_ZSTD` payload is decompressed into a buffer of exactly
/// `uncompressed_length` bytes, which must hold it all.
///
/// # Errors
/// - [`Error::PayloadTooLarge`] when the declared size, or the size the zstd frame records,
///   is over the limit;
/// - [`Error::UncompressedLengthMismatch`] when the payload is not the declared size;
/// - [`Error::Decompress`] for corrupt zstd data, trailing bytes after the zstd frame, or
///   data that decompresses past the declared size;
/// - [`Error::UnsupportedEncoding`] and [`Error::Decode`] as their names say.
pub fn decode_payload(frame: &Frame, max_uncompressed: usize) -> Result<FramePayload> {
    let declared = frame.uncompressed_length;
    let limit = max_uncompressed as u64;
    if u64::from(declared) > limit {
        return Err(Error::PayloadTooLarge {
            size: u64::from(declared),
            limit,
        });
    }
    let raw = match Encoding::try_from(frame.encoding) {
        Ok(Encoding::Proto) => {
            let actual = frame.payload.len() as u64;
            if actual > limit {
                return Err(Error::PayloadTooLarge {
                    size: actual,
                    limit,
                });
            }
            // Cloning `Bytes` is a reference count: decoding shares the frame's buffer.
            frame.payload.clone()
        }
        Ok(Encoding::ProtoZstd) => decompress_bounded(&frame.payload, declared, limit)?,
        Ok(Encoding::Unspecified) | Err(_) => {
            return Err(Error::UnsupportedEncoding(frame.encoding));
        }
    };
    if raw.len() as u64 != u64::from(declared) {
        return Err(Error::UncompressedLengthMismatch {
            declared: u64::from(declared),
            actual: raw.len() as u64,
        });
    }
    Ok(FramePayload::decode(raw)?)
}

/// Decompresses one zstd frame into at most `declared` bytes, where `declared <= limit`.
fn decompress_bounded(data: &[u8], declared: u32, limit: u64) -> Result<Bytes> {
    let invalid = |message: String| Error::Decompress {
        declared,
        source: io::Error::new(io::ErrorKind::InvalidData, message),
    };
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(data)
        .map_err(|code| invalid(zstd::zstd_safe::get_error_name(code).to_owned()))?;
    if frame_len != data.len() {
        return Err(invalid(format!(
            "{} bytes follow the zstd frame; a payload is exactly one frame",
            data.len() - frame_len
        )));
    }
    // Frames compressed in one call record their size: check it before allocating anything.
    if let Ok(Some(recorded)) = zstd::zstd_safe::get_frame_content_size(data) {
        if recorded > limit {
            return Err(Error::PayloadTooLarge {
                size: recorded,
                limit,
            });
        }
        if recorded != u64::from(declared) {
            return Err(Error::UncompressedLengthMismatch {
                declared: u64::from(declared),
                actual: recorded,
            });
        }
    }
    // The output buffer is exactly `declared` bytes; zstd fails rather than write past it.
    zstd::bulk::decompress(data, declared as usize)
        .map(Bytes::from)
        .map_err(|source| Error::Decompress { declared, source })
}

/// Encodes `ServerMessage{frames}`: a piece that can be joined with other pieces.
///
/// Byte for byte the same as encoding a `ServerMessage` with these frames and nothing else,
/// without cloning the frames into one.
#[must_use]
pub fn encode_frames_piece(frames: &[Frame]) -> Bytes {
    /// `ServerMessage.frames`.
    const FRAMES_TAG: u32 = 1;
    let len = prost::encoding::message::encoded_len_repeated(FRAMES_TAG, frames);
    let mut buf = BytesMut::with_capacity(len);
    for frame in frames {
        prost::encoding::message::encode(FRAMES_TAG, frame, &mut buf);
    }
    buf.freeze()
}

/// Encodes any `ServerMessage` as a piece, such as a `Synced` or a `Heartbeat` to append after
/// frames. A gRPC message holds at most one piece with each of `welcome`, `synced` and
/// `heartbeat`, because two of the same would merge into one.
#[must_use]
pub fn encode_piece(message: &ServerMessage) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

/// The payload encoding a server uses for an agent, from its `Hello.accepted_encodings`:
/// `ENCODING_PROTO_ZSTD` when accepted, else `ENCODING_PROTO`, which every agent accepts.
#[must_use]
pub fn negotiate_encoding(accepted_encodings: &[i32]) -> Encoding {
    if accepted_encodings.contains(&(Encoding::ProtoZstd as i32)) {
        Encoding::ProtoZstd
    } else {
        Encoding::Proto
    }
}

#[cfg(test)]
mod tests;
