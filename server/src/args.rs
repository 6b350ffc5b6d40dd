//! Command-line arguments of `cattail`, and where they are wired into typed config.
//!
//! Every flag has a `CATTAIL_*` environment variable. The YAML file (`--config`) holds the
//! resources and projections; flags hold what differs per deployment (addresses, credentials).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::grpc::Transport;

/// cattail: watch the Kubernetes API once, fan it out to thousands of node agents.
#[derive(Parser, Debug)]
#[command(name = "cattail", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch the configured resources and serve them to agents over gRPC.
    ///
    /// Works in-cluster (the pod's ServiceAccount) or with --kubeconfig. Readiness
    /// (/readyz on the admin port) turns ok once every resource has been listed.
    Serve(ServeArgs),
    /// Check a config file and print the effective configuration as YAML.
    CheckConfig {
        /// The YAML config file.
        #[arg(long, env = "CATTAIL_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Flags of `cattail serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Kubeconfig to use; without it, in-cluster config or $KUBECONFIG.
    #[arg(long, env = "CATTAIL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// gRPC address agents connect to.
    #[arg(long, default_value = "0.0.0.0:5473", env = "CATTAIL_LISTEN")]
    pub listen: SocketAddr,
    /// HTTP address for /livez, /readyz, /metrics and /status.
    #[arg(long, default_value = "0.0.0.0:9101", env = "CATTAIL_ADMIN_LISTEN")]
    pub admin_listen: SocketAddr,
    /// YAML config file: resources, projections, store limits. Defaults to the built-in
    /// network-agent profile (pods, namespaces, nodes, services, endpointslices,
    /// networkpolicies, serviceaccounts).
    #[arg(long, env = "CATTAIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Use streaming lists (sendInitialEvents, served from the API server's watch cache) for
    /// the initial list and relists; set to false for API servers older than 1.34.
    #[arg(long, env = "CATTAIL_STREAMING_LISTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub streaming_lists: bool,
    /// How long to wait for agents and tasks to stop after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "CATTAIL_SHUTDOWN_GRACE")]
    pub shutdown_grace: Duration,
    /// This replica's name in each agent's Welcome (in a pod: set it from metadata.name).
    #[arg(long, env = "CATTAIL_SERVER_ID", default_value_t = default_server_id())]
    pub server_id: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "CATTAIL_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// HTTP/2 implementation of the gRPC port: `native` (cattail's own framing, the least
    /// memory and CPU per agent) or `tonic` (hyper and h2, a fallback for a gRPC stack that
    /// does not get on with the native one; please report it).
    #[arg(long, value_enum, default_value_t = Transport::Native, env = "CATTAIL_GRPC_TRANSPORT")]
    pub grpc_transport: Transport,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The host name, or "cattail".
fn default_server_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cattail".to_owned())
}
