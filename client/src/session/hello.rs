//! The `Hello` a session opens each stream with, and the `Resume` inside it.
//!
//! A `Resume` exists only once the session holds a complete state. It names that state's epoch
//! and revision and carries one digest per subscription, with the fingerprint of the projection
//! that produced the objects. When the last server announced a `max_hello_bytes`, digests are
//! dropped, largest first, until the `Hello` fits: a resource without a digest is resynced in
//! full, which is better than a refused `Hello`.

use cattail_proto::PROTOCOL_VERSION;
use cattail_proto::pb::{self, Encoding};
use prost::Message;

use super::Session;

impl Session {
    /// The `Hello` for a new stream: identity, subscriptions, accepted encodings, and a
    /// `Resume` whose digests are dropped, largest first, until it fits the last known
    /// `max_hello_bytes`.
    #[must_use]
    pub fn hello(&self) -> pb::Hello {
        let mut hello = pb::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_id: self.config.agent_id.clone(),
            node_name: self.config.node_name.clone(),
            agent_version: self.config.agent_version.clone(),
            subscriptions: self
                .config
                .subscriptions
                .iter()
                .map(|subscription| pb::Subscription {
                    resource: subscription.resource.to_string(),
                    node_scoped: subscription.node_scoped,
                })
                .collect(),
            resume: self.resume(),
            accepted_encodings: vec![Encoding::ProtoZstd as i32, Encoding::Proto as i32],
        };
        let limit = self.max_hello_bytes.filter(|&limit| limit > 0);
        if let (Some(limit), Some(resume)) = (limit, hello.resume.as_mut()) {
            resume.digests.sort_by_key(|digest| digest.buckets.len());
            while hello.encoded_len() > limit as usize {
                let Some(resume) = hello.resume.as_mut() else {
                    break;
                };
                if resume.digests.pop().is_none() {
                    break;
                }
            }
        }
        hello
    }

    /// What the agent holds, for `Hello.resume`: `None` before the first `Synced`.
    #[must_use]
    pub fn resume(&self) -> Option<pb::Resume> {
        let complete = self.complete?;
        let digests = self
            .subscriptions
            .iter()
            .filter_map(|subscription| {
                let fingerprint = subscription.fingerprint?;
                Some(subscription.cache.digest().to_proto(
                    &subscription.resource,
                    &subscription.scope,
                    fingerprint,
                ))
            })
            .collect();
        // Every subscription the state covers has a digest (its fingerprint came with the
        // data): nothing else to name.
        Some(pb::Resume {
            epoch: complete.epoch.to_bytes(),
            revision: complete.revision.get(),
            digests,
            covered: Vec::new(),
        })
    }
}
