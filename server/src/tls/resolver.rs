//! [`CertificateFiles`]: the server certificate as rustls resolves it, re-read when its files
//! change.
//!
//! Each handshake takes the current `CertifiedKey` (one read lock and an `Arc` clone); a reload
//! swaps it, so new connections get the new certificate while open ones keep the keys they
//! negotiated. A change whose files do not load (half-written, or a key that does not fit the
//! certificate) keeps the old certificate, is logged once and counted; the next change is tried
//! again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{Result, files, identity};

/// Successful reloads of the server certificate.
pub(super) const RELOADS: &str = "cattail_tls_certificate_reloads_total";
/// Changed certificate files that could not be loaded.
pub(super) const RELOAD_ERRORS: &str = "cattail_tls_certificate_reload_errors_total";
/// The served certificate's expiry.
pub(super) const EXPIRY: &str = "cattail_tls_certificate_expiry_timestamp_seconds";

/// The contents last read from the two files.
type Contents = (Vec<u8>, Vec<u8>);

/// The server's certificate files and the key pair loaded from them.
#[derive(Debug)]
pub(super) struct CertificateFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// What the files held when last read, loaded or not: a change is what differs from it.
    seen: Mutex<Contents>,
}

impl CertificateFiles {
    /// Reads both files; at start-up an error here is the caller's to report.
    pub(super) fn load(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self> {
        let contents = (
            files::read("certificate file", &cert_file)?,
            files::read("key file", &key_file)?,
        );
        let key = files::certified_key(
            &provider,
            (&cert_file, &contents.0),
            (&key_file, &contents.1),
        )?;
        record_expiry(&key);
        Ok(Self {
            cert_file,
            key_file,
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(contents),
        })
    }

    /// The key pair new handshakes get.
    pub(super) fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the files and, if they changed, loads and swaps in the new key pair. Returns
    /// whether a new one is in use.
    pub(super) fn reload(&self) -> bool {
        let read = files::read("certificate file", &self.cert_file)
            .and_then(|cert| Ok((cert, files::read("key file", &self.key_file)?)));
        let contents = match read {
            Ok(contents) => contents,
            Err(error) => {
                // A file missing for a moment (a Secret being rewritten) is retried next time.
                tracing::warn!(%error, "cannot read the TLS certificate files; keeping the current certificate");
                return false;
            }
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == contents {
            return false;
        }
        let loaded = files::certified_key(
            &self.provider,
            (&self.cert_file, &contents.0),
            (&self.key_file, &contents.1),
        );
        *seen = contents;
        match loaded {
            Ok(key) => {
                record_expiry(&key);
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                metrics::counter!(RELOADS).increment(1);
                tracing::info!(cert_file = %self.cert_file.display(), "loaded a new TLS certificate; new connections use it");
                true
            }
            Err(error) => {
                metrics::counter!(RELOAD_ERRORS).increment(1);
                tracing::error!(%error, "the changed TLS certificate files do not load; keeping the current certificate until they are fixed");
                false
            }
        }
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn record_expiry(key: &CertifiedKey) {
    if let Some(not_after) = key.cert.first().and_then(|leaf| identity::not_after(leaf)) {
        metrics::gauge!(EXPIRY).set(not_after as f64);
    }
}
