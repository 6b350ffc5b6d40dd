//! Tests of `translate`: what the writer is told for each watcher event, in particular for an
//! object the projection refuses. The real API server's side is in `tests/watch.rs`.

#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::config::FieldPath;

fn widget(node: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.com/v1alpha", "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default", "resourceVersion": "5"},
        "spec": {"node": node}
    }))
    .unwrap()
}

fn projection() -> Projection {
    let config = ResourceConfig::new("example.com/v1alpha/widgets".parse().unwrap())
        .with_scope(FieldPath::parse("spec.node").unwrap());
    Projection::new(&config, "Widget").unwrap()
}

fn failures() -> ProjectionFailures {
    ProjectionFailures::new("example.com/v1alpha/widgets", 16)
}

#[test]
fn an_update_that_cannot_be_projected_is_a_delete_of_its_key() {
    let (projection, mut failures) = (projection(), failures());
    let good = translate(
        &projection,
        &mut failures,
        Event::Apply(widget(json!("n1"))),
    );
    assert!(
        matches!(&good, Some(WatchEvent::Apply(object)) if object.scope.as_deref() == Some("n1")),
        "{good:?}"
    );
    let bad = translate(&projection, &mut failures, Event::Apply(widget(json!(5))));
    match bad {
        Some(WatchEvent::Delete(key)) => assert_eq!(key, ObjectKey::new("default", "w1")),
        other => panic!("expected a delete, got {other:?}"),
    }
}

#[test]
fn a_listed_object_that_cannot_be_projected_is_left_out_of_the_list() {
    let (projection, mut failures) = (projection(), failures());
    let listed = translate(
        &projection,
        &mut failures,
        Event::InitApply(widget(json!({"a": 1}))),
    );
    assert!(listed.is_none(), "{listed:?}");
    let fine = translate(
        &projection,
        &mut failures,
        Event::InitApply(widget(json!("n2"))),
    );
    assert!(matches!(fine, Some(WatchEvent::InitApply(_))), "{fine:?}");
}

#[test]
fn a_failing_object_is_remembered_until_it_projects_or_goes() {
    let (projection, mut failures) = (projection(), failures());
    translate(&projection, &mut failures, Event::Apply(widget(json!(5))));
    translate(&projection, &mut failures, Event::Apply(widget(json!(6))));
    assert_eq!(failures.remembered(), 1);
    translate(
        &projection,
        &mut failures,
        Event::Apply(widget(json!("n1"))),
    );
    assert_eq!(failures.remembered(), 0);
    translate(&projection, &mut failures, Event::Apply(widget(json!(7))));
    translate(&projection, &mut failures, Event::Delete(widget(json!(7))));
    assert_eq!(failures.remembered(), 0);
}
