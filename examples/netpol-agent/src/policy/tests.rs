//! Compiling policies: every peer shape, every selector operator, and the bad input the API
//! server would refuse.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use kube::core::SelectorExt;
use serde_json::{Value, json};

use super::*;

fn policy(spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "prod"},
        "spec": spec,
    }))
    .unwrap()
}

fn error(spec: Value) -> String {
    compile(&policy(spec)).unwrap_err().to_string()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The selector of the policy's single peer, after checking that it is a pod peer in the
/// policy's own namespace.
fn only_pod_selector(selector: Value) -> Selector {
    let compiled = compile(&policy(
        json!({"ingress": [{"from": [{"podSelector": selector}]}]}),
    ))
    .unwrap();
    match &compiled.rules[0].peer {
        Peer::Pods {
            namespaces: Namespaces::Own(ns),
            pods,
        } => {
            assert_eq!(ns, "prod");
            pods.clone()
        }
        other => panic!("not an own-namespace pod peer: {other:?}"),
    }
}

#[test]
fn peers_are_named_by_their_place_and_take_their_shape() {
    let compiled = compile(&policy(json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"from": [
                {"podSelector": {"matchLabels": {"app": "db"}}},
                {"namespaceSelector": {"matchLabels": {"team": "dev"}}},
            ]},
            // No `from`: everyone is admitted, no set is needed.
            {"ports": [{"port": 80}]},
            {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "x"}}}]},
        ],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
    })))
    .unwrap();
    assert_eq!(compiled.key, "prod/p");
    assert!(compiled.pod_selector.matches(&labels(&[("app", "web")])));
    assert!(!compiled.pod_selector.matches(&labels(&[("app", "db")])));
    let names: Vec<&str> = compiled.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ingress[0].from[0]",
            "ingress[0].from[1]",
            "ingress[2].from[0]",
            "egress[0].to[0]"
        ]
    );
    assert!(matches!(
        &compiled.rules[0].peer,
        Peer::Pods { namespaces: Namespaces::Own(ns), .. } if ns == "prod"
    ));
    // namespaceSelector alone: every pod of the matching namespaces.
    let Peer::Pods {
        namespaces: Namespaces::Matching(namespaces),
        pods,
    } = &compiled.rules[1].peer
    else {
        panic!("{:?}", compiled.rules[1].peer);
    };
    assert!(namespaces.matches(&labels(&[("team", "dev")])));
    assert!(!namespaces.matches(&labels(&[("team", "prod")])));
    assert!(pods.selects_all());
    // Both: the empty namespaceSelector is every namespace.
    let Peer::Pods {
        namespaces: Namespaces::Matching(namespaces),
        pods,
    } = &compiled.rules[2].peer
    else {
        panic!("{:?}", compiled.rules[2].peer);
    };
    assert!(namespaces.selects_all());
    assert!(pods.matches(&labels(&[("app", "x")])));
    assert_eq!(
        compiled.rules[3].peer,
        Peer::Block {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: ["10.1.0.0/16".parse().unwrap()].into(),
        }
    );
}

#[test]
fn an_absent_or_empty_pod_selector_applies_to_every_pod() {
    for spec in [json!({}), json!({"podSelector": {}})] {
        let compiled = compile(&policy(spec)).unwrap();
        assert!(compiled.pod_selector.matches(&labels(&[])));
        assert!(compiled.pod_selector.matches(&labels(&[("any", "thing")])));
        assert!(compiled.rules.is_empty());
    }
}

#[test]
fn every_selector_operator_matches_as_kubernetes_does() {
    let none = labels(&[]);
    let web = labels(&[("app", "web")]);
    let db = labels(&[("app", "db")]);
    let cache = labels(&[("app", "cache"), ("tier", "back")]);

    let in_ = only_pod_selector(
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}),
    );
    assert_eq!(
        [&none, &web, &db, &cache].map(|l| in_.matches(l)),
        [false, true, true, false]
    );

    // NotIn also matches pods without the key.
    let not_in = only_pod_selector(
        json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
    );
    assert_eq!(
        [&none, &web, &db, &cache].map(|l| not_in.matches(l)),
        [true, false, true, true]
    );

    let exists =
        only_pod_selector(json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}));
    assert_eq!(
        [&none, &web, &cache].map(|l| exists.matches(l)),
        [false, false, true]
    );

    let absent = only_pod_selector(
        json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
    );
    assert_eq!(
        [&none, &web, &cache].map(|l| absent.matches(l)),
        [true, true, false]
    );

    // matchLabels and matchExpressions together: all of them must hold.
    let both = only_pod_selector(json!({
        "matchLabels": {"app": "cache"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["back", "mid"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }));
    assert!(both.matches(&cache));
    assert!(!both.matches(&labels(&[("app", "cache"), ("tier", "front")])));
    assert!(!both.matches(&labels(&[("app", "web"), ("tier", "back")])));
    assert!(!both.matches(&labels(&[
        ("app", "cache"),
        ("tier", "back"),
        ("legacy", "")
    ])));

    // Empty selectors, in every spelling, select everything.
    for empty in [
        json!({}),
        json!({"matchLabels": {}}),
        json!({"matchExpressions": []}),
    ] {
        let selector = only_pod_selector(empty.clone());
        assert!(selector.matches(&none), "{empty}");
        assert!(selector.matches(&cache), "{empty}");
    }
}

#[test]
fn bad_selectors_are_refused_with_their_field() {
    let cases = [
        (
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["w"]}]}}),
            "spec.podSelector.matchExpressions[0]: unknown operator \"Like\"; use In, NotIn, Exists or DoesNotExist",
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
            "spec.podSelector.matchExpressions[0]: operator In needs at least one value",
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}}),
            "spec.podSelector.matchExpressions[0]: operator NotIn needs at least one value",
        ),
        (
            json!({"ingress": [{"from": [{"podSelector": {"matchExpressions": [
                {"key": "a", "operator": "Exists"},
                {"key": "app", "operator": "Exists", "values": ["x"]}]}}]}]}),
            "spec.ingress[0].from[0].podSelector.matchExpressions[1]: operator Exists takes no values",
        ),
        (
            json!({"egress": [{"to": [{"namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "DoesNotExist", "values": ["x"]}]}}]}]}),
            "spec.egress[0].to[0].namespaceSelector.matchExpressions[0]: operator DoesNotExist takes no values",
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "", "operator": "Exists"}]}}),
            "spec.podSelector.matchExpressions[0]: the key is empty",
        ),
        (
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "in", "values": ["w"]}]}}),
            "spec.podSelector.matchExpressions[0]: unknown operator \"in\"",
        ),
    ];
    for (spec, want) in cases {
        let got = error(spec.clone());
        assert!(got.starts_with(want), "{spec}: got {got:?}, want {want:?}");
    }
}

#[test]
fn bad_peers_and_cidrs_are_refused_with_their_field() {
    let cases = [
        (
            json!({"ingress": [{"from": [{}]}]}),
            "spec.ingress[0].from[0]: a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        (
            json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
            "spec.ingress[0].from[0]: ipBlock cannot be combined",
        ),
        (
            json!({"egress": [{"to": [{"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0"}}]}]}),
            "spec.egress[0].to[1].ipBlock.cidr: \"10.0.0.0\" is not a CIDR",
        ),
        (
            json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
            "spec.egress[0].to[0].ipBlock.cidr: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except[0]: \"11.0.0.0/16\" is not strictly inside",
        ),
        (
            json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except[0]: \"10.0.0.0/8\" is not strictly inside",
        ),
        (
            json!({"egress": [{"to": [{"ipBlock": {"cidr": "fd00::/64", "except": ["10.0.0.0/16"]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except[0]: \"10.0.0.0/16\" is not strictly inside",
        ),
        (
            json!({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                "except": vec!["10.1.0.0/16"; MAX_EXCEPT + 1]}}]}]}),
            "spec.egress[0].to[0].ipBlock.except: 257 entries, more than the 256 allowed",
        ),
        (
            json!({"ingress": [{"from": vec![json!({"podSelector": {}}); MAX_PEERS]},
                               {"from": [{"podSelector": {}}]}]}),
            "spec.ingress[].from + spec.egress[].to: 1025 entries, more than the 1024 allowed",
        ),
    ];
    for (spec, want) in cases {
        let got = error(spec.clone());
        assert!(got.starts_with(want), "got {got:?}, want {want:?}");
    }
    // MAX_PEERS itself is allowed, and IPv6 blocks work.
    let at_limit = json!({"ingress": [{"from": vec![json!({"podSelector": {}}); MAX_PEERS]}]});
    assert_eq!(compile(&policy(at_limit)).unwrap().rules.len(), MAX_PEERS);
    let v6 =
        json!({"egress": [{"to": [{"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/80"]}}]}]});
    assert!(compile(&policy(v6)).is_ok());
}

#[test]
fn a_policy_without_name_or_spec_is_refused() {
    let unnamed: NetworkPolicy = serde_json::from_value(json!({"spec": {}})).unwrap();
    assert_eq!(compile(&unnamed).unwrap_err(), Error::Unnamed);
    let no_spec: NetworkPolicy =
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "a"}})).unwrap();
    assert_eq!(compile(&no_spec).unwrap_err(), Error::NoSpec);
    assert!(
        Error::NoSpec
            .to_string()
            .contains("projection must keep `spec`")
    );
}
