//! Tests of the log: consecutive appends, `since`, and eviction by count, bytes and age.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::config::Resource;
use crate::store::{Batch, Epoch, ProjectedObject, Store};

fn limits(max_bytes: u64, max_entries: usize, max_age_secs: u64) -> LogLimits {
    LogLimits {
        max_bytes,
        max_entries,
        max_age: Duration::from_secs(max_age_secs),
    }
}

fn entry(size: usize) -> Bytes {
    Bytes::from(vec![0u8; size])
}

/// A log holding revisions `1..=n`, each entry `size` bytes, appended at `t0`.
fn filled(limits: LogLimits, n: u64, size: usize, t0: Instant) -> Log<Bytes> {
    let mut log = Log::new(limits, Revision::ZERO);
    for r in 1..=n {
        log.push(Revision(r), entry(size), t0).unwrap();
    }
    log
}

fn revisions<'a, T: 'a>(items: impl Iterator<Item = &'a LogItem<T>>) -> Vec<u64> {
    items.map(|i| i.revision.get()).collect()
}

#[test]
fn since_returns_the_batches_after_a_revision() {
    let t0 = Instant::now();
    let log = filled(limits(1 << 20, 100, 600), 5, 10, t0);
    assert_eq!(log.head(), Revision(5));
    assert_eq!(log.oldest(), Some(Revision(1)));
    assert_eq!(revisions(log.since(Revision(0)).unwrap()), [1, 2, 3, 4, 5]);
    assert_eq!(revisions(log.since(Revision(3)).unwrap()), [4, 5]);
    assert_eq!(log.since(Revision(3)).unwrap().len(), 2);
    assert_eq!(
        log.since(Revision(5)).unwrap().count(),
        0,
        "at the head: nothing to send"
    );
    assert!(
        log.since(Revision(6)).is_none(),
        "ahead of the head: resync"
    );
    assert_eq!(log.get(Revision(4)).unwrap().revision, Revision(4));
    assert!(log.get(Revision(6)).is_none());
    assert_eq!(log.bytes(), 50);
}

#[test]
fn appends_must_be_consecutive() {
    let mut log: Log<Bytes> = Log::new(limits(100, 10, 60), Revision(7));
    let now = Instant::now();
    assert_eq!(
        log.push(Revision(9), entry(1), now),
        Err(LogGap {
            expected: Revision(8),
            got: Revision(9)
        })
    );
    assert_eq!(
        log.push(Revision(7), entry(1), now),
        Err(LogGap {
            expected: Revision(8),
            got: Revision(7)
        })
    );
    assert!(log.is_empty());
    // A log that starts at a later head answers `since(head)` but nothing older.
    assert_eq!(log.since(Revision(7)).unwrap().count(), 0);
    assert!(log.since(Revision(6)).is_none());
    log.push(Revision(8), entry(1), now).unwrap();
    assert_eq!(revisions(log.since(Revision(7)).unwrap()), [8]);
}

#[test]
fn eviction_by_count() {
    let t0 = Instant::now();
    let mut log = filled(limits(1 << 20, 3, 600), 3, 10, t0);
    assert_eq!(log.push(Revision(4), entry(10), t0), Ok(1));
    assert_eq!(log.len(), 3);
    assert_eq!(log.oldest(), Some(Revision(2)));
    assert!(log.since(Revision(0)).is_none(), "revision 1 fell off");
    assert_eq!(revisions(log.since(Revision(1)).unwrap()), [2, 3, 4]);
    assert_eq!(log.bytes(), 30);
}

#[test]
fn eviction_by_bytes_keeps_the_newest() {
    let t0 = Instant::now();
    let mut log = filled(limits(100, 1000, 600), 4, 25, t0);
    assert_eq!((log.len(), log.bytes()), (4, 100));
    assert_eq!(log.push(Revision(5), entry(30), t0), Ok(2));
    assert_eq!(revisions(log.since(Revision(2)).unwrap()), [3, 4, 5]);
    assert_eq!(log.bytes(), 80);
    // A batch bigger than the whole budget evicts everything else but stays itself.
    assert_eq!(log.push(Revision(6), entry(500), t0), Ok(3));
    assert_eq!(revisions(log.since(Revision(5)).unwrap()), [6]);
    assert!(log.since(Revision(4)).is_none());
    assert_eq!(log.bytes(), 500);
}

#[test]
fn eviction_by_age() {
    let t0 = Instant::now();
    let mut log = filled(limits(1 << 20, 1000, 60), 3, 1, t0);
    log.push(Revision(4), entry(1), t0 + Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        log.expire(t0 + Duration::from_secs(60)),
        0,
        "exactly at the limit is kept"
    );
    assert_eq!(log.expire(t0 + Duration::from_secs(61)), 3);
    assert_eq!(revisions(log.since(Revision(3)).unwrap()), [4]);
    // The newest batch outlives the age limit, so a reader one behind never resyncs.
    assert_eq!(log.expire(t0 + Duration::from_secs(3600)), 0);
    assert_eq!(log.len(), 1);
    assert_eq!(log.bytes(), 1);
}

#[test]
fn limits_come_from_the_store_config() {
    let config = crate::config::StoreConfig {
        log_max_bytes: 5,
        log_max_batches: 6,
        log_max_age: Duration::from_secs(7),
        batch_max_changes: 8,
    };
    assert_eq!(LogLimits::from(&config), limits(5, 6, 7));
}

#[test]
fn holds_published_batches_weighed_by_their_changes() {
    let pods = Resource::parse("v1/pods").unwrap();
    let mut store = Store::with_epoch([pods.clone()], Epoch::from_array([1; 16]));
    let mut log: Log<Arc<Published>> = Log::new(LogLimits::default(), store.revision());
    let now = Instant::now();
    for (i, size) in [(0, 100), (1, 10_000)] {
        let mut batch = Batch::new();
        batch.apply(
            &pods,
            ProjectedObject {
                namespace: "ns".into(),
                name: format!("p{i}"),
                value: Bytes::from(vec![b'x'; size]),
                resource_version: "1".into(),
                scope: None,
            },
        );
        let published = store.commit(batch).unwrap().unwrap();
        log.push(published.revision, Arc::new(published), now)
            .unwrap();
    }
    let items: Vec<&LogItem<Arc<Published>>> = log.since(Revision::ZERO).unwrap().collect();
    assert_eq!(items.len(), 2);
    assert!(
        items[0].size > 100 && items[0].size < 1000,
        "{}",
        items[0].size
    );
    assert!(
        items[1].size > 10_000 && items[1].size < 11_000,
        "{}",
        items[1].size
    );
    assert_eq!(log.bytes(), (items[0].size + items[1].size) as u64);
    assert_eq!(items[1].entry.changes(&pods)[0].name(), "p1");
}
