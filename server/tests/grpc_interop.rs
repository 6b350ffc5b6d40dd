//! grpc-go against the gRPC port, on both transports: `testenv/cmd/grpcagent` is an agent built
//! on grpc-go with no code generated for `cattail.v1`. It checks health, takes a snapshot up to
//! `Synced`, acks, half-closes its stream and reads deltas; what it reports must match the store
//! exactly, and the server must see its Ack and its leaving. A refused Hello, and a shutdown,
//! must reach grpc-go as their statuses.
//!
//! The Go program is built once into `target/grpcagent/` by `cattail_testenv::go_binary`, and
//! rebuilt only when its sources, `go.mod` or `go.sum` change. `CATTAIL_GRPCAGENT_BIN` names a
//! prebuilt one instead. Go must be on PATH.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

#[macro_use]
mod fanout_support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use cattail_server::config::Resource;
use cattail_server::grpc::Transport;
use cattail_server::store::{Batch, ProjectedObject};
use fanout_support::*;
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

on_both_transports!(
    grpc_go_agents_sync_ack_and_follow_deltas,
    grpc_go_gets_the_status_of_a_refused_hello,
    grpc_go_gets_unavailable_when_the_server_shuts_down,
);

/// The node whose pods the scoped agent subscribes to.
const NODE: &str = "n1";
/// Acks are seen only in a process-wide metric, so scenarios that count them run one at a time.
static ACK_COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn grpc_go_agents_sync_ack_and_follow_deltas(transport: Transport) {
    grpcagent();
    let _serial = ACK_COUNTING.lock().await;
    let acks_before = acks_seen();
    let mut server = TestServer::start_on(config(), transport).await;
    let (pod_objects, namespace_objects) = initial_objects();
    let first = server.apply(&pod_objects, &namespace_objects);
    let all = [(pods(), None), (namespaces(), None)];
    let scoped = [(pods(), Some(NODE))];
    let all_at_first = server.expected(&all);
    let scoped_at_first = server.expected(&scoped);

    let mut unscoped = GoAgent::spawn(
        &server,
        &["-node", NODE, "-resource", "v1/pods,v1/namespaces"],
        2,
    );
    let mut node_scoped = GoAgent::spawn(
        &server,
        &["-node", NODE, "-resource", "v1/pods", "-node-scoped"],
        1,
    );
    // Both synced and acked: now a batch can only reach them as deltas.
    wait_for_acks(acks_before + 2, &mut [&mut unscoped, &mut node_scoped]).await;
    let second = server.commit(changes()).revision.get();
    let all_at_second = server.expected(&all);
    let scoped_at_second = server.expected(&scoped);

    let reports = [unscoped.report().await, node_scoped.report().await];
    for report in &reports {
        assert_eq!(report.health, "SERVING");
        assert_eq!(report.server_id, "test");
        assert_eq!(report.epoch, server.hub.epoch().to_string());
        assert_eq!(report.resume_mode, "RESUME_MODE_SNAPSHOT");
        assert_eq!(report.max_message_bytes, config().max_message_bytes);
        assert_eq!(report.head_revision, first);
        assert_eq!(report.synced_revision, first);
        assert_eq!(report.acked_revision, first);
        assert_eq!(report.revision, second);
        assert_eq!(report.frames, report.replace_frames + report.delta_frames);
        assert!(report.replace_frames >= report.resources.len());
        // The big pod's snapshot frame: one gRPC message of many 16 KiB DATA frames, past
        // grpc-go's initial 64 KiB windows.
        assert!(report.largest_message > BIG_POD_BYTES, "{report:?}");
    }
    let [unscoped, node_scoped] = reports;

    assert_eq!(unscoped.delta_frames, 2);
    assert_eq!(unscoped.resources.len(), 2);
    let pods_seen = &unscoped.resources["v1/pods"];
    pods_seen.assert_synced(&pods(), &all_at_first);
    pods_seen.assert_now(&pods(), &all_at_second);
    // Updated, added, moved to the node, moved away, changed elsewhere; deleted.
    assert_eq!((pods_seen.live_upserts, pods_seen.live_deletes), (5, 1));
    let namespaces_seen = &unscoped.resources["v1/namespaces"];
    namespaces_seen.assert_synced(&namespaces(), &all_at_first);
    namespaces_seen.assert_now(&namespaces(), &all_at_second);
    assert_eq!(
        (namespaces_seen.live_upserts, namespaces_seen.live_deletes),
        (1, 1)
    );

    assert_eq!(node_scoped.delta_frames, 1);
    assert_eq!(node_scoped.resources.len(), 1);
    let own_pods = &node_scoped.resources["v1/pods"];
    own_pods.assert_synced(&pods(), &scoped_at_first);
    own_pods.assert_now(&pods(), &scoped_at_second);
    assert!(own_pods.synced_objects < pods_seen.synced_objects);
    // Updated, added, moved here; deleted, moved away. The change elsewhere is not sent.
    assert_eq!((own_pods.live_upserts, own_pods.live_deletes), (3, 2));

    // Each Ack counted once, and both agents' streams ended on the server when they left.
    assert_eq!(acks_seen(), acks_before + 2);
    wait_until("the server sees both agents leave", || {
        server.hub.stats().connected_agents == 0
    })
    .await;
    server.shutdown.cancel();
}

async fn grpc_go_gets_the_status_of_a_refused_hello(transport: Transport) {
    grpcagent();
    let mut server = TestServer::start_on(config(), transport).await;
    server.apply(&[pod("a", "p1", Some(NODE), 1)], &[]);
    let agent = GoAgent::spawn(&server, &["-node", NODE, "-resource", "v1/secrets"], 0);
    let output = agent.output().await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The status code and the server's message, percent-decoded by grpc-go.
    for part in [
        "gRPC status InvalidArgument",
        r#"resource "v1/secrets" is not served by this server; it serves: v1/pods, v1/namespaces"#,
    ] {
        assert!(stderr.contains(part), "no {part:?} in: {stderr}");
    }
    assert!(output.stdout.is_empty(), "{output:?}");
    server.shutdown.cancel();
}

async fn grpc_go_gets_unavailable_when_the_server_shuts_down(transport: Transport) {
    grpcagent();
    let _serial = ACK_COUNTING.lock().await;
    let acks_before = acks_seen();
    let mut server = TestServer::start_on(config(), transport).await;
    server.apply(&[pod("a", "p1", Some(NODE), 1)], &[]);
    // It waits for a delta that never comes, on a stream it has half-closed.
    let mut agent = GoAgent::spawn(&server, &["-node", NODE, "-resource", "v1/pods"], 1);
    wait_for_acks(acks_before + 1, &mut [&mut agent]).await;
    server.shutdown.cancel();
    let output = agent.output().await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in [
        "waiting for 1 delta frames (got 0)",
        "gRPC status Unavailable: server shutting down",
    ] {
        assert!(stderr.contains(part), "no {part:?} in: {stderr}");
    }
    let served = tokio::time::timeout(WAIT, server.task).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
}

/// The size of the one big pod: bigger than any single window or frame on the way.
const BIG_POD_BYTES: usize = 1536 * 1024;

/// 20 namespaces and 2,400 pods of about 300 bytes on nodes n0 to n10 or on none, so the
/// snapshot takes several frames and messages, plus one big pod on [`NODE`].
fn initial_objects() -> (Vec<ProjectedObject>, Vec<ProjectedObject>) {
    let namespaces_ = (0..20).map(|i| namespace(&format!("ns-{i}"), 1)).collect();
    let mut pods_: Vec<_> = (0..2400)
        .map(|i| {
            let node = (i % 12 != 11).then(|| format!("n{}", i % 12));
            padded_pod(
                &format!("ns-{}", i % 20),
                &format!("p-{i}"),
                node.as_deref(),
                256,
            )
        })
        .collect();
    pods_.push(padded_pod("ns-0", "big", Some(NODE), BIG_POD_BYTES));
    (pods_, namespaces_)
}

/// One batch touching [`NODE`], another node and the namespaces. With 12 nodes, `p-1` and
/// `p-13` are on n1, `p-2` on n2 and `p-3` on n3.
fn changes() -> Batch {
    let mut batch = Batch::new();
    let pods_ = pods();
    batch.apply(&pods_, padded_pod("ns-1", "p-1", Some(NODE), 300)); // updated
    batch.apply(&pods_, padded_pod("ns-0", "fresh", Some(NODE), 10)); // added
    batch.apply(&pods_, padded_pod("ns-2", "p-2", Some(NODE), 256)); // moved to n1
    batch.apply(&pods_, padded_pod("ns-13", "p-13", Some("n2"), 256)); // moved away
    batch.apply(&pods_, padded_pod("ns-3", "p-3", Some("n3"), 999)); // elsewhere
    batch.delete(&pods_, "ns-5", "p-25"); // on n1
    batch.apply(&namespaces(), namespace("ns-new", 1));
    batch.delete(&namespaces(), "", "ns-19");
    batch
}

/// A pod whose value carries `pad` bytes of padding (its length also makes the value new).
fn padded_pod(namespace_: &str, name: &str, node: Option<&str>, pad: usize) -> ProjectedObject {
    let mut object = pod(namespace_, name, node, 1);
    let value = format!(
        r#"{{"kind":"Pod","name":"{name}","node":"{}","pad":"{}"}}"#,
        node.unwrap_or(""),
        "x".repeat(pad)
    );
    object.value = Bytes::from(value);
    object
}

/// What grpcagent prints.
#[derive(Debug, Deserialize)]
struct Report {
    health: String,
    server_id: String,
    epoch: String,
    head_revision: u64,
    resume_mode: String,
    max_message_bytes: u32,
    synced_revision: u64,
    acked_revision: u64,
    revision: u64,
    largest_message: usize,
    frames: usize,
    replace_frames: usize,
    delta_frames: usize,
    resources: std::collections::BTreeMap<String, ResourceReport>,
}

/// What grpcagent saw of one resource.
#[derive(Debug, Deserialize)]
struct ResourceReport {
    catchup_upserts: usize,
    catchup_deletes: usize,
    synced_objects: usize,
    synced_hash: String,
    live_upserts: usize,
    live_deletes: usize,
    objects: usize,
    hash: String,
}

impl ResourceReport {
    /// At `Synced`, the agent held exactly `expected`'s objects of `resource`, all from upserts.
    fn assert_synced(&self, resource: &Resource, expected: &State) {
        let (count, hash) = summary(resource, expected);
        assert_eq!((self.synced_objects, &self.synced_hash), (count, &hash));
        assert_eq!((self.catchup_upserts, self.catchup_deletes), (count, 0));
    }

    /// At the end, the agent held exactly `expected`'s objects of `resource`.
    fn assert_now(&self, resource: &Resource, expected: &State) {
        let (count, hash) = summary(resource, expected);
        assert_eq!((self.objects, &self.hash), (count, &hash));
    }
}

/// The object count and content hash of `resource` in `state`, as grpcagent computes them: the
/// XOR over objects of FNV-1a 64 of namespace, 0, name, 0, value.
fn summary(resource: &Resource, state: &State) -> (usize, String) {
    let resource = resource.to_string();
    let mut count = 0;
    let mut hash = 0u64;
    for ((r, namespace_, name), value) in state {
        if *r == resource {
            count += 1;
            hash ^= fnv1a(&[namespace_.as_bytes(), b"\0", name.as_bytes(), b"\0", value]);
        }
    }
    (count, format!("{hash:016x}"))
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// One running grpcagent.
struct GoAgent {
    args: Vec<String>,
    child: Child,
}

impl GoAgent {
    /// Starts grpcagent against `server` with `args`, reading until `deltas` delta frames.
    fn spawn(server: &TestServer, args: &[&str], deltas: usize) -> Self {
        let mut all: Vec<String> = ["-addr".into(), server.addr.to_string()].into();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.extend(["-wait-deltas".into(), deltas.to_string()]);
        all.extend(["-timeout".into(), format!("{}s", WAIT.as_secs())]);
        let child = Command::new(grpcagent())
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self { args: all, child }
    }

    /// Waits for it to exit, a little longer than its own timeout.
    async fn output(self) -> Output {
        let wait = WAIT + Duration::from_secs(5);
        tokio::time::timeout(wait, self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("grpcagent {:?} still running after {wait:?}", self.args))
            .unwrap()
    }

    /// Waits for it to exit successfully and returns its report.
    async fn report(self) -> Report {
        let args = self.args.join(" ");
        let output = self.output().await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "grpcagent {args} failed ({}): {stderr}",
            output.status
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            let stdout = String::from_utf8_lossy(&output.stdout);
            panic!("grpcagent {args} printed no report ({e}): {stdout}")
        })
    }

    /// Fails the test if the agent has already exited.
    async fn assert_running(&mut self, waiting_for: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr)
                    .await
                    .unwrap();
            }
            panic!(
                "grpcagent {} exited ({status}) before {waiting_for}: {stderr}",
                self.args.join(" ")
            );
        }
    }
}

/// Acks the server has read, over the whole process: `cattail_agent_lag_revisions` records one
/// sample per Ack.
fn acks_seen() -> u64 {
    let text = cattail_server::admin::metrics_handle().render();
    text.lines()
        .find_map(|line| line.strip_prefix("cattail_agent_lag_revisions_count "))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// Waits until the server has read `count` Acks in all, while every agent still runs.
async fn wait_for_acks(count: u64, agents: &mut [&mut GoAgent]) {
    let deadline = Instant::now() + WAIT;
    while acks_seen() < count {
        for agent in agents.iter_mut() {
            agent.assert_running("the server saw its Ack").await;
        }
        assert!(
            Instant::now() < deadline,
            "the server read {} of {count} Acks in {WAIT:?}",
            acks_seen()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The grpcagent binary: `CATTAIL_GRPCAGENT_BIN`, or built once per process (and per change)
/// by `cattail_testenv`. Tests call it before they start a server, so a build never runs
/// against a server's timers.
fn grpcagent() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| match std::env::var_os("CATTAIL_GRPCAGENT_BIN") {
        Some(binary) if !binary.is_empty() => PathBuf::from(binary),
        _ => cattail_testenv::go_binary("./cmd/grpcagent").unwrap_or_else(|e| {
            panic!("{e}\n(this test builds testenv/cmd/grpcagent with Go 1.26 or newer)")
        }),
    })
}
