//! The fan-out's metrics, through the `metrics` facade: names, descriptions and handles.
//!
//! Per-agent handles are resolved once when the agent connects, so the hot path only adds to
//! atomics. There is no per-agent label (thousands of agents would explode cardinality): lag is
//! a histogram over all agents' acks.

use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, gauge, histogram,
};

use crate::store::Revision;

use super::batch::BatchStats;
use super::encode::Encoded;

/// Agents with a running sender.
pub(crate) const CONNECTED_AGENTS: &str = "cattail_connected_agents";
/// Frames written to agents.
pub(crate) const FRAMES_SENT: &str = "cattail_frames_sent_total";
/// gRPC messages written to agents.
pub(crate) const MESSAGES_SENT: &str = "cattail_messages_sent_total";
/// Bytes of gRPC messages written to agents.
pub(crate) const SENT_BYTES: &str = "cattail_sent_bytes_total";
/// Snapshots of one (resource, scope) encoded.
pub(crate) const SNAPSHOTS_ENCODED: &str = "cattail_snapshots_encoded_total";
/// Uncompressed payload bytes of encoded snapshots.
pub(crate) const SNAPSHOT_RAW_BYTES: &str = "cattail_snapshot_raw_bytes_total";
/// Stored (compressed) payload bytes of encoded snapshots.
pub(crate) const SNAPSHOT_COMPRESSED_BYTES: &str = "cattail_snapshot_compressed_bytes_total";
/// Batch frames encoded, one per (batch, resource, scope).
pub(crate) const BATCH_FRAMES_ENCODED: &str = "cattail_batch_frames_encoded_total";
/// Uncompressed payload bytes of batch frames.
pub(crate) const BATCH_RAW_BYTES: &str = "cattail_batch_raw_bytes_total";
/// Stored payload bytes of batch frames.
pub(crate) const BATCH_COMPRESSED_BYTES: &str = "cattail_batch_compressed_bytes_total";
/// Bytes of encoded frames held by the log.
pub(crate) const LOG_BYTES: &str = "cattail_log_bytes";
/// Batches held by the log.
pub(crate) const LOG_BATCHES: &str = "cattail_log_batches";
/// The newest revision.
pub(crate) const REVISION: &str = "cattail_head_revision";
/// Head minus acked revision, at each ack.
pub(crate) const AGENT_LAG: &str = "cattail_agent_lag_revisions";
/// Agents whose revision is the head's, at the last scrape.
pub(crate) const AGENTS_AT_HEAD: &str = "cattail_agents_at_head";
/// The longest any agent has been behind the head, at the last scrape.
pub(crate) const AGENT_OLDEST_LAG: &str = "cattail_agent_oldest_lag_seconds";
/// Catch-ups and resyncs, by `mode` (snapshot, digest, deltas) and `reason`.
pub(crate) const RESYNCS: &str = "cattail_resyncs_total";
/// Streams ended by the server, by `reason`.
pub(crate) const STREAMS_ENDED: &str = "cattail_streams_ended_total";

/// Describes every fan-out metric to the installed recorder. Idempotent.
pub fn describe_metrics() {
    describe_gauge!(CONNECTED_AGENTS, "Agents with a running sender.");
    describe_counter!(FRAMES_SENT, "Frames written to agents.");
    describe_counter!(MESSAGES_SENT, "gRPC messages written to agents.");
    describe_counter!(
        SENT_BYTES,
        Unit::Bytes,
        "Bytes of gRPC messages written to agents."
    );
    describe_counter!(
        SNAPSHOTS_ENCODED,
        "Snapshots of one resource and scope encoded."
    );
    describe_counter!(
        SNAPSHOT_RAW_BYTES,
        Unit::Bytes,
        "Uncompressed snapshot payload bytes."
    );
    describe_counter!(
        SNAPSHOT_COMPRESSED_BYTES,
        Unit::Bytes,
        "Stored snapshot payload bytes."
    );
    describe_counter!(
        BATCH_FRAMES_ENCODED,
        "Batch frames encoded, one per resource and scope."
    );
    describe_counter!(
        BATCH_RAW_BYTES,
        Unit::Bytes,
        "Uncompressed batch payload bytes."
    );
    describe_counter!(
        BATCH_COMPRESSED_BYTES,
        Unit::Bytes,
        "Stored batch payload bytes."
    );
    describe_gauge!(
        LOG_BYTES,
        Unit::Bytes,
        "Bytes of encoded frames held by the log."
    );
    describe_gauge!(LOG_BATCHES, "Batches held by the log.");
    describe_gauge!(REVISION, "The newest published revision.");
    describe_gauge!(
        AGENTS_AT_HEAD,
        "Connected agents at the head revision (acked, or written if they never ack)."
    );
    describe_gauge!(
        AGENT_OLDEST_LAG,
        Unit::Seconds,
        "How long the agent furthest behind has been behind the head."
    );
    metrics::describe_histogram!(AGENT_LAG, "Head revision minus an agent's acked revision.");
    describe_counter!(RESYNCS, "Catch-ups and resyncs by mode and reason.");
    describe_counter!(
        STREAMS_ENDED,
        "Agent streams ended by the server, by reason."
    );
}

/// A batch was encoded.
pub(crate) fn batch_encoded(stats: &BatchStats) {
    counter!(BATCH_FRAMES_ENCODED).increment(stats.frames);
    counter!(BATCH_RAW_BYTES).increment(stats.bytes.raw);
    counter!(BATCH_COMPRESSED_BYTES).increment(stats.bytes.stored);
}

/// The log after a publish.
pub(crate) fn log_state(head: Revision, batches: usize, bytes: u64) {
    gauge!(REVISION).set(head.get() as f64);
    gauge!(LOG_BATCHES).set(batches as f64);
    gauge!(LOG_BYTES).set(bytes as f64);
}

/// One (resource, scope) snapshot was encoded.
pub(crate) fn snapshot_encoded(sizes: Encoded) {
    counter!(SNAPSHOTS_ENCODED).increment(1);
    counter!(SNAPSHOT_RAW_BYTES).increment(sizes.raw);
    counter!(SNAPSHOT_COMPRESSED_BYTES).increment(sizes.stored);
}

/// The number of connected agents changed.
pub(crate) fn connected_agents(now: usize) {
    gauge!(CONNECTED_AGENTS).set(now as f64);
}

/// The fleet's gauges, refreshed from a walk of the connected agents.
pub(crate) fn fleet(at_head: usize, oldest_lag_seconds: f64) {
    gauge!(AGENTS_AT_HEAD).set(at_head as f64);
    gauge!(AGENT_OLDEST_LAG).set(oldest_lag_seconds);
}

/// A catch-up or resync started.
pub(crate) fn resync(mode: &'static str, reason: &'static str) {
    counter!(RESYNCS, "mode" => mode, "reason" => reason).increment(1);
}

/// The server ended a stream.
pub(crate) fn stream_ended(reason: &'static str) {
    counter!(STREAMS_ENDED, "reason" => reason).increment(1);
}

/// One agent's handles, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct AgentMetrics {
    frames: Counter,
    messages: Counter,
    bytes: Counter,
    lag: Histogram,
}

impl AgentMetrics {
    pub(crate) fn new() -> Self {
        Self {
            frames: counter!(FRAMES_SENT),
            messages: counter!(MESSAGES_SENT),
            bytes: counter!(SENT_BYTES),
            lag: histogram!(AGENT_LAG),
        }
    }

    /// A message was handed to the transport.
    pub(crate) fn sent(&self, frames: usize, bytes: usize) {
        self.frames.increment(frames as u64);
        self.messages.increment(1);
        self.bytes.increment(bytes as u64);
    }

    /// An ack arrived: the agent is `lag` revisions behind the head.
    pub(crate) fn lag(&self, lag: u64) {
        self.lag.record(lag as f64);
    }
}
