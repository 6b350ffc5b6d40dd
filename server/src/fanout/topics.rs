//! [`Topics`]: which senders a published batch must wake.
//!
//! A topic is one (resource, scope) pair: the whole resource for unscoped subscribers, or one
//! node's share of a node-scoped resource. Each holds the revisions of the two newest batches
//! that touched it, in a `watch` channel, so a sender waits only for the topics it subscribes
//! to. In a cluster of N nodes, a pod change on one node wakes that node's agent and the
//! unscoped subscribers of pods, not all N senders. Scoped topics exist only while someone subscribes.
//!
//! Each topic keeps its two newest touches. That lets a woken sender jump its cursor over the
//! batches that did not concern it ([`Interest::skip`]) instead of reading them, and a quiet
//! sender never falls off the log: it moves to the head before it waits.
//!
//! Ordering, which `skip` relies on: the writer appends a batch to the log, then updates its
//! topics, then the head. A sender that reads the head first sees every topic update of every
//! batch up to that head.

use std::sync::Arc;

use dashmap::DashMap;
use futures::StreamExt;
use futures::stream::SelectAll;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::store::Revision;

use super::batch::EncodedBatch;
use super::resources::Subscription;

/// The two newest batches that touched a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Touches {
    /// The touch before `last`. A new topic's history is not known before its creation, so
    /// it starts as the log's head then: a sender behind that cannot skip.
    previous: Revision,
    /// The newest touch.
    last: Revision,
}

impl Touches {
    fn new(known_since: Revision) -> Self {
        Self {
            previous: known_since,
            last: known_since,
        }
    }

    fn touch(&mut self, revision: Revision) {
        self.previous = self.last;
        self.last = revision;
    }
}

/// The topics of one resource.
#[derive(Debug)]
struct ResourceTopics {
    /// Touched by every batch that changes the resource.
    whole: watch::Sender<Touches>,
    /// Touched by batches with a frame for that scope; present while subscribed.
    scopes: DashMap<String, watch::Sender<Touches>>,
}

/// Every topic, in hub resource order; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    resources: Arc<[ResourceTopics]>,
}

impl Topics {
    /// Topics for `resources` resources whose log starts at `head`.
    pub(crate) fn new(resources: usize, head: Revision) -> Self {
        let resources = (0..resources)
            .map(|_| ResourceTopics {
                whole: watch::Sender::new(Touches::new(head)),
                scopes: DashMap::new(),
            })
            .collect();
        Self { resources }
    }

    /// Marks every topic that `batch` (at `revision`) has a frame for.
    pub(crate) fn publish(&self, revision: Revision, batch: &EncodedBatch) {
        for (index, scopes) in batch.touched() {
            let Some(topics) = self.resources.get(index) else {
                continue;
            };
            topics.whole.send_modify(|t| t.touch(revision));
            for scope in scopes {
                if let Some(topic) = topics.scopes.get(scope) {
                    topic.send_modify(|t| t.touch(revision));
                }
            }
        }
    }

    /// Marks every topic: every sender must look at the log (it restarted at `revision`).
    pub(crate) fn publish_all(&self, revision: Revision) {
        for topics in self.resources.iter() {
            topics.whole.send_modify(|t| t.touch(revision));
            for topic in topics.scopes.iter() {
                topic.send_modify(|t| t.touch(revision));
            }
        }
    }

    /// The topics of `subscriptions`, to wait on. `log_head` reads the log's head: a topic made
    /// now may have missed batches up to it.
    pub(crate) fn interest(
        &self,
        subscriptions: &[Subscription],
        log_head: impl Fn() -> Revision,
    ) -> Interest {
        let mut current = Vec::with_capacity(subscriptions.len());
        let mut scoped = Vec::new();
        for sub in subscriptions {
            let Some(topics) = self.resources.get(sub.index) else {
                continue;
            };
            let receiver = if sub.scope.is_empty() {
                topics.whole.subscribe()
            } else {
                scoped.push((sub.index, sub.scope.clone()));
                // Subscribing under the map's entry lock: `Interest::drop` removes a topic
                // only under the same lock, so a topic is never removed under a new subscriber.
                // A batch the writer has not yet appended will see the new topic.
                topics
                    .scopes
                    .entry(sub.scope.clone())
                    .or_insert_with(|| watch::Sender::new(Touches::new(log_head())))
                    .subscribe()
            };
            current.push(receiver);
        }
        let changes = current
            .iter()
            .map(|receiver| WatchStream::from_changes(receiver.clone()))
            .collect();
        Interest {
            topics: self.clone(),
            scoped,
            current,
            changes,
        }
    }

    /// Scoped topics that exist (someone subscribes to them), for tests.
    #[cfg(test)]
    pub(crate) fn scoped_topics(&self) -> usize {
        self.resources.iter().map(|t| t.scopes.len()).sum()
    }
}

/// One sender's topics.
#[derive(Debug)]
pub(crate) struct Interest {
    topics: Topics,
    /// The scoped topics, to remove when their last subscriber leaves.
    scoped: Vec<(usize, String)>,
    /// Readers of each topic's touches.
    current: Vec<watch::Receiver<Touches>>,
    /// Fires when any topic changes.
    changes: SelectAll<WatchStream<Touches>>,
}

impl Interest {
    /// Where a sender at `cursor` can move without reading the log, given `head` (read before
    /// this call): to `head` when none of its topics was touched after `cursor`; to just before
    /// the first new touch when each topic was touched at most once since; else nowhere.
    pub(crate) fn skip(&self, cursor: Revision, head: Revision) -> Revision {
        let mut first_new: Option<Revision> = None;
        for receiver in &self.current {
            let touches = *receiver.borrow();
            if touches.last <= cursor {
                continue;
            }
            if touches.previous > cursor {
                return cursor;
            }
            first_new = Some(first_new.map_or(touches.last, |first| first.min(touches.last)));
        }
        let to = match first_new {
            None => head,
            Some(first) => head.min(Revision(first.get().saturating_sub(1))),
        };
        cursor.max(to)
    }

    /// Waits until a batch touches one of the topics (maybe one already delivered: wake-ups
    /// can be spurious). Cancel-safe. With no topics it never returns; `false` if the topics
    /// are gone, which cannot happen while this holds them.
    pub(crate) async fn changed(&mut self) -> bool {
        if self.changes.is_empty() {
            return std::future::pending().await;
        }
        self.changes.next().await.is_some()
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        self.changes = SelectAll::new();
        self.current.clear();
        for (index, scope) in &self.scoped {
            if let Some(topics) = self.topics.resources.get(*index) {
                topics
                    .scopes
                    .remove_if(scope, |_, topic| topic.receiver_count() == 0);
            }
        }
    }
}
