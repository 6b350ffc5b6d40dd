//! `cost`: the server's cost per delivered update, on a fixed replayed workload, in
//! instructions (under callgrind) and in CPU seconds.
//!
//! Wall-clock CPU on a shared two-core machine moves by tens of percent from run to run, too
//! much to see a change of a few percent. So the server here runs without Kubernetes: the
//! `cost-server` process holds the scenario's cluster in memory, feeds the real writer, hub and
//! native gRPC transport the same watch events the API server would send for it, then replays a
//! churn [`Plan`] of fixed writes at a fixed pace. The same seed, scenario and agent count give
//! the same inputs, so callgrind counts (nearly) the same instructions every time, whatever else
//! the machine does.
//!
//! The driver (`cost`) starts that process, optionally under
//! `valgrind --tool=callgrind --instr-atstart=no`, connects light agents from a separate
//! `agents` process (not measured), waits until they are synced, switches instruction collection
//! on (`callgrind_control --instr=on`), and lets the replay run. Only the steady state is
//! counted: not the start, the connects or the snapshots. Every count is divided by the
//! (update × agent) pairs the replay delivers: each projected change, times the agents
//! subscribed to it (the agents of its node for a pod, every agent otherwise).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use cattail_server::config::{ResourceConfig, ServerConfig, TlsConfig};
use cattail_server::fanout::Hub;
use cattail_server::k8s::project::Projection;
use cattail_server::k8s::watch::{WatchEvent, WatchInput};
use cattail_server::serve::ServeOptions;
use cattail_server::store::{ObjectKey, Store};
use cattail_server::tls::ServerTls;
use cattail_server::writer::Writer;
use json_patch::merge;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentsConfig;
use crate::child::AgentsProcess;
use crate::churn::{Plan, Write};
use crate::objects::{self, STAMP_ANNOTATION};
use crate::pki::Pki;
use crate::scenario::Scenario;
use crate::server::{loadtest_config, parse_metrics};

/// What the replay did, as the `cost-server` process reports it on its last stdout line.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplayReport {
    /// Writes replayed.
    pub writes: u64,
    /// Writes that changed a projected object (or made one appear or disappear).
    pub changes: u64,
    /// (update × agent) pairs: each change times the agents subscribed to it.
    pub deliveries: u64,
    /// gRPC messages the server sent during the replay.
    pub messages: u64,
    /// Bytes the server sent during the replay.
    pub bytes: u64,
    /// The server's CPU seconds during the replay (user + system).
    pub cpu_seconds: f64,
}

/// What `cost` reports.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CostReport {
    /// The scenario, agents, seed, writes and rate.
    pub workload: Value,
    /// The replay's own figures.
    pub replay: ReplayReport,
    /// Instructions executed by the server during the replay (callgrind's `Ir`), when run
    /// under callgrind.
    pub instructions: Option<u64>,
    /// `instructions / deliveries`.
    pub instructions_per_delivery: Option<f64>,
    /// `cpu_seconds / deliveries`, in microseconds.
    pub cpu_us_per_delivery: f64,
    /// `bytes / deliveries`.
    pub bytes_per_delivery: f64,
}

/// The settings of one measurement.
#[derive(Clone, Debug)]
pub struct CostConfig {
    /// The cluster.
    pub scenario: Scenario,
    /// Light agents (agent `i` on node `i % nodes`).
    pub agents: u32,
    /// Writes to replay.
    pub writes: u64,
    /// Writes per second (slow enough that each change goes out on its own, even under
    /// callgrind, so batching does not depend on timing).
    pub rate: u32,
    /// The churn's seed.
    pub seed: u64,
    /// Run the server under callgrind, writing its output here.
    pub callgrind_out: Option<PathBuf>,
    /// Serve TLS with the [`Pki`] in this directory (the driver creates it); h2c otherwise.
    pub tls_dir: Option<PathBuf>,
}

/// The server's config for the replay: the load test's (the default profile plus the stamp).
fn replay_config() -> anyhow::Result<ServerConfig> {
    let yaml = serde_json::to_string(&loadtest_config())?;
    Ok(ServerConfig::from_yaml_str(&yaml)?)
}

/// The kind of each resource of the load test's config.
fn kind_of(resource: &str) -> &'static str {
    match resource {
        "v1/pods" => "Pod",
        "v1/namespaces" => "Namespace",
        "v1/nodes" => "Node",
        "v1/services" => "Service",
        "discovery.k8s.io/v1/endpointslices" => "EndpointSlice",
        "networking.k8s.io/v1/networkpolicies" => "NetworkPolicy",
        "v1/serviceaccounts" => "ServiceAccount",
        _ => "Unknown",
    }
}

/// The scenario's cluster in memory, projected as the server would project it.
struct Cluster {
    scenario: Scenario,
    agents: u32,
    projections: Vec<Projection>,
    /// Raw objects by (resource index, namespace, name).
    objects: HashMap<(usize, String, String), Value>,
    /// What agents hold: the projected bytes of every object that is not left out.
    held: HashMap<(usize, String, String), Bytes>,
    version: u64,
}

impl Cluster {
    fn new(scenario: Scenario, agents: u32, resources: &[ResourceConfig]) -> anyhow::Result<Self> {
        let projections = resources
            .iter()
            .map(|r| Projection::new(r, kind_of(r.resource.as_str())))
            .collect::<Result<_, _>>()?;
        let mut cluster = Self {
            scenario,
            agents,
            projections,
            objects: HashMap::new(),
            held: HashMap::new(),
            version: 0,
        };
        let s = &scenario;
        let mut seeded = Vec::new();
        seeded.extend((0..s.namespaces).map(|i| ("v1/namespaces", objects::namespace(i))));
        for i in 0..s.nodes {
            let mut node = objects::node(i);
            merge(&mut node, &objects::node_status(i));
            seeded.push(("v1/nodes", node));
        }
        seeded.extend((0..s.services).map(|i| ("v1/services", objects::service(s, i))));
        seeded.extend((0..s.services).map(|i| {
            (
                "discovery.k8s.io/v1/endpointslices",
                objects::endpoint_slice(s, i),
            )
        }));
        for i in 0..s.pods {
            let mut pod = objects::pod(s, i, None, None);
            merge(
                &mut pod,
                &objects::pod_status(s, i, &objects::pod_name(i), true, 0),
            );
            seeded.push(("v1/pods", pod));
        }
        seeded.extend((0..s.policies).map(|i| {
            (
                "networking.k8s.io/v1/networkpolicies",
                objects::network_policy(s, i, 80, None),
            )
        }));
        for (resource, value) in seeded {
            let index = cluster.index(resource)?;
            cluster.objects.insert(key(index, &value), value);
        }
        Ok(cluster)
    }

    fn index(&self, resource: &str) -> anyhow::Result<usize> {
        self.projections
            .iter()
            .position(|p| p.resource().as_str() == resource)
            .with_context(|| format!("{resource} is not served"))
    }

    /// The whole list of every resource, as the watchers send it first.
    fn initial(&mut self) -> anyhow::Result<Vec<WatchInput>> {
        let mut events = Vec::new();
        let mut keys: Vec<_> = self.objects.keys().cloned().collect();
        keys.sort();
        for (index, projection) in self.projections.iter().enumerate() {
            let resource = projection.resource().clone();
            events.push(WatchInput {
                resource: resource.clone(),
                event: WatchEvent::Init,
            });
            for k in keys.iter().filter(|k| k.0 == index) {
                self.version += 1;
                let mut value = self.objects[k].clone();
                value["metadata"]["resourceVersion"] = json!(self.version.to_string());
                if projection.excluded_by(&value).is_some() {
                    continue;
                }
                let projected = projection.project(&value)?;
                self.held.insert(k.clone(), projected.value.clone());
                events.push(WatchInput {
                    resource: resource.clone(),
                    event: WatchEvent::InitApply(projected),
                });
            }
            events.push(WatchInput {
                resource,
                event: WatchEvent::InitDone,
            });
        }
        Ok(events)
    }

    /// Agents subscribed to an object of resource `index` on node `node` (for pods).
    fn subscribers(&self, index: usize, node: Option<u32>) -> u64 {
        let nodes = self.scenario.nodes;
        match (self.projections[index].resource().as_str(), node) {
            ("v1/pods", Some(node)) if node < self.agents => {
                u64::from((self.agents - node).div_ceil(nodes))
            }
            ("v1/pods", _) => 0,
            _ => u64::from(self.agents),
        }
    }

    /// The watch event for the object at `k` as it now is (or is gone), and the pairs it
    /// delivers if it changes what agents hold (0 when it does not).
    fn event(&mut self, k: (usize, String, String), node: Option<u32>) -> anyhow::Result<Replayed> {
        let projection = &self.projections[k.0];
        let resource = projection.resource().clone();
        let current = match self.objects.get_mut(&k) {
            Some(value) => {
                self.version += 1;
                value["metadata"]["resourceVersion"] = json!(self.version.to_string());
                match projection.excluded_by(value) {
                    Some(_) => None,
                    None => Some(projection.project(value)?),
                }
            }
            None => None,
        };
        let changed = match &current {
            Some(p) => self.held.get(&k) != Some(&p.value),
            None => self.held.contains_key(&k),
        };
        let event = match current {
            Some(projected) => {
                self.held.insert(k.clone(), projected.value.clone());
                WatchEvent::Apply(projected)
            }
            None => {
                self.held.remove(&k);
                WatchEvent::Delete(ObjectKey::new(k.1.clone(), k.2.clone()))
            }
        };
        let pairs = if changed {
            self.subscribers(k.0, node)
        } else {
            0
        };
        Ok(Replayed {
            input: WatchInput { resource, event },
            changed,
            pairs,
        })
    }

    /// Applies one planned write to the cluster; returns the watch events it causes and the
    /// (update × agent) pairs they deliver.
    fn apply(&mut self, write: Write, n: u64) -> anyhow::Result<Vec<Replayed>> {
        let s = self.scenario;
        let pods = self.index("v1/pods")?;
        let stamp = json!({STAMP_ANNOTATION: n.to_string()});
        let pod_key = |pod: u32, name: String| (pods, s.namespace_of(pod), name);
        let mut events = Vec::new();
        match write {
            Write::PodLabel { pod, version } => {
                let k = pod_key(pod, objects::pod_name(pod));
                if let Some(value) = self.objects.get_mut(&k) {
                    let patch =
                        json!({"metadata": {"labels": {"version": version}, "annotations": stamp}});
                    merge(value, &patch);
                }
                events.push(self.event(k, Some(s.node_of_pod(pod)))?);
            }
            Write::PodStatusOnly { pod, ready } => {
                let name = objects::pod_name(pod);
                let status = objects::pod_status(&s, pod, &name, ready, n);
                let k = pod_key(pod, name);
                if let Some(value) = self.objects.get_mut(&k) {
                    merge(value, &json!({"status": status["status"]}));
                }
                events.push(self.event(k, Some(s.node_of_pod(pod)))?);
            }
            Write::PodCreate { pod, name, .. } => {
                // As the API server sees it: the pod, then the kubelet's status.
                let value = objects::pod(&s, pod, Some(&name), Some(i128::from(n)));
                let k = pod_key(pod, name.clone());
                self.objects.insert(k.clone(), value);
                events.push(self.event(k.clone(), Some(s.node_of_pod(pod)))?);
                let status = objects::pod_status(&s, pod, &name, true, n);
                if let Some(value) = self.objects.get_mut(&k) {
                    merge(value, &json!({"status": status["status"]}));
                }
                events.push(self.event(k, Some(s.node_of_pod(pod)))?);
            }
            Write::PodDelete { pod, name, .. } => {
                let k = pod_key(pod, name);
                self.objects.remove(&k);
                events.push(self.event(k, Some(s.node_of_pod(pod)))?);
            }
            Write::PolicyEdit {
                policy,
                port,
                version,
            } => {
                let index = self.index("networking.k8s.io/v1/networkpolicies")?;
                let fresh = objects::network_policy(&s, policy, port, None);
                let k = (index, s.namespace_of(policy), objects::policy_name(policy));
                if let Some(value) = self.objects.get_mut(&k) {
                    let patch = json!({"metadata": {"labels": {"version": version}, "annotations": stamp},
                                       "spec": fresh["spec"]});
                    merge(value, &patch);
                }
                events.push(self.event(k, None)?);
            }
        }
        Ok(events)
    }
}

/// One watch event of the replay.
struct Replayed {
    input: WatchInput,
    /// Whether it changes what agents hold (the writer publishes it).
    changed: bool,
    /// The (update × agent) pairs it delivers.
    pairs: u64,
}

fn key(index: usize, value: &Value) -> (usize, String, String) {
    let text = |field: &str| {
        value["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (index, text("namespace"), text("name"))
}

/// The server's own CPU seconds so far (user and system). From getrusage, not /proc: procfs
/// reads the auxiliary vector in a way valgrind's guest does not survive.
fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// The `cost-server` process: serves the scenario from memory on `listener`'s port, prints
/// `listening <addr>`, waits for a line on stdin, replays the writes, and prints its
/// [`ReplayReport`] as the last line.
pub async fn serve(config: CostConfig, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let server_config = replay_config()?;
    let mut options = ServeOptions::from_config(server_config.clone())?;
    if let Some(dir) = &config.tls_dir {
        let tls = TlsConfig {
            cert_file: Some(dir.join("tls.crt")),
            key_file: Some(dir.join("tls.key")),
            ..TlsConfig::default()
        };
        options.grpc.tls = Some(ServerTls::load(&tls)?);
    }
    let resources: Vec<_> = server_config
        .resources
        .iter()
        .map(|r| r.resource.clone())
        .collect();
    let store = Store::new(resources);
    let infos = cattail_server::serve::resource_infos(&server_config);
    let hub = Hub::new(options.fanout.clone(), store.snapshot(), infos);
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(4096);
    let writer = Writer::new(store, hub.clone(), server_config.store.batch_max_changes);
    let writer = tokio::spawn(writer.run(rx, shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let grpc = tokio::spawn(cattail_server::grpc::serve(
        listener,
        hub.clone(),
        options.grpc.clone(),
        shutdown.clone(),
    ));

    let mut cluster = Cluster::new(config.scenario, config.agents, &server_config.resources)?;
    for input in cluster.initial()? {
        tx.send(input).await.context("the writer stopped")?;
    }
    println!("listening {addr}");
    // Wait for the driver: agents synced (and callgrind collecting, if it is there).
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    stdin.next_line().await?;

    let sent = || {
        let m = parse_metrics(&metrics.render());
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0) as u64;
        (
            get("cattail_messages_sent_total"),
            get("cattail_sent_bytes_total"),
        )
    };
    let (messages0, bytes0) = sent();
    let cpu0 = own_cpu_seconds();
    let mut plan = Plan::new(config.seed, &config.scenario);
    let mut report = ReplayReport::default();
    let pacer = crate::pacer::Pacer::new(config.rate);
    for n in 0..config.writes {
        pacer.wait().await;
        let mut changed = false;
        for replayed in cluster.apply(plan.next(n), n)? {
            changed |= replayed.changed;
            report.deliveries += replayed.pairs;
            tx.send(replayed.input)
                .await
                .context("the writer stopped")?;
        }
        report.writes += 1;
        report.changes += u64::from(changed);
    }
    // Until the last message is out: nothing sent for a second.
    let mut last = sent();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sent();
        if now == last {
            break;
        }
        last = now;
    }
    report.cpu_seconds = own_cpu_seconds() - cpu0;
    report.messages = last.0 - messages0;
    report.bytes = last.1 - bytes0;
    println!("{}", serde_json::to_string(&report)?);
    // Exit here, without tearing down: freeing the in-memory cluster, the store and the hub
    // would otherwise be counted (they were 14% of a run's instructions), and callgrind counts
    // until the process ends.
    use std::io::Write as _;
    std::io::stdout().flush()?;
    drop((tx, writer, grpc, shutdown));
    std::process::exit(0)
}

/// Reads callgrind's total `Ir` from its output file (the `totals:` or `summary:` line).
pub fn callgrind_total(path: &Path) -> anyhow::Result<u64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .max()
        .with_context(|| format!("{} has no totals line", path.display()))
}

/// Runs one measurement: the `cost-server` child (under callgrind if asked), agents, the replay.
pub async fn measure(config: CostConfig) -> anyhow::Result<CostReport> {
    let pki = match &config.tls_dir {
        Some(dir) => Some(Pki::create(dir)?),
        None => None,
    };
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let exe = crate::child::loadtest_binary(&exe);
    let mut command = match &config.callgrind_out {
        Some(out) => {
            let mut c = tokio::process::Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg("--instr-atstart=no")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    command
        .arg("cost-server")
        .arg(format!("--nodes={}", config.scenario.nodes))
        .arg(format!("--pods={}", config.scenario.pods))
        .arg(format!("--agents={}", config.agents))
        .arg(format!("--writes={}", config.writes))
        .arg(format!("--rate={}", config.rate))
        .arg(format!("--seed={}", config.seed));
    if let Some(dir) = &config.tls_dir {
        command.arg("--tls-dir").arg(dir);
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut server = command
        .spawn()
        .with_context(|| format!("cannot start {} cost-server", exe.display()))?;
    let pid = server.id().context("the server has no pid")?;
    let mut stdin = server.stdin.take().context("no stdin")?;
    let mut lines = tokio::io::BufReader::new(server.stdout.take().context("no stdout")?).lines();
    let slow = if config.callgrind_out.is_some() {
        60
    } else {
        1
    };
    let addr = tokio::time::timeout(Duration::from_secs(30 * slow), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("listening ") {
                return Ok(addr.to_owned());
            }
        }
        bail!("the cost server stopped before it listened")
    })
    .await
    .context("the cost server did not start")??;

    let scheme = if pki.is_some() { "https" } else { "http" };
    let mut agents = AgentsProcess::spawn(&AgentsConfig {
        endpoints: vec![format!("{scheme}://{addr}")],
        count: config.agents,
        first_index: 0,
        nodes: config.scenario.nodes,
        probes: 0,
        kubeconfig: None,
        trace_dir: None,
        max_duration: Duration::from_secs(6 * 3600),
        ca_file: pki.map(|p| p.ca_file),
    })?;
    agents
        .wait_synced(config.agents, Duration::from_secs(60 * slow))
        .await?;
    if config.callgrind_out.is_some() {
        let status = tokio::process::Command::new("callgrind_control")
            .arg("--instr=on")
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .status()
            .await
            .context("cannot run callgrind_control (from valgrind)")?;
        anyhow::ensure!(
            status.success(),
            "callgrind_control --instr=on failed: {status}"
        );
    }
    stdin.write_all(b"go\n").await?;
    stdin.flush().await?;
    let mut replay = None;
    while let Some(line) = lines.next_line().await? {
        if let Ok(report) = serde_json::from_str::<ReplayReport>(&line) {
            replay = Some(report);
        }
    }
    let status = server.wait().await?;
    agents.stop().await;
    anyhow::ensure!(status.success(), "the cost server failed: {status}");
    let replay = replay.context("the cost server gave no report")?;
    let instructions = match &config.callgrind_out {
        Some(out) => Some(callgrind_total(out)?),
        None => None,
    };
    let per = |x: f64| x / replay.deliveries.max(1) as f64;
    Ok(CostReport {
        workload: json!({"nodes": config.scenario.nodes, "pods": config.scenario.pods,
            "agents": config.agents, "writes": config.writes, "rate": config.rate,
            "seed": config.seed, "tls": config.tls_dir.is_some()}),
        instructions_per_delivery: instructions.map(|i| per(i as f64)),
        instructions,
        cpu_us_per_delivery: per(replay.cpu_seconds * 1e6),
        bytes_per_delivery: per(replay.bytes as f64),
        replay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(agents: u32) -> Cluster {
        let config = replay_config().unwrap();
        Cluster::new(
            Scenario::sized(5, 100, agents, 10),
            agents,
            &config.resources,
        )
        .unwrap()
    }

    #[test]
    fn the_initial_list_leaves_out_nothing_the_seed_runs_and_projects_it_all() {
        let mut c = cluster(5);
        let events = c.initial().unwrap();
        let applies = events
            .iter()
            .filter(|e| matches!(e.event, WatchEvent::InitApply(_)))
            .count();
        // Every seeded pod runs with an IP, so nothing is left out.
        assert_eq!(applies, c.objects.len());
        assert_eq!(c.held.len(), c.objects.len());
    }

    #[test]
    fn a_replayed_write_counts_the_agents_it_reaches() {
        let mut c = cluster(10);
        c.initial().unwrap();
        let mut plan = Plan::new(3, &c.scenario);
        let (mut label, mut status, mut policy) = (0, 0, 0);
        for n in 0..400 {
            let write = plan.next(n);
            let kind = write.kind();
            let pairs: u64 = c.apply(write, n).unwrap().iter().map(|r| r.pairs).sum();
            match kind {
                // 10 agents on 5 nodes: two per node.
                crate::churn::ChurnKind::PodLabel => {
                    assert_eq!(pairs, 2);
                    label += 1;
                }
                // Conditions are not projected: deduplicated, no delivery.
                crate::churn::ChurnKind::PodStatusOnly => {
                    assert_eq!(pairs, 0);
                    status += 1;
                }
                crate::churn::ChurnKind::PolicyEdit => {
                    assert_eq!(pairs, 10);
                    policy += 1;
                }
                // Appears once it has an IP; leaves on delete.
                crate::churn::ChurnKind::PodCreate | crate::churn::ChurnKind::PodDelete => {
                    assert_eq!(pairs, 2)
                }
            }
        }
        assert!(label > 0 && status > 0 && policy > 0);
    }

    #[test]
    fn callgrind_totals_are_read_from_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(
            &path,
            "events: Ir\nfl=x\n1 2\nsummary: 12345\ntotals: 12345\n",
        )
        .unwrap();
        assert_eq!(callgrind_total(&path).unwrap(), 12345);
        std::fs::write(&path, "events: Ir\n").unwrap();
        assert!(callgrind_total(&path).is_err());
    }
}
