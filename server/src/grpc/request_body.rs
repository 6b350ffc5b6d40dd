//! [`RequestMessages`]: the tonic transport's Watch request body, read as the native transport
//! reads DATA frames: through the shared [`MessageReader`] (`super::framing`), so both answer
//! an agent's bytes with the same statuses and hold partial messages in the same budget.
//!
//! What is decoded waits in at most three slots, as the native mailbox keeps it: the stream's
//! first message, the newest Ack (older ones are advisory), and what ends the stream (another
//! message, an error, or the end of the body). Nothing queues per message, however many Acks
//! one DATA frame carries.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cattail_proto::pb::AgentMessage;
use cattail_proto::pb::agent_message::Message;
use futures::Stream;
use http_body::Body;
use sync_wrapper::SyncWrapper;
use tonic::codegen::StdError;

use crate::fanout::InboundError;

use super::framing::{InboundBudget, MessageReader};

/// The agent's messages from a request body.
pub(crate) struct RequestMessages<B> {
    /// `Sync` for the sender, which holds this across awaits; only ever used through `&mut`.
    body: SyncWrapper<Pin<Box<B>>>,
    reader: MessageReader,
    slots: Slots,
}

/// What was decoded and not yet read.
#[derive(Debug, Default)]
struct Slots {
    /// The stream's first message, until read.
    first: Option<AgentMessage>,
    /// The newest Ack not yet read.
    ack: Option<AgentMessage>,
    /// What ends the stream: a message after the first that is not an Ack, or an error.
    last: Option<Result<AgentMessage, InboundError>>,
    /// The first message has been decoded.
    started: bool,
    /// Nothing more is read: `last` is set or the body ended.
    sealed: bool,
}

impl<B> std::fmt::Debug for RequestMessages<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMessages")
            .field("reader", &self.reader)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl<B> RequestMessages<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    /// Reads `body`, refusing messages over `limit` bytes and partial messages that do not fit
    /// in `budget`.
    pub(crate) fn new(body: B, limit: usize, budget: Arc<InboundBudget>) -> Self {
        Self {
            body: SyncWrapper::new(Box::pin(body)),
            reader: MessageReader::new(limit, budget),
            slots: Slots::default(),
        }
    }
}

impl Slots {
    /// Takes one decoded item into its slot.
    fn put(&mut self, item: Result<AgentMessage, InboundError>) {
        if self.sealed {
            return;
        }
        match item {
            Ok(message) if !self.started => {
                self.started = true;
                self.first = Some(message);
            }
            Ok(
                ack @ AgentMessage {
                    message: Some(Message::Ack(_)),
                },
            ) => self.ack = Some(ack),
            // A message from a newer protocol revision: the sender ignores it too.
            Ok(AgentMessage { message: None }) => {}
            other => {
                self.last = Some(other);
                self.sealed = true;
            }
        }
    }

    /// The next decoded item, in the order the sender reads them.
    fn take(&mut self) -> Option<Result<AgentMessage, InboundError>> {
        self.first
            .take()
            .or_else(|| self.ack.take())
            .map(Ok)
            .or_else(|| self.last.take())
    }
}

impl<B> Stream for RequestMessages<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    type Item = Result<AgentMessage, InboundError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Only pinned through `body`, which is boxed.
        let this = Pin::into_inner(self);
        loop {
            if let Some(item) = this.slots.take() {
                return Poll::Ready(Some(item));
            }
            if this.slots.sealed {
                return Poll::Ready(None);
            }
            match this.body.get_mut().as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers from an agent mean nothing here.
                    if let Ok(data) = frame.into_data() {
                        let slots = &mut this.slots;
                        this.reader.push(&data, |item| slots.put(item));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    let error: StdError = error.into();
                    this.slots.put(Err(InboundError::Closed(error.to_string())));
                    this.slots.sealed = true;
                }
                Poll::Ready(None) => {
                    if let Some(error) = this.reader.end() {
                        this.slots.put(Err(error));
                    }
                    this.slots.sealed = true;
                }
            }
        }
    }
}
