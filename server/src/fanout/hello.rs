//! Accepting an agent's Hello: the size limit, the protocol's checks (`cattail_proto::hello`),
//! the resources this server serves, and the payload encoding to use.
//!
//! Pure and synchronous: reading the Hello off the stream, with its deadline, is the sender's.
//! Every refusal is a [`super::Error`] whose message tells the agent what to fix.

use cattail_proto::hello::{check_served, validate_hello};
use cattail_proto::pb::{Encoding, Hello, Resume};
use prost::Message;

use super::admission::{AdmissionRequest, RequestedSubscription};
use super::resources::{ServedResources, Subscription};
use super::{Error, FanoutConfig, Result};

/// An accepted Hello.
#[derive(Debug, Clone)]
pub(crate) struct AgentHello {
    /// `Hello.agent_id`.
    pub(crate) agent_id: String,
    /// `Hello.node_name`.
    pub(crate) node_name: String,
    /// `Hello.agent_version`.
    pub(crate) agent_version: String,
    /// The subscriptions, in the Hello's order.
    pub(crate) subscriptions: Vec<Subscription>,
    /// The payload encoding this agent gets.
    pub(crate) encoding: Encoding,
    /// What the agent already holds.
    pub(crate) resume: Option<Resume>,
}

/// Checks `hello` against the protocol, the limits in `config` and the `served` resources.
///
/// # Errors
/// [`Error::HelloTooLarge`] over `max_hello_bytes`; [`Error::Hello`] for a broken rule, an
/// unknown resource or a node-scoped subscription to a resource without a scope field.
pub(crate) fn accept(
    hello: Hello,
    config: &FanoutConfig,
    served: &ServedResources,
) -> Result<AgentHello> {
    let size = hello.encoded_len();
    if size > config.max_hello_bytes as usize {
        return Err(Error::HelloTooLarge {
            size,
            limit: config.max_hello_bytes,
        });
    }
    validate_hello(&hello, config.max_subscriptions)?;
    check_served(&hello, served.welcome())?;
    let mut subscriptions = Vec::with_capacity(hello.subscriptions.len());
    for subscription in &hello.subscriptions {
        let index = served.index_of(&subscription.resource).ok_or_else(|| {
            // `check_served` has found it; this is only reachable through a bug.
            Error::Encode(format!("{} vanished from the hub", subscription.resource))
        })?;
        let scope = if subscription.node_scoped {
            hello.node_name.clone()
        } else {
            String::new()
        };
        subscriptions.push(Subscription { index, scope });
    }
    Ok(AgentHello {
        encoding: cattail_proto::frame::negotiate_encoding(&hello.accepted_encodings),
        agent_id: hello.agent_id,
        node_name: hello.node_name,
        agent_version: hello.agent_version,
        subscriptions,
        resume: hello.resume,
    })
}

impl AgentHello {
    /// What admission is asked to allow: the node and each subscription, by resource name.
    pub(crate) fn admission_request(&self, served: &ServedResources) -> AdmissionRequest {
        let subscriptions = self
            .subscriptions
            .iter()
            .filter_map(|subscription| {
                let info = served.get(subscription.index)?;
                Some(RequestedSubscription {
                    resource: info.resource.clone(),
                    node_scoped_resource: info.scope_field.is_some(),
                    node: (!subscription.scope.is_empty()).then(|| subscription.scope.clone()),
                })
            })
            .collect();
        AdmissionRequest {
            node_name: self.node_name.clone(),
            subscriptions,
        }
    }
}
