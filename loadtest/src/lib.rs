//! cattail-loadtest: seeds a real API server, churns it, runs thousands of agents against
//! cattail, measures the same work against plain TCP and direct API watches, and reports.
//!
//! Layers, lowest first: [`scenario`] and [`objects`] are pure data; [`seed`] and [`churn`]
//! write to the API server; [`agents`], [`tcp`] and [`direct`] are the measured clients;
//! [`procs`] starts and samples child processes; [`run`] and [`demo`] orchestrate; [`report`]
//! and [`plot`] turn a run into files.

pub mod agents;
pub mod child;
pub mod churn;
pub mod demo;
pub mod direct;
pub mod objects;
pub mod pacer;
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

use anyhow::Context;

/// A Kubernetes client from a kubeconfig file, or from the environment when none is given.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let mut config = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .with_context(|| format!("using kubeconfig {}", path.display()))?;
            config.read_timeout = Some(std::time::Duration::from_secs(60));
            config
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig and no usable $KUBECONFIG or in-cluster config")?,
    };
    Ok(kube::Client::try_from(config)?)
}
