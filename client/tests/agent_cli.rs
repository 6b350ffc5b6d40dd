//! The `cattail-agent` binary against a scripted stand-in server on a loopback socket.
//!
//! The stand-in is not cattail's server (that lives in `cattail-server`, which this crate does
//! not depend on): it answers every Hello with the same small snapshot, refuses agents whose id
//! is `refuse-me`, and never answers agents whose id is `ignore-me`; to an agent whose id is
//! `show-token` it answers with the `authorization` metadata it got, in a refusal. It serves
//! h2c, or TLS with a certificate made here.

#![allow(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use bytes::Bytes;
use cattail_proto::frame::{FrameHeader, encode_frame};
use cattail_proto::pb::sync_server::{Sync, SyncServer};
use cattail_proto::pb::{self, AgentMessage, Encoding, ResumeMode, ServerMessage, agent_message};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const NODE: &str = "node-a";

struct StandIn;

#[tonic::async_trait]
impl Sync for StandIn {
    type WatchStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap_or("<not ASCII>").to_owned());
        let mut inbound = request.into_inner();
        let Some(agent_message::Message::Hello(hello)) =
            inbound.message().await?.and_then(|m| m.message)
        else {
            return Err(Status::invalid_argument(
                "the first message must be a Hello",
            ));
        };
        if hello.agent_id == "show-token" {
            return Err(Status::invalid_argument(format!(
                "malformed hello: authorization {authorization:?}"
            )));
        }
        if hello.agent_id == "refuse-me" {
            return Err(Status::invalid_argument(
                "malformed hello: agent_id refused",
            ));
        }
        let (replies, outbound) = mpsc::channel(4);
        if hello.agent_id != "ignore-me" {
            let pods_scope = if hello.subscriptions.iter().any(|s| s.node_scoped) {
                hello.node_name.clone()
            } else {
                String::new()
            };
            replies.send(Ok(snapshot(&pods_scope))).await.unwrap();
        }
        // Keep the stream open for as long as the agent stays.
        tokio::spawn(async move {
            while let Ok(Some(_)) = inbound.message().await {}
            drop(replies);
        });
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

fn frame(resource: &str, scope: &str, upserts: &[(&str, &str, &str)]) -> pb::Frame {
    let payload = pb::FramePayload {
        upserts: upserts
            .iter()
            .map(|(namespace, name, value)| pb::Upsert {
                namespace: (*namespace).into(),
                name: (*name).into(),
                value: Bytes::copy_from_slice(value.as_bytes()),
                resource_version: "1".into(),
            })
            .collect(),
        deletes: Vec::new(),
    };
    let header = FrameHeader {
        revision: 3,
        resource: resource.into(),
        scope: scope.into(),
        replace: true,
        publish_time_unix_nanos: 1,
        replaced_buckets: Vec::new(),
    };
    encode_frame(header, &payload, Encoding::ProtoZstd, 3).unwrap()
}

fn snapshot(pods_scope: &str) -> ServerMessage {
    let info = |resource: &str, scope_field: &str| pb::ResourceInfo {
        resource: resource.into(),
        fingerprint: 7,
        scope_field: scope_field.into(),
        digest_buckets: 4096,
    };
    ServerMessage {
        welcome: Some(pb::Welcome {
            protocol_version: 1,
            server_id: "stand-in".into(),
            epoch: Bytes::from_static(&[9; 16]),
            head_revision: 3,
            resources: vec![info("v1/pods", "spec.nodeName"), info("v1/nodes", "")],
            limits: Some(cattail_proto::default_limits()),
            resume_mode: ResumeMode::Snapshot as i32,
        }),
        frames: vec![
            frame(
                "v1/pods",
                pods_scope,
                &[
                    ("default", "web-1", r#"{"metadata":{"name":"web-1"}}"#),
                    ("default", "web-0", r#"{"metadata":{"name":"web-0"}}"#),
                ],
            ),
            frame("v1/nodes", "", &[("", "node-a", r#"{"kind":"Node"}"#)]),
        ],
        synced: Some(pb::Synced { revision: 3 }),
        heartbeat: None,
    }
}

async fn start_stand_in() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SyncServer::new(StandIn))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    endpoint
}

/// The stand-in over TLS with a certificate for `localhost`; its endpoint and the CA file.
async fn start_tls_stand_in(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, cert.pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let identity = tonic::transport::Identity::from_pem(cert.pem(), key.serialize_pem());
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(SyncServer::new(StandIn))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (endpoint, ca)
}

/// Runs `cattail-agent dump` with `args`, failing the test if it runs past a generous deadline.
async fn dump(endpoint: &str, args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cattail-agent"))
        .arg("dump")
        .args([
            "--server",
            endpoint,
            "--resource",
            "v1/pods",
            "--resource",
            "v1/nodes",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("cattail-agent dump did not exit")
        .unwrap()
}

#[tokio::test]
async fn dump_prints_the_synced_store_sorted_as_json_lines() {
    let endpoint = start_stand_in().await;
    let output = dump(
        &endpoint,
        &["--node", NODE, "--node-scoped", "--timeout", "60s"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            r#"{"resource":"v1/nodes","namespace":"","name":"node-a","value":{"kind":"Node"}}"#,
            r#"{"resource":"v1/pods","namespace":"default","name":"web-0","value":{"metadata":{"name":"web-0"}}}"#,
            r#"{"resource":"v1/pods","namespace":"default","name":"web-1","value":{"metadata":{"name":"web-1"}}}"#,
        ]
    );
}

#[tokio::test]
async fn dump_exits_non_zero_when_the_hello_is_refused() {
    let endpoint = start_stand_in().await;
    let output = dump(&endpoint, &["--agent-id", "refuse-me", "--timeout", "60s"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("agent_id refused"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[tokio::test]
async fn dump_exits_non_zero_on_timeout() {
    let endpoint = start_stand_in().await;
    let output = dump(&endpoint, &["--agent-id", "ignore-me", "--timeout", "1s"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("timed out after 1s"), "{stderr}");
}

/// A free loopback port: bound, then released for the agent to take.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `GET /metrics` over plain HTTP/1.1; `None` while nothing listens yet.
async fn scrape(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

#[tokio::test]
async fn run_serves_metrics_and_stops_cleanly_on_sigterm() {
    let endpoint = start_stand_in().await;
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cattail-agent"))
        .args([
            "run",
            "--server",
            &endpoint,
            "--resource",
            "v1/pods,v1/nodes",
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for the initial list to show up in the metrics, within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        if let Some(response) = scrape(port).await
            && response.contains("cattail_agent_objects{resource=\"v1/pods\"} 2")
        {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "no metrics in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics.contains("cattail_client_events_total{kind=\"apply\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cattail_client_received_bytes_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cattail_client_complete_revision 3"),
        "{metrics}"
    );

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("cattail-agent run did not stop on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn dump_over_tls_verifies_the_server_and_sends_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, ca) = start_tls_stand_in(dir.path()).await;
    let ca = ca.to_str().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let token = token.to_str().unwrap();

    let output = dump(&endpoint, &["--tls-ca-file", ca, "--timeout", "60s"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 3);

    let output = dump(
        &endpoint,
        &[
            "--tls-ca-file",
            ca,
            "--token-file",
            token,
            "--agent-id",
            "show-token",
            "--timeout",
            "60s",
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Bearer s3cret-token"), "{stderr}");

    // Without the CA bundle, or with a missing one, it says what to give.
    let output = dump(&endpoint, &["--timeout", "60s"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--tls-ca-file"),
        "{stderr}"
    );
    let output = dump(&endpoint, &["--tls-ca-file", "/nonexistent/ca.crt"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("/nonexistent/ca.crt"),
        "{stderr}"
    );
}
