//! `cattail-agent`: a debugging and example agent for cattail.
//!
//! `dump` prints one consistent snapshot of the subscribed resources as JSON lines and exits;
//! `run` stays connected, logs event counts and serves Prometheus metrics. Everything is wired
//! together in `args.rs`; this file only starts logging and picks the command.

mod args;
mod dump;
mod run;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args::Args::parse();
    // Logs go to stderr: `dump` owns stdout.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        args::Command::Dump(dump) => dump::dump(dump).await,
        args::Command::Run(run) => run::run(run).await,
    }
}
