//! Resuming over gRPC: deltas within one epoch, a resync once the log has dropped the agent's
//! revision, and digest resyncs that send only the buckets that differ.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod fanout_support;

use std::collections::BTreeSet;

use cattail_proto::pb::ResumeMode;
use cattail_server::fanout::{FanoutConfig, LogLimits};
use cattail_server::store::Batch;
use fanout_support::*;

const BOTH: &[(&str, bool)] = &[("v1/pods", false), ("v1/namespaces", false)];

fn small_log() -> FanoutConfig {
    FanoutConfig {
        log: LogLimits {
            max_entries: 2,
            ..LogLimits::default()
        },
        ..config()
    }
}

#[tokio::test]
async fn resuming_in_the_same_epoch_gets_only_the_deltas() {
    let mut server = TestServer::start(config()).await;
    server.apply(&[pod("a", "p1", Some("n1"), 1)], &[namespace("a", 1)]);
    let mut first = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    let left_at = first.synced().await;
    let hello = first.resume_hello(false);
    let state = first.state.clone();
    drop(first);

    server.apply(&[pod("a", "p2", Some("n2"), 1)], &[]);
    let head = server.apply(&[pod("a", "p1", Some("n1"), 2)], &[namespace("b", 1)]);
    let mut agent = TestAgent::connect(&server, hello).await.unwrap();
    agent.state = state;
    agent.revision = left_at;
    assert_eq!(agent.synced().await, head);
    assert_eq!(
        agent.welcome.as_ref().unwrap().resume_mode,
        ResumeMode::Deltas as i32
    );
    assert!(!agent.frames.is_empty());
    assert!(
        agent
            .frames
            .iter()
            .all(|f| !f.replace && f.revision > left_at)
    );
    assert_eq!(
        agent.state,
        server.expected(&[(pods(), None), (namespaces(), None)])
    );
    // An agent resuming at the head gets no frame at all, just Synced.
    let hello = agent.resume_hello(false);
    let mut again = TestAgent::connect(&server, hello).await.unwrap();
    assert_eq!(again.synced().await, head);
    assert!(again.frames.is_empty());
}

/// The bug an outside agent author found (issue 13): a resume at this server's epoch and head
/// whose state did not cover a subscription got RESUME_MODE_DELTAS and nothing for it. Now a
/// subscription the state does not cover (new, or with another scope) is resynced whole in
/// the same catch-up, and the others by digest.
#[tokio::test]
async fn a_subscription_the_resume_does_not_cover_gets_its_objects() {
    let mut server = TestServer::start(config()).await;
    server.apply(
        &[pod("a", "p1", Some("n1"), 1), pod("a", "p2", Some("n2"), 1)],
        &[namespace("a", 1), namespace("b", 1)],
    );
    let mut first = TestAgent::connect(&server, hello("n1", &[("v1/pods", true)]))
        .await
        .unwrap();
    let head = first.synced().await;
    for with_digests in [false, true] {
        // The same state, now also subscribing to namespaces.
        let mut resuming = first.resume_hello(with_digests);
        resuming
            .subscriptions
            .push(cattail_proto::pb::Subscription {
                resource: "v1/namespaces".into(),
                node_scoped: false,
            });
        let mut agent = TestAgent::connect(&server, resuming).await.unwrap();
        agent.state = first.state.clone();
        agent.revision = head;
        assert_eq!(agent.synced().await, head);
        assert_ne!(
            agent.welcome.as_ref().unwrap().resume_mode,
            ResumeMode::Deltas as i32,
            "digests: {with_digests}"
        );
        assert_eq!(
            agent.state,
            server.expected(&[(pods(), Some("n1")), (namespaces(), None)]),
            "digests: {with_digests}"
        );
    }
    // Pods switched from node scoped to all pods: the state holds one node's pods only.
    let mut resuming = first.resume_hello(false);
    resuming.subscriptions[0].node_scoped = false;
    let mut agent = TestAgent::connect(&server, resuming).await.unwrap();
    agent.state = first.state.clone();
    agent.revision = head;
    assert_eq!(agent.synced().await, head);
    assert_eq!(agent.state, server.expected(&[(pods(), None)]));
}

#[tokio::test]
async fn resuming_after_the_log_dropped_the_revision_resyncs() {
    let mut server = TestServer::start(small_log()).await;
    server.apply(
        &[pod("a", "p1", Some("n1"), 1), pod("a", "p2", Some("n1"), 1)],
        &[],
    );
    let mut first = TestAgent::connect(&server, hello("n1", BOTH))
        .await
        .unwrap();
    first.synced().await;
    let (plain, with_digests) = (first.resume_hello(false), first.resume_hello(true));
    let state = first.state.clone();
    drop(first);

    for version in 2..6 {
        server.apply(&[pod("a", "p1", Some("n1"), version)], &[]);
    }
    let mut batch = Batch::new();
    batch.delete(&pods(), "a", "p2");
    let head = server.commit(batch).revision.get();
    let expected = server.expected(&[(pods(), None), (namespaces(), None)]);

    for (hello, mode) in [
        (plain, ResumeMode::Snapshot),
        (with_digests, ResumeMode::Digest),
    ] {
        let mut agent = TestAgent::connect(&server, hello).await.unwrap();
        agent.state = state.clone();
        assert_eq!(agent.synced().await, head);
        assert_eq!(agent.welcome.as_ref().unwrap().resume_mode, mode as i32);
        assert!(agent.frames.iter().all(|f| f.replace));
        assert_eq!(agent.state, expected, "{mode:?}");
    }
}

#[tokio::test]
async fn a_digest_resync_sends_only_the_buckets_that_differ() {
    // Two servers (two epochs) with almost the same content, like two replicas.
    let pods_: Vec<_> = (0..40)
        .map(|i| pod("a", &format!("p{i}"), Some("n1"), 1))
        .collect();
    let namespaces_: Vec<_> = (0..5).map(|i| namespace(&format!("ns{i}"), 1)).collect();
    let mut old = TestServer::start(config()).await;
    old.apply(&pods_, &namespaces_);
    let subscriptions = [("v1/pods", true), ("v1/namespaces", false)];
    let mut agent = TestAgent::connect(&old, hello("n1", &subscriptions))
        .await
        .unwrap();
    agent.synced().await;
    let hello = agent.resume_hello(true);
    let state = agent.state.clone();

    let mut new = TestServer::start(config()).await;
    new.apply(&pods_, &namespaces_);
    let mut batch = Batch::new();
    batch.apply(&pods(), pod("a", "p3", Some("n1"), 2));
    batch.delete(&pods(), "a", "p7");
    let head = new.commit(batch).revision.get();

    let mut resumed = TestAgent::connect(&new, hello).await.unwrap();
    resumed.state = state;
    assert_eq!(resumed.synced().await, head);
    assert_eq!(
        resumed.welcome.as_ref().unwrap().resume_mode,
        ResumeMode::Digest as i32
    );
    assert_eq!(
        resumed.state,
        new.expected(&[(pods(), Some("n1")), (namespaces(), None)])
    );
    let differing: BTreeSet<u32> = ["p3", "p7"]
        .iter()
        .map(|name| cattail_proto::digest::bucket_of("a", name, BUCKETS).unwrap())
        .collect();
    let covered: BTreeSet<u32> = resumed
        .frames
        .iter()
        .flat_map(|f| f.replaced_buckets.iter().copied())
        .collect();
    assert_eq!(covered, differing);
    assert!(
        resumed
            .frames
            .iter()
            .all(|f| f.resource == "v1/pods" && f.scope == "n1")
    );
    let upserted: usize = resumed
        .frames
        .iter()
        .map(|f| {
            cattail_proto::frame::decode_payload(f, 1 << 20)
                .unwrap()
                .upserts
                .len()
        })
        .sum();
    // p3 plus whatever else shares a bucket with p3 or p7: far fewer than the 39 pods.
    assert!(upserted < 10, "{upserted} objects sent");
}

#[tokio::test]
async fn a_digest_with_another_fingerprint_gets_that_resource_whole() {
    let mut old = TestServer::start(config()).await;
    old.apply(&[pod("a", "p1", Some("n1"), 1)], &[namespace("a", 1)]);
    let mut agent = TestAgent::connect(&old, hello("n1", BOTH)).await.unwrap();
    agent.synced().await;
    let mut hello = agent.resume_hello(true);
    let resume = hello.resume.as_mut().unwrap();
    resume.digests[1].fingerprint ^= 1; // the namespaces projection changed
    let state = agent.state.clone();

    let mut new = TestServer::start(config()).await;
    let head = new.apply(&[pod("a", "p1", Some("n1"), 1)], &[namespace("a", 1)]);
    let mut resumed = TestAgent::connect(&new, hello).await.unwrap();
    resumed.state = state;
    assert_eq!(resumed.synced().await, head);
    assert_eq!(
        resumed.welcome.as_ref().unwrap().resume_mode,
        ResumeMode::Digest as i32
    );
    // Pods matched: nothing. Namespaces: one whole replace frame.
    assert_eq!(resumed.frames.len(), 1);
    let frame = &resumed.frames[0];
    assert_eq!(frame.resource, "v1/namespaces");
    assert!(frame.replace && frame.replaced_buckets.is_empty());
    assert_eq!(
        resumed.state,
        new.expected(&[(pods(), None), (namespaces(), None)])
    );
}
