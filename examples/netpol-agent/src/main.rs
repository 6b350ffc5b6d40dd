//! The `netpol-agent` binary: flags, then [`netpol_agent::agent::run`], printing every change
//! as a JSON line on stdout and, with `--listen`, serving the whole state at `GET /state`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cattail_client::{Client, ClientTls, TokenFile};
use clap::Parser;
use netpol_agent::agent;
use netpol_agent::changes::diff;
use netpol_agent::ipsets::NodeState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Computes the IP sets this node's NetworkPolicies need, from a cattail server or directly
/// from the API server, and prints every change as a JSON line.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A cattail server endpoint (`https://host:port`, or `http://` for a plaintext server);
    /// repeat for several replicas.
    #[arg(
        long = "endpoint",
        env = "CATTAIL_ENDPOINTS",
        value_delimiter = ',',
        required_unless_present = "direct",
        conflicts_with = "direct"
    )]
    endpoints: Vec<String>,

    /// Watch the API server directly (in-cluster config or kubeconfig) instead of cattail.
    #[arg(long)]
    direct: bool,

    /// The node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,

    /// Serve the whole state as JSON at `GET /state` on this address.
    #[arg(long, env = "NETPOL_AGENT_LISTEN")]
    listen: Option<SocketAddr>,

    /// The CA bundle (PEM) that verifies the server's certificate; required for `https://`.
    #[arg(long, env = "CATTAIL_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,

    /// A client certificate (PEM) for servers that verify agents; needs --tls-key-file.
    #[arg(long, env = "CATTAIL_TLS_CERT_FILE", requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert-file.
    #[arg(long, env = "CATTAIL_TLS_KEY_FILE", requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,

    /// The name to verify in the server's certificate, when the endpoint is an address.
    #[arg(long, env = "CATTAIL_TLS_SERVER_NAME")]
    tls_server_name: Option<String>,

    /// A file holding a bearer token (a projected ServiceAccount token), read again before
    /// every reconnect.
    #[arg(long, env = "CATTAIL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl Args {
    async fn client(&self) -> anyhow::Result<Client> {
        if self.direct {
            let kube = kube::Client::try_default()
                .await
                .context("--direct: no in-cluster config or kubeconfig")?;
            return Ok(Client::direct(kube));
        }
        let mut client = Client::new(&self.endpoints)
            .agent_id(format!("netpol-agent/{}", self.node_name))
            .agent_version(concat!("netpol-agent/", env!("CARGO_PKG_VERSION")))
            .node_name(&self.node_name);
        if self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_server_name.is_some()
        {
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = args.client().await?;
    let shutdown = CancellationToken::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            shutdown.cancel();
        }
    });
    let (state, states) = watch::channel(Arc::new(NodeState::default()));
    if let Some(addr) = args.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--listen {addr}"))?;
        let app = axum::Router::new().route(
            "/state",
            axum::routing::get({
                let states = states.clone();
                move || async move { axum::Json(NodeState::clone(&states.borrow())) }
            }),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the state endpoint failed");
            }
        });
    }
    let printer = tokio::spawn(print_changes(states, shutdown.clone()));
    let result = agent::run(client, &args.node_name, state, shutdown).await;
    // The state's sender is gone: the printer ends once it has printed the last state.
    printer
        .await
        .context("the printer failed")?
        .context("cannot write to stdout")?;
    Ok(result?)
}

/// Prints the changes between consecutive states as JSON lines, until the states end. If
/// stdout is closed (a reader such as `head` went away) there is no one left to tell: it stops
/// the agent and returns the error.
async fn print_changes(
    mut states: watch::Receiver<Arc<NodeState>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut printed = Arc::new(NodeState::default());
    while states.changed().await.is_ok() {
        let current = Arc::clone(&states.borrow_and_update());
        if let Err(error) = print(&diff(&printed, &current)) {
            shutdown.cancel();
            return Err(error);
        }
        printed = current;
    }
    Ok(())
}

fn print(changes: &[netpol_agent::changes::Change]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for change in changes {
        serde_json::to_writer(&mut out, change)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::try_parse_from([&["netpol-agent"], args].concat()).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_need_a_source_and_a_node() {
        let args = parse(&["--endpoint", "http://a:1,http://b:2", "--node-name", "n1"]).unwrap();
        assert_eq!(args.endpoints, ["http://a:1", "http://b:2"]);
        assert!(!args.direct);
        let args = parse(&["--direct", "--node-name", "n1", "--listen", "127.0.0.1:9"]).unwrap();
        assert!(args.direct && args.endpoints.is_empty());
        assert_eq!(args.listen, Some("127.0.0.1:9".parse().unwrap()));

        let no_source = parse(&["--node-name", "n1"]).unwrap_err();
        assert!(no_source.contains("--endpoint"), "{no_source}");
        let both =
            parse(&["--direct", "--endpoint", "http://a:1", "--node-name", "n"]).unwrap_err();
        assert!(both.contains("cannot be used with"), "{both}");
        let no_node = parse(&["--direct"]).unwrap_err();
        assert!(no_node.contains("--node-name"), "{no_node}");
        let bad_listen = parse(&["--direct", "--node-name", "n", "--listen", "9090"]).unwrap_err();
        assert!(bad_listen.contains("--listen"), "{bad_listen}");
        let half_identity =
            parse(&["--direct", "--node-name", "n", "--tls-cert-file", "c.pem"]).unwrap_err();
        assert!(half_identity.contains("--tls-key-file"), "{half_identity}");
    }

    #[tokio::test]
    async fn a_missing_tls_file_is_named() {
        let args = parse(&[
            "--endpoint",
            "https://a:1",
            "--node-name",
            "n",
            "--tls-ca-file",
            "/nonexistent/ca.crt",
        ])
        .unwrap();
        let error = format!("{:#}", args.client().await.unwrap_err());
        assert!(error.starts_with("--tls-ca-file"), "{error}");
    }
}
