//! The checks every server makes on a `Hello` before it looks at its own state.
//!
//! [`validate_hello`] is pure: it knows the protocol's rules but not which resources a server
//! serves, so "unknown resource" and "projection fingerprint differs" are the server's to check.
//! Its errors map to the gRPC codes in docs/PROTOCOL.md through [`crate::Error::code`].

use std::collections::{HashMap, HashSet};

use crate::digest::Digest;
use crate::pb::{Hello, ResourceInfo};
use crate::resource::Resource;
use crate::{EPOCH_LEN, Error, PROTOCOL_VERSION, Result};

/// The longest `agent_id`, `node_name` or `agent_version` a `Hello` may carry.
pub const MAX_HELLO_STRING_LEN: usize = 253;

/// Checks a `Hello` against the protocol and returns its subscribed resources, parsed, in order.
///
/// The rules, in the order they are checked:
/// - `protocol_version` is [`PROTOCOL_VERSION`];
/// - `agent_id` is not empty; no string field is longer than [`MAX_HELLO_STRING_LEN`];
/// - there is at least one subscription and at most `max_subscriptions`, each with a valid
///   resource, none twice; `node_name` is set when any of them is node scoped;
/// - a `resume`, when present, has a 16-byte epoch and consistent digests, each for a
///   subscribed resource with the scope that subscription implies, none twice, and at most
///   `max_subscriptions` `covered` entries (entries that match no subscription are allowed:
///   they cover nothing).
///
/// # Errors
/// [`Error::UnsupportedProtocolVersion`], [`Error::InvalidResource`] or [`Error::InvalidHello`]
/// for the first rule broken.
pub fn validate_hello(hello: &Hello, max_subscriptions: u32) -> Result<Vec<Resource>> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Error::UnsupportedProtocolVersion {
            got: hello.protocol_version,
            supported: PROTOCOL_VERSION,
        });
    }
    let invalid = |message: String| Err(Error::InvalidHello(message));
    if hello.agent_id.is_empty() {
        return invalid("agent_id is empty; set it to a stable id such as the pod name".into());
    }
    for (field, value) in [
        ("agent_id", &hello.agent_id),
        ("node_name", &hello.node_name),
        ("agent_version", &hello.agent_version),
    ] {
        if value.len() > MAX_HELLO_STRING_LEN {
            return invalid(format!(
                "{field} is {} bytes long, more than {MAX_HELLO_STRING_LEN}",
                value.len()
            ));
        }
    }

    if hello.subscriptions.is_empty() {
        return invalid("it has no subscriptions; subscribe to at least one resource".into());
    }
    if hello.subscriptions.len() > max_subscriptions as usize {
        return invalid(format!(
            "it has {} subscriptions, more than this server's limit of {max_subscriptions}",
            hello.subscriptions.len()
        ));
    }
    let mut resources = Vec::with_capacity(hello.subscriptions.len());
    // Subscribed resource -> the scope its digest must have.
    let mut scopes = HashMap::new();
    for subscription in &hello.subscriptions {
        let resource = Resource::parse(&subscription.resource)?;
        if subscription.node_scoped && hello.node_name.is_empty() {
            return invalid(format!(
                "{} is node scoped but node_name is empty; set node_name to the agent's node",
                subscription.resource
            ));
        }
        let scope = if subscription.node_scoped {
            hello.node_name.as_str()
        } else {
            ""
        };
        if scopes
            .insert(subscription.resource.as_str(), scope)
            .is_some()
        {
            return invalid(format!(
                "{} is subscribed twice; subscribe to each resource once",
                subscription.resource
            ));
        }
        resources.push(resource);
    }

    if let Some(resume) = &hello.resume {
        if resume.epoch.len() != EPOCH_LEN {
            return invalid(format!(
                "resume.epoch is {} bytes, expected {EPOCH_LEN}; send no resume when the \
                 agent holds no state",
                resume.epoch.len()
            ));
        }
        let mut seen = HashSet::new();
        for digest in &resume.digests {
            let Some(scope) = scopes.get(digest.resource.as_str()) else {
                return invalid(format!(
                    "resume has a digest for {:?}, which is not subscribed",
                    digest.resource
                ));
            };
            if digest.scope != *scope {
                return invalid(format!(
                    "resume has a digest for {} with scope {:?}, but its subscription \
                     implies scope {scope:?}",
                    digest.resource, digest.scope
                ));
            }
            if !seen.insert(digest.resource.as_str()) {
                return invalid(format!("resume has two digests for {}", digest.resource));
            }
            Digest::from_proto(digest).map_err(|error| {
                Error::InvalidHello(format!("resume digest for {}: {error}", digest.resource))
            })?;
        }
        if resume.covered.len() > max_subscriptions as usize {
            return invalid(format!(
                "resume.covered has {} entries, more than this server's limit of \
                 {max_subscriptions} subscriptions",
                resume.covered.len()
            ));
        }
    }
    Ok(resources)
}

/// Checks that a server serves every resource a `Hello` subscribes to, and can scope the
/// node-scoped ones. `served` is what the server puts in `Welcome.resources`.
///
/// # Errors
/// [`Error::UnknownResource`] for a resource not in `served`, and [`Error::InvalidHello`] for a
/// node-scoped subscription to a resource whose `scope_field` is empty.
pub fn check_served(hello: &Hello, served: &[ResourceInfo]) -> Result<()> {
    for subscription in &hello.subscriptions {
        let Some(info) = served
            .iter()
            .find(|info| info.resource == subscription.resource)
        else {
            let names: Vec<&str> = served.iter().map(|info| info.resource.as_str()).collect();
            return Err(Error::UnknownResource {
                resource: subscription.resource.clone(),
                served: names.join(", "),
            });
        };
        if subscription.node_scoped && info.scope_field.is_empty() {
            return Err(Error::InvalidHello(format!(
                "{} cannot be node scoped: the server has no scope field for it; \
                 subscribe with node_scoped = false",
                subscription.resource
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
