//! What the interop scenarios share: the objects and changes they serve, the report every agent
//! prints (one JSON line, the same fields for each stack), and the agent processes themselves.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use cattail_server::config::Resource;
use cattail_server::store::{Batch, ProjectedObject};
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::fanout_support::*;

/// The node whose pods the scoped agent subscribes to.
pub(crate) const NODE: &str = "n1";
/// Acks are seen only in a process-wide metric, so scenarios that count them run one at a time.
pub(crate) static ACK_COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A gRPC stack with an agent of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stack {
    /// grpc-go: `testenv/cmd/grpcagent`.
    Go,
    /// Python's grpcio: `interop/python/cattail_agent.py`.
    Python,
}

impl Stack {
    /// Whether this stack's agent can run here: grpc-go's is built (once per process), the
    /// Python one needs its packages (see [`python_agent`]). Scenarios call it before they start
    /// a server, so a build never runs against a server's timers, and return when it is false.
    pub(crate) fn ready(self) -> bool {
        match self {
            Stack::Go => !crate::grpcagent().as_os_str().is_empty(),
            Stack::Python => python_agent().is_some(),
        }
    }

    /// The agent's program; [`Stack::ready`] said it can run.
    pub(crate) fn program(self) -> Command {
        match self {
            Stack::Go => Command::new(crate::grpcagent()),
            Stack::Python => {
                let mut command = Command::new(python());
                command.args(python_agent());
                command
            }
        }
    }

    /// How the agent prints a gRPC status code, given as tonic's `Code` prints it
    /// (`InvalidArgument`): grpc-go the same, grpcio in upper snake case (`INVALID_ARGUMENT`).
    pub(crate) fn status(self, code: tonic::Code) -> String {
        let camel = format!("{code:?}");
        match self {
            Stack::Go => format!("gRPC status {camel}"),
            Stack::Python => {
                let mut snake = String::new();
                for (i, c) in camel.chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_uppercase());
                }
                format!("gRPC status {snake}")
            }
        }
    }
}

/// The Python interpreter: `CATTAIL_PYTHON`, or `python3`.
fn python() -> PathBuf {
    std::env::var_os("CATTAIL_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// The Python agent's script, if Python has the agent's packages. Without them the Python
/// scenarios are skipped with a loud message, so `cargo test --workspace` works on a machine
/// with Rust and Go only; under CI (`CI` set, `.ci/run` installs them) they fail instead.
fn python_agent() -> Option<&'static Path> {
    static SCRIPT: OnceLock<Option<PathBuf>> = OnceLock::new();
    SCRIPT
        .get_or_init(|| {
            let imports = "import grpc, grpc_tools, grpc_health, xxhash, zstandard";
            let problem = match std::process::Command::new(python())
                .args(["-c", imports])
                .output()
            {
                Ok(output) if output.status.success() => None,
                Ok(output) => Some(String::from_utf8_lossy(&output.stderr).into_owned()),
                Err(e) => Some(format!("cannot run {:?}: {e}", python())),
            };
            let Some(problem) = problem else {
                let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
                return Some(root.join("interop/python/cattail_agent.py"));
            };
            let advice = "the Python interop agent needs python3 and its packages: \
                          `pip install -r interop/python/requirements.txt`";
            assert!(std::env::var_os("CI").is_none(), "{advice}:\n{problem}");
            eprintln!("SKIPPED: the Python interop scenarios; {advice}:\n{problem}");
            None
        })
        .as_deref()
}

/// The size of the one big pod: bigger than any single window or frame on the way.
pub(crate) const BIG_POD_BYTES: usize = 1536 * 1024;

/// 20 namespaces and 2,400 pods of about 300 bytes on nodes n0 to n10 or on none, so the
/// snapshot takes several frames and messages, plus one big pod on [`NODE`].
pub(crate) fn initial_objects() -> (Vec<ProjectedObject>, Vec<ProjectedObject>) {
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
pub(crate) fn changes() -> Batch {
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
pub(crate) fn padded_pod(
    namespace_: &str,
    name: &str,
    node: Option<&str>,
    pad: usize,
) -> ProjectedObject {
    let mut object = pod(namespace_, name, node, 1);
    let value = format!(
        r#"{{"kind":"Pod","name":"{name}","node":"{}","pad":"{}"}}"#,
        node.unwrap_or(""),
        "x".repeat(pad)
    );
    object.value = Bytes::from(value);
    object
}

/// What an agent prints: one JSON line.
#[derive(Debug, Deserialize)]
pub(crate) struct Report {
    pub(crate) health: String,
    pub(crate) server_id: String,
    pub(crate) epoch: String,
    pub(crate) head_revision: u64,
    pub(crate) resume_mode: String,
    pub(crate) max_message_bytes: u32,
    pub(crate) synced_revision: u64,
    pub(crate) acked_revision: u64,
    pub(crate) revision: u64,
    pub(crate) bytes: usize,
    pub(crate) largest_message: usize,
    pub(crate) frames: usize,
    pub(crate) replace_frames: usize,
    pub(crate) delta_frames: usize,
    /// Buckets named by the replace frames of digest resyncs (the Python agent counts them).
    #[serde(default)]
    pub(crate) replaced_buckets: usize,
    pub(crate) resources: std::collections::BTreeMap<String, ResourceReport>,
}

/// What an agent saw of one resource.
#[derive(Debug, Deserialize)]
pub(crate) struct ResourceReport {
    pub(crate) catchup_upserts: usize,
    pub(crate) catchup_deletes: usize,
    pub(crate) synced_objects: usize,
    pub(crate) synced_hash: String,
    pub(crate) live_upserts: usize,
    pub(crate) live_deletes: usize,
    pub(crate) objects: usize,
    pub(crate) hash: String,
}

impl ResourceReport {
    /// At `Synced`, the agent held exactly `expected`'s objects of `resource`, all from upserts.
    pub(crate) fn assert_synced(&self, resource: &Resource, expected: &State) {
        let (count, hash) = summary(resource, expected);
        assert_eq!((self.synced_objects, &self.synced_hash), (count, &hash));
        assert_eq!((self.catchup_upserts, self.catchup_deletes), (count, 0));
    }

    /// At the end, the agent held exactly `expected`'s objects of `resource`.
    pub(crate) fn assert_now(&self, resource: &Resource, expected: &State) {
        let (count, hash) = summary(resource, expected);
        assert_eq!((self.objects, &self.hash), (count, &hash));
    }
}

/// The object count and content hash of `resource` in `state`, as the agents compute them: the
/// XOR over objects of FNV-1a 64 of namespace, 0, name, 0, value.
pub(crate) fn summary(resource: &Resource, state: &State) -> (usize, String) {
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

/// One running agent process.
pub(crate) struct Agent {
    stack: Stack,
    args: Vec<String>,
    child: Child,
}

impl Agent {
    /// Starts `stack`'s agent against `server` with `args`, reading until `deltas` delta frames.
    pub(crate) fn spawn(stack: Stack, server: &TestServer, args: &[&str], deltas: usize) -> Self {
        let mut all: Vec<String> = ["-addr".into(), server.addr.to_string()].into();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.extend(["-wait-deltas".into(), deltas.to_string()]);
        all.extend(["-timeout".into(), format!("{}s", WAIT.as_secs())]);
        let child = stack
            .program()
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            stack,
            args: all,
            child,
        }
    }

    /// Waits for it to exit, a little longer than its own timeout.
    pub(crate) async fn output(self) -> Output {
        let wait = WAIT + Duration::from_secs(5);
        tokio::time::timeout(wait, self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{:?} agent {:?} still running after {wait:?}",
                    self.stack, self.args
                )
            })
            .unwrap()
    }

    /// Waits for it to exit successfully and returns its report.
    pub(crate) async fn report(self) -> Report {
        let (stack, args) = (self.stack, self.args.join(" "));
        let output = self.output().await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{stack:?} agent {args} failed ({}): {stderr}",
            output.status
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            let stdout = String::from_utf8_lossy(&output.stdout);
            panic!("{stack:?} agent {args} printed no report ({e}): {stdout}")
        })
    }

    /// Fails the test if the agent has already exited.
    pub(crate) async fn assert_running(&mut self, waiting_for: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = self.child.stderr.take() {
                tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr)
                    .await
                    .unwrap();
            }
            panic!(
                "{:?} agent {} exited ({status}) before {waiting_for}: {stderr}",
                self.stack,
                self.args.join(" ")
            );
        }
    }
}

/// Acks the server has read, over the whole process: `cattail_agent_lag_revisions` records one
/// sample per Ack.
pub(crate) fn acks_seen() -> u64 {
    let text = cattail_server::admin::metrics_handle().render();
    text.lines()
        .find_map(|line| line.strip_prefix("cattail_agent_lag_revisions_count "))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// Waits until the server has read `count` Acks in all, while every agent still runs.
pub(crate) async fn wait_for_acks(count: u64, agents: &mut [&mut Agent]) {
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

pub(crate) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
