//! The pure computation on small, hand-checked clusters.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};

use super::*;
use crate::policy::compile;

fn pod(ns: &str, name: &str, node: &str, labels: Value, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": []},
        "status": status,
    }))
    .unwrap()
}

fn running(ips: &[&str]) -> Value {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    json!({"phase": "Running", "podIPs": ips})
}

fn endpoint(ns: &str, name: &str, node: &str, labels: Value, ip: &str) -> Endpoint {
    Endpoint::from_pod(&pod(ns, name, node, labels, running(&[ip]))).unwrap()
}

fn policy(ns: &str, name: &str, spec: Value) -> CompiledPolicy {
    compile(
        &serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap(),
    )
    .unwrap()
}

fn namespaces() -> NamespaceLabels {
    [
        ("prod", json!({"team": "prod", "env": "prod"})),
        ("dev", json!({"team": "dev"})),
    ]
    .into_iter()
    .map(|(name, labels)| (name.to_owned(), serde_json::from_value(labels).unwrap()))
    .collect()
}

fn flat(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

#[test]
fn pods_that_are_not_endpoints_are_left_out_as_the_default_profile_does() {
    let ok = pod("a", "p", "n1", json!({}), running(&["10.0.0.1", "fd00::1"]));
    let endpoint = Endpoint::from_pod(&ok).unwrap();
    assert_eq!(endpoint.key(), "a/p");
    assert_eq!(
        strings(&endpoint.ips),
        ["10.0.0.1/32".to_owned(), "fd00::1/128".to_owned()]
    );

    let no_ip = pod("a", "p", "n1", json!({}), json!({"phase": "Pending"}));
    let empty_ips = pod(
        "a",
        "p",
        "n1",
        json!({}),
        json!({"phase": "Running", "podIPs": []}),
    );
    let no_status: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "a"}})).unwrap();
    let mut host = ok.clone();
    host.spec.as_mut().unwrap().host_network = Some(true);
    let succeeded = pod(
        "a",
        "p",
        "n1",
        json!({}),
        json!({"phase": "Succeeded", "podIPs": [{"ip": "10.0.0.1"}]}),
    );
    let failed = pod(
        "a",
        "p",
        "n1",
        json!({}),
        json!({"phase": "Failed", "podIPs": [{"ip": "10.0.0.1"}]}),
    );
    let bad_ip = pod("a", "p", "n1", json!({}), running(&["10.0.0.300"]));
    for (what, pod) in [
        ("no IP", no_ip),
        ("empty podIPs", empty_ips),
        ("no status", no_status),
        ("hostNetwork", host),
        ("Succeeded", succeeded),
        ("Failed", failed),
        ("an IP that does not parse", bad_ip),
    ] {
        assert_eq!(Endpoint::from_pod(&pod), None, "{what}");
    }
    // One bad IP of two leaves the good one.
    let half = pod("a", "p", "n1", json!({}), running(&["nope", "10.0.0.2"]));
    assert_eq!(
        strings(&Endpoint::from_pod(&half).unwrap().ips),
        ["10.0.0.2/32"]
    );
}

/// The cluster of the testenv test's first step, computed by hand.
#[test]
fn a_node_gets_the_sets_of_the_policies_of_its_pods_over_the_whole_cluster() {
    let endpoints = [
        endpoint("prod", "web-1", "node-1", json!({"app": "web"}), "10.1.0.1"),
        endpoint("prod", "db-1", "node-2", json!({"app": "db"}), "10.1.0.2"),
        endpoint("dev", "web-2", "node-2", json!({"app": "web"}), "10.2.0.1"),
        endpoint(
            "dev",
            "client",
            "node-1",
            json!({"app": "client"}),
            "10.2.0.2",
        ),
        // In a namespace the agent has not seen: no namespace selector matches it.
        endpoint("new", "x", "node-2", json!({"app": "web"}), "10.3.0.1"),
    ];
    let policies = [
        policy(
            "prod",
            "web",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [
                    {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "client"]}]}},
                    {"namespaceSelector": {"matchLabels": {"team": "dev"}}},
                    {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]},
                     "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
                    {"ipBlock": {"cidr": "10.99.0.0/16", "except": ["10.99.1.0/24"]}},
                ]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            }),
        ),
        // Applies only to a pod of node-2: node-1 needs none of its sets.
        policy(
            "prod",
            "db",
            json!({"podSelector": {"matchLabels": {"app": "db"}},
                   "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
        ),
        // Applies to every pod of dev, with no peers.
        policy(
            "dev",
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
    ];
    let errors = BTreeMap::from([("prod/bad".to_owned(), "broken".to_owned())]);
    let state = compute(
        "node-1",
        &endpoints,
        &namespaces(),
        &policies,
        errors.clone(),
    );
    assert_eq!(
        state.flat_sets(),
        flat(&[
            ("prod/web egress[0].to[0]", &["10.1.0.1/32", "10.1.0.2/32"]),
            ("prod/web ingress[0].from[0]", &["10.1.0.2/32"]),
            (
                "prod/web ingress[0].from[1]",
                &["10.2.0.1/32", "10.2.0.2/32"]
            ),
            (
                "prod/web ingress[0].from[2]",
                &["10.2.0.1/32", "10.2.0.2/32"]
            ),
            (
                "prod/web ingress[0].from[3]",
                &["10.99.0.0/16", "except 10.99.1.0/24"]
            ),
        ])
    );
    assert_eq!(
        state.endpoints,
        BTreeMap::from([
            (
                "dev/client".to_owned(),
                BTreeSet::from(["dev/deny".to_owned()])
            ),
            (
                "prod/web-1".to_owned(),
                BTreeSet::from(["prod/web".to_owned()])
            ),
        ])
    );
    assert!(state.sets["dev/deny"].is_empty(), "active, without peers");
    assert_eq!(state.errors, errors);

    // node-2 has db-1 and web-2 and x: both prod policies, dev/deny for web-2.
    let state = compute(
        "node-2",
        &endpoints,
        &namespaces(),
        &policies,
        BTreeMap::new(),
    );
    assert_eq!(
        state.flat_sets()["prod/db ingress[0].from[0]"],
        // Every endpoint in a known namespace; `new` is not known yet.
        ["10.1.0.1/32", "10.1.0.2/32", "10.2.0.1/32", "10.2.0.2/32"]
    );
    assert_eq!(state.endpoints["new/x"], BTreeSet::new());
    assert_eq!(state.endpoints.len(), 3);

    // A node without endpoints needs nothing.
    let state = compute(
        "node-9",
        &endpoints,
        &namespaces(),
        &policies,
        BTreeMap::new(),
    );
    assert_eq!(state, NodeState::default());
}

#[test]
fn the_state_serialises_as_the_http_endpoint_shows_it() {
    let endpoints = [endpoint("a", "p", "n", json!({}), "10.0.0.1")];
    let policies = [policy(
        "a",
        "all",
        json!({"egress": [{"to": [{"podSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}),
    )];
    let state = compute(
        "n",
        &endpoints,
        &NamespaceLabels::new(),
        &policies,
        BTreeMap::new(),
    );
    assert_eq!(
        serde_json::to_value(&state).unwrap(),
        json!({
            "endpoints": {"a/p": ["a/all"]},
            "sets": {"a/all": {
                "egress[0].to[0]": {"members": ["10.0.0.1/32"]},
                "egress[0].to[1]": {"members": ["0.0.0.0/0"], "except": ["10.0.0.0/8"]},
            }},
            "errors": {},
        })
    );
}
