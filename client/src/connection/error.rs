//! The connection's error type. Most errors end one stream and are followed by a reconnect;
//! [`Error::is_fatal`] says which ones end the event stream for good.

use std::time::Duration;

/// A `Result` whose error is the connection's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a stream to a cattail server ended, or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client has no endpoints. Fatal.
    #[error("no cattail server endpoints configured; give at least one, e.g. http://cattail:5473")]
    NoEndpoints,

    /// The client is a direct client, which has no cattail stream. Fatal.
    #[error("this client watches the API server directly; use a watcher, not a cattail stream")]
    DirectClient,

    /// An endpoint is not a valid URI. Fatal.
    #[error("invalid endpoint {endpoint:?}: {source}; write it as http://host:port")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What the URI parser said.
        source: tonic::transport::Error,
    },

    /// The subscriptions or identity cannot make a valid `Hello`. Fatal.
    #[error("invalid agent configuration: {0}")]
    Config(#[source] crate::session::Error),

    /// A subscription has no resource, and the stream has no type to take it from. Fatal.
    #[error("a subscription has no resource; set one with Subscription::for_resource")]
    MissingResource,

    /// A credential file cannot be used. Fatal when the client is built; when the token file
    /// fails at a reconnect (kubelet rewriting it), the next reconnect reads it again.
    #[error("cannot use the {what} {path}: {reason}")]
    Credentials {
        /// Which file, like `token file`.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An `https://` endpoint with no CA bundle to verify the server with. Fatal.
    #[error(
        "{endpoint} uses TLS but no CA bundle is set: give one with ClientTls::ca_file \
         (cattail-agent --tls-ca-file)"
    )]
    TlsWithoutCa {
        /// The endpoint.
        endpoint: String,
    },

    /// Connecting to an endpoint failed (TCP, TLS or HTTP/2); the message carries every cause,
    /// like a certificate the CA bundle does not verify.
    #[error("cannot connect to {endpoint}: {}", causes(source))]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        source: tonic::transport::Error,
    },

    /// The server refused the stream or ended it with a status.
    #[error("{endpoint} ended the stream: {code:?}: {message}{causes}", code = status.code(), message = status.message(), causes = status_causes(status))]
    Status {
        /// The endpoint.
        endpoint: String,
        /// The gRPC status.
        status: tonic::Status,
    },

    /// The server ended the stream without a status.
    #[error("{endpoint} closed the stream")]
    Closed {
        /// The endpoint.
        endpoint: String,
    },

    /// Nothing arrived for too long: no Welcome, or no message in three heartbeat intervals.
    #[error("{endpoint} sent nothing for {idle:?}; treating the stream as dead")]
    Idle {
        /// The endpoint.
        endpoint: String,
        /// How long the stream was silent.
        idle: Duration,
    },

    /// The server sent something the session cannot follow.
    #[error("{endpoint} broke the protocol: {source}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What the session refused.
        source: crate::session::Error,
    },
}

impl Error {
    /// True when the event stream ends after this error: the configuration cannot work.
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::NoEndpoints
                | Error::DirectClient
                | Error::InvalidEndpoint { .. }
                | Error::Config(_)
                | Error::MissingResource
                | Error::TlsWithoutCa { .. }
        )
    }

    /// True when the server refused this agent's `Hello` as malformed or for a protocol version
    /// it does not speak: retrying the same configuration will not help.
    #[must_use]
    pub fn is_refused_hello(&self) -> bool {
        matches!(
            self,
            Error::Status { status, .. }
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                )
        )
    }

    /// True when the server is over its agent target (or the Hello too large): another
    /// replica should be tried at once.
    #[must_use]
    pub fn is_overloaded(&self) -> bool {
        matches!(
            self,
            Error::Status { status, .. } if status.code() == tonic::Code::ResourceExhausted
        )
    }
}

/// An error and its sources, joined with `: `, skipping a source whose text its parent holds.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What lies under a status the client's transport made (a connection reset, say), as
/// `: cause: cause`; empty for a status the server sent.
fn status_causes(status: &tonic::Status) -> String {
    let Some(source) = std::error::Error::source(status) else {
        return String::new();
    };
    let text = causes(source);
    // tonic's message for a transport failure is its source's first line.
    match text.strip_prefix(status.message()) {
        Some("") => String::new(),
        Some(rest) if rest.starts_with(": ") => rest.to_owned(),
        _ => format!(": {text}"),
    }
}
