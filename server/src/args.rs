//! Command-line arguments of `cattail`, and where they are wired into typed config.
//!
//! Every flag has a `CATTAIL_*` environment variable. The YAML file (`--config`) holds the
//! resources and projections; flags hold what differs per deployment (addresses, credentials).
//! [`kube_config`] turns `--kubeconfig` into a client configuration, for the server and the
//! load test alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::TlsConfig;
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
// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// After SIGTERM, shed agents evenly over this long (overrides fanout.drain_period, 20s by
    /// default); must be shorter than --shutdown-grace.
    #[arg(long, value_parser = humantime::parse_duration, env = "CATTAIL_DRAIN_PERIOD")]
    pub drain_period: Option<Duration>,
    /// The headless Service of the replicas: its ready EndpointSlice addresses are the other
    /// replicas that refused and drained agents are sent to. Unset: no replica is named.
    #[arg(long, env = "CATTAIL_REPLICAS_SERVICE")]
    pub replicas_service: Option<String>,
    /// The namespace of --replicas-service (in a pod: from the downward API); default: the
    /// client's namespace (in-cluster, the pod's own).
    #[arg(long, env = "CATTAIL_NAMESPACE")]
    pub namespace: Option<String>,
    /// This replica's own address, left out of the replicas it names (in a pod: status.podIP).
    #[arg(long, env = "CATTAIL_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
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
    /// The gRPC port's TLS certificate chain, PEM (overrides tls.cert_file). Re-read when it
    /// changes.
    #[arg(long, env = "CATTAIL_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file, PEM (overrides tls.key_file).
    #[arg(long, env = "CATTAIL_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA bundle, PEM, that agents' client certificates are verified against (overrides
    /// tls.client_ca_file). A client certificate is then required unless
    /// tls.require_client_certificate is false.
    #[arg(long, env = "CATTAIL_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Serve the gRPC port without TLS: anyone who can reach it reads the cluster's projected
    /// state. Only for tests and demos.
    #[arg(long, env = "CATTAIL_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

impl ServeArgs {
    /// The drain period in force: the flag, else the config file's, checked against
    /// `--shutdown-grace`. The default (neither set) shrinks to two thirds of a grace period
    /// too short for it, so a short `--shutdown-grace` alone still starts.
    ///
    /// # Errors
    /// A message naming both settings when a drain period that was set would not end within
    /// the grace period.
    pub fn drain_period(&self, configured: Duration) -> Result<Duration, String> {
        let default = crate::config::FanoutSettings::default().drain_period;
        if self.drain_period.is_none() && configured == default {
            return Ok(default.min(self.shutdown_grace * 2 / 3));
        }
        let period = self.drain_period.unwrap_or(configured);
        if period >= self.shutdown_grace {
            return Err(format!(
                "the drain period (--drain-period or fanout.drain_period) of {} must be shorter \
                 than --shutdown-grace ({}): the drain runs within the grace period; shorten the \
                 drain or raise --shutdown-grace (and terminationGracePeriodSeconds above it)",
                humantime::format_duration(period),
                humantime::format_duration(self.shutdown_grace)
            ));
        }
        Ok(period)
    }

    /// Puts the TLS flags that are given over the config file's `tls:` section.
    pub fn apply_tls_flags(&self, tls: &mut TlsConfig) {
        let flags = [
            (&self.tls_cert_file, &mut tls.cert_file),
            (&self.tls_key_file, &mut tls.key_file),
            (&self.tls_client_ca_file, &mut tls.client_ca_file),
        ];
        for (flag, field) in flags {
            if let Some(path) = flag {
                *field = Some(path.clone());
            }
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The host name (in a pod, the pod's name), or "cattail".
fn default_server_id() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cattail".to_owned())
}

/// Why no Kubernetes client configuration could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeConfigError {
    /// The `--kubeconfig` file could not be read or parsed.
    #[error("reading --kubeconfig {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: kube::config::KubeconfigError,
    },
    /// The file was read, but its current context cannot be used.
    #[error("using --kubeconfig {path}: {source}; check its current context and credentials")]
    Use {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        source: kube::config::KubeconfigError,
    },
    /// No `--kubeconfig`, and neither the pod nor `$KUBECONFIG` gives a configuration.
    #[error("no --kubeconfig, no in-cluster config and no usable $KUBECONFIG: {0}")]
    Infer(#[from] kube::config::InferConfigError),
}

/// The client configuration of `--kubeconfig`, or without it, kube's inferred one (in-cluster
/// ServiceAccount, then `$KUBECONFIG` or `~/.kube/config`).
pub async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config, KubeConfigError> {
    let Some(path) = kubeconfig else {
        return Ok(kube::Config::infer().await?);
    };
    let file =
        kube::config::Kubeconfig::read_from(path).map_err(|source| KubeConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
    kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| KubeConfigError::Use {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_id_defaults_to_the_kernel_host_name() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        assert!(!kernel.trim().is_empty(), "this test reads Linux's /proc");
        assert_eq!(default_server_id(), kernel.trim());
    }

    #[tokio::test]
    async fn a_kubeconfig_is_read_and_its_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(
            &good,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n\
             users: [{name: u, user: {token: t}}]\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\n",
        )
        .unwrap();
        let config = kube_config(Some(&good)).await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");

        let missing = dir.path().join("missing");
        let error = kube_config(Some(&missing)).await.unwrap_err();
        assert!(matches!(error, KubeConfigError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");

        let no_context = dir.path().join("no-context");
        std::fs::write(&no_context, "apiVersion: v1\nkind: Config\n").unwrap();
        let error = kube_config(Some(&no_context)).await.unwrap_err();
        assert!(matches!(error, KubeConfigError::Use { .. }), "{error}");
    }
}
