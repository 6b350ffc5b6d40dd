//! `LightAgent`: a raw gRPC agent that reads frames, records lag and acks, and decodes only what
//! it needs. Every light agent records fan-out latency from the frame headers; one in
//! [`STAMP_SAMPLE`] also decompresses the payloads of pod and policy deltas, to find the write
//! stamp for end-to-end latency. Decompressing in every agent would make the agents' process,
//! which shares the machine with the server, the main consumer of CPU in the fan-out window
//! (the plain-TCP baseline's receivers decode nothing).
//!
//! It keeps no cache, so on a reconnect it resumes with its epoch and revision but no digests:
//! the server answers with deltas (same epoch) or a snapshot. A stream is given up after 35 s
//! without a message (three heartbeats and a margin), and reconnects back off from 200 ms to 5 s.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cattail_proto::pb::{self, agent_message, sync_client::SyncClient};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AgentCounters, SUBSCRIPTIONS, Shared};
use crate::churn::unix_nanos;
use crate::objects::find_stamp;

/// A stream with no message for this long is considered dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(35);
/// At most this many delta messages are traced.
const MAX_TRACED: usize = 200_000;
/// One light agent in this many decodes payloads for end-to-end latency.
pub const STAMP_SAMPLE: u32 = 10;
/// Decoded payloads are refused past this size.
const MAX_PAYLOAD: usize = 64 << 20;

/// The bytes one agent received, kept for the TCP baseline to send again.
#[derive(Debug, Default)]
pub struct Trace {
    snapshot: Mutex<Vec<u8>>,
    snapshot_done: std::sync::atomic::AtomicBool,
    deltas: Mutex<Vec<(u64, Bytes)>>,
}

impl Trace {
    /// Writes `snapshot.bin` (the first catch-up, concatenated) and `deltas.bin` (records of
    /// little-endian `u64` nanoseconds since the first delta, `u32` length, bytes).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::fs::write(dir.join("snapshot.bin"), &*snapshot)?;
        let deltas = self
            .deltas
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for (offset, bytes) in deltas.iter() {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        std::fs::write(dir.join("deltas.bin"), out)
    }

    fn record(&self, message: &pb::ServerMessage, catching_up: bool, start: Instant) {
        let bytes = message.encode_to_vec();
        if catching_up && !self.snapshot_done.load(Ordering::Relaxed) {
            let mut snapshot = self
                .snapshot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snapshot.extend_from_slice(&bytes);
            if message.synced.is_some() {
                self.snapshot_done.store(true, Ordering::Relaxed);
            }
        } else if !catching_up && !message.frames.is_empty() {
            let mut deltas = self
                .deltas
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if deltas.len() < MAX_TRACED {
                deltas.push((start.elapsed().as_nanos() as u64, Bytes::from(bytes)));
            }
        }
    }
}

/// One light agent.
pub struct LightAgent {
    /// Its agent id.
    pub id: String,
    /// Its node.
    pub node: String,
    /// The endpoint it connects to.
    pub endpoint: String,
    /// TLS settings for an `https://` endpoint.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// Its counters.
    pub counters: Arc<AgentCounters>,
    /// The process's shared state.
    pub shared: Arc<Shared>,
    /// Set on the one agent that traces what it receives.
    pub trace: Option<Arc<Trace>>,
    /// Whether it decodes payloads for write stamps (end-to-end latency).
    pub stamps: bool,
}

/// TLS for light agents: trust the CA bundle at `ca_file`, and check the server's certificate
/// for `localhost` (the load test's servers listen on loopback addresses).
pub(super) fn tls_config(ca_file: &Path) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let pem = std::fs::read(ca_file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca_file.display()))?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name("localhost"))
}

/// Where a stream left the agent, for its next resume.
#[derive(Default)]
struct ResumePoint {
    epoch: Bytes,
    revision: u64,
}

impl LightAgent {
    /// Connects, and reconnects after every failure, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut resume = ResumePoint::default();
        let mut backoff = Duration::from_millis(200);
        let started = Instant::now();
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = self.stream(&mut resume, started) => result,
            };
            self.counters.connected.store(false, Ordering::Relaxed);
            self.counters.synced.store(false, Ordering::Relaxed);
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(error) => self.shared.error(error),
            }
            let jitter = Duration::from_millis(crate::churn::mix64(unix_nanos() as u64) % 200);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    fn hello(&self, resume: &ResumePoint) -> pb::AgentMessage {
        let hello = pb::Hello {
            protocol_version: cattail_proto::PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            node_name: self.node.clone(),
            agent_version: "cattail-loadtest".into(),
            subscriptions: SUBSCRIPTIONS
                .iter()
                .map(|(resource, node_scoped)| pb::Subscription {
                    resource: (*resource).into(),
                    node_scoped: *node_scoped,
                })
                .collect(),
            // Light agents keep no objects, so no digests: they name what their state covers.
            resume: (!resume.epoch.is_empty()).then(|| pb::Resume {
                epoch: resume.epoch.clone(),
                revision: resume.revision,
                digests: Vec::new(),
                covered: SUBSCRIPTIONS
                    .iter()
                    .map(|(resource, node_scoped)| pb::Coverage {
                        resource: (*resource).into(),
                        scope: if *node_scoped {
                            self.node.clone()
                        } else {
                            String::new()
                        },
                    })
                    .collect(),
            }),
            accepted_encodings: vec![pb::Encoding::ProtoZstd as i32, pb::Encoding::Proto as i32],
        };
        pb::AgentMessage {
            message: Some(agent_message::Message::Hello(hello)),
        }
    }

    /// One stream, until it fails (an error message) or the server ends it (`Ok`).
    async fn stream(&self, resume: &mut ResumePoint, started: Instant) -> Result<(), String> {
        let connect_start = Instant::now();
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| format!("bad endpoint {}: {e}", self.endpoint))?
            .connect_timeout(Duration::from_secs(5))
            .max_frame_size(cattail_proto::AGENT_MAX_FRAME_BYTES);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("bad TLS settings for {}: {e}", self.endpoint))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint))?;
        let mut client = SyncClient::new(channel).max_decoding_message_size(MAX_PAYLOAD);
        let (tx, rx) = mpsc::channel(8);
        let _ = tx.try_send(self.hello(resume));
        let mut responses = client
            .watch(tokio_stream_from(rx))
            .await
            .map_err(|s| format!("watch refused: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        self.counters.connected.store(true, Ordering::Relaxed);
        let mut catching_up = true;
        let mut last_ack = Instant::now();
        loop {
            let message = match tokio::time::timeout(IDLE_TIMEOUT, responses.message()).await {
                Err(_) => return Err("no message for 35 s".into()),
                Ok(Err(status)) => {
                    return Err(format!(
                        "stream ended: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(message))) => message,
            };
            let now = unix_nanos();
            self.counters
                .bytes
                .fetch_add(message.encoded_len() as u64, Ordering::Relaxed);
            self.shared.messages.fetch_add(1, Ordering::Relaxed);
            if let Some(trace) = &self.trace {
                trace.record(&message, catching_up, started);
            }
            if let Some(welcome) = &message.welcome {
                resume.epoch = welcome.epoch.clone();
            }
            self.observe_frames(&message, now, resume);
            if let Some(synced) = &message.synced {
                resume.revision = synced.revision;
                if catching_up {
                    catching_up = false;
                    self.counters.synced.store(true, Ordering::Relaxed);
                    let ms = connect_start.elapsed().as_millis() as u64;
                    self.shared.recorder().sync_ms.record(ms);
                }
            }
            if let Some(heartbeat) = &message.heartbeat {
                resume.revision = resume.revision.max(heartbeat.head_revision);
            }
            self.shared
                .revision
                .fetch_max(resume.revision, Ordering::Relaxed);
            if !catching_up && last_ack.elapsed() >= Duration::from_secs(1) {
                last_ack = Instant::now();
                let ack = pb::AgentMessage {
                    message: Some(agent_message::Message::Ack(pb::Ack {
                        revision: resume.revision,
                    })),
                };
                let _ = tx.try_send(ack);
            }
        }
    }

    /// Records fan-out and end-to-end latency of the delta frames of one message.
    fn observe_frames(&self, message: &pb::ServerMessage, now: i128, resume: &mut ResumePoint) {
        let deltas: Vec<_> = message.frames.iter().filter(|f| !f.replace).collect();
        if deltas.is_empty() {
            return;
        }
        let mut e2e = Vec::new();
        for frame in &deltas {
            resume.revision = resume.revision.max(frame.revision);
            let stamped = self.stamps
                && (frame.resource == "v1/pods"
                    || frame.resource == "networking.k8s.io/v1/networkpolicies");
            if !stamped {
                continue;
            }
            match cattail_proto::frame::decode_payload(frame, MAX_PAYLOAD) {
                Ok(payload) => {
                    e2e.extend(payload.upserts.iter().filter_map(|u| find_stamp(&u.value)))
                }
                Err(error) => self.shared.error(format!("cannot decode a frame: {error}")),
            }
        }
        let mut r = self.shared.recorder();
        for frame in deltas {
            r.fanout_us
                .record_signed((now - i128::from(frame.publish_time_unix_nanos)) / 1_000);
        }
        for stamp in e2e {
            r.e2e_us.record_signed((now - stamp) / 1_000);
        }
    }
}

/// A request stream from a channel receiver.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<pb::AgentMessage>,
) -> impl futures::Stream<Item = pb::AgentMessage> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
