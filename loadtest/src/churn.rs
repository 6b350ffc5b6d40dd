//! `churn`: a bounded stream of writes at a set rate, in a fixed mix of kinds, planned from a seed.
//!
//! Every write is decided before it is sent by [`Plan`], from the run's seed and the write's
//! number alone: its kind, its target and its values. The same seed plans the same writes, so a
//! run can be repeated exactly; a different seed writes label values and ports never written
//! before (they carry the seed), so a second churn over the same cluster changes as much as the
//! first instead of rewriting values the store already holds.
//!
//! Every write that changes what agents see stamps [`STAMP_ANNOTATION`] with its write time, so an
//! agent can measure end-to-end latency. Status-only writes change only pod conditions, which the
//! projection drops: they measure deduplication and carry no stamp, since the annotation would
//! change the projected bytes. A create is a create and then the status a kubelet would report
//! (phase Running and an IP), as in a real cluster, where a pod becomes interesting to a node
//! agent once it has an IP. Deletes use grace period 0 (there is no kubelet to finish them) and
//! only remove pods an earlier churn write of the same run created, so the seeded cluster keeps
//! its size.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

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
    /// A new pod is created, already bound to a node, then given an IP.
    PodCreate,
    /// A pod created by an earlier churn write is deleted.
    PodDelete,
    /// A NetworkPolicy's port and `version` label change (cluster-wide: every agent sees it).
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

/// The kind of write number `n` of the run seeded with `seed`: deterministic, and distributed
/// as [`MIX`].
pub fn kind_of(seed: u64, n: u64) -> ChurnKind {
    let mut roll = mix64(mix64(seed) ^ n) % 100;
    for (kind, share) in MIX {
        if roll < share {
            return kind;
        }
        roll -= share;
    }
    ChurnKind::PodLabel
}

/// A seed for a run that was given none: the clock, mixed.
pub fn fresh_seed() -> u64 {
    mix64(unix_nanos() as u64)
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
    /// The seed the run was planned from: `cattail-loadtest churn --seed` repeats it.
    pub seed: u64,
    /// Writes that succeeded, by kind.
    pub writes: std::collections::BTreeMap<String, u64>,
    /// Writes that failed.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// Writes that changed a projected object, as the cattail server counted them
    /// (`cattail_updates_published_total` over the run), when a server was watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_changes: Option<u64>,
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

/// Whether a planned create went through: `None` while it is in flight.
type Created = Option<bool>;

/// One write, decided before it is sent.
#[derive(Debug)]
pub(crate) enum Write {
    PodLabel {
        pod: u32,
        version: String,
    },
    PodStatusOnly {
        pod: u32,
        ready: bool,
    },
    PodCreate {
        pod: u32,
        name: String,
        done: watch::Sender<Created>,
    },
    PodDelete {
        pod: u32,
        name: String,
        created: watch::Receiver<Created>,
    },
    PolicyEdit {
        policy: u32,
        port: u16,
        version: String,
    },
}

impl Write {
    pub(crate) fn kind(&self) -> ChurnKind {
        match self {
            Write::PodLabel { .. } => ChurnKind::PodLabel,
            Write::PodStatusOnly { .. } => ChurnKind::PodStatusOnly,
            Write::PodCreate { .. } => ChurnKind::PodCreate,
            Write::PodDelete { .. } => ChurnKind::PodDelete,
            Write::PolicyEdit { .. } => ChurnKind::PolicyEdit,
        }
    }
}

/// The writes of one run, in order: a pure function of the seed, the scenario and the write
/// number (creates and deletes pair up in plan order, not in the order the API answers).
#[derive(Debug)]
pub(crate) struct Plan {
    seed: u64,
    pods: u32,
    policies: u32,
    /// Pods planned for creation and not yet planned for deletion, oldest first.
    created: VecDeque<(String, u32, watch::Receiver<Created>)>,
}

impl Plan {
    pub(crate) fn new(seed: u64, scenario: &Scenario) -> Self {
        Self {
            seed,
            pods: scenario.pods.max(1),
            policies: scenario.policies.max(1),
            created: VecDeque::new(),
        }
    }

    /// A value no other run writes: the seed and the write number.
    fn version(&self, n: u64) -> String {
        format!("{:x}-{n}", self.seed)
    }

    /// A number in `0..bound` for write `n`, distinct per `salt`.
    fn pick(&self, n: u64, salt: u64, bound: u32) -> u32 {
        (mix64(mix64(self.seed ^ salt) ^ n) % u64::from(bound)) as u32
    }

    pub(crate) fn next(&mut self, n: u64) -> Write {
        let pod = self.pick(n, 0x5eed, self.pods);
        match kind_of(self.seed, n) {
            ChurnKind::PodLabel => Write::PodLabel {
                pod,
                version: self.version(n),
            },
            ChurnKind::PodStatusOnly => Write::PodStatusOnly {
                pod,
                ready: self.pick(n, 0x4ead, 2) == 0,
            },
            ChurnKind::PodDelete if !self.created.is_empty() => {
                let (name, pod, created) = self.created.pop_front().expect("not empty");
                Write::PodDelete { pod, name, created }
            }
            // A delete with nothing to delete creates instead.
            ChurnKind::PodCreate | ChurnKind::PodDelete => {
                let name = format!("churn-{}", self.version(n));
                let (done, created) = watch::channel(None);
                self.created.push_back((name.clone(), pod, created));
                Write::PodCreate { pod, name, done }
            }
            ChurnKind::PolicyEdit => Write::PolicyEdit {
                policy: self.pick(n, 0xbeef, self.policies),
                port: 1_024 + self.pick(n, 0x9047, 60_000) as u16,
                version: self.version(n),
            },
        }
    }

    /// Pods created and never deleted, for the cleanup after the run.
    fn leftovers(&mut self) -> Vec<(String, u32)> {
        self.created
            .drain(..)
            .filter(|(_, _, created)| *created.borrow() == Some(true))
            .map(|(name, pod, _)| (name, pod))
            .collect()
    }
}

/// What the writes share.
struct Writer {
    client: kube::Client,
    scenario: Scenario,
}

impl Writer {
    async fn write(&self, write: Write, n: u64) -> kube::Result<ChurnKind> {
        let s = &self.scenario;
        let kind = write.kind();
        let stamp = unix_nanos().to_string();
        let merge = PatchParams::default();
        let pods =
            |pod: u32| -> Api<Pod> { Api::namespaced(self.client.clone(), &s.namespace_of(pod)) };
        match write {
            Write::PodLabel { pod, version } => {
                let patch = json!({"metadata": {"labels": {"version": version},
                                                "annotations": {STAMP_ANNOTATION: stamp}}});
                pods(pod)
                    .patch(&objects::pod_name(pod), &merge, &Patch::Merge(&patch))
                    .await?;
            }
            Write::PodStatusOnly { pod, ready } => {
                let name = objects::pod_name(pod);
                let status = objects::pod_status(s, pod, &name, ready, n);
                let patch = json!({"status": status["status"]});
                pods(pod)
                    .patch_status(&name, &merge, &Patch::Merge(&patch))
                    .await?;
            }
            Write::PodCreate { pod, name, done } => {
                let result = self.create(pod, &name, n).await;
                done.send_replace(Some(result.is_ok()));
                result?;
            }
            Write::PodDelete {
                pod,
                name,
                mut created,
            } => {
                // The create was planned earlier but may still be in flight.
                let created = created.wait_for(Option::is_some).await.map(|c| *c);
                if matches!(created, Ok(Some(true))) {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    pods(pod).delete(&name, &params).await?;
                }
            }
            Write::PolicyEdit {
                policy,
                port,
                version,
            } => {
                let api: Api<NetworkPolicy> =
                    Api::namespaced(self.client.clone(), &s.namespace_of(policy));
                let value = objects::network_policy(s, policy, port, Some(unix_nanos()));
                let patch = json!({"metadata": {"labels": {"version": version},
                                                "annotations": value["metadata"]["annotations"]},
                                   "spec": value["spec"]});
                api.patch(&objects::policy_name(policy), &merge, &Patch::Merge(&patch))
                    .await?;
            }
        }
        Ok(kind)
    }

    /// Creates churn pod `name` on pod `pod`'s node, then reports it running with an IP.
    async fn create(&self, pod: u32, name: &str, n: u64) -> kube::Result<()> {
        let s = &self.scenario;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &s.namespace_of(pod));
        let value = objects::pod(s, pod, Some(name), Some(unix_nanos()));
        let object: Pod = serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        api.create(&params, &object).await?;
        let status = objects::pod_status(s, pod, name, true, n);
        let patch = json!({"status": status["status"]});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// Churns `scenario`'s cluster within `limits`, with the writes `seed` plans, then deletes the
/// pods it created and that are left.
pub async fn churn(
    client: &kube::Client,
    scenario: &Scenario,
    limits: ChurnLimits,
    seed: u64,
) -> ChurnReport {
    let writer = Arc::new(Writer {
        client: client.clone(),
        scenario: *scenario,
    });
    let plan = Arc::new(Mutex::new(Plan::new(seed, scenario)));
    let pacer = Arc::new(Pacer::new(limits.rate));
    let start = tokio::time::Instant::now();
    let deadline = start + limits.duration;
    let results: Vec<_> = futures::stream::iter(0..limits.max_writes)
        .take_while(|_| futures::future::ready(tokio::time::Instant::now() < deadline))
        .map(|n| {
            // Planned here, in write order, whatever order the writes finish in.
            let write = plan
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .next(n);
            let (writer, pacer) = (writer.clone(), pacer.clone());
            async move {
                let slot = pacer.reserve(tokio::time::Instant::now());
                if slot >= deadline {
                    return None;
                }
                tokio::time::sleep_until(slot).await;
                Some(writer.write(write, n).await)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut report = ChurnReport {
        seed,
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
    let leftovers = plan
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .leftovers();
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
    use crate::scenario::ScenarioName;

    /// The plan of `writes` writes, as text (kind, target and values).
    fn planned(seed: u64, writes: u64) -> Vec<String> {
        let mut plan = Plan::new(seed, &Scenario::named(ScenarioName::Small));
        (0..writes)
            .map(|n| match plan.next(n) {
                Write::PodLabel { pod, version } => format!("label {pod} {version}"),
                Write::PodStatusOnly { pod, ready } => format!("status {pod} {ready}"),
                Write::PodCreate { pod, name, .. } => format!("create {pod} {name}"),
                Write::PodDelete { pod, name, .. } => format!("delete {pod} {name}"),
                Write::PolicyEdit {
                    policy,
                    port,
                    version,
                } => format!("policy {policy} {port} {version}"),
            })
            .collect()
    }

    #[test]
    fn the_mix_adds_up_to_100_percent() {
        assert_eq!(MIX.iter().map(|(_, s)| s).sum::<u64>(), 100);
    }

    #[test]
    fn kinds_follow_the_mix() {
        let n = 100_000u64;
        for (kind, share) in MIX {
            let seen = (0..n).filter(|i| kind_of(7, *i) == kind).count() as f64;
            let expected = n as f64 * share as f64 / 100.0;
            assert!(
                (seen - expected).abs() < expected * 0.05,
                "{kind:?}: {seen} vs {expected}"
            );
        }
    }

    #[test]
    fn a_seed_plans_the_same_writes_every_time() {
        assert_eq!(planned(42, 2_000), planned(42, 2_000));
    }

    #[test]
    fn another_seed_writes_values_never_written_before() {
        let (a, b) = (planned(1, 2_000), planned(2, 2_000));
        let values = |plan: &[String]| -> std::collections::HashSet<String> {
            plan.iter()
                .filter(|w| !w.starts_with("status") && !w.starts_with("delete"))
                .map(|w| w.rsplit(' ').next().unwrap_or_default().to_owned())
                .collect()
        };
        let (va, vb) = (values(&a), values(&b));
        assert!(va.len() > 1_000, "{}", va.len());
        assert!(va.is_disjoint(&vb), "two seeds wrote the same value");
        // And the targets differ too: the two runs are not the same writes relabelled.
        let same = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.split(' ').take(2).eq(y.split(' ').take(2)));
        assert!(same.count() < 200);
    }

    #[test]
    fn every_delete_removes_a_pod_the_run_created_earlier() {
        let plan = planned(9, 5_000);
        let mut live = std::collections::HashSet::new();
        let (mut creates, mut deletes) = (0, 0);
        for write in &plan {
            let mut words = write.split(' ');
            match (words.next(), words.nth(1)) {
                (Some("create"), Some(name)) => {
                    creates += 1;
                    assert!(live.insert(name.to_owned()), "{name} created twice");
                }
                (Some("delete"), Some(name)) => {
                    deletes += 1;
                    assert!(live.remove(name), "{name} deleted before it was created");
                }
                _ => {}
            }
        }
        assert!(
            creates > 500 && deletes > 500,
            "{creates} creates, {deletes} deletes"
        );
    }
}
