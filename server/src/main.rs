//! `cattail`: the fan-out server binary. Everything is wired in `cattail_server::serve`;
//! this file only parses arguments, sets up logging and handles signals.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cattail_server::args::{Cli, Command, LogFormat, ServeArgs, kube_config};
use cattail_server::config::ServerConfig;
use cattail_server::replicas::ReplicaSettings;
use cattail_server::serve::{ServeOptions, serve};
use cattail_server::tls::ServerTls;
use clap::Parser;
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => run(args).await,
        Command::CheckConfig { config } => check_config(config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cattail: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// One line with every cause: what failed, and why. A cause whose text its parent's message
/// already holds is not repeated.
// Kept over anyhow's `{:#}`: cattail's error messages embed their source, which `{:#}` repeats.
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn check_config(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    // The same checks `serve` makes, so a file that passes here starts.
    ServeOptions::from_config(config.clone()).map_err(|e| in_file(path, e))?;
    print!("{}", serde_yaml_ng::to_string(&config)?);
    Ok(())
}

/// `error`, naming the config file it is about.
fn in_file(
    path: Option<&std::path::Path>,
    error: cattail_server::config::Error,
) -> cattail_server::config::Error {
    match path {
        Some(path) => cattail_server::config::Error::InFile {
            path: path.to_owned(),
            source: Box::new(error),
        },
        None => error,
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<ServerConfig> {
    match path {
        Some(path) => Ok(ServerConfig::load(path)?),
        None => Ok(ServerConfig::default()),
    }
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let mut config = load_config(args.config.as_deref())?;
    args.apply_tls_flags(&mut config.tls);
    config
        .validate()
        .map_err(|e| in_file(args.config.as_deref(), e))?;
    let mut options =
        ServeOptions::from_config(config).map_err(|e| in_file(args.config.as_deref(), e))?;
    options.fanout.server_id = args.server_id.clone();
    options.grpc.transport = args.grpc_transport;
    options.watch.streaming_lists = args.streaming_lists;
    options.fanout.drain_period = args
        .drain_period(options.fanout.drain_period)
        .map_err(anyhow::Error::msg)?;
    // Installed before "listening" is logged, so a signal sent on that line is never missed.
    let signals = (
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
    );
    let metrics = cattail_server::admin::install_recorder()?;
    let tls = ServerTls::from_settings(&options.config.tls, args.insecure_plaintext)?;
    let client = kube::Client::try_from(kube_config(args.kubeconfig.as_deref()).await?)?;
    let grpc = listen(args.listen).with_context(|| format!("binding --listen {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding --admin-listen {}", args.admin_listen))?;
    tracing::info!(grpc = %grpc.local_addr()?, admin = %admin.local_addr()?, tls = tls.is_some(), "listening");

    options.grpc.tls = tls;
    options.replicas = args
        .replicas_service
        .clone()
        .map(|service| ReplicaSettings {
            service,
            namespace: args.namespace.clone(),
            own_ip: args.pod_ip,
            port: args.listen.port(),
        });
    let shutdown = CancellationToken::new();
    tokio::spawn(handle_signals(
        signals,
        options.drain.clone(),
        args.shutdown_grace,
    ));
    serve(options, client, grpc, Some(admin), metrics, shutdown, None).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The gRPC listener, with an accept queue that holds a connect storm: thousands of agents
/// reconnect at once after a replica restarts, and tokio's default backlog (1,024) would drop
/// the rest into SYN retries of seconds. The kernel caps it at `net.core.somaxconn`.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    const BACKLOG: u32 = 8192;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// SIGTERM or SIGINT starts the drain (which then shuts down); a second signal, or the grace
/// period running out, exits at once.
async fn handle_signals(
    (mut term, mut int): (Signal, Signal),
    drain: CancellationToken,
    grace: Duration,
) {
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!(?grace, "draining, then shutting down");
    drain.cancel();
    tokio::select! {
        _ = term.recv() => tracing::warn!("second signal: exiting now"),
        _ = int.recv() => tracing::warn!("second signal: exiting now"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over: exiting now"),
    }
    std::process::exit(1);
}
