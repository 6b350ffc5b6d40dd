//! `direct`: the API-relief baseline. The same agents, each with its own client, watching the API
//! server directly with kube-runtime watchers: pods on its node (a field selector), and every
//! other resource of the cattail subscription list.
//!
//! Agents record time to their first complete list and end-to-end latency from the write stamp.
//! Everything stops when the returned handle is stopped or dropped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::churn::unix_nanos;
use crate::objects::STAMP_ANNOTATION;
use crate::scenario::node_name;
use crate::stats::Hist;

/// Watches per agent.
pub const WATCHES_PER_AGENT: u32 = 7;

/// What the direct agents measure.
#[derive(Debug, Default)]
pub struct DirectStats {
    /// Watches that completed their first list.
    pub listed: AtomicU32,
    /// Watch errors (each followed by kube-runtime's backoff and a retry).
    pub errors: AtomicU32,
    /// API write to receipt, µs.
    pub e2e_us: Mutex<Hist>,
}

/// Running direct agents; dropping it stops them.
pub struct DirectAgents {
    /// Their measurements.
    pub stats: Arc<DirectStats>,
    /// How many watches they run.
    pub watches: u32,
    _stop: DropGuard,
}

async fn watch_one<K>(
    api: Api<K>,
    config: watcher::Config,
    stats: Arc<DirectStats>,
    stop: CancellationToken,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events = Box::pin(watcher::watcher(api, config));
    let mut listed = false;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Err(_)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Event::InitDone)) if !listed => {
                listed = true;
                stats.listed.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Event::Apply(object))) => {
                let stamp = object
                    .meta()
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(STAMP_ANNOTATION))
                    .and_then(|s| s.parse::<i128>().ok());
                if let Some(stamp) = stamp {
                    let lag = (unix_nanos() - stamp) / 1_000;
                    stats
                        .e2e_us
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .record_signed(lag);
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Starts `count` direct agents, agent `i` on node `i % nodes`, each with its own client made
/// by `make_client` (so each has its own connections, as separate agents would).
pub async fn start(
    count: u32,
    nodes: u32,
    kube_config: &kube::Config,
) -> anyhow::Result<DirectAgents> {
    let stop = CancellationToken::new();
    let stats = Arc::new(DirectStats::default());
    for i in 0..count {
        let client = kube::Client::try_from(kube_config.clone())?;
        let node = node_name(i % nodes.max(1));
        let pods = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let all = watcher::Config::default;
        let (s, t) = (stats.clone(), stop.clone());
        tokio::spawn(watch_one(
            Api::<Pod>::all(client.clone()),
            pods,
            s.clone(),
            t.clone(),
        ));
        tokio::spawn(watch_one(
            Api::<Namespace>::all(client.clone()),
            all(),
            s.clone(),
            t.clone(),
        ));
        tokio::spawn(watch_one(
            Api::<Node>::all(client.clone()),
            all(),
            s.clone(),
            t.clone(),
        ));
        tokio::spawn(watch_one(
            Api::<Service>::all(client.clone()),
            all(),
            s.clone(),
            t.clone(),
        ));
        tokio::spawn(watch_one(
            Api::<EndpointSlice>::all(client.clone()),
            all(),
            s.clone(),
            t.clone(),
        ));
        tokio::spawn(watch_one(
            Api::<NetworkPolicy>::all(client.clone()),
            all(),
            s.clone(),
            t.clone(),
        ));
        tokio::spawn(watch_one(Api::<ServiceAccount>::all(client), all(), s, t));
    }
    Ok(DirectAgents {
        stats,
        watches: count * WATCHES_PER_AGENT,
        _stop: stop.drop_guard(),
    })
}
