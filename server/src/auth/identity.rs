//! Who an agent is once its credentials are checked ([`Identity`]), and why it was refused
//! when they are not ([`Failure`]): the leaf every other `auth` module builds on.

use std::fmt;

use crate::fanout::Refusal;

/// An authenticated agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A ServiceAccount token that TokenReview accepted.
    ServiceAccount {
        /// The ServiceAccount's namespace.
        namespace: String,
        /// The ServiceAccount's name.
        name: String,
        /// The node of the Pod the token is bound to, if it is bound to one on a node.
        node: Option<String>,
    },
    /// A client certificate on the allowlist.
    Certificate {
        /// The subject's common name.
        common_name: Option<String>,
        /// The URI SANs.
        uri_sans: Vec<String>,
    },
}

impl Identity {
    /// The node the identity is bound to, if any: only pod-bound tokens name one.
    pub(crate) fn node(&self) -> Option<&str> {
        match self {
            Self::ServiceAccount { node, .. } => node.as_deref(),
            Self::Certificate { .. } => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceAccount {
                namespace,
                name,
                node: Some(node),
            } => write!(f, "ServiceAccount {namespace}/{name} on node {node}"),
            Self::ServiceAccount {
                namespace, name, ..
            } => write!(
                f,
                "ServiceAccount {namespace}/{name} (token bound to no node)"
            ),
            Self::Certificate {
                common_name,
                uri_sans,
            } => {
                write!(f, "certificate")?;
                if let Some(cn) = common_name {
                    write!(f, " CN={cn}")?;
                }
                for uri in uri_sans {
                    write!(f, " URI={uri}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why an agent was not admitted: a metric label, what the agent is told, and what the log
/// says besides (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The `reason` label of `cattail_auth_failures_total`.
    pub(crate) reason: &'static str,
    /// What the agent gets.
    pub(crate) refusal: Refusal,
    /// Who the agent turned out to be, when that was known.
    pub(crate) identity: Option<String>,
    /// More for the log than the agent is told (the API server's words, say).
    pub(crate) detail: String,
}

impl Failure {
    /// `UNAUTHENTICATED` with `message`.
    pub(crate) fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(reason, Refusal::Unauthenticated(message.into()))
    }

    /// `PERMISSION_DENIED` with `message`.
    pub(crate) fn denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(reason, Refusal::PermissionDenied(message.into()))
    }

    /// `UNAVAILABLE` with `message`.
    pub(crate) fn unavailable(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(reason, Refusal::Unavailable(message.into()))
    }

    fn new(reason: &'static str, refusal: Refusal) -> Self {
        Self {
            reason,
            refusal,
            identity: None,
            detail: String::new(),
        }
    }

    /// This failure, noting who the agent is.
    #[must_use]
    pub(crate) fn of(mut self, identity: &Identity) -> Self {
        self.identity = Some(identity.to_string());
        self
    }

    /// This failure, with `detail` for the log.
    #[must_use]
    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}
