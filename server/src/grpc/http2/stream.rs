//! [`Stream`]: one call on a connection, with its flow-control windows and the response
//! message it is part-way through sending.
//!
//! A Watch stream runs its agent's sender from the connection's task, as the tonic transport's
//! response body does: the sender fills a queue of one or two messages, and the stream takes
//! a message only when the agent's windows have room for some of it, so a slow agent holds
//! back its own sender and nothing else. Unlike a body under hyper, the sender is polled while
//! the stream waits for window too, so its write timeout fires on time; once the sender has
//! given up, a stream still stuck is reset. Messages go out as DATA frames of shared pieces
//! (no copy) and small pieces copied behind the frame header, in the connection's
//! [`Outbox`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;
use tonic::Status;

use crate::fanout::{Outgoing, OutgoingMessage};
use crate::grpc::framing::MESSAGE_PREFIX_BYTES;

use super::frame::{self, Frame, Reason, flag};
use super::headers;
use super::health::HealthCall;
use super::inbound::Mailbox;
use super::outbox::Outbox;
use crate::grpc::framing::MessageReader;

/// Pieces at least this long are queued as shared bytes; shorter ones are copied behind the
/// frame header, since a slice of their own would cost more than the copy.
const SHARE_AT_BYTES: usize = 1024;
/// The body of an answer to a request that is not gRPC (`405`, `415`): for whoever tried.
const HTTP_ERROR_BODY: &[u8] =
    b"this port serves gRPC only: POST with content-type application/grpc\n";

/// The sender's future, run by the stream.
pub(super) type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What one stream serves.
#[derive(Debug)]
pub(super) enum Call {
    /// `cattail.v1.Sync/Watch`.
    Watch(WatchCall),
    /// `grpc.health.v1.Health/Check` or `Watch`.
    Health(HealthCall),
    /// Not a gRPC request: this HTTP status and [`HTTP_ERROR_BODY`], once the request has
    /// ended (its body is dropped).
    HttpError(u16),
}

/// A Watch call: the agent's messages in, the sender's queue out.
pub(super) struct WatchCall {
    reader: MessageReader,
    mailbox: Mailbox,
    queue: mpsc::Receiver<Outgoing>,
    /// The sender, until it finishes.
    driver: Option<Driver>,
    /// Messages over this are refused (a server bug: senders keep below it).
    max_message_bytes: usize,
}

impl std::fmt::Debug for WatchCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCall")
            .field("reader", &self.reader)
            .field("driving", &self.driver.is_some())
            .finish_non_exhaustive()
    }
}

impl WatchCall {
    pub(super) fn new(
        reader: MessageReader,
        mailbox: Mailbox,
        queue: mpsc::Receiver<Outgoing>,
        driver: Driver,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            reader,
            mailbox,
            queue,
            driver: Some(driver),
            max_message_bytes,
        }
    }

    /// Whether the agent has yet to send its Hello.
    fn awaits_hello(&self) -> bool {
        !self.mailbox.has_first()
    }

    /// Runs the sender without taking from its queue: its timers keep running while the
    /// stream waits for window.
    fn poll_driver(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && driver.as_mut().poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<OutgoingMessage, Status>>> {
        let item = match &mut self.driver {
            None => std::task::ready!(self.queue.poll_recv(cx)),
            Some(driver) => {
                if driver.as_mut().poll(cx).is_ready() {
                    // Finished: what it queued is still to be read, then the queue ends.
                    self.driver = None;
                    std::task::ready!(self.queue.poll_recv(cx))
                } else {
                    // The sender is the only writer and it is waiting on its own wakers,
                    // registered just now: an empty queue stays empty until it runs again.
                    match self.queue.try_recv() {
                        Ok(item) => Some(item),
                        Err(TryRecvError::Empty) => return Poll::Pending,
                        Err(TryRecvError::Disconnected) => None,
                    }
                }
            }
        };
        let status = match item.map(|item| *item) {
            Some(Ok(message)) if message.len() <= self.max_message_bytes => {
                return Poll::Ready(Some(Ok(message)));
            }
            Some(Ok(message)) => Status::internal(format!(
                "a {}-byte message is over the {}-byte limit; this is a server bug",
                message.len(),
                self.max_message_bytes
            )),
            Some(Err(error)) => crate::grpc::status(&error),
            None => return Poll::Ready(None),
        };
        // The sender is done (or failed): nothing more is read from the queue.
        self.queue.close();
        self.driver = None;
        Poll::Ready(Some(Err(status)))
    }
}

impl Call {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<OutgoingMessage, Status>>> {
        match self {
            Self::Watch(call) => call.poll_next(cx),
            Self::Health(call) => call.poll_next(cx),
            Self::HttpError(_) => Poll::Pending,
        }
    }

    /// Whether the response headers go out at once, before any message is ready.
    fn is_streaming(&self) -> bool {
        match self {
            Self::Watch(_) => true,
            Self::Health(call) => call.is_watch(),
            Self::HttpError(_) => false,
        }
    }
}

/// A message part-way through its DATA frames.
#[derive(Debug)]
struct Sending {
    message: OutgoingMessage,
    prefix: [u8; MESSAGE_PREFIX_BYTES],
    /// Bytes of the prefix sent.
    prefix_sent: usize,
    /// The piece being sent, and how much of it went.
    piece: usize,
    piece_offset: usize,
    /// Bytes of prefix and pieces still to send.
    remaining: usize,
    /// The last DATA frame ends the stream (a body that is not gRPC).
    end_stream: bool,
}

impl Sending {
    fn new(message: OutgoingMessage) -> Self {
        let len = message.len();
        let mut prefix = [0; MESSAGE_PREFIX_BYTES];
        // Messages are bounded by `max_message_bytes` (a u32) before they get here.
        prefix[1..].copy_from_slice(&(len as u32).to_be_bytes());
        Self {
            message,
            prefix,
            prefix_sent: 0,
            piece: 0,
            piece_offset: 0,
            remaining: MESSAGE_PREFIX_BYTES + len,
            end_stream: false,
        }
    }

    /// A whole response body, without the gRPC prefix; its last frame ends the stream.
    fn body(body: Bytes) -> Self {
        let mut sending = Self::new(OutgoingMessage::control(body));
        sending.prefix_sent = MESSAGE_PREFIX_BYTES;
        sending.remaining -= MESSAGE_PREFIX_BYTES;
        sending.end_stream = true;
        sending
    }

    /// Queues one DATA frame of at most `limit` bytes; returns its length.
    fn emit(&mut self, outbox: &mut Outbox, stream: u32, limit: usize) -> usize {
        let len = self.remaining.min(limit);
        let queued = outbox.len();
        let end_stream = self.end_stream && len == self.remaining;
        outbox.frame(Frame::DataHead {
            stream,
            len,
            end_stream,
        });
        let mut left = len;
        if self.prefix_sent < MESSAGE_PREFIX_BYTES {
            let n = (MESSAGE_PREFIX_BYTES - self.prefix_sent).min(left);
            outbox.copy(&self.prefix[self.prefix_sent..self.prefix_sent + n]);
            self.prefix_sent += n;
            left -= n;
        }
        while left > 0 {
            let piece = &self.message.pieces()[self.piece];
            let n = (piece.len() - self.piece_offset).min(left);
            let range = self.piece_offset..self.piece_offset + n;
            if piece.len() < SHARE_AT_BYTES {
                outbox.copy(&piece[range]);
            } else {
                outbox.share(piece.slice(range));
            }
            self.piece_offset += n;
            left -= n;
            if self.piece_offset == piece.len() {
                self.piece += 1;
                self.piece_offset = 0;
            }
        }
        debug_assert_eq!(outbox.len() - queued, frame::HEADER_LEN + len);
        self.remaining -= len;
        len
    }
}

/// What a connection lends its streams while they send.
#[derive(Debug)]
pub(super) struct SendContext<'a> {
    pub(super) outbox: &'a mut Outbox,
    /// The connection's send window.
    pub(super) window: &'a mut i64,
    /// The peer's SETTINGS_MAX_FRAME_SIZE.
    pub(super) max_frame: usize,
    /// Streams stop adding data once the outbox holds this much.
    pub(super) budget: usize,
}

/// One stream of a connection.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) id: u32,
    /// What this server may still send (negative after the peer shrinks its windows).
    pub(super) send_window: i64,
    /// What the peer may still send before more credit.
    pub(super) recv_window: i64,
    /// Bytes received and used since credit was last given back.
    pub(super) recv_unacked: u32,
    /// The peer ended its side (END_STREAM).
    pub(super) remote_closed: bool,
    /// Request bytes still to come by the request's `content-length`, if it sent one.
    body_left: Option<u64>,
    call: Call,
    headers_sent: bool,
    sending: Option<Sending>,
    /// Since when a message has waited for window.
    blocked_since: Option<Instant>,
    /// The response is complete (trailers queued): the stream can go.
    pub(super) done: bool,
}

impl Stream {
    pub(super) fn new(id: u32, send_window: i64, recv_window: i64, call: Call) -> Self {
        Self {
            id,
            send_window,
            recv_window,
            recv_unacked: 0,
            remote_closed: false,
            body_left: None,
            call,
            headers_sent: false,
            sending: None,
            blocked_since: None,
            done: false,
        }
    }

    /// Whether this is a Watch call whose agent has yet to send its Hello.
    pub(super) fn awaits_hello(&self) -> bool {
        matches!(&self.call, Call::Watch(call) if call.awaits_hello())
    }

    /// Holds the request to `content-length` bytes, if it sent one.
    pub(super) fn expect_body(&mut self, content_length: Option<u64>) {
        self.body_left = content_length;
    }

    /// Counts `len` request bytes (`end`: the last); false when they break the request's
    /// `content-length` (RFC 9113 8.1.1).
    pub(super) fn count_body(&mut self, len: usize, end: bool) -> bool {
        let Some(left) = self.body_left else {
            return true;
        };
        match left.checked_sub(len as u64) {
            Some(left) if !end || left == 0 => {
                self.body_left = Some(left);
                true
            }
            _ => false,
        }
    }

    /// Request bytes from a DATA frame; `end` when the peer ended its side.
    pub(super) fn on_data(&mut self, data: &[u8], end: bool) {
        match &mut self.call {
            Call::Watch(call) => {
                let mailbox = &call.mailbox;
                call.reader.push(data, |item| mailbox.put(item));
                if end {
                    if let Some(error) = call.reader.end() {
                        mailbox.put(Err(error));
                    }
                    mailbox.close(None);
                }
            }
            Call::Health(call) => call.push(data, end),
            Call::HttpError(_) => {}
        }
        self.remote_closed |= end;
    }

    /// Adds what it can to the outbox: response headers, DATA frames within the windows, and
    /// the trailers once the call ends.
    pub(super) fn poll_send(&mut self, cx: &mut Context<'_>, ctx: &mut SendContext<'_>) {
        if let Call::HttpError(status) = self.call {
            if !self.remote_closed {
                return;
            }
            if !self.headers_sent {
                let mut block = Vec::with_capacity(64);
                headers::put_text_head(&mut block, status);
                put_header_frame(ctx.outbox, self.id, flag::END_HEADERS, &block);
                self.headers_sent = true;
                self.sending = Some(Sending::body(Bytes::from_static(HTTP_ERROR_BODY)));
            }
        }
        if !self.headers_sent && self.call.is_streaming() {
            self.put_headers(ctx.outbox);
        }
        while !self.done {
            if ctx.outbox.len() >= ctx.budget {
                // The connection writes first; the sender's timers keep running.
                self.poll_driver(cx);
                return;
            }
            if let Some(sending) = &mut self.sending {
                let limit = self.send_window.min(*ctx.window).min(ctx.max_frame as i64);
                if limit <= 0 && sending.remaining > 0 {
                    self.blocked_since.get_or_insert_with(Instant::now);
                    self.poll_driver(cx);
                    return;
                }
                self.blocked_since = None;
                let sent = sending.emit(ctx.outbox, self.id, limit.max(0) as usize) as i64;
                self.send_window -= sent;
                *ctx.window -= sent;
                if sending.remaining == 0 {
                    self.done = sending.end_stream;
                    self.sending = None;
                }
                continue;
            }
            match self.call.poll_next(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(message))) => {
                    if !self.headers_sent {
                        self.put_headers(ctx.outbox);
                    }
                    self.sending = Some(Sending::new(message));
                }
                Poll::Ready(Some(Err(status))) => self.finish(ctx.outbox, &status),
                Poll::Ready(None) => self.finish(ctx.outbox, &Status::ok("")),
            }
        }
    }

    fn poll_driver(&mut self, cx: &mut Context<'_>) {
        if let Call::Watch(call) = &mut self.call {
            call.poll_driver(cx);
        }
    }

    /// Whether the stream should be reset: it has waited for window since `write_timeout`
    /// (or, while the server shuts down, at all) and its sender has already given up.
    pub(super) fn is_stuck(
        &self,
        now: Instant,
        write_timeout: Duration,
        shutting_down: bool,
    ) -> bool {
        let Some(since) = self.blocked_since else {
            return false;
        };
        let finished = match &self.call {
            Call::Watch(call) => call.driver.is_none(),
            Call::Health(_) | Call::HttpError(_) => true,
        };
        finished && (shutting_down || now.duration_since(since) >= write_timeout)
    }

    fn put_headers(&mut self, outbox: &mut Outbox) {
        let mut block = Vec::with_capacity(32);
        headers::put_response_head(&mut block, 200, true);
        put_header_frame(outbox, self.id, flag::END_HEADERS, &block);
        self.headers_sent = true;
    }

    /// Queues the trailers of `status` (a trailers-only response if nothing was sent).
    fn finish(&mut self, outbox: &mut Outbox, status: &Status) {
        let mut block = Vec::with_capacity(64);
        if !self.headers_sent {
            headers::put_response_head(&mut block, 200, true);
        }
        headers::put_grpc_status(&mut block, status.code() as i32, status.message());
        headers::put_status_metadata(&mut block, status);
        put_header_frame(
            outbox,
            self.id,
            flag::END_HEADERS | flag::END_STREAM,
            &block,
        );
        if !self.remote_closed {
            // The response is complete: the peer may stop sending (RFC 9113 8.1).
            outbox.frame(Frame::RstStream {
                stream: self.id,
                reason: Reason::NO_ERROR,
            });
        }
        self.headers_sent = true;
        self.done = true;
    }
}

/// Queues a HEADERS frame holding `block` (blocks here are far below any frame size limit).
pub(super) fn put_header_frame(outbox: &mut Outbox, stream: u32, flags: u8, block: &[u8]) {
    outbox.frame(Frame::Headers {
        stream,
        flags,
        block,
    });
}

/// Queues a response that is only a status: a refused call.
pub(super) fn put_refusal(outbox: &mut Outbox, stream: u32, status: &Status, peer_done: bool) {
    let mut block = Vec::with_capacity(64);
    headers::put_response_head(&mut block, 200, true);
    headers::put_grpc_status(&mut block, status.code() as i32, status.message());
    headers::put_status_metadata(&mut block, status);
    put_header_frame(outbox, stream, flag::END_HEADERS | flag::END_STREAM, &block);
    if !peer_done {
        outbox.frame(Frame::RstStream {
            stream,
            reason: Reason::NO_ERROR,
        });
    }
}
