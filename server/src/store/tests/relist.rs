//! Tests of relists: the diff against the stored state, sync status and call order.

use super::*;

#[test]
fn first_relist_publishes_everything_and_marks_synced() {
    let mut store = store();
    assert!(!store.all_synced());
    store.begin_relist(&pods()).unwrap();
    assert!(store.is_relisting(&pods()));
    store
        .relist_apply(&pods(), obj("a", "p1", 1, Some("n1")))
        .unwrap();
    store
        .relist_apply(&pods(), obj("a", "p2", 1, Some("n2")))
        .unwrap();
    let mut batch = Batch::new();
    store.end_relist(&pods(), &mut batch).unwrap();
    assert!(!store.is_relisting(&pods()));
    assert!(!store.is_synced(&pods()), "synced only once committed");
    let published = commit(&mut store, batch).unwrap();
    assert_eq!(published.len(), 2);
    assert!(store.is_synced(&pods()));
    assert!(!store.all_synced());

    // An empty relist of nodes publishes nothing but still marks the resource synced.
    store.begin_relist(&nodes()).unwrap();
    let mut batch = Batch::new();
    store.end_relist(&nodes(), &mut batch).unwrap();
    assert!(!batch.is_empty());
    assert!(commit(&mut store, batch).is_none());
    assert!(store.all_synced());
}

#[test]
fn unchanged_relist_publishes_nothing() {
    let mut store = store();
    let objects = [
        obj("a", "p1", 1, Some("n1")),
        obj("a", "p2", 1, None),
        obj("b", "p3", 4, None),
    ];
    commit(&mut store, applied(&objects)).unwrap();
    store.begin_relist(&pods()).unwrap();
    for o in objects.iter().rev() {
        let mut o = o.clone();
        o.resource_version = "5000".into();
        store.relist_apply(&pods(), o).unwrap();
    }
    let mut batch = Batch::new();
    store.end_relist(&pods(), &mut batch).unwrap();
    let before = store.counters();
    assert!(commit(&mut store, batch).is_none());
    assert_eq!(store.revision(), Revision(1));
    let after = store.counters();
    assert_eq!(after.deduplicated - before.deduplicated, 3);
    assert_eq!(after.published, before.published);
}

#[test]
fn relist_diff_emits_updates_creations_and_deletions_only() {
    let mut store = store();
    commit(
        &mut store,
        applied(&[
            obj("a", "same", 1, Some("n1")),
            obj("a", "changed", 1, Some("n1")),
            obj("a", "gone", 1, Some("n2")),
        ]),
    )
    .unwrap();
    // The old state is served while the relist is in progress.
    store.begin_relist(&pods()).unwrap();
    store
        .relist_apply(&pods(), obj("a", "same", 1, Some("n1")))
        .unwrap();
    store
        .relist_apply(&pods(), obj("a", "changed", 2, Some("n1")))
        .unwrap();
    store
        .relist_apply(&pods(), obj("a", "new", 1, Some("n2")))
        .unwrap();
    assert_eq!(store.snapshot().len(&pods()), Some(3));
    assert!(store.snapshot().get(&pods(), &key("a", "gone")).is_some());

    let mut batch = Batch::new();
    store.end_relist(&pods(), &mut batch).unwrap();
    let published = commit(&mut store, batch).unwrap();
    assert_eq!(
        summary(&published),
        [
            ("upsert", "a/changed".to_owned()),
            ("delete", "a/gone".to_owned()),
            ("upsert", "a/new".to_owned()),
        ]
    );
    assert!(published.changes(&pods()).contains(&Change::Delete {
        namespace: "a".into(),
        name: "gone".into(),
        scope: Some("n2".into())
    }));
    let snapshot = store.snapshot();
    assert_eq!(snapshot.len(&pods()), Some(3));
    assert!(snapshot.get(&pods(), &key("a", "gone")).is_none());
    let on_n2: Vec<&str> = snapshot
        .scoped(&pods(), "n2")
        .unwrap()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(on_n2, ["new"]);
}

#[test]
fn writes_after_a_relist_in_the_same_batch_win() {
    let mut store = store();
    commit(
        &mut store,
        applied(&[obj("a", "kept", 1, None), obj("a", "deleted", 1, None)]),
    )
    .unwrap();
    let mut batch = applied(&[obj("a", "superseded", 1, None)]);
    store.begin_relist(&pods()).unwrap();
    store
        .relist_apply(&pods(), obj("a", "kept", 1, None))
        .unwrap();
    store
        .relist_apply(&pods(), obj("a", "deleted", 1, None))
        .unwrap();
    store.end_relist(&pods(), &mut batch).unwrap();
    batch.apply(&pods(), obj("a", "kept", 2, None));
    batch.delete(&pods(), "a", "deleted");
    let published = commit(&mut store, batch).unwrap();
    assert_eq!(
        summary(&published),
        [
            ("delete", "a/deleted".to_owned()),
            ("upsert", "a/kept".to_owned())
        ]
    );
    assert_eq!(
        store
            .snapshot()
            .get(&pods(), &key("a", "kept"))
            .unwrap()
            .value,
        obj("a", "kept", 2, None).value
    );
    assert!(
        store
            .snapshot()
            .get(&pods(), &key("a", "superseded"))
            .is_none()
    );
}

#[test]
fn relist_calls_out_of_order_are_errors() {
    let mut store = store();
    assert_eq!(
        store.relist_apply(&pods(), obj("a", "p", 1, None)),
        Err(Error::NoRelist(pods()))
    );
    assert_eq!(
        store.end_relist(&pods(), &mut Batch::new()),
        Err(Error::NoRelist(pods()))
    );
    // Beginning again drops what the interrupted relist had listed.
    store.begin_relist(&pods()).unwrap();
    store
        .relist_apply(&pods(), obj("a", "stale", 1, None))
        .unwrap();
    store.begin_relist(&pods()).unwrap();
    store
        .relist_apply(&pods(), obj("a", "fresh", 1, None))
        .unwrap();
    let mut batch = Batch::new();
    store.end_relist(&pods(), &mut batch).unwrap();
    let published = commit(&mut store, batch).unwrap();
    assert_eq!(summary(&published), [("upsert", "a/fresh".to_owned())]);
}
