//! `seed`: fills an API server with a scenario's synthetic cluster at a bounded rate.
//!
//! Every object is written with server-side apply under one field manager, so seeding twice is a
//! no-op the second time and a half-finished seed can simply be run again. Nodes and pods also get
//! a status patch, as a kubelet would write. Writes run concurrently, paced by one [`Pacer`].

use std::sync::Arc;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use crate::objects::{self, FIELD_MANAGER};
use crate::pacer::Pacer;
use crate::scenario::{Scenario, namespace_name, node_name};

/// How many writes may be in flight at once.
const CONCURRENCY: usize = 32;

/// One write of the seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeedWrite {
    Namespace(u32),
    /// The node, then its status.
    Node(u32),
    Service(u32),
    EndpointSlice(u32),
    /// The pod, then its status (two writes, in order).
    Pod(u32),
    Policy(u32),
}

/// Every write of a seed, in dependency order (namespaces first).
fn plan(s: &Scenario) -> Vec<SeedWrite> {
    let mut writes = Vec::new();
    writes.extend((0..s.namespaces).map(SeedWrite::Namespace));
    writes.extend((0..s.nodes).map(SeedWrite::Node));
    writes.extend((0..s.services).map(SeedWrite::Service));
    writes.extend((0..s.services).map(SeedWrite::EndpointSlice));
    writes.extend((0..s.pods).map(SeedWrite::Pod));
    writes.extend((0..s.policies).map(SeedWrite::Policy));
    writes
}

/// Server-side apply of `value` as `name` through `api` (of the status when `status`).
pub(crate) async fn apply<K>(
    api: &Api<K>,
    name: &str,
    value: &Value,
    status: bool,
) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if status {
        api.patch_status(name, &params, &Patch::Apply(value))
            .await?;
    } else {
        api.patch(name, &params, &Patch::Apply(value)).await?;
    }
    Ok(())
}

async fn write(
    client: &kube::Client,
    s: &Scenario,
    w: SeedWrite,
    pacer: &Pacer,
) -> kube::Result<()> {
    match w {
        SeedWrite::Namespace(i) => {
            let api: Api<Namespace> = Api::all(client.clone());
            apply(&api, &namespace_name(i), &objects::namespace(i), false).await
        }
        SeedWrite::Node(i) => {
            let api: Api<Node> = Api::all(client.clone());
            apply(&api, &node_name(i), &objects::node(i), false).await?;
            pacer.wait().await;
            apply(&api, &node_name(i), &objects::node_status(i), true).await
        }
        SeedWrite::Service(i) => {
            let api: Api<Service> = Api::namespaced(client.clone(), &s.namespace_of(i));
            apply(&api, &format!("svc-{i}"), &objects::service(s, i), false).await
        }
        SeedWrite::EndpointSlice(i) => {
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &s.namespace_of(i));
            let value = objects::endpoint_slice(s, i);
            apply(&api, &format!("svc-{i}-seed"), &value, false).await
        }
        SeedWrite::Pod(i) => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &s.namespace_of(i));
            let name = objects::pod_name(i);
            apply(&api, &name, &objects::pod(s, i, None, None), false).await?;
            pacer.wait().await;
            apply(
                &api,
                &name,
                &objects::pod_status(s, i, &name, true, 0),
                true,
            )
            .await
        }
        SeedWrite::Policy(i) => {
            let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &s.namespace_of(i));
            let value = objects::network_policy(s, i, 80, None);
            apply(&api, &objects::policy_name(i), &value, false).await
        }
    }
}

/// Seeds `scenario` at `qps` writes a second; `progress` shows a bar on the terminal.
///
/// Namespaces are written before everything else, since every other object lives in one.
pub async fn seed(
    client: &kube::Client,
    scenario: &Scenario,
    qps: u32,
    progress: bool,
) -> anyhow::Result<u64> {
    let writes = plan(scenario);
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(writes.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "seed {bar:40} {pos}/{len} writes {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let pacer = Arc::new(Pacer::new(qps));
    let (first, rest): (Vec<_>, Vec<_>) = writes
        .into_iter()
        .partition(|w| matches!(w, SeedWrite::Namespace(_)));
    let mut done = 0;
    for batch in [first, rest] {
        done += stream::iter(batch)
            .map(|w| {
                let pacer = pacer.clone();
                let bar = bar.clone();
                async move {
                    pacer.wait().await;
                    write(client, scenario, w, &pacer)
                        .await
                        .with_context(|| format!("seeding {w:?}"))?;
                    bar.inc(1);
                    Ok::<_, anyhow::Error>(1u64)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_fold(0, |n, one| async move { Ok(n + one) })
            .await?;
    }
    bar.finish_and_clear();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ScenarioName;

    #[test]
    fn the_plan_writes_every_object_once() {
        let s = Scenario::named(ScenarioName::Small);
        let writes = plan(&s);
        assert_eq!(writes.len() as u64, s.objects());
        assert!(matches!(writes[0], SeedWrite::Namespace(0)));
        assert!(writes.contains(&SeedWrite::Pod(s.pods - 1)));
    }
}
