//! `cattail-loadtest`: parses arguments and hands each command to the library.

mod args;

use anyhow::Context;
use cattail_loadtest::churn::{self, ChurnLimits};
use cattail_loadtest::cost;
use cattail_loadtest::scenario::Scenario;
use cattail_loadtest::{agents, demo, flood, kube_client, run, seed};
use clap::Parser;

use crate::args::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Seed(args) => {
            let client = kube_client(args.cluster.kubeconfig.as_deref()).await?;
            let scenario = Scenario::named(args.cluster.scenario);
            let started = std::time::Instant::now();
            let writes = seed::seed(&client, &scenario, args.qps, true)
                .await
                .context("seeding failed; it is idempotent, so run it again once the API server is healthy")?;
            println!(
                "seeded {} ({writes} writes) in {:.1?}",
                args.cluster.scenario,
                started.elapsed()
            );
        }
        Command::Churn(args) => {
            let client = kube_client(args.cluster.kubeconfig.as_deref()).await?;
            let scenario = Scenario::named(args.cluster.scenario);
            let limits = ChurnLimits {
                rate: args.rate.unwrap_or(scenario.writes_per_sec),
                duration: args.duration,
                max_writes: args.max_writes,
            };
            let seed = args.seed.unwrap_or_else(churn::fresh_seed);
            let report = churn::churn(&client, &scenario, limits, seed).await;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Agents(args) => {
            agents::run(agents::AgentsConfig {
                endpoints: args.endpoints,
                count: args.count,
                first_index: args.first_index,
                nodes: args.nodes,
                probes: args.probes.min(args.count),
                kubeconfig: args.kubeconfig,
                trace_dir: args.trace_dir,
                max_duration: args.max_duration,
                ca_file: args.ca_file,
            })
            .await?;
        }
        Command::Run(args) => {
            let mut scenario = Scenario::named(args.scenario);
            if let Some(agents) = args.agents {
                scenario.agents = agents;
            }
            let report = run::run(run::RunConfig {
                scenario,
                name: args.scenario.to_string(),
                out: args.out.clone(),
                duration: args.duration,
                seed_qps: args.seed_qps,
                direct_agents: args.direct_agents.unwrap_or(scenario.agents.min(500)),
                probes: args.probes,
                transport: args.grpc_transport,
                churn_seed: args.churn_seed.unwrap_or_else(churn::fresh_seed),
                tls: args.tls,
            })
            .await?;
            println!("{}", report.markdown(scenario.agents));
            println!("report written to {}", args.out.display());
        }
        Command::Cost(args) => {
            let base = Scenario::named(args.scenario);
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?;
            let report = cost::measure(cost::CostConfig {
                scenario: Scenario::sized(base.nodes, base.pods, args.agents, args.rate),
                agents: args.agents,
                writes: args.writes,
                rate: args.rate,
                seed: args.seed,
                callgrind_out: args.callgrind.then(|| args.out.join("callgrind.out")),
                tls_dir: args.tls.then(|| args.out.join("pki")),
            })
            .await?;
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(args.out.join("report.json"), &json)?;
            println!("{json}");
        }
        Command::CostServer(args) => {
            cost::serve(
                cost::CostConfig {
                    scenario: Scenario::sized(args.nodes, args.pods, args.agents, args.rate),
                    agents: args.agents,
                    writes: args.writes,
                    rate: args.rate,
                    seed: args.seed,
                    callgrind_out: None,
                    tls_dir: args.tls_dir,
                },
                args.listen,
            )
            .await?;
        }
        Command::Demo(args) => demo::demo(args.duration, args.agents).await?,
        Command::HelloFlood(args) => {
            let report = flood::flood(flood::FloodConfig {
                addr: args.addr,
                server_pid: args.server_pid,
                connections: args.connections,
                streams: args.streams,
                hello_bytes: args.hello_bytes,
                chunk_bytes: args.chunk_bytes,
                interval: args.interval,
                duration: args.duration,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(())
}
