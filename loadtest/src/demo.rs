//! `demo`: the README's one command. A real control plane, the small scenario, the cattail server
//! as a child process, 50 agents in another, about 30 s of churn with live progress, a summary.
//! Ctrl-C at any point stops everything it started: each process is owned by a handle that
//! stops it on drop, and the agents also stop when their stdin closes.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::agents::AgentsConfig;
use crate::child::AgentsProcess;
use crate::churn::{self, ChurnLimits};
use crate::scenario::{Scenario, ScenarioName};
use crate::server::{self, ServerProcess};
use crate::stats::Hist;

/// Runs the demo for `duration` of churn with `agents` agents.
pub async fn demo(duration: Duration, agents: u32) -> anyhow::Result<()> {
    tokio::select! {
        result = run(duration, agents) => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted: stopping the agents, the server and the control plane");
            Ok(())
        }
    }
}

async fn run(duration: Duration, agents: u32) -> anyhow::Result<()> {
    let mut s = Scenario::named(ScenarioName::Small);
    s.agents = agents;
    let binary = server::server_binary()?;
    eprintln!("starting a real kube-apiserver and etcd on loopback (testenv)...");
    let env = cattail_testenv::TestEnv::start()
        .await
        .context("starting testenv")?;
    let client = env.client();
    eprintln!(
        "seeding the small scenario: {} nodes, {} pods, {} services, {} policies",
        s.nodes, s.pods, s.services, s.policies
    );
    crate::seed::seed(&client, &s, 500, true).await?;
    let dir = env.dir().join("cattail");
    let grpc = ([127, 0, 0, 1], server::free_port()?).into();
    let admin = ([127, 0, 0, 1], server::free_port()?).into();
    let mut cattail = ServerProcess::start(
        &binary,
        env.kubeconfig_path(),
        &dir,
        (grpc, admin),
        server::GrpcTransport::default(),
        None,
        Duration::from_secs(120),
    )
    .await?;
    eprintln!(
        "cattail serving on {} (admin http://{admin}/metrics); starting {agents} agents",
        cattail.endpoint()
    );
    let mut fleet = AgentsProcess::spawn(&AgentsConfig {
        endpoints: vec![cattail.endpoint()],
        count: agents,
        first_index: 0,
        nodes: s.nodes,
        probes: 2.min(agents),
        kubeconfig: Some(env.kubeconfig_path().to_path_buf()),
        trace_dir: None,
        max_duration: duration + Duration::from_secs(600),
        ca_file: None,
    })?;
    let took = fleet.wait_synced(agents, Duration::from_secs(120)).await?;
    eprintln!(
        "all {agents} agents synced in {took:.2?}; churning {} writes/s for {duration:?}",
        s.writes_per_sec
    );
    let _ = fleet.report("connect").await?;
    let start = Instant::now();
    let churn = churn::churn(
        &client,
        &s,
        ChurnLimits {
            rate: s.writes_per_sec,
            duration,
            max_writes: u64::MAX,
        },
        churn::fresh_seed(),
    );
    tokio::pin!(churn);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let report = loop {
        tokio::select! {
            report = &mut churn => break report,
            _ = tick.tick() => {
                cattail.check_running()?;
                let p = fleet.progress();
                let m = cattail.metrics().await.unwrap_or_default();
                let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
                eprintln!(
                    "[{:>3}s] agents synced {}/{agents}  revision {}  fan-out p99 {:.1} ms  updates received {}  deduplicated {}",
                    start.elapsed().as_secs(), p.synced, p.revision, p.fanout_p99_us as f64 / 1000.0,
                    get("cattail_updates_received_total"), get("cattail_updates_deduplicated_total"),
                );
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = fleet.report("churn").await?;
    let check = fleet.check().await?;
    let m = cattail.metrics().await.unwrap_or_default();
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let fanout = Hist::from_wire(&window.fanout_us).summary();
    let e2e = Hist::from_wire(&window.e2e_us).summary();
    println!("\nsummary");
    println!(
        "  churn: {} writes in {:.1} s, {} errors",
        report.total(),
        report.seconds,
        report.errors
    );
    println!(
        "  server: {} updates received, {} deduplicated, {} published; {} snapshot(s) encoded",
        get("cattail_updates_received_total"),
        get("cattail_updates_deduplicated_total"),
        get("cattail_updates_published_total"),
        get("cattail_snapshots_encoded_total")
    );
    println!(
        "  fan-out latency p50 {:.2} ms, p99 {:.2} ms ({} deliveries)",
        fanout.p50 as f64 / 1e3,
        fanout.p99 as f64 / 1e3,
        fanout.count
    );
    println!(
        "  end-to-end (API write to agent) p50 {:.2} ms, p99 {:.2} ms",
        e2e.p50 as f64 / 1e3,
        e2e.p99 as f64 / 1e3
    );
    println!(
        "  probe agents consistent with the API server: {} of {}",
        check.consistent, check.probes
    );
    for d in &check.details {
        println!("    {d}");
    }
    fleet.stop().await;
    cattail.stop(Duration::from_secs(10)).await;
    drop(env);
    Ok(())
}
