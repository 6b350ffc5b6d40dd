//! `churn`: a bounded stream of writes at a set rate, in a fixed mix of kinds.
//!
//! Every write that changes what agents see stamps [`STAMP_ANNOTATION`] with its write time, so an
//! agent can measure end-to-end latency. Status-only writes change only pod conditions, which the
//! projection drops: they measure deduplication and carry no stamp, since the annotation would
//! change the projected bytes. Deletes use grace period 0 (there is no kubelet to finish them) and
//! only remove pods an earlier churn write created, so the seeded cluster keeps its size.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::objects::{self, FIELD_MANAGER, STAMP_ANNOTATION};
use crate::pacer::Pacer;
use crate::scenario::Scenario;

/// How many churn writes may be in flight at once.
const CONCURRENCY: usize = 64;

/// One kind of churn write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnKind {
    /// A pod's `version` label changes (projected: agents see it).
    PodLabel,
    /// A pod's Ready condition flips (dropped by the projection).
    PodStatusOnly,
    /// A new pod is created, already bound to a node.
    PodCreate,
    /// A pod created by an earlier churn write is deleted.
    PodDelete,
    /// A NetworkPolicy's port changes (cluster-wide: every agent sees it).
    PolicyEdit,
}

/// The mix, in percent: `(kind, share)`. Creates and deletes balance.
pub const MIX: [(ChurnKind, u64); 5] = [
    (ChurnKind::PodLabel, 40),
    (ChurnKind::PodStatusOnly, 20),
    (ChurnKind::PodCreate, 12),
    (ChurnKind::PodDelete, 12),
    (ChurnKind::PolicyEdit, 16),
];

/// A well-mixed 64-bit hash (SplitMix64's finalizer), for deterministic pseudo-random choices.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The kind of write number `n`: deterministic, and distributed as [`MIX`].
pub fn kind_of(n: u64) -> ChurnKind {
    let mut roll = mix64(n) % 100;
    for (kind, share) in MIX {
        if roll < share {
            return kind;
        }
        roll -= share;
    }
    ChurnKind::PodLabel
}

/// Bounds of one churn run: it stops at whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct ChurnLimits {
    /// Writes per second.
    pub rate: u32,
    /// How long to churn.
    pub duration: Duration,
    /// At most this many writes.
    pub max_writes: u64,
}

/// What a churn run did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ChurnReport {
    /// Writes that succeeded, by kind.
    pub writes: std::collections::BTreeMap<String, u64>,
    /// Writes that failed.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Wall time of the run in seconds.
    pub seconds: f64,
}

impl ChurnReport {
    /// Every successful write.
    pub fn total(&self) -> u64 {
        self.writes.values().sum()
    }
}

/// Now, in Unix nanoseconds.
pub fn unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

struct ChurnState {
    client: kube::Client,
    scenario: Scenario,
    run_id: u64,
    created: Mutex<VecDeque<(String, u32)>>,
}

impl ChurnState {
    async fn write(&self, n: u64) -> kube::Result<ChurnKind> {
        let s = &self.scenario;
        let pick = (mix64(n ^ 0x5eed) % u64::from(s.pods.max(1))) as u32;
        let stamp = unix_nanos().to_string();
        let merge = PatchParams::default();
        let mut kind = kind_of(n);
        let victim = if kind == ChurnKind::PodDelete {
            let victim = self.lock().pop_front();
            if victim.is_none() {
                kind = ChurnKind::PodCreate;
            }
            victim
        } else {
            None
        };
        match kind {
            ChurnKind::PodLabel => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace_of(pick));
                let patch = json!({"metadata": {"labels": {"version": n.to_string()},
                                                "annotations": {STAMP_ANNOTATION: stamp}}});
                api.patch(&objects::pod_name(pick), &merge, &Patch::Merge(&patch))
                    .await?;
            }
            ChurnKind::PodStatusOnly => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace_of(pick));
                let name = objects::pod_name(pick);
                let status = objects::pod_status(s, pick, &name, n.is_multiple_of(2), n);
                let patch = json!({"status": status["status"]});
                api.patch_status(&name, &merge, &Patch::Merge(&patch))
                    .await?;
            }
            ChurnKind::PodCreate => {
                let name = format!("churn-{}-{n}", self.run_id);
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace_of(pick));
                let value = objects::pod(s, pick, Some(&name), Some(unix_nanos()));
                let pod: Pod = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                api.create(&params, &pod).await?;
                self.lock().push_back((name, pick));
            }
            ChurnKind::PodDelete => {
                if let Some((name, pod)) = victim {
                    let api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace_of(pod));
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    api.delete(&name, &params).await?;
                }
            }
            ChurnKind::PolicyEdit => {
                let policy = (mix64(n ^ 0xbeef) % u64::from(s.policies.max(1))) as u32;
                let api: Api<NetworkPolicy> =
                    Api::namespaced(self.client.clone(), &s.namespace_of(policy));
                let port = 1_000 + (n % 20_000) as u16;
                let value = objects::network_policy(s, policy, port, Some(unix_nanos()));
                let patch = json!({"metadata": {"annotations": value["metadata"]["annotations"]},
                                   "spec": value["spec"]});
                api.patch(&objects::policy_name(policy), &merge, &Patch::Merge(&patch))
                    .await?;
            }
        }
        Ok(kind)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, u32)>> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Churns `scenario`'s cluster within `limits`, then deletes the pods it created and that are left.
pub async fn churn(client: &kube::Client, scenario: &Scenario, limits: ChurnLimits) -> ChurnReport {
    let state = Arc::new(ChurnState {
        client: client.clone(),
        scenario: *scenario,
        run_id: (unix_nanos() as u64) % 1_000_000_007,
        created: Mutex::new(VecDeque::new()),
    });
    let pacer = Arc::new(Pacer::new(limits.rate));
    let start = tokio::time::Instant::now();
    let deadline = start + limits.duration;
    let results: Vec<_> = futures::stream::iter(0..limits.max_writes)
        .take_while(|_| futures::future::ready(tokio::time::Instant::now() < deadline))
        .map(|n| {
            let (state, pacer) = (state.clone(), pacer.clone());
            async move {
                let slot = pacer.reserve(tokio::time::Instant::now());
                if slot >= deadline {
                    return None;
                }
                tokio::time::sleep_until(slot).await;
                Some(state.write(n).await)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut report = ChurnReport {
        seconds: start.elapsed().as_secs_f64(),
        ..ChurnReport::default()
    };
    for result in results.into_iter().flatten() {
        match result {
            Ok(kind) => {
                let key = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *report.writes.entry(key).or_default() += 1;
            }
            Err(error) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let leftovers: Vec<_> = state.lock().drain(..).collect();
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    futures::stream::iter(leftovers)
        .for_each_concurrent(CONCURRENCY, |(name, pod)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), &scenario.namespace_of(pod));
            let params = params.clone();
            async move {
                let _ = api.delete(&name, &params).await;
            }
        })
        .await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_to_100_percent() {
        assert_eq!(MIX.iter().map(|(_, s)| s).sum::<u64>(), 100);
    }

    #[test]
    fn kinds_follow_the_mix() {
        let n = 100_000u64;
        for (kind, share) in MIX {
            let seen = (0..n).filter(|i| kind_of(*i) == kind).count() as f64;
            let expected = n as f64 * share as f64 / 100.0;
            assert!(
                (seen - expected).abs() < expected * 0.05,
                "{kind:?}: {seen} vs {expected}"
            );
        }
    }

    #[test]
    fn kinds_are_deterministic() {
        let a: Vec<_> = (0..50).map(kind_of).collect();
        let b: Vec<_> = (0..50).map(kind_of).collect();
        assert_eq!(a, b);
    }
}
