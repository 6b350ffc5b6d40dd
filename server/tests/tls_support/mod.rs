//! What the TLS tests share: a test PKI made with rcgen (CAs, server and client certificates,
//! expired ones), a raw rustls client that shows what the server sends, and the process-wide
//! log and metrics the server's refusals are checked in.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A certificate authority that issues the tests' certificates.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate and its key, as PEM.
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with `serial`.
    pub(crate) fn server(&self, serial: u64, expired: bool) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("cattail-{serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        self.issue(params, expired)
    }

    /// A client certificate with common name `name` and a SPIFFE-style URI SAN.
    pub(crate) fn client(&self, name: &str, expired: bool) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://cluster.local/agent/{name}")
                .try_into()
                .unwrap(),
        ));
        self.issue(params, expired)
    }

    fn issue(&self, mut params: CertificateParams, expired: bool) -> Issued {
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Issued {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A raw TLS 1.3 client with ALPN h2 trusting `ca`, with an optional client certificate.
pub(crate) fn connector(ca: &Ca, client: Option<&Issued>) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(client) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

/// A raw TLS connection to `addr`, and the local address the server sees.
pub(crate) async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> (std::io::Result<TlsStream<TcpStream>>, SocketAddr) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    (connector.connect(name, tcp).await, local)
}

/// What the server does with a TLS connection that sends the HTTP/2 preface: the first read's
/// outcome (bytes, an end, or the alert as an error).
pub(crate) async fn first_read(stream: &mut TlsStream<TcpStream>) -> std::io::Result<usize> {
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await?;
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the server neither answered nor closed")
}

/// The serial of the certificate a TLS connection got.
pub(crate) fn served_serial(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    parsed.raw_serial().to_vec()
}

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide log capture and metrics recorder (once).
pub(crate) fn observe() {
    METRICS.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap());
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info,cattail_server::fanout::sender=debug,cattail_server::tls=debug")
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .init();
        buffer
    });
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines so far that contain every one of `parts`.
pub(crate) fn log_lines(parts: &[&str]) -> Vec<String> {
    let log = LOG.get().expect("observe() first").lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .map(str::to_owned)
        .collect()
}

/// `cattail_auth_failures_total{reason}` now.
pub(crate) fn auth_failures(reason: &str) -> u64 {
    let text = METRICS.get().expect("observe() first").render();
    let prefix = format!("cattail_auth_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}
