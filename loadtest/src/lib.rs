//! cattail-loadtest: seeds a real API server, churns it, runs thousands of agents against
//! cattail, measures the same work against plain TCP and direct API watches, and reports.
//!
//! Layers, lowest first: [`scenario`] and [`objects`] are pure data; [`seed`] and [`churn`]
//! write to the API server; [`agents`], [`tcp`] and [`direct`] are the measured clients;
//! [`cost`] replays churn into an in-process server, for instruction counts per delivery;
//! [`procs`] starts and samples child processes; [`run`] and [`demo`] orchestrate; [`report`]
//! and [`plot`] turn a run into files. [`flood`] is the Hello flood of issue 12, a measuring
//! tool for memory before trust.

pub mod agents;
pub mod child;
pub mod churn;
pub mod cost;
pub mod demo;
pub mod direct;
pub mod flood;
pub mod objects;
pub mod pacer;
pub mod pki;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod server;
pub mod stats;
pub mod tcp;

use std::path::Path;

/// A Kubernetes client from a kubeconfig file, or from the environment when none is given: the
/// server's own [`cattail_server::args::kube_config`], with a shorter read timeout for a file.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let mut config = cattail_server::args::kube_config(kubeconfig).await?;
    if kubeconfig.is_some() {
        config.read_timeout = Some(std::time::Duration::from_secs(60));
    }
    Ok(kube::Client::try_from(config)?)
}
