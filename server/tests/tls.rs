//! TLS on the gRPC port, on both transports, with certificates made here by rcgen: an agent
//! (cattail-client) syncs over TLS and its client certificate reaches the server; bad clients
//! (plaintext, another CA, expired, no certificate, stalled handshakes) are refused, counted and
//! logged while the server keeps serving; clients refuse bad servers; a rotated certificate
//! reaches new connections while open streams keep going.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[macro_use]
mod fanout_support;
mod tls_support;

use std::path::Path;
use std::time::{Duration, Instant};

use cattail_client::connection::Error as ClientError;
use cattail_client::{Client, ClientTls, Event, EventStream, Subscription};
use cattail_server::config::TlsConfig;
use cattail_server::grpc::{GrpcConfig, Transport};
use cattail_server::tls::ServerTls;
use fanout_support::*;
use futures::StreamExt;
use tls_support::*;

on_both_transports!(
    client_certificates_pass_admission_only_when_their_names_are_allowed,
    an_agent_syncs_over_tls_and_its_client_certificate_reaches_the_server,
    bad_client_certificates_are_refused_counted_and_logged,
    a_plaintext_client_on_the_tls_port_is_closed_and_the_server_stays_up,
    a_tls_client_on_a_plaintext_port_gets_a_clear_error,
    the_client_refuses_a_server_certificate_it_cannot_trust,
    a_rotated_certificate_reaches_new_connections_while_open_streams_keep_going,
    stalled_handshakes_do_not_starve_an_agent_and_time_out,
    handshakes_over_the_cap_are_closed_at_once_and_counted,
);

/// A TLS server signed by `ca`, with its files in `dir`; `client_ca` turns on client
/// certificates (required).
async fn tls_server(
    transport: Transport,
    dir: &Path,
    ca: &Ca,
    client_ca: Option<&Ca>,
    tune: impl FnOnce(&mut TlsConfig),
) -> TestServer {
    observe();
    let (cert_file, key_file) = ca.server(1, false).write(dir, "server");
    let mut config = TlsConfig {
        cert_file: Some(cert_file),
        key_file: Some(key_file),
        ..TlsConfig::default()
    };
    if let Some(client_ca) = client_ca {
        let path = dir.join("client-ca.crt");
        std::fs::write(&path, &client_ca.pem).unwrap();
        config.client_ca_file = Some(path);
    }
    tune(&mut config);
    config.validate().unwrap();
    let grpc = GrpcConfig {
        transport,
        tls: Some(ServerTls::load(&config).unwrap()),
        ..GrpcConfig::default()
    };
    let mut server = TestServer::start_with_grpc(config_for_tests(), true, grpc).await;
    server.apply(&[pod("a", "p1", Some("n1"), 1)], &[]);
    server
}

fn config_for_tests() -> cattail_server::fanout::FanoutConfig {
    fanout_support::config()
}

/// A cattail-client stream of pods to `server`, over https with `tls`.
fn agent(server: &TestServer, scheme: &str, tls: Option<ClientTls>) -> EventStream {
    agent_with(server, scheme, tls, |client| client)
}

/// Like [`agent`], with more client settings.
fn agent_with(
    server: &TestServer,
    scheme: &str,
    tls: Option<ClientTls>,
    more: impl FnOnce(Client) -> Client,
) -> EventStream {
    let mut client = Client::new([format!("{scheme}://localhost:{}", server.addr.port())])
        .agent_id("tls-test")
        .backoff(cattail_client::Backoff::default().initial(Duration::from_secs(60)));
    if let Some(tls) = tls {
        client = client.tls(tls);
    }
    more(client)
        .subscribe(&[Subscription::for_resource("v1/pods").unwrap()])
        .unwrap()
}

/// A CA bundle file for the client.
fn ca_file(dir: &Path, ca: &Ca, name: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.crt"));
    std::fs::write(&path, &ca.pem).unwrap();
    path
}

/// Events until the first `InitDone`; the names of the objects seen.
async fn until_synced(events: &mut EventStream) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("no sync in time")
            .unwrap()
            .unwrap_or_else(|error| panic!("the agent failed: {error}"));
        match event.event {
            Event::InitApply(object) | Event::Apply(object) => names.push(object.name),
            Event::InitDone => return names,
            _ => {}
        }
    }
}

/// The first error of a stream that must fail.
async fn first_error(events: &mut EventStream) -> ClientError {
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(Err(error))) => error,
        Ok(Some(Ok(event))) => panic!("expected a failure, got {event:?}"),
        Ok(None) => panic!("the stream ended without an error"),
        Err(_) => panic!("no error in time"),
    }
}

/// mTLS identity end to end: the verified client certificate's names reach admission, which
/// admits a common name on its allowlist and refuses another one from the same trusted CA.
async fn client_certificates_pass_admission_only_when_their_names_are_allowed(
    transport: Transport,
) {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server-ca"), Ca::new("client-ca"));
    let server = tls_server(transport, dir.path(), &server_ca, Some(&client_ca), |_| {}).await;
    let allowed = format!("agent-allowed-{transport}");
    let config = cattail_server::config::ServerConfig::from_yaml_str(&format!(
        "resources:\n  - resource: v1/pods\n    scope: spec.nodeName\n  - resource: \
         v1/namespaces\nauth:\n  certificates:\n    common_names: [{allowed}]\n"
    ))
    .unwrap();
    // Certificate identities never call the API server: this client is never used.
    let unused =
        kube::Client::try_from(kube::Config::new("https://127.0.0.1:1".parse().unwrap())).unwrap();
    let authenticator = cattail_server::auth::Authenticator::new(&config.auth, unused).unwrap();
    let admission: std::sync::Arc<dyn cattail_server::fanout::Admission> =
        std::sync::Arc::new(authenticator);
    let _hub = server.hub.clone().with_admission(admission);
    let client_for = |name: &str| {
        let (cert, key) = client_ca.client(name, false).write(dir.path(), name);
        ClientTls::new()
            .ca_file(ca_file(dir.path(), &server_ca, "ca"))
            .unwrap()
            .identity_files(cert, key)
            .unwrap()
    };

    let mut admitted = agent(&server, "https", Some(client_for(&allowed)));
    assert_eq!(until_synced(&mut admitted).await, ["p1"]);

    let mut refused = agent(&server, "https", Some(client_for("agent-unknown")));
    let error = first_error(&mut refused).await.to_string();
    assert!(error.contains("PermissionDenied"), "{error}");
    assert!(
        error.contains("agent-unknown"),
        "the refusal names the certificate: {error}"
    );
}

/// Waits until `done`, or fails after [`WAIT`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn an_agent_syncs_over_tls_and_its_client_certificate_reaches_the_server(
    transport: Transport,
) {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca) = (Ca::new("server-ca"), Ca::new("client-ca"));
    let server = tls_server(transport, dir.path(), &server_ca, Some(&client_ca), |_| {}).await;
    let name = format!("agent-synced-{transport}");
    let (cert, key) = client_ca.client(&name, false).write(dir.path(), "client");
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &server_ca, "ca"))
        .unwrap()
        .identity_files(cert, key)
        .unwrap();
    // A token of a length no other test sends, to find it in the log.
    let token_file = dir.path().join("token");
    let token = "t".repeat(if transport == Transport::Native {
        1001
    } else {
        1002
    });
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_file = cattail_client::TokenFile::new(&token_file).unwrap();
    let mut events = agent_with(&server, "https", Some(tls), |client| {
        client.token_file(token_file)
    });
    assert_eq!(until_synced(&mut events).await, ["p1"]);
    // The sender logs the Peer the transport built at debug level: the certificate's names
    // are in it, from the verified handshake, and the length of `authorization`
    // ("Bearer " and the token).
    let common_name = format!("common_name: Some(\"{name}\")");
    let uri = format!("spiffe://cluster.local/agent/{name}");
    let authorization = format!("Value(<{} bytes>)", "Bearer ".len() + token.len());
    eventually("the peer certificate and token in the log", || {
        !log_lines(&[&common_name, &uri, &authorization]).is_empty()
    })
    .await;
}

async fn bad_client_certificates_are_refused_counted_and_logged(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, client_ca, other_ca) =
        (Ca::new("server-ca"), Ca::new("client-ca"), Ca::new("other"));
    let server = tls_server(transport, dir.path(), &server_ca, Some(&client_ca), |_| {}).await;
    let other = other_ca.client("intruder", false);
    let expired = client_ca.client("expired", true);
    for (what, client) in [
        ("another CA", Some(&other)),
        ("expired", Some(&expired)),
        ("no certificate", None),
    ] {
        let before = auth_failures("tls_client_certificate");
        let (connected, local) = tls_connect(&connector(&server_ca, client), server.addr).await;
        // TLS 1.3 finishes the client's side first; the refusal comes as an alert on read.
        let refused = match connected {
            Err(error) => error,
            Ok(mut stream) => first_read(&mut stream).await.unwrap_err(),
        };
        assert!(
            refused.to_string().contains("alert"),
            "{what}: the server should send an alert, got {refused}"
        );
        let port = format!("peer={local}");
        eventually(&format!("{what}: a log line and a count"), || {
            !log_lines(&[
                "refused a connection at TLS",
                &port,
                "tls_client_certificate",
            ])
            .is_empty()
                && auth_failures("tls_client_certificate") > before
        })
        .await;
    }
    // The server still serves a good agent.
    let (cert, key) = client_ca.client("good", false).write(dir.path(), "good");
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &server_ca, "ca"))
        .unwrap()
        .identity_files(cert, key)
        .unwrap();
    assert_eq!(
        until_synced(&mut agent(&server, "https", Some(tls))).await,
        ["p1"]
    );
}

async fn a_plaintext_client_on_the_tls_port_is_closed_and_the_server_stays_up(
    transport: Transport,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server-ca");
    let server = tls_server(transport, dir.path(), &ca, None, |_| {}).await;
    let before = auth_failures("tls_handshake");
    let error = first_error(&mut agent(&server, "http", None)).await;
    assert!(
        matches!(
            error,
            ClientError::Connect { .. } | ClientError::Status { .. }
        ),
        "{error}"
    );
    eventually("a tls_handshake count", || {
        auth_failures("tls_handshake") > before
    })
    .await;
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &ca, "ca"))
        .unwrap();
    assert_eq!(
        until_synced(&mut agent(&server, "https", Some(tls))).await,
        ["p1"]
    );
}

async fn a_tls_client_on_a_plaintext_port_gets_a_clear_error(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server-ca");
    let mut server = TestServer::start_on(config_for_tests(), transport).await;
    server.apply(&[pod("a", "p1", Some("n1"), 1)], &[]);
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &ca, "ca"))
        .unwrap();
    let error = first_error(&mut agent(&server, "https", Some(tls))).await;
    let text = error.to_string();
    assert!(matches!(error, ClientError::Connect { .. }), "{text}");
    assert!(text.contains("corrupt message"), "{text}");
    // The plaintext server is unharmed.
    assert_eq!(
        until_synced(&mut agent(&server, "http", None)).await,
        ["p1"]
    );
}

async fn the_client_refuses_a_server_certificate_it_cannot_trust(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("server-ca"), Ca::new("other"));
    for (expired, expected) in [(false, "unknownissuer"), (true, "expired")] {
        let signer = if expired { &ca } else { &other };
        let server = tls_server(transport, dir.path(), signer, None, |config| {
            let (cert, key) = signer.server(7, expired).write(dir.path(), "bad-server");
            config.cert_file = Some(cert);
            config.key_file = Some(key);
        })
        .await;
        let tls = ClientTls::new()
            .ca_file(ca_file(dir.path(), &ca, "ca"))
            .unwrap();
        let error = first_error(&mut agent(&server, "https", Some(tls))).await;
        let text = error.to_string();
        assert!(matches!(error, ClientError::Connect { .. }), "{text}");
        let lower = text.to_lowercase();
        assert!(
            lower.contains("certificate") && lower.contains(expected),
            "{text}"
        );
    }
}

async fn a_rotated_certificate_reaches_new_connections_while_open_streams_keep_going(
    transport: Transport,
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server-ca");
    let mut server = tls_server(transport, dir.path(), &ca, None, |config| {
        config.reload_interval = Duration::from_millis(50);
    })
    .await;
    let raw = connector(&ca, None);
    let (first, _) = tls_connect(&raw, server.addr).await;
    assert_eq!(served_serial(&first.unwrap()), [1]);
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &ca, "ca"))
        .unwrap();
    let mut open = agent(&server, "https", Some(tls));
    assert_eq!(until_synced(&mut open).await, ["p1"]);

    // A broken key next to the new certificate keeps the old one.
    let rotated = ca.server(2, false);
    std::fs::write(dir.path().join("server.key"), "garbage").unwrap();
    eventually("the broken files logged", || {
        !log_lines(&["do not load; keeping the current certificate"]).is_empty()
    })
    .await;
    let (still, _) = tls_connect(&raw, server.addr).await;
    assert_eq!(served_serial(&still.unwrap()), [1]);

    rotated.write(dir.path(), "server");
    let deadline = Instant::now() + WAIT;
    loop {
        let (stream, _) = tls_connect(&raw, server.addr).await;
        if served_serial(&stream.unwrap()) == [2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream opened before the rotation gets the next change, on the same stream.
    server.apply(&[pod("a", "p2", Some("n1"), 1)], &[]);
    let event = tokio::time::timeout(WAIT, open.next())
        .await
        .expect("no update after the rotation")
        .unwrap()
        .expect("the open stream failed after the rotation");
    assert!(
        matches!(&event.event, Event::Apply(object) if object.name == "p2"),
        "{event:?}"
    );
}

async fn stalled_handshakes_do_not_starve_an_agent_and_time_out(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server-ca");
    let timeout = Duration::from_secs(3);
    let server = tls_server(transport, dir.path(), &ca, None, |config| {
        config.handshake_timeout = timeout;
    })
    .await;
    let before = auth_failures("tls_handshake_timeout");
    let mut stalled = Vec::new();
    for _ in 0..1000 {
        stalled.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &ca, "ca"))
        .unwrap();
    assert_eq!(
        until_synced(&mut agent(&server, "https", Some(tls))).await,
        ["p1"]
    );
    // Each stalled connection is closed by the server after the handshake timeout.
    for socket in &mut stalled {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(socket, &mut buf))
            .await
            .expect("a stalled handshake was never closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(started.elapsed() >= timeout - Duration::from_millis(500));
    eventually("1,000 timeouts counted", || {
        auth_failures("tls_handshake_timeout") >= before + 1000
    })
    .await;
}

async fn handshakes_over_the_cap_are_closed_at_once_and_counted(transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server-ca");
    let server = tls_server(transport, dir.path(), &ca, None, |config| {
        config.max_handshakes = 5;
        config.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let before = auth_failures("tls_handshakes_full");
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // The sixth is closed at once, long before the handshake timeout.
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut extra, &mut buf))
        .await
        .expect("the connection over the cap was not closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    eventually("a tls_handshakes_full count", || {
        auth_failures("tls_handshakes_full") > before
    })
    .await;
    // Once the stalled ones go, agents get in again.
    drop(stalled);
    let tls = ClientTls::new()
        .ca_file(ca_file(dir.path(), &ca, "ca"))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut events = agent(&server, "https", Some(tls.clone()));
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Ok(_))) => break,
            _ => assert!(Instant::now() < deadline, "agents never got in again"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
