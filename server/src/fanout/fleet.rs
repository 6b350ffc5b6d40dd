//! [`Fleet`]: the registry of connected agents behind the status page's fleet view and the
//! `cattail_agents_at_head` and `cattail_agent_oldest_lag_seconds` gauges.
//!
//! A sender registers its agent once the catch-up is planned (the Welcome names the resume
//! mode) and is removed when its [`FleetEntry`] drops. The lock is taken only then and when a
//! report is made; the hot path touches only the entry's relaxed atomics. A report walks every
//! agent (O(agents), on request or at a scrape) and keeps the `top` slowest, so its size is
//! bounded whatever the number of agents.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::store::Revision;

/// The most agents a report lists, whatever it is asked for: the page stays small.
pub const MAX_SLOWEST: usize = 200;
/// Lags up to this many revisions count as "a little behind"; more as "far behind".
pub const NEAR_LAG: u64 = 10;

/// What a sender knows of its agent when it registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// `Hello.node_name` (agent-supplied).
    pub node: String,
    /// `Hello.agent_id` (agent-supplied).
    pub agent_id: String,
    /// `Hello.agent_version` (agent-supplied).
    pub version: String,
    /// The transport that serves the stream: `native` or `tonic`.
    pub transport: &'static str,
    /// How the agent was caught up when it connected: `snapshot`, `digest` or `deltas`.
    pub resume_mode: &'static str,
    /// When it connected.
    pub connected_since: SystemTime,
}

/// One connected agent: its Hello's facts and a few counters its sender keeps up to date.
#[derive(Debug)]
pub(crate) struct AgentRecord {
    info: AgentInfo,
    /// The revision the agent last acked, plus one; 0 until its first ack.
    acked: AtomicU64,
    /// The revision of the last message with frames handed to the transport.
    written: AtomicU64,
    /// Every batch up to this revision that concerns the agent has been handed to the
    /// transport (batches of other nodes are skipped, so it can pass `written`).
    cursor: AtomicU64,
    /// Bytes of messages handed to the transport.
    bytes_sent: AtomicU64,
}

impl AgentRecord {
    fn new(info: AgentInfo) -> Self {
        Self {
            info,
            acked: AtomicU64::new(0),
            written: AtomicU64::new(0),
            cursor: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        }
    }

    /// Where the agent is: the revision it has everything of, and whether an ack says so.
    ///
    /// An agent that acked everything written to it has everything up to the cursor (the
    /// batches after what it was sent did not concern it). One that never acked is placed at
    /// the cursor: what was written to it, not what it applied.
    fn position(&self) -> (Revision, LagBasis) {
        let written = self.written.load(Ordering::Relaxed);
        let cursor = self.cursor.load(Ordering::Relaxed);
        match self.acked.load(Ordering::Relaxed).checked_sub(1) {
            None => (Revision(cursor.max(written)), LagBasis::Written),
            Some(acked) if acked >= written => (Revision(acked.max(cursor)), LagBasis::Acked),
            Some(acked) => (Revision(acked), LagBasis::Acked),
        }
    }

    fn acked(&self) -> Option<u64> {
        self.acked.load(Ordering::Relaxed).checked_sub(1)
    }
}

/// Keeps one agent in the [`Fleet`] until it drops; the sender updates it as it goes.
#[derive(Debug)]
pub(crate) struct FleetEntry {
    fleet: Arc<Fleet>,
    id: u64,
    record: Arc<AgentRecord>,
}

impl FleetEntry {
    /// A message of `bytes` bytes was handed to the transport.
    pub(crate) fn sent(&self, bytes: usize) {
        self.record
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Frames up to `revision` were handed to the transport.
    pub(crate) fn written(&self, revision: Revision) {
        self.record.written.store(revision.get(), Ordering::Relaxed);
        self.cursor(revision);
    }

    /// Every batch up to `revision` that concerns the agent has been handed to the transport.
    pub(crate) fn cursor(&self, revision: Revision) {
        self.record.cursor.store(revision.get(), Ordering::Relaxed);
    }

    /// The agent acked `revision`.
    pub(crate) fn acked(&self, revision: u64) {
        self.record
            .acked
            .store(revision.saturating_add(1), Ordering::Relaxed);
    }
}

impl Drop for FleetEntry {
    fn drop(&mut self) {
        self.fleet.lock().remove(&self.id);
    }
}

/// The connected agents.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    agents: Mutex<HashMap<u64, Arc<AgentRecord>>>,
    next_id: AtomicU64,
}

impl Fleet {
    /// Registers an agent until the returned entry drops.
    pub(crate) fn join(self: &Arc<Self>, info: AgentInfo) -> FleetEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(AgentRecord::new(info));
        self.lock().insert(id, Arc::clone(&record));
        FleetEntry {
            fleet: Arc::clone(self),
            id,
            record,
        }
    }

    /// Agents listed now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<AgentRecord>>> {
        // Every change is one insert or remove: a panic cannot leave the map half-changed.
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fleet at `head`, with the `top` slowest agents (at most [`MAX_SLOWEST`]).
    ///
    /// `behind_for(r)` is how long ago the first batch after `r` was published: how long an
    /// agent at `r` has been behind, or connected if that is shorter. The lock is held only to
    /// copy the records out.
    pub(crate) fn report(
        &self,
        head: Revision,
        top: usize,
        behind_for: impl Fn(Revision) -> Duration,
    ) -> FleetReport {
        let records: Vec<Arc<AgentRecord>> = self.lock().values().cloned().collect();
        let now = SystemTime::now();
        let lags = records.iter().map(|record| {
            let (revision, basis) = record.position();
            let lag_revisions = head.get().saturating_sub(revision.get());
            // An agent still catching up has been behind since it connected, not since the
            // batch it lacks was published (which may be long before).
            let connected_for = now
                .duration_since(record.info.connected_since)
                .unwrap_or_default();
            let lag = if lag_revisions == 0 {
                Duration::ZERO
            } else {
                behind_for(revision).min(connected_for)
            };
            Lag {
                revision,
                basis,
                revisions: lag_revisions,
                seconds: lag.as_secs_f64(),
            }
        });
        let measured: Vec<(Lag, &AgentRecord)> = lags.zip(records.iter().map(|r| &**r)).collect();
        summarize(head, measured, top)
    }
}

/// Counts, the oldest lag and the `top` slowest of `agents`.
fn summarize(head: Revision, mut agents: Vec<(Lag, &AgentRecord)>, top: usize) -> FleetReport {
    let mut buckets = LagBuckets::default();
    let mut oldest_lag_seconds: f64 = 0.0;
    for (lag, _) in &agents {
        buckets.count(lag.revisions);
        oldest_lag_seconds = oldest_lag_seconds.max(lag.seconds);
    }
    let top = top.min(MAX_SLOWEST).min(agents.len());
    let slowest_first = |a: &(Lag, &AgentRecord), b: &(Lag, &AgentRecord)| {
        b.0.revisions
            .cmp(&a.0.revisions)
            .then(b.0.seconds.total_cmp(&a.0.seconds))
            .then(a.1.info.connected_since.cmp(&b.1.info.connected_since))
    };
    if top < agents.len() && top > 0 {
        agents.select_nth_unstable_by(top - 1, slowest_first);
    }
    agents.truncate(top);
    agents.sort_by(slowest_first);
    let now = SystemTime::now();
    let slowest = agents
        .into_iter()
        .map(|(lag, record)| AgentRow {
            node: record.info.node.clone(),
            agent_id: record.info.agent_id.clone(),
            version: record.info.version.clone(),
            transport: record.info.transport,
            resume_mode: record.info.resume_mode,
            acked_revision: record.acked(),
            revision: lag.revision.get(),
            lag_basis: lag.basis,
            lag_revisions: lag.revisions,
            lag_seconds: lag.seconds,
            bytes_sent: record.bytes_sent.load(Ordering::Relaxed),
            connected_since: humantime::format_rfc3339_seconds(record.info.connected_since)
                .to_string(),
            connected_seconds: now
                .duration_since(record.info.connected_since)
                .unwrap_or_default()
                .as_secs(),
        })
        .collect();
    FleetReport {
        head: head.get(),
        agents: buckets.total(),
        lag: buckets,
        oldest_lag_seconds,
        slowest,
    }
}

/// One agent's lag.
#[derive(Debug, Clone, Copy)]
struct Lag {
    revision: Revision,
    basis: LagBasis,
    revisions: u64,
    seconds: f64,
}

/// What an agent's lag is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LagBasis {
    /// The agent's acks: what it has applied.
    Acked,
    /// The agent never acked: what was written to it.
    Written,
}

impl LagBasis {
    /// The name the report uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acked => "acked",
            Self::Written => "written",
        }
    }
}

/// How many agents are how far behind the head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LagBuckets {
    /// At the head.
    pub at_head: usize,
    /// 1 to [`NEAR_LAG`] revisions behind.
    pub behind_1_to_10: usize,
    /// More than [`NEAR_LAG`] revisions behind.
    pub behind_more: usize,
}

impl LagBuckets {
    /// Counts one agent `lag` revisions behind.
    pub fn count(&mut self, lag: u64) {
        match lag {
            0 => self.at_head += 1,
            1..=NEAR_LAG => self.behind_1_to_10 += 1,
            _ => self.behind_more += 1,
        }
    }

    /// Every agent counted.
    pub fn total(&self) -> usize {
        self.at_head + self.behind_1_to_10 + self.behind_more
    }
}

/// The fleet at one moment: bounded in size whatever the number of agents.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FleetReport {
    /// The head revision the lags are measured against.
    pub head: u64,
    /// Connected agents (registered once their catch-up is planned).
    pub agents: usize,
    /// Agents by lag.
    pub lag: LagBuckets,
    /// The longest any agent has been behind the head, in seconds (0 if all are at it).
    pub oldest_lag_seconds: f64,
    /// The slowest agents, slowest first: at most the `top` asked for and [`MAX_SLOWEST`].
    pub slowest: Vec<AgentRow>,
}

/// One agent in the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentRow {
    /// `Hello.node_name` (agent-supplied: escape it).
    pub node: String,
    /// `Hello.agent_id` (agent-supplied: escape it).
    pub agent_id: String,
    /// `Hello.agent_version` (agent-supplied: escape it).
    pub version: String,
    /// `native` or `tonic`.
    pub transport: &'static str,
    /// How the agent was caught up when it connected.
    pub resume_mode: &'static str,
    /// The revision the agent last acked, if it has acked.
    pub acked_revision: Option<u64>,
    /// The revision the lag is measured from.
    pub revision: u64,
    /// Whether `revision` comes from the agent's acks or from what was written to it.
    pub lag_basis: LagBasis,
    /// The head minus `revision`.
    pub lag_revisions: u64,
    /// How long the agent has been behind the head (0 at the head).
    pub lag_seconds: f64,
    /// Bytes of messages handed to the transport for it.
    pub bytes_sent: u64,
    /// When it connected (RFC 3339, UTC).
    pub connected_since: String,
    /// Seconds since it connected.
    pub connected_seconds: u64,
}
