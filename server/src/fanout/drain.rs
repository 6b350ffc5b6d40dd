//! [`Drain`]: how a replica lets its agents go when it shuts down, and where it sends them.
//!
//! Every agent stream holds an [`AgentLease`]: its own cancellation token, a child of the root
//! shutdown token, listed in the hub's registry until the stream ends. A drain marks the hub
//! as draining (new streams get a token that is already cancelled, so they are refused before
//! their Hello is served) and then cancels the listed tokens a few at a time, along the
//! [`ShedSchedule`]. Each sender that sees its token cancelled ends its stream with
//! `UNAVAILABLE` and the replicas to try ([`Drain::try_endpoints`]). Cost: one map insert and
//! remove per stream, and O(agents) in total for a drain; nothing per delivery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The shortest time between two sheds: a drain of a few thousand agents over 20 s sheds
/// them in 200 groups, not one timer per agent.
pub const MIN_SHED_INTERVAL: Duration = Duration::from_millis(100);

/// The registry of agent streams, the draining flag and the replicas to send agents to.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    /// Cancelled when a drain starts, for what must stop serving then (gRPC health).
    started: CancellationToken,
    next_id: AtomicU64,
    agents: Mutex<HashMap<u64, CancellationToken>>,
    /// Other ready replicas, `host:port`: what `cattail-try-endpoints` lists.
    try_endpoints: RwLock<Arc<[String]>>,
    /// How many other replicas are ready (the list may be cut short); `None` until known.
    ready_others: RwLock<Option<usize>>,
}

/// One agent stream's place in the registry; dropping it removes the stream.
#[derive(Debug)]
pub(crate) struct AgentLease {
    drain: Arc<Drain>,
    id: u64,
    /// Cancelled when the server sheds this agent or shuts down.
    pub(crate) token: CancellationToken,
}

impl AgentLease {
    /// The replicas this agent is sent to, from its own start in the list.
    pub(crate) fn try_endpoints(&self) -> Arc<str> {
        self.drain.try_endpoints(self.id)
    }
}

impl Drop for AgentLease {
    fn drop(&mut self) {
        self.drain.lock().remove(&self.id);
    }
}

impl Drain {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        // The map is only inserted into and removed from: a panic cannot leave it half-done.
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lists a new agent stream, with a token that `shutdown` cancels too. While draining, the
    /// token comes cancelled: the stream is refused at once.
    pub(crate) fn lease(self: &Arc<Self>, shutdown: &CancellationToken) -> AgentLease {
        let token = shutdown.child_token();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut agents = self.lock();
        // Checked under the lock that `shed` takes, so no stream slips in unshed.
        if self.draining.load(Ordering::Acquire) {
            token.cancel();
        } else {
            agents.insert(id, token.clone());
        }
        drop(agents);
        AgentLease {
            drain: Arc::clone(self),
            id,
            token,
        }
    }

    /// Marks the replica as draining: new streams are refused from now on.
    pub(crate) fn start(&self) {
        let _agents = self.lock();
        self.draining.store(true, Ordering::Release);
        self.started.cancel();
    }

    /// A token cancelled once a drain starts.
    pub(crate) fn started(&self) -> CancellationToken {
        self.started.clone()
    }

    /// Whether a drain has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Agent streams still listed.
    pub(crate) fn agents(&self) -> usize {
        self.lock().len()
    }

    /// Ends up to `count` agent streams (any of them); returns how many it ended.
    pub(crate) fn shed(&self, count: usize) -> usize {
        let shed: Vec<CancellationToken> = {
            let mut agents = self.lock();
            let ids: Vec<u64> = agents.keys().take(count).copied().collect();
            ids.iter().filter_map(|id| agents.remove(id)).collect()
        };
        // Cancelled outside the lock: a cancel wakes the sender, which may drop its lease.
        for token in &shed {
            token.cancel();
        }
        shed.len()
    }

    /// Sets the replicas agents are sent to, and how many other replicas are ready.
    pub(crate) fn set_try_endpoints(&self, endpoints: &[String], ready_others: usize) {
        *self
            .try_endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = endpoints.into();
        *self
            .ready_others
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(ready_others);
    }

    /// How many other replicas are ready, once known.
    pub(crate) fn ready_others(&self) -> Option<usize> {
        *self
            .ready_others
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The replicas agents are sent to, `host:port` joined by commas (empty if none is known),
    /// starting at the one `rotate` picks: agents try the first one first, so each agent gets
    /// the list from another start and a drained replica's agents spread over the others.
    pub(crate) fn try_endpoints(&self, rotate: u64) -> Arc<str> {
        let endpoints = Arc::clone(
            &self
                .try_endpoints
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if endpoints.is_empty() {
            return Arc::from("");
        }
        let start = usize::try_from(rotate % endpoints.len() as u64).unwrap_or(0);
        let (head, tail) = endpoints.split_at(start);
        let rotated: Vec<&str> = tail.iter().chain(head).map(String::as_str).collect();
        rotated.join(",").into()
    }
}

/// When to shed how many agents: `total` agents spread evenly over `period`, in at most one
/// step per [`MIN_SHED_INTERVAL`]. Step `k` of `n` is at `period × k / n` and brings the count
/// shed so far to `ceil(total × (k + 1) / n)`, so the first agents go at once and the last
/// ones one step before the period ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShedSchedule {
    total: usize,
    period: Duration,
    steps: usize,
}

impl ShedSchedule {
    /// The schedule of `total` agents over `period`.
    pub fn new(total: usize, period: Duration) -> Self {
        let by_time = usize::try_from(period.as_millis() / MIN_SHED_INTERVAL.as_millis())
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            total,
            period,
            steps: total.min(by_time),
        }
    }

    /// The steps: (time since the drain started, agents shed in total by then).
    pub fn steps(self) -> impl Iterator<Item = (Duration, usize)> {
        let n = self.steps;
        (0..n).map(move |k| {
            // Exact in u128: `period` is at most hours, `n` at most a few hundred thousand.
            let at = self.period.as_nanos() * k as u128 / n as u128;
            let at = Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX));
            (at, (self.total * (k + 1)).div_ceil(n))
        })
    }
}

/// Sheds every agent of `drain` along the schedule of the agents listed when it starts, and
/// returns once none is left or the last step is done.
pub(crate) async fn run(drain: &Drain, period: Duration) {
    drain.start();
    let total = drain.agents();
    let started = tokio::time::Instant::now();
    tracing::info!(agents = total, ?period, "draining: shedding agents");
    let mut shed = 0;
    for (at, due) in ShedSchedule::new(total, period).steps() {
        tokio::time::sleep_until(started + at).await;
        if drain.agents() == 0 {
            break;
        }
        let ended = drain.shed(due.saturating_sub(shed));
        shed = due;
        tracing::debug!(ended, left = drain.agents(), "shed agents");
    }
    tracing::info!(left = drain.agents(), "drain done");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spreads_agents_evenly_and_ends_before_the_period() {
        let steps: Vec<_> = ShedSchedule::new(4, Duration::from_secs(20))
            .steps()
            .collect();
        assert_eq!(
            steps,
            [
                (Duration::ZERO, 1),
                (Duration::from_secs(5), 2),
                (Duration::from_secs(10), 3),
                (Duration::from_secs(15), 4),
            ]
        );
        // Many agents: one step per 100 ms, the counts rounded up, every agent shed.
        let steps: Vec<_> = ShedSchedule::new(1001, Duration::from_secs(2))
            .steps()
            .collect();
        assert_eq!(steps.len(), 20);
        assert_eq!(steps[0], (Duration::ZERO, 51));
        assert_eq!(steps[19], (Duration::from_millis(1900), 1001));
        assert!(steps.windows(2).all(|w| w[0].1 <= w[1].1));
        // Nobody to shed, or no time: nothing to wait for, or everything at once.
        assert_eq!(
            ShedSchedule::new(0, Duration::from_secs(20))
                .steps()
                .count(),
            0
        );
        assert_eq!(
            ShedSchedule::new(7, Duration::ZERO)
                .steps()
                .collect::<Vec<_>>(),
            [(Duration::ZERO, 7)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_sheds_agents_a_few_at_a_time_and_refuses_new_ones() {
        let drain = Arc::new(Drain::default());
        let root = CancellationToken::new();
        let leases: Vec<_> = (0..6).map(|_| drain.lease(&root)).collect();
        let started = tokio::time::Instant::now();
        let running = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { run(&drain, Duration::from_secs(6)).await }
        });
        // When each agent's token was cancelled, in seconds since the drain started.
        let watchers: Vec<_> = leases
            .iter()
            .map(|lease| {
                let token = lease.token.clone();
                tokio::spawn(async move {
                    token.cancelled().await;
                    started.elapsed().as_secs()
                })
            })
            .collect();
        let mut ended = Vec::new();
        for watcher in watchers {
            ended.push(watcher.await.unwrap());
        }
        ended.sort_unstable();
        assert_eq!(ended, [0, 1, 2, 3, 4, 5]);
        running.await.unwrap();
        assert!(drain.is_draining());
        assert!(
            drain.lease(&root).token.is_cancelled(),
            "new agents are refused"
        );
        assert!(
            !root.is_cancelled(),
            "the drain does not shut down by itself"
        );
        drop(leases);
        assert_eq!(drain.agents(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_ends_early_when_the_agents_leave_on_their_own() {
        let drain = Arc::new(Drain::default());
        let root = CancellationToken::new();
        let first = drain.lease(&root);
        let second = drain.lease(&root);
        let started = tokio::time::Instant::now();
        let running = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { run(&drain, Duration::from_secs(20)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(drain.agents(), 1, "one shed at once");
        drop((first, second));
        running.await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "the next step saw none"
        );
    }

    #[test]
    fn the_try_endpoints_are_joined_by_commas_from_a_start_per_agent() {
        let drain = Drain::default();
        assert_eq!(&*drain.try_endpoints(0), "");
        drain.set_try_endpoints(&["a:1".into(), "b:1".into(), "c:1".into()], 3);
        assert_eq!(&*drain.try_endpoints(0), "a:1,b:1,c:1");
        // Each agent starts somewhere else, so they do not all go to the first replica.
        assert_eq!(&*drain.try_endpoints(4), "b:1,c:1,a:1");
        assert_eq!(&*drain.try_endpoints(2), "c:1,a:1,b:1");
    }
}
