//! [`WatchBody`]: the HTTP/2 response body of one Watch call, written by hand so that shared
//! pieces reach HTTP/2 as the `Bytes` they are.
//!
//! tonic's encoder copies every message into a per-stream buffer, and that buffer keeps the
//! size of the largest message the stream ever sent: one copy per delivery, and a buffer per
//! agent. Here a message becomes a few DATA chunks: the 5-byte gRPC prefix with the small pieces
//! copied after it, and every piece of at least [`SHARE_AT_BYTES`] handed over as it is (h2
//! writes such chunks with vectored I/O, without copying them). Nothing stays per agent between
//! messages. The stream ends with the trailers of a gRPC status: OK when the sender finished,
//! else the status of its error (docs/PROTOCOL.md section 10).
//!
//! The body also drives the agent's sender: hyper polls the body from the stream's own task, and
//! the body polls the sender's future there whenever it has nothing queued. There is no task
//! per agent besides hyper's, and no wake-up from one task to another per message. A sender
//! blocked on a full queue is polled again as soon as the body has taken a message; an agent
//! that stops reading stops its body being polled, and so its sender, which picks up (or ends
//! with its write timeout) when HTTP/2 has room again. When the agent goes away, hyper drops
//! the body and the sender with it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tonic::Status;
use tonic::codegen::http::HeaderMap;

use crate::fanout::{self, OutgoingMessage};
use crate::grpc::framing::MESSAGE_PREFIX_BYTES;

/// Pieces at least this long go to HTTP/2 without a copy; shorter ones are copied behind the
/// prefix, since a DATA frame of their own would cost more than the copy.
pub(crate) const SHARE_AT_BYTES: usize = 1024;
/// After handing this much to HTTP/2 without a pause, the body yields before its next message.
///
/// A catch-up is many messages the sender has ready at once. Handed over in one go, up to
/// hyper's 400 KiB send buffer of them wait in h2's per-connection frame slab, which grows to
/// hold them and never shrinks: about 20 KiB per agent after a connect storm of medium
/// snapshots. Yielding lets the connection task write what it has first, as a task hop did
/// when the sender ran in a task of its own. Live deltas rarely reach this or `BURST_CHUNKS`.
const BURST_BYTES: usize = 64 * 1024;
/// After handing this many chunks to HTTP/2 without a pause, the body yields before the next.
///
/// Each chunk waits as a frame (about 300 bytes of bookkeeping) in h2's per-connection slab
/// until the connection task writes it, and the slab never shrinks. A message joined from many
/// small shared pieces is many chunks: without this cap the slab held 5 KiB per connection
/// after a medium connect storm; with it, room for eight frames. A cap of four halved that
/// again but made the connect storm about a tenth slower (docs/BENCHMARKS.md, session 4).
pub(crate) const BURST_CHUNKS: usize = 8;

/// What the sender hands to the body.
pub(crate) type QueueItem = fanout::Outgoing;

/// The sender's future, run by the body.
pub(crate) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The response body of one Watch call: the messages from the sender's queue, then trailers.
pub(crate) struct WatchBody {
    queue: mpsc::Receiver<QueueItem>,
    /// The sender that fills `queue`, until it finishes; `None` when it runs elsewhere.
    driver: Option<Driver>,
    /// Chunks of the current message not yet handed to HTTP/2.
    chunks: VecDeque<Bytes>,
    /// What was handed to HTTP/2 since the body last waited.
    burst: Burst,
    /// Messages over this are refused (a server bug: senders keep below it).
    max_message_bytes: usize,
    state: State,
}

/// What the body handed to HTTP/2 since it last returned `Pending`.
#[derive(Debug, Default, Clone, Copy)]
struct Burst {
    bytes: usize,
    chunks: usize,
}

impl Burst {
    fn add(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.chunks += 1;
    }

    fn is_full(self) -> bool {
        self.bytes >= BURST_BYTES || self.chunks >= BURST_CHUNKS
    }
}

#[derive(Debug)]
enum State {
    /// Reading the queue.
    Streaming,
    /// The queue ended: these trailers are next.
    Trailers(HeaderMap),
    /// Trailers sent.
    Done,
}

impl State {
    fn is_streaming(&self) -> bool {
        matches!(self, Self::Streaming)
    }
}

impl std::fmt::Debug for WatchBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchBody")
            .field("queue", &self.queue)
            .field("driving", &self.driver.is_some())
            .field("chunks", &self.chunks.len())
            .field("max_message_bytes", &self.max_message_bytes)
            .field("state", &self.state)
            .finish()
    }
}

impl WatchBody {
    /// A body reading `queue`, which some other task fills.
    pub(crate) fn new(queue: mpsc::Receiver<QueueItem>, max_message_bytes: usize) -> Self {
        Self {
            queue,
            driver: None,
            chunks: VecDeque::new(),
            burst: Burst::default(),
            max_message_bytes,
            state: State::Streaming,
        }
    }

    /// A body that runs `sender`, the only writer of `queue`, itself.
    pub(crate) fn driving(
        queue: mpsc::Receiver<QueueItem>,
        sender: Driver,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            driver: Some(sender),
            ..Self::new(queue, max_message_bytes)
        }
    }

    /// The next item of the queue, running the sender first if it is here.
    fn poll_queue(&mut self, cx: &mut Context<'_>) -> Poll<Option<QueueItem>> {
        let Some(driver) = &mut self.driver else {
            return self.queue.poll_recv(cx);
        };
        if driver.as_mut().poll(cx).is_ready() {
            // Finished: what it queued is still to be read, then the queue ends.
            self.driver = None;
            return self.queue.poll_recv(cx);
        }
        // The sender is the only writer and it is waiting (on its own wakers, registered just
        // now): an empty queue stays empty until it runs again, so no waker is needed here.
        match self.queue.try_recv() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Empty) => Poll::Pending,
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
        }
    }

    /// Queues the DATA chunks of one gRPC message.
    fn push_message(&mut self, message: &OutgoingMessage) -> Result<(), Status> {
        let len = message.len();
        if len > self.max_message_bytes {
            return Err(Status::internal(format!(
                "a {len}-byte message is over the {}-byte limit; this is a server bug",
                self.max_message_bytes
            )));
        }
        let len = u32::try_from(len)
            .map_err(|_| Status::internal("a message over 4 GiB; this is a server bug"))?;
        let copied: usize = message
            .pieces()
            .iter()
            .map(Bytes::len)
            .filter(|len| *len < SHARE_AT_BYTES)
            .sum();
        let mut head = BytesMut::with_capacity(MESSAGE_PREFIX_BYTES + copied);
        head.put_u8(0);
        head.put_u32(len);
        for piece in message.pieces() {
            if piece.len() < SHARE_AT_BYTES {
                head.put_slice(piece);
            } else {
                if !head.is_empty() {
                    self.chunks.push_back(head.split().freeze());
                }
                self.chunks.push_back(piece.clone());
            }
        }
        if !head.is_empty() {
            self.chunks.push_back(head.freeze());
        }
        Ok(())
    }
}

/// The trailers that end a stream with `status`.
fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only a status message that cannot be a header value gets here: keep the code.
        map.insert("grpc-status", (status.code() as i32).into());
    }
    map
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if this.burst.is_full() && (!this.chunks.is_empty() || this.state.is_streaming()) {
                // Let the connection task write what it has before more is handed over.
                this.burst = Burst::default();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if let Some(chunk) = this.chunks.pop_front() {
                this.burst.add(chunk.len());
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Trailers(map) => return Poll::Ready(Some(Ok(Frame::trailers(map)))),
                State::Streaming => {}
            }
            this.state = State::Streaming;
            let Poll::Ready(item) = this.poll_queue(cx) else {
                this.burst = Burst::default();
                return Poll::Pending;
            };
            let status = match item.map(|item| *item) {
                Some(Ok(message)) => match this.push_message(&message) {
                    Ok(()) => continue,
                    Err(status) => status,
                },
                Some(Err(error)) => super::status(&error),
                None => Status::ok(""),
            };
            // The sender is done (or failed): nothing more is read from the queue, and a
            // sender still running here is dropped.
            this.queue.close();
            this.driver = None;
            this.state = State::Trailers(trailers(&status));
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) && self.chunks.is_empty()
    }
}
