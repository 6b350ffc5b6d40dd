//! `cattail-testenv`: start a real kube-apiserver and etcd on loopback by hand.
//!
//! `up` stays in the foreground until SIGINT or SIGTERM and then stops everything it
//! started; `build` only builds the control-plane binary; `compact` forces an etcd
//! compaction on a running control plane.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use cattail_testenv::{ControlPlane, Options, ReadyInfo, ensure_binary};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(
    name = "cattail-testenv",
    version,
    about = "A real kube-apiserver and etcd on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start etcd, kube-apiserver and kube-controller-manager on free loopback ports.
    ///
    /// Writes DIR/kubeconfig (admin), prints one JSON line (kubeconfig, server, pid,
    /// etcd, control, log) once /readyz is ok, and stays in the foreground until
    /// SIGINT or SIGTERM. Logs go to DIR/testenv.log and DIR/controller-manager.log.
    Up(UpArgs),
    /// Build the control-plane binary if it is missing or stale, and print its path.
    Build,
    /// Force an etcd compaction on a running control plane (see docs/TESTENV.md).
    Compact {
        /// The data directory of a running `up`.
        #[arg(long, env = "CATTAIL_TESTENV_DIR")]
        dir: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Data directory: etcd data, certificates, kubeconfig and logs.
    #[arg(long, env = "CATTAIL_TESTENV_DIR")]
    dir: PathBuf,
    /// kube-apiserver's port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0, env = "CATTAIL_TESTENV_APISERVER_PORT")]
    apiserver_port: u16,
    /// etcd's client port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0, env = "CATTAIL_TESTENV_ETCD_PORT")]
    etcd_port: u16,
    /// The control endpoint's port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0, env = "CATTAIL_TESTENV_CONTROL_PORT")]
    control_port: u16,
    /// How often kube-apiserver compacts etcd, e.g. "2s" to provoke 410 Gone often.
    #[arg(long, value_parser = humantime::parse_duration, env = "CATTAIL_TESTENV_COMPACTION_INTERVAL")]
    compaction_interval: Option<Duration>,
    /// kube-controller-manager controllers to run ("" runs none).
    #[arg(long, env = "CATTAIL_TESTENV_CONTROLLERS")]
    controllers: Option<String>,
    /// Make etcd fsync its writes (slower; off by default in a test cluster).
    #[arg(long)]
    fsync: bool,
    /// Give up if the control plane is not ready within this time.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
    /// Log verbosity of the Kubernetes components.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=10))]
    verbosity: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Up(args) => up(args).await,
        Command::Build => {
            let paths = tokio::task::spawn_blocking(ensure_binary).await??;
            println!("{}", paths.binary.display());
            Ok(())
        }
        Command::Compact { dir } => {
            let info_path = dir.join("testenv.json");
            let text = std::fs::read_to_string(&info_path).with_context(|| {
                format!(
                    "reading {} (is `cattail-testenv up` running there?)",
                    info_path.display()
                )
            })?;
            let info: ReadyInfo = serde_json::from_str(&text)?;
            let outcome = cattail_testenv::compact(&info.control)?;
            println!("{}", serde_json::json!({"revision": outcome.revision}));
            Ok(())
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let options = Options {
        apiserver_port: args.apiserver_port,
        etcd_port: args.etcd_port,
        control_port: args.control_port,
        compaction_interval: args.compaction_interval,
        controllers: args.controllers,
        fsync: args.fsync,
        ready_timeout: args.ready_timeout,
        verbosity: args.verbosity,
    };
    let dir = args.dir;
    // Install the handlers before the ready line goes out: whoever reads that line may signal
    // at once, and an uninstalled SIGINT would kill this process without stopping the plane.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let start = tokio::task::spawn_blocking(move || -> anyhow::Result<ControlPlane> {
        let paths = ensure_binary()?;
        Ok(ControlPlane::spawn(&paths.binary, &dir, &options)?)
    });
    // A signal during the build or start-up ends the launcher with an error. The start-up step
    // cannot be cancelled: the runtime waits for it to return on the way out, and a control
    // plane it started is then dropped, which stops it.
    let mut plane = tokio::select! {
        started = start => started??,
        _ = sigint.recv() => bail!("interrupted before the control plane was ready"),
        _ = sigterm.recv() => bail!("terminated before the control plane was ready"),
    };
    println!("{}", serde_json::to_string(plane.info())?);

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                if let Some(err) = plane.exit_error("while running") {
                    bail!(err);
                }
            }
        }
    }
    eprintln!(
        "cattail-testenv: stopping the control plane (pid {})",
        plane.pid()
    );
    tokio::task::spawn_blocking(move || plane.stop(Duration::from_secs(30))).await?;
    Ok(())
}
