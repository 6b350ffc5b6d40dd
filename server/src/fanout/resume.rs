//! The resume decision of docs/PROTOCOL.md section 6, as a pure function.
//!
//! 1. Deltas when the agent's epoch is ours and the log still holds every batch after its
//!    revision (which is not beyond the head).
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
    if resume.epoch.as_ref() == epoch.as_array().as_slice() && log_covers(from) {
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
