//! Tests of the scope index, scoped changes and frozen snapshots.

use super::*;

#[test]
fn moving_between_scopes_updates_the_index_and_scoped_views() {
    let mut store = store();
    commit(
        &mut store,
        applied(&[obj("a", "p1", 1, Some("n1")), obj("a", "p2", 1, Some("n1"))]),
    )
    .unwrap();
    let published = commit(&mut store, applied(&[obj("a", "p1", 2, Some("n2"))])).unwrap();
    let [change] = published.changes(&pods()) else {
        panic!("one change expected: {published:?}");
    };
    assert_eq!(
        change,
        &Change::Upsert {
            object: obj("a", "p1", 2, Some("n2")),
            previous_scope: Some("n1".into())
        }
    );
    assert_eq!(
        change.for_scope("n1"),
        Some(ScopedChange::Delete {
            namespace: "a",
            name: "p1"
        })
    );
    assert!(matches!(change.for_scope("n2"), Some(ScopedChange::Upsert(o)) if o.name == "p1"));
    assert_eq!(change.for_scope("n3"), None);

    let snapshot = store.snapshot();
    assert_eq!(snapshot.scope_len(&pods(), "n1"), 1);
    assert_eq!(snapshot.scope_len(&pods(), "n2"), 1);
    let scopes: Vec<(&str, usize)> = snapshot.scopes(&pods()).collect();
    assert_eq!(scopes, [("n1", 1), ("n2", 1)]);

    // Deleting the last object of a scope removes the scope.
    let mut batch = Batch::new();
    batch.delete(&pods(), "a", "p1");
    let published = commit(&mut store, batch).unwrap();
    let change = &published.changes(&pods())[0];
    assert_eq!(
        change.for_scope("n2"),
        Some(ScopedChange::Delete {
            namespace: "a",
            name: "p1"
        })
    );
    assert_eq!(change.for_scope("n1"), None);
    let snapshot = store.snapshot();
    let scopes: Vec<(&str, usize)> = snapshot.scopes(&pods()).collect();
    assert_eq!(scopes, [("n1", 1)]);
    // Leaving every scope (unscheduling) is a delete for the old scope only.
    let published = commit(&mut store, applied(&[obj("a", "p2", 1, None)])).unwrap();
    let change = &published.changes(&pods())[0];
    assert_eq!(
        change.for_scope("n1"),
        Some(ScopedChange::Delete {
            namespace: "a",
            name: "p2"
        })
    );
    assert_eq!(store.snapshot().scopes(&pods()).count(), 0);
}

#[test]
fn scoped_snapshot_reads_only_that_scope() {
    let mut store = store();
    let mut batch = Batch::new();
    for i in 0..2000 {
        let node = format!("node-{}", i % 50);
        let scope = (i % 7 != 0).then_some(node.as_str());
        batch.apply(
            &pods(),
            obj(&format!("ns{}", i % 3), &format!("p{i:04}"), 1, scope),
        );
    }
    commit(&mut store, batch).unwrap();
    let snapshot = store.snapshot();
    assert_eq!(snapshot.len(&pods()), Some(2000));
    let on_n7: Vec<&ProjectedObject> = snapshot.scoped(&pods(), "node-7").unwrap().collect();
    let expected = (0..2000).filter(|i| i % 50 == 7 && i % 7 != 0).count();
    assert_eq!(on_n7.len(), expected);
    assert_eq!(snapshot.scope_len(&pods(), "node-7"), expected);
    assert!(on_n7.iter().all(|o| o.scope.as_deref() == Some("node-7")));
    assert!(
        on_n7.windows(2).all(|w| w[0].key() < w[1].key()),
        "sorted by key"
    );
    assert_eq!(snapshot.scoped(&pods(), "node-x").unwrap().count(), 0);
    assert!(
        snapshot
            .scoped(&Resource::parse("v1/services").unwrap(), "node-7")
            .is_none()
    );
    let unscoped = snapshot
        .objects(&pods())
        .unwrap()
        .filter(|o| o.scope.is_none())
        .count();
    let indexed: usize = snapshot.scopes(&pods()).map(|(_, n)| n).sum();
    assert_eq!(unscoped + indexed, 2000);
}

#[test]
fn snapshots_are_frozen() {
    let mut store = store();
    commit(&mut store, applied(&[obj("a", "p1", 1, Some("n1"))])).unwrap();
    let old = store.snapshot();
    let mut batch = applied(&[obj("a", "p1", 2, Some("n2")), obj("a", "p2", 1, Some("n1"))]);
    batch.apply(&nodes(), obj("", "node-1", 1, None));
    commit(&mut store, batch).unwrap();
    let new = store.snapshot();

    assert_eq!((old.revision(), new.revision()), (Revision(1), Revision(2)));
    assert_eq!(old.epoch(), Epoch::from_array([7; 16]));
    assert_eq!(old.len(&pods()), Some(1));
    assert_eq!(old.len(&nodes()), Some(0));
    assert_eq!(
        old.get(&pods(), &key("a", "p1")),
        Some(&obj("a", "p1", 1, Some("n1")))
    );
    assert_eq!(old.scope_len(&pods(), "n2"), 0);
    assert_eq!(
        new.get(&pods(), &key("a", "p1")),
        Some(&obj("a", "p1", 2, Some("n2")))
    );
    assert_eq!(new.scope_len(&pods(), "n1"), 1);
    let resources: Vec<&str> = new.resources().map(Resource::as_str).collect();
    assert_eq!(resources, ["v1/nodes", "v1/pods"]);
    assert!(!new.is_empty());
    assert_eq!(
        new.value_bytes(),
        3 * obj("a", "p1", 1, None).value.len() + 4
    );
}
