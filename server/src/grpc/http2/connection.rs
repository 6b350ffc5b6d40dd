//! [`Connection`]: one agent's connection (TCP, or TLS over it), as one future: it reads and answers frames, runs
//! its streams (and so their senders), and writes everything ready in one vectored write.
//!
//! Per connection there is one task, a read buffer that grows only while a large frame is
//! read, an [`Outbox`] that is empty between bursts, the HPACK table the peer fills, and a
//! timer; per stream, the state in [`Stream`]. Protocol errors close the connection with a
//! GOAWAY that says why (RFC 9113 section 5.4), or reset one stream; they never reach the rest
//! of the server. Reading pauses only when a peer makes the server queue more than
//! [`READ_PAUSE_BYTES`] it does not read, and a stalled peer holds only its own task.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;
use tracing::Instrument;

use crate::fanout::{AgentSender, Authorization, Peer, PeerCertificate};

use super::Services;
use super::closed::{Closed, ClosedStreams};
use super::frame::{self, Frame, FrameError, Head, Reason, flag, kind, setting};
use super::headers::{self, HeaderDecoder};
use super::health::HealthCall;
use super::inbound::Mailbox;
use super::io::Io;
use super::outbox::Outbox;
use super::request::RequestHead;
use super::stream::{self, Call, SendContext, Stream, WatchCall};
use crate::grpc::framing::MessageReader;

/// Streams stop adding DATA once this much waits to be written.
const OUTBOX_BUDGET: usize = 256 * 1024;
/// Reading stops while more than this waits to be written: only a peer that sends control
/// frames (PINGs, SETTINGS) and does not read the answers gets here.
const READ_PAUSE_BYTES: usize = 1024 * 1024;
/// Bytes reserved for a read when no frame is part-way in.
const READ_BYTES: usize = 1024;
/// An empty read buffer that grew past this (a large Hello) is let go.
const KEEP_READ_BYTES: usize = 4096;
/// The longest header block (HEADERS and CONTINUATIONs) read.
const MAX_HEADER_BLOCK_BYTES: usize = headers::MAX_LIST_SIZE;
/// CONTINUATION frames allowed in one header block. A block is at most
/// [`MAX_HEADER_BLOCK_BYTES`], which takes two frames of the 16 KiB every peer may send; empty
/// CONTINUATIONs add no bytes, so only a count stops a peer that sends them without end.
const MAX_CONTINUATIONS: u32 = 16;
/// Watch streams of one connection that may wait for their Hello at once. An agent opens one
/// and sends its Hello at once; until then each holds a sender and part of a message.
const MAX_HELLO_STREAMS: usize = 8;
/// How long a new connection has to send its preface and SETTINGS.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a closing connection may take to write its last frames and see the peer close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// Rounds of read, run and write in one poll before the task yields to others.
const MAX_ROUNDS: usize = 16;
/// Running streams a peer may reset on one connection; an agent opens one stream, or a few
/// over a long life (the "rapid reset" pattern opens and resets them by the thousand).
const MAX_PEER_RESETS: u32 = 1000;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's 24-byte preface.
    Preface,
    /// Waiting for the client's first SETTINGS.
    Settings,
    Open,
    /// A GOAWAY for an error is queued: write it, then close.
    Closing,
    /// Everything is written: half-close and wait briefly for the peer to close.
    Linger,
}

/// The keepalive: a PING every interval, and the connection closes if one goes unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keepalive {
    Idle,
    /// A PING is out; the timer is its deadline.
    Waiting,
}

/// A header block still to be completed by CONTINUATION frames.
#[derive(Debug)]
struct PartialHeaders {
    stream: u32,
    end_stream: bool,
    /// The HEADERS frame made the stream depend on itself (RFC 9113 5.3.1).
    self_dependent: bool,
    /// CONTINUATION frames read so far.
    continuations: u32,
    block: Vec<u8>,
}

/// What the frame that starts a header block said.
#[derive(Debug, Clone, Copy)]
struct Header {
    id: u32,
    end_stream: bool,
    /// The stream was made to depend on itself (RFC 9113 5.3.1).
    self_dependent: bool,
}

/// One HTTP/2 connection.
pub(super) struct Connection {
    io: Io,
    peer: SocketAddr,
    /// The client certificate the TLS handshake verified, for every Watch call's [`Peer`].
    certificate: Option<Arc<PeerCertificate>>,
    services: Arc<Services>,
    phase: Phase,
    read: BytesMut,
    outbox: Outbox,
    hpack: HeaderDecoder,
    streams: Vec<Stream>,
    /// How the newest streams that are no longer in `streams` ended.
    closed: ClosedStreams,
    continuation: Option<PartialHeaders>,
    /// The highest stream the peer opened.
    last_stream: u32,
    /// SETTINGS_MAX_FRAME_SIZE of the peer.
    peer_max_frame: usize,
    /// SETTINGS_INITIAL_WINDOW_SIZE of the peer: new streams' send window.
    peer_initial_window: i64,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
    /// Streams may no longer start: a GOAWAY went out (shutdown) or came in.
    no_new_streams: bool,
    /// Running streams the peer reset.
    peer_resets: u32,
    /// The peer acknowledged this server's SETTINGS: its stream window applies from now on.
    settings_acked: bool,
    timer: Pin<Box<Sleep>>,
    keepalive: Keepalive,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutting_down: bool,
    _gauge: ConnectionGauge,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("phase", &self.phase)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// Counts open connections in `cattail_grpc_connections`.
struct ConnectionGauge;

impl ConnectionGauge {
    fn new() -> Self {
        metrics::gauge!(super::CONNECTIONS).increment(1.0);
        Self
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(super::CONNECTIONS).decrement(1.0);
    }
}

impl Connection {
    pub(super) fn new(
        io: Io,
        peer: SocketAddr,
        certificate: Option<Arc<PeerCertificate>>,
        services: Arc<Services>,
    ) -> Self {
        let config = &services.config;
        let mut outbox = Outbox::default();
        let max_streams = config.max_concurrent_streams;
        outbox.frame(Frame::Settings(&[
            (setting::MAX_CONCURRENT_STREAMS, max_streams),
            (
                setting::INITIAL_WINDOW_SIZE,
                config.initial_stream_window_bytes,
            ),
            (setting::MAX_HEADER_LIST_SIZE, headers::MAX_LIST_SIZE as u32),
        ]));

        let recv_window = i64::from(
            config
                .initial_connection_window_bytes
                .max(frame::DEFAULT_WINDOW),
        );
        if recv_window > i64::from(frame::DEFAULT_WINDOW) {
            let increment = (recv_window - i64::from(frame::DEFAULT_WINDOW)) as u32;
            outbox.frame(Frame::WindowUpdate {
                stream: 0,
                increment,
            });
        }
        let shutdown = Box::pin(services.shutdown.clone().cancelled_owned());
        Self {
            io,
            peer,
            certificate,
            phase: Phase::Preface,
            read: BytesMut::new(),
            outbox,
            hpack: HeaderDecoder::default(),
            streams: Vec::new(),
            closed: ClosedStreams::default(),
            continuation: None,
            last_stream: 0,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            peer_initial_window: i64::from(frame::DEFAULT_WINDOW),
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window,
            recv_unacked: 0,
            no_new_streams: false,
            peer_resets: 0,
            settings_acked: false,
            timer: Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT)),
            keepalive: Keepalive::Idle,
            shutdown,
            shutting_down: false,
            services,
            _gauge: ConnectionGauge::new(),
        }
    }

    /// One round after another until nothing moves; `Ready` when the connection is over.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            if !self.shutting_down && self.shutdown.as_mut().poll(cx).is_ready() {
                self.shutting_down = true;
                self.start_shutdown();
                moved = true;
            }
            match self.poll_read(cx) {
                Poll::Ready(Ok(())) => moved = true,
                Poll::Ready(Err(end)) => {
                    if let Some(error) = end {
                        tracing::debug!(%error, "connection read failed");
                    }
                    // The peer is gone or closed its side: nothing it started can finish.
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            }
            moved |= self.run_streams(cx);
            if !self.outbox.is_empty() {
                let before = self.outbox.len();
                match self.outbox.poll_flush(&mut self.io, cx) {
                    Poll::Ready(Ok(())) => moved = true,
                    Poll::Ready(Err(error)) => {
                        tracing::debug!(%error, "connection write failed");
                        return Poll::Ready(());
                    }
                    Poll::Pending => moved |= self.outbox.len() != before,
                }
            }
            match self.poll_timer(cx) {
                Poll::Ready(true) => moved = true,
                Poll::Ready(false) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if self.outbox.is_empty() && self.is_over() {
                self.begin_linger();
                moved = true;
            }
            if self.phase == Phase::Linger && self.poll_linger(cx).is_ready() {
                return Poll::Ready(());
            }
            if !moved {
                return Poll::Pending;
            }
        }
        // Others get a turn; this connection has more to do.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether nothing more will be written: after an error, or a shutdown with no stream left.
    fn is_over(&self) -> bool {
        match self.phase {
            Phase::Closing => true,
            Phase::Linger => false,
            _ => self.shutting_down && self.streams.is_empty(),
        }
    }

    fn begin_linger(&mut self) {
        self.phase = Phase::Linger;
        self.streams.clear();
        self.timer.as_mut().reset(Instant::now() + LINGER);
    }

    /// Half-closes, then reads and drops until the peer closes or the linger timer fires, so
    /// the last frames are not lost to a reset for unread input.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.io), cx).is_pending() {
            return Poll::Pending;
        }
        let mut scratch = [0u8; 1024];
        loop {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.io), cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return self.timer.as_mut().poll(cx),
            }
        }
    }

    /// Reads and handles frames. `Ready(Ok)` when something was read, `Ready(Err)` when the
    /// connection is over (with the read error, if any).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Option<std::io::Error>>> {
        if matches!(self.phase, Phase::Closing | Phase::Linger)
            || self.outbox.len() > READ_PAUSE_BYTES
        {
            return Poll::Pending;
        }
        let want = self.wanted_bytes();
        if self.read.capacity() - self.read.len() < want {
            self.read.reserve(want);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(Some(error))),
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(None)),
            Poll::Ready(Ok(_)) => {}
        }
        let mut read = std::mem::take(&mut self.read);
        let result = self.handle_input(&mut read);
        self.read = read;
        if self.read.is_empty() && self.read.capacity() > KEEP_READ_BYTES {
            self.read = BytesMut::new();
        }
        if let Err(error) = result {
            self.fail(&error);
        }
        Poll::Ready(Ok(()))
    }

    /// How much to make room for: the rest of a frame part-way in, or a small read.
    fn wanted_bytes(&self) -> usize {
        if self.phase == Phase::Preface {
            return frame::PREFACE.len();
        }
        match Head::parse(&self.read) {
            Some(head) => (frame::HEADER_LEN + head.len as usize)
                .saturating_sub(self.read.len())
                .max(READ_BYTES),
            None => READ_BYTES,
        }
    }

    /// Handles every whole frame in `read`, leaving a partial one.
    fn handle_input(&mut self, read: &mut BytesMut) -> Result<(), FrameError> {
        if self.phase == Phase::Preface {
            let n = read.len().min(frame::PREFACE.len());
            if read[..n] != frame::PREFACE[..n] {
                return Err(FrameError::new(
                    Reason::PROTOCOL_ERROR,
                    "not an HTTP/2 connection preface: this port speaks gRPC over HTTP/2 only",
                ));
            }
            if n < frame::PREFACE.len() {
                return Ok(());
            }
            read.advance(n);
            self.phase = Phase::Settings;
        }
        while let Some(head) = Head::parse(read) {
            if head.len > frame::DEFAULT_MAX_FRAME_SIZE {
                return Err(FrameError::new(
                    Reason::FRAME_SIZE_ERROR,
                    format!(
                        "a {}-byte frame; the limit is {} bytes",
                        head.len,
                        frame::DEFAULT_MAX_FRAME_SIZE
                    ),
                ));
            }
            let total = frame::HEADER_LEN + head.len as usize;
            if read.len() < total {
                break;
            }
            self.handle_frame(head, &read[frame::HEADER_LEN..total])?;
            read.advance(total);
            if self.phase == Phase::Closing {
                break;
            }
        }
        Ok(())
    }

    fn handle_frame(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if self.phase == Phase::Settings {
            if head.kind != kind::SETTINGS || head.has(flag::ACK) {
                return Err(protocol(
                    "the first frame after the preface must be SETTINGS",
                ));
            }
            self.phase = Phase::Open;
            let next = self.next_ping();
            self.timer.as_mut().reset(next);
        }
        if let Some(partial) = &self.continuation
            && (head.kind != kind::CONTINUATION || head.stream != partial.stream)
        {
            return Err(protocol("a header block was interrupted by another frame"));
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload),
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            kind::PRIORITY => self.on_priority(head, payload),
            kind::RST_STREAM => self.on_rst_stream(head, payload),
            kind::SETTINGS => self.on_settings(head, payload),
            kind::PUSH_PROMISE => Err(protocol("clients may not send PUSH_PROMISE")),
            kind::PING => self.on_ping(head, payload),
            kind::GOAWAY => {
                if head.stream != 0 || payload.len() < 8 {
                    return Err(protocol("a malformed GOAWAY frame"));
                }
                // The peer is leaving: let what runs finish, start nothing new.
                self.no_new_streams = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.on_window_update(head, payload),
            // Unknown frame types are ignored (RFC 9113 section 4.1).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.stream == 0 {
            return Err(protocol("DATA on stream 0"));
        }
        if head.stream > self.last_stream {
            return Err(protocol("DATA on a stream that was never opened"));
        }
        let len = i64::from(head.len);
        self.recv_window -= len;
        if self.recv_window < 0 {
            return Err(FrameError::new(
                Reason::FLOW_CONTROL_ERROR,
                "DATA beyond the connection's window",
            ));
        }
        self.credit_connection(head.len);
        let data = frame::unpad(head, payload)?;
        let Some(index) = self.stream_index(head.stream) else {
            return self.on_closed_stream(head.stream, "DATA");
        };
        let stream = &mut self.streams[index];
        if stream.remote_closed {
            self.reset(index, Reason::STREAM_CLOSED);
            return Ok(());
        }
        stream.recv_window -= len;
        if stream.recv_window < 0 {
            self.reset(index, Reason::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        if !stream.count_body(data.len(), head.has(flag::END_STREAM)) {
            // RFC 9113 8.1.1: DATA that does not add up to the content-length.
            self.reset(index, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        stream.on_data(data, head.has(flag::END_STREAM));
        // Everything read is decoded at once: give the credit back as it is used.
        stream.recv_unacked += head.len;
        let window = self.services.config.initial_stream_window_bytes;
        if !stream.remote_closed && stream.recv_unacked >= window / 2 {
            let increment = std::mem::take(&mut stream.recv_unacked);
            stream.recv_window += i64::from(increment);
            self.outbox.frame(Frame::WindowUpdate {
                stream: stream.id,
                increment,
            });
        }
        Ok(())
    }

    /// Gives back connection-level credit for `len` bytes received, in halves of the window.
    fn credit_connection(&mut self, len: u32) {
        self.recv_unacked += len;
        let window = self
            .services
            .config
            .initial_connection_window_bytes
            .max(frame::DEFAULT_WINDOW);
        if self.recv_unacked >= window / 2 {
            let increment = std::mem::take(&mut self.recv_unacked);
            self.recv_window += i64::from(increment);
            self.outbox.frame(Frame::WindowUpdate {
                stream: 0,
                increment,
            });
        }
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.stream == 0 {
            return Err(protocol("HEADERS on stream 0"));
        }
        let block = frame::unpad(head, payload)?;
        let header = Header {
            id: head.stream,
            end_stream: head.has(flag::END_STREAM),
            self_dependent: frame::headers_dependency(head, payload) == Some(head.stream),
        };
        if head.has(flag::END_HEADERS) {
            return self.on_header_block(header, block);
        }
        self.continuation = Some(PartialHeaders {
            stream: header.id,
            end_stream: header.end_stream,
            self_dependent: header.self_dependent,
            continuations: 0,
            block: block.to_vec(),
        });
        Ok(())
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        let Some(partial) = &mut self.continuation else {
            return Err(protocol("CONTINUATION without HEADERS before it"));
        };
        if partial.block.len() + payload.len() > MAX_HEADER_BLOCK_BYTES {
            return Err(FrameError::new(
                Reason::ENHANCE_YOUR_CALM,
                format!("a header block over {MAX_HEADER_BLOCK_BYTES} bytes"),
            ));
        }
        partial.continuations += 1;
        if partial.continuations > MAX_CONTINUATIONS {
            return Err(FrameError::new(
                Reason::ENHANCE_YOUR_CALM,
                format!("more than {MAX_CONTINUATIONS} CONTINUATION frames in one header block"),
            ));
        }
        partial.block.extend_from_slice(payload);
        if !head.has(flag::END_HEADERS) {
            return Ok(());
        }
        let Some(partial) = self.continuation.take() else {
            return Ok(());
        };
        let header = Header {
            id: partial.stream,
            end_stream: partial.end_stream,
            self_dependent: partial.self_dependent,
        };
        self.on_header_block(header, &partial.block)
    }

    /// A whole header block: a new call, or trailers from the peer.
    fn on_header_block(&mut self, header: Header, block: &[u8]) -> Result<(), FrameError> {
        let Header {
            id,
            end_stream,
            self_dependent,
        } = header;
        // Decoded first, whatever happens to the stream: the HPACK table is the connection's.
        let request = self
            .hpack
            .decode(block)
            .map_err(|message| FrameError::new(Reason::COMPRESSION_ERROR, message))?;
        if let Some(index) = self.stream_index(id) {
            // Trailers: gRPC clients send none, but they end the request like END_STREAM.
            let stream = &self.streams[index];
            if stream.remote_closed {
                self.reset(index, Reason::STREAM_CLOSED);
            } else if !end_stream || self_dependent || request.trailers_error().is_some() {
                self.reset(index, Reason::PROTOCOL_ERROR);
            } else {
                self.deliver(index, &[], true);
            }
            return Ok(());
        }
        if id <= self.last_stream {
            return self.on_closed_stream(id, "HEADERS");
        }
        if id.is_multiple_of(2) {
            return Err(protocol("a client opened an even-numbered stream"));
        }
        self.last_stream = id;
        let max_streams = self.services.config.max_concurrent_streams;
        if self.no_new_streams || self.streams.len() >= max_streams as usize {
            self.refuse(id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        if let Some(rule) = request.request_error() {
            // Malformed (RFC 9113 8.1.1): a stream error.
            tracing::debug!(stream = id, rule, "refusing a malformed request");
            self.refuse(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        if self_dependent {
            self.refuse(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let call = if request.method != "POST" {
            // Answered once the request ends, so the stream's frames are checked until then.
            Call::HttpError(405)
        } else if !request.content_type.starts_with("application/grpc") {
            Call::HttpError(415)
        } else {
            match self.route(&request) {
                Ok(call) => call,
                Err(status) => {
                    super::refused(&status);
                    stream::put_refusal(&mut self.outbox, id, &status, end_stream);
                    let how = if end_stream {
                        Closed::ByPeer
                    } else {
                        Closed::Reset
                    };
                    self.closed.close(id, how);
                    return Ok(());
                }
            }
        };
        // Until the peer has seen this server's SETTINGS it may assume the default window.
        let mut recv_window = i64::from(self.services.config.initial_stream_window_bytes);
        if !self.settings_acked {
            recv_window = recv_window.max(i64::from(frame::DEFAULT_WINDOW));
        }
        let mut stream = Stream::new(id, self.peer_initial_window, recv_window, call);
        stream.expect_body(request.content_length);
        self.streams.push(stream);
        if end_stream {
            self.deliver(self.streams.len() - 1, &[], true);
        }
        Ok(())
    }

    /// Hands request bytes to a stream, or resets it when they break its content-length.
    fn deliver(&mut self, index: usize, data: &[u8], end: bool) {
        let stream = &mut self.streams[index];
        if stream.count_body(data.len(), end) {
            stream.on_data(data, end);
        } else {
            self.reset(index, Reason::PROTOCOL_ERROR);
        }
    }

    /// DATA or HEADERS on a stream that is no longer open (RFC 9113 5.1).
    fn on_closed_stream(&mut self, id: u32, what: &str) -> Result<(), FrameError> {
        match self.closed.get(id) {
            // Sent before the peer saw this server's RST_STREAM.
            Some(Closed::Reset) => Ok(()),
            Some(Closed::ByPeer) => Err(FrameError::new(
                Reason::STREAM_CLOSED,
                format!("{what} on stream {id}, which the peer had ended or reset"),
            )),
            // A new stream must have a higher id than every earlier one (5.1.1).
            None if what == "HEADERS" => Err(protocol(
                "HEADERS on a stream id not above every earlier stream's",
            )),
            // A stream closed long ago.
            None => {
                self.refuse(id, Reason::STREAM_CLOSED);
                Ok(())
            }
        }
    }

    /// A stream error on a stream that is not open: RST_STREAM, and its frames are ignored.
    fn refuse(&mut self, id: u32, reason: Reason) {
        metrics::counter!(super::STREAM_RESETS, "reason" => reason.name()).increment(1);
        self.outbox.frame(Frame::RstStream { stream: id, reason });
        self.closed.close(id, Closed::Reset);
    }

    fn on_priority(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.stream == 0 {
            return Err(protocol("PRIORITY on stream 0"));
        }
        let Ok(fields) = <[u8; 5]>::try_from(payload) else {
            return Err(FrameError::new(
                Reason::FRAME_SIZE_ERROR,
                format!("a PRIORITY frame of {} bytes, not 5", payload.len()),
            ));
        };
        let dependency =
            u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) & 0x7fff_ffff;
        if dependency == head.stream {
            // RFC 9113 5.3.1: a stream error.
            match self.stream_index(head.stream) {
                Some(index) => self.reset(index, Reason::PROTOCOL_ERROR),
                None => self.refuse(head.stream, Reason::PROTOCOL_ERROR),
            }
        }
        Ok(())
    }

    /// The call a request asks for, or the status that refuses it.
    fn route(&self, request: &RequestHead) -> Result<Call, Status> {
        if request.too_large {
            return Err(Status::resource_exhausted(format!(
                "request headers over {} bytes",
                headers::MAX_LIST_SIZE
            )));
        }
        let path = request.path.as_str();
        if let Some(method) = path.strip_prefix("/grpc.health.v1.Health/") {
            let call = HealthCall::new(method, self.services.hub.clone(), &self.services.shutdown)
                .ok_or_else(|| {
                    Status::unimplemented(format!("grpc.health.v1.Health has no method {method:?}"))
                })?;
            return Ok(Call::Health(call));
        }
        let encoding = request.grpc_encoding.as_deref().map(str::as_bytes);
        if let Some(refused) = crate::grpc::refuse_call(path, encoding) {
            return Err(refused);
        }
        let waiting = self.streams.iter().filter(|s| s.awaits_hello()).count();
        if waiting >= MAX_HELLO_STREAMS {
            return Err(Status::resource_exhausted(format!(
                "{waiting} streams of this connection are still waiting for their Hello: send \
                 the Hello as soon as a stream opens"
            )));
        }
        Ok(Call::Watch(self.watch_call(request.authorization.clone())))
    }

    /// A Watch call with its agent's sender.
    fn watch_call(&self, authorization: Option<Authorization>) -> WatchCall {
        let services = &self.services;
        let mailbox = Mailbox::default();
        let (outbound, queue) = mpsc::channel(services.config.queue.max(1));
        let peer = Peer {
            address: Some(self.peer),
            certificate: self.certificate.clone(),
            authorization,
            transport: "native",
        };
        let sender = AgentSender::new(
            services.hub.clone(),
            peer,
            mailbox.reader(),
            outbound,
            services.shutdown.clone(),
        );
        let span =
            tracing::info_span!("agent", peer = ?self.peer, agent_id = tracing::field::Empty);
        let driver = Box::pin(sender.run().instrument(span));
        WatchCall::new(
            MessageReader::new(services.max_inbound_bytes, services.inbound_budget.clone()),
            mailbox,
            queue,
            driver,
            services.max_message_bytes,
        )
    }

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        let code = frame::u32_payload(head, payload)?;
        if head.stream == 0 || head.stream > self.last_stream {
            return Err(protocol("RST_STREAM on a stream that was never opened"));
        }
        if let Some(index) = self.stream_index(head.stream) {
            tracing::debug!(stream = head.stream, reason = %Reason(code), "stream reset by the peer");
            // Dropping the stream drops its sender: the agent went away.
            self.streams.swap_remove(index);
            self.closed.close(head.stream, Closed::ByPeer);
            self.peer_resets += 1;
            if self.peer_resets > MAX_PEER_RESETS {
                // Opening streams only to reset them costs the server a sender each time.
                return Err(FrameError::new(
                    Reason::ENHANCE_YOUR_CALM,
                    format!("more than {MAX_PEER_RESETS} streams reset on one connection"),
                ));
            }
        }
        Ok(())
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.stream != 0 {
            return Err(protocol("SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(FrameError::new(
                    Reason::FRAME_SIZE_ERROR,
                    "a SETTINGS ACK with a payload",
                ));
            }
            self.settings_acked = true;
            return Ok(());
        }
        for (id, value) in frame::settings(payload)? {
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return Err(protocol("SETTINGS_ENABLE_PUSH must be 0 or 1"));
                }
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(FrameError::new(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                        ));
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for stream in &mut self.streams {
                        stream.send_window += delta;
                        if stream.send_window > frame::MAX_WINDOW {
                            return Err(FrameError::new(
                                Reason::FLOW_CONTROL_ERROR,
                                "a stream window over 2^31-1 after SETTINGS",
                            ));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value)
                    {
                        return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame = value as usize;
                }
                // The table size limits this server's encoder, which uses no dynamic table;
                // the others concern push, which it never does, or are advisory.
                _ => {}
            }
        }
        self.outbox.frame(Frame::SettingsAck);
        Ok(())
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        if head.stream != 0 {
            return Err(protocol("PING on a stream"));
        }
        let payload = frame::ping_payload(payload)?;
        if head.has(flag::ACK) {
            if self.keepalive == Keepalive::Waiting {
                self.keepalive = Keepalive::Idle;
                let next = self.next_ping();
                self.timer.as_mut().reset(next);
            }
            return Ok(());
        }
        self.outbox.frame(Frame::Ping { ack: true, payload });
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), FrameError> {
        let increment = i64::from(frame::u32_payload(head, payload)? & 0x7fff_ffff);
        if head.stream == 0 {
            if increment == 0 {
                return Err(protocol("a WINDOW_UPDATE of 0 for the connection"));
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(FrameError::new(
                    Reason::FLOW_CONTROL_ERROR,
                    "the connection window over 2^31-1",
                ));
            }
            return Ok(());
        }
        if head.stream > self.last_stream {
            return Err(protocol("WINDOW_UPDATE on a stream that was never opened"));
        }
        let Some(index) = self.stream_index(head.stream) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(index, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let stream = &mut self.streams[index];
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            self.reset(index, Reason::FLOW_CONTROL_ERROR);
        }
        Ok(())
    }

    /// Runs every stream; drops those that finished or are stuck. Whether anything changed.
    fn run_streams(&mut self, cx: &mut Context<'_>) -> bool {
        if self.phase != Phase::Open {
            return false;
        }
        let before = self.outbox.len();
        let count = self.streams.len();
        let write_timeout = self.services.hub.config().write_timeout;
        let now = Instant::now();
        let mut index = 0;
        while index < self.streams.len() {
            let stream = &mut self.streams[index];
            stream.poll_send(
                cx,
                &mut SendContext {
                    outbox: &mut self.outbox,
                    window: &mut self.send_window,
                    max_frame: self.peer_max_frame,
                    budget: OUTBOX_BUDGET,
                },
            );
            if stream.done {
                // A stream whose peer had not ended it was reset with NO_ERROR.
                let how = if stream.remote_closed {
                    Closed::ByPeer
                } else {
                    Closed::Reset
                };
                self.closed.close(stream.id, how);
                self.streams.swap_remove(index);
            } else if stream.is_stuck(now, write_timeout, self.shutting_down) {
                tracing::debug!(
                    stream = stream.id,
                    "resetting a stream that has taken nothing since its sender gave up"
                );
                self.reset(index, Reason::CANCEL);
            } else {
                index += 1;
            }
        }
        self.outbox.len() != before || self.streams.len() != count
    }

    /// Fires the keepalive and the handshake and linger deadlines. `Ready(false)`: close now.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.phase == Phase::Linger || self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match self.phase {
            Phase::Preface | Phase::Settings => {
                tracing::debug!("no HTTP/2 preface and SETTINGS in time");
                metrics::counter!(super::CONNECTION_ERRORS, "reason" => "handshake_timeout")
                    .increment(1);
                return Poll::Ready(false);
            }
            Phase::Closing => return Poll::Ready(false),
            Phase::Open | Phase::Linger => {}
        }
        let Some(timeout) = self.services.config.http2_keepalive_timeout else {
            let next = self.next_ping();
            self.timer.as_mut().reset(next);
            return Poll::Ready(true);
        };
        match self.keepalive {
            Keepalive::Idle if self.services.config.http2_keepalive_interval.is_some() => {
                self.outbox.frame(Frame::Ping {
                    ack: false,
                    payload: *b"cattail\0",
                });
                self.keepalive = Keepalive::Waiting;
                self.timer.as_mut().reset(Instant::now() + timeout);
                Poll::Ready(true)
            }
            Keepalive::Idle => {
                let next = self.next_ping();
                self.timer.as_mut().reset(next);
                Poll::Ready(true)
            }
            Keepalive::Waiting => {
                tracing::debug!("keepalive PING unanswered: closing the connection");
                metrics::counter!(super::CONNECTION_ERRORS, "reason" => "keepalive_timeout")
                    .increment(1);
                Poll::Ready(false)
            }
        }
    }

    /// When the next keepalive PING is due (far off when keepalive is off; the timer also
    /// wakes the streams' stuck check then).
    fn next_ping(&self) -> Instant {
        let interval = self
            .services
            .config
            .http2_keepalive_interval
            .unwrap_or(std::time::Duration::from_secs(60));
        Instant::now() + interval
    }

    /// A shutdown: no new streams; running ones end with their senders, then the connection.
    fn start_shutdown(&mut self) {
        self.no_new_streams = true;
        if matches!(self.phase, Phase::Preface | Phase::Settings) {
            self.phase = Phase::Closing;
            return;
        }
        if self.phase == Phase::Open {
            self.outbox.frame(Frame::GoAway {
                last_stream: self.last_stream,
                reason: Reason::NO_ERROR,
                debug: "server shutting down",
            });
        }
    }

    /// A connection error: say why in a GOAWAY, drop every stream, and close once written.
    fn fail(&mut self, error: &FrameError) {
        tracing::info!(peer = %self.peer, reason = %error.reason, error = %error.message, "closing an HTTP/2 connection on a protocol error");
        metrics::counter!(super::CONNECTION_ERRORS, "reason" => error.reason.name()).increment(1);
        if self.phase != Phase::Preface {
            self.outbox.frame(Frame::GoAway {
                last_stream: self.last_stream,
                reason: error.reason,
                debug: &error.message,
            });
        }
        self.streams.clear();
        self.continuation = None;
        self.phase = Phase::Closing;
        self.timer.as_mut().reset(Instant::now() + LINGER);
    }

    /// A stream error: RST_STREAM, and the stream is dropped with its sender.
    fn reset(&mut self, index: usize, reason: Reason) {
        let stream = self.streams.swap_remove(index);
        self.closed.close(stream.id, Closed::Reset);
        tracing::debug!(stream = stream.id, %reason, "resetting a stream");
        metrics::counter!(super::STREAM_RESETS, "reason" => reason.name()).increment(1);
        self.outbox.frame(Frame::RstStream {
            stream: stream.id,
            reason,
        });
    }

    fn stream_index(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|stream| stream.id == id)
    }
}

fn protocol(message: &str) -> FrameError {
    FrameError::new(Reason::PROTOCOL_ERROR, message)
}

impl Future for Connection {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.drive(cx)
    }
}
