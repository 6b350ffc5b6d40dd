//! [`Admission`]: the seam through which a Hello is admitted or refused, before anything is sent.
//!
//! The fan-out knows nothing of certificates, tokens or policies: after a Hello is accepted,
//! the sender hands the [`Peer`] and an [`AdmissionRequest`] (the node and the resolved
//! subscriptions) to the hub's [`Admission`], if one is set, and ends the stream with the
//! [`Refusal`] it returns. Without one, every accepted Hello is served (the behaviour before
//! authentication existed). The `auth` module implements it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::config::Resource;

use super::Error;
use super::peer::Peer;

/// What an agent asks for, as admission sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionRequest {
    /// `Hello.node_name`.
    pub node_name: String,
    /// The subscriptions, in the Hello's order.
    pub subscriptions: Vec<RequestedSubscription>,
}

/// One subscription of an [`AdmissionRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedSubscription {
    /// The resource, like `v1/pods`.
    pub resource: Resource,
    /// Whether the resource has a scope field (objects belong to a node).
    pub node_scoped_resource: bool,
    /// The node this subscription is scoped to; `None` for every object of the resource.
    pub node: Option<String>,
}

/// Why admission refused an agent. Each becomes a [`Error`] and so a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials that are not valid (`UNAUTHENTICATED`).
    Unauthenticated(String),
    /// Valid credentials that may not have what the Hello asks for (`PERMISSION_DENIED`).
    PermissionDenied(String),
    /// The credentials could not be checked right now, e.g. the API server failed
    /// (`UNAVAILABLE`): the agent should retry.
    Unavailable(String),
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unauthenticated(message) => Error::Unauthenticated(message),
            Refusal::PermissionDenied(message) => Error::PermissionDenied(message),
            Refusal::Unavailable(message) => Error::AuthUnavailable(message),
        }
    }
}

/// The future an [`Admission`] returns.
pub type AdmissionFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<(), Refusal>> + Send + 'a>>;

/// Decides whether `peer` may have what `request` asks for.
///
/// Called once per stream, after the Hello is accepted and before anything is sent. It may
/// wait (a TokenReview); the sender runs it under the shutdown token and the agent's presence.
pub trait Admission: Send + Sync + fmt::Debug {
    /// Admits the agent, or says why not.
    fn admit<'a>(&'a self, peer: &'a Peer, request: &'a AdmissionRequest) -> AdmissionFuture<'a>;
}
