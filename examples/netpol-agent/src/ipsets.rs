//! The pure computation: from pods, namespace labels and compiled policies to one node's
//! [`NodeState`] (which policies apply to its pods, and the IP set of every peer of those).
//!
//! As Felix does, the node only computes the sets of the policies that apply to at least one
//! of its own pods, and pods that have no IP yet, share the node's IP (`hostNetwork`) or have
//! finished (`Succeeded`, `Failed`) are not endpoints at all. A cattail server's default
//! profile leaves those pods out already; in direct mode [`Endpoint::from_pod`] does, so both
//! modes compute the same state. Nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Pod;
use kube::core::SelectorExt;
use serde::{Serialize, Serializer};

use crate::policy::{CompiledPolicy, Namespaces, Peer};

/// Namespace name -> its labels.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// A pod as the policy engine sees it: one with at least one IP, running in the pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The node it runs on; empty before it is scheduled.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its IPs (`status.podIPs`), as host networks (`/32`, `/128`).
    pub ips: BTreeSet<IpNet>,
}

impl Endpoint {
    /// The endpoint of a pod, or `None` for a pod that is not one: no name or namespace, no
    /// (valid) IP yet, `hostNetwork`, or finished. An IP that does not parse is left out with
    /// a warning: it cannot be put into a set.
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Option<Endpoint> {
        let spec = pod.spec.as_ref();
        if spec.and_then(|spec| spec.host_network) == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let namespace = pod.metadata.namespace.clone()?;
        let name = pod.metadata.name.clone()?;
        let mut ips = BTreeSet::new();
        for pod_ip in status.pod_ips.iter().flatten() {
            match pod_ip.ip.parse::<IpAddr>() {
                Ok(ip) => {
                    ips.insert(IpNet::from(ip));
                }
                Err(_) => {
                    tracing::warn!(%namespace, %name, ip = %pod_ip.ip, "pod IP does not parse; left out")
                }
            }
        }
        if ips.is_empty() {
            return None;
        }
        Some(Endpoint {
            namespace,
            name,
            node: spec
                .and_then(|spec| spec.node_name.clone())
                .unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
        })
    }

    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One peer's IP set: host networks of pods, or a CIDR block less its exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    /// The networks in the set.
    pub members: BTreeSet<IpNet>,
    /// Networks inside the members that are not in the set (an `ipBlock`'s `except`).
    pub except: BTreeSet<IpNet>,
}

impl Serialize for IpSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown {
            members: Vec<String>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            except: Vec<String>,
        }
        Shown {
            members: strings(&self.members),
            except: strings(&self.except),
        }
        .serialize(serializer)
    }
}

/// Networks as strings, in order.
pub(crate) fn strings<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Vec<String> {
    nets.into_iter().map(ToString::to_string).collect()
}

/// What one node needs: the policies of its pods and their peers' IP sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeState {
    /// Every endpoint on the node (`namespace/pod`) and the policies (`namespace/name`) that
    /// apply to it; an endpoint no policy selects has an empty set.
    pub endpoints: BTreeMap<String, BTreeSet<String>>,
    /// Policy -> peer (like `ingress[0].from[1]`) -> its IP set, for the policies that apply
    /// to at least one endpoint of the node.
    pub sets: BTreeMap<String, BTreeMap<String, IpSet>>,
    /// Policies that could not be compiled, and why; they contribute nothing.
    pub errors: BTreeMap<String, String>,
}

impl NodeState {
    /// A flat view for tests and logs: `"policy peer"` -> members, then `except NET` entries.
    #[must_use]
    pub fn flat_sets(&self) -> BTreeMap<String, Vec<String>> {
        let mut flat = BTreeMap::new();
        for (policy, rules) in &self.sets {
            for (rule, set) in rules {
                let mut shown = strings(&set.members);
                shown.extend(set.except.iter().map(|net| format!("except {net}")));
                flat.insert(format!("{policy} {rule}"), shown);
            }
        }
        flat
    }
}

/// Computes `node`'s state. `errors` (policies that did not compile) are carried over as they
/// are.
#[must_use]
pub fn compute(
    node: &str,
    endpoints: &[Endpoint],
    namespaces: &NamespaceLabels,
    policies: &[CompiledPolicy],
    errors: BTreeMap<String, String>,
) -> NodeState {
    let mut state = NodeState {
        errors,
        ..NodeState::default()
    };
    let local: Vec<&Endpoint> = endpoints.iter().filter(|e| e.node == node).collect();
    for endpoint in &local {
        state.endpoints.insert(endpoint.key(), BTreeSet::new());
    }
    for policy in policies {
        let mut applies = false;
        for endpoint in &local {
            if endpoint.namespace == policy.namespace
                && policy.pod_selector.matches(&endpoint.labels)
            {
                applies = true;
                if let Some(policies) = state.endpoints.get_mut(&endpoint.key()) {
                    policies.insert(policy.key.clone());
                }
            }
        }
        if !applies {
            continue;
        }
        let sets = policy
            .rules
            .iter()
            .map(|rule| (rule.name.clone(), ip_set(&rule.peer, endpoints, namespaces)))
            .collect();
        state.sets.insert(policy.key.clone(), sets);
    }
    state
}

/// The IP set of one peer, over every endpoint of the cluster.
fn ip_set(peer: &Peer, endpoints: &[Endpoint], namespaces: &NamespaceLabels) -> IpSet {
    match peer {
        Peer::Block { cidr, except } => IpSet {
            members: BTreeSet::from([*cidr]),
            except: except.clone(),
        },
        Peer::Pods {
            namespaces: scope,
            pods,
        } => {
            let in_scope = |namespace: &str| match scope {
                Namespaces::Own(own) => own == namespace,
                // A namespace the agent has not seen yet has no labels to match.
                Namespaces::Matching(selector) => namespaces
                    .get(namespace)
                    .is_some_and(|labels| selector.matches(labels)),
            };
            let members = endpoints
                .iter()
                .filter(|e| in_scope(&e.namespace) && pods.matches(&e.labels))
                .flat_map(|e| e.ips.iter().copied())
                .collect();
            IpSet {
                members,
                except: BTreeSet::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
