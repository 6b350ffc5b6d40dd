//! The session's error type: a configuration it cannot start with, or a server message it
//! cannot follow. Every message error leaves the session unchanged and means "end this stream
//! and reconnect"; the text names what the server did wrong.

use cattail_proto::Revision;

/// A `Result` whose error is the session's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a session cannot start, or cannot apply a server message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has no subscription.
    #[error("no subscriptions: subscribe to at least one resource")]
    NoSubscriptions,

    /// The configuration subscribes to one resource twice.
    #[error("{resource} is subscribed twice; subscribe to each resource once")]
    DuplicateSubscription {
        /// The resource.
        resource: String,
    },

    /// A node-scoped subscription needs the agent's node name.
    #[error("{resource} is node scoped but no node name is set; set the client's node name")]
    NodeNameRequired {
        /// The resource.
        resource: String,
    },

    /// The first message of a stream has no `Welcome`.
    #[error("the server's first message has no welcome; the server is not speaking cattail.v1")]
    MissingWelcome,

    /// A `Welcome` arrived after the first message.
    #[error("the server sent a second welcome on one stream")]
    UnexpectedWelcome,

    /// The server speaks another protocol version.
    #[error("the server speaks protocol version {got}, this agent speaks 1; upgrade one of them")]
    UnsupportedProtocolVersion {
        /// `Welcome.protocol_version`.
        got: u32,
    },

    /// The `Welcome` epoch is not 16 bytes.
    #[error("the server's welcome has an invalid epoch: {0}")]
    InvalidEpoch(#[source] cattail_proto::Error),

    /// The `Welcome` resume mode is unspecified or unknown.
    #[error("the server's welcome has resume mode {0}, which this agent does not know")]
    InvalidResumeMode(i32),

    /// The server chose deltas although the agent did not resume from that server's epoch.
    #[error(
        "the server (epoch {server_epoch}) offered deltas, but this agent did not resume from \
         that epoch; the server is broken"
    )]
    DeltasWithoutResume {
        /// The server's epoch, in hex.
        server_epoch: String,
    },

    /// A subscribed resource is missing from the `Welcome`.
    #[error("the server does not serve {resource}; it serves: {served}")]
    NotServed {
        /// The subscribed resource.
        resource: String,
        /// What the server does serve, comma-separated.
        served: String,
    },

    /// A served resource has an invalid digest bucket count.
    #[error("the server's digest bucket count for {resource} is invalid: {source}")]
    InvalidBucketCount {
        /// The resource.
        resource: String,
        /// The check that failed.
        source: cattail_proto::Error,
    },

    /// A frame names a resource the agent did not subscribe to.
    #[error("the server sent a frame for {resource}, which this agent did not subscribe to")]
    UnsubscribedFrame {
        /// `Frame.resource`.
        resource: String,
    },

    /// A frame's scope is not the subscription's.
    #[error("the server sent a frame for {resource} with scope {got:?}, expected {expected:?}")]
    ScopeMismatch {
        /// `Frame.resource`.
        resource: String,
        /// The subscription's scope: the node name, or empty.
        expected: String,
        /// `Frame.scope`.
        got: String,
    },

    /// A frame's payload cannot be decoded within the limits.
    #[error("undecodable frame for {resource} at revision {revision}: {source}")]
    BadFrame {
        /// `Frame.resource`.
        resource: String,
        /// `Frame.revision`.
        revision: Revision,
        /// What decoding reported.
        source: cattail_proto::Error,
    },

    /// A replace frame names a bucket beyond the digest's bucket count.
    #[error("a replace frame for {resource} names bucket {bucket} of only {bucket_count}")]
    BucketOutOfRange {
        /// `Frame.resource`.
        resource: String,
        /// The bucket.
        bucket: u32,
        /// The server's `digest_buckets` for the resource.
        bucket_count: u32,
    },

    /// A delta frame arrived inside a resync.
    #[error("a delta frame for {resource} at revision {revision} arrived inside a resync")]
    DeltaDuringResync {
        /// `Frame.resource`.
        resource: String,
        /// `Frame.revision`.
        revision: Revision,
    },

    /// A delta frame arrived before the first `Synced` of a snapshot or digest catch-up.
    #[error(
        "a delta frame for {resource} at revision {revision} arrived before the catch-up's \
         Synced"
    )]
    DeltaBeforeSynced {
        /// `Frame.resource`.
        resource: String,
        /// `Frame.revision`.
        revision: Revision,
    },

    /// A delta frame's revision is not past the complete revision or an earlier delta.
    #[error("a delta frame for {resource} has revision {revision}, not past {floor}")]
    RevisionWentBack {
        /// `Frame.resource`.
        resource: String,
        /// `Frame.revision`.
        revision: Revision,
        /// The revision it should have exceeded.
        floor: Revision,
    },
}
