//! Tests of projection: real-looking objects, canonical bytes, dedupe-friendly stability,
//! scopes, limits and fingerprints.

use serde_json::{Map, Value, json};

use super::*;
use crate::config::{FieldPath, Resource, ResourceConfig, default_for};

fn resource(s: &str) -> Resource {
    Resource::parse(s).unwrap()
}

fn path(s: &str) -> FieldPath {
    FieldPath::parse(s).unwrap()
}

fn pod_projection() -> Projection {
    let config = default_for(&resource("v1/pods")).unwrap();
    Projection::new(&config, "Pod").unwrap()
}

/// A pod as a watch event carries it, with the noise a real API server adds.
fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c-x2x9z",
            "namespace": "shop",
            "uid": "7f1c2a8e-3b1d-4c55-9a61-1d2e3f4a5b6c",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": "2026-01-10T09:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-10T08:59:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c"}],
            "managedFields": [{"manager": "kubelet", "operation": "Update", "time": "2026-01-10T09:00:05Z"}]
        },
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "web",
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/web:1.2.3",
                    "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m"}}
                },
                {"name": "sidecar", "image": "registry.example/proxy:2"}
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}],
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-10T09:00:04Z"}
            ],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-10T09:00:03Z"}}}
            ]
        }
    })
}

fn set(value: &mut Value, pointer: &str, new: Value) {
    *value.pointer_mut(pointer).unwrap() = new;
}

#[test]
fn pod_keeps_identity_and_profile_fields_in_canonical_form() {
    let projected = pod_projection().project(&pod()).unwrap();
    assert_eq!(projected.namespace, "shop");
    assert_eq!(projected.name, "web-7d4b9c-x2x9z");
    assert_eq!(projected.resource_version, "48213");
    assert_eq!(projected.scope.as_deref(), Some("node-1"));
    assert_eq!(
        projected.value_str(),
        concat!(
            r#"{"apiVersion":"v1","kind":"Pod","#,
            r#""metadata":{"labels":{"app":"web","pod-template-hash":"7d4b9c"},"#,
            r#""name":"web-7d4b9c-x2x9z","namespace":"shop","#,
            r#""uid":"7f1c2a8e-3b1d-4c55-9a61-1d2e3f4a5b6c"},"#,
            r#""spec":{"containers":[{"ports":[{"containerPort":8080,"name":"http","protocol":"TCP"}]},{}],"#,
            r#""nodeName":"node-1","serviceAccountName":"web"},"#,
            r#""status":{"phase":"Running","podIPs":[{"ip":"10.1.2.3"},{"ip":"fd00::3"}]}}"#,
        )
    );
    let text = projected.value_str();
    for gone in [
        "resourceVersion",
        "managedFields",
        "conditions",
        "annotations",
        "image",
    ] {
        assert!(!text.contains(gone), "{gone} leaked into {text}");
    }
}

#[test]
fn status_noise_projects_to_identical_bytes() {
    let projection = pod_projection();
    let before = projection.project(&pod()).unwrap();
    let mut flapped = pod();
    set(&mut flapped, "/metadata/resourceVersion", json!("48999"));
    set(&mut flapped, "/status/conditions/0/status", json!("False"));
    set(
        &mut flapped,
        "/status/containerStatuses/0/restartCount",
        json!(3),
    );
    set(
        &mut flapped,
        "/status/containerStatuses/0/ready",
        json!(false),
    );
    set(
        &mut flapped,
        "/metadata/managedFields/0/time",
        json!("2026-01-10T10:00:00Z"),
    );
    set(&mut flapped, "/metadata/annotations", json!({"x": "y"}));
    let after = projection.project(&flapped).unwrap();
    assert_eq!(after.value, before.value);
    assert!(after.same_content(&before));
    assert_eq!(after.resource_version, "48999");

    let mut relabelled = pod();
    set(&mut relabelled, "/metadata/labels/app", json!("api"));
    assert_ne!(projection.project(&relabelled).unwrap().value, before.value);
    let mut new_port = pod();
    set(
        &mut new_port,
        "/spec/containers/0/ports/0/containerPort",
        json!(9090),
    );
    assert_ne!(projection.project(&new_port).unwrap().value, before.value);
}

#[test]
fn list_items_without_type_meta_project_like_watch_events() {
    let projection = pod_projection();
    let mut item = pod();
    let map = item.as_object_mut().unwrap();
    map.remove("apiVersion");
    map.remove("kind");
    assert_eq!(
        projection.project(&item).unwrap().value,
        projection.project(&pod()).unwrap().value
    );
    // A wrong apiVersion in the source does not leak through either.
    let mut odd = pod();
    set(&mut odd, "/apiVersion", json!("v2"));
    assert!(
        projection
            .project(&odd)
            .unwrap()
            .value_str()
            .starts_with(r#"{"apiVersion":"v1","#)
    );
}

#[test]
fn key_order_of_the_source_does_not_matter() {
    // Build the same object with members inserted in opposite orders. With serde_json's
    // `preserve_order` feature on, the maps would iterate differently; the bytes must not.
    let forward: Map<String, Value> = [("a", 1), ("b", 2), ("c", 3)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let backward: Map<String, Value> = [("c", 3), ("b", 2), ("a", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    let make = |labels: Map<String, Value>| json!({"metadata": {"name": "n", "labels": Value::Object(labels)}});
    let projection = Projection::new(
        &ResourceConfig::new(resource("v1/namespaces")).with_field(path("metadata.labels")),
        "Namespace",
    )
    .unwrap();
    let a = projection.project(&make(forward)).unwrap();
    let b = projection.project(&make(backward)).unwrap();
    assert_eq!(a.value, b.value);
    assert_eq!(
        a.value_str(),
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"labels":{"a":1,"b":2,"c":3},"name":"n"}}"#
    );
    assert_eq!(
        a.namespace, "",
        "a cluster-scoped object has an empty namespace"
    );
}

#[test]
fn canonical_writer_sorts_escapes_and_drops_nulls() {
    let value = json!({
        "z": [3, {"y": null, "x": "\"quoted\"\n"}, null],
        "a": {"é": 1.5, "b": true, "B": false},
        "n": null
    });
    assert_eq!(
        canonical::to_string(&value),
        r#"{"a":{"B":false,"b":true,"é":1.5},"z":[3,{"x":"\"quoted\"\n"},null]}"#
    );
}

#[test]
fn arrays_keep_positions_and_merge_paths() {
    let config = ResourceConfig::new(resource("v1/pods"))
        .with_field(path("spec.containers[].name"))
        .with_field(path("spec.containers[].ports[].containerPort"))
        .with_field(path("spec.missing.deep"));
    let projection = Projection::new(&config, "Pod").unwrap();
    let object = json!({
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "containers": [
                {"name": "a", "ports": [{"containerPort": 1, "protocol": "TCP"}, "odd"]},
                {"image": "no-name"},
                7
            ]
        }
    });
    assert_eq!(
        projection.project(&object).unwrap().value_str(),
        concat!(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"ns"},"#,
            r#""spec":{"containers":[{"name":"a","ports":[{"containerPort":1},null]},{},null]}}"#
        )
    );
    // A path that meets another shape than it expects keeps nothing, and empty parents go too.
    let scalar = json!({"metadata": {"name": "p"}, "spec": {"containers": "not-a-list"}});
    assert_eq!(
        projection.project(&scalar).unwrap().value_str(),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#
    );
}

#[test]
fn null_and_missing_fields_project_alike() {
    let projection = pod_projection();
    let mut with_null = pod();
    set(&mut with_null, "/spec/serviceAccountName", Value::Null);
    let mut without = pod();
    without["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccountName");
    assert_eq!(
        projection.project(&with_null).unwrap().value,
        projection.project(&without).unwrap().value
    );
}

#[test]
fn scope_comes_from_the_scope_field() {
    let projection = pod_projection();
    let mut pending = pod();
    pending["spec"].as_object_mut().unwrap().remove("nodeName");
    assert_eq!(projection.project(&pending).unwrap().scope, None);
    set(&mut pending, "/spec", json!({"nodeName": ""}));
    assert_eq!(projection.project(&pending).unwrap().scope, None);

    let mut numeric = pod();
    set(&mut numeric, "/spec/nodeName", json!(42));
    let message = projection.project(&numeric).unwrap_err().to_string();
    assert!(message.contains("shop/web-7d4b9c-x2x9z"), "{message}");
    assert!(
        message.contains("spec.nodeName is not a string"),
        "{message}"
    );

    // The scope field need not be projected.
    let config = ResourceConfig::new(resource("v1/pods")).with_scope(path("spec.nodeName"));
    let projected = Projection::new(&config, "Pod")
        .unwrap()
        .project(&pod())
        .unwrap();
    assert_eq!(projected.scope.as_deref(), Some("node-1"));
    assert!(!projected.value_str().contains("node-1"));
}

#[test]
fn bad_objects_are_rejected_with_clear_errors() {
    let projection = pod_projection();
    assert!(matches!(
        projection.project(&json!([1])),
        Err(Error::NotAnObject { .. })
    ));
    for object in [
        json!({}),
        json!({"metadata": {}}),
        json!({"metadata": {"name": ""}}),
        json!({"metadata": {"name": 5}}),
    ] {
        assert!(matches!(
            projection.project(&object),
            Err(Error::MissingName { .. })
        ));
    }
    let message = projection
        .project(&json!({"metadata": {"name": "p", "namespace": ["x"]}}))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("metadata.namespace is not a string"),
        "{message}"
    );
}

#[test]
fn objects_over_the_size_limit_are_rejected() {
    let projection = pod_projection();
    let size = projection.project(&pod()).unwrap().value.len();
    let exact = projection.clone().with_max_object_bytes(size);
    assert_eq!(exact.project(&pod()).unwrap().value.len(), size);
    let small = projection.with_max_object_bytes(size - 1);
    let message = small.project(&pod()).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "projects to {size} bytes, over the limit of {}",
            size - 1
        )),
        "{message}"
    );
    assert!(message.contains("projection.max_object_bytes"), "{message}");
}

#[test]
fn invalid_configs_are_refused() {
    let config = ResourceConfig::new(resource("v1/pods")).with_field(path("metadata"));
    let message = Projection::new(&config, "Pod").unwrap_err().to_string();
    assert!(message.contains("fields[0]"), "{message}");
    let config = ResourceConfig::new(resource("v1/pods"))
        .with_field(path("spec.a[].b"))
        .with_field(path("spec.a.c"));
    assert!(matches!(
        Projection::new(&config, "Pod"),
        Err(Error::Config { .. })
    ));
}

#[test]
fn fingerprint_is_stable_and_tracks_the_config() {
    let pods = default_for(&resource("v1/pods")).unwrap();
    let base = Projection::new(&pods, "Pod").unwrap().fingerprint();
    // Pinned: a change here breaks resume across versions, so bump RULES_VERSION on purpose.
    // Without exclude rules, the text (and hash) is what it was before rules existed.
    let unfiltered = ResourceConfig {
        exclude: Vec::new(),
        ..pods.clone()
    };
    let text = "cattail.projection.v1\nv1/pods\nfield metadata.labels\nfield spec.containers[].ports\n\
         field spec.hostNetwork\nfield spec.nodeName\nfield spec.serviceAccountName\n\
         field status.phase\nfield status.podIPs\nscope spec.nodeName\n";
    assert_eq!(fingerprint_text(&unfiltered), text);
    assert_eq!(fingerprint(&unfiltered), 0x22e2_aa86_704b_1ac1);
    assert_eq!(
        fingerprint_text(&pods),
        format!(
            "{text}exclude spec.hostNetwork in [true]\nexclude status.phase in [\"Succeeded\", \
             \"Failed\"]\nexclude status.podIPs is empty\n"
        )
    );
    assert_eq!(base, fingerprint(&pods));

    let mut reordered = pods.clone();
    reordered.fields.reverse();
    assert_eq!(
        Projection::new(&reordered, "Pod").unwrap().fingerprint(),
        base
    );
    assert_eq!(
        Projection::new(&pods, "SomethingElse")
            .unwrap()
            .fingerprint(),
        base,
        "the kind comes from discovery and is not configuration"
    );

    let mut unscoped = pods.clone();
    unscoped.scope = None;
    let more = pods.clone().with_field(path("metadata.annotations"));
    let mut other_resource = pods.clone();
    other_resource.resource = resource("v1/nodes");
    let mut fewer_rules = pods.clone();
    fewer_rules.exclude.pop();
    for changed in [unscoped, more, other_resource, fewer_rules, unfiltered] {
        assert_ne!(
            Projection::new(&changed, "Pod").unwrap().fingerprint(),
            base
        );
    }
}

#[test]
fn every_default_profile_compiles_and_identity_members_interleave_in_order() {
    for config in crate::config::default_resources() {
        Projection::new(&config, "Kind").unwrap();
    }
    // `addressType` sorts before `apiVersion`, and `endpoints` between it and `kind`.
    let config = default_for(&resource("discovery.k8s.io/v1/endpointslices")).unwrap();
    let projection = Projection::new(&config, "EndpointSlice").unwrap();
    let slice = json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": "web-abcde",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "web"},
            "resourceVersion": "77"
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.2.3"], "conditions": {"ready": true}, "nodeName": "node-1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    });
    assert_eq!(
        projection.project(&slice).unwrap().value_str(),
        concat!(
            r#"{"addressType":"IPv4","apiVersion":"discovery.k8s.io/v1","#,
            r#""endpoints":[{"addresses":["10.1.2.3"],"conditions":{"ready":true},"nodeName":"node-1"}],"#,
            r#""kind":"EndpointSlice","#,
            r#""metadata":{"labels":{"kubernetes.io/service-name":"web"},"name":"web-abcde","namespace":"shop"},"#,
            r#""ports":[{"name":"http","port":8080,"protocol":"TCP"}]}"#
        )
    );
}

#[test]
fn projections_are_shareable_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Projection>();
    shareable::<ProjectedObject>();
}

#[test]
fn the_default_profile_excludes_pods_without_ip_host_networked_or_finished() {
    let projection = pod_projection();
    let mut running = pod();
    assert!(projection.excluded_by(&running).is_none());
    // Each rule on its own.
    let mut cases = Vec::new();
    for (pointer, value) in [
        ("/status/podIPs", json!([])),
        ("/status/podIPs", Value::Null),
        ("/status/phase", json!("Succeeded")),
        ("/status/phase", json!("Failed")),
    ] {
        let mut object = pod();
        set(&mut object, pointer, value.clone());
        cases.push((format!("{pointer} = {value}"), object));
    }
    let mut no_ips = pod();
    no_ips["status"].as_object_mut().unwrap().remove("podIPs");
    cases.push(("no status.podIPs".into(), no_ips));
    let mut host = pod();
    host["spec"]["hostNetwork"] = json!(true);
    cases.push(("hostNetwork".into(), host));
    for (what, object) in cases {
        assert!(projection.excluded_by(&object).is_some(), "{what}");
    }
    // Near misses stay in: a string "true", hostNetwork false, phase Pending with an IP.
    for (pointer, value) in [
        ("/spec/hostNetwork", json!("true")),
        ("/spec/hostNetwork", json!(false)),
        ("/status/phase", json!("Pending")),
    ] {
        let mut object = pod();
        object["spec"]["hostNetwork"] = json!(false);
        set(&mut object, pointer, value.clone());
        assert!(
            projection.excluded_by(&object).is_none(),
            "{pointer} = {value}"
        );
    }
    set(&mut running, "/status/podIPs", json!([{"ip": "10.0.0.1"}]));
    assert!(projection.excluded_by(&running).is_none());
}

#[test]
fn integer_and_emptiness_rules_compare_by_json_type() {
    use crate::config::{Emptiness, ExcludeRule, Scalar};
    let config = ResourceConfig::new(resource("v1/pods"))
        .with_field(path("spec.priority"))
        .with_field(path("metadata.labels"))
        .with_exclude(ExcludeRule::equals(path("spec.priority"), Scalar::Int(7)))
        .with_exclude(ExcludeRule::is(
            path("metadata.labels.tier"),
            Emptiness::NotEmpty,
        ));
    let projection = Projection::new(&config, "Pod").unwrap();
    let object = |priority: Value, labels: Value| json!({"metadata": {"name": "p", "labels": labels}, "spec": {"priority": priority}});
    assert!(
        projection
            .excluded_by(&object(json!(7), json!({})))
            .is_some()
    );
    assert!(
        projection
            .excluded_by(&object(json!("7"), json!({})))
            .is_none()
    );
    assert!(
        projection
            .excluded_by(&object(json!(8), json!({})))
            .is_none()
    );
    assert!(
        projection
            .excluded_by(&object(json!(8), json!({"tier": "x"})))
            .is_some()
    );
    assert!(
        projection
            .excluded_by(&object(json!(8), json!({"tier": ""})))
            .is_none()
    );
}
