//! [`Piece`]: one frame encoded once and shared by every agent; [`OutgoingMessage`]: the pieces
//! one gRPC message joins, byte for byte.
//!
//! A piece is the encoding of `ServerMessage{frames: [frame]}`; concatenated pieces decode as one
//! `ServerMessage` (field 1 is repeated), so a message costs agents' senders only `Bytes` clones.
//! A piece whose payload is zstd also has a plain (`ENCODING_PROTO`) variant for agents that do
//! not accept zstd: derived once, on first demand, then shared like the compact one.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use cattail_proto::pb::{Encoding, ServerMessage};
use prost::Message;

/// One encoded frame, shared.
#[derive(Debug)]
pub(crate) struct Piece {
    /// The piece with the frame's payload in its smallest encoding.
    compact: Bytes,
    /// Whether `compact`'s payload is zstd (then `plain` can be derived).
    compressed: bool,
    /// The piece with an `ENCODING_PROTO` payload, derived on first demand.
    plain: OnceLock<Bytes>,
    /// `Frame.uncompressed_length`.
    uncompressed_len: u32,
}

impl Piece {
    /// A piece from its encoded bytes. `compressed` says whether the payload is zstd.
    pub(crate) fn new(compact: Bytes, compressed: bool, uncompressed_len: u32) -> Self {
        Self {
            compact,
            compressed,
            plain: OnceLock::new(),
            uncompressed_len,
        }
    }

    /// The bytes to send to an agent that negotiated `encoding`. `derived` counts the plain
    /// variants this call had to build.
    pub(crate) fn bytes(&self, encoding: Encoding, derived: &AtomicU64) -> Bytes {
        if !self.compressed || encoding == Encoding::ProtoZstd {
            return self.compact.clone();
        }
        self.plain
            .get_or_init(|| {
                derived.fetch_add(1, Ordering::Relaxed);
                decompressed_piece(&self.compact, self.uncompressed_len).unwrap_or_else(|error| {
                    // The server compressed these bytes itself a moment ago; this is a bug.
                    // The agent will fail to decode the frame and reconnect.
                    tracing::error!(%error, "cannot derive a plain frame from a compressed one");
                    self.compact.clone()
                })
            })
            .clone()
    }

    /// The size of the compact bytes.
    pub(crate) fn len(&self) -> usize {
        self.compact.len()
    }

    /// `Frame.uncompressed_length`: agents refuse payloads over their limit.
    pub(crate) fn uncompressed_len(&self) -> u32 {
        self.uncompressed_len
    }
}

/// Re-encodes a compressed piece with its payload decompressed.
fn decompressed_piece(compact: &Bytes, uncompressed_len: u32) -> Result<Bytes, String> {
    // Decoding from `Bytes` shares the buffer: the payload is not copied here.
    let message = ServerMessage::decode(compact.clone()).map_err(|e| e.to_string())?;
    let mut frames = message.frames;
    for frame in &mut frames {
        let raw = zstd::bulk::decompress(&frame.payload, uncompressed_len as usize)
            .map_err(|e| e.to_string())?;
        frame.payload = Bytes::from(raw);
        frame.encoding = Encoding::Proto as i32;
    }
    Ok(cattail_proto::frame::encode_frames_piece(&frames))
}

/// One gRPC message to one agent: shared pieces to be written one after the other.
///
/// Invariant: `len` is the sum of the pieces' lengths and `frames` counts the frame pieces.
#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pieces: Vec<Bytes>,
    len: usize,
    frames: usize,
}

impl OutgoingMessage {
    /// The pieces, in order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The encoded length of the whole message.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message holds nothing.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The number of frames in the message.
    pub fn frame_count(&self) -> usize {
        self.frames
    }

    /// Writes the message into `dst`: one copy of each piece, nothing encoded.
    pub fn write_to(&self, dst: &mut impl BufMut) {
        for piece in &self.pieces {
            dst.put_slice(piece);
        }
    }

    /// The message as one buffer (for tests and tools; the server writes pieces directly).
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.len);
        self.write_to(&mut buf);
        buf.freeze()
    }

    /// Appends a frame piece.
    pub(crate) fn push_frame(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.frames += 1;
        self.pieces.push(piece);
    }

    /// Appends a piece that is not a frame: a Welcome, Synced or Heartbeat.
    pub(crate) fn push_control(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.pieces.push(piece);
    }

    /// Appends every piece of `other`.
    pub(crate) fn append(&mut self, other: OutgoingMessage) {
        self.len += other.len;
        self.frames += other.frames;
        self.pieces.extend(other.pieces);
    }

    /// A message of one control piece.
    pub(crate) fn control(piece: Bytes) -> Self {
        let mut message = Self::default();
        message.push_control(piece);
        message
    }
}

/// Splits a run of pieces into messages of at most `max` bytes, never splitting a group.
///
/// A group (one revision's frames, one snapshot chunk) larger than `max` on its own still gets
/// a message of its own; callers keep groups below the limit.
#[derive(Debug)]
pub(crate) struct MessageSplitter {
    max: usize,
    done: Vec<OutgoingMessage>,
    current: OutgoingMessage,
}

impl MessageSplitter {
    /// A splitter for messages of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            done: Vec::new(),
            current: OutgoingMessage::default(),
        }
    }

    /// Adds a control piece (Welcome, Synced) after what came before.
    pub(crate) fn control(&mut self, piece: Bytes) {
        self.make_room(piece.len());
        self.current.push_control(piece);
    }

    /// Adds frame pieces that must stay in one message.
    pub(crate) fn group(&mut self, pieces: Vec<Bytes>) {
        let len = pieces.iter().map(Bytes::len).sum();
        self.make_room(len);
        for piece in pieces {
            self.current.push_frame(piece);
        }
    }

    /// The messages, in order.
    pub(crate) fn finish(mut self) -> Vec<OutgoingMessage> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }

    fn make_room(&mut self, len: usize) {
        if !self.current.is_empty() && self.current.len() + len > self.max {
            self.done.push(std::mem::take(&mut self.current));
        }
    }
}
