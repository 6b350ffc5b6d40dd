//! [`Hub`]: the shared fan-out state — the log of encoded batches, the head snapshot, the
//! digests and the snapshot cache — and the one writer's entry point, [`Hub::publish`].
//!
//! Only this file touches the state. Readers get a [`HubView`]: a read lock held only to clone
//! `Arc`s and `Bytes`, never across an `.await`. The writer encodes outside the lock and takes
//! the write lock only to append and swap. Senders learn of batches that concern them through
//! their topics (`watch` channels per (resource, scope)), so a burst of publishes wakes each
//! concerned sender once, and it then takes every batch since its cursor.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime};

use cattail_proto::Digest;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Resource;
use crate::store::{Epoch, Published, Revision, Snapshot};

use super::admission::Admission;
use super::batch::EncodedBatch;
use super::blocking::BlockingPool;
use super::digests::Digests;
use super::drain::{self, AgentLease, Drain};
use super::encode;
use super::fleet::{AgentInfo, Fleet, FleetEntry, FleetReport};
use super::log::{Log, LogItem};
use super::resources::{ResourceInfo, ServedResources, Subscription};
use super::snapshot::{ChunkContext, SnapshotCache};
use super::sync::SyncStatus;
use super::topics::{Interest, Topics};
use super::{FanoutConfig, metrics};

/// Counts that tests and the status page read.
#[derive(Debug, Default)]
struct Counters {
    snapshots_encoded: AtomicU64,
    frames_encoded: AtomicU64,
    plain_frames_derived: AtomicU64,
    connected_agents: AtomicUsize,
}

/// A point-in-time view of the hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Snapshots of one (resource, scope) encoded so far (`cattail_snapshots_encoded_total`).
    pub snapshots_encoded: u64,
    /// Batch frames encoded so far, one per (batch, resource, scope).
    pub frames_encoded: u64,
    /// Plain variants derived from compressed frames for agents without zstd.
    pub plain_frames_derived: u64,
    /// Agents with a running sender.
    pub connected_agents: usize,
    /// The newest revision.
    pub head: Revision,
    /// Batches in the log.
    pub log_batches: usize,
    /// Bytes of encoded frames in the log.
    pub log_bytes: u64,
}

/// What the lock guards.
#[derive(Debug)]
struct HubState {
    log: Log<Arc<EncodedBatch>>,
    /// The store's state at the log's head.
    snapshot: Snapshot,
    /// When the head was published.
    head_time: SystemTime,
    digests: Digests,
    /// The newest encoded snapshot, shared by agents that connect while it is fresh.
    cache: Option<Arc<SnapshotCache>>,
}

/// Everything behind a [`Hub`].
#[derive(Debug)]
struct Shared {
    config: FanoutConfig,
    epoch: Epoch,
    resources: ServedResources,
    state: RwLock<HubState>,
    /// The newest published revision; stored (release) after `topics` are updated, so a
    /// sender that loads it (acquire) sees every topic update up to it.
    head: AtomicU64,
    /// Who to wake for a batch.
    topics: Topics,
    sync: SyncStatus,
    /// Where encodes too large for a runtime thread go.
    pool: BlockingPool,
    counters: Counters,
    /// Who may be served what; unset serves every accepted Hello.
    admission: OnceLock<Arc<dyn Admission>>,
    /// The connected agents, for the fleet view.
    fleet: Arc<Fleet>,
    /// Every agent stream's token, for a drain; and where to send agents.
    drain: Arc<Drain>,
}

/// The fan-out's shared state; cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// The hub's state at one moment, read-only: what catch-up and resync plan from.
///
/// It holds the read lock: take it, read, drop it; never hold it across an `.await`.
pub(crate) struct HubView<'a> {
    state: RwLockReadGuard<'a, HubState>,
}

impl HubView<'_> {
    /// The newest revision in the log.
    pub(crate) fn head(&self) -> Revision {
        self.state.log.head()
    }

    /// The batches after `from`, oldest first, or `None` once `from` has fallen off the log.
    pub(crate) fn since(
        &self,
        from: Revision,
    ) -> Option<impl Iterator<Item = &LogItem<Arc<EncodedBatch>>> + '_> {
        self.state.log.since(from)
    }

    /// The store's snapshot at the head.
    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.state.snapshot
    }

    /// When the head was published.
    pub(crate) fn head_time(&self) -> SystemTime {
        self.state.head_time
    }

    /// The unscoped digest at the head of hub resource `index`.
    pub(crate) fn digest(&self, index: usize) -> Option<&Digest> {
        self.state.digests.get(index)
    }
}

impl Hub {
    /// A hub serving `resources`, starting from `initial` (the store's snapshot when the hub is
    /// made; its revision is the log's starting head). Invalid config values are replaced by
    /// their defaults with a warning; call [`FanoutConfig::validate`] first to refuse them.
    pub fn new(config: FanoutConfig, initial: Snapshot, resources: Vec<ResourceInfo>) -> Self {
        if let Err(problem) = config.validate() {
            tracing::warn!(%problem, "invalid fan-out setting replaced by its default");
        }
        let config = config.sanitized();
        for info in &resources {
            if !initial.contains(&info.resource) {
                tracing::warn!(resource = %info.resource, "served resource is not in the store");
            }
        }
        let resources = ServedResources::new(resources, config.digest_buckets);
        let digests = Digests::from_snapshot(&initial, resources.infos(), config.digest_buckets);
        let topics = Topics::new(resources.len(), initial.revision());
        let head = initial.revision();
        metrics::describe_metrics();
        let state = HubState {
            log: Log::new(config.log, head),
            head_time: SystemTime::now(),
            snapshot: initial,
            digests,
            cache: None,
        };
        Self {
            shared: Arc::new(Shared {
                epoch: state.snapshot.epoch(),
                config,
                resources,
                state: RwLock::new(state),
                head: AtomicU64::new(head.get()),
                topics,
                sync: SyncStatus::default(),
                pool: BlockingPool::per_core(),
                counters: Counters::default(),
                admission: OnceLock::new(),
                fleet: Arc::default(),
                drain: Arc::default(),
            }),
        }
    }

    /// This hub, admitting agents through `admission` (see [`Admission`]). Call it once, right
    /// after [`Hub::new`]; a second call is ignored with a warning.
    #[must_use]
    pub fn with_admission(self, admission: Arc<dyn Admission>) -> Self {
        if self.shared.admission.set(admission).is_err() {
            tracing::warn!("the hub's admission is already set; the new one is ignored");
        }
        self
    }

    /// The admission agents go through, if any.
    pub(crate) fn admission(&self) -> Option<&Arc<dyn Admission>> {
        self.shared.admission.get()
    }
    /// Publishes a committed batch; `snapshot` is the store's snapshot right after the commit.
    ///
    /// Encodes the batch once per (resource, scope), appends it to the log, updates the digests
    /// and wakes the senders whose topics it touched. Call it from the single writer, for every
    /// commit that returned a batch, in order. A batch that does not follow the head (a skipped
    /// revision) restarts the log at this revision: agents behind it are resynced, never sent a
    /// gap.
    pub fn publish(&self, published: &Published, snapshot: Snapshot) {
        let shared = &*self.shared;
        let previous = shared.read().snapshot.clone();
        // The writer's thread keeps its zstd context between batches.
        let encoded = encode::with_encoder(shared.config.zstd_level, |encoder| {
            EncodedBatch::encode(published, shared.resources.infos(), encoder)
        });
        let batch = match encoded {
            Ok((batch, stats)) => {
                shared
                    .counters
                    .frames_encoded
                    .fetch_add(stats.frames, Ordering::Relaxed);
                metrics::batch_encoded(&stats);
                Some(batch)
            }
            Err(error) => {
                tracing::error!(%error, revision = %published.revision, "cannot encode a batch");
                None
            }
        };
        let toggles = Digests::toggles(published, &previous, shared.resources.infos());
        let revision = published.revision;
        let mut state = shared.write();
        let follows = revision == state.log.head().next();
        // Which topics to wake, once the lock is released: the batch's, or all on a restart.
        let wake = match batch {
            Some(batch) if follows => {
                let batch = Arc::new(batch);
                if let Err(error) = state.log.push(revision, Arc::clone(&batch), Instant::now()) {
                    tracing::error!(%error, "log refused a batch");
                }
                state.digests.apply(&toggles);
                Some(batch)
            }
            _ => {
                tracing::warn!(
                    %revision, head = %state.log.head(),
                    "batch does not follow the head or was not encoded; restarting the log"
                );
                state.log = Log::new(shared.config.log, revision);
                state.digests = Digests::from_snapshot(
                    &snapshot,
                    shared.resources.infos(),
                    shared.config.digest_buckets,
                );
                None
            }
        };
        state.snapshot = snapshot;
        state.head_time = published.time;
        // A stale encoded snapshot would only pin old memory: agents still using it hold it.
        if state
            .cache
            .as_ref()
            .is_some_and(|cache| cache.age() > shared.config.snapshot_reuse)
        {
            state.cache = None;
        }
        metrics::log_state(revision, state.log.len(), state.log.bytes());
        drop(state);
        match wake {
            Some(batch) => shared.topics.publish(revision, &batch),
            None => shared.topics.publish_all(revision),
        }
        shared.head.store(revision.get(), Ordering::Release);
    }

    /// Says whether every resource has completed its first list. Until it is true, new agents
    /// wait before their Welcome (up to `sync_wait_timeout`); connected agents are kept.
    pub fn set_in_sync(&self, in_sync: bool) {
        self.shared.sync.set(in_sync);
    }

    /// Whether the hub serves new agents.
    pub fn in_sync(&self) -> bool {
        self.shared.sync.get()
    }

    /// A receiver that sees every change of [`Hub::in_sync`].
    pub fn watch_in_sync(&self) -> watch::Receiver<bool> {
        self.shared.sync.subscribe()
    }

    /// The in-sync flag itself, for the probes: the same flag the hub serves by.
    pub fn sync_status(&self) -> SyncStatus {
        self.shared.sync.clone()
    }

    /// The newest published revision.
    pub fn head(&self) -> Revision {
        Revision(self.shared.head.load(Ordering::Acquire))
    }

    /// This server process's epoch.
    pub fn epoch(&self) -> Epoch {
        self.shared.epoch
    }

    /// The settings in force (after invalid values were replaced).
    pub fn config(&self) -> &FanoutConfig {
        &self.shared.config
    }

    /// The unscoped digest of `resource` at the head, if it is served.
    pub fn digest(&self, resource: &Resource) -> Option<Digest> {
        let index = self.shared.resources.index_of(resource.as_str())?;
        self.shared.read().digests.get(index).cloned()
    }

    /// The counters.
    pub fn stats(&self) -> HubStats {
        let counters = &self.shared.counters;
        let state = self.shared.read();
        HubStats {
            snapshots_encoded: counters.snapshots_encoded.load(Ordering::Relaxed),
            frames_encoded: counters.frames_encoded.load(Ordering::Relaxed),
            plain_frames_derived: counters.plain_frames_derived.load(Ordering::Relaxed),
            connected_agents: counters.connected_agents.load(Ordering::Relaxed),
            head: state.log.head(),
            log_batches: state.log.len(),
            log_bytes: state.log.bytes(),
        }
    }

    /// The hub's part of the status page.
    pub fn status(&self) -> serde_json::Value {
        let stats = self.stats();
        let oldest = self.shared.read().log.oldest().map(Revision::get);
        serde_json::json!({
            "server_id": self.shared.config.server_id,
            "epoch": self.epoch().to_string(),
            "head": stats.head.get(),
            "in_sync": self.in_sync(),
            "connected_agents": stats.connected_agents,
            "draining": self.is_draining(),
            "agent_target": self.agent_target(),
            "try_endpoints": self.try_endpoints().split(',').filter(|e| !e.is_empty()).collect::<Vec<_>>(),
            "log": {"batches": stats.log_batches, "bytes": stats.log_bytes, "oldest": oldest},
            "snapshots_encoded": stats.snapshots_encoded,
            "frames_encoded": stats.frames_encoded,
            "resources": self.shared.resources.welcome().iter().map(|r| serde_json::json!({
                "resource": r.resource, "fingerprint": format!("{:016x}", r.fingerprint),
                "scope_field": r.scope_field, "digest_buckets": r.digest_buckets,
            })).collect::<Vec<_>>(),
        })
    }

    /// The served resources, in hub order.
    pub(crate) fn resources(&self) -> &ServedResources {
        &self.shared.resources
    }

    /// The state at this moment, read-only, under the read lock.
    pub(crate) fn view(&self) -> HubView<'_> {
        HubView {
            state: self.shared.read(),
        }
    }

    /// What encoding snapshot frames needs.
    pub(crate) fn chunk_context(&self) -> ChunkContext<'_> {
        ChunkContext {
            resources: &self.shared.resources,
            config: &self.shared.config,
            pool: &self.shared.pool,
            encoded: &self.shared.counters.snapshots_encoded,
        }
    }

    /// The blocking pool, for per-agent encodes.
    pub(crate) fn pool(&self) -> &BlockingPool {
        &self.shared.pool
    }

    /// The counter of plain frames derived for agents without zstd.
    pub(crate) fn plain_frames_derived(&self) -> &AtomicU64 {
        &self.shared.counters.plain_frames_derived
    }

    /// The topics of `subscriptions`, for a sender to wait on.
    pub(crate) fn interest(&self, subscriptions: &[Subscription]) -> Interest {
        self.shared
            .topics
            .interest(subscriptions, || self.shared.read().log.head())
    }

    /// Scoped topics that exist, for tests.
    #[cfg(test)]
    pub(crate) fn scoped_topics(&self) -> usize {
        self.shared.topics.scoped_topics()
    }

    /// Waits until the hub is in sync.
    pub(crate) async fn wait_in_sync(&self) {
        self.shared.sync.wait().await;
    }

    /// An encoded snapshot to resync an agent with: the current one if its revision is at least
    /// `min_revision`, it is fresh (`snapshot_reuse`) and the log still holds every batch after
    /// it; otherwise a new one at the head, which becomes the current one.
    pub(crate) fn snapshot_cache(&self, min_revision: Revision) -> Arc<SnapshotCache> {
        let usable = |state: &HubState| {
            let cache = state.cache.as_ref()?;
            let revision = cache.revision();
            let fresh = revision == state.log.head()
                || (cache.age() <= self.shared.config.snapshot_reuse
                    && state.log.since(revision).is_some());
            (revision >= min_revision && fresh).then(|| Arc::clone(cache))
        };
        if let Some(cache) = usable(&self.shared.read()) {
            return cache;
        }
        let mut state = self.shared.write();
        if let Some(cache) = usable(&state) {
            return cache;
        }
        let cache = Arc::new(SnapshotCache::new(
            state.snapshot.clone(),
            state.log.head(),
            state.head_time,
        ));
        state.cache = Some(Arc::clone(&cache));
        cache
    }

    /// The encoded snapshot of exactly `snapshot` (the head when a digest resync was planned):
    /// the current one if it has that revision, else a new one, kept if it is newer.
    pub(crate) fn snapshot_cache_at(
        &self,
        snapshot: &Snapshot,
        time: SystemTime,
    ) -> Arc<SnapshotCache> {
        let revision = snapshot.revision();
        let mut state = self.shared.write();
        if let Some(cache) = state.cache.as_ref().filter(|c| c.revision() == revision) {
            return Arc::clone(cache);
        }
        let cache = Arc::new(SnapshotCache::new(snapshot.clone(), revision, time));
        if state.cache.as_ref().is_none_or(|c| c.revision() < revision) {
            state.cache = Some(Arc::clone(&cache));
        }
        cache
    }

    /// Lists an agent in the fleet view until the entry drops.
    pub(crate) fn join_fleet(&self, info: AgentInfo) -> FleetEntry {
        self.shared.fleet.join(info)
    }

    /// The fleet at the head, with its `top` slowest agents (see [`FleetReport`]).
    ///
    /// Walks every agent under the read lock, which publishes wait for: call it on request,
    /// not per delivery. An agent's lag in seconds is the age of the first batch after its
    /// revision; once that batch has left the log, the age of the oldest batch held (a lower
    /// bound).
    pub fn fleet_report(&self, top: usize) -> FleetReport {
        let state = self.shared.read();
        let log = &state.log;
        let now = Instant::now();
        let oldest = log
            .oldest()
            .and_then(|r| log.get(r))
            .map(|item| item.appended);
        self.shared.fleet.report(log.head(), top, |revision| {
            log.get(revision.next())
                .map(|item| item.appended)
                .or(oldest)
                .map_or(std::time::Duration::ZERO, |t| {
                    now.saturating_duration_since(t)
                })
        })
    }

    /// Sets `cattail_agents_at_head` and `cattail_agent_oldest_lag_seconds` from the fleet.
    pub fn refresh_fleet_metrics(&self) {
        let report = self.fleet_report(0);
        metrics::fleet(report.lag.at_head, report.oldest_lag_seconds);
    }

    /// Lists an agent stream for a drain until the lease drops. Its token is a child of
    /// `shutdown`, and comes cancelled once the hub is draining.
    pub(crate) fn lease(&self, shutdown: &CancellationToken) -> AgentLease {
        self.shared.drain.lease(shutdown)
    }

    /// Drains the replica: from now on new agent streams are refused and [`Hub::is_draining`]
    /// is true; the streams already open are ended a few at a time, evenly over `period`
    /// (`drain::ShedSchedule`), each told where to go ([`Hub::try_endpoints`]). Returns once
    /// every stream has ended or the period is over; the caller then shuts down.
    pub async fn drain(&self, period: std::time::Duration) {
        drain::run(&self.shared.drain, period).await;
    }

    /// Whether a drain has started: the replica is not ready and refuses new agents.
    pub fn is_draining(&self) -> bool {
        self.shared.drain.is_draining()
    }

    /// A token cancelled once a drain starts: gRPC health turns `NOT_SERVING` then.
    pub fn drain_started(&self) -> CancellationToken {
        self.shared.drain.started()
    }

    /// Sets the other ready replicas (`host:port`) that refused and drained agents are sent to,
    /// and how many other replicas are ready (for the connection target; the list may be cut).
    pub fn set_try_endpoints(&self, endpoints: &[String], ready_others: usize) {
        self.shared.drain.set_try_endpoints(endpoints, ready_others);
    }

    /// The connection target now (see `target`): fixed, or from the nodes in the store, the
    /// agents per node and the ready replicas; `None` when there is none.
    pub fn agent_target(&self) -> Option<usize> {
        let config = &self.shared.config;
        let expected = || {
            let nodes = Resource::parse("v1/nodes").ok()?;
            let count = self.shared.read().snapshot.len(&nodes)?;
            Some(count.saturating_mul(config.agents_per_node))
        };
        let replicas = self.shared.drain.ready_others().map(|others| others + 1);
        let computed = config.max_agents == 0 && config.agents_per_node > 0;
        super::target::agent_target(
            config.max_agents,
            if computed { expected() } else { None },
            replicas,
            config.target_slack_percent,
        )
    }

    /// The target, when the replica is at or over it and another replica is ready to take
    /// the agent; `None` means accept (under the target, no target, or nowhere else to go).
    pub(crate) fn over_target(&self) -> Option<usize> {
        let target = self.agent_target()?;
        let admitted = self.shared.fleet.len();
        let elsewhere = self.shared.drain.ready_others().unwrap_or(0) > 0;
        (admitted >= target && elsewhere).then_some(target)
    }

    /// The other ready replicas, `host:port` joined by commas; empty when none is known.
    pub fn try_endpoints(&self) -> Arc<str> {
        self.shared.drain.try_endpoints(0)
    }

    /// Counts a connected agent until the guard drops.
    pub(crate) fn agent_connected(&self) -> ConnectedGuard {
        let now = self
            .shared
            .counters
            .connected_agents
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        metrics::connected_agents(now);
        ConnectedGuard { hub: self.clone() }
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the state half-written in a way readers
        // care about (each field is swapped whole), so a poisoned lock is still used.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HubState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Keeps one agent counted in `cattail_connected_agents`.
#[derive(Debug)]
pub(crate) struct ConnectedGuard {
    hub: Hub,
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        let counter = &self.hub.shared.counters.connected_agents;
        let now = counter.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::connected_agents(now);
    }
}
