//! What an agent proves itself and the server with: [`ClientTls`] (the CA bundle that verifies
//! the server, an optional client certificate, a server name) and [`TokenFile`] (a projected
//! ServiceAccount token sent as `authorization: Bearer <token>`).
//!
//! Files are read when these are built, so a missing or malformed file is an error at
//! construction, naming the file. The token is read again before every (re)connect, because
//! kubelet rotates it in place; TLS files are read once.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::{Error, Result};

/// The longest token accepted, in bytes; a projected ServiceAccount token is 1 to 2 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// TLS settings for `https://` endpoints.
///
/// ```no_run
/// # fn tls() -> cattail_client::connection::Result<()> {
/// use cattail_client::{Client, ClientTls};
/// let tls = ClientTls::new()
///     .ca_file("/etc/cattail/ca.crt")?
///     .identity_files("/etc/cattail/tls.crt", "/etc/cattail/tls.key")?
///     .server_name("cattail.cattail-system.svc");
/// let client = Client::new(["https://cattail.cattail-system:5473"]).tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
    server_name: Option<String>,
}

impl ClientTls {
    /// No CA yet (one is needed for `https://` endpoints), no client certificate, and the
    /// endpoint's host as the server name.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The CA bundle (PEM) the server's certificate must chain to.
    ///
    /// # Errors
    /// [`Error::Credentials`] if the file cannot be read or holds no PEM certificate.
    pub fn ca_file(mut self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_certificates("CA file", path.as_ref())?;
        self.ca = Some(Certificate::from_pem(pem));
        Ok(self)
    }

    /// A client certificate chain and its private key (both PEM), for servers that verify
    /// agents by certificate.
    ///
    /// # Errors
    /// [`Error::Credentials`] if a file cannot be read or does not hold what it should.
    pub fn identity_files(
        mut self,
        cert_file: impl AsRef<Path>,
        key_file: impl AsRef<Path>,
    ) -> Result<Self> {
        let cert = read_certificates("client certificate file", cert_file.as_ref())?;
        let key_path = key_file.as_ref();
        let key = read("client key file", key_path)?;
        PrivateKeyDer::from_pem_slice(&key)
            .map_err(|error| credentials("client key file", key_path, error))?;
        self.identity = Some(Identity::from_pem(cert, key));
        Ok(self)
    }

    /// The name the server's certificate must carry, when it differs from the endpoint's host
    /// (an IP address, say).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Whether a CA bundle is set.
    pub(crate) fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// tonic's configuration of these settings.
    pub(crate) fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(ca.clone());
        }
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }
}

/// A file holding a bearer token, read before every connect.
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// The token at `path` (surrounding whitespace is dropped).
    ///
    /// # Errors
    /// [`Error::Credentials`] if the file cannot be read, is over [`MAX_TOKEN_BYTES`], or
    /// does not make a valid header value.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self> {
        let token = Self { path: path.into() };
        token.header()?;
        Ok(token)
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `authorization` value of the token the file holds now.
    pub(crate) fn header(&self) -> Result<AsciiMetadataValue> {
        let what = "token file";
        let bytes = read(what, &self.path)?;
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(credentials(
                what,
                &self.path,
                format!(
                    "it holds {} bytes, more than the {MAX_TOKEN_BYTES} a token may have",
                    bytes.len()
                ),
            ));
        }
        let token = std::str::from_utf8(&bytes)
            .map_err(|_| credentials(what, &self.path, "it is not UTF-8 text"))?
            .trim();
        if token.is_empty() {
            return Err(credentials(what, &self.path, "it is empty"));
        }
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            credentials(
                what,
                &self.path,
                "it holds characters a header value cannot carry (a token is printable ASCII)",
            )
        })
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| credentials(what, path, error))
}

/// A file's contents, checked to hold at least one PEM certificate and nothing malformed.
fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    let pem = read(what, path)?;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|error| credentials(what, path, error))?;
        count += 1;
    }
    if count == 0 {
        return Err(credentials(
            what,
            path,
            "it holds no PEM `CERTIFICATE` section",
        ));
    }
    Ok(pem)
}

fn credentials(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Credentials {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn reason(error: Error) -> String {
        assert!(matches!(error, Error::Credentials { .. }), "{error}");
        error.to_string()
    }

    #[test]
    fn a_token_is_read_again_each_time_and_sent_as_a_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token\n").unwrap();
        let token = TokenFile::new(&path).unwrap();
        assert_eq!(token.header().unwrap(), "Bearer first-token");
        std::fs::write(&path, "rotated-token").unwrap();
        assert_eq!(token.header().unwrap(), "Bearer rotated-token");
    }

    #[test]
    fn a_bad_token_file_is_an_error_that_names_it_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let missing = reason(TokenFile::new(&path).unwrap_err());
        assert!(
            missing.contains("token file") && missing.contains("token"),
            "{missing}"
        );

        std::fs::write(&path, "x".repeat(MAX_TOKEN_BYTES + 1)).unwrap();
        let large = reason(TokenFile::new(&path).unwrap_err());
        assert!(large.contains("8193 bytes"), "{large}");
        std::fs::write(&path, "x".repeat(MAX_TOKEN_BYTES)).unwrap();
        assert!(TokenFile::new(&path).is_ok(), "the limit itself is fine");

        std::fs::write(&path, "a\u{7f}b").unwrap();
        let invalid = reason(TokenFile::new(&path).unwrap_err());
        assert!(invalid.contains("header value"), "{invalid}");
        std::fs::write(&path, "  \n").unwrap();
        assert!(reason(TokenFile::new(&path).unwrap_err()).contains("empty"));
    }

    #[test]
    fn tls_files_are_checked_when_the_settings_are_built() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.crt");
        let error = reason(ClientTls::new().ca_file(&missing).unwrap_err());
        assert!(
            error.contains("CA file") && error.contains("ca.crt"),
            "{error}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let error = reason(ClientTls::new().ca_file(&garbage).unwrap_err());
        assert!(error.contains("no PEM `CERTIFICATE`"), "{error}");
        let error = reason(
            ClientTls::new()
                .identity_files(&garbage, &garbage)
                .unwrap_err(),
        );
        assert!(error.contains("client certificate file"), "{error}");
    }
}
