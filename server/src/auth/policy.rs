//! Authorization: what an [`Identity`] may subscribe to, from `auth.policies`.
//!
//! An identity's entry is its own (`service_account`, `uri_san`, then `common_name`), else the
//! `default_for` entry of its kind, else the built-in default: every served resource, and for
//! node-scoped resources only the identity's own node (ServiceAccounts) or every node
//! (certificates, as Typha does). A refusal names every subscription it refuses.

use std::collections::BTreeSet;

use crate::config::{IdentityKind, PolicyConfig, Resource};
use crate::fanout::{AdmissionRequest, RequestedSubscription};

use super::identity::Identity;

/// What one identity may have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    /// The resources it may subscribe to; `None` for every served one.
    resources: Option<BTreeSet<Resource>>,
    /// Whether it may see node-scoped objects of every node.
    all_nodes: bool,
}

/// The configured policies.
#[derive(Debug, Clone, Default)]
pub(crate) struct Policy {
    entries: Vec<PolicyConfig>,
}

impl Policy {
    /// The policy of `entries` (validated with the config).
    pub(crate) fn new(entries: &[PolicyConfig]) -> Self {
        Self {
            entries: entries.to_vec(),
        }
    }

    /// Allows `request` for `identity`, or says what it may not have and what to do.
    pub(crate) fn authorize(
        &self,
        identity: &Identity,
        request: &AdmissionRequest,
    ) -> Result<(), String> {
        let grant = self.grant(identity);
        let refused: Vec<String> = request
            .subscriptions
            .iter()
            .filter_map(|subscription| refusal(&grant, identity.node(), subscription))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let hint = match identity.node() {
            Some(node) => format!(
                "subscribe to node-scoped resources only for node {node} (Hello.node_name), or \
                 have the operator grant more in the server's auth.policies"
            ),
            None if matches!(identity, Identity::ServiceAccount { .. }) => {
                "the token is not bound to a Pod on a node, so node-scoped resources are refused: \
                 use the projected token of the agent's Pod, or have the operator grant more in \
                 the server's auth.policies"
                    .to_owned()
            }
            None => "have the operator grant more in the server's auth.policies".to_owned(),
        };
        Err(format!(
            "{identity} may not subscribe to {}; {hint}",
            refused.join(", ")
        ))
    }

    /// The grant of `identity`: its own entry, its kind's default entry, or the built-in one.
    fn grant(&self, identity: &Identity) -> Grant {
        let (own, kind) = match identity {
            Identity::ServiceAccount {
                namespace, name, ..
            } => {
                let account = format!("{namespace}/{name}");
                let own = self
                    .entries
                    .iter()
                    .find(|e| e.service_account.as_deref() == Some(account.as_str()));
                (own, IdentityKind::ServiceAccount)
            }
            Identity::Certificate {
                common_name,
                uri_sans,
            } => {
                let by_uri = self
                    .entries
                    .iter()
                    .find(|e| e.uri_san.as_ref().is_some_and(|uri| uri_sans.contains(uri)));
                let by_cn = || {
                    self.entries.iter().find(|e| {
                        e.common_name.is_some() && e.common_name.as_ref() == common_name.as_ref()
                    })
                };
                (by_uri.or_else(by_cn), IdentityKind::Certificate)
            }
        };
        let entry = own.or_else(|| self.entries.iter().find(|e| e.default_for == Some(kind)));
        Grant {
            resources: entry
                .and_then(|e| e.resources.as_ref())
                .map(|r| r.iter().cloned().collect()),
            all_nodes: entry
                .and_then(|e| e.all_nodes)
                .unwrap_or(kind == IdentityKind::Certificate),
        }
    }
}

/// What is refused of `subscription` under `grant`, if anything, as the agent is told it.
fn refusal(
    grant: &Grant,
    own_node: Option<&str>,
    subscription: &RequestedSubscription,
) -> Option<String> {
    let resource = &subscription.resource;
    if grant
        .resources
        .as_ref()
        .is_some_and(|allowed| !allowed.contains(resource))
    {
        return Some(format!("{resource} (not granted)"));
    }
    if !subscription.node_scoped_resource || grant.all_nodes {
        return None;
    }
    match (subscription.node.as_deref(), own_node) {
        (Some(node), Some(own)) if node == own => None,
        (Some(node), _) => Some(format!("{resource} of node {node}")),
        (None, _) => Some(format!("{resource} of every node")),
    }
}
