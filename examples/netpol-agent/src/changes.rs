//! What changed between two [`NodeState`]s, as the JSON lines the agent prints.
//!
//! One line per peer set whose members (or `except`) changed, per endpoint whose policies
//! changed, and per policy whose error appeared or cleared. Diffing two whole states, rather
//! than following events, means a skipped intermediate state never leaves a wrong line behind.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::ipsets::{IpSet, NodeState, strings};

/// One change, printed as one JSON line. Replaying the lines in order rebuilds the state:
/// an endpoint line replaces that endpoint's policies, a set line adds and removes members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Change {
    /// A policy's error appeared (`error` set) or cleared (`null`).
    Error {
        /// `namespace/name`.
        policy: String,
        /// Why it cannot be used, or `None` now that it can.
        error: Option<String>,
    },
    /// An endpoint of the node appeared, went away, or the policies applying to it changed.
    Endpoint {
        /// `namespace/name` of the pod.
        pod: String,
        /// Every policy that applies to it now (possibly none), or `None` (`null`) when it is
        /// no longer an endpoint of the node.
        policies: Option<Vec<String>>,
    },
    /// A peer set changed.
    Set {
        /// `namespace/name`.
        policy: String,
        /// The peer, like `ingress[0].from[1]`.
        rule: String,
        /// Networks now in the set.
        added: Vec<String>,
        /// Networks no longer in it.
        removed: Vec<String>,
        /// The whole `except` list of an `ipBlock`, when it is not empty or just emptied.
        #[serde(skip_serializing_if = "Option::is_none")]
        except: Option<Vec<String>>,
    },
}

/// The changes from `old` to `new`: errors first, then endpoints, then sets, each sorted.
#[must_use]
pub fn diff(old: &NodeState, new: &NodeState) -> Vec<Change> {
    let mut changes = Vec::new();
    for policy in keys(&old.errors, &new.errors) {
        let error = new.errors.get(policy);
        if old.errors.get(policy) != error {
            changes.push(Change::Error {
                policy: policy.clone(),
                error: error.cloned(),
            });
        }
    }
    for pod in keys(&old.endpoints, &new.endpoints) {
        let after = new.endpoints.get(pod);
        if old.endpoints.get(pod) != after {
            changes.push(Change::Endpoint {
                pod: pod.clone(),
                policies: after.map(|policies| policies.iter().cloned().collect()),
            });
        }
    }
    let (old_sets, new_sets) = (flatten(old), flatten(new));
    let empty = IpSet::default();
    for key in keys(&old_sets, &new_sets) {
        let before = old_sets.get(key).copied().unwrap_or(&empty);
        let after = new_sets.get(key).copied().unwrap_or(&empty);
        let added = strings(after.members.difference(&before.members));
        let removed = strings(before.members.difference(&after.members));
        let except_changed = before.except != after.except;
        if added.is_empty() && removed.is_empty() && !except_changed {
            continue;
        }
        let except = (except_changed || !after.except.is_empty()).then(|| strings(&after.except));
        changes.push(Change::Set {
            policy: key.0.to_owned(),
            rule: key.1.to_owned(),
            added,
            removed,
            except,
        });
    }
    changes
}

fn keys<'a, K: Ord, V, W>(a: &'a BTreeMap<K, V>, b: &'a BTreeMap<K, W>) -> BTreeSet<&'a K> {
    a.keys().chain(b.keys()).collect()
}

fn flatten(state: &NodeState) -> BTreeMap<(&str, &str), &IpSet> {
    state
        .sets
        .iter()
        .flat_map(|(policy, rules)| {
            rules
                .iter()
                .map(move |(rule, set)| ((policy.as_str(), rule.as_str()), set))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn state(sets: &[(&str, &str, &[&str])], endpoints: &[(&str, &[&str])]) -> NodeState {
        let mut state = NodeState::default();
        for (policy, rule, members) in sets {
            state.sets.entry((*policy).to_owned()).or_default().insert(
                (*rule).to_owned(),
                IpSet {
                    members: members.iter().map(|m| net(m)).collect(),
                    except: BTreeSet::new(),
                },
            );
        }
        for (pod, policies) in endpoints {
            state.endpoints.insert(
                (*pod).to_owned(),
                policies.iter().map(|p| (*p).to_owned()).collect(),
            );
        }
        state
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect()
    }

    #[test]
    fn set_changes_name_the_policy_the_rule_and_what_moved() {
        let old = state(
            &[("a/p", "ingress[0].from[0]", &["10.0.0.1/32", "10.0.0.2/32"])],
            &[("a/web", &["a/p"])],
        );
        let new = state(
            &[
                ("a/p", "ingress[0].from[0]", &["10.0.0.2/32", "10.0.0.3/32"]),
                ("a/q", "egress[0].to[0]", &["10.0.0.9/32"]),
            ],
            &[("a/web", &["a/p", "a/q"]), ("a/db", &[])],
        );
        assert_eq!(
            lines(&diff(&old, &new)),
            [
                r#"{"pod":"a/db","policies":[]}"#,
                r#"{"pod":"a/web","policies":["a/p","a/q"]}"#,
                r#"{"policy":"a/p","rule":"ingress[0].from[0]","added":["10.0.0.3/32"],"removed":["10.0.0.1/32"]}"#,
                r#"{"policy":"a/q","rule":"egress[0].to[0]","added":["10.0.0.9/32"],"removed":[]}"#,
            ]
        );
        // And back: everything is undone, nothing else is said.
        assert_eq!(
            lines(&diff(&new, &old)),
            [
                r#"{"pod":"a/db","policies":null}"#,
                r#"{"pod":"a/web","policies":["a/p"]}"#,
                r#"{"policy":"a/p","rule":"ingress[0].from[0]","added":["10.0.0.1/32"],"removed":["10.0.0.3/32"]}"#,
                r#"{"policy":"a/q","rule":"egress[0].to[0]","added":[],"removed":["10.0.0.9/32"]}"#,
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn errors_and_excepts_are_reported_when_they_change() {
        let mut old = state(&[("a/p", "ingress[0].from[0]", &["10.0.0.0/8"])], &[]);
        let mut new = old.clone();
        new.sets
            .get_mut("a/p")
            .unwrap()
            .get_mut("ingress[0].from[0]")
            .unwrap()
            .except = BTreeSet::from([net("10.1.0.0/16")]);
        new.errors
            .insert("a/bad".into(), "spec.podSelector: oops".into());
        assert_eq!(
            lines(&diff(&old, &new)),
            [
                r#"{"policy":"a/bad","error":"spec.podSelector: oops"}"#,
                r#"{"policy":"a/p","rule":"ingress[0].from[0]","added":[],"removed":[],"except":["10.1.0.0/16"]}"#,
            ]
        );
        old.errors
            .insert("a/bad".into(), "spec.podSelector: oops".into());
        new.errors.clear();
        assert_eq!(
            lines(&diff(&old, &new))[0],
            r#"{"policy":"a/bad","error":null}"#
        );
    }
}
