//! The command line: every flag also reads a `CATTAIL_*` environment variable, and turns into
//! a [`Client`] and its subscriptions here, in one place.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cattail_client::{Client, ClientTls, Subscription, TokenFile};
use clap::{Parser, Subcommand};

/// The resources of the default network-agent profile, subscribed when none are given.
const DEFAULT_RESOURCES: &str = "v1/pods,v1/namespaces,v1/nodes,v1/services,\
    discovery.k8s.io/v1/endpointslices,networking.k8s.io/v1/networkpolicies,v1/serviceaccounts";

/// A node agent for cattail: dump a server's cache, or stay connected and report.
#[derive(Debug, Parser)]
#[command(name = "cattail-agent", version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Connect, wait for the first sync, print every object as a JSON line, and exit.
    Dump(DumpArgs),
    /// Stay connected, log event counts periodically and serve Prometheus metrics.
    Run(RunArgs),
}

/// Where to connect and what to subscribe to.
#[derive(Debug, clap::Args)]
pub(crate) struct StreamArgs {
    /// A cattail server endpoint, such as http://cattail:5473; repeat for several replicas.
    #[arg(
        long = "server",
        env = "CATTAIL_SERVER",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) servers: Vec<String>,

    /// A resource to subscribe to, as group/version/plural ("v1/pods"); repeat for several.
    #[arg(
        long = "resource",
        env = "CATTAIL_RESOURCE",
        value_delimiter = ',',
        default_value = DEFAULT_RESOURCES
    )]
    pub(crate) resources: Vec<String>,

    /// The node this agent runs on.
    #[arg(long = "node", env = "CATTAIL_NODE_NAME")]
    pub(crate) node: Option<String>,

    /// Receive only this node's objects for the resources in --scoped-resource.
    #[arg(long, env = "CATTAIL_NODE_SCOPED")]
    pub(crate) node_scoped: bool,

    /// The resources --node-scoped applies to: those with a scope field on the server.
    #[arg(
        long = "scoped-resource",
        env = "CATTAIL_SCOPED_RESOURCE",
        value_delimiter = ',',
        default_value = "v1/pods"
    )]
    pub(crate) scoped_resources: Vec<String>,

    /// This agent's id in the server's logs and metrics; defaults to the node name.
    #[arg(long, env = "CATTAIL_AGENT_ID")]
    pub(crate) agent_id: Option<String>,

    /// The largest message accepted from the server, in bytes.
    #[arg(long, env = "CATTAIL_MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    pub(crate) max_message_bytes: usize,

    /// CA bundle (PEM) that verifies the server's certificate; needed for https:// servers.
    #[arg(long, env = "CATTAIL_TLS_CA_FILE")]
    pub(crate) tls_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for servers that verify agents by certificate; needs
    /// --tls-key-file.
    #[arg(long, env = "CATTAIL_TLS_CERT_FILE", requires = "tls_key_file")]
    pub(crate) tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "CATTAIL_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub(crate) tls_key_file: Option<PathBuf>,

    /// The name the server's certificate must carry, if not the --server host.
    #[arg(long, env = "CATTAIL_TLS_SERVER_NAME")]
    pub(crate) tls_server_name: Option<String>,

    /// A file holding a bearer token (a projected ServiceAccount token), sent on every
    /// stream and read again before every reconnect.
    #[arg(long, env = "CATTAIL_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

/// `cattail-agent dump`.
#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    #[command(flatten)]
    pub(crate) stream: StreamArgs,

    /// How long to wait for the first sync before giving up.
    #[arg(long, env = "CATTAIL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// `cattail-agent run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) stream: StreamArgs,

    /// Where to serve Prometheus metrics at /metrics.
    #[arg(long, env = "CATTAIL_METRICS_LISTEN", default_value = "127.0.0.1:9102")]
    pub(crate) metrics_listen: SocketAddr,

    /// How often to log event counts.
    #[arg(long, env = "CATTAIL_LOG_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) log_interval: Duration,
}

impl StreamArgs {
    /// The client these arguments describe.
    ///
    /// # Errors
    /// A TLS or token file that cannot be used, by name.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let node = self.node.clone().unwrap_or_default();
        let agent_id = self
            .agent_id
            .clone()
            .filter(|id| !id.is_empty())
            .or_else(|| self.node.clone().filter(|node| !node.is_empty()))
            .unwrap_or_else(|| "cattail-agent".to_owned());
        let mut client = Client::new(&self.servers)
            .agent_id(agent_id)
            .node_name(node)
            .agent_version(concat!("cattail-agent/", env!("CARGO_PKG_VERSION")))
            .max_message_bytes(self.max_message_bytes);
        let tls_set = self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_server_name.is_some();
        if tls_set {
            let mut tls = ClientTls::new();
            if let Some(ca) = &self.tls_ca_file {
                tls = tls.ca_file(ca).context("--tls-ca-file")?;
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) {
                tls = tls
                    .identity_files(cert, key)
                    .context("--tls-cert-file, --tls-key-file")?;
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.server_name(name);
            }
            client = client.tls(tls);
        }
        if let Some(path) = &self.token_file {
            client = client.token_file(TokenFile::new(path).context("--token-file")?);
        }
        Ok(client)
    }

    /// The subscriptions, in the order given, without duplicates.
    pub(crate) fn subscriptions(&self) -> anyhow::Result<Vec<Subscription>> {
        if self.node_scoped && self.node.as_deref().unwrap_or_default().is_empty() {
            anyhow::bail!("--node-scoped needs --node (or CATTAIL_NODE_NAME)");
        }
        let mut seen = Vec::new();
        let mut subscriptions = Vec::new();
        for resource in &self.resources {
            let resource = resource.trim();
            if resource.is_empty() || seen.contains(&resource) {
                continue;
            }
            seen.push(resource);
            let mut subscription = Subscription::for_resource(resource)
                .with_context(|| format!("--resource {resource}"))?;
            if self.node_scoped && self.scoped_resources.iter().any(|r| r.trim() == resource) {
                subscription = subscription.node_scoped();
            }
            subscriptions.push(subscription);
        }
        anyhow::ensure!(!subscriptions.is_empty(), "no resources to subscribe to");
        Ok(subscriptions)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(args).unwrap()
    }

    fn stream(args: &Args) -> &StreamArgs {
        match &args.command {
            Command::Dump(dump) => &dump.stream,
            Command::Run(run) => &run.stream,
        }
    }

    #[test]
    fn dump_takes_servers_resources_and_node_scope() {
        let args = parse(&[
            "cattail-agent",
            "dump",
            "--server",
            "a:1",
            "--server",
            "http://b:2",
            "--resource",
            "v1/pods",
            "--resource",
            "v1/nodes",
            "--node",
            "n1",
            "--node-scoped",
            "--timeout",
            "5s",
        ]);
        let Command::Dump(dump) = &args.command else {
            panic!("not dump")
        };
        assert_eq!(dump.timeout, Duration::from_secs(5));
        let client = dump.stream.client().unwrap();
        assert_eq!(client.endpoint_list(), ["http://a:1", "http://b:2"]);
        let subscriptions = dump.stream.subscriptions().unwrap();
        let described: Vec<(String, bool)> = subscriptions
            .iter()
            .map(|s| {
                (
                    s.explicit_resource().unwrap().to_string(),
                    s.is_node_scoped(),
                )
            })
            .collect();
        assert_eq!(
            described,
            [("v1/pods".into(), true), ("v1/nodes".into(), false)]
        );
    }

    #[test]
    fn the_default_resources_are_the_network_profile() {
        let args = parse(&["cattail-agent", "run", "--server", "a:1"]);
        let subscriptions = stream(&args).subscriptions().unwrap();
        assert_eq!(subscriptions.len(), 7);
        let Command::Run(run) = &args.command else {
            panic!("not run")
        };
        assert_eq!(run.metrics_listen.to_string(), "127.0.0.1:9102");
    }

    #[test]
    fn node_scope_without_a_node_and_bad_resources_are_refused() {
        let args = parse(&["cattail-agent", "dump", "--server", "a:1", "--node-scoped"]);
        assert!(stream(&args).subscriptions().is_err());
        let args = parse(&[
            "cattail-agent",
            "dump",
            "--server",
            "a:1",
            "--resource",
            "pods",
        ]);
        let error = stream(&args).subscriptions().unwrap_err();
        assert!(format!("{error:#}").contains("pods"), "{error:#}");
        assert!(
            Args::try_parse_from(["cattail-agent", "dump"]).is_err(),
            "--server is required"
        );
    }

    #[test]
    fn tls_and_token_flags_build_a_client_or_name_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc").unwrap();
        let token = token.to_str().unwrap();
        let args = parse(&[
            "cattail-agent",
            "dump",
            "--server",
            "https://a:1",
            "--token-file",
            token,
            "--tls-server-name",
            "cattail.cattail-system.svc",
        ]);
        let client = stream(&args).client().unwrap();
        let described = format!("{client:?}");
        assert!(
            described.contains("tls: true") && described.contains(token),
            "{described}"
        );

        let missing = dir.path().join("missing-ca.crt");
        let args = parse(&[
            "cattail-agent",
            "dump",
            "--server",
            "https://a:1",
            "--tls-ca-file",
            missing.to_str().unwrap(),
        ]);
        let error = format!("{:#}", stream(&args).client().unwrap_err());
        assert!(
            error.contains("--tls-ca-file") && error.contains("missing-ca.crt"),
            "{error}"
        );
        assert!(
            Args::try_parse_from([
                "cattail-agent",
                "dump",
                "--server",
                "a:1",
                "--tls-cert-file",
                "c"
            ])
            .is_err(),
            "a client certificate needs its key"
        );
    }
}
