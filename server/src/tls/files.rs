//! Reading the PEM files of TLS: the server's certificate chain and key, and the client CA
//! bundle. PEM is parsed by `rustls-pki-types`; the key is loaded by the ring provider, which
//! also checks that it belongs to the certificate. Every error names the file.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{Error, Result};

/// Reads a whole file, naming it in the error.
pub(super) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file's contents, in order; at least one.
pub(super) fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::Pem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(Error::NoPem {
            what,
            path: path.to_owned(),
            expected: "CERTIFICATE",
        });
    }
    Ok(certificates)
}

/// The server's certificate chain and key from the contents of its two files, checked to
/// belong together.
pub(super) fn certified_key(
    provider: &CryptoProvider,
    (cert_path, cert_pem): (&Path, &[u8]),
    (key_path, key_pem): (&Path, &[u8]),
) -> Result<CertifiedKey> {
    let chain = certificates("certificate file", cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => Error::NoPem {
            what: "key file",
            path: key_path.to_owned(),
            expected: "PRIVATE KEY",
        },
        source => Error::Pem {
            what: "key file",
            path: key_path.to_owned(),
            source,
        },
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| Error::Key {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// The client CA bundle: every certificate in the file becomes a trust anchor.
pub(super) fn client_roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let pem = read("client CA file", path)?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates("client CA file", path, &pem)? {
        roots.add(certificate).map_err(|source| Error::ClientCa {
            path: path.to_owned(),
            reason: source.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}
