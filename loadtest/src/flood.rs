//! `hello-flood`: the attack of issue 12 on a running `cattail serve`, to measure that memory
//! before a Hello is bounded. Connections open many Watch streams, each announcing a Hello of
//! `hello_bytes` and trickling it in `chunk_bytes` pieces every `interval` without ever finishing
//! it, for `duration`. The server's resident memory is sampled the whole time.
//!
//! It is a measuring tool, not a test: it prints what it saw (peak RSS, how streams ended) as
//! JSON, and docs/BENCHMARKS.md records the figures with the command. It speaks HTTP/2 with the
//! h2 crate directly, because a gRPC client would not send half a message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::procstat;

/// What to send.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// The server's gRPC address (plaintext h2c).
    pub addr: SocketAddr,
    /// The server's process id, to sample its memory.
    pub server_pid: u32,
    /// Connections to open.
    pub connections: u32,
    /// Watch streams per connection.
    pub streams: u32,
    /// The Hello size each stream announces in its gRPC length prefix.
    pub hello_bytes: u32,
    /// Bytes sent per stream per step.
    pub chunk_bytes: u32,
    /// Time between steps.
    pub interval: Duration,
    /// How long the flood lasts.
    pub duration: Duration,
}

/// What the flood saw.
#[derive(Debug, Default, Serialize)]
pub struct FloodReport {
    /// The server's RSS before the flood, bytes.
    pub rss_before_bytes: u64,
    /// The highest RSS sampled during the flood, bytes.
    pub rss_peak_bytes: u64,
    /// The server's RSS after the flood's connections closed, bytes.
    pub rss_after_bytes: u64,
    /// Streams opened.
    pub streams_opened: u64,
    /// Streams the server answered (refused, ended) before the flood stopped.
    pub streams_answered: u64,
    /// Of those, with `grpc-status` RESOURCE_EXHAUSTED.
    pub resource_exhausted: u64,
    /// Of those, with `grpc-status` DEADLINE_EXCEEDED (the Hello deadline).
    pub deadline_exceeded: u64,
    /// Request bytes handed to HTTP/2 (the server accepted at most its windows of them).
    pub bytes_sent: u64,
    /// Connections that failed or were closed by the server.
    pub connection_errors: u64,
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    answered: AtomicU64,
    exhausted: AtomicU64,
    deadline: AtomicU64,
    sent: AtomicU64,
    connection_errors: AtomicU64,
}

/// Runs the flood and samples the server until it ends.
///
/// # Errors
/// When the server's process cannot be read at the start.
pub async fn flood(config: FloodConfig) -> anyhow::Result<FloodReport> {
    let before = procstat::sample(config.server_pid)
        .with_context(|| format!("no process {} to sample", config.server_pid))?;
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..config.connections {
        tasks.spawn(connection(config.clone(), counts.clone(), stop.clone()));
    }
    let mut peak = before.rss_bytes;
    let end = Instant::now() + config.duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(sample) = procstat::sample(config.server_pid) {
            peak = peak.max(sample.rss_bytes);
        }
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    // Let the server notice the closed connections and free what they held.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = procstat::sample(config.server_pid).unwrap_or_default();
    Ok(FloodReport {
        rss_before_bytes: before.rss_bytes,
        rss_peak_bytes: peak,
        rss_after_bytes: after.rss_bytes,
        streams_opened: counts.opened.load(Ordering::Relaxed),
        streams_answered: counts.answered.load(Ordering::Relaxed),
        resource_exhausted: counts.exhausted.load(Ordering::Relaxed),
        deadline_exceeded: counts.deadline.load(Ordering::Relaxed),
        bytes_sent: counts.sent.load(Ordering::Relaxed),
        connection_errors: counts.connection_errors.load(Ordering::Relaxed),
    })
}

/// One connection and its streams, until `stop`.
async fn connection(config: FloodConfig, counts: Arc<Counts>, stop: CancellationToken) {
    let result = async {
        let tcp = TcpStream::connect(config.addr).await?;
        let (client, driver) = h2::client::handshake(tcp).await?;
        let driving = tokio::spawn(driver);
        let mut streams = tokio::task::JoinSet::new();
        for _ in 0..config.streams {
            // A server that stops granting streams must not hold the flood past its end.
            let mut ready = tokio::select! {
                () = stop.cancelled() => break,
                ready = client.clone().ready() => ready?,
            };
            let request = tonic::codegen::http::Request::builder()
                .method("POST")
                .uri(format!("http://{}/cattail.v1.Sync/Watch", config.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())?;
            let (response, send) = ready.send_request(request, false)?;
            counts.opened.fetch_add(1, Ordering::Relaxed);
            streams.spawn(stream(
                config.clone(),
                response,
                send,
                counts.clone(),
                stop.clone(),
            ));
        }
        stop.cancelled().await;
        streams.abort_all();
        driving.abort();
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        counts.connection_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// One stream: the prefix of a `hello_bytes` Hello, then a chunk every interval, never all of it.
async fn stream(
    config: FloodConfig,
    response: h2::client::ResponseFuture,
    mut send: h2::SendStream<Bytes>,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&config.hello_bytes.to_be_bytes());
    let chunk = Bytes::from(vec![0x0a; config.chunk_bytes as usize]);
    let answered = async {
        let response = response.await.ok()?;
        let status = |headers: &tonic::codegen::http::HeaderMap| {
            headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
        };
        if let Some(code) = status(response.headers()) {
            return Some(code);
        }
        let mut body = response.into_body();
        while body.data().await.is_some() {}
        body.trailers().await.ok()?.as_ref().and_then(status)
    };
    let sending = async {
        if send.send_data(Bytes::from(prefix), false).is_err() {
            return;
        }
        let mut left = u64::from(config.hello_bytes).saturating_sub(1);
        while left >= u64::from(config.chunk_bytes) {
            if send.send_data(chunk.clone(), false).is_err() {
                return;
            }
            counts
                .sent
                .fetch_add(u64::from(config.chunk_bytes), Ordering::Relaxed);
            left -= u64::from(config.chunk_bytes);
            tokio::time::sleep(config.interval).await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = sending => {}
        code = answered => {
            counts.answered.fetch_add(1, Ordering::Relaxed);
            match code {
                Some(8) => counts.exhausted.fetch_add(1, Ordering::Relaxed),
                Some(4) => counts.deadline.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    }
}
