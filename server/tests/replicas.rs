//! Several replicas are several real `cattail serve` processes against one real API server: a
//! replica that gets SIGTERM sheds its agents gradually, each told (in the
//! `cattail-try-endpoints` trailer) to go to the other replica, where they resume by digest.
//!
//! The replicas listen on this machine's own (non-loopback) IP, each on its own port: the API
//! refuses loopback addresses in EndpointSlices, and pods' distinct IPs cannot be had here.
//! testenv runs no EndpointSlice controller (nor a kubelet to make pods ready), so the test
//! writes the headless Service's EndpointSlices itself, one per replica with its port, as that
//! controller would for pods with different ports.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cattail_client::connection::Error as ClientError;
use cattail_client::{Backoff, Client, Event, EventStream, Subscription};
use cattail_testenv::TestEnv;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::PostParams;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(60);
const SERVICE: &str = "cattail-replicas-test";

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` on 127.0.0.1:`port`: (status line, body), or None if nothing listens.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

fn status_of(admin: u16) -> serde_json::Value {
    let (_, body) = get(admin, "/status?top=50").unwrap();
    serde_json::from_str(&body).unwrap()
}

/// This machine's address on its default route (no packet is sent).
fn host_ip() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("10.255.255.255:1").unwrap();
    let ip = socket.local_addr().unwrap().ip();
    assert!(
        !ip.is_loopback(),
        "this test needs a non-loopback address, got {ip}"
    );
    ip.to_string()
}

/// One `cattail serve` process.
struct Replica {
    child: Child,
    ip: String,
    grpc: u16,
    admin: u16,
}

impl Replica {
    fn start(env: &TestEnv, ip: &str, transport: &str) -> Replica {
        Self::start_with(env, ip, transport, &[])
    }

    fn start_with(env: &TestEnv, ip: &str, transport: &str, more: &[String]) -> Replica {
        let grpc = free_port(ip);
        let admin = free_port("127.0.0.1");
        let child = Command::new(env!("CARGO_BIN_EXE_cattail"))
            .arg("serve")
            .arg("--kubeconfig")
            .arg(env.kubeconfig_path())
            .arg(format!("--listen={ip}:{grpc}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg("--insecure-plaintext")
            .arg(format!("--grpc-transport={transport}"))
            .arg(format!("--server-id=replica-{grpc}"))
            .args(["--replicas-service", SERVICE, "--namespace", "default"])
            .arg(format!("--pod-ip={ip}"))
            .args(["--drain-period=3s", "--shutdown-grace=10s"])
            .args(more)
            .env("RUST_LOG", "info,cattail_server::fanout::drain=debug")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Replica {
            child,
            ip: ip.to_owned(),
            grpc,
            admin,
        }
    }

    fn address(&self) -> String {
        format!("{}:{}", self.ip, self.grpc)
    }

    /// Waits until `/status` says what `done` looks for.
    async fn wait_for(&mut self, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((_, body)) = get(self.admin, "/status?top=50")
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&body)
                && done(&json)
            {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "replica {} exited",
                self.ip
            );
            assert!(
                Instant::now() < deadline,
                "replica {}: never {what}",
                self.ip
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The headless Service's EndpointSlice of `replica`: ready, on its gRPC port.
async fn create_endpoint_slice(env: &TestEnv, replica: &Replica) {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{SERVICE}-{}", replica.grpc),
            "labels": {"kubernetes.io/service-name": SERVICE},
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": replica.grpc, "protocol": "TCP"}],
        "endpoints": [{"addresses": [replica.ip], "conditions": {"ready": true}}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(env.client(), "default")
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
}

/// Events until the first `InitDone`.
async fn until_synced(events: &mut EventStream) {
    loop {
        let event = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("no sync in time")
            .unwrap()
            .unwrap_or_else(|error| panic!("the agent failed: {error}"));
        if matches!(event.event, Event::InitDone) {
            return;
        }
    }
}

async fn drain_sheds_agents_gradually_to_the_other_replica(transport: &str) {
    let env = TestEnv::start().await.unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-0"},
        "spec": {"containers": [{"name": "c", "image": "i"}], "nodeName": "node-a"},
    }))
    .unwrap();
    Api::<Pod>::namespaced(env.client(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let ip = host_ip();
    let mut draining = Replica::start(&env, &ip, transport);
    let mut staying = Replica::start(&env, &ip, transport);
    create_endpoint_slice(&env, &draining).await;
    create_endpoint_slice(&env, &staying).await;
    let other = staying.address();
    draining
        .wait_for("in sync and naming the other replica", |s| {
            s["syncStatus"] == "InSync" && s["try_endpoints"] == serde_json::json!([other])
        })
        .await;
    staying
        .wait_for("in sync", |s| s["syncStatus"] == "InSync")
        .await;

    // Agents configured with the draining replica only: the other one they learn from the hint.
    const AGENTS: usize = 4;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let mut events = Client::new([format!("http://{}", draining.address())])
            .agent_id(format!("agent-{i}"))
            .node_name("node-a")
            .backoff(Backoff::default().initial(Duration::from_millis(50)))
            .subscribe(&[Subscription::for_resource("v1/pods").unwrap()])
            .unwrap();
        until_synced(&mut events).await;
        agents.push(events);
    }
    draining
        .wait_for("serving every agent", |s| s["fleet"]["agents"] == AGENTS)
        .await;

    let signalled = Instant::now();
    kill(Pid::from_raw(draining.child.id() as i32), Signal::SIGTERM).unwrap();
    // Readiness turns at once, before the agents are gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (line, body) = get(draining.admin, "/readyz").unwrap();
        if line.contains("503") {
            assert_eq!(body, "Draining");
            break;
        }
        assert!(Instant::now() < deadline, "readyz still {line} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Each agent is shed with UNAVAILABLE and the other replica in the trailer. The agents are
    // watched together: each one's error is timed as it arrives, whatever the shedding order.
    let shed = futures::future::join_all(agents.iter_mut().map(|events| async {
        let error = match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Err(error))) => error,
            other => panic!("expected the agent to be shed, got {other:?}"),
        };
        (signalled.elapsed(), error)
    }))
    .await;
    let mut shed_at = Vec::new();
    for (at, error) in shed {
        shed_at.push(at);
        let ClientError::Status { status, .. } = &error else {
            panic!("not a status: {error}");
        };
        assert_eq!(status.code(), tonic::Code::Unavailable, "{error}");
        assert!(status.message().contains("draining"), "{error}");
        assert!(
            status.message().contains(&format!("try: {other}")),
            "{error}"
        );
        assert_eq!(
            status.metadata().get("cattail-try-endpoints").unwrap(),
            other.as_str()
        );
    }
    // Gradually: four agents over a 3 s drain leave at about 0, 0.75, 1.5 and 2.25 s, not
    // all in the first instant; and all of them before the drain period ends.
    shed_at.sort();
    eprintln!("agents shed at {shed_at:?} after SIGTERM");
    let spread = shed_at[AGENTS - 1] - shed_at[0];
    assert!(spread >= Duration::from_millis(1500), "shed at {shed_at:?}");
    assert!(
        shed_at[AGENTS - 1] < Duration::from_secs(4),
        "shed at {shed_at:?}"
    );

    // They resume on the other replica, by digest rather than a snapshot.
    staying
        .wait_for("serving every agent", |s| s["fleet"]["agents"] == AGENTS)
        .await;
    let fleet = status_of(staying.admin);
    let rows = fleet["fleet"]["slowest"].as_array().unwrap();
    assert_eq!(rows.len(), AGENTS, "{fleet}");
    for row in rows {
        assert_eq!(row["resume_mode"], "digest", "{row}");
    }

    // The drained replica exits 0 within the grace period.
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = draining.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the drained replica did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn a_draining_native_replica_sheds_its_agents_gradually_to_the_other() {
    drain_sheds_agents_gradually_to_the_other_replica("native").await;
}

#[tokio::test]
async fn a_draining_tonic_replica_sheds_its_agents_gradually_to_the_other() {
    drain_sheds_agents_gradually_to_the_other_replica("tonic").await;
}

/// Connection targets: a replica at its target turns a new agent away at the handshake with
/// `RESOURCE_EXHAUSTED` and the other replica in the trailer, and the agent syncs there. The
/// other replica's target is computed: 3 nodes of one agent each over 2 ready replicas, with
/// 20 % headroom, is ceil(1.8) = 2.
#[tokio::test]
async fn an_agent_over_the_target_is_sent_to_a_replica_with_room() {
    let env = TestEnv::start().await.unwrap();
    for name in ["node-a", "node-b", "node-c"] {
        let node: k8s_openapi::api::core::v1::Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::all(env.client())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "fanout:\n  max_agents: 2\n").unwrap();
    let ip = host_ip();
    let mut full = Replica::start_with(
        &env,
        &ip,
        "native",
        &[format!("--config={}", config.display())],
    );
    let computed = dir.path().join("computed.yaml");
    std::fs::write(&computed, "fanout:\n  agents_per_node: 1\n").unwrap();
    let mut roomy = Replica::start_with(
        &env,
        &ip,
        "native",
        &[format!("--config={}", computed.display())],
    );
    create_endpoint_slice(&env, &full).await;
    create_endpoint_slice(&env, &roomy).await;
    let other = roomy.address();
    full.wait_for("in sync, at a target of 2, naming the other", |s| {
        s["syncStatus"] == "InSync"
            && s["agent_target"] == 2
            && s["try_endpoints"] == serde_json::json!([other])
    })
    .await;
    roomy
        .wait_for("in sync, with a computed target of 2", |s| {
            s["syncStatus"] == "InSync" && s["agent_target"] == 2
        })
        .await;

    let agent = |i: usize| {
        Client::new([format!("http://{}", full.address())])
            .agent_id(format!("agent-{i}"))
            .node_name("node-a")
            .subscribe(&[Subscription::for_resource("v1/pods").unwrap()])
            .unwrap()
    };
    let mut agents = Vec::new();
    for i in 0..2 {
        let mut events = agent(i);
        until_synced(&mut events).await;
        agents.push(events);
    }
    // The third is turned away at the handshake, told where to go, and syncs there.
    let mut third = agent(2);
    let error = match tokio::time::timeout(WAIT, third.next()).await {
        Ok(Some(Err(error))) => error,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let ClientError::Status { status, .. } = &error else {
        panic!("not a status: {error}");
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{error}");
    assert!(status.message().contains("target of 2 agents"), "{error}");
    assert!(
        status.message().contains(&format!("try: {other}")),
        "{error}"
    );
    assert_eq!(
        status.metadata().get("cattail-try-endpoints").unwrap(),
        other.as_str()
    );
    until_synced(&mut third).await;
    roomy
        .wait_for("serving the third agent", |s| s["fleet"]["agents"] == 1)
        .await;
    assert_eq!(status_of(full.admin)["fleet"]["agents"], 2);
}
