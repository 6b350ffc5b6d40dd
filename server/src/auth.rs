//! Agent authentication and authorization: the [`Authenticator`] that the fan-out's
//! [`Admission`] seam calls once per stream, after the Hello and before anything is sent.
//!
//! Identity comes from a verified client certificate on the allowlist (`certificate`) or from
//! a ServiceAccount token checked with TokenReview (`token`, cached in `cache`); what it may
//! subscribe to comes from `auth.policies` (`policy`). Every refusal is one log line (never
//! the token), a `cattail_auth_failures_total{reason}` count and a gRPC status:
//! `UNAUTHENTICATED`, `PERMISSION_DENIED`, or `UNAVAILABLE` when the API server failed.

mod cache;
mod certificate;
mod identity;
mod metrics;
mod policy;
#[cfg(test)]
mod tests;
mod token;

use crate::config::AuthConfig;
use crate::fanout::{Admission, AdmissionFuture, AdmissionRequest, Peer};

use certificate::CertificateAllowlist;
use identity::{Failure, Identity};
use policy::Policy;
use token::TokenReviewer;

pub use metrics::{AUTH_FAILURES, TOKEN_REVIEWS, describe_metrics};

/// Decides, per stream, who the agent is and whether it may have what its Hello asks for.
#[derive(Debug)]
pub struct Authenticator {
    certificates: Option<CertificateAllowlist>,
    tokens: Option<TokenReviewer>,
    policy: Policy,
}

impl Authenticator {
    /// The authenticator of `config`, sending TokenReviews with `client`; `None` when `config`
    /// enables neither certificates nor tokens (agents are then not authenticated).
    pub fn new(config: &AuthConfig, client: kube::Client) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        describe_metrics();
        Some(Self {
            certificates: config.certificates.as_ref().map(CertificateAllowlist::new),
            tokens: config
                .tokens
                .as_ref()
                .map(|tokens| TokenReviewer::new(tokens, client)),
            policy: Policy::new(&config.policies),
        })
    }

    /// How many TokenReview answers are cached.
    pub fn cached_token_reviews(&self) -> usize {
        self.tokens.as_ref().map_or(0, TokenReviewer::cached)
    }

    /// Who `peer` is and whether it may have `request`.
    async fn check(&self, peer: &Peer, request: &AdmissionRequest) -> Result<Identity, Failure> {
        let identity = self.identify(peer).await?;
        self.policy
            .authorize(&identity, request)
            .map_err(|message| Failure::denied("permission_denied", message).of(&identity))?;
        Ok(identity)
    }

    /// The identity of `peer`: an allowed certificate first, then a token.
    async fn identify(&self, peer: &Peer) -> Result<Identity, Failure> {
        let mut refused_certificate = None;
        if let (Some(allowlist), Some(certificate)) = (&self.certificates, &peer.certificate) {
            match allowlist.identify(certificate) {
                Some(identity) => return Ok(identity),
                None => {
                    refused_certificate = Some(Identity::Certificate {
                        common_name: certificate.common_name.clone(),
                        uri_sans: certificate.uri_sans.clone(),
                    });
                }
            }
        }
        if let (Some(tokens), Some(authorization)) = (&self.tokens, &peer.authorization) {
            return tokens.identify(authorization).await;
        }
        if let Some(identity) = refused_certificate {
            return Err(Failure::denied(
                "certificate_not_allowed",
                format!(
                    "the client {identity} is not on this server's allowlist: use an allowed \
                     certificate, or have the operator add it to auth.certificates"
                ),
            )
            .of(&identity));
        }
        let expected = match (&self.certificates, &self.tokens) {
            (Some(_), Some(_)) => "a client certificate or `authorization: Bearer <token>`",
            (Some(_), None) => "a client certificate",
            _ => "`authorization: Bearer <token>` with the agent's projected ServiceAccount token",
        };
        Err(Failure::unauthenticated(
            "no_credentials",
            format!("no credentials: this server requires {expected}"),
        ))
    }
}

impl Admission for Authenticator {
    fn admit<'a>(&'a self, peer: &'a Peer, request: &'a AdmissionRequest) -> AdmissionFuture<'a> {
        Box::pin(async move {
            match self.check(peer, request).await {
                Ok(identity) => {
                    tracing::debug!(%identity, node = %request.node_name, "agent admitted");
                    Ok(())
                }
                Err(failure) => {
                    metrics::auth_failure(failure.reason);
                    tracing::warn!(
                        reason = failure.reason,
                        peer = ?peer.address,
                        node = %request.node_name,
                        identity = failure.identity.as_deref().unwrap_or("unknown"),
                        detail = %failure.detail,
                        refusal = ?failure.refusal,
                        "agent refused"
                    );
                    Err(failure.refusal)
                }
            }
        })
    }
}
