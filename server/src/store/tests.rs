//! Tests of the store: dedupe, batch collapse and revisions; relists and scopes in `tests/`.

mod relist;
mod scopes;

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;

pub(super) fn pods() -> Resource {
    Resource::parse("v1/pods").unwrap()
}

pub(super) fn nodes() -> Resource {
    Resource::parse("v1/nodes").unwrap()
}

pub(super) fn store() -> Store {
    Store::with_epoch([pods(), nodes()], Epoch::from_array([7; 16]))
}

/// A pod-like object whose value is `{"n":name,"v":version}`.
pub(super) fn obj(
    namespace: &str,
    name: &str,
    version: u32,
    scope: Option<&str>,
) -> ProjectedObject {
    ProjectedObject {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        value: Bytes::from(format!(r#"{{"n":"{name}","v":{version}}}"#)),
        resource_version: format!("{}", 1000 + version),
        scope: scope.map(str::to_owned),
    }
}

pub(super) fn key(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(namespace, name)
}

pub(super) fn applied(objects: &[ProjectedObject]) -> Batch {
    let mut batch = Batch::new();
    for o in objects {
        batch.apply(&pods(), o.clone());
    }
    batch
}

/// `(kind, namespace/name)` of each change to pods, for compact assertions.
pub(super) fn summary(published: &Published) -> Vec<(&'static str, String)> {
    published
        .changes(&pods())
        .iter()
        .map(|c| {
            let kind = if matches!(c, Change::Delete { .. }) {
                "delete"
            } else {
                "upsert"
            };
            (kind, format!("{}/{}", c.namespace(), c.name()))
        })
        .collect()
}

pub(super) fn commit(store: &mut Store, batch: Batch) -> Option<Published> {
    store.commit(batch).unwrap()
}

#[test]
fn first_write_publishes_revision_one() {
    let mut store = store();
    assert_eq!(store.revision(), Revision::ZERO);
    let published = commit(&mut store, applied(&[obj("a", "p1", 1, Some("n1"))])).unwrap();
    assert_eq!(published.revision, Revision(1));
    assert_eq!(store.revision(), Revision(1));
    assert_eq!(
        published.changes(&pods()),
        [Change::Upsert {
            object: obj("a", "p1", 1, Some("n1")),
            previous_scope: None
        }]
    );
    assert!(published.changes(&nodes()).is_empty());
    assert_eq!(
        published.counters,
        BatchCounters {
            received: 1,
            collapsed: 0,
            deduplicated: 0,
            published: 1
        }
    );
}

#[test]
fn identical_content_is_deduplicated_and_gets_no_revision() {
    let mut store = store();
    commit(&mut store, applied(&[obj("a", "p1", 1, None)])).unwrap();
    // Same value and scope, new resourceVersion: nothing to publish.
    let mut same = obj("a", "p1", 1, None);
    same.resource_version = "99999".into();
    assert!(commit(&mut store, applied(&[same])).is_none());
    assert_eq!(store.revision(), Revision(1));
    // The stored copy is the one that was published.
    let snapshot = store.snapshot();
    assert_eq!(
        snapshot
            .get(&pods(), &key("a", "p1"))
            .unwrap()
            .resource_version,
        "1001"
    );
    // Deleting an unknown key is dropped too.
    let mut batch = Batch::new();
    batch.delete(&pods(), "a", "nope");
    assert!(commit(&mut store, batch).is_none());
    assert_eq!(store.revision(), Revision(1));
    assert_eq!(
        store.counters(),
        BatchCounters {
            received: 3,
            collapsed: 0,
            deduplicated: 2,
            published: 1
        }
    );
    // A real change gets the next revision.
    let published = commit(&mut store, applied(&[obj("a", "p1", 2, None)])).unwrap();
    assert_eq!(published.revision, Revision(2));
}

#[test]
fn a_scope_change_alone_is_a_change() {
    let mut store = store();
    commit(&mut store, applied(&[obj("a", "p1", 1, None)])).unwrap();
    let published = commit(&mut store, applied(&[obj("a", "p1", 1, Some("n1"))])).unwrap();
    assert_eq!(summary(&published), [("upsert", "a/p1".to_owned())]);
}

#[test]
fn batch_collapses_writes_to_the_same_key() {
    let mut store = store();
    let mut batch = applied(&[obj("a", "p1", 1, None), obj("a", "p2", 1, None)]);
    batch.apply(&pods(), obj("a", "p1", 2, None));
    batch.apply(&pods(), obj("a", "p1", 3, None));
    assert_eq!(batch.len(), 2);
    let published = commit(&mut store, batch).unwrap();
    assert_eq!(
        published.changes(&pods()),
        [
            Change::Upsert {
                object: obj("a", "p1", 3, None),
                previous_scope: None
            },
            Change::Upsert {
                object: obj("a", "p2", 1, None),
                previous_scope: None
            },
        ]
    );
    assert_eq!(
        published.counters,
        BatchCounters {
            received: 4,
            collapsed: 2,
            deduplicated: 0,
            published: 2
        }
    );
}

#[test]
fn create_then_delete_in_one_batch_cancels_out() {
    let mut store = store();
    let mut batch = applied(&[obj("a", "p1", 1, Some("n1"))]);
    batch.delete(&pods(), "a", "p1");
    assert!(!batch.is_empty());
    assert!(commit(&mut store, batch).is_none());
    assert_eq!(store.revision(), Revision::ZERO);
    assert_eq!(store.snapshot().len(&pods()), Some(0));
    assert_eq!(store.snapshot().scope_len(&pods(), "n1"), 0);
    assert_eq!(
        store.counters(),
        BatchCounters {
            received: 2,
            collapsed: 1,
            deduplicated: 1,
            published: 0
        }
    );
}

#[test]
fn update_then_delete_of_a_stored_key_is_a_delete() {
    let mut store = store();
    commit(&mut store, applied(&[obj("a", "p1", 1, Some("n1"))])).unwrap();
    let mut batch = applied(&[obj("a", "p1", 2, Some("n1"))]);
    batch.delete(&pods(), "a", "p1");
    let published = commit(&mut store, batch).unwrap();
    assert_eq!(
        published.changes(&pods()),
        [Change::Delete {
            namespace: "a".into(),
            name: "p1".into(),
            scope: Some("n1".into())
        }]
    );
    // And delete then re-create with the stored content is no change at all.
    let mut store = self::store();
    commit(&mut store, applied(&[obj("a", "p1", 1, None)])).unwrap();
    let mut batch = Batch::new();
    batch.delete(&pods(), "a", "p1");
    batch.apply(&pods(), obj("a", "p1", 1, None));
    assert!(commit(&mut store, batch).is_none());
}

#[test]
fn unknown_resources_are_refused_before_anything_changes() {
    let mut store = store();
    let mut batch = applied(&[obj("a", "p1", 1, None)]);
    let services = Resource::parse("v1/services").unwrap();
    batch.apply(&services, obj("a", "s1", 1, None));
    let err = store.commit(batch).unwrap_err();
    assert_eq!(err, Error::UnknownResource(services.clone()));
    assert!(err.to_string().contains("v1/services"));
    assert_eq!(store.revision(), Revision::ZERO);
    assert_eq!(store.snapshot().len(&pods()), Some(0));
    assert_eq!(
        store.begin_relist(&services),
        Err(Error::UnknownResource(services))
    );
}

#[test]
fn changes_are_sorted_by_resource_and_key() {
    let mut store = store();
    let mut batch = applied(&[
        obj("b", "z", 1, None),
        obj("a", "y", 1, None),
        obj("b", "a", 1, None),
    ]);
    batch.apply(&nodes(), obj("", "node-1", 1, None));
    let published = commit(&mut store, batch).unwrap();
    let resources: Vec<&str> = published
        .resources
        .iter()
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(resources, ["v1/nodes", "v1/pods"]);
    let keys: Vec<String> = summary(&published).into_iter().map(|(_, k)| k).collect();
    assert_eq!(keys, ["a/y", "b/a", "b/z"]);
    assert_eq!(published.len(), 4);
}

#[test]
fn merged_batches_behave_like_one() {
    let mut first = applied(&[obj("a", "p1", 1, None)]);
    let mut second = Batch::new();
    second.delete(&pods(), "a", "p1");
    second.apply(&pods(), obj("a", "p2", 1, None));
    second.apply(&pods(), obj("a", "p2", 2, None));
    first.merge(second);
    assert_eq!(
        first.counters(),
        BatchCounters {
            received: 4,
            collapsed: 2,
            deduplicated: 0,
            published: 0
        }
    );
    let mut store = store();
    let published = commit(&mut store, first).unwrap();
    assert_eq!(summary(&published), [("upsert", "a/p2".to_owned())]);
}

#[test]
fn publish_time_is_recorded() {
    let mut store = store();
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let published = store
        .commit_at(applied(&[obj("a", "p", 1, None)]), time)
        .unwrap()
        .unwrap();
    assert_eq!(published.time, time);
    let before = SystemTime::now();
    let published = commit(&mut store, applied(&[obj("a", "p", 2, None)])).unwrap();
    assert!(published.time >= before);
}

#[test]
fn epochs_are_random_and_print_as_hex() {
    let a = random_epoch();
    let b = random_epoch();
    assert_ne!(a, b);
    assert_ne!(Store::new([pods()]).epoch(), Store::new([pods()]).epoch());
    let text = a.to_string();
    assert_eq!(text.len(), 32);
    assert_eq!(text.parse::<Epoch>().unwrap(), a);
    assert_eq!(Epoch::from_array([0xab; 16]).to_string(), "ab".repeat(16));
    for bad in [
        "",
        "xyz",
        &"0".repeat(31),
        &"g".repeat(32),
        &format!("+{}", "0".repeat(31)),
    ] {
        assert!(bad.parse::<Epoch>().is_err(), "accepted {bad:?}");
    }
    assert_eq!(Revision::ZERO.next().next(), Revision(2));
    assert_eq!(Revision(5).to_string(), "5");
}

#[test]
fn published_state_is_shareable_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Snapshot>();
    shareable::<Published>();
    shareable::<Store>();
}
