//! A NetworkPolicy compiled for matching: its pod selector and one [`PeerRule`] per peer.
//!
//! Compiling checks what the API server's validation checks about selectors and CIDRs, so a
//! policy that reaches the agent some other way (a projection, a test, a future API version)
//! is refused with the field that is wrong rather than matched by guesswork. Label matching
//! itself is kube-core's `Selector`.

use std::collections::BTreeSet;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::Selector;

/// The most peers (`from` and `to` entries, over all rules) one policy may have. Real policies
/// have a handful; this bounds the work one object can cause.
pub const MAX_PEERS: usize = 1024;

/// The most `except` entries one `ipBlock` may have.
pub const MAX_EXCEPT: usize = 256;

/// A `Result` whose error is a policy [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a policy cannot be compiled. The policy then contributes no IP sets; fix the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object has no name or no namespace.
    #[error("the policy has no name or namespace")]
    Unnamed,

    /// The object has no `spec` (a projection that leaves it out cannot be used).
    #[error("the policy has no spec; the server's projection must keep `spec`")]
    NoSpec,

    /// A label selector cannot be matched.
    #[error("{field}: {reason}")]
    Selector {
        /// Where, like `spec.ingress[0].from[1].podSelector`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A peer sets none of `podSelector`, `namespaceSelector` and `ipBlock`.
    #[error("{field}: a peer needs podSelector, namespaceSelector or ipBlock")]
    EmptyPeer {
        /// Where, like `spec.egress[0].to[0]`.
        field: String,
    },

    /// A peer sets `ipBlock` together with a selector.
    #[error("{field}: ipBlock cannot be combined with podSelector or namespaceSelector")]
    MixedPeer {
        /// Where.
        field: String,
    },

    /// A CIDR does not parse, or an `except` is not inside its `cidr`.
    #[error("{field}: {value:?} {reason}")]
    Cidr {
        /// Where, like `spec.ingress[0].from[2].ipBlock.except[1]`.
        field: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Too many peers or `except` entries.
    #[error("{field}: {count} entries, more than the {max} allowed")]
    TooMany {
        /// Where.
        field: String,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// A compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    /// `namespace/name`.
    pub key: String,
    /// The policy's namespace: the pods it applies to live there.
    pub namespace: String,
    /// Selects, in `namespace`, the pods the policy applies to; empty selects them all.
    pub pod_selector: Selector,
    /// One entry per `from` / `to` peer, in the order of the spec.
    pub rules: Vec<PeerRule>,
}

/// One peer of one rule: the source of one IP set.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRule {
    /// Its place in the spec, like `ingress[0].from[1]`.
    pub name: String,
    /// Who the peer is.
    pub peer: Peer,
}

/// A peer: pods picked by selectors, or a CIDR.
#[derive(Debug, Clone, PartialEq)]
pub enum Peer {
    /// The pods matching `pods` in the namespaces `namespaces` names.
    Pods {
        /// Which namespaces.
        namespaces: Namespaces,
        /// Which pods in them; empty selects them all.
        pods: Selector,
    },
    /// A CIDR less some smaller ones.
    Block {
        /// The CIDR.
        cidr: IpNet,
        /// CIDRs inside it that are not part of the peer.
        except: BTreeSet<IpNet>,
    },
}

/// The namespaces of a pod peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Namespaces {
    /// The policy's own namespace (a peer with only `podSelector`).
    Own(String),
    /// Every namespace whose labels match (a peer with `namespaceSelector`).
    Matching(Selector),
}

/// Compiles a policy, refusing it whole if any part is wrong.
///
/// # Errors
/// The first wrong part, named by its field path.
pub fn compile(policy: &NetworkPolicy) -> Result<CompiledPolicy> {
    let (Some(name), Some(namespace)) = (&policy.metadata.name, &policy.metadata.namespace) else {
        return Err(Error::Unnamed);
    };
    let spec = policy.spec.as_ref().ok_or(Error::NoSpec)?;
    let pod_selector = selector(spec.pod_selector.as_ref(), "spec.podSelector")?;
    let mut rules = Vec::new();
    let ingress = spec.ingress.iter().flatten().enumerate();
    let egress = spec.egress.iter().flatten().enumerate();
    let lists = ingress
        .map(|(i, rule)| (format!("ingress[{i}].from"), rule.from.as_deref()))
        .chain(egress.map(|(i, rule)| (format!("egress[{i}].to"), rule.to.as_deref())));
    for (list, peers) in lists {
        // A rule without peers admits everyone: it needs no IP set.
        for (j, peer) in peers.unwrap_or_default().iter().enumerate() {
            let rule = format!("{list}[{j}]");
            if rules.len() == MAX_PEERS {
                return Err(Error::TooMany {
                    field: "spec.ingress[].from + spec.egress[].to".to_owned(),
                    count: count_peers(policy),
                    max: MAX_PEERS,
                });
            }
            let peer = compile_peer(peer, namespace, &format!("spec.{rule}"))?;
            rules.push(PeerRule { name: rule, peer });
        }
    }
    Ok(CompiledPolicy {
        key: format!("{namespace}/{name}"),
        namespace: namespace.clone(),
        pod_selector,
        rules,
    })
}

fn count_peers(policy: &NetworkPolicy) -> usize {
    let Some(spec) = &policy.spec else { return 0 };
    let from = spec
        .ingress
        .iter()
        .flatten()
        .map(|r| r.from.as_ref().map_or(0, Vec::len));
    let to = spec
        .egress
        .iter()
        .flatten()
        .map(|r| r.to.as_ref().map_or(0, Vec::len));
    from.chain(to).sum()
}

fn compile_peer(peer: &NetworkPolicyPeer, own_namespace: &str, field: &str) -> Result<Peer> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err(Error::MixedPeer {
                field: field.to_owned(),
            });
        }
        let cidr = cidr(&block.cidr, &format!("{field}.ipBlock.cidr"))?;
        let excepts = block.except.as_deref().unwrap_or_default();
        if excepts.len() > MAX_EXCEPT {
            return Err(Error::TooMany {
                field: format!("{field}.ipBlock.except"),
                count: excepts.len(),
                max: MAX_EXCEPT,
            });
        }
        let mut except = BTreeSet::new();
        for (k, value) in excepts.iter().enumerate() {
            let place = format!("{field}.ipBlock.except[{k}]");
            let net = self::cidr(value, &place)?;
            // As the API server checks: strictly inside the block.
            if !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
                return Err(Error::Cidr {
                    field: place,
                    value: value.clone(),
                    reason: "is not strictly inside the block's cidr",
                });
            }
            except.insert(net);
        }
        return Ok(Peer::Block { cidr, except });
    }
    let pods = peer.pod_selector.as_ref();
    let namespaces = match &peer.namespace_selector {
        Some(namespaces) => Namespaces::Matching(selector(
            Some(namespaces),
            &format!("{field}.namespaceSelector"),
        )?),
        None if pods.is_some() => Namespaces::Own(own_namespace.to_owned()),
        None => {
            return Err(Error::EmptyPeer {
                field: field.to_owned(),
            });
        }
    };
    Ok(Peer::Pods {
        namespaces,
        pods: selector(pods, &format!("{field}.podSelector"))?,
    })
}

fn cidr(value: &str, field: &str) -> Result<IpNet> {
    value.parse().map_err(|_| Error::Cidr {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: "is not a CIDR such as 10.0.0.0/8 or fd00::/64",
    })
}

/// A label selector as kube-core's `Selector`; absent selects everything. The operator and
/// value rules are the API server's (`In` and `NotIn` need values, `Exists` and
/// `DoesNotExist` take none), checked here because kube-core accepts some of what the API
/// server refuses.
fn selector(selector: Option<&LabelSelector>, field: &str) -> Result<Selector> {
    let Some(selector) = selector else {
        return Ok(Selector::default());
    };
    for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
        check_requirement(requirement).map_err(|reason| Error::Selector {
            field: format!("{field}.matchExpressions[{i}]"),
            reason,
        })?;
    }
    Selector::try_from(selector.clone()).map_err(|error| Error::Selector {
        field: field.to_owned(),
        reason: error.to_string(),
    })
}

fn check_requirement(requirement: &LabelSelectorRequirement) -> Result<(), String> {
    if requirement.key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" | "NotIn" if values.is_empty() => Err(format!(
            "operator {} needs at least one value",
            requirement.operator
        )),
        "Exists" | "DoesNotExist" if !values.is_empty() => {
            Err(format!("operator {} takes no values", requirement.operator))
        }
        "In" | "NotIn" | "Exists" | "DoesNotExist" => Ok(()),
        other => Err(format!(
            "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
        )),
    }
}

#[cfg(test)]
mod tests;
