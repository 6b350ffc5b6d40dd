//! [`TlsConfig`]: the `tls:` section of the config file, the settings of TLS on the gRPC port.
//!
//! Only file paths, limits and switches live here; reading and checking the certificate files
//! is the `tls` module's job, at start-up and on every reload. Validation refuses combinations
//! that cannot work (a key without a certificate, a required client certificate without a CA
//! bundle) with the field path, like `tls.key_file`.

use std::path::PathBuf;
use std::time::Duration;

use super::{Result, duration_text, invalid};

/// TLS on the gRPC port. Without `cert_file` the port serves plaintext, which `cattail serve`
/// accepts only with `--insecure-plaintext`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// CA bundle, PEM, that client certificates are verified against. Without it the server
    /// asks for no client certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is required. Unset means "required when `client_ca_file`
    /// is set"; `false` lets token-only agents connect over the same port, while a client
    /// certificate that is sent is still verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_client_certificate: Option<bool>,
    /// How long a client may take to finish its TLS handshake.
    #[serde(with = "duration_text")]
    pub handshake_timeout: Duration,
    /// TLS handshakes in flight at once; a connection over it is closed at once.
    pub max_handshakes: usize,
    /// How often the certificate and key files are checked for a change.
    #[serde(with = "duration_text")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            require_client_certificate: None,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
            reload_interval: Duration::from_secs(5),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured (a certificate is named).
    pub fn is_enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Whether a client must present a certificate: the explicit setting, or else whether a
    /// client CA bundle is set.
    pub fn client_certificate_required(&self) -> bool {
        self.require_client_certificate
            .unwrap_or(self.client_ca_file.is_some())
    }

    /// Checks the rules that span fields; errors name the field, like `tls.key_file`.
    pub fn validate(&self) -> Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_file",
                    "tls.cert_file is set but tls.key_file is not: name the certificate's \
                     private key (--tls-key-file)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_file",
                    "tls.key_file is set but tls.cert_file is not: name the server certificate \
                     (--tls-cert-file)",
                ));
            }
            _ => {}
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            return Err(invalid(
                "tls.client_ca_file",
                "client certificates need TLS: set tls.cert_file and tls.key_file too",
            ));
        }
        if self.require_client_certificate == Some(true) && self.client_ca_file.is_none() {
            return Err(invalid(
                "tls.require_client_certificate",
                "a client certificate cannot be required without a CA bundle to verify it: \
                 set tls.client_ca_file (--tls-client-ca-file)",
            ));
        }
        let zero = [
            ("tls.handshake_timeout", self.handshake_timeout.is_zero()),
            ("tls.max_handshakes", self.max_handshakes == 0),
            ("tls.reload_interval", self.reload_interval.is_zero()),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(invalid(*field, "must be greater than 0"));
        }
        Ok(())
    }
}
