//! ServiceAccount tokens: the `authorization: Bearer <jwt>` metadata, checked with a
//! TokenReview against the API server, then against the ServiceAccount allowlist.
//!
//! Garbage never reaches the API server: a value that is not `Bearer` and a JWT of three
//! base64url parts with a JSON payload is refused at once, as is a token whose (unverified)
//! `aud` names none of the configured audiences. Answers are cached by the token's SHA-256 for
//! `cache_ttl`, never past the token's `exp`; TokenReviews in flight are capped, and concurrent
//! agents with one token share one review. An API server failure is `UNAVAILABLE`, never cached.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

use crate::config::TokenAuthConfig;
use crate::fanout::Authorization;

use super::cache::{self, ReviewCache, Source};
use super::identity::{Failure, Identity};
use super::metrics;

/// The `extra` key under which TokenReview names the node of the Pod a token is bound to.
pub(crate) const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The username prefix of ServiceAccounts.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The API server's answer for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reviewed {
    /// Authenticated as a ServiceAccount.
    Authenticated(Identity),
    /// Not authenticated: the `reason` label and the API server's words.
    Rejected {
        /// `token_invalid` or `token_audience`.
        reason: &'static str,
        /// Why, for the log.
        detail: String,
    },
}

/// Checks bearer tokens with TokenReview.
pub(crate) struct TokenReviewer {
    client: kube::Client,
    config: TokenAuthConfig,
    allowed: BTreeSet<String>,
    cache: Arc<ReviewCache<Reviewed>>,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// A reviewer sending TokenReviews with `client`.
    pub(crate) fn new(config: &TokenAuthConfig, client: kube::Client) -> Self {
        Self {
            client,
            allowed: config.service_accounts.iter().cloned().collect(),
            cache: Arc::new(ReviewCache::new(config.cache_max_entries)),
            in_flight: Arc::new(Semaphore::new(config.max_reviews_in_flight)),
            config: config.clone(),
        }
    }

    /// The identity `authorization` proves, or why it proves none.
    pub(crate) async fn identify(
        &self,
        authorization: &Authorization,
    ) -> Result<Identity, Failure> {
        let token = bearer(authorization)?;
        let claims = Claims::decode(token)?;
        if let Some(audiences) = &claims.aud
            && !audiences.iter().any(|a| self.config.audiences.contains(a))
        {
            return Err(Failure::unauthenticated(
                "token_audience",
                format!(
                    "the token is for audience {audiences:?}, not for this server ({:?}): mount \
                     a projected token with the audience the server expects",
                    self.config.audiences
                ),
            ));
        }
        let (outcome, source) = self
            .cache
            .get(cache::key(token), || {
                self.review(token.to_owned(), claims.exp)
            })
            .await;
        metrics::token_review(match (&source, &outcome) {
            (Source::Cached, _) => "cached",
            (Source::Shared, _) => "shared",
            (Source::Reviewed, Err(_)) => "error",
            (Source::Reviewed, Ok(Reviewed::Authenticated(_))) => "authenticated",
            (Source::Reviewed, Ok(Reviewed::Rejected { .. })) => "rejected",
        });
        match outcome {
            Err(error) => Err(Failure::unavailable(
                "token_review_error",
                "the server cannot check tokens right now (its TokenReview failed); retry later",
            )
            .with_detail(error)),
            Ok(Reviewed::Rejected { reason, detail }) => Err(Failure::unauthenticated(
                reason,
                "the Kubernetes API did not accept the token (expired, for another audience, \
                 or its Pod or ServiceAccount is gone): use a fresh projected token",
            )
            .with_detail(detail)),
            Ok(Reviewed::Authenticated(identity)) => {
                let Identity::ServiceAccount {
                    namespace, name, ..
                } = &identity
                else {
                    return Err(Failure::unauthenticated(
                        "token_invalid",
                        "not a ServiceAccount",
                    ));
                };
                if self.allowed.contains(&format!("{namespace}/{name}")) {
                    Ok(identity)
                } else {
                    Err(Failure::denied(
                        "service_account_not_allowed",
                        format!(
                            "ServiceAccount {namespace}/{name} is not allowed to connect: run the \
                             agent as an allowed ServiceAccount, or have the operator add it to \
                             auth.tokens.service_accounts"
                        ),
                    )
                    .of(&identity))
                }
            }
        }
    }

    /// Sends one TokenReview (waiting for a slot), and says how long to keep its answer.
    fn review(
        &self,
        token: String,
        exp: Option<u64>,
    ) -> impl Future<Output = (Result<Reviewed, String>, Option<Duration>)> + Send + use<> {
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let slots = Arc::clone(&self.in_flight);
        let audiences = self.config.audiences.clone();
        let (timeout, ttl) = (self.config.review_timeout, self.config.cache_ttl);
        async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return (Err("the TokenReview slots are closed".to_owned()), None);
            };
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token,
                    audiences: Some(audiences.clone()),
                },
                ..TokenReview::default()
            };
            let post = PostParams::default();
            match tokio::time::timeout(timeout, api.create(&post, &review)).await {
                Err(_) => (
                    Err(format!("no TokenReview answer within {timeout:?}")),
                    None,
                ),
                Ok(Err(error)) => (
                    Err(format!(
                        "TokenReview failed: {error}; the server needs `create` on \
                         tokenreviews.authentication.k8s.io"
                    )),
                    None,
                ),
                Ok(Ok(answer)) => {
                    let reviewed = interpret(answer.status, &audiences);
                    let keep = match &reviewed {
                        Reviewed::Authenticated(_) => exp.map_or(Some(ttl), |exp| {
                            let now = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .unwrap_or_default();
                            Duration::from_secs(exp)
                                .checked_sub(now)
                                .map(|left| left.min(ttl))
                        }),
                        Reviewed::Rejected { .. } => Some(ttl),
                    };
                    (Ok(reviewed), keep)
                }
            }
        }
    }

    /// How many answers are cached.
    pub(crate) fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// What a TokenReview's status says, for `audiences`.
pub(crate) fn interpret(status: Option<TokenReviewStatus>, audiences: &[String]) -> Reviewed {
    let status = status.unwrap_or_default();
    let error = status.error.unwrap_or_default();
    if status.authenticated != Some(true) {
        let reason = if error.contains("audience") {
            "token_audience"
        } else {
            "token_invalid"
        };
        return Reviewed::Rejected {
            reason,
            detail: error,
        };
    }
    let confirmed = status.audiences.unwrap_or_default();
    if !confirmed.iter().any(|a| audiences.contains(a)) {
        return Reviewed::Rejected {
            reason: "token_audience",
            detail: format!("the API server confirmed audiences {confirmed:?}, none of ours"),
        };
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let account = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'));
    let Some((namespace, name)) = account else {
        return Reviewed::Rejected {
            reason: "token_invalid",
            detail: format!("authenticated as {username:?}, which is not a ServiceAccount"),
        };
    };
    let node = user
        .extra
        .and_then(|extra| extra.get(NODE_NAME_EXTRA)?.first().cloned())
        .filter(|node| !node.is_empty());
    Reviewed::Authenticated(Identity::ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        node,
    })
}

/// The token of an `authorization: Bearer <jwt>` value, if it has a JWT's shape.
pub(crate) fn bearer(authorization: &Authorization) -> Result<&str, Failure> {
    let malformed = |why: &str| {
        Failure::unauthenticated(
            "malformed_authorization",
            format!(
                "the authorization metadata {why}: send `authorization: Bearer <token>` with \
                 the agent's projected ServiceAccount token"
            ),
        )
    };
    let Authorization::Value(value) = authorization else {
        return Err(malformed("is over 8 KiB or not UTF-8"));
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(malformed("is not `Bearer <token>`"));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("is not of the Bearer scheme"));
    }
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    let base64url = |part: &&str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.len() != 3 || !parts.iter().all(base64url) {
        return Err(malformed("does not hold a JWT (three base64url parts)"));
    }
    Ok(token)
}

/// The claims read from a token's payload without checking its signature: only to refuse a
/// token for another audience early, and to keep an answer no longer than the token lives.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Claims {
    /// `aud`, as a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub(crate) aud: Option<Vec<String>>,
    /// `exp`, seconds since the epoch.
    #[serde(default)]
    pub(crate) exp: Option<u64>,
}

impl Claims {
    /// The payload claims of a JWT `token` (checked by [`bearer`]).
    pub(crate) fn decode(token: &str) -> Result<Self, Failure> {
        let payload = token.split('.').nth(1).unwrap_or_default();
        URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| {
                Failure::unauthenticated(
                    "malformed_authorization",
                    "the bearer token in the authorization metadata is not a JWT with a JSON \
                     payload: send the agent's \
                     projected ServiceAccount token",
                )
            })
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(
        match <Option<OneOrMany> as serde::Deserialize>::deserialize(d)? {
            None => None,
            Some(OneOrMany::One(one)) => Some(vec![one]),
            Some(OneOrMany::Many(many)) => Some(many),
        },
    )
}
