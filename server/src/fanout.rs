//! The fan-out: published batches become shared, pre-encoded frames, and one cheap
//! [`AgentSender`] per agent streams them.
//!
//! [`Hub`] is the small, cheap-to-clone type the gRPC edge uses to reach the state. The single
//! writer calls [`Hub::publish`] after each commit: the batch is encoded and compressed once per
//! (resource, scope), appended to a bounded log, folded into the per-resource digests, and the
//! senders of the (resource, scope) topics it touched are woken (`topics`): a pod change on one
//! node wakes that node's agent, not every agent. Nothing per agent happens there.
//! Staleness: an agent sees a batch once its sender next runs; a lagging agent gets the batches
//! coalesced, or a resync once it has fallen off the log. Memory per agent is one message.

mod admission;
mod batch;
mod blocking;
mod catchup;
mod digests;
mod drain;
mod encode;
mod fleet;
mod hello;
mod hub;
mod log;
mod message;
mod metrics;
mod peer;
mod resources;
mod resume;
mod sender;
mod snapshot;
mod sync;
mod target;
#[cfg(test)]
mod tests;
mod topics;

use std::time::Duration;

use crate::config::FanoutSettings;

pub use admission::{Admission, AdmissionFuture, AdmissionRequest, Refusal, RequestedSubscription};
pub use drain::{MIN_SHED_INTERVAL, ShedSchedule};
pub use fleet::{AgentInfo, AgentRow, FleetReport, LagBasis, LagBuckets, MAX_SLOWEST, NEAR_LAG};
pub use hub::{Hub, HubStats};
pub use log::{Log, LogEntry, LogItem, LogLimits};
pub use message::OutgoingMessage;
pub use metrics::describe_metrics;
pub use peer::{Authorization, MAX_AUTHORIZATION_BYTES, Peer, PeerCertificate};
pub use resources::ResourceInfo;
pub use sender::{AgentSender, InboundError, Outbound, Outgoing};
pub use sync::SyncStatus;
pub use target::agent_target;

/// Why an agent's stream ended, or why a hub operation failed. The gRPC edge turns each into a
/// `tonic::Status` in one function (`grpc::status`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Hello arrived within the Hello deadline.
    #[error("no Hello within {0:?} of opening the stream; send the Hello at once")]
    HelloTimeout(Duration),
    /// The stream ended, or its first message was something else, before a Hello.
    #[error("the first message of a stream must be a Hello; {0}")]
    NotHello(&'static str),
    /// A second Hello on a stream that has one.
    #[error("a second Hello on the same stream; send the Hello once, then only Acks")]
    SecondHello,
    /// The Hello breaks a protocol rule, names a resource the server does not serve, or is
    /// over the protocol version this server speaks.
    #[error(transparent)]
    Hello(#[from] cattail_proto::Error),
    /// The encoded Hello is over `max_hello_bytes`.
    #[error(
        "the Hello is {size} bytes, more than this server's limit of {limit}; send fewer \
         digests or subscriptions"
    )]
    HelloTooLarge {
        /// The encoded size.
        size: usize,
        /// `FanoutConfig::max_hello_bytes`.
        limit: u32,
    },
    /// An agent message is over the size the server accepts.
    #[error("{0}; send smaller messages")]
    MessageTooLarge(String),
    /// An agent message could not be decoded.
    #[error("a malformed AgentMessage: {0}")]
    Malformed(String),
    /// The server has not finished its first list of every resource.
    #[error(
        "the server is not yet in sync with the Kubernetes API after waiting {0:?}; \
         reconnect, preferably to another replica"
    )]
    NotInSync(Duration),
    /// Admission found no valid credentials (`auth`): none sent, malformed, or refused by
    /// the Kubernetes API.
    #[error("{0}")]
    Unauthenticated(String),
    /// Admission found valid credentials that may not have what the Hello asks for.
    #[error("{0}")]
    PermissionDenied(String),
    /// Admission could not check the credentials now (the Kubernetes API failed).
    #[error("{0}")]
    AuthUnavailable(String),
    /// The server is shutting down, without a drain (a critical task failed, or a test).
    #[error("server shutting down; reconnect to another replica with a Resume")]
    ShuttingDown,
    /// The server is draining: this agent was shed, or is refused. The field is the other
    /// ready replicas, `host:port` joined by commas (possibly empty).
    #[error("server draining (shutting down); reconnect to another replica with a Resume{}", try_list(.0))]
    Draining(std::sync::Arc<str>),
    /// The replica is at its connection target and other replicas are ready.
    #[error(
        "this replica is at its target of {target} agents; connect to another replica{}",
        try_list(try_endpoints)
    )]
    OverTarget {
        /// The target.
        target: usize,
        /// The other ready replicas, `host:port` joined by commas.
        try_endpoints: std::sync::Arc<str>,
    },
    /// The agent did not take a message for the whole write timeout.
    #[error("the agent took no message for {0:?}; disconnected")]
    WriteTimeout(Duration),
    /// The agent went away (its stream or connection closed). Never reported to anyone.
    #[error("the agent went away")]
    AgentGone,
    /// Encoding a frame failed: a server bug.
    #[error("cannot encode a frame: {0}")]
    Encode(String),
    /// A background encoding task failed: a server bug.
    #[error("a snapshot encoding task failed: {0}")]
    Task(String),
}

/// `; try: a:1, b:2`, or nothing without replicas to try.
fn try_list(endpoints: &str) -> String {
    if endpoints.is_empty() {
        return String::new();
    }
    format!("; try: {}", endpoints.replace(',', ", "))
}

impl Error {
    /// The replicas this error sends the agent to (`host:port` joined by commas), if it is a
    /// refusal that names them: the `cattail-try-endpoints` trailer.
    pub fn try_endpoints(&self) -> Option<&str> {
        match self {
            Self::Draining(endpoints)
            | Self::OverTarget {
                try_endpoints: endpoints,
                ..
            } => Some(endpoints),
            _ => None,
        }
    }
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The fan-out's settings. Every field has a default; [`FanoutConfig::validate`] checks them,
/// and [`Hub::new`] replaces invalid values by their defaults (with a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutConfig {
    /// `Welcome.server_id`, usually the pod name.
    pub server_id: String,
    /// Bounds of the log of encoded batches (bytes, batches, age).
    pub log: LogLimits,
    /// Buckets per digest: a power of two from 1 to 65536.
    pub digest_buckets: u32,
    /// zstd level for frames.
    pub zstd_level: i32,
    /// The largest `ServerMessage` sent (and advertised in `Limits`).
    pub max_message_bytes: u32,
    /// The largest encoded Hello accepted.
    pub max_hello_bytes: u32,
    /// The most subscriptions a Hello may carry.
    pub max_subscriptions: u32,
    /// Messages are joined from pieces (batches, snapshot frames) up to this size; a single
    /// piece or group that is bigger goes alone (up to `max_message_bytes`). The transport
    /// shares pieces without copying them, so this bounds how much one queued message keeps
    /// alive for a slow agent, and how long a resync holds back the next delta.
    pub target_message_bytes: usize,
    /// Uncompressed payload bytes per snapshot frame; a snapshot is split into such chunks.
    pub snapshot_chunk_bytes: usize,
    /// How long an encoded snapshot keeps serving new agents after its revision stopped being
    /// the head (they get the deltas since, from the log). Longer means fewer encodes in a
    /// connect storm under churn, and more deltas per new agent.
    pub snapshot_reuse: Duration,
    /// How long a stream waits for the Hello.
    pub hello_timeout: Duration,
    /// How long a new agent waits for the server to be in sync before `UNAVAILABLE`.
    pub sync_wait_timeout: Duration,
    /// An idle stream gets a Heartbeat after this long.
    pub heartbeat_interval: Duration,
    /// An agent that takes no message for this long is disconnected. A stream's sender runs
    /// only when HTTP/2 has room for it, so an agent stalled this long is told (and its stream
    /// ended) when it reads again; meanwhile it holds only its connection's buffers.
    pub write_timeout: Duration,
    /// How long a drain takes to shed every agent ([`Hub::drain`]); zero sheds them at once.
    pub drain_period: Duration,
    /// A fixed connection target (see `target`); 0 computes it from `agents_per_node`.
    pub max_agents: usize,
    /// Agents expected per node, for a computed target; 0: no computed target.
    pub agents_per_node: usize,
    /// Headroom of a computed target, in percent of an even share: 0 to 1000.
    pub target_slack_percent: u32,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        Self::from_settings(
            &FanoutSettings::default(),
            String::from("cattail"),
            LogLimits::default(),
        )
    }
}

impl FanoutConfig {
    /// The config file's `fanout:` section, with this replica's `server_id` and the log's
    /// limits (from `store:`).
    pub fn from_settings(settings: &FanoutSettings, server_id: String, log: LogLimits) -> Self {
        Self {
            server_id,
            log,
            digest_buckets: settings.digest_buckets,
            zstd_level: settings.zstd_level,
            max_message_bytes: settings.max_message_bytes,
            max_hello_bytes: settings.max_hello_bytes,
            max_subscriptions: settings.max_subscriptions,
            target_message_bytes: settings.target_message_bytes,
            snapshot_chunk_bytes: settings.snapshot_chunk_bytes,
            snapshot_reuse: settings.snapshot_reuse,
            hello_timeout: settings.hello_timeout,
            sync_wait_timeout: settings.sync_wait_timeout,
            heartbeat_interval: settings.heartbeat_interval,
            write_timeout: settings.write_timeout,
            drain_period: settings.drain_period,
            max_agents: settings.max_agents as usize,
            agents_per_node: settings.agents_per_node as usize,
            target_slack_percent: settings.target_slack_percent,
        }
    }
}

/// The smallest message limit the hub works with: room for a Welcome and a useful chunk.
const MIN_MESSAGE_BYTES: u32 = 64 * 1024;

impl FanoutConfig {
    /// Checks every field, naming the first bad one and what to use instead.
    ///
    /// # Errors
    /// A message for the operator, like `digest_buckets: 1000 is not a power of two ...`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        cattail_proto::digest::check_bucket_count(u64::from(self.digest_buckets))
            .map_err(|e| format!("digest_buckets: {e}"))?;
        if !(1..=22).contains(&self.zstd_level) {
            return Err(format!(
                "zstd_level: {} is not a zstd level: use 1 to 22",
                self.zstd_level
            ));
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(format!(
                "max_message_bytes: {} is below the minimum of {MIN_MESSAGE_BYTES}",
                self.max_message_bytes
            ));
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes > self.max_message_bytes as usize / 2
        {
            return Err(format!(
                "snapshot_chunk_bytes: {} must be from 1 to half of max_message_bytes ({})",
                self.snapshot_chunk_bytes,
                self.max_message_bytes / 2
            ));
        }
        if self.target_message_bytes == 0
            || self.target_message_bytes > self.max_message_bytes as usize
        {
            return Err(format!(
                "target_message_bytes: {} must be from 1 to max_message_bytes ({})",
                self.target_message_bytes, self.max_message_bytes
            ));
        }
        if self.agents_per_node > 64 {
            return Err(format!(
                "agents_per_node: {} is out of range: use 0 to 64",
                self.agents_per_node
            ));
        }
        if self.target_slack_percent > 1000 {
            return Err(format!(
                "target_slack_percent: {} is out of range: use 0 to 1000",
                self.target_slack_percent
            ));
        }
        let positive = [
            ("max_hello_bytes", self.max_hello_bytes == 0),
            ("max_subscriptions", self.max_subscriptions == 0),
            ("hello_timeout", self.hello_timeout.is_zero()),
            ("heartbeat_interval", self.heartbeat_interval.is_zero()),
            ("write_timeout", self.write_timeout.is_zero()),
            ("sync_wait_timeout", self.sync_wait_timeout.is_zero()),
        ];
        match positive.iter().find(|(_, zero)| *zero) {
            Some((field, _)) => Err(format!("{field}: must be greater than 0")),
            None => Ok(()),
        }
    }

    /// This config with every invalid field replaced by its default.
    fn sanitized(mut self) -> Self {
        let defaults = Self::default();
        if cattail_proto::digest::check_bucket_count(u64::from(self.digest_buckets)).is_err() {
            self.digest_buckets = defaults.digest_buckets;
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            self.max_message_bytes = defaults.max_message_bytes;
        }
        if self.snapshot_chunk_bytes == 0
            || self.snapshot_chunk_bytes > self.max_message_bytes as usize / 2
        {
            self.snapshot_chunk_bytes = (self.max_message_bytes as usize / 2)
                .min(defaults.snapshot_chunk_bytes)
                .max(1);
        }
        if self.target_message_bytes == 0
            || self.target_message_bytes > self.max_message_bytes as usize
        {
            self.target_message_bytes = defaults
                .target_message_bytes
                .min(self.max_message_bytes as usize);
        }
        if self.max_hello_bytes == 0 {
            self.max_hello_bytes = defaults.max_hello_bytes;
        }
        if self.max_subscriptions == 0 {
            self.max_subscriptions = defaults.max_subscriptions;
        }
        for (value, default) in [
            (&mut self.hello_timeout, defaults.hello_timeout),
            (&mut self.heartbeat_interval, defaults.heartbeat_interval),
            (&mut self.write_timeout, defaults.write_timeout),
        ] {
            if value.is_zero() {
                *value = default;
            }
        }
        self
    }

    /// The `Limits` this config puts in every `Welcome`.
    pub fn limits(&self) -> cattail_proto::pb::Limits {
        cattail_proto::pb::Limits {
            max_message_bytes: self.max_message_bytes,
            max_hello_bytes: self.max_hello_bytes,
            heartbeat_interval_ms: u32::try_from(self.heartbeat_interval.as_millis())
                .unwrap_or(u32::MAX),
            max_subscriptions: self.max_subscriptions,
        }
    }
}
