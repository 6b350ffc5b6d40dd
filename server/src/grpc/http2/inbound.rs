//! What an agent sends on its Watch stream, from DATA frames to [`AgentMessage`]s: the gRPC
//! message decoder of one stream ([`MessageReader`]) and the mailbox its sender reads
//! ([`Mailbox`], read through [`Inbound`]).
//!
//! Memory is bounded whatever the agent sends. The reader holds at most one partial message,
//! refused once its prefix says it is over the limit. The mailbox holds at most the stream's
//! first message, the newest Ack (older ones are advisory and dropped) and one message that
//! ends the stream (a second Hello, a bad message, a reset), so the connection can decode and
//! return flow-control credit at once without queueing anything per message.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use cattail_proto::pb::agent_message::Message;
use cattail_proto::pb::{Ack, AgentMessage};
use futures::Stream;
use prost::Message as _;

use crate::fanout::InboundError;
use crate::grpc::codec::MESSAGE_PREFIX_BYTES;

use super::budget::InboundBudget;

/// A reader's buffer is freed once empty if it grew past this (after a large Hello).
const KEEP_BUFFER_BYTES: usize = 4096;

/// Reassembles one stream's gRPC messages from DATA payloads.
#[derive(Debug)]
pub(super) struct MessageReader {
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
    pub(super) fn new(limit: usize, budget: Arc<InboundBudget>) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
            failed: false,
            budget,
            held: 0,
        }
    }

    /// Adds `data` and hands every whole message to `deliver`, then an error if one is refused.
    pub(super) fn push(
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

    /// Whether a message was started but not finished.
    pub(super) fn is_partial(&self) -> bool {
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

/// The connection's side of one stream's mailbox.
#[derive(Debug, Default)]
pub(super) struct Mailbox {
    shared: Arc<Mutex<Slots>>,
}

/// What the mailbox holds, in the order the sender reads it.
#[derive(Debug, Default)]
struct Slots {
    /// The stream's first message, until read.
    first: Option<Box<AgentMessage>>,
    /// The newest Ack not yet read.
    ack: Option<u64>,
    /// A message after the first that is not an Ack: the sender ends the stream on it.
    last: Option<Box<AgentMessage>>,
    /// How the stream ended: `Some(None)` when the agent closed its side.
    end: Option<Option<InboundError>>,
    /// The first message has been put in.
    started: bool,
    /// Nothing more is accepted: `last` or `end` is set.
    sealed: bool,
    waker: Option<Waker>,
}

impl Mailbox {
    /// The reading side, for the stream's sender.
    pub(super) fn reader(&self) -> Inbound {
        Inbound {
            shared: self.shared.clone(),
        }
    }

    /// Puts in what the reader decoded.
    pub(super) fn put(&self, item: Result<AgentMessage, InboundError>) {
        let mut slots = self.lock();
        if slots.sealed {
            return;
        }
        match item {
            Err(error) => {
                slots.end = Some(Some(error));
                slots.sealed = true;
            }
            Ok(message) if !slots.started => {
                slots.started = true;
                slots.first = Some(Box::new(message));
            }
            Ok(AgentMessage {
                message: Some(Message::Ack(Ack { revision })),
            }) => slots.ack = Some(revision),
            // A message from a newer protocol revision: the sender ignores it too.
            Ok(AgentMessage { message: None }) => return,
            Ok(message) => {
                // The sender ends the stream on it: nothing after it is read.
                slots.last = Some(Box::new(message));
                slots.end = Some(None);
                slots.sealed = true;
            }
        }
        if let Some(waker) = slots.waker.take() {
            waker.wake();
        }
    }

    /// Whether the stream's first message (its Hello) has come.
    pub(super) fn has_first(&self) -> bool {
        self.lock().started
    }

    /// The agent closed its side of the stream (END_STREAM), or the stream is gone (`error`).
    pub(super) fn close(&self, error: Option<InboundError>) {
        let mut slots = self.lock();
        if slots.sealed {
            return;
        }
        slots.end = Some(error);
        slots.sealed = true;
        if let Some(waker) = slots.waker.take() {
            waker.wake();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        lock(&self.shared)
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.close(Some(InboundError::Closed("the stream is gone".into())));
    }
}

/// The sender's side of a mailbox: the agent's messages, then the end of the stream.
#[derive(Debug)]
pub(crate) struct Inbound {
    shared: Arc<Mutex<Slots>>,
}

impl Stream for Inbound {
    type Item = Result<AgentMessage, InboundError>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut slots = lock(&self.shared);
        if let Some(first) = slots.first.take() {
            return Poll::Ready(Some(Ok(*first)));
        }
        if let Some(revision) = slots.ack.take() {
            return Poll::Ready(Some(Ok(AgentMessage {
                message: Some(Message::Ack(Ack { revision })),
            })));
        }
        if let Some(last) = slots.last.take() {
            return Poll::Ready(Some(Ok(*last)));
        }
        match slots.end.take() {
            Some(Some(error)) => {
                // Read once; after it the stream has ended.
                slots.end = Some(None);
                Poll::Ready(Some(Err(error)))
            }
            Some(None) => {
                slots.end = Some(None);
                Poll::Ready(None)
            }
            None => {
                if !slots
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    slots.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// Locks the slots; a poisoned lock only means a panic elsewhere, and the slots stay valid.
fn lock(shared: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use cattail_proto::pb::Hello;
    use futures::FutureExt;
    use futures::StreamExt;

    use super::*;

    fn budget() -> Arc<InboundBudget> {
        Arc::new(InboundBudget::new(usize::MAX))
    }

    fn framed(message: &AgentMessage) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn hello() -> AgentMessage {
        AgentMessage {
            message: Some(Message::Hello(Hello {
                agent_id: "a".into(),
                ..Hello::default()
            })),
        }
    }

    fn ack(revision: u64) -> AgentMessage {
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
    fn the_mailbox_keeps_the_first_message_the_newest_ack_and_what_ends_the_stream() {
        let mailbox = Mailbox::default();
        let mut inbound = mailbox.reader();
        assert!(inbound.next().now_or_never().is_none());
        mailbox.put(Ok(hello()));
        for revision in 1..=100 {
            mailbox.put(Ok(ack(revision)));
        }
        mailbox.put(Ok(AgentMessage { message: None }));
        mailbox.put(Ok(hello()));
        // Sealed by the second Hello: later messages are dropped.
        mailbox.put(Ok(ack(200)));
        mailbox.close(None);
        let got: Vec<_> = inbound.by_ref().collect::<Vec<_>>().now_or_never().unwrap();
        assert_eq!(got, [Ok(hello()), Ok(ack(100)), Ok(hello())]);
    }

    #[test]
    fn errors_and_drops_end_the_stream_once() {
        let mailbox = Mailbox::default();
        let mut inbound = mailbox.reader();
        mailbox.put(Err(InboundError::Malformed("bad".into())));
        mailbox.put(Ok(hello()));
        let got: Vec<_> = inbound.by_ref().collect::<Vec<_>>().now_or_never().unwrap();
        assert_eq!(got, [Err(InboundError::Malformed("bad".into()))]);

        let mailbox = Mailbox::default();
        let inbound = mailbox.reader();
        mailbox.put(Ok(hello()));
        drop(mailbox);
        let got: Vec<_> = inbound.collect::<Vec<_>>().now_or_never().unwrap();
        assert!(
            matches!(&got[..], [Ok(_), Err(InboundError::Closed(_))]),
            "{got:?}"
        );
    }
}
