//! [`Peer`]: what the transport knows about who opened a stream, for admission with the Hello.
//!
//! Both transports build one per Watch call: the remote address, the client certificate the
//! TLS handshake verified (if any), and the `authorization` metadata as sent. The sender keeps
//! it only until the Hello has been admitted.

use std::net::SocketAddr;
use std::sync::Arc;

/// The longest `authorization` value kept; a longer one is treated as garbage by admission.
/// A projected ServiceAccount token is 1 to 2 KiB.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// Who is calling, as far as the transport can tell.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The remote address, if the transport knows it.
    pub address: Option<SocketAddr>,
    /// The client certificate the TLS handshake verified against the client CA bundle.
    pub certificate: Option<Arc<PeerCertificate>>,
    /// The `authorization` metadata, as sent (at most [`MAX_AUTHORIZATION_BYTES`]; longer
    /// values are kept as [`Authorization::TooLong`]).
    pub authorization: Option<Authorization>,
    /// The transport serving the stream (`native` or `tonic`), for the fleet view.
    pub transport: &'static str,
}

/// The `authorization` metadata of a call.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The value, as sent.
    Value(String),
    /// Not valid UTF-8, or over [`MAX_AUTHORIZATION_BYTES`]: never looked at further.
    Invalid,
}

impl Authorization {
    /// Keeps a header value, or marks it invalid.
    pub fn from_bytes(value: &[u8]) -> Self {
        if value.len() > MAX_AUTHORIZATION_BYTES {
            return Self::Invalid;
        }
        std::str::from_utf8(value).map_or(Self::Invalid, |text| Self::Value(text.to_owned()))
    }
}

impl std::fmt::Debug for Authorization {
    // Credentials never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(value) => write!(f, "Value(<{} bytes>)", value.len()),
            Self::Invalid => f.write_str("Invalid"),
        }
    }
}

/// The names a verified client certificate carries, as allowlists match them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
    /// URI subject alternative names (SPIFFE IDs and the like).
    pub uri_sans: Vec<String>,
    /// DNS subject alternative names.
    pub dns_sans: Vec<String>,
}
