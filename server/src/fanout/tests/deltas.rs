//! Tests of the cursor over the log: coalescing, the size limit, scopes, falling off the log,
//! and which encoded snapshot a resync reuses.

use std::sync::Arc;

use bytes::Bytes;

use crate::store::Revision;

use super::super::catchup::{self, Step};
use super::super::{FanoutConfig, LogLimits};
use super::{Fixture, decode, payload, pod};

fn deltas(step: Step) -> (super::OutgoingMessage, Revision, bool) {
    match step {
        Step::Deltas {
            message,
            cursor,
            at_head,
        } => (message, cursor, at_head),
        other => panic!("deltas expected, got {other:?}"),
    }
}

#[test]
fn a_lagging_cursor_gets_every_batch_in_one_message() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    for version in 1..=3 {
        fixture.pods(&[pod("p1", Some("n1"), version)]);
    }
    let agent = fixture.agent("n1", &[("v1/pods", false), ("v1/namespaces", false)]);
    let (message, cursor, at_head) =
        deltas(catchup::next_deltas(&fixture.hub, &agent, Revision(0)));
    assert_eq!((cursor, at_head), (Revision(3), true));
    let decoded = decode(&message);
    let revisions: Vec<u64> = decoded.frames.iter().map(|f| f.revision).collect();
    assert_eq!(revisions, [1, 2, 3]);
    assert!(decoded.synced.is_none() && decoded.heartbeat.is_none());
    assert!(matches!(
        catchup::next_deltas(&fixture.hub, &agent, Revision(3)),
        Step::UpToDate
    ));
    let (message, cursor, _) = deltas(catchup::next_deltas(&fixture.hub, &agent, Revision(2)));
    assert_eq!((cursor, message.frame_count()), (Revision(3), 1));
}

/// A value that zstd cannot shrink much: `len` bytes of a xorshift sequence in hex.
fn noise(seed: u64, len: usize) -> Bytes {
    let mut x = seed | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(len);
    Bytes::from(out)
}

#[test]
fn messages_stop_at_the_limit_without_splitting_a_revision() {
    let max = 64 * 1024;
    let config = FanoutConfig {
        max_message_bytes: max,
        snapshot_chunk_bytes: 16 * 1024,
        ..FanoutConfig::default()
    };
    let mut fixture = Fixture::new(config);
    for i in 0..8u32 {
        let mut object = pod(&format!("p{i}"), Some("n1"), 1);
        object.value = noise(u64::from(i) + 1, 24 * 1024);
        fixture.pods(&[object]);
    }
    let agent = fixture.agent("n1", &[("v1/pods", false)]);
    let mut cursor = Revision(0);
    let mut seen = Vec::new();
    let mut messages = 0;
    while let Step::Deltas {
        message,
        cursor: next,
        ..
    } = catchup::next_deltas(&fixture.hub, &agent, cursor)
    {
        assert!(message.len() <= max as usize, "{} bytes", message.len());
        assert!(message.frame_count() >= 1);
        seen.extend(decode(&message).frames.iter().map(|f| f.revision));
        cursor = next;
        messages += 1;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(cursor, Revision(8));
    assert!(messages >= 2, "{messages} message(s)");
}

#[test]
fn batches_join_up_to_the_target_and_a_bigger_one_goes_alone() {
    let target = 32 * 1024;
    let config = FanoutConfig {
        target_message_bytes: target,
        ..FanoutConfig::default()
    };
    let mut fixture = Fixture::new(config);
    // Two small batches, then one bigger than the target (hex noise compresses to about
    // half), then two small ones.
    for (i, len) in [
        (0u32, 8 * 1024),
        (1, 8 * 1024),
        (2, 96 * 1024),
        (3, 8 * 1024),
        (4, 8 * 1024),
    ] {
        let mut object = pod(&format!("p{i}"), Some("n1"), 1);
        object.value = noise(u64::from(i) + 1, len);
        fixture.pods(&[object]);
    }
    let agent = fixture.agent("n1", &[("v1/pods", false)]);
    let mut cursor = Revision(0);
    let mut per_message = Vec::new();
    while let Step::Deltas {
        message,
        cursor: next,
        ..
    } = catchup::next_deltas(&fixture.hub, &agent, cursor)
    {
        let revisions: Vec<u64> = decode(&message).frames.iter().map(|f| f.revision).collect();
        per_message.push(revisions);
        cursor = next;
    }
    // The big batch is neither joined nor turned into a resync.
    assert_eq!(per_message, vec![vec![1, 2], vec![3], vec![4, 5]]);
}

#[test]
fn a_scoped_cursor_skips_batches_of_other_nodes_for_free() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    fixture.pods(&[pod("p1", Some("n2"), 1)]);
    fixture.pods(&[pod("p2", Some("n1"), 1)]);
    fixture.pods(&[pod("p3", Some("n2"), 1)]);
    let agent = fixture.agent("n1", &[("v1/pods", true)]);
    let (message, cursor, at_head) =
        deltas(catchup::next_deltas(&fixture.hub, &agent, Revision(0)));
    assert_eq!((cursor, at_head), (Revision(3), true));
    let decoded = decode(&message);
    assert_eq!(decoded.frames.len(), 1);
    assert_eq!(decoded.frames[0].scope, "n1");
    assert_eq!(payload(&decoded.frames[0]).upserts[0].name, "p2");
    let (message, cursor, _) = deltas(catchup::next_deltas(&fixture.hub, &agent, Revision(2)));
    assert!(message.is_empty(), "nothing on n1 after revision 2");
    assert_eq!(cursor, Revision(3));
}

#[test]
fn a_cursor_off_the_log_or_behind_an_oversized_batch_needs_a_resync() {
    let config = FanoutConfig {
        log: LogLimits {
            max_entries: 2,
            ..LogLimits::default()
        },
        max_message_bytes: 64 * 1024,
        snapshot_chunk_bytes: 16 * 1024,
        ..FanoutConfig::default()
    };
    let mut fixture = Fixture::new(config);
    for version in 1..=4 {
        fixture.pods(&[pod("p1", Some("n1"), version)]);
    }
    let agent = fixture.agent("n1", &[("v1/pods", false)]);
    assert!(matches!(
        catchup::next_deltas(&fixture.hub, &agent, Revision(1)),
        Step::Resync {
            min_revision: Revision(1),
            reason: "fell_off_log"
        }
    ));
    assert!(matches!(
        catchup::next_deltas(&fixture.hub, &agent, Revision(2)),
        Step::Deltas { .. }
    ));

    // Revision 5 alone is over the message limit: whoever has not seen it resyncs past it.
    let big: Vec<_> = (0..4u32)
        .map(|i| {
            let mut object = pod(&format!("big{i}"), Some("n1"), 1);
            object.value = noise(u64::from(i) + 7, 20 * 1024);
            object
        })
        .collect();
    fixture.pods(&big);
    assert!(matches!(
        catchup::next_deltas(&fixture.hub, &agent, Revision(4)),
        Step::Resync {
            min_revision: Revision(5),
            reason: "oversized_batch"
        }
    ));
    // An agent of another node never sees it at all.
    let other = fixture.agent("n9", &[("v1/pods", true)]);
    assert!(matches!(
        catchup::next_deltas(&fixture.hub, &other, Revision(4)),
        Step::Deltas { .. }
    ));
}

#[test]
fn a_resync_reuses_the_encoded_snapshot_while_the_log_covers_it() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    fixture.pods(&[pod("p1", Some("n1"), 1)]);
    let first = fixture.hub.snapshot_cache(Revision::ZERO);
    assert_eq!(first.revision(), Revision(1));
    assert!(Arc::ptr_eq(
        &first,
        &fixture.hub.snapshot_cache(Revision::ZERO)
    ));
    fixture.pods(&[pod("p1", Some("n1"), 2)]);
    // Fresh and covered by the log: agents get it, then the deltas since.
    assert!(Arc::ptr_eq(
        &first,
        &fixture.hub.snapshot_cache(Revision(1))
    ));
    // An agent already past it needs a newer one, at the head.
    let newer = fixture.hub.snapshot_cache(Revision(2));
    assert_eq!(newer.revision(), Revision(2));
    assert!(Arc::ptr_eq(
        &newer,
        &fixture.hub.snapshot_cache(Revision::ZERO)
    ));
}

#[tokio::test]
async fn small_scopes_encode_in_place_and_large_ones_on_the_blocking_pool_alike() {
    let mut fixture = Fixture::new(FanoutConfig::default());
    // n1 holds more objects than are encoded in place, n2 a few; the whole resource as well.
    let mut objects: Vec<_> = (0..200)
        .map(|i| pod(&format!("big-{i:03}"), Some("n1"), 1))
        .collect();
    objects.extend((0..3).map(|i| pod(&format!("small-{i}"), Some("n2"), 1)));
    fixture.pods(&objects);
    let cache = fixture.hub.snapshot_cache(Revision::ZERO);
    let names_in = |chunks: &[super::Piece]| {
        let mut names = Vec::new();
        for piece in chunks {
            let frame = super::piece_frame(piece, cattail_proto::pb::Encoding::ProtoZstd);
            assert!(frame.replace);
            names.extend(payload(&frame).upserts.into_iter().map(|u| u.name));
        }
        names
    };
    let big = cache
        .chunks(fixture.hub.chunk_context(), 0, "n1")
        .await
        .unwrap();
    let small = cache
        .chunks(fixture.hub.chunk_context(), 0, "n2")
        .await
        .unwrap();
    let whole = cache
        .chunks(fixture.hub.chunk_context(), 0, "")
        .await
        .unwrap();
    let expected = |prefix: &str| -> Vec<String> {
        objects
            .iter()
            .map(|o| o.name.to_string())
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    assert_eq!(names_in(&big), expected("big-"));
    assert_eq!(names_in(&small), expected("small-"));
    assert_eq!(names_in(&whole), expected(""));
    // Each pair is encoded once; asking again shares the same encoding.
    assert!(Arc::ptr_eq(
        &big,
        &cache
            .chunks(fixture.hub.chunk_context(), 0, "n1")
            .await
            .unwrap()
    ));
    assert_eq!(fixture.hub.stats().snapshots_encoded, 3);
}
