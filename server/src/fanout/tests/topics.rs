//! Tests of the wake-up topics: which senders a batch wakes, how far a woken sender may skip,
//! and that scoped topics live only while subscribed.

use futures::FutureExt;

use crate::store::Revision;

use super::super::FanoutConfig;
use super::super::topics::Interest;
use super::{Fixture, pod};

fn interest(fixture: &Fixture, node: &str, node_scoped: bool) -> Interest {
    let agent = fixture.agent(node, &[("v1/pods", node_scoped)]);
    fixture.hub.interest(&agent.subscriptions)
}

/// Whether a wake-up is ready now (and consumes it).
fn woken(interest: &mut Interest) -> bool {
    interest.changed().now_or_never().is_some()
}

#[test]
fn a_batch_wakes_only_the_topics_it_touches() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    let mut n1 = interest(&fixture, "n1", true);
    let mut n2 = interest(&fixture, "n2", true);
    let mut all = interest(&fixture, "n1", false);
    assert!(!woken(&mut n1) && !woken(&mut n2) && !woken(&mut all));

    fixture.pods(&[pod("a", Some("n2"), 1)]);
    assert!(!woken(&mut n1), "a change on n2 woke n1's sender");
    assert!(woken(&mut n2));
    assert!(
        woken(&mut all),
        "an unscoped subscriber missed a pod change"
    );

    fixture.pods(&[pod("b", Some("n1"), 1)]);
    assert!(woken(&mut n1));
    assert!(!woken(&mut n2));
    assert!(woken(&mut all));

    // A pod moving from n1 to n2 concerns both nodes.
    fixture.pods(&[pod("b", Some("n2"), 2)]);
    assert!(woken(&mut n1) && woken(&mut n2));
}

#[test]
fn a_woken_sender_skips_the_batches_that_did_not_concern_it() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    let n1 = interest(&fixture, "n1", true);
    let cursor = fixture.hub.head();
    for i in 0..5 {
        fixture.pods(&[pod(&format!("x{i}"), Some("n2"), 1)]);
    }
    let head = fixture.hub.head();
    assert_eq!(head, Revision(5));
    assert_eq!(
        n1.skip(cursor, head),
        head,
        "nothing concerned n1: skip to the head"
    );

    let mine = fixture.pods(&[pod("a", Some("n1"), 1)]).revision;
    fixture.pods(&[pod("y", Some("n2"), 1)]);
    let head = fixture.hub.head();
    assert_eq!(
        n1.skip(cursor, head),
        Revision(mine.get() - 1),
        "skip to just before the one batch that concerns n1"
    );
    // A skip never goes past the head it was given, nor backwards.
    assert_eq!(n1.skip(cursor, Revision(2)), Revision(2));
    assert_eq!(n1.skip(mine, Revision(3)), mine);
    assert_eq!(
        n1.skip(mine, head),
        head,
        "past its batch, n1 is quiet up to the head"
    );

    // Two touches since the cursor: the earlier one is not recorded, so no skip.
    fixture.pods(&[pod("a", Some("n1"), 2)]);
    assert_eq!(n1.skip(cursor, fixture.hub.head()), cursor);
    // From the first touch on, only the second is new.
    assert_eq!(n1.skip(mine, fixture.hub.head()), Revision(7));
}

#[test]
fn a_new_topic_does_not_skip_batches_from_before_it_existed() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    let cursor = fixture.hub.head();
    // No one subscribes to n1 yet, so no topic records this batch.
    fixture.pods(&[pod("a", Some("n1"), 1)]);
    let n1 = interest(&fixture, "n1", true);
    assert_eq!(n1.skip(cursor, fixture.hub.head()), cursor);
    // A sender already past the topic's creation may skip.
    let head = fixture.hub.head();
    fixture.pods(&[pod("b", Some("n2"), 1)]);
    assert_eq!(n1.skip(head, fixture.hub.head()), fixture.hub.head());
}

#[test]
fn scoped_topics_exist_only_while_subscribed() {
    let fixture = Fixture::new(FanoutConfig::default());
    let first = interest(&fixture, "n1", true);
    let second = interest(&fixture, "n1", true);
    let other = interest(&fixture, "n2", true);
    let unscoped = interest(&fixture, "n3", false);
    assert_eq!(fixture.hub.scoped_topics(), 2);
    drop(first);
    assert_eq!(fixture.hub.scoped_topics(), 2, "n1 still has a subscriber");
    drop(second);
    assert_eq!(fixture.hub.scoped_topics(), 1);
    drop((other, unscoped));
    assert_eq!(fixture.hub.scoped_topics(), 0);
}
