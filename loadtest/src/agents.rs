//! `agents`: many agents in one process, on one runtime, driven over stdin and reporting on stdout.
//!
//! The orchestrator (`run`, `demo`) starts this as a child process, so agents never share the
//! server's open-files limit or CPU accounting. Commands on stdin, one per line: `report LABEL`
//! prints the window's histograms and starts a new window; `check` makes the probe agents compare
//! their caches with the API server; `stop` (or stdin closing, as when the parent dies) ends the
//! process. A progress line is printed every second. Every loop is bounded by `--max-duration`.

mod light;
pub mod probe;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use crate::stats::{Hist, HistWire};

pub use light::{LightAgent, STAMP_SAMPLE, Trace};

/// The resources every agent subscribes to; pods are node scoped.
pub const SUBSCRIPTIONS: [(&str, bool); 7] = [
    ("v1/pods", true),
    ("v1/namespaces", false),
    ("v1/nodes", false),
    ("v1/services", false),
    ("discovery.k8s.io/v1/endpointslices", false),
    ("networking.k8s.io/v1/networkpolicies", false),
    ("v1/serviceaccounts", false),
];

/// The settings of one agents process.
#[derive(Clone, Debug)]
pub struct AgentsConfig {
    /// cattail gRPC endpoints (`http://host:port`); agent `i` uses endpoint `i % len`.
    pub endpoints: Vec<String>,
    /// How many agents.
    pub count: u32,
    /// The index of the first agent; agent `i` runs on node `i % nodes`.
    pub first_index: u32,
    /// Nodes in the cluster.
    pub nodes: u32,
    /// How many of the agents are probes using the real cattail-client.
    pub probes: u32,
    /// A kubeconfig for the probes' correctness check.
    pub kubeconfig: Option<PathBuf>,
    /// Where the first light agent writes the bytes it received, for the TCP baseline.
    pub trace_dir: Option<PathBuf>,
    /// The process stops after this long, whatever happens.
    pub max_duration: Duration,
    /// The CA bundle that signed the server's certificate, for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
}

/// Counters of one agent, read by the reporter.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Bytes received in the current window.
    pub bytes: AtomicU64,
    /// Reconnects in the current window.
    pub reconnects: AtomicU64,
    /// Whether the agent's current stream has reached `Synced`.
    pub synced: AtomicBool,
    /// Whether the agent has a stream open.
    pub connected: AtomicBool,
}

/// Histograms shared by every agent of the process.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Connect (or reconnect) to `Synced`, in milliseconds.
    pub sync_ms: Hist,
    /// Publish to receipt of each delta frame, in microseconds.
    pub fanout_us: Hist,
    /// API write (the stamp) to receipt, in microseconds.
    pub e2e_us: Hist,
    /// Errors seen, by message (first few kept).
    pub errors: Vec<String>,
    /// Errors seen in total.
    pub error_count: u64,
}

/// State shared by every agent of the process.
#[derive(Debug, Default)]
pub struct Shared {
    /// The histograms.
    pub recorder: Mutex<Recorder>,
    /// The newest revision any agent has seen.
    pub revision: AtomicU64,
    /// Messages received by all agents.
    pub messages: AtomicU64,
    /// One entry per agent.
    pub agents: Vec<Arc<AgentCounters>>,
}

impl Shared {
    /// Locks the recorder.
    pub fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes an error of one agent.
    pub fn error(&self, error: String) {
        let mut r = self.recorder();
        r.error_count += 1;
        if r.errors.len() < 5 && !r.errors.contains(&error) {
            r.errors.push(error);
        }
    }
}

/// One progress line.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Agents with a stream open.
    pub connected: u32,
    /// Agents whose stream is synced.
    pub synced: u32,
    /// The newest revision seen.
    pub revision: u64,
    /// Messages received so far.
    pub messages: u64,
    /// Errors so far.
    pub errors: u64,
    /// Fan-out latency p99 of the current window, µs.
    pub fanout_p99_us: u64,
}

/// The measurements of one window, as printed on `report`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Window {
    /// The label given with `report`.
    pub label: String,
    /// Agents in the process.
    pub agents: u32,
    /// Connect to `Synced`, ms.
    pub sync_ms: HistWire,
    /// Fan-out latency, µs.
    pub fanout_us: HistWire,
    /// End-to-end latency, µs.
    pub e2e_us: HistWire,
    /// Bytes received per agent in the window.
    pub bytes_per_agent: HistWire,
    /// Reconnects per agent in the window.
    pub reconnects_per_agent: HistWire,
    /// Total bytes received in the window.
    pub bytes_total: u64,
    /// Total reconnects in the window.
    pub reconnects_total: u64,
    /// Errors in the window, and a few of them.
    pub error_count: u64,
    /// A few distinct errors.
    pub errors: Vec<String>,
}

/// A line of the agents process's output.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentsLine {
    /// Every second.
    Progress(Progress),
    /// After `report`.
    Report(Window),
    /// After `check`.
    Check(probe::CheckResult),
}

fn progress(shared: &Shared) -> Progress {
    let count =
        |f: fn(&AgentCounters) -> bool| shared.agents.iter().filter(|a| f(a)).count() as u32;
    // One lock, released before the struct is built.
    let (errors, fanout_p99_us) = {
        let r = shared.recorder();
        (r.error_count, r.fanout_us.quantile(0.99))
    };
    Progress {
        connected: count(|a| a.connected.load(Ordering::Relaxed)),
        synced: count(|a| a.synced.load(Ordering::Relaxed)),
        revision: shared.revision.load(Ordering::Relaxed),
        messages: shared.messages.load(Ordering::Relaxed),
        errors,
        fanout_p99_us,
    }
}

fn take_window(shared: &Shared, label: &str) -> Window {
    let mut bytes = Hist::new();
    let mut reconnects = Hist::new();
    let (mut bytes_total, mut reconnects_total) = (0, 0);
    for agent in &shared.agents {
        let b = agent.bytes.swap(0, Ordering::Relaxed);
        let r = agent.reconnects.swap(0, Ordering::Relaxed);
        bytes.record(b);
        reconnects.record_n(r.max(1), 1);
        bytes_total += b;
        reconnects_total += r;
    }
    let mut r = shared.recorder();
    let window = Window {
        label: label.to_owned(),
        agents: shared.agents.len() as u32,
        sync_ms: r.sync_ms.to_wire(),
        fanout_us: r.fanout_us.to_wire(),
        e2e_us: r.e2e_us.to_wire(),
        bytes_per_agent: bytes.to_wire(),
        reconnects_per_agent: reconnects.to_wire(),
        bytes_total,
        reconnects_total,
        error_count: r.error_count,
        errors: std::mem::take(&mut r.errors),
    };
    r.sync_ms.clear();
    r.fanout_us.clear();
    r.e2e_us.clear();
    r.error_count = 0;
    window
}

fn print(line: &AgentsLine) {
    if let Ok(text) = serde_json::to_string(line) {
        println!("{text}");
    }
}

/// Runs the agents until `stop`, stdin's end, or `max_duration`.
pub async fn run(config: AgentsConfig) -> anyhow::Result<()> {
    anyhow::ensure!(!config.endpoints.is_empty(), "give at least one --endpoint");
    anyhow::ensure!(config.count > 0, "--count must be at least 1");
    anyhow::ensure!(config.nodes > 0, "--nodes must be at least 1");
    let tls = match &config.ca_file {
        Some(path) => Some(light::tls_config(path)?),
        None => None,
    };
    let shared = Arc::new(Shared {
        agents: (0..config.count)
            .map(|_| Arc::new(AgentCounters::default()))
            .collect(),
        ..Shared::default()
    });
    let stop = CancellationToken::new();
    let trace = Arc::new(Trace::default());
    let probes = probe::Probes::default();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..config.count {
        let index = config.first_index + i;
        let endpoint = config.endpoints[index as usize % config.endpoints.len()].clone();
        let node = crate::scenario::node_name(index % config.nodes);
        let counters = shared.agents[i as usize].clone();
        if i < config.probes {
            tasks.spawn(probe::run(
                probes.clone(),
                index,
                node,
                probe::Target {
                    endpoint,
                    ca_file: config.ca_file.clone(),
                },
                counters,
                shared.clone(),
                stop.clone(),
            ));
        } else {
            let agent = LightAgent {
                id: format!("lt-agent-{index}"),
                node,
                endpoint,
                tls: tls.clone(),
                counters,
                shared: shared.clone(),
                trace: (i == config.probes).then(|| trace.clone()),
                stamps: index.is_multiple_of(light::STAMP_SAMPLE),
            };
            tasks.spawn(agent.run(stop.clone()));
        }
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = tokio::time::sleep(config.max_duration);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tick.tick() => print(&AgentsLine::Progress(progress(&shared))),
            line = stdin.next_line() => {
                let Ok(Some(line)) = line else { break };
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("report") => {
                        let label = words.next().unwrap_or("window");
                        if let Some(dir) = &config.trace_dir
                            && let Err(error) = trace.write(dir)
                        {
                            shared.error(format!("writing the trace: {error}"));
                        }
                        print(&AgentsLine::Report(take_window(&shared, label)));
                    }
                    Some("check") => {
                        let result = probes.check(config.kubeconfig.as_deref(), config.nodes).await;
                        print(&AgentsLine::Check(result));
                    }
                    Some("stop") => break,
                    _ => {}
                }
            }
        }
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
