//! The `fanout:`, `grpc:` and `watch:` sections of the config file: how the server serves
//! agents and watches the API. They are plain settings here; the modules that use them
//! (`fanout::FanoutConfig`, `grpc::GrpcConfig`, `k8s::watch::WatchConfig`) take their
//! defaults from these structs and check the rules that span fields
//! (`serve::ServeOptions::from_config`), so every value has one default and one rule.

use std::time::Duration;

use super::duration_text;

/// `fanout:`: what agents are sent and how long the server waits for them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FanoutSettings {
    /// Buckets per resource digest: a power of two from 1 to 65536.
    pub digest_buckets: u32,
    /// zstd level of frame payloads (1 to 22; higher is smaller and slower to encode).
    pub zstd_level: i32,
    /// The largest `ServerMessage` sent, announced in `Welcome.limits`; at least 64 KiB.
    pub max_message_bytes: u32,
    /// The largest `AgentMessage` (a Hello) accepted; also sets the transport's budget for
    /// incomplete Hellos (64 of this size).
    pub max_hello_bytes: u32,
    /// The most subscriptions one Hello may carry.
    pub max_subscriptions: u32,
    /// Messages are joined from pieces up to this size: 1 to `max_message_bytes`.
    pub target_message_bytes: usize,
    /// Uncompressed bytes per snapshot frame: 1 to half of `max_message_bytes`.
    pub snapshot_chunk_bytes: usize,
    /// How long an encoded snapshot keeps serving new agents once it is no longer the head.
    #[serde(with = "duration_text")]
    pub snapshot_reuse: Duration,
    /// How long a stream may take to send its Hello.
    #[serde(with = "duration_text")]
    pub hello_timeout: Duration,
    /// How long a new agent waits for the server's first sync before `UNAVAILABLE`.
    #[serde(with = "duration_text")]
    pub sync_wait_timeout: Duration,
    /// An idle stream gets a Heartbeat this often.
    #[serde(with = "duration_text")]
    pub heartbeat_interval: Duration,
    /// An agent that takes no message for this long is disconnected.
    #[serde(with = "duration_text")]
    pub write_timeout: Duration,
    /// After SIGTERM, agents are shed evenly over this long; shorter than `--shutdown-grace`.
    #[serde(with = "duration_text")]
    pub drain_period: Duration,
    /// A fixed connection target: agents this replica takes before it sends new ones to
    /// other ready replicas. 0: computed from `agents_per_node`, or none.
    pub max_agents: u32,
    /// Agents expected per node (one per agent DaemonSet): with the nodes in the store and the
    /// ready replicas, the computed connection target. 0 (the default): none. 0 to 64.
    pub agents_per_node: u32,
    /// Headroom of a computed target over an even share of the nodes, in percent: 0 to 1000.
    pub target_slack_percent: u32,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        Self {
            digest_buckets: cattail_proto::DEFAULT_DIGEST_BUCKETS,
            zstd_level: cattail_proto::frame::DEFAULT_ZSTD_LEVEL,
            max_message_bytes: cattail_proto::DEFAULT_MAX_MESSAGE_BYTES,
            max_hello_bytes: cattail_proto::DEFAULT_MAX_HELLO_BYTES,
            max_subscriptions: cattail_proto::DEFAULT_MAX_SUBSCRIPTIONS,
            target_message_bytes: 64 * 1024,
            snapshot_chunk_bytes: 256 * 1024,
            snapshot_reuse: Duration::from_secs(5),
            hello_timeout: cattail_proto::DEFAULT_HELLO_TIMEOUT,
            sync_wait_timeout: Duration::from_secs(20),
            heartbeat_interval: cattail_proto::DEFAULT_HEARTBEAT_INTERVAL,
            write_timeout: Duration::from_secs(30),
            drain_period: Duration::from_secs(20),
            max_agents: 0,
            agents_per_node: 0,
            target_slack_percent: 20,
        }
    }
}

/// `grpc:`: the HTTP/2 side of the gRPC port. The transport itself is the `--grpc-transport`
/// flag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Messages queued per agent between its sender and the transport: 1 to 64.
    pub queue: usize,
    /// HTTP/2 stream receive window, bytes: 65,535 to 2,147,483,647.
    pub initial_stream_window_bytes: u32,
    /// HTTP/2 connection receive window, bytes: 65,535 to 2,147,483,647.
    pub initial_connection_window_bytes: u32,
    /// How often to PING a connection to find dead peers; `off` disables it.
    #[serde(with = "optional_duration_text")]
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(with = "duration_text")]
    pub keepalive_timeout: Duration,
    /// Streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`): 1 to 1,000.
    pub max_concurrent_streams: u32,
    /// `TCP_NODELAY` on accepted sockets.
    pub tcp_nodelay: bool,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            queue: 1,
            initial_stream_window_bytes: 256 * 1024,
            initial_connection_window_bytes: 1024 * 1024,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 100,
            tcp_nodelay: true,
        }
    }
}

/// `watch:`: how each resource is listed and watched. Streaming lists are the
/// `--streaming-lists` flag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSettings {
    /// Page size of a paginated list (when streaming lists are off): 1 to 10,000.
    pub page_size: u32,
    /// How long to wait before retrying discovery that failed.
    #[serde(with = "duration_text")]
    pub discovery_retry: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            page_size: 500,
            discovery_retry: Duration::from_secs(5),
        }
    }
}

/// Serde for an optional duration: a duration like `30s`, or `off`.
mod optional_duration_text {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_text::serialize(d, s),
            None => s.serialize_str("off"),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        if text == "off" {
            return Ok(None);
        }
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}): write it like `30s`, or `off`"
            ))
        })
    }
}
