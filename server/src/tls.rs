//! TLS on the gRPC port, for both transports: TLS 1.3 only, ALPN `h2`, rustls with the ring
//! provider.
//!
//! [`ServerTls`] is loaded once from the `tls:` settings and shared by every connection. The
//! accept loop asks it to [`ServerTls::admit`] a socket (never waiting: over
//! `max_handshakes` in flight the socket is closed at once and counted), then the connection's
//! own task runs the handshake under `handshake_timeout`. A verified client certificate's names
//! come out as a [`PeerCertificate`] for admission. The certificate files are re-read every
//! `reload_interval` ([`ServerTls::run_reloader`]): new connections get a new certificate,
//! open streams keep theirs. Every refusal is counted in `cattail_auth_failures_total{reason}`.

mod failures;
mod files;
mod identity;
mod resolver;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;
use crate::fanout::PeerCertificate;

pub(crate) use failures::Failure;
use failures::FailureLog;
use resolver::CertificateFiles;

/// Connections and calls refused for who they are, by `reason`. The TLS reasons are
/// [`Failure::reason`]'s; admission adds its own to the same counter.
pub const AUTH_FAILURES: &str = "cattail_auth_failures_total";
/// The one ALPN protocol offered.
const ALPN_H2: &[u8] = b"h2";

/// Why TLS could not be set up. Every message names the file and says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No certificate is configured.
    #[error(
        "no TLS certificate for the gRPC port: pass --tls-cert-file and --tls-key-file (or set \
         tls.cert_file and tls.key_file in the config file), or pass --insecure-plaintext to \
         serve agents without TLS"
    )]
    NoCertificate,
    /// Both a certificate and `--insecure-plaintext` were given.
    #[error(
        "both a TLS certificate (--tls-cert-file or tls.cert_file) and --insecure-plaintext \
         are set: drop --insecure-plaintext to serve TLS, or the certificate to serve plaintext"
    )]
    PlaintextAndCertificate,
    /// A file could not be read.
    #[error("cannot read the TLS {what} {path}: {source}; check the path and its permissions")]
    Read {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("the TLS {what} {path} is not valid PEM: {source}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: rustls_pki_types::pem::Error,
    },
    /// A file holds no PEM section of the kind needed.
    #[error("the TLS {what} {path} holds no PEM `{expected}` section; give a PEM file")]
    NoPem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The section expected, like `CERTIFICATE`.
        expected: &'static str,
    },
    /// The key cannot be used, or does not belong to the certificate.
    #[error(
        "the TLS key {key} cannot be used with the certificate {cert}: {source}; give the \
         private key of that certificate (RSA, ECDSA P-256/P-384 or Ed25519)"
    )]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client CA bundle cannot be used.
    #[error("the TLS client CA file {path} cannot be used: {reason}; give PEM CA certificates")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Describes the TLS and authentication metrics to the installed recorder. Idempotent.
pub fn describe_metrics() {
    describe_counter!(
        AUTH_FAILURES,
        "Connections and calls refused for who they are, by reason: tls_handshake (not TLS 1.3 \
         with ALPN h2), tls_client_certificate (a client certificate that does not verify, or \
         none where one is required), tls_handshake_timeout, tls_handshakes_full (too many \
         handshakes in flight), and the admission reasons."
    );
    describe_counter!(
        resolver::RELOADS,
        "Times a changed server certificate was loaded."
    );
    describe_counter!(
        resolver::RELOAD_ERRORS,
        "Times changed server certificate files did not load (the old certificate stays)."
    );
    describe_gauge!(
        resolver::EXPIRY,
        "When the served TLS certificate expires, in seconds since the Unix epoch."
    );
}

/// TLS for the gRPC port: the rustls configuration, the reloading certificate and the limits.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

/// What every clone of a [`ServerTls`] shares.
struct Inner {
    /// rustls' server configuration, whose certificate comes from `certificate`.
    acceptor: TlsAcceptor,
    /// The certificate files and the key pair loaded from them.
    certificate: Arc<CertificateFiles>,
    /// One permit per handshake in flight (`tls.max_handshakes`).
    handshakes: Arc<Semaphore>,
    /// `tls.handshake_timeout`.
    handshake_timeout: Duration,
    /// `tls.reload_interval`.
    reload_interval: Duration,
    /// Counts and logs refusals.
    failures: FailureLog,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificate", &self.certificate)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("reload_interval", &self.reload_interval)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// What the gRPC port serves: TLS when `config` names a certificate, plaintext (`None`,
    /// with a warning logged) only when `insecure_plaintext` asks for it.
    ///
    /// # Errors
    /// [`Error::NoCertificate`] with neither, [`Error::PlaintextAndCertificate`] with both, or
    /// what [`Self::load`] found wrong.
    pub fn from_settings(config: &TlsConfig, insecure_plaintext: bool) -> Result<Option<Self>> {
        match (config.is_enabled(), insecure_plaintext) {
            (true, false) => Self::load(config).map(Some),
            (true, true) => Err(Error::PlaintextAndCertificate),
            (false, true) => {
                tracing::warn!(
                    "serving the gRPC port WITHOUT TLS (--insecure-plaintext): anyone who can \
                     reach it can read the cluster's projected state; pass --tls-cert-file and \
                     --tls-key-file in production"
                );
                Ok(None)
            }
            (false, false) => Err(Error::NoCertificate),
        }
    }

    /// Reads the certificate, key and client CA files of `config` and builds the server
    /// configuration.
    ///
    /// # Errors
    /// [`Error::NoCertificate`] without `cert_file`; otherwise the first file that cannot be
    /// read or used, by name.
    pub fn load(config: &TlsConfig) -> Result<Self> {
        describe_metrics();
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Err(Error::NoCertificate);
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(CertificateFiles::load(
            cert_file.clone(),
            key_file.clone(),
            provider.clone(),
        )?);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match &config.client_ca_file {
            Some(path) => {
                let roots = files::client_roots(path)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = if config.client_certificate_required() {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier.build().map_err(|e| Error::ClientCa {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(certificate.clone());
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        // Agents reconnect rarely and each holds one long connection: session resumption
        // would buy little and cost a ticket per connection, so none are sent.
        server.send_tls13_tickets = 0;
        Ok(Self {
            inner: Arc::new(Inner {
                acceptor: TlsAcceptor::from(Arc::new(server)),
                certificate,
                handshakes: Arc::new(Semaphore::new(config.max_handshakes)),
                handshake_timeout: config.handshake_timeout,
                reload_interval: config.reload_interval,
                failures: FailureLog::default(),
            }),
        })
    }

    /// Re-reads the certificate files every `reload_interval` until `shutdown`.
    pub async fn run_reloader(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.inner.reload_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let certificate = self.inner.certificate.clone();
            // File reads are blocking; they are small and rare.
            if let Err(error) = tokio::task::spawn_blocking(move || certificate.reload()).await {
                tracing::error!(%error, "the TLS certificate reload failed");
            }
        }
    }

    /// Admits `peer` to a handshake if fewer than `max_handshakes` are in flight; otherwise
    /// counts and logs the refusal, and the caller closes the socket. Never waits.
    pub fn admit(&self, peer: SocketAddr) -> Option<Handshake> {
        match self.inner.handshakes.clone().try_acquire_owned() {
            Ok(permit) => Some(Handshake {
                tls: self.clone(),
                peer,
                _permit: permit,
            }),
            Err(_) => {
                self.inner.failures.record(
                    Failure::Full,
                    peer,
                    &"too many TLS handshakes in flight (tls.max_handshakes); closed at once",
                );
                None
            }
        }
    }
}

/// One admitted handshake; holds its place among the handshakes in flight until it ends.
#[derive(Debug)]
pub struct Handshake {
    /// The shared TLS state.
    tls: ServerTls,
    /// The client, for the log.
    peer: SocketAddr,
    /// This handshake's place among those in flight, given back when it is dropped.
    _permit: OwnedSemaphorePermit,
}

/// A connection that finished its handshake.
#[derive(Debug)]
pub struct Accepted {
    /// The TLS stream.
    pub stream: TlsStream<TcpStream>,
    /// The verified client certificate's names, if the client sent one.
    pub certificate: Option<Arc<PeerCertificate>>,
}

impl Handshake {
    /// Runs the handshake on `socket` within the handshake timeout. A failure is counted and
    /// logged here, and `None` returned: the socket is closed when dropped.
    pub async fn accept(self, socket: TcpStream) -> Option<Accepted> {
        let inner = &self.tls.inner;
        let accepting = inner.acceptor.accept(socket);
        let stream = match tokio::time::timeout(inner.handshake_timeout, accepting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let failure = match error
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                {
                    Some(
                        rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented,
                    ) => Failure::ClientCertificate,
                    _ => Failure::Handshake,
                };
                inner.failures.record(failure, self.peer, &error);
                return None;
            }
            Err(_elapsed) => {
                inner.failures.record(
                    Failure::Timeout,
                    self.peer,
                    &format_args!(
                        "the TLS handshake did not finish within {:?} (tls.handshake_timeout)",
                        inner.handshake_timeout
                    ),
                );
                return None;
            }
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| identity::peer_certificate(leaf));
        Some(Accepted {
            stream,
            certificate,
        })
    }
}
