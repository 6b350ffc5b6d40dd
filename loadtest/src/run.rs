//! `run`: the whole benchmark in one command, phase by phase, into `DIR/report.{json,md}` and
//! SVG plots. Every process it starts (control plane, server, agents) is stopped on the way out,
//! on error too: each is owned by a handle that kills it on drop.
//!
//! Phases: testenv, seed, churn alone (API server baseline), server start, connect storm of every
//! agent, steady churn with fan-out and end-to-end latency, probe check, server restart and
//! reconnect, TCP baselines replaying the same bytes, and the direct-watch baseline.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;

use crate::agents::{AgentsConfig, Window};
use crate::child::AgentsProcess;
use crate::churn::{self, ChurnLimits};
use crate::procstat::{self, ProcSample};
use crate::report::{Report, Usage};
use crate::scenario::Scenario;
use crate::server::{self, GrpcTransport, ServerProcess};

use crate::stats::Hist;
use crate::{direct, plot, seed, tcp};

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The cluster and load.
    pub scenario: Scenario,
    /// Its name, for the report.
    pub name: String,
    /// Where the report goes.
    pub out: PathBuf,
    /// Length of each churn window.
    pub duration: Duration,
    /// Seed writes per second.
    pub seed_qps: u32,
    /// Direct-watch agents in the baseline.
    pub direct_agents: u32,
    /// Probe agents.
    pub probes: u32,
    /// The server's HTTP/2 implementation.
    pub transport: GrpcTransport,
    /// The churn's seed: each window plans its writes from a seed derived from it.
    pub churn_seed: u64,
    /// Serve gRPC over TLS (a throwaway CA in the output directory); h2c otherwise.
    pub tls: bool,
}

/// Agents per child process: each agent holds about two descriptors, under the 20,000 limit.
const AGENTS_PER_PROCESS: u32 = 8_000;

fn usage(pid: u32, before: ProcSample, started: Instant) -> Usage {
    let after = procstat::sample(pid).unwrap_or_default();
    Usage {
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        rss_bytes: after.rss_bytes,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn merge(windows: &[Window], pick: fn(&Window) -> &crate::stats::HistWire) -> Hist {
    let mut h = Hist::new();
    for w in windows {
        h.merge(&Hist::from_wire(pick(w)));
    }
    h
}

struct Fleet(Vec<AgentsProcess>);

impl Fleet {
    async fn report(&mut self, label: &str) -> anyhow::Result<Vec<Window>> {
        let mut out = Vec::new();
        for p in &mut self.0 {
            out.push(p.report(label).await?);
        }
        Ok(out)
    }

    async fn wait_synced(&mut self, per_process: &[u32], within: Duration) -> anyhow::Result<()> {
        for (p, n) in self.0.iter_mut().zip(per_process) {
            p.wait_synced(*n, within).await?;
        }
        Ok(())
    }

    fn synced(&self) -> u32 {
        self.0.iter().map(|p| p.progress().synced).sum()
    }

    async fn stop(self) {
        for p in self.0 {
            p.stop().await;
        }
    }
}

/// Runs every phase and writes the report; returns it.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    let s = config.scenario;
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let out = std::fs::canonicalize(&config.out)?;
    let mut report = Report {
        scenario: serde_json::json!({"name": config.name, "sizes": s, "duration_s": config.duration.as_secs_f64(), "grpc_transport": config.transport.to_string(), "tls": config.tls}),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        ..Report::default()
    };
    let limits = |d: Duration| ChurnLimits {
        rate: s.writes_per_sec,
        duration: d,
        max_writes: u64::MAX,
    };
    // Each window writes values the others never wrote, or the later windows would mostly
    // rewrite what the store already holds and measure deduplication instead of delivery.
    let window_seed = |window: u64| churn::mix64(config.churn_seed ^ window);
    let settle = Duration::from_secs(60) + Duration::from_millis(u64::from(s.agents) * 30);

    eprintln!("[run] starting the control plane (testenv)");
    let binary = server::server_binary()?;
    let env = cattail_testenv::TestEnv::start()
        .await
        .context("starting testenv")?;
    let client = env.client();
    let api_pid = env.pid();

    eprintln!("[run] seeding {} ({} objects)", config.name, s.objects());
    let started = Instant::now();
    report.seed_writes = seed::seed(&client, &s, config.seed_qps, false).await?;
    report.seed_seconds = started.elapsed().as_secs_f64();

    eprintln!("[run] churn with no watcher: the API server's own cost");
    let (before, started) = (
        procstat::sample(api_pid).unwrap_or_default(),
        Instant::now(),
    );
    churn::churn(&client, &s, limits(config.duration), window_seed(0)).await;
    report.apiserver_alone = usage(api_pid, before, started);

    let pki = if config.tls {
        Some(crate::pki::Pki::create(&out.join("pki"))?)
    } else {
        None
    };
    eprintln!("[run] starting cattail");
    let (grpc, admin) = (server::free_port()?, server::free_port()?);
    let grpc: std::net::SocketAddr = ([127, 0, 0, 1], grpc).into();
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], admin).into();
    let mut cattail = ServerProcess::start(
        &binary,
        env.kubeconfig_path(),
        &out,
        (grpc, admin),
        config.transport,
        pki.as_ref(),
        Duration::from_secs(120),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server_pid = cattail.pid().context("the server has no pid")?;
    report.server_rss_idle = procstat::sample(server_pid).unwrap_or_default().rss_bytes;

    eprintln!("[run] connect storm: {} agents at once", s.agents);
    let trace_dir = out.join("trace");
    let mut per_process = Vec::new();
    let mut fleet = Fleet(Vec::new());
    let storm_start = Instant::now();
    let mut first = 0;
    while first < s.agents {
        let count = (s.agents - first).min(AGENTS_PER_PROCESS);
        fleet.0.push(AgentsProcess::spawn(&AgentsConfig {
            endpoints: vec![cattail.endpoint()],
            count,
            first_index: first,
            nodes: s.nodes,
            probes: if first == 0 {
                config.probes.min(count)
            } else {
                0
            },
            kubeconfig: Some(env.kubeconfig_path().to_path_buf()),
            trace_dir: (first == 0).then(|| trace_dir.clone()),
            max_duration: Duration::from_secs(6 * 3600),
            ca_file: pki.as_ref().map(|p| p.ca_file.clone()),
        })?);
        per_process.push(count);
        first += count;
    }
    let storm_deadline = storm_start + settle;
    while fleet.synced() < s.agents {
        cattail.check_running()?;
        if let Some(rss) = procstat::sample(server_pid) {
            report.memory_curve.push((fleet.synced(), rss.rss_bytes));
        }
        anyhow::ensure!(
            Instant::now() < storm_deadline,
            "only {} of {} agents synced within {settle:?}",
            fleet.synced(),
            s.agents
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let storm = fleet.report("storm").await?;
    report.storm_sync_ms = merge(&storm, |w| &w.sync_ms).summary();
    // Every agent starts connecting at once, so the slowest agent's connect-to-synced time is
    // the storm's length; the wall clock above only sees progress lines once a second.
    report.storm_seconds = report.storm_sync_ms.max as f64 / 1_000.0;
    report.storm_wall_seconds = storm_start.elapsed().as_secs_f64();
    report.storm_bytes_per_agent = merge(&storm, |w| &w.bytes_per_agent).summary();
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.server_rss_agents = procstat::sample(server_pid).unwrap_or_default().rss_bytes;
    report
        .memory_curve
        .push((s.agents, report.server_rss_agents));
    report.snapshots_encoded = cattail
        .metrics()
        .await?
        .get("cattail_snapshots_encoded_total")
        .copied()
        .unwrap_or(0.0);

    eprintln!(
        "[run] steady churn through cattail for {:?}",
        config.duration
    );
    let m0 = cattail.metrics().await?;
    let (server0, api0, started) = (
        procstat::sample(server_pid).unwrap_or_default(),
        procstat::sample(api_pid).unwrap_or_default(),
        Instant::now(),
    );
    report.churn = churn::churn(&client, &s, limits(config.duration), window_seed(1)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.server = usage(server_pid, server0, started);
    report.server_rss_steady = report.server.rss_bytes;
    report.apiserver_cattail = usage(api_pid, api0, started);
    let m1 = cattail.metrics().await?;
    let delta = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
    report.server_deliveries = delta("cattail_messages_sent_total");
    report.churn.projection_changes = Some(delta("cattail_updates_published_total") as u64);
    report.deduplicated = delta("cattail_updates_deduplicated_total");
    let steady = fleet.report("steady").await?;
    report.fanout_us = merge(&steady, |w| &w.fanout_us).summary();
    report.e2e_us = merge(&steady, |w| &w.e2e_us).summary();
    report
        .errors
        .extend(steady.iter().flat_map(|w| w.errors.clone()));
    if let Some(p) = fleet.0.first_mut() {
        let check = p.check().await?;
        report.probes_consistent = (check.consistent, check.probes);
        report.probe_details = check.details;
    }

    eprintln!("[run] restarting cattail; agents reconnect");
    cattail.stop(Duration::from_secs(10)).await;
    // Progress arrives once a second: wait until it shows the agents cut off, or the wait for
    // them to re-sync would end at once on stale lines.
    let cut = Instant::now() + Duration::from_secs(10);
    while fleet.synced() >= s.agents.saturating_sub(config.probes) && Instant::now() < cut {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let restart = Instant::now();
    cattail = ServerProcess::start(
        &binary,
        env.kubeconfig_path(),
        &out,
        (grpc, admin),
        config.transport,
        pki.as_ref(),
        Duration::from_secs(120),
    )
    .await?;
    fleet.wait_synced(&per_process, settle).await?;
    report.restart_seconds = restart.elapsed().as_secs_f64();
    let restarted = fleet.report("restart").await?;
    report.restart_bytes_per_agent = merge(&restarted, |w| &w.bytes_per_agent).summary();
    fleet.stop().await;
    cattail.stop(Duration::from_secs(10)).await;

    eprintln!(
        "[run] TCP baselines: the same bytes to {} sockets",
        s.agents
    );
    let deltas = tcp::read_deltas(&std::fs::read(trace_dir.join("deltas.bin")).unwrap_or_default());
    let snapshot = Bytes::from(std::fs::read(trace_dir.join("snapshot.bin")).unwrap_or_default());
    let fan = tcp::replay(
        s.agents,
        deltas,
        config.duration * 3 + Duration::from_secs(60),
    )
    .await?;
    report.tcp_latency_us = Hist::from_wire(&fan.latency_us).summary();
    report.tcp_deliveries = fan.deliveries;
    report.tcp_cpu_seconds = fan.sender_cpu_seconds;
    let storm_tcp = tcp::replay(s.agents, vec![(Duration::ZERO, snapshot)], settle).await?;
    report.storm_tcp_seconds = storm_tcp.seconds;

    report.direct_agents = config.direct_agents;
    eprintln!(
        "[run] direct baseline: {} agents watching the API server",
        config.direct_agents
    );
    let agents = direct::start(config.direct_agents, s.nodes, env.config()).await?;
    let deadline = Instant::now() + settle;
    while agents
        .stats
        .listed
        .load(std::sync::atomic::Ordering::Relaxed)
        < agents.watches
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (api0, started) = (
        procstat::sample(api_pid).unwrap_or_default(),
        Instant::now(),
    );
    churn::churn(&client, &s, limits(config.duration), window_seed(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.apiserver_direct = usage(api_pid, api0, started);
    report.direct_e2e_us = agents
        .stats
        .e2e_us
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .summary();
    drop(agents);
    report.loadtest = Usage {
        cpu_seconds: procstat::sample_self().cpu_seconds,
        rss_bytes: procstat::sample_self().rss_bytes,
        seconds: 0.0,
    };

    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(out.join("report.md"), report.markdown(s.agents))?;
    plot::latency(&out.join("latency.svg"), &report)?;
    plot::memory(&out.join("memory.svg"), &report)?;
    drop(env);
    Ok(report)
}
