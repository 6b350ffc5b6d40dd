//! The fleet registry: lag buckets, the bound on the slowest list, where an agent is placed,
//! and removal when its entry drops.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{AgentInfo, Fleet, LagBasis, LagBuckets, MAX_SLOWEST};
use crate::store::Revision;

fn info(id: &str) -> AgentInfo {
    AgentInfo {
        node: format!("node-{id}"),
        agent_id: id.to_owned(),
        version: "v1".to_owned(),
        transport: "native",
        resume_mode: "snapshot",
        connected_since: SystemTime::now() - Duration::from_secs(3600),
    }
}

/// Each revision behind is one second behind.
fn one_second_per_revision(head: Revision) -> impl Fn(Revision) -> Duration {
    move |r: Revision| Duration::from_secs(head.get() - r.get())
}

#[test]
fn buckets_split_at_head_one_to_ten_and_more() {
    let mut buckets = LagBuckets::default();
    for lag in [0, 0, 1, 10, 11, 1000] {
        buckets.count(lag);
    }
    assert_eq!(
        buckets,
        LagBuckets {
            at_head: 2,
            behind_1_to_10: 2,
            behind_more: 2
        }
    );
    assert_eq!(buckets.total(), 6);
}

#[test]
fn the_slowest_list_is_bounded_and_slowest_first() {
    let fleet = Arc::new(Fleet::default());
    let head = Revision(2000);
    let entries: Vec<_> = (0..1000u64)
        .map(|i| {
            let entry = fleet.join(info(&format!("a{i}")));
            entry.written(Revision(1000 + i));
            entry.acked(1000 + i);
            entry
        })
        .collect();
    let report = fleet.report(head, 50, one_second_per_revision(head));
    assert_eq!(report.agents, 1000);
    assert_eq!(report.slowest.len(), 50);
    let lags: Vec<u64> = report.slowest.iter().map(|r| r.lag_revisions).collect();
    assert_eq!(lags, (951..=1000).rev().collect::<Vec<_>>());
    assert_eq!(report.slowest[0].agent_id, "a0");
    assert!((report.oldest_lag_seconds - 1000.0).abs() < 1e-9);
    assert_eq!(report.lag.behind_more, 990);
    assert_eq!(report.lag.behind_1_to_10, 10);
    let capped = fleet.report(head, usize::MAX, one_second_per_revision(head));
    assert_eq!(capped.slowest.len(), MAX_SLOWEST);
    assert!(fleet.report(head, 0, |_| Duration::ZERO).slowest.is_empty());
    drop(entries);
}

#[test]
fn an_agent_is_placed_by_its_acks_or_else_by_what_was_written() {
    let fleet = Arc::new(Fleet::default());
    let head = Revision(20);
    let never_acked = fleet.join(info("never"));
    never_acked.written(Revision(15));
    let behind = fleet.join(info("behind"));
    behind.written(Revision(20));
    behind.acked(12);
    // Acked all it was sent; later batches did not concern it (its cursor skipped them).
    let quiet = fleet.join(info("quiet"));
    quiet.written(Revision(8));
    quiet.acked(8);
    quiet.cursor(Revision(20));
    let report = fleet.report(head, 10, one_second_per_revision(head));
    let row = |id: &str| report.slowest.iter().find(|r| r.agent_id == id).unwrap();
    assert_eq!(row("never").lag_revisions, 5);
    assert_eq!(row("never").lag_basis, LagBasis::Written);
    assert_eq!(row("never").acked_revision, None);
    assert_eq!(row("behind").lag_revisions, 8);
    assert_eq!(row("behind").lag_basis, LagBasis::Acked);
    assert_eq!(row("behind").acked_revision, Some(12));
    assert!((row("behind").lag_seconds - 8.0).abs() < 1e-9);
    assert_eq!(row("quiet").lag_revisions, 0);
    assert!(row("quiet").lag_seconds.abs() < 1e-9);
    assert_eq!(report.lag.at_head, 1);
    drop((never_acked, behind, quiet));
}

#[test]
fn an_agent_has_been_behind_no_longer_than_it_has_been_connected() {
    let fleet = Arc::new(Fleet::default());
    let head = Revision(2000);
    let catching_up = fleet.join(AgentInfo {
        connected_since: SystemTime::now() - Duration::from_secs(5),
        ..info("new")
    });
    let report = fleet.report(head, 1, one_second_per_revision(head));
    let lag = report.slowest[0].lag_seconds;
    assert!((5.0..6.0).contains(&lag), "{lag}");
    assert_eq!(report.slowest[0].lag_revisions, 2000);
    drop(catching_up);
}

#[test]
fn bytes_are_counted_and_a_dropped_entry_leaves_the_fleet() {
    let fleet = Arc::new(Fleet::default());
    let entry = fleet.join(info("x"));
    entry.sent(100);
    entry.sent(23);
    let report = fleet.report(Revision(0), 5, |_| Duration::ZERO);
    assert_eq!(report.slowest[0].bytes_sent, 123);
    assert_eq!(report.slowest[0].transport, "native");
    drop(entry);
    assert_eq!(fleet.report(Revision(0), 5, |_| Duration::ZERO).agents, 0);
}
