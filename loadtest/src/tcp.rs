//! The plain TCP fan-out baseline: the physical floor cattail's numbers are compared with.
//!
//! A good baseline, as DESIGN.md asks: one task per socket; every message is one shared `Bytes`
//! (a 12-byte header of send time and length, then the payload), cloned into each socket's queue;
//! each task writes everything queued for its socket with one vectored write, so messages coalesce
//! under load. The sender runs alone on its own thread, whose CPU time (`/proc/thread-self/stat`)
//! is the baseline's server CPU. Receivers run on the caller's runtime and record latency.

use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::churn::unix_nanos;
use crate::stats::{Hist, HistWire};

/// Header: send time (u64 LE nanoseconds) and payload length (u32 LE).
const HEADER: usize = 12;

/// What one baseline replay measured.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BaselineResult {
    /// Sockets fanned out to.
    pub sockets: u32,
    /// Messages sent to each socket.
    pub messages: u64,
    /// Messages written in total (messages × sockets).
    pub deliveries: u64,
    /// Payload bytes each socket received.
    pub bytes_per_socket: u64,
    /// CPU seconds of the sending thread.
    pub sender_cpu_seconds: f64,
    /// From the first connect to the last byte received, in seconds.
    pub seconds: f64,
    /// Send to receipt of each message at each socket, µs.
    pub latency_us: HistWire,
}

/// Sends `schedule` (offset from the start, payload) to `sockets` loopback sockets and waits
/// (at most `limit`) until every socket has received every message.
pub async fn replay(
    sockets: u32,
    schedule: Vec<(Duration, Bytes)>,
    limit: Duration,
) -> anyhow::Result<BaselineResult> {
    let buffer = socket_buffer(sockets);
    replay_admitting(sockets, schedule, limit, connects_in_flight(), buffer).await
}

/// Replays to more sockets than this get fixed kernel buffers of [`CAPPED_BUFFER_BYTES`].
const CAPPED_ABOVE_SOCKETS: u32 = 2000;
/// Send and receive buffer per baseline socket in a large replay (the kernel doubles it).
///
/// With the kernel's autotuning a socket may hold up to 4 MiB to send and 32 MiB received
/// (`net.ipv4.tcp_wmem`, `tcp_rmem`); 5,000 sockets replaying the large scenario's 2.8 MB
/// snapshot outgrew `net.ipv4.tcp_mem` (2.2 GiB here), and the kernel reset connections
/// ("TCP: out of memory"), failing the run. 5,000 × 2 × 128 KiB stays near 1.25 GiB.
/// cattail's own sockets are bounded by each agent's HTTP/2 window instead.
const CAPPED_BUFFER_BYTES: u32 = 64 * 1024;

/// The fixed kernel buffer size for a replay to `sockets` sockets, if any.
fn socket_buffer(sockets: u32) -> Option<u32> {
    (sockets > CAPPED_ABOVE_SOCKETS).then_some(CAPPED_BUFFER_BYTES)
}

/// [`replay`], with at most `in_flight` connections connecting or waiting to be accepted, and
/// sockets of `buffer` bytes of kernel buffer each way if set.
///
/// The kernel's accept queue holds `net.core.somaxconn` connections (4,096 here). A client
/// whose handshake completed while the queue was full is later reset, so 5,000 receivers
/// connecting at once failed the large scenario's baseline; each receiver now waits for a
/// permit, and the accept loop gives one back per connection it accepts.
async fn replay_admitting(
    sockets: u32,
    schedule: Vec<(Duration, Bytes)>,
    limit: Duration,
    in_flight: usize,
    buffer: Option<u32>,
) -> anyhow::Result<BaselineResult> {
    let admitted = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let accepted = admitted.clone();
    let messages = schedule.len() as u64;
    let payload_bytes: u64 = schedule.iter().map(|(_, b)| b.len() as u64).sum();
    let started = tokio::time::Instant::now();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let sender = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let outcome = match runtime {
            Ok(rt) => rt.block_on(async move {
                let listener = listen(buffer)?;
                let _ = addr_tx.send(listener.local_addr()?);
                send(listener, sockets, schedule, &accepted).await
            }),
            Err(e) => Err(e.into()),
        };
        let _ = done_tx.send(outcome);
    });
    let Ok(addr) = addr_rx.await else {
        return match done_rx.await {
            Ok(Err(error)) => Err(error.context("the TCP baseline could not listen")),
            _ => Err(anyhow::anyhow!("the TCP baseline's sender thread died")),
        };
    };
    let latency = Arc::new(Mutex::new(Hist::new()));
    let mut receivers = tokio::task::JoinSet::new();
    for _ in 0..sockets {
        let latency = latency.clone();
        let admitted = admitted.clone();
        receivers.spawn(async move {
            admitted.acquire().await?.forget();
            receive(addr, messages, latency, buffer).await
        });
    }
    let receiving = async {
        let mut bytes = 0;
        while let Some(joined) = receivers.join_next().await {
            bytes = joined.context("a receiver panicked")??;
        }
        Ok::<_, anyhow::Error>(bytes)
    };
    let bytes = tokio::time::timeout(limit, receiving)
        .await
        .map_err(|_| anyhow::anyhow!("the TCP baseline did not finish within {limit:?}"))??;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = done_rx.await.context("the TCP sender thread died")??;
    let _ = sender.join();
    anyhow::ensure!(
        bytes == payload_bytes,
        "a socket received {bytes} bytes, expected {payload_bytes}"
    );
    let latency_us = latency
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .to_wire();
    Ok(BaselineResult {
        sockets,
        messages,
        deliveries: messages * u64::from(sockets),
        bytes_per_socket: bytes,
        sender_cpu_seconds: cpu,
        seconds,
        latency_us,
    })
}

/// A loopback listener whose accept queue holds a whole connect storm: with the usual backlog
/// of 128, most of 1,000 simultaneous connects are dropped and retried after seconds.
/// Accepted sockets inherit its send buffer size, if `buffer` sets one.
fn listen(buffer: Option<u32>) -> anyhow::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(bytes) = buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(socket.listen(LISTEN_BACKLOG)?)
}

/// The accept queue of the baseline's listener (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 8192;

/// How many receivers may connect at once: half the accept queue the kernel allows.
fn connects_in_flight() -> usize {
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .unwrap_or(128);
    (somaxconn.min(LISTEN_BACKLOG) / 2).max(16) as usize
}

/// The sending side, on its own thread; returns the thread's CPU seconds.
async fn send(
    listener: TcpListener,
    sockets: u32,
    schedule: Vec<(Duration, Bytes)>,
    accepted: &tokio::sync::Semaphore,
) -> anyhow::Result<f64> {
    let cpu_start = thread_cpu();
    let mut queues = Vec::with_capacity(sockets as usize);
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..sockets {
        let (stream, _) = listener.accept().await?;
        accepted.add_permits(1);
        stream.set_nodelay(true)?;
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        queues.push(tx);
        writers.spawn(write_queue(stream, rx));
    }
    let start = tokio::time::Instant::now();
    for (offset, payload) in schedule {
        tokio::time::sleep_until(start + offset).await;
        let mut message = BytesMut::with_capacity(HEADER + payload.len());
        message.extend_from_slice(&(unix_nanos() as u64).to_le_bytes());
        message.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        message.extend_from_slice(&payload);
        let message = message.freeze();
        for queue in &queues {
            let _ = queue.send(message.clone());
        }
    }
    drop(queues);
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    Ok(thread_cpu() - cpu_start)
}

/// One socket's writer: everything queued goes out in one vectored write.
async fn write_queue(
    mut stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) -> anyhow::Result<()> {
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        while !batch.is_empty() {
            let slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
            let mut written = stream.write_vectored(&slices).await?;
            anyhow::ensure!(written > 0, "the socket closed");
            while written > 0 {
                let first = &mut batch[0];
                let n = written.min(first.len());
                first.advance(n);
                written -= n;
                if first.is_empty() {
                    batch.remove(0);
                }
            }
        }
    }
    stream.shutdown().await?;
    Ok(())
}

/// One receiving socket: reads `messages` messages; returns the payload bytes received.
async fn receive(
    addr: std::net::SocketAddr,
    messages: u64,
    latency: Arc<Mutex<Hist>>,
    buffer: Option<u32>,
) -> anyhow::Result<u64> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(bytes) = buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    let mut stream = socket.connect(addr).await?;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    let mut bytes = 0;
    for _ in 0..messages {
        stream.read_exact(&mut header).await?;
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&header[..8]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&header[8..]);
        let len = u32::from_le_bytes(len) as usize;
        payload.resize(len, 0);
        stream.read_exact(&mut payload).await?;
        bytes += len as u64;
        let lag_us = (unix_nanos() - i128::from(u64::from_le_bytes(sent))) / 1_000;
        latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record_signed(lag_us);
    }
    Ok(bytes)
}

/// CPU seconds of the calling thread.
fn thread_cpu() -> f64 {
    crate::procstat::thread_cpu_seconds()
}

/// Reads a trace written by a light agent (`deltas.bin`) into a replay schedule.
pub fn read_deltas(data: &[u8]) -> Vec<(Duration, Bytes)> {
    let mut data = Bytes::copy_from_slice(data);
    let mut out = Vec::new();
    let mut first = None;
    while data.remaining() >= HEADER {
        let offset = data.get_u64_le();
        let len = data.get_u32_le() as usize;
        if data.remaining() < len {
            break;
        }
        let base = *first.get_or_insert(offset);
        out.push((Duration::from_nanos(offset - base), data.split_to(len)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_socket_gets_every_message() {
        let schedule: Vec<_> = (0..20u8)
            .map(|i| {
                (
                    Duration::from_millis(u64::from(i) * 5),
                    Bytes::from(vec![i; 1_000 + usize::from(i)]),
                )
            })
            .collect();
        let result = replay(30, schedule, Duration::from_secs(30)).await.unwrap();
        assert_eq!(result.deliveries, 600);
        assert_eq!(
            result.bytes_per_socket,
            (0..20).map(|i| 1_000 + i).sum::<u64>()
        );
        assert_eq!(Hist::from_wire(&result.latency_us).len(), 600);
    }

    #[tokio::test]
    async fn receivers_connect_a_few_at_a_time_and_all_get_through() {
        let schedule = vec![(Duration::ZERO, Bytes::from_static(b"hello"))];
        // Only as many accepts give permits back: without them, 26 receivers would wait
        // for ever and the replay would fail at its limit.
        let result = replay_admitting(30, schedule, Duration::from_secs(30), 4, None)
            .await
            .unwrap();
        assert_eq!(result.deliveries, 30);
        assert_eq!(result.bytes_per_socket, 5);
    }

    #[tokio::test]
    async fn a_snapshot_storm_is_one_big_message() {
        let blob = Bytes::from(vec![7u8; 3 << 20]);
        let result = replay(8, vec![(Duration::ZERO, blob)], Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(result.bytes_per_socket, 3 << 20);
        assert!(result.seconds > 0.0);
    }

    #[tokio::test]
    async fn small_fixed_socket_buffers_still_carry_every_byte() {
        // Large replays get fixed buffers; medium ones keep the kernel's autotuning.
        assert_eq!(socket_buffer(1_000), None);
        assert_eq!(socket_buffer(5_000), Some(CAPPED_BUFFER_BYTES));
        let blob = Bytes::from(vec![3u8; 3 << 20]);
        let result = replay_admitting(
            8,
            vec![(Duration::ZERO, blob)],
            Duration::from_secs(30),
            8,
            Some(4096),
        )
        .await
        .unwrap();
        assert_eq!(result.bytes_per_socket, 3 << 20);
        assert_eq!(result.deliveries, 8);
    }

    #[test]
    fn traces_parse_back() {
        let mut data = Vec::new();
        for (t, payload) in [(1_000u64, &b"ab"[..]), (5_000, &b"cde"[..])] {
            data.extend_from_slice(&t.to_le_bytes());
            data.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            data.extend_from_slice(payload);
        }
        let schedule = read_deltas(&data);
        assert_eq!(schedule.len(), 2);
        assert_eq!(schedule[1].0, Duration::from_nanos(4_000));
        assert_eq!(&schedule[1].1[..], b"cde");
    }
}
