//! Counting and logging refused TLS connections: every refusal adds to
//! `cattail_auth_failures_total{reason}`, and says why in one log line.
//!
//! A flood (a thousand clients that never finish their handshake) must not flood the log, so
//! the line is at `warn` for the first refusal of a reason in each second, carrying how many of
//! that reason were refused since the last `warn`, and at `debug` for the others.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Connections refused before or during the TLS handshake, by why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not a TLS 1.3 handshake with ALPN `h2` (a plaintext client, an old TLS version).
    Handshake,
    /// A client certificate that does not verify (unknown CA, expired), or none where one is
    /// required.
    ClientCertificate,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    /// Too many handshakes were in flight: the connection was closed at once.
    Full,
}

impl Failure {
    const ALL: [Self; 4] = [
        Self::Handshake,
        Self::ClientCertificate,
        Self::Timeout,
        Self::Full,
    ];

    /// The `reason` label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Handshake => "tls_handshake",
            Self::ClientCertificate => "tls_client_certificate",
            Self::Timeout => "tls_handshake_timeout",
            Self::Full => "tls_handshakes_full",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|f| *f == self)
            .unwrap_or_default()
    }
}

/// Per reason: the second of the last `warn` line, and refusals since.
#[derive(Debug)]
pub(super) struct FailureLog {
    start: Instant,
    last_warned: [AtomicU64; 4],
    since_warned: [AtomicU64; 4],
}

impl Default for FailureLog {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            last_warned: Default::default(),
            since_warned: Default::default(),
        }
    }
}

impl FailureLog {
    /// Counts one refusal and logs it.
    pub(super) fn record(&self, failure: Failure, peer: SocketAddr, why: &dyn std::fmt::Display) {
        metrics::counter!(super::AUTH_FAILURES, "reason" => failure.reason()).increment(1);
        let i = failure.index();
        // Second 1 is the first: 0 means "never warned".
        let second = self.start.elapsed().as_secs() + 1;
        let last = self.last_warned[i].load(Ordering::Relaxed);
        let warn = last != second
            && self.last_warned[i]
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if warn {
            let refused = self.since_warned[i].swap(0, Ordering::Relaxed) + 1;
            tracing::warn!(
                %peer,
                reason = failure.reason(),
                refused_since_last_line = refused,
                error = %why,
                "refused a connection at TLS"
            );
        } else {
            self.since_warned[i].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, reason = failure.reason(), error = %why, "refused a connection at TLS");
        }
    }
}
