//! HTTP/2 frames as the wire has them (RFC 9113 section 4): the 9-byte header, the types,
//! flags, settings and error codes this server uses, and the fixed-size payloads it parses.
//!
//! Parsing never panics and never reads past what it was given: a frame that is too short or
//! too long for its type is a [`FrameError`] naming the error code the RFC gives it.

use bytes::BufMut;

/// The client's connection preface (RFC 9113 section 3.4).
pub(super) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes in a frame header.
pub(super) const HEADER_LEN: usize = 9;
/// The frame size every endpoint accepts until told otherwise, and the most this server reads.
pub(super) const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest frame size a peer may advertise.
pub(super) const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// Flow-control windows start here, for both the connection and each stream.
pub(super) const DEFAULT_WINDOW: u32 = 65_535;
/// The largest a flow-control window may grow.
pub(super) const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Frame types (RFC 9113 section 6).
pub(super) mod kind {
    pub(in super::super) const DATA: u8 = 0x0;
    pub(in super::super) const HEADERS: u8 = 0x1;
    pub(in super::super) const PRIORITY: u8 = 0x2;
    pub(in super::super) const RST_STREAM: u8 = 0x3;
    pub(in super::super) const SETTINGS: u8 = 0x4;
    pub(in super::super) const PUSH_PROMISE: u8 = 0x5;
    pub(in super::super) const PING: u8 = 0x6;
    pub(in super::super) const GOAWAY: u8 = 0x7;
    pub(in super::super) const WINDOW_UPDATE: u8 = 0x8;
    pub(in super::super) const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub(super) mod flag {
    pub(in super::super) const END_STREAM: u8 = 0x1;
    pub(in super::super) const ACK: u8 = 0x1;
    pub(in super::super) const END_HEADERS: u8 = 0x4;
    pub(in super::super) const PADDED: u8 = 0x8;
    pub(in super::super) const PRIORITY: u8 = 0x20;
}

/// Settings identifiers (RFC 9113 section 6.5.2).
pub(super) mod setting {
    pub(in super::super) const ENABLE_PUSH: u16 = 0x2;
    pub(in super::super) const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub(in super::super) const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub(in super::super) const MAX_FRAME_SIZE: u16 = 0x5;
    pub(in super::super) const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// An HTTP/2 error code (RFC 9113 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reason(pub(super) u32);

impl Reason {
    pub(super) const NO_ERROR: Self = Self(0x0);
    pub(super) const PROTOCOL_ERROR: Self = Self(0x1);
    pub(super) const FLOW_CONTROL_ERROR: Self = Self(0x3);
    pub(super) const STREAM_CLOSED: Self = Self(0x5);
    pub(super) const FRAME_SIZE_ERROR: Self = Self(0x6);
    pub(super) const REFUSED_STREAM: Self = Self(0x7);
    pub(super) const CANCEL: Self = Self(0x8);
    pub(super) const COMPRESSION_ERROR: Self = Self(0x9);
    pub(super) const ENHANCE_YOUR_CALM: Self = Self(0xb);

    /// The code's name, for logs and metric labels.
    pub(super) fn name(self) -> &'static str {
        match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A frame that breaks the rules of its type, with the code that answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub(super) struct FrameError {
    /// The error code to send.
    pub(super) reason: Reason,
    /// What was wrong, for the log and the GOAWAY's debug data.
    pub(super) message: String,
}

impl FrameError {
    pub(super) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    /// Payload length.
    pub(super) len: u32,
    pub(super) kind: u8,
    pub(super) flags: u8,
    /// The stream, with the reserved bit cleared.
    pub(super) stream: u32,
}

impl Head {
    /// Reads a header from the first [`HEADER_LEN`] bytes of `buf`, if there are that many.
    pub(super) fn parse(buf: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    pub(super) fn has(self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Writes a frame header. `len` must fit in 24 bits (callers keep frames under the peer's limit).
pub(super) fn put_head(dst: &mut impl BufMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize, "frame of {len} bytes");
    let len = (len as u32).to_be_bytes();
    dst.put_slice(&len[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// Writes a whole SETTINGS frame with `settings`.
pub(super) fn put_settings(dst: &mut impl BufMut, settings: &[(u16, u32)]) {
    put_head(dst, settings.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

/// Writes a WINDOW_UPDATE frame.
pub(super) fn put_window_update(dst: &mut impl BufMut, stream: u32, increment: u32) {
    put_head(dst, 4, kind::WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment & 0x7fff_ffff);
}

/// Writes a RST_STREAM frame.
pub(super) fn put_rst_stream(dst: &mut impl BufMut, stream: u32, reason: Reason) {
    put_head(dst, 4, kind::RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

/// Writes a PING frame.
pub(super) fn put_ping(dst: &mut impl BufMut, ack: bool, payload: [u8; 8]) {
    put_head(dst, 8, kind::PING, if ack { flag::ACK } else { 0 }, 0);
    dst.put_slice(&payload);
}

/// Writes a GOAWAY frame; `debug` is cut to 256 bytes.
pub(super) fn put_goaway(dst: &mut impl BufMut, last_stream: u32, reason: Reason, debug: &str) {
    let debug = &debug.as_bytes()[..debug.len().min(256)];
    put_head(dst, 8 + debug.len(), kind::GOAWAY, 0, 0);
    dst.put_u32(last_stream & 0x7fff_ffff);
    dst.put_u32(reason.0);
    dst.put_slice(debug);
}

/// One setting of a SETTINGS frame.
pub(super) fn settings(
    payload: &[u8],
) -> Result<impl Iterator<Item = (u16, u32)> + '_, FrameError> {
    if !payload.len().is_multiple_of(6) {
        return Err(FrameError::new(
            Reason::FRAME_SIZE_ERROR,
            format!("a SETTINGS payload of {} bytes", payload.len()),
        ));
    }
    Ok(payload.chunks_exact(6).map(|s| {
        (
            u16::from_be_bytes([s[0], s[1]]),
            u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
        )
    }))
}

/// The 4-byte payload of WINDOW_UPDATE and RST_STREAM.
pub(super) fn u32_payload(head: Head, payload: &[u8]) -> Result<u32, FrameError> {
    let bytes: [u8; 4] = payload.try_into().map_err(|_| {
        FrameError::new(
            Reason::FRAME_SIZE_ERROR,
            format!(
                "a frame of type {} with {} bytes, not 4",
                head.kind, head.len
            ),
        )
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// The 8-byte payload of a PING.
pub(super) fn ping_payload(payload: &[u8]) -> Result<[u8; 8], FrameError> {
    payload.try_into().map_err(|_| {
        FrameError::new(
            Reason::FRAME_SIZE_ERROR,
            format!("a PING of {} bytes, not 8", payload.len()),
        )
    })
}

/// Strips padding (and the priority fields of HEADERS) from a DATA or HEADERS payload.
pub(super) fn unpad(head: Head, payload: &[u8]) -> Result<&[u8], FrameError> {
    let mut body = payload;
    let mut pad = 0;
    if head.has(flag::PADDED) {
        let (&len, rest) = body.split_first().ok_or_else(|| {
            FrameError::new(
                Reason::FRAME_SIZE_ERROR,
                "a padded frame with no pad length",
            )
        })?;
        pad = usize::from(len);
        body = rest;
    }
    if head.kind == kind::HEADERS && head.has(flag::PRIORITY) {
        body = body.get(5..).ok_or_else(|| {
            FrameError::new(
                Reason::FRAME_SIZE_ERROR,
                "a HEADERS frame too short for its priority",
            )
        })?;
    }
    if pad > body.len() {
        return Err(FrameError::new(
            Reason::PROTOCOL_ERROR,
            format!("{pad} bytes of padding in a {}-byte payload", payload.len()),
        ));
    }
    Ok(&body[..body.len() - pad])
}
