//! Tests of the resume decision (docs/PROTOCOL.md section 6).

use bytes::Bytes;
use cattail_proto::Digest;
use cattail_proto::pb::{ResourceDigest, Resume};

use crate::store::{Epoch, Revision};

use super::super::resources::{ResourceInfo, Subscription};
use super::super::resume::{Decision, decide};
use super::infos;

const BUCKETS: u32 = 16;

fn entries() -> Vec<ResourceInfo> {
    infos()
}

fn subscriptions() -> Vec<Subscription> {
    vec![
        Subscription {
            index: 0,
            scope: "n1".into(),
        },
        Subscription {
            index: 1,
            scope: String::new(),
        },
    ]
}

fn digest(resource: &str, scope: &str, fingerprint: u64, buckets: u32) -> ResourceDigest {
    Digest::new(buckets)
        .unwrap()
        .to_proto(resource, scope, fingerprint)
}

fn resume(epoch: Epoch, revision: u64, digests: Vec<ResourceDigest>) -> Resume {
    Resume {
        epoch: Bytes::copy_from_slice(epoch.as_array()),
        revision,
        digests,
        covered: Vec::new(),
    }
}

fn decide_for(resume: Option<&Resume>, covered: bool) -> Decision {
    let ours = Epoch::from_array([7; 16]);
    decide(
        resume,
        ours,
        |_| covered,
        &subscriptions(),
        &entries(),
        BUCKETS,
    )
}

#[test]
fn no_resume_is_a_snapshot() {
    assert_eq!(decide_for(None, true), Decision::Snapshot);
}

/// Names both subscriptions of [`subscriptions`] as covered.
fn covering(mut resume: Resume) -> Resume {
    for (resource, scope) in [("v1/pods", "n1"), ("v1/namespaces", "")] {
        resume.covered.push(cattail_proto::pb::Coverage {
            resource: resource.into(),
            scope: scope.into(),
        });
    }
    resume
}

#[test]
fn same_epoch_within_the_log_is_deltas() {
    let ours = covering(resume(Epoch::from_array([7; 16]), 5, vec![]));
    assert_eq!(
        decide_for(Some(&ours), true),
        Decision::Deltas { from: Revision(5) }
    );
    // Off the log, or from another process: not deltas.
    assert_eq!(decide_for(Some(&ours), false), Decision::Snapshot);
    let theirs = covering(resume(Epoch::from_array([8; 16]), 5, vec![]));
    assert_eq!(decide_for(Some(&theirs), true), Decision::Snapshot);
}

#[test]
fn deltas_only_when_the_state_covers_every_subscription() {
    let ours = Epoch::from_array([7; 16]);
    // Nothing named: the state covers nothing, so nothing can be resumed by deltas.
    assert_eq!(
        decide_for(Some(&resume(ours, 5, vec![])), true),
        Decision::Snapshot
    );
    // Pods covered (by a digest), namespaces not: a digest resync, namespaces whole.
    let pods = digest("v1/pods", "n1", 11, BUCKETS);
    let decision = decide_for(Some(&resume(ours, 5, vec![pods.clone()])), true);
    assert_eq!(
        decision,
        Decision::Digest {
            digests: vec![Some(Digest::from_proto(&pods).unwrap()), None]
        }
    );
    // Covered with another scope is not covered.
    let mut other_node = resume(ours, 5, vec![]);
    for (resource, scope) in [("v1/pods", "n2"), ("v1/namespaces", "")] {
        other_node.covered.push(cattail_proto::pb::Coverage {
            resource: resource.into(),
            scope: scope.into(),
        });
    }
    assert_eq!(decide_for(Some(&other_node), true), Decision::Snapshot);
    // A digest for one and a `covered` entry for the other: deltas.
    let mut both = resume(ours, 5, vec![pods]);
    both.covered.push(cattail_proto::pb::Coverage {
        resource: "v1/namespaces".into(),
        scope: String::new(),
    });
    assert_eq!(
        decide_for(Some(&both), true),
        Decision::Deltas { from: Revision(5) }
    );
}

#[test]
fn only_digests_with_our_fingerprint_bucket_count_and_scope_are_used() {
    let usable = digest("v1/namespaces", "", 22, BUCKETS);
    let other_epoch = Epoch::from_array([8; 16]);
    let with = |digests| resume(other_epoch, 5, digests);
    let expected_namespaces = Some(Digest::from_proto(&usable).unwrap());

    let decision = decide_for(Some(&with(vec![usable.clone()])), true);
    assert_eq!(
        decision,
        Decision::Digest {
            digests: vec![None, expected_namespaces.clone()]
        }
    );

    let pods = digest("v1/pods", "n1", 11, BUCKETS);
    let decision = decide_for(Some(&with(vec![pods.clone(), usable])), true);
    let Decision::Digest { digests } = decision else {
        panic!("{decision:?}")
    };
    assert!(digests.iter().all(Option::is_some));

    for unusable in [
        digest("v1/pods", "n1", 12, BUCKETS),     // another projection
        digest("v1/pods", "n1", 11, BUCKETS * 2), // another size
        digest("v1/pods", "", 11, BUCKETS),       // another scope
    ] {
        assert_eq!(
            decide_for(Some(&with(vec![unusable])), true),
            Decision::Snapshot
        );
    }
}
