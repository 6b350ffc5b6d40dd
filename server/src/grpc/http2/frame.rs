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

/// The most debug data a GOAWAY carries.
const MAX_GOAWAY_DEBUG_BYTES: usize = 256;

/// Writes a frame header. `len` must fit in 24 bits: [`Frame::write`] and the tests' raw frames
/// are its only callers.
pub(super) fn put_head(dst: &mut impl BufMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize, "frame of {len} bytes");
    let len = (len as u32).to_be_bytes();
    dst.put_slice(&len[1..]);
    dst.put_u8(kind);
    dst.put_u8(flags);
    dst.put_u32(stream & 0x7fff_ffff);
}

/// A frame this server writes. Its length is computed from what it holds, in one place, so
/// no caller counts bytes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Frame<'a> {
    Settings(&'a [(u16, u32)]),
    SettingsAck,
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    RstStream {
        stream: u32,
        reason: Reason,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    /// `debug` is cut to [`MAX_GOAWAY_DEBUG_BYTES`], on a character boundary.
    GoAway {
        last_stream: u32,
        reason: Reason,
        debug: &'a str,
    },
    /// A whole header block in one frame (this server's blocks are far below any frame size).
    Headers {
        stream: u32,
        flags: u8,
        block: &'a [u8],
    },
    /// The header of a DATA frame; the caller queues exactly `len` payload bytes after it.
    DataHead {
        stream: u32,
        len: usize,
        end_stream: bool,
    },
}

impl Frame<'_> {
    /// Bytes [`Frame::write`] writes.
    pub(super) fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::Settings(settings) => settings.len() * 6,
                Self::SettingsAck | Self::DataHead { .. } => 0,
                Self::WindowUpdate { .. } | Self::RstStream { .. } => 4,
                Self::Ping { .. } => 8,
                Self::GoAway { debug, .. } => 8 + cut_debug(debug).len(),
                Self::Headers { block, .. } => block.len(),
            }
    }

    /// Writes the frame: its header, then its payload.
    pub(super) fn write(&self, dst: &mut impl BufMut) {
        let payload = self.encoded_len() - HEADER_LEN;
        match *self {
            Self::Settings(settings) => {
                put_head(dst, payload, kind::SETTINGS, 0, 0);
                for &(id, value) in settings {
                    dst.put_u16(id);
                    dst.put_u32(value);
                }
            }
            Self::SettingsAck => put_head(dst, payload, kind::SETTINGS, flag::ACK, 0),
            Self::WindowUpdate { stream, increment } => {
                put_head(dst, payload, kind::WINDOW_UPDATE, 0, stream);
                dst.put_u32(increment & 0x7fff_ffff);
            }
            Self::RstStream { stream, reason } => {
                put_head(dst, payload, kind::RST_STREAM, 0, stream);
                dst.put_u32(reason.0);
            }
            Self::Ping { ack, payload: data } => {
                put_head(dst, payload, kind::PING, if ack { flag::ACK } else { 0 }, 0);
                dst.put_slice(&data);
            }
            Self::GoAway {
                last_stream,
                reason,
                debug,
            } => {
                put_head(dst, payload, kind::GOAWAY, 0, 0);
                dst.put_u32(last_stream & 0x7fff_ffff);
                dst.put_u32(reason.0);
                dst.put_slice(cut_debug(debug).as_bytes());
            }
            Self::Headers {
                stream,
                flags,
                block,
            } => {
                put_head(dst, payload, kind::HEADERS, flags, stream);
                dst.put_slice(block);
            }
            Self::DataHead {
                stream,
                len,
                end_stream,
            } => {
                let flags = if end_stream { flag::END_STREAM } else { 0 };
                put_head(dst, len, kind::DATA, flags, stream);
            }
        }
    }
}

/// `debug` cut to at most [`MAX_GOAWAY_DEBUG_BYTES`] bytes without splitting a character.
fn cut_debug(debug: &str) -> &str {
    let mut end = debug.len().min(MAX_GOAWAY_DEBUG_BYTES);
    while !debug.is_char_boundary(end) {
        end -= 1;
    }
    &debug[..end]
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

/// The stream a HEADERS frame with the PRIORITY flag depends on.
pub(super) fn headers_dependency(head: Head, payload: &[u8]) -> Option<u32> {
    if head.kind != kind::HEADERS || !head.has(flag::PRIORITY) {
        return None;
    }
    let start = usize::from(head.has(flag::PADDED));
    let bytes: [u8; 4] = payload.get(start..start + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) & 0x7fff_ffff)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_is_as_long_as_its_header_says() {
        let long = "é".repeat(200);
        let frames = [
            Frame::Settings(&[
                (setting::MAX_CONCURRENT_STREAMS, 100),
                (setting::ENABLE_PUSH, 0),
            ]),
            Frame::SettingsAck,
            Frame::WindowUpdate {
                stream: 3,
                increment: 1000,
            },
            Frame::RstStream {
                stream: 3,
                reason: Reason::CANCEL,
            },
            Frame::Ping {
                ack: true,
                payload: *b"12345678",
            },
            Frame::GoAway {
                last_stream: 7,
                reason: Reason::PROTOCOL_ERROR,
                debug: "short",
            },
            Frame::GoAway {
                last_stream: 7,
                reason: Reason::PROTOCOL_ERROR,
                debug: &long,
            },
            Frame::Headers {
                stream: 1,
                flags: flag::END_HEADERS,
                block: &[0x88],
            },
        ];
        for frame in frames {
            let mut out = Vec::new();
            frame.write(&mut out);
            let head = Head::parse(&out).unwrap_or_else(|| panic!("{frame:?}: no header"));
            assert_eq!(out.len(), frame.encoded_len(), "{frame:?}");
            assert_eq!(head.len as usize + HEADER_LEN, out.len(), "{frame:?}");
        }
        let mut data = Vec::new();
        Frame::DataHead {
            stream: 5,
            len: 1234,
            end_stream: false,
        }
        .write(&mut data);
        assert_eq!(Head::parse(&data).map(|head| head.len), Some(1234));
    }

    #[test]
    fn goaway_debug_data_is_cut_on_a_character_boundary() {
        // 255 ASCII bytes, then a two-byte character across the 256-byte limit.
        let debug = format!("{}é and more", "x".repeat(255));
        let mut out = Vec::new();
        Frame::GoAway {
            last_stream: 1,
            reason: Reason::PROTOCOL_ERROR,
            debug: &debug,
        }
        .write(&mut out);
        let data = &out[HEADER_LEN + 8..];
        assert_eq!(data.len(), 255);
        assert!(std::str::from_utf8(data).is_ok());
        assert_eq!(cut_debug("é"), "é");
        assert_eq!(cut_debug(&"€".repeat(100)).len(), 255);
    }
}
