//! gRPC's message framing on the agent's side of a Watch, shared by both transports: the
//! length prefix ([`MESSAGE_PREFIX_BYTES`]) and [`MessageReader`], which turns request bytes,
//! however they are split, into [`AgentMessage`]s.
//!
//! Both transports feed it: the native one from DATA frames, the tonic one from the request
//! body. So an agent sees the same status on either for a message over the limit, a compressed
//! message (none is negotiated), bytes that are not an `AgentMessage`, or a request that ends
//! inside a message; and partial messages are held only within the shared [`InboundBudget`].

mod budget;

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use cattail_proto::pb::AgentMessage;
use prost::Message as _;

use crate::fanout::InboundError;

pub(crate) use budget::InboundBudget;

/// The length prefix of every gRPC message on the wire: a compressed flag byte and a
/// big-endian `u32` length (gRPC over HTTP/2, "Length-Prefixed-Message"). Both transports
/// and the health service frame with it.
pub(crate) const MESSAGE_PREFIX_BYTES: usize = 5;

/// A reader's buffer is freed once empty if it grew past this (after a large Hello).
const KEEP_BUFFER_BYTES: usize = 4096;

/// Reassembles one stream's gRPC messages from DATA payloads.
#[derive(Debug)]
pub(crate) struct MessageReader {
    buf: BytesMut,
    /// The largest message accepted.
    limit: usize,
    /// A message was refused: everything after it is ignored.
    failed: bool,
    /// What the partial message in `buf` holds of the transport's budget.
    budget: Arc<InboundBudget>,
    /// Bytes taken from `budget`: `buf.len()` between pushes.
    held: usize,
}

impl MessageReader {
    pub(crate) fn new(limit: usize, budget: Arc<InboundBudget>) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
            failed: false,
            budget,
            held: 0,
        }
    }

    /// Adds `data` and hands every whole message to `deliver`, then an error if one is refused.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        mut deliver: impl FnMut(Result<AgentMessage, InboundError>),
    ) {
        if self.failed {
            return;
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= MESSAGE_PREFIX_BYTES {
            let compressed = self.buf[0];
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if len > self.limit {
                let limit = self.limit;
                deliver(Err(self.fail(InboundError::TooLarge(format!(
                    "a message of {len} bytes is over the limit of {limit} bytes"
                )))));
                return;
            }
            if compressed != 0 {
                deliver(Err(self.fail(InboundError::Malformed(
                    "a compressed message, but no grpc-encoding was negotiated: send \
                     uncompressed messages"
                        .into(),
                ))));
                return;
            }
            if self.buf.len() < MESSAGE_PREFIX_BYTES + len {
                break;
            }
            self.buf.advance(MESSAGE_PREFIX_BYTES);
            let body = self.buf.split_to(len);
            match AgentMessage::decode(&body[..]) {
                Ok(message) => deliver(Ok(message)),
                Err(error) => {
                    deliver(Err(self.fail(InboundError::Malformed(format!(
                        "not a cattail.v1.AgentMessage: {error}"
                    )))));
                    return;
                }
            }
        }
        if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER_BYTES {
            self.buf = BytesMut::new();
        }
        // What stays is part of a message: it is held only within the transport's budget.
        let keep = self.buf.len();
        if keep > self.held && !self.budget.take(keep - self.held) {
            let limit = self.budget.limit();
            deliver(Err(self.fail(InboundError::TooLarge(format!(
                "the server already holds {limit} bytes of incomplete messages from agents; \
                 retry shortly"
            )))));
            return;
        }
        self.budget.give_back(self.held.saturating_sub(keep));
        self.held = keep;
    }

    /// The agent ended its side: a message it started and did not finish is an error.
    pub(crate) fn end(&self) -> Option<InboundError> {
        self.is_partial()
            .then(|| InboundError::Malformed("the request ended inside a message".into()))
    }

    /// Whether a message was started but not finished.
    pub(crate) fn is_partial(&self) -> bool {
        !self.failed && !self.buf.is_empty()
    }

    /// Stops reading: what comes after a refused message cannot be framed.
    fn fail(&mut self, error: InboundError) -> InboundError {
        self.failed = true;
        self.buf = BytesMut::new();
        self.budget.give_back(std::mem::take(&mut self.held));
        error
    }
}

impl Drop for MessageReader {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use cattail_proto::pb::agent_message::Message;
    use cattail_proto::pb::{Ack, Hello};

    use super::*;

    fn budget() -> Arc<InboundBudget> {
        Arc::new(InboundBudget::new(usize::MAX))
    }

    /// `message` with its gRPC length prefix, uncompressed.
    pub(crate) fn framed(message: &AgentMessage) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// A minimal Hello message.
    pub(crate) fn hello() -> AgentMessage {
        AgentMessage {
            message: Some(Message::Hello(Hello {
                agent_id: "a".into(),
                ..Hello::default()
            })),
        }
    }

    /// An Ack message.
    pub(crate) fn ack(revision: u64) -> AgentMessage {
        AgentMessage {
            message: Some(Message::Ack(Ack { revision })),
        }
    }

    fn read_all(
        reader: &mut MessageReader,
        bytes: &[u8],
        step: usize,
    ) -> Vec<Result<AgentMessage, InboundError>> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            reader.push(chunk, |item| out.push(item));
        }
        out
    }

    #[test]
    fn messages_split_anywhere_come_out_whole() {
        let mut bytes = framed(&hello());
        bytes.extend(framed(&ack(7)));
        bytes.extend(framed(&ack(8)));
        for step in [1, 3, 5, 7, bytes.len()] {
            let mut reader = MessageReader::new(1024, budget());
            let out = read_all(&mut reader, &bytes, step);
            assert_eq!(out, [Ok(hello()), Ok(ack(7)), Ok(ack(8))], "step {step}");
            assert!(!reader.is_partial());
        }
        let mut reader = MessageReader::new(1024, budget());
        read_all(&mut reader, &bytes[..3], 3);
        assert!(reader.is_partial());
    }

    #[test]
    fn oversized_compressed_and_malformed_messages_are_refused_and_reading_stops() {
        let mut reader = MessageReader::new(4, budget());
        let out = read_all(&mut reader, &framed(&hello()), 2);
        assert!(
            matches!(&out[..], [Err(InboundError::TooLarge(m))] if m.contains("over the limit of 4")),
            "{out:?}"
        );
        // Nothing after a refused message is read, however it looks.
        assert!(read_all(&mut reader, &framed(&ack(1)), 100).is_empty());

        let mut compressed = framed(&ack(1));
        compressed[0] = 1;
        let out = read_all(&mut MessageReader::new(1024, budget()), &compressed, 100);
        assert!(
            matches!(&out[..], [Err(InboundError::Malformed(m))] if m.contains("compressed")),
            "{out:?}"
        );

        let out = read_all(
            &mut MessageReader::new(1024, budget()),
            &[0, 0, 0, 0, 2, 0xff, 0xff],
            100,
        );
        assert!(
            matches!(&out[..], [Err(InboundError::Malformed(m))] if m.contains("AgentMessage")),
            "{out:?}"
        );
    }

    #[test]
    fn partial_messages_are_held_only_within_the_shared_budget() {
        let budget = Arc::new(InboundBudget::new(30));
        let bytes = framed(&hello());
        let mut first = MessageReader::new(1024, budget.clone());
        let mut second = MessageReader::new(1024, budget.clone());
        // Whole messages are decoded at once and hold nothing.
        assert_eq!(read_all(&mut first, &bytes, bytes.len()), [Ok(hello())]);
        assert_eq!(budget.held(), 0);
        assert!(read_all(&mut first, &[0, 0, 0, 0, 40, 1, 2, 3, 4, 5], 10).is_empty());
        assert_eq!(budget.held(), 10);
        let out = read_all(
            &mut second,
            &[
                0, 0, 0, 0, 40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ],
            21,
        );
        assert!(
            matches!(&out[..], [Err(InboundError::TooLarge(m))] if m.contains("30 bytes of incomplete")),
            "{out:?}"
        );
        assert_eq!(budget.held(), 10, "the refused reader holds nothing");
        drop(first);
        assert_eq!(budget.held(), 0, "a reader that goes gives its bytes back");
    }

    #[test]
    fn a_large_hello_does_not_keep_its_buffer() {
        let mut big = hello();
        if let Some(Message::Hello(h)) = &mut big.message {
            h.agent_id = "x".repeat(100_000);
        }
        let mut reader = MessageReader::new(1 << 20, budget());
        let out = read_all(&mut reader, &framed(&big), 16_384);
        assert_eq!(out, [Ok(big)]);
        assert_eq!(reader.buf.capacity(), 0);
    }

    #[test]
    fn a_request_that_ends_inside_a_message_is_an_error() {
        let mut reader = MessageReader::new(1024, budget());
        assert_eq!(reader.end(), None);
        assert!(read_all(&mut reader, &framed(&hello())[..4], 4).is_empty());
        assert!(
            matches!(reader.end(), Some(InboundError::Malformed(m)) if m.contains("inside a message"))
        );
    }
}
