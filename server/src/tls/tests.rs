//! Tests of loading and reloading the server certificate, the names read from a client
//! certificate, and the settings that decide between TLS and plaintext. Certificates are made
//! here with rcgen; handshakes are tested end to end in `tests/tls.rs`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair, SanType};

use super::*;

/// A self-signed certificate with common name `name`, and its key, as PEM.
fn self_signed(name: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names.push(SanType::URI(
        format!("spiffe://cluster.local/ns/kube-system/sa/{name}")
            .try_into()
            .unwrap(),
    ));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, (cert, key): &(String, String)) -> TlsConfig {
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    TlsConfig {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..TlsConfig::default()
    }
}

fn files(config: &TlsConfig) -> CertificateFiles {
    CertificateFiles::load(
        config.cert_file.clone().unwrap(),
        config.key_file.clone().unwrap(),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .unwrap()
}

/// The common name of the certificate new handshakes get.
fn served_name(files: &CertificateFiles) -> Option<String> {
    identity::peer_certificate(&files.current().cert[0])
        .unwrap()
        .common_name
        .clone()
}

#[test]
fn a_reload_swaps_in_a_good_change_and_keeps_the_old_certificate_on_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &self_signed("first"));
    let files = files(&config);
    assert_eq!(served_name(&files).as_deref(), Some("first"));
    assert!(!files.reload(), "nothing changed");

    // A new certificate with the old key: the pair does not match.
    let (second_cert, second_key) = self_signed("second");
    std::fs::write(config.cert_file.as_ref().unwrap(), &second_cert).unwrap();
    assert!(!files.reload());
    assert_eq!(served_name(&files).as_deref(), Some("first"));
    // A missing file is also kept through.
    std::fs::remove_file(config.key_file.as_ref().unwrap()).unwrap();
    assert!(!files.reload());
    assert_eq!(served_name(&files).as_deref(), Some("first"));

    std::fs::write(config.key_file.as_ref().unwrap(), &second_key).unwrap();
    assert!(files.reload());
    assert_eq!(served_name(&files).as_deref(), Some("second"));
    assert!(!files.reload(), "the same files again are no change");
}

#[test]
fn bad_files_at_start_are_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), &self_signed("server"));
    let cert_file = config.cert_file.clone().unwrap();
    let key_file = config.key_file.clone().unwrap();

    let (_, other_key) = self_signed("other");
    std::fs::write(&key_file, &other_key).unwrap();
    let error = ServerTls::load(&config).unwrap_err();
    assert!(matches!(error, Error::Key { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&*key_file.to_string_lossy()) && text.contains("private key of that"),
        "{text}"
    );

    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
    let error = ServerTls::load(&config).unwrap_err();
    assert!(matches!(error, Error::Pem { .. }), "{error}");

    std::fs::write(&cert_file, "").unwrap();
    let error = ServerTls::load(&config).unwrap_err().to_string();
    assert!(error.contains("no PEM `CERTIFICATE`"), "{error}");

    let missing = TlsConfig {
        client_ca_file: Some(dir.path().join("missing-ca.crt")),
        ..write(dir.path(), &self_signed("server"))
    };
    let error = ServerTls::load(&missing).unwrap_err().to_string();
    assert!(
        error.contains("client CA file") && error.contains("missing-ca.crt"),
        "{error}"
    );
}

#[test]
fn plaintext_only_when_asked_for_and_never_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let none = TlsConfig::default();
    assert!(matches!(
        ServerTls::from_settings(&none, false),
        Err(Error::NoCertificate)
    ));
    assert!(ServerTls::from_settings(&none, true).unwrap().is_none());
    let config = write(dir.path(), &self_signed("server"));
    assert!(ServerTls::from_settings(&config, false).unwrap().is_some());
    assert!(matches!(
        ServerTls::from_settings(&config, true),
        Err(Error::PlaintextAndCertificate)
    ));
}

#[test]
fn a_client_certificate_gives_its_common_name_and_alternative_names() {
    let (cert, _) = self_signed("node-agent");
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let names = identity::peer_certificate(&der).unwrap();
    assert_eq!(names.common_name.as_deref(), Some("node-agent"));
    assert_eq!(
        names.uri_sans,
        ["spiffe://cluster.local/ns/kube-system/sa/node-agent"]
    );
    assert_eq!(names.dns_sans, ["localhost"]);
    assert!(identity::peer_certificate(b"not a certificate").is_none());
}

#[tokio::test]
async fn handshakes_over_the_cap_are_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let config = TlsConfig {
        max_handshakes: 2,
        ..write(dir.path(), &self_signed("server"))
    };
    let tls = ServerTls::load(&config).unwrap();
    let peer = "127.0.0.1:1".parse().unwrap();
    let first = tls.admit(peer).unwrap();
    let _second = tls.admit(peer).unwrap();
    assert!(tls.admit(peer).is_none());
    drop(first);
    assert!(
        tls.admit(peer).is_some(),
        "a finished handshake frees its place"
    );
}

use rustls_pki_types::pem::PemObject;
