//! [`PassthroughCodec`]: the `cattail.v1.Sync/Watch` codec. Responses are written as the shared
//! pre-encoded pieces they already are; requests are decoded with prost.
//!
//! This is why the generated `SyncServer` is not used: its prost codec would encode every
//! `ServerMessage` once per agent. Here the only per-agent cost is one copy of each piece into
//! tonic's frame buffer. The benchmark that justifies it is `cattail-loadtest`'s medium and large
//! scenarios (server CPU seconds per million agent-deliveries, against the plain-TCP baseline
//! that writes the same shared `Bytes`). gRPC compression stays off: payloads are compressed
//! once, in the frames.

use cattail_proto::pb::AgentMessage;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::fanout::OutgoingMessage;

/// Initial bytes tonic allocates per stream for encoding. tonic keeps this much per agent while
/// idle, and our encoder reserves each message's exact size anyway, so it is small: per-agent
/// RSS in the large scenario (5,000 agents) is what it is tuned against.
const ENCODE_BUFFER_BYTES: usize = 1024;
/// tonic hands its buffer to HTTP/2 once it holds this much, so a burst of queued messages goes
/// out in few writes.
const YIELD_THRESHOLD_BYTES: usize = 64 * 1024;
/// Initial decode buffer per stream: agents send a Hello once, then Acks of a few bytes.
const DECODE_BUFFER_BYTES: usize = 512;

/// Encodes [`OutgoingMessage`]s by copying their pieces; decodes [`AgentMessage`]s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassthroughCodec;

impl Codec for PassthroughCodec {
    type Encode = OutgoingMessage;
    type Decode = AgentMessage;
    type Encoder = PassthroughEncoder;
    type Decoder = AgentMessageDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PassthroughEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AgentMessageDecoder
    }
}

/// Writes the pieces of a message one after the other: nothing is serialized or compressed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassthroughEncoder;

impl Encoder for PassthroughEncoder {
    type Item = OutgoingMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.reserve(item.len());
        item.write_to(dst);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ENCODE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
    }
}

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
