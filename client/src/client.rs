//! [`Client`]: where an agent gets its cache from, and how it behaves on the way.
//!
//! A client is configuration, cheap to clone, and opens nothing by itself: each watcher opens
//! its own stream. It is either a cattail client (a list of server endpoints) or a direct one
//! (a `kube::Client`, for clusters without a cattail server), behind the same watcher and store
//! API, so an agent switches between them by changing how it builds its `Client`.

use std::fmt;
use std::time::Duration;

use cattail_proto::DEFAULT_MAX_MESSAGE_BYTES;

use crate::connection::endpoints::normalise_endpoint;
use crate::connection::{
    self, Backoff, ClientTls, Error, EventStream, Result, Settings, TokenFile,
};
use crate::subscription::Subscription;

/// How long a TCP and HTTP/2 connect may take unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the agent waits for the server's first message unless configured: longer than a
/// server that is not yet in sync holds a new stream (20 s) before it answers `UNAVAILABLE`.
pub const DEFAULT_WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest time between two acks unless configured.
pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_millis(250);

/// Where an agent's cache comes from, and the settings of its streams.
///
/// ```
/// use cattail_client::Client;
/// let client = Client::new(["http://cattail.cattail-system:5473"])
///     .agent_id("agent-x7k2p")
///     .node_name("node-1");
/// assert!(!client.is_direct());
/// ```
#[derive(Clone)]
pub struct Client {
    /// What a connection to cattail needs; handed to it whole by [`Client::subscribe`].
    pub(crate) settings: Settings,
    /// Set in direct mode: watch the API server with kube-runtime instead.
    pub(crate) direct: Option<kube::Client>,
}

impl Default for Client {
    /// A cattail client with no endpoints yet, agent id `cattail-agent`, no node name, and the
    /// protocol's default limits.
    fn default() -> Self {
        Client {
            settings: Settings {
                endpoints: Vec::new(),
                agent_id: "cattail-agent".to_owned(),
                node_name: String::new(),
                agent_version: concat!("cattail-client/", env!("CARGO_PKG_VERSION")).to_owned(),
                backoff: Backoff::default(),
                max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES as usize,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                welcome_timeout: DEFAULT_WELCOME_TIMEOUT,
                ack_interval: DEFAULT_ACK_INTERVAL,
                tls: None,
                token: None,
            },
            direct: None,
        }
    }
}

impl Client {
    /// A cattail client for these server endpoints: URIs such as `http://10.0.0.5:5473`, or
    /// `host:port`, which means `http://host:port`.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::default().endpoints(endpoints)
    }

    /// A direct client: watchers use kube-runtime's watcher against the API server.
    #[must_use]
    pub fn direct(client: kube::Client) -> Self {
        Client {
            direct: Some(client),
            ..Client::default()
        }
    }

    /// Replaces the server endpoints. Each stream starts at a random one and rotates.
    #[must_use]
    pub fn endpoints<I, S>(mut self, endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.settings.endpoints = endpoints
            .into_iter()
            .map(|endpoint| normalise_endpoint(endpoint.as_ref()))
            .filter(|endpoint| endpoint != "http://")
            .collect();
        self
    }

    /// A stable id for this agent instance (usually its pod name), for the server's logs.
    #[must_use]
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> Self {
        self.settings.agent_id = agent_id.into();
        self
    }

    /// The node the agent runs on, required by node-scoped subscriptions.
    #[must_use]
    pub fn node_name(mut self, node_name: impl Into<String>) -> Self {
        self.settings.node_name = node_name.into();
        self
    }

    /// The agent's software name and version, for the server's logs.
    #[must_use]
    pub fn agent_version(mut self, agent_version: impl Into<String>) -> Self {
        self.settings.agent_version = agent_version.into();
        self
    }

    /// The reconnect backoff; 100 ms doubling to 30 s, with jitter, by default.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// The largest message (and decoded frame payload) accepted; 16 MiB by default, which is
    /// what servers send at most unless configured otherwise.
    #[must_use]
    pub fn max_message_bytes(mut self, max_message_bytes: usize) -> Self {
        self.settings.max_message_bytes = max_message_bytes;
        self
    }

    /// How long connecting to one endpoint may take.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long to wait for the server's first message; after it, a stream is considered dead
    /// after three heartbeat intervals without a message.
    #[must_use]
    pub fn welcome_timeout(mut self, timeout: Duration) -> Self {
        self.settings.welcome_timeout = timeout;
        self
    }

    /// The shortest time between two acks: acks are coalesced to at most one per interval.
    #[must_use]
    pub fn ack_interval(mut self, interval: Duration) -> Self {
        self.settings.ack_interval = interval;
        self
    }

    /// TLS for `https://` endpoints: the CA bundle that verifies the server (required for
    /// them), an optional client certificate and a server name.
    #[must_use]
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.settings.tls = Some(tls);
        self
    }

    /// A bearer token sent as `authorization: Bearer <token>` on every stream, read from its
    /// file again before every (re)connect, so a token that kubelet rotates is picked up.
    #[must_use]
    pub fn token_file(mut self, token: TokenFile) -> Self {
        self.settings.token = Some(token);
        self
    }

    /// True for a direct client, which watches the API server itself.
    #[must_use]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The configured server endpoints, as URIs.
    #[must_use]
    pub fn endpoint_list(&self) -> &[String] {
        &self.settings.endpoints
    }

    /// Opens one cattail stream for several subscriptions and returns its events, tagged with
    /// their resource. Every subscription must name its resource explicitly.
    ///
    /// Must be called within a Tokio runtime: it spawns the connection task.
    ///
    /// # Errors
    /// A fatal [`Error`]: a direct client, no or invalid endpoints, a subscription without a
    /// resource, or subscriptions that cannot make a valid `Hello`.
    pub fn subscribe(&self, subscriptions: &[Subscription]) -> Result<EventStream> {
        if self.is_direct() {
            return Err(Error::DirectClient);
        }
        connection::open(self.settings.clone(), subscriptions)
    }
}

impl From<kube::Client> for Client {
    fn from(client: kube::Client) -> Self {
        Client::direct(client)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.settings.endpoints)
            .field("agent_id", &self.settings.agent_id)
            .field("node_name", &self.settings.node_name)
            .field("backoff", &self.settings.backoff)
            .field("max_message_bytes", &self.settings.max_message_bytes)
            .field("tls", &self.settings.tls.is_some())
            .field(
                "token_file",
                &self.settings.token.as_ref().map(TokenFile::path),
            )
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_methods_set_what_they_say() {
        let client = Client::new(["a:1", "https://b:2", ""])
            .agent_id("pod-1")
            .node_name("node-1")
            .max_message_bytes(1024)
            .backoff(Backoff::default().initial(Duration::from_millis(5)));
        assert_eq!(client.endpoint_list(), ["http://a:1", "https://b:2"]);
        assert_eq!(client.settings.agent_id, "pod-1");
        assert_eq!(client.settings.node_name, "node-1");
        assert_eq!(client.settings.max_message_bytes, 1024);
        assert_eq!(client.settings.backoff.initial, Duration::from_millis(5));
        assert!(!client.is_direct());
        assert!(format!("{client:?}").contains("pod-1"));
    }

    #[test]
    fn an_https_endpoint_without_a_ca_bundle_is_refused_at_once() {
        let subscriptions = [Subscription::for_resource("v1/pods").unwrap()];
        let error = Client::new(["https://cattail:5473"])
            .subscribe(&subscriptions)
            .err()
            .unwrap();
        assert!(matches!(error, Error::TlsWithoutCa { .. }), "{error}");
        assert!(error.is_fatal());
        assert!(error.to_string().contains("--tls-ca-file"), "{error}");
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let client = Client::default();
        assert_eq!(client.settings.max_message_bytes, 16 << 20);
        assert!(client.settings.endpoints.is_empty());
        assert!(client.settings.agent_version.starts_with("cattail-client/"));
    }

    #[test]
    fn the_welcome_timeout_outlasts_a_server_that_waits_for_sync() {
        // A replica that is not in sync holds a new stream this long, then answers
        // UNAVAILABLE: the agent must still be listening to hear why.
        let server_wait = cattail_server::fanout::FanoutConfig::default().sync_wait_timeout;
        assert!(
            Client::default().settings.welcome_timeout >= server_wait + Duration::from_secs(5),
            "welcome timeout {:?}, server's sync wait {server_wait:?}",
            Client::default().settings.welcome_timeout
        );
    }
}
