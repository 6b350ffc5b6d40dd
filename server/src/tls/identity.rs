//! The names of a verified client certificate, for admission: its subject's common name, URI
//! SANs and DNS SANs, read with `x509-parser`. Called once per connection, after rustls has
//! verified the chain; what is kept is only these few strings.

use std::sync::Arc;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::fanout::PeerCertificate;

/// The names of `leaf`, a DER certificate rustls has verified; `None` if it cannot be parsed
/// (rustls parsed it already, so this does not happen for a verified certificate).
pub(super) fn peer_certificate(leaf: &[u8]) -> Option<Arc<PeerCertificate>> {
    let (_, certificate) = X509Certificate::from_der(leaf).ok()?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut names = PeerCertificate {
        common_name,
        ..PeerCertificate::default()
    };
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => names.uri_sans.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => names.dns_sans.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    Some(Arc::new(names))
}

/// When `leaf` (DER) stops being valid, in seconds since the Unix epoch.
pub(super) fn not_after(leaf: &[u8]) -> Option<i64> {
    let (_, certificate) = X509Certificate::from_der(leaf).ok()?;
    Some(certificate.validity().not_after.timestamp())
}
