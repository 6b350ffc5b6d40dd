//! [`AgentMessageDecoder`]: how the agent's side of `cattail.v1.Sync/Watch` is decoded. The
//! server's side is not encoded at all: see [`super::body`].

use cattail_proto::pb::AgentMessage;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};

/// The length prefix of every gRPC message on the wire: a compressed flag byte and a
/// big-endian `u32` length (gRPC over HTTP/2, "Length-Prefixed-Message"). Both transports
/// and the health service frame with it.
pub(crate) const MESSAGE_PREFIX_BYTES: usize = 5;

/// Initial decode buffer per stream: agents send a Hello once, then Acks of a few bytes.
const DECODE_BUFFER_BYTES: usize = 512;
/// tonic's yield threshold for decoding; unused for decoding, kept small.
const YIELD_THRESHOLD_BYTES: usize = 8 * 1024;

/// Decodes agent messages; a malformed one is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AgentMessageDecoder;

impl Decoder for AgentMessageDecoder {
    type Item = AgentMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        AgentMessage::decode(src).map(Some).map_err(|error| {
            Status::invalid_argument(format!("not a cattail.v1.AgentMessage: {error}"))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(DECODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}
