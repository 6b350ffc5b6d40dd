//! [`FrameEncoder`]: turns one payload into one shared [`Piece`], compressing it once.
//!
//! It keeps one zstd context for its lifetime instead of building one per frame, which matters
//! because the writer encodes many small frames per batch (`cattail-loadtest` medium and large
//! scenarios, server CPU per million deliveries). A payload is stored compressed only when zstd
//! makes it smaller; tiny deltas stay plain and every agent shares the same bytes.

use std::time::SystemTime;

use bytes::Bytes;
use cattail_proto::frame::FrameHeader;
use cattail_proto::pb::{Encoding, Frame, FramePayload, ObjectKey, Upsert};
use prost::Message;

use crate::store::ProjectedObject;

use super::message::Piece;
use super::{Error, Result};

/// Payloads smaller than this are never compressed: zstd's frame overhead eats the gain.
const MIN_COMPRESS_BYTES: usize = 64;

/// Encodes payloads into pieces with a reusable zstd context.
pub(crate) struct FrameEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    level: i32,
}

thread_local! {
    /// One encoder per thread, for [`with_encoder`]: building a zstd context allocates and
    /// clears its tables, which a connect storm would otherwise do once per node-scoped
    /// snapshot.
    static THREAD_ENCODER: std::cell::Cell<Option<FrameEncoder>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f` with this thread's encoder at `level`, built on first use and kept for the next
/// call. `f` must not await: the encoder is the thread's, not the task's. A nested call gets
/// an encoder of its own.
pub(crate) fn with_encoder<R>(
    level: i32,
    f: impl FnOnce(&mut FrameEncoder) -> Result<R>,
) -> Result<R> {
    let mut encoder = match THREAD_ENCODER.take() {
        Some(encoder) if encoder.level == level => encoder,
        _ => FrameEncoder::new(level)?,
    };
    let result = f(&mut encoder);
    THREAD_ENCODER.set(Some(encoder));
    result
}

impl std::fmt::Debug for FrameEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameEncoder")
    }
}

/// The sizes of what was encoded, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    /// Uncompressed payload bytes.
    pub(crate) raw: u64,
    /// Payload bytes as stored (compressed or not).
    pub(crate) stored: u64,
}

impl Encoded {
    pub(crate) fn add(&mut self, other: Encoded) {
        self.raw += other.raw;
        self.stored += other.stored;
    }
}

impl FrameEncoder {
    /// An encoder compressing at `level`.
    pub(crate) fn new(level: i32) -> Result<Self> {
        zstd::bulk::Compressor::new(level)
            .map(|compressor| Self { compressor, level })
            .map_err(|e| Error::Encode(format!("cannot create a zstd context: {e}")))
    }

    /// Encodes `payload` as one frame with `header`, compressed if `allow_zstd` and smaller.
    pub(crate) fn piece(
        &mut self,
        header: FrameHeader,
        payload: &FramePayload,
        allow_zstd: bool,
    ) -> Result<(Piece, Encoded)> {
        let raw = payload.encode_to_vec();
        let uncompressed_len = u32::try_from(raw.len()).map_err(|_| {
            Error::Encode(format!("a payload of {} bytes is over 4 GiB", raw.len()))
        })?;
        let mut encoding = Encoding::Proto;
        let mut stored = Bytes::from(raw);
        if allow_zstd && stored.len() >= MIN_COMPRESS_BYTES {
            let compressed = self
                .compressor
                .compress(&stored)
                .map_err(|e| Error::Encode(format!("zstd: {e}")))?;
            if compressed.len() < stored.len() {
                encoding = Encoding::ProtoZstd;
                stored = Bytes::from(compressed);
            }
        }
        let sizes = Encoded {
            raw: u64::from(uncompressed_len),
            stored: stored.len() as u64,
        };
        let frame = Frame {
            revision: header.revision,
            resource: header.resource,
            scope: header.scope,
            replace: header.replace,
            encoding: encoding as i32,
            payload: stored,
            publish_time_unix_nanos: header.publish_time_unix_nanos,
            uncompressed_length: uncompressed_len,
            replaced_buckets: header.replaced_buckets,
        };
        let bytes = cattail_proto::frame::encode_frames_piece(std::slice::from_ref(&frame));
        Ok((
            Piece::new(bytes, encoding == Encoding::ProtoZstd, uncompressed_len),
            sizes,
        ))
    }
}

/// `Frame.publish_time_unix_nanos` for a wall-clock time (0 before 1970, saturating in 2262).
pub(crate) fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The wire form of an upsert of `object`. Cloning the value is a reference count.
pub(crate) fn upsert(object: &ProjectedObject) -> Upsert {
    Upsert {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        value: object.value.clone(),
        resource_version: object.resource_version.clone(),
    }
}

/// The wire form of a deletion.
pub(crate) fn delete(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// The encoded length an upsert adds to a `FramePayload` (field 1, length-delimited).
pub(crate) fn upsert_len(upsert: &Upsert) -> usize {
    prost::encoding::message::encoded_len(1, upsert)
}
