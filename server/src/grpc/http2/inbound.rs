//! What an agent sends on its Watch stream, once the stream's [`MessageReader`]
//! (`grpc::framing`) has decoded it from DATA frames: the mailbox its sender reads
//! ([`Mailbox`], read through [`Inbound`]).
//!
//! Memory is bounded whatever the agent sends. The mailbox holds at most the stream's
//! first message, the newest Ack (older ones are advisory and dropped) and one message that
//! ends the stream (a second Hello, a bad message, a reset), so the connection can decode and
//! return flow-control credit at once without queueing anything per message.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use cattail_proto::pb::agent_message::Message;
use cattail_proto::pb::{Ack, AgentMessage};
use futures::Stream;

use crate::fanout::InboundError;

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
    use futures::FutureExt;
    use futures::StreamExt;

    use super::*;

    use crate::grpc::framing::tests::{ack, hello};

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
