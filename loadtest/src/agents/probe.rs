//! Probe agents: the real `cattail-client` with a full cache, checked against the API server.
//!
//! A probe applies every event to its own map, staging a resync between `Init` and `InitDone` as
//! kube-runtime's store does. `check` lists the same objects from the API server and compares
//! keys and the pod `version` label (what churn changes), retrying for up to 15 s, since a cache
//! is only eventually equal to the source.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cattail_client::{Client, Event, Subscription};
use cattail_proto::ObjectKey as Key;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AgentCounters, SUBSCRIPTIONS, Shared};

/// One probe's cache: resource -> key -> projected JSON.
#[derive(Debug, Default)]
struct Cache {
    objects: HashMap<String, BTreeMap<Key, Bytes>>,
    staging: HashMap<String, BTreeMap<Key, Bytes>>,
}

/// Every probe of the process.
#[derive(Clone, Debug, Default)]
pub struct Probes(Arc<Mutex<Vec<ProbeEntry>>>);

/// A probe's node and cache.
type ProbeEntry = (String, Arc<Mutex<Cache>>);

/// The outcome of a correctness check.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckResult {
    /// Probes checked.
    pub probes: u32,
    /// Probes whose cache matched the API server.
    pub consistent: u32,
    /// What differed, for a few probes.
    pub details: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a probe connects, and the CA bundle it trusts for an `https://` endpoint.
pub(super) struct Target {
    pub(super) endpoint: String,
    pub(super) ca_file: Option<std::path::PathBuf>,
}

/// Runs probe agent `index` until `stop`.
pub(super) async fn run(
    probes: Probes,
    index: u32,
    node: String,
    Target { endpoint, ca_file }: Target,
    counters: Arc<AgentCounters>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let cache = Arc::new(Mutex::new(Cache::default()));
    lock(&probes.0).push((node.clone(), cache.clone()));
    let subscriptions: Vec<Subscription> = SUBSCRIPTIONS
        .iter()
        .filter_map(|(resource, scoped)| {
            let s = Subscription::for_resource(resource).ok()?;
            Some(if *scoped { s.node_scoped() } else { s })
        })
        .collect();
    let mut client = Client::new([endpoint])
        .agent_id(format!("lt-probe-{index}"))
        .node_name(node);
    if let Some(ca_file) = ca_file {
        let tls = cattail_client::ClientTls::new()
            .ca_file(ca_file)
            .map(|tls| tls.server_name("localhost"));
        match tls {
            Ok(tls) => client = client.tls(tls),
            Err(error) => {
                shared.error(format!("probe TLS settings: {error}"));
                return;
            }
        }
    }
    let mut events = match client.subscribe(&subscriptions) {
        Ok(events) => events,
        Err(error) => {
            shared.error(format!("probe cannot subscribe: {error}"));
            return;
        }
    };
    let start = Instant::now();
    let mut pending_init: BTreeSet<String> =
        SUBSCRIPTIONS.iter().map(|(r, _)| (*r).to_owned()).collect();
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = events.next() => item,
        };
        let Some(item) = item else { return };
        let event = match item {
            Ok(event) => event,
            Err(error) => {
                // The client resumes on its own and keeps its store (a digest resync may emit
                // no event at all), so a probe stays synced across reconnects.
                counters.reconnects.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("probe stream: {error}"));
                continue;
            }
        };
        counters.connected.store(true, Ordering::Relaxed);
        let resource = event.resource.to_string();
        let mut c = lock(&cache);
        match event.event {
            Event::Init => {
                c.staging.insert(resource, BTreeMap::new());
            }
            Event::InitApply(o) => {
                counters
                    .bytes
                    .fetch_add(o.value.len() as u64, Ordering::Relaxed);
                c.staging
                    .entry(resource)
                    .or_default()
                    .insert(Key::new(o.namespace, o.name), o.value);
            }
            Event::InitDone => {
                let staged = c.staging.remove(&resource).unwrap_or_default();
                c.objects.insert(resource.clone(), staged);
                if pending_init.remove(&resource) && pending_init.is_empty() {
                    counters.synced.store(true, Ordering::Relaxed);
                    shared
                        .recorder()
                        .sync_ms
                        .record(start.elapsed().as_millis() as u64);
                }
            }
            Event::Apply(o) => {
                counters
                    .bytes
                    .fetch_add(o.value.len() as u64, Ordering::Relaxed);
                c.objects
                    .entry(resource)
                    .or_default()
                    .insert(Key::new(o.namespace, o.name), o.value);
            }
            Event::Delete(o) => {
                c.objects
                    .entry(resource)
                    .or_default()
                    .remove(&Key::new(o.namespace, o.name));
            }
        }
    }
}

/// What the API server holds for one node: pods (key -> version label) and policy keys.
async fn truth(
    client: &kube::Client,
    node: &str,
) -> kube::Result<(BTreeMap<Key, String>, BTreeSet<Key>)> {
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let pods = list
        .items
        .into_iter()
        .map(|p| {
            let version = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("version").cloned());
            let key = Key::new(
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default(),
            );
            (key, version.unwrap_or_default())
        })
        .collect();
    let policies: Api<NetworkPolicy> = Api::all(client.clone());
    let policies = policies
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|p| {
            Key::new(
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default(),
            )
        })
        .collect();
    Ok((pods, policies))
}

fn compare(
    cache: &Cache,
    pods: &BTreeMap<Key, String>,
    policies: &BTreeSet<Key>,
) -> Option<String> {
    let empty = BTreeMap::new();
    let cached_pods = cache.objects.get("v1/pods").unwrap_or(&empty);
    let cached: BTreeMap<&Key, String> = cached_pods
        .iter()
        .map(|(k, v)| {
            let json: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
            let version = json["metadata"]["labels"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (k, version)
        })
        .collect();
    let want: BTreeMap<&Key, String> = pods.iter().map(|(k, v)| (k, v.clone())).collect();
    if cached != want {
        return Some(format!(
            "pods: cache has {}, API server {}",
            cached.len(),
            want.len()
        ));
    }
    let cached_policies: BTreeSet<&Key> = cache
        .objects
        .get("networking.k8s.io/v1/networkpolicies")
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let want: BTreeSet<&Key> = policies.iter().collect();
    (cached_policies != want).then(|| {
        format!(
            "policies: cache has {}, API server {}",
            cached_policies.len(),
            want.len()
        )
    })
}

impl Probes {
    /// Compares every probe's cache with the API server, retrying for up to 15 s.
    pub async fn check(&self, kubeconfig: Option<&Path>, _nodes: u32) -> CheckResult {
        let probes = lock(&self.0).clone();
        let mut result = CheckResult {
            probes: probes.len() as u32,
            ..CheckResult::default()
        };
        if probes.is_empty() {
            return result;
        }
        let client = match crate::kube_client(kubeconfig).await {
            Ok(client) => client,
            Err(error) => {
                result
                    .details
                    .push(format!("no API client for the check: {error:#}"));
                return result;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            result.consistent = 0;
            result.details.clear();
            for (node, cache) in &probes {
                let outcome = match truth(&client, node).await {
                    Ok((pods, policies)) => compare(&lock(cache), &pods, &policies),
                    Err(error) => Some(format!("listing from the API server: {error}")),
                };
                match outcome {
                    None => result.consistent += 1,
                    Some(detail) if result.details.len() < 5 => {
                        result.details.push(format!("{node}: {detail}"))
                    }
                    Some(_) => {}
                }
            }
            if result.consistent == result.probes || Instant::now() >= deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
