//! A throwaway PKI for `--tls` runs: a CA and a server certificate for `localhost` and
//! 127.0.0.1, written as PEM files next to the run's other files. Nothing here is secret: the
//! keys live as long as the run's directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The files of one run's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate, which agents trust.
    pub ca_file: PathBuf,
    /// The server's certificate chain.
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
}

impl Pki {
    /// Makes a CA and a server certificate, and writes them into `dir` (created if needed).
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "cattail-loadtest CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
        server
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        server
            .distinguished_name
            .push(DnType::CommonName, "cattail-loadtest");
        let key = KeyPair::generate()?;
        let cert = server.signed_by(&key, &issuer)?;
        let pki = Self {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
        };
        for (path, pem) in [
            (&pki.ca_file, ca_pem),
            (&pki.cert_file, cert.pem()),
            (&pki.key_file, key.serialize_pem()),
        ] {
            std::fs::write(path, pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(pki)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_loads_the_files_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path()).unwrap();
        let config = cattail_server::config::TlsConfig {
            cert_file: Some(pki.cert_file.clone()),
            key_file: Some(pki.key_file.clone()),
            ..cattail_server::config::TlsConfig::default()
        };
        cattail_server::tls::ServerTls::load(&config).unwrap();
        assert!(
            std::fs::read_to_string(&pki.ca_file)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
    }
}
