//! Command-line arguments of `cattail-loadtest`: every flag validated by clap, with `CATTAIL_*`
//! environment variables where a value is the same across commands.

use std::path::PathBuf;
use std::time::Duration;

use cattail_loadtest::scenario::ScenarioName;
use cattail_loadtest::server::GrpcTransport;
use clap::{Args, Parser, Subcommand};

/// Load tests, baselines and the demo for cattail.
#[derive(Debug, Parser)]
#[command(name = "cattail-loadtest", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Fill an API server with a scenario's synthetic cluster (idempotent).
    Seed(SeedArgs),
    /// Write a mix of changes at a set rate, bounded in time and count.
    Churn(ChurnArgs),
    /// Run many agents against cattail endpoints (driven over stdin; see `run`).
    Agents(AgentsArgs),
    /// The whole benchmark: testenv, seed, cattail, agents, churn, storm, restart, baselines.
    Run(RunArgs),
    /// A short live demo: testenv, small scenario, cattail, 50 agents, 30 s of churn.
    Demo(DemoArgs),
    /// The server's cost per delivered update on a fixed replayed workload: instructions
    /// (under callgrind, with --callgrind) and CPU, with no Kubernetes (docs/BENCHMARKS.md).
    Cost(CostArgs),
    /// The server side of `cost` (started by it): the scenario served from memory.
    #[command(hide = true)]
    CostServer(CostServerArgs),
    /// Flood a running `cattail serve` with Hellos that never finish, and report its peak
    /// memory (docs/BENCHMARKS.md, "Memory before a Hello"). Plaintext gRPC ports only.
    HelloFlood(HelloFloodArgs),
}

#[derive(Debug, Args)]
pub(crate) struct HelloFloodArgs {
    /// The server's gRPC address, like 127.0.0.1:5473.
    #[arg(long)]
    pub(crate) addr: std::net::SocketAddr,
    /// The server's process id, whose resident memory is sampled.
    #[arg(long)]
    pub(crate) server_pid: u32,
    /// Connections to open.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub(crate) connections: u32,
    /// Watch streams per connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub(crate) streams: u32,
    /// The Hello size each stream announces (bytes), never sent in full.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(16..=64 * 1024 * 1024))]
    pub(crate) hello_bytes: u32,
    /// Bytes per stream per step.
    #[arg(long, default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1..=1024 * 1024))]
    pub(crate) chunk_bytes: u32,
    /// Time between steps (the default sends 4 MiB in about 5 s, within the Hello deadline).
    #[arg(long, default_value = "20ms", value_parser = parse_interval)]
    pub(crate) interval: Duration,
    /// How long the flood lasts (the server's Hello deadline is 10 s by default).
    #[arg(long, default_value = "9s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct CostArgs {
    /// The cluster: small or medium (the number of nodes and pods).
    #[arg(long, default_value = "small")]
    pub(crate) scenario: ScenarioName,
    /// Light agents (agent `i` runs on node `i % nodes`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=9_000))]
    pub(crate) agents: u32,
    /// Churn writes to replay.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) writes: u64,
    /// Writes per second: slow enough that every change goes out alone, even under callgrind.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) rate: u32,
    /// The churn's seed: the same seed replays the same writes.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Run the server under `valgrind --tool=callgrind` and count its instructions.
    #[arg(long)]
    pub(crate) callgrind: bool,
    /// Serve gRPC over TLS 1.3 (a throwaway CA in OUT/pki); plaintext h2c otherwise.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Where report.json (and callgrind.out) go.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CostServerArgs {
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) nodes: u32,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) pods: u32,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9_000))]
    pub(crate) agents: u32,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) writes: u64,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) rate: u32,
    #[arg(long)]
    pub(crate) seed: u64,
    /// Serve TLS with `ca.crt`, `tls.crt` and `tls.key` from this directory.
    #[arg(long)]
    pub(crate) tls_dir: Option<PathBuf>,
    /// Where to listen (a free loopback port by default).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The scenario: small, medium or large.
    #[arg(long, default_value = "small", env = "CATTAIL_SCENARIO")]
    pub(crate) scenario: ScenarioName,
    /// Where report.json, report.md and the SVG plots go.
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Length of each churn window (three windows: alone, through cattail, direct).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Override the scenario's agent count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub(crate) agents: Option<u32>,
    /// Agents in the direct-watch baseline (default: the agents, at most 500).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub(crate) direct_agents: Option<u32>,
    /// Seed writes per second.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) seed_qps: u32,
    /// Probe agents using the real cattail-client.
    #[arg(long, default_value_t = 2)]
    pub(crate) probes: u32,
    /// The HTTP/2 implementation of the server under test (`cattail serve --grpc-transport`),
    /// to compare the two in otherwise equal runs.
    #[arg(long, value_enum, default_value_t = GrpcTransport::Native, env = "CATTAIL_GRPC_TRANSPORT")]
    pub(crate) grpc_transport: GrpcTransport,
    /// Plan the churn from this seed (each of the three windows gets its own seed derived from
    /// it); without one, a fresh seed. The report gives every window's seed.
    #[arg(long)]
    pub(crate) churn_seed: Option<u64>,
    /// Serve gRPC over TLS 1.3 (a throwaway CA and certificate in OUT/pki), as production does;
    /// without it, plaintext h2c as the runs before session 9.
    #[arg(long)]
    pub(crate) tls: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to churn.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// How many agents.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub(crate) agents: u32,
}

/// Where the cluster is and how big it is.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// The kubeconfig of the API server to load.
    #[arg(long, env = "CATTAIL_KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The scenario: small, medium or large.
    #[arg(long, default_value = "small", env = "CATTAIL_SCENARIO")]
    pub(crate) scenario: ScenarioName,
}

#[derive(Debug, Args)]
pub(crate) struct SeedArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// Writes per second (at least 1).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) qps: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ChurnArgs {
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    /// Writes per second; defaults to the scenario's rate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) rate: Option<u32>,
    /// How long to churn, like `30s` or `5m` (at most 24h).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Stop after this many writes.
    #[arg(long, default_value_t = 10_000_000)]
    pub(crate) max_writes: u64,
    /// Plan the writes from this seed (the report gives each run's): the same seed repeats a
    /// run's writes exactly; without one, a fresh seed writes values never written before.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct AgentsArgs {
    /// A cattail gRPC endpoint, like `http://127.0.0.1:5473`; repeat for several.
    #[arg(
        long = "endpoint",
        required = true,
        env = "CATTAIL_ENDPOINTS",
        value_delimiter = ','
    )]
    pub(crate) endpoints: Vec<String>,
    /// How many agents to run in this process (at most 9,000: the open-files limit is 20,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=9_000))]
    pub(crate) count: u32,
    /// The index of the first agent (agent `i` runs on node `i % nodes`).
    #[arg(long, default_value_t = 0)]
    pub(crate) first_index: u32,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) nodes: u32,
    /// How many of the agents are probes using the real cattail-client.
    #[arg(long, default_value_t = 2)]
    pub(crate) probes: u32,
    /// The kubeconfig the probes check their caches against.
    #[arg(long, env = "CATTAIL_KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Where the first light agent writes the bytes it received (for the TCP baseline).
    #[arg(long)]
    pub(crate) trace_dir: Option<PathBuf>,
    /// Stop after this long, whatever happens.
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub(crate) max_duration: Duration,
    /// The CA bundle that signed the server's certificate, for `https://` endpoints (checked
    /// for the name `localhost`).
    #[arg(long)]
    pub(crate) ca_file: Option<PathBuf>,
}

/// A duration like `20s` or `5m`, between 1 s and 24 h.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e}: write it like 20s or 5m"))?;
    if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{text} is out of range: use 1s to 24h"));
    }
    Ok(d)
}

/// A step interval: 1 ms to 10 s.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("{e}: write it like 20ms or 1s"))?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(10) {
        return Err(format!("{text} is out of range: use 1ms to 10s"));
    }
    Ok(d)
}
