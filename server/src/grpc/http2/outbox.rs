//! [`Outbox`]: what a connection has to write, as a queue of byte segments written with
//! vectored I/O, so that everything ready goes out in one `writev`.
//!
//! Frame headers, control frames and small pieces are copied into one scratch buffer; shared
//! pieces (snapshot chunks, large frames) are queued as the `Bytes` they are, never copied.
//! Everything queued is bounded by the caller ([`Outbox::len`]). When the outbox empties, a
//! scratch buffer that grew large (a catch-up of many small pieces) is let go, so an idle
//! connection keeps only a small one: per-connection memory follows the traffic.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use super::frame::Frame;

/// Slices handed to one `writev`.
const MAX_SLICES: usize = 64;
/// Scratch space reserved at a time.
const SCRATCH_STEP: usize = 1024;
/// An empty outbox lets go of a scratch buffer larger than this.
const KEEP_SCRATCH_BYTES: usize = 16 * 1024;

/// The bytes a connection has yet to write.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Written in order, before `scratch`.
    segments: VecDeque<Bytes>,
    /// Bytes copied since the last segment.
    scratch: BytesMut,
    /// Everything not yet written: the segments and the scratch.
    len: usize,
    /// Bytes went to the writer since it was last flushed: a TLS stream may hold records it
    /// could not send yet, which only a flush pushes out.
    unflushed: bool,
}

impl Outbox {
    /// Bytes not yet written.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits to be written, here or in the writer's own buffer.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0 && !self.unflushed
    }

    /// Queues `frame`, copied. The bytes counted are those written.
    pub(super) fn frame(&mut self, frame: Frame<'_>) {
        let scratch = self.scratch(frame.encoded_len());
        let before = scratch.len();
        frame.write(scratch);
        let written = scratch.len() - before;
        self.len += written;
    }

    /// Room to copy `additional` bytes.
    fn scratch(&mut self, additional: usize) -> &mut BytesMut {
        if self.scratch.capacity() - self.scratch.len() < additional {
            self.scratch.reserve(additional.max(SCRATCH_STEP));
        }
        &mut self.scratch
    }

    /// Copies `bytes` in.
    pub(super) fn copy(&mut self, bytes: &[u8]) {
        self.scratch(bytes.len()).extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Queues shared bytes, after everything copied so far.
    pub(super) fn share(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.seal_scratch();
        self.len += bytes.len();
        self.segments.push_back(bytes);
    }

    fn seal_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.segments.push_back(self.scratch.split().freeze());
        }
    }

    /// Writes as much as `io` takes now. `Ready(Ok(()))` once the outbox is empty.
    pub(super) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.seal_scratch();
        while !self.segments.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let count = self.segments.len().min(MAX_SLICES);
            for (slice, segment) in slices.iter_mut().zip(&self.segments) {
                *slice = IoSlice::new(segment);
            }
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            self.unflushed = true;
            self.consume(written);
        }
        if self.unflushed {
            // A no-op on TCP; under TLS it sends the records rustls still holds (at most its
            // 64 KiB buffer limit), or registers for when the socket can take them.
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.scratch.capacity() > KEEP_SCRATCH_BYTES {
            self.scratch = BytesMut::new();
        }
        if self.segments.capacity() > MAX_SLICES {
            self.segments = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    fn consume(&mut self, mut written: usize) {
        self.len -= written;
        while written > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.segments.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use futures::task::noop_waker_ref;

    use super::*;

    /// A writer that takes at most `step` bytes per call and records every call.
    #[derive(Default)]
    struct Trickle {
        step: usize,
        written: Vec<u8>,
        calls: usize,
        pending_every: Option<usize>,
        /// Flushes that return `Pending` before one succeeds, like a TLS stream holding
        /// records the socket cannot take yet.
        pending_flushes: usize,
        flushes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            self.calls += 1;
            if self
                .pending_every
                .is_some_and(|n| self.calls.is_multiple_of(n))
            {
                return Poll::Pending;
            }
            let mut budget = self.step;
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(budget);
                self.written.extend_from_slice(&buf[..n]);
                budget -= n;
                taken += n;
                if budget == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(taken))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            self.flushes += 1;
            if self.pending_flushes > 0 {
                self.pending_flushes -= 1;
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn copied_and_shared_bytes_go_out_in_order_across_partial_writes() {
        let shared = Bytes::from(vec![7u8; 5000]);
        let mut expected = Vec::new();
        let mut outbox = Outbox::default();
        for round in 0..3u8 {
            outbox.copy(&[round; 10]);
            expected.extend_from_slice(&[round; 10]);
            let ping = Frame::Ping {
                ack: false,
                payload: [round; 8],
            };
            outbox.frame(ping);
            ping.write(&mut expected);
            outbox.share(shared.clone());
            expected.extend_from_slice(&shared);
        }
        assert_eq!(outbox.len(), expected.len());
        let mut io = Trickle {
            step: 777,
            pending_every: Some(4),
            ..Trickle::default()
        };
        let mut cx = Context::from_waker(noop_waker_ref());
        while outbox.poll_flush(&mut io, &mut cx).is_pending() {}
        assert_eq!(io.written, expected);
        assert!(outbox.is_empty());
    }

    #[test]
    fn bytes_a_writer_buffers_keep_the_outbox_busy_until_flushed() {
        let mut outbox = Outbox::default();
        outbox.copy(b"record");
        let mut io = Trickle {
            step: usize::MAX,
            pending_flushes: 2,
            ..Trickle::default()
        };
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(outbox.poll_flush(&mut io, &mut cx).is_pending());
        assert_eq!(outbox.len(), 0);
        assert!(!outbox.is_empty(), "the writer still holds bytes to send");
        assert!(outbox.poll_flush(&mut io, &mut cx).is_pending());
        assert!(outbox.poll_flush(&mut io, &mut cx).is_ready());
        assert!(outbox.is_empty());
        assert_eq!((io.written.as_slice(), io.flushes), (&b"record"[..], 3));
        // Nothing written since: no flush.
        assert!(outbox.poll_flush(&mut io, &mut cx).is_ready());
        assert_eq!(io.flushes, 3);
    }

    #[test]
    fn one_call_takes_everything_a_fast_writer_can() {
        let mut outbox = Outbox::default();
        for _ in 0..10 {
            outbox.copy(b"header");
            outbox.share(Bytes::from_static(&[1; 2048]));
        }
        let mut io = Trickle {
            step: usize::MAX,
            ..Trickle::default()
        };
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(outbox.poll_flush(&mut io, &mut cx).is_ready());
        assert_eq!(io.calls, 1);
    }

    #[test]
    fn an_empty_outbox_lets_a_large_scratch_go() {
        let mut outbox = Outbox::default();
        outbox.copy(&[0; 100_000]);
        let mut io = Trickle {
            step: usize::MAX,
            ..Trickle::default()
        };
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(outbox.poll_flush(&mut io, &mut cx).is_ready());
        assert_eq!(outbox.scratch.capacity(), 0);
        outbox.copy(b"small");
        assert!(outbox.poll_flush(&mut io, &mut cx).is_ready());
        assert!(outbox.scratch.capacity() <= KEEP_SCRATCH_BYTES);
    }
}
