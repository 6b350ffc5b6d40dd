//! [`Session`]: the agent side of the cattail protocol as a pure state machine, with no I/O.
//!
//! A session turns the `ServerMessage`s of one stream after another into a local cache per
//! subscription and kube-runtime shaped events. It owns what must survive reconnects: the
//! objects, their digests, the fingerprints they were produced with, and the complete
//! `(epoch, revision)`, from which it builds each `Hello` and its `Resume`.
//!
//! Promises: [`Session::apply`] applies a message completely or not at all; replace frames are
//! staged until `Synced`, so a broken stream never leaves a half-applied resync; the first sync
//! emits `Init`, `InitApply`s and `InitDone` per subscription, later resyncs emit only real
//! changes; every digest equals one recomputed from the cache.

mod cache;
mod decode;
mod hello;
mod resync;
mod welcome;

use std::sync::Arc;

use bytes::Bytes;
use cattail_proto::pb::{self, ServerMessage};
use cattail_proto::{Digest, Epoch, Revision};
use kube::runtime::watcher::Event;

use self::cache::{CacheChange, ObjectCache, ObjectKey, StoredObject};
use self::decode::{DecodedFrame, decode_frames};
use self::welcome::{Link, accept_welcome};
use crate::projected::{ProjectedObject, SubscriptionEvent};
use crate::subscription::ResolvedSubscription;

mod error;
pub use self::error::{Error, Result};

/// Who the agent is and what it subscribes to.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// A stable id for this agent instance, usually the pod name.
    pub agent_id: String,
    /// The agent's node; required when any subscription is node scoped.
    pub node_name: String,
    /// The agent's software name and version, for the server's logs.
    pub agent_version: String,
    /// The resources to receive, each at most once.
    pub subscriptions: Vec<ResolvedSubscription>,
    /// The largest decoded frame payload accepted, in bytes.
    pub max_payload_bytes: usize,
}

/// A state of one server process the agent holds completely: docs/PROTOCOL.md, section 4.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletePoint {
    /// The epoch of the server process the state came from.
    pub epoch: Epoch,
    /// The complete revision in that epoch.
    pub revision: Revision,
}

/// What applying one `ServerMessage` produced.
#[derive(Debug, Default)]
pub struct Applied {
    /// The events, in the order the application should see them.
    pub events: Vec<SubscriptionEvent>,
    /// The complete revision to acknowledge, when it moved.
    pub ack: Option<Revision>,
    /// The revision of a `Synced` in the message.
    pub synced: Option<Revision>,
}

/// The per-subscription state that survives reconnects.
#[derive(Debug)]
pub(crate) struct SubscriptionState {
    resource: Arc<str>,
    /// The node name when node scoped, else empty: the scope of every frame for it.
    scope: String,
    cache: ObjectCache,
    /// The fingerprint of the projection that produced the cached objects.
    fingerprint: Option<u64>,
    /// True once `Init`/`InitDone` were emitted; afterwards resyncs are diffed.
    initialised: bool,
}

/// The agent's side of the protocol: see the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    subscriptions: Vec<SubscriptionState>,
    /// The state the cache holds completely, once the first `Synced` was applied.
    complete: Option<CompletePoint>,
    /// The complete point the current stream's `Hello` resumed from.
    resumed_from: Option<CompletePoint>,
    /// The last server's `max_hello_bytes`: a `Hello` drops digests to fit in it.
    max_hello_bytes: Option<u32>,
    /// The current stream, from its `Welcome`; `None` before it.
    link: Option<Link>,
}

impl Session {
    /// A session with an empty cache.
    ///
    /// # Errors
    /// When there is no subscription, one resource twice, or a node-scoped subscription and no
    /// node name.
    pub fn new(config: SessionConfig) -> Result<Self> {
        if config.subscriptions.is_empty() {
            return Err(Error::NoSubscriptions);
        }
        let mut subscriptions: Vec<SubscriptionState> = Vec::new();
        for subscription in &config.subscriptions {
            let resource = subscription.resource.to_string();
            if subscriptions.iter().any(|s| *s.resource == resource) {
                return Err(Error::DuplicateSubscription { resource });
            }
            if subscription.node_scoped && config.node_name.is_empty() {
                return Err(Error::NodeNameRequired { resource });
            }
            let scope = if subscription.node_scoped {
                config.node_name.clone()
            } else {
                String::new()
            };
            subscriptions.push(SubscriptionState {
                resource: resource.into(),
                scope,
                cache: ObjectCache::default(),
                fingerprint: None,
                initialised: false,
            });
        }
        Ok(Session {
            config,
            subscriptions,
            complete: None,
            resumed_from: None,
            max_hello_bytes: None,
            link: None,
        })
    }

    /// Starts a new stream: forgets the previous stream's unfinished resync and returns the
    /// `Hello` to send first, resuming from the complete point if there is one.
    pub fn begin_stream(&mut self) -> pb::Hello {
        self.link = None;
        self.resumed_from = self.complete;
        self.hello()
    }

    /// The state the cache holds completely: `None` before the first `Synced`.
    #[must_use]
    pub fn complete(&self) -> Option<CompletePoint> {
        self.complete
    }

    /// True when the current stream has delivered its first `Synced`.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.link.as_ref().is_some_and(|link| link.synced)
    }

    /// The digest kept for a subscribed resource.
    #[must_use]
    pub fn digest(&self, resource: &str) -> Option<&Digest> {
        self.subscription(resource)
            .map(|subscription| subscription.cache.digest())
    }

    /// The cached objects of a subscribed resource, in (namespace, name) order.
    #[must_use]
    pub fn objects(&self, resource: &str) -> Vec<ProjectedObject> {
        self.subscription(resource)
            .map(|subscription| {
                (subscription.cache.iter())
                    .map(|(key, object)| object.to_projected(key))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn subscription(&self, resource: &str) -> Option<&SubscriptionState> {
        (self.subscriptions.iter()).find(|subscription| *subscription.resource == *resource)
    }

    /// Applies one message, in the protocol's order: welcome, frames, synced, heartbeat.
    ///
    /// # Errors
    /// For a message the session cannot follow (docs/PROTOCOL.md): a missing or repeated
    /// `Welcome`, a frame that is undecodable, too large, unsubscribed or out of order. The
    /// session is then unchanged; the caller ends the stream and reconnects.
    pub fn apply(&mut self, message: ServerMessage) -> Result<Applied> {
        let ServerMessage {
            frames,
            welcome,
            synced,
            heartbeat,
        } = message;
        // `fresh`: the link comes from this message's own Welcome.
        let (mut link, fresh) = match (self.link.take(), welcome) {
            (None, Some(welcome)) => (
                accept_welcome(&welcome, &self.subscriptions, self.resumed_from)?,
                true,
            ),
            (None, None) => return Err(Error::MissingWelcome),
            (Some(link), Some(_)) => {
                self.link = Some(link);
                return Err(Error::UnexpectedWelcome);
            }
            (Some(link), None) => (link, false),
        };
        let decoded = match decode_frames(
            frames,
            &link,
            &self.subscriptions,
            self.complete,
            self.config.max_payload_bytes,
        ) {
            Ok(decoded) => decoded,
            Err(error) => {
                // A link accepted from this message's own Welcome is not kept: the message is
                // refused as a whole, Welcome included.
                if !fresh {
                    self.link = Some(link);
                }
                return Err(error);
            }
        };
        // Nothing below can fail: the message is applied completely.
        if let Some(limit) = link.max_hello_bytes {
            self.max_hello_bytes = Some(limit);
        }
        let before = self.complete;
        let mut applied = Applied::default();
        self.apply_frames(&mut link, decoded, &mut applied);
        if let Some(synced) = synced {
            self.finish_resync(&mut link, Revision(synced.revision), &mut applied);
        }
        if let Some(heartbeat) = heartbeat {
            self.apply_heartbeat(&link, Revision(heartbeat.head_revision));
        }
        self.link = Some(link);
        if self.complete != before {
            applied.ack = self.complete.map(|point| point.revision);
        }
        Ok(applied)
    }

    fn apply_frames(&mut self, link: &mut Link, frames: Vec<DecodedFrame>, out: &mut Applied) {
        let mut last_delta = None;
        for frame in frames {
            let DecodedFrame {
                subscription: index,
                revision,
                replace,
                replaced_buckets,
                payload,
            } = frame;
            if replace {
                let coverage = (link.resync.get_or_insert_with(Default::default).pairs)
                    .entry(index)
                    .or_default();
                coverage.cover(&replaced_buckets);
                for upsert in payload.upserts {
                    let (key, object) = stored(upsert);
                    coverage.stage_upsert(key, object);
                }
                for delete in payload.deletes {
                    coverage.stage_delete(ObjectKey::new(delete.namespace, delete.name));
                }
                continue;
            }
            let subscription = &mut self.subscriptions[index];
            let mut changes = Vec::new();
            for upsert in payload.upserts {
                let (key, object) = stored(upsert);
                changes.extend(subscription.cache.upsert(key, object));
            }
            for delete in payload.deletes {
                let key = ObjectKey::new(delete.namespace, delete.name);
                changes.extend(subscription.cache.delete(&key));
            }
            subscription.emit_changes(changes, out);
            last_delta = Some(revision);
        }
        if let (Some(revision), Some(point)) = (last_delta, self.complete.as_mut()) {
            point.revision = revision;
        }
    }

    /// `Synced{revision}`: commits the staged resync, adopts the server's epoch and
    /// fingerprints on the stream's first `Synced`, and initialises new subscriptions.
    fn finish_resync(&mut self, link: &mut Link, revision: Revision, out: &mut Applied) {
        if let Some(resync) = link.resync.take() {
            for (index, coverage) in resync.pairs {
                let subscription = &mut self.subscriptions[index];
                let bucket_count = link.resources[index].digest_buckets;
                let changes = coverage.commit(&mut subscription.cache, bucket_count);
                subscription.emit_changes(changes, out);
            }
        }
        if !link.synced {
            link.synced = true;
            for (subscription, served) in self.subscriptions.iter_mut().zip(&link.resources) {
                subscription.fingerprint = Some(served.fingerprint);
                if let Err(error) = subscription.cache.rehash(served.digest_buckets) {
                    // Unreachable: accept_welcome checked the bucket count.
                    tracing::error!(%error, resource = %subscription.resource, "digest rehash");
                }
            }
        }
        self.complete = Some(CompletePoint {
            epoch: link.epoch,
            revision,
        });
        for subscription in &mut self.subscriptions {
            subscription.initialise(out);
        }
        out.synced = Some(revision);
    }

    /// `Heartbeat{head}`: everything up to `head` has been delivered.
    fn apply_heartbeat(&mut self, link: &Link, head: Revision) {
        if !link.synced || link.resync.is_some() {
            return;
        }
        if let Some(point) = self.complete.as_mut()
            && point.epoch == link.epoch
            && head > point.revision
        {
            point.revision = head;
        }
    }
}

impl SubscriptionState {
    /// Turns cache changes into events, once the subscription has been initialised; before
    /// that, its objects are announced by `InitApply` at the first `Synced`.
    fn emit_changes(&self, changes: Vec<CacheChange>, out: &mut Applied) {
        if !self.initialised {
            return;
        }
        for change in changes {
            let event = match change {
                CacheChange::Applied(object) => Event::Apply(object),
                CacheChange::Deleted(object) => Event::Delete(object),
            };
            out.events.push(self.tag(event));
        }
    }

    /// Emits `Init`, an `InitApply` per object and `InitDone`, the first time only.
    fn initialise(&mut self, out: &mut Applied) {
        if self.initialised {
            return;
        }
        self.initialised = true;
        out.events.push(self.tag(Event::Init));
        for (key, object) in self.cache.iter() {
            out.events
                .push(self.tag(Event::InitApply(object.to_projected(key))));
        }
        out.events.push(self.tag(Event::InitDone));
    }

    fn tag(&self, event: Event<ProjectedObject>) -> SubscriptionEvent {
        SubscriptionEvent {
            resource: self.resource.clone(),
            event,
        }
    }
}

/// An upsert as a cache entry. The value is copied out of the decoded payload on purpose: a
/// slice would pin the whole (possibly multi-megabyte) decompressed payload for as long as
/// any one of its objects stays unchanged in the cache.
fn stored(upsert: pb::Upsert) -> (ObjectKey, StoredObject) {
    (
        ObjectKey::new(upsert.namespace, upsert.name),
        StoredObject {
            value: Bytes::copy_from_slice(&upsert.value),
            resource_version: upsert.resource_version,
        },
    )
}

#[cfg(test)]
pub(crate) mod tests;
