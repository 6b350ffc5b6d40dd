//! The resume decision of docs/PROTOCOL.md section 6, as a pure function.
//!
//! 1. Deltas when the agent's epoch is ours, the log still holds every batch after its
//!    revision (which is not beyond the head), and its state covers every subscription: a
//!    digest or a `covered` entry with the subscription's resource and scope. A subscription
//!    the state does not cover (new, or with another scope) has no objects to apply deltas
//!    to, so it is resynced whole, and the rest by digest, in one catch-up.
//! 2. Otherwise a digest resync when at least one subscription has a usable digest: same
//!    projection fingerprint and the same bucket count as ours.
//! 3. Otherwise a full snapshot.

use cattail_proto::Digest;
use cattail_proto::pb::Resume;

use crate::store::{Epoch, Revision};

use super::resources::{ResourceInfo, Subscription};

/// How an agent is brought up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Only the batches after `from`.
    Deltas {
        /// The agent's revision.
        from: Revision,
    },
    /// Compare digests; per subscription (in order) the agent's digest if it is usable.
    Digest {
        /// `None`: the subscription is resynced whole.
        digests: Vec<Option<Digest>>,
    },
    /// Everything.
    Snapshot,
}

/// Decides how to bring an agent with `resume` up to date. `log_covers(r)` says whether the log
/// holds every batch after `r` up to the head; `bucket_count` is the server's digest size.
pub(crate) fn decide(
    resume: Option<&Resume>,
    epoch: Epoch,
    log_covers: impl FnOnce(Revision) -> bool,
    subscriptions: &[Subscription],
    resources: &[ResourceInfo],
    bucket_count: u32,
) -> Decision {
    let Some(resume) = resume else {
        return Decision::Snapshot;
    };
    let from = Revision(resume.revision);
    let all_covered = subscriptions
        .iter()
        .all(|subscription| covers(resume, subscription, resources));
    if all_covered && resume.epoch.as_ref() == epoch.as_array().as_slice() && log_covers(from) {
        return Decision::Deltas { from };
    }
    let digests: Vec<Option<Digest>> = subscriptions
        .iter()
        .map(|subscription| usable_digest(resume, subscription, resources, bucket_count))
        .collect();
    if digests.iter().any(Option::is_some) {
        Decision::Digest { digests }
    } else {
        Decision::Snapshot
    }
}

/// Whether the agent's state holds `subscription`'s objects: it names the subscription's
/// resource and scope in a digest or a `covered` entry.
fn covers(resume: &Resume, subscription: &Subscription, resources: &[ResourceInfo]) -> bool {
    let Some(info) = resources.get(subscription.index) else {
        return false;
    };
    let resource = info.resource.as_str();
    let scope = subscription.scope.as_str();
    resume
        .digests
        .iter()
        .any(|d| d.resource == resource && d.scope == scope)
        || resume
            .covered
            .iter()
            .any(|c| c.resource == resource && c.scope == scope)
}

/// The agent's digest for `subscription`, if it can be compared with ours.
fn usable_digest(
    resume: &Resume,
    subscription: &Subscription,
    resources: &[ResourceInfo],
    bucket_count: u32,
) -> Option<Digest> {
    let info = resources.get(subscription.index)?;
    let theirs = resume
        .digests
        .iter()
        .find(|d| d.resource == info.resource.as_str())?;
    let matches = theirs.fingerprint == info.fingerprint
        && theirs.bucket_count == bucket_count
        && theirs.scope == subscription.scope;
    // `validate_hello` has checked the digest's shape; a bad one is simply not usable here.
    matches.then(|| Digest::from_proto(theirs).ok()).flatten()
}
