//! The client-certificate allowlist: exact common names, exact URI SANs and URI SAN prefixes,
//! as Typha matches them. The certificate itself was verified by TLS against the client CA
//! bundle before it got here; this only decides whether its names are welcome.

use std::collections::HashSet;

use crate::config::CertificateAuthConfig;
use crate::fanout::PeerCertificate;

use super::identity::Identity;

/// Which verified certificates identify an agent.
#[derive(Debug, Clone)]
pub(crate) struct CertificateAllowlist {
    common_names: HashSet<String>,
    uri_sans: HashSet<String>,
    uri_san_prefixes: Vec<String>,
}

impl CertificateAllowlist {
    /// The allowlist of `config`.
    pub(crate) fn new(config: &CertificateAuthConfig) -> Self {
        Self {
            common_names: config.common_names.iter().cloned().collect(),
            uri_sans: config.uri_sans.iter().cloned().collect(),
            uri_san_prefixes: config.uri_san_prefixes.clone(),
        }
    }

    /// The identity of `certificate` if any of its names is allowed, else `None`. DNS SANs
    /// never identify an agent: they name hosts, not workloads.
    pub(crate) fn identify(&self, certificate: &PeerCertificate) -> Option<Identity> {
        let common_name = certificate
            .common_name
            .as_ref()
            .is_some_and(|cn| self.common_names.contains(cn));
        let uri = certificate.uri_sans.iter().any(|uri| {
            self.uri_sans.contains(uri)
                || self
                    .uri_san_prefixes
                    .iter()
                    .any(|prefix| uri.len() > prefix.len() && uri.starts_with(prefix.as_str()))
        });
        (common_name || uri).then(|| Identity::Certificate {
            common_name: certificate.common_name.clone(),
            uri_sans: certificate.uri_sans.clone(),
        })
    }
}
