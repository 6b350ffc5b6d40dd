//! Unit tests of `auth`: the certificate allowlist, the policy, bearer parsing and TokenReview
//! answers; the cache and the reviewer's limits are in `tests/reviews.rs`. The TokenReview round
//! trip itself is tested against the real API server in `server/tests/auth.rs`.

#![allow(clippy::unwrap_used)]

mod reviews;

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

use super::certificate::CertificateAllowlist;
use super::identity::Identity;
use super::policy::Policy;
use super::token::{Claims, NODE_NAME_EXTRA, Reviewed, bearer, interpret};
use super::*;
use crate::config::{CertificateAuthConfig, IdentityKind, PolicyConfig};
use crate::fanout::{Authorization, PeerCertificate, Refusal, RequestedSubscription};

fn certificate(cn: Option<&str>, uris: &[&str], dns: &[&str]) -> PeerCertificate {
    PeerCertificate {
        common_name: cn.map(str::to_owned),
        uri_sans: uris.iter().map(|u| (*u).to_owned()).collect(),
        dns_sans: dns.iter().map(|d| (*d).to_owned()).collect(),
    }
}

fn allowlist() -> CertificateAllowlist {
    CertificateAllowlist::new(&CertificateAuthConfig {
        common_names: vec!["cattail-agent".into()],
        uri_sans: vec!["spiffe://cluster/ns/cattail/sa/agent".into()],
        uri_san_prefixes: vec!["spiffe://cluster/ns/agents/".into()],
    })
}

#[test]
fn certificates_match_exact_names_and_uri_prefixes_only() {
    let allowed = allowlist();
    let admitted = [
        certificate(Some("cattail-agent"), &[], &[]),
        certificate(None, &["spiffe://cluster/ns/cattail/sa/agent"], &[]),
        certificate(Some("x"), &["spiffe://cluster/ns/agents/sa/any"], &[]),
    ];
    for cert in &admitted {
        let identity = allowed.identify(cert).unwrap_or_else(|| panic!("{cert:?}"));
        assert!(matches!(identity, Identity::Certificate { .. }));
    }
    let refused = [
        certificate(Some("cattail-agent-2"), &[], &[]),
        certificate(Some("CATTAIL-AGENT"), &[], &[]),
        certificate(None, &["spiffe://cluster/ns/cattail/sa/agent/x"], &[]),
        // A prefix matches names under it, not itself, nor a sibling namespace.
        certificate(None, &["spiffe://cluster/ns/agents/"], &[]),
        certificate(None, &["spiffe://cluster/ns/agents-evil/sa/x"], &[]),
        // DNS SANs name hosts, never agents.
        certificate(None, &[], &["cattail-agent"]),
        certificate(None, &[], &[]),
    ];
    for cert in &refused {
        assert!(allowed.identify(cert).is_none(), "{cert:?}");
    }
}

fn account(node: Option<&str>) -> Identity {
    Identity::ServiceAccount {
        namespace: "agents".into(),
        name: "agent".into(),
        node: node.map(str::to_owned),
    }
}

fn request(node: &str, subscriptions: &[(&str, bool, bool)]) -> AdmissionRequest {
    AdmissionRequest {
        node_name: node.into(),
        subscriptions: subscriptions
            .iter()
            .map(
                |(resource, scoped_resource, scoped)| RequestedSubscription {
                    resource: resource.parse().unwrap(),
                    node_scoped_resource: *scoped_resource,
                    node: scoped.then(|| node.to_owned()),
                },
            )
            .collect(),
    }
}

const OWN_PODS: (&str, bool, bool) = ("v1/pods", true, true);
const ALL_PODS: (&str, bool, bool) = ("v1/pods", true, false);
const SERVICES: (&str, bool, bool) = ("v1/services", false, false);

#[test]
fn service_accounts_see_their_own_node_by_default() {
    let policy = Policy::default();
    let on_a = account(Some("node-a"));
    policy
        .authorize(&on_a, &request("node-a", &[OWN_PODS, SERVICES]))
        .unwrap();
    let other = policy
        .authorize(&on_a, &request("node-b", &[OWN_PODS, SERVICES]))
        .unwrap_err();
    assert!(other.contains("v1/pods of node node-b"), "{other}");
    assert!(!other.contains("v1/services"), "{other}");
    let every = policy
        .authorize(&on_a, &request("node-a", &[ALL_PODS]))
        .unwrap_err();
    assert!(every.contains("v1/pods of every node"), "{every}");
    // Bound to no node: no node-scoped resource at all, the rest is fine.
    let nowhere = account(None);
    let refused = policy
        .authorize(&nowhere, &request("node-a", &[OWN_PODS]))
        .unwrap_err();
    assert!(refused.contains("not bound to a Pod"), "{refused}");
    policy
        .authorize(&nowhere, &request("node-a", &[SERVICES]))
        .unwrap();
}

#[test]
fn certificates_see_every_node_by_default() {
    let cert = Identity::Certificate {
        common_name: Some("cattail-agent".into()),
        uri_sans: vec![],
    };
    Policy::default()
        .authorize(&cert, &request("node-a", &[ALL_PODS, OWN_PODS, SERVICES]))
        .unwrap();
    let restricted = Policy::new(&[PolicyConfig {
        default_for: Some(IdentityKind::Certificate),
        all_nodes: Some(false),
        ..PolicyConfig::default()
    }]);
    let refused = restricted
        .authorize(&cert, &request("node-a", &[OWN_PODS]))
        .unwrap_err();
    assert!(refused.contains("v1/pods of node node-a"), "{refused}");
}

#[test]
fn an_identity_entry_comes_before_its_kind_default() {
    let policy = Policy::new(&[
        PolicyConfig {
            default_for: Some(IdentityKind::ServiceAccount),
            resources: Some(vec!["v1/services".parse().unwrap()]),
            ..PolicyConfig::default()
        },
        PolicyConfig {
            service_account: Some("agents/agent".into()),
            all_nodes: Some(true),
            ..PolicyConfig::default()
        },
        PolicyConfig {
            common_name: Some("cn".into()),
            resources: Some(vec![]),
            ..PolicyConfig::default()
        },
        PolicyConfig {
            uri_san: Some("spiffe://x/y".into()),
            ..PolicyConfig::default()
        },
    ]);
    policy
        .authorize(&account(None), &request("node-a", &[ALL_PODS, SERVICES]))
        .unwrap();
    let other = Identity::ServiceAccount {
        namespace: "agents".into(),
        name: "other".into(),
        node: Some("node-a".into()),
    };
    let refused = policy
        .authorize(&other, &request("node-a", &[OWN_PODS, SERVICES]))
        .unwrap_err();
    assert!(refused.contains("v1/pods (not granted)"), "{refused}");
    let by_cn = Identity::Certificate {
        common_name: Some("cn".into()),
        uri_sans: vec![],
    };
    assert!(
        policy
            .authorize(&by_cn, &request("n", &[SERVICES]))
            .is_err()
    );
    // The URI SAN's entry wins over the common name's.
    let by_uri = Identity::Certificate {
        common_name: Some("cn".into()),
        uri_sans: vec!["spiffe://x/y".into()],
    };
    policy
        .authorize(&by_uri, &request("n", &[SERVICES, ALL_PODS]))
        .unwrap();
}

fn value(text: &str) -> Authorization {
    Authorization::Value(text.to_owned())
}

/// A JWT-shaped token with `payload` (unsigned: only the shape and claims matter here).
fn jwt(payload: &serde_json::Value) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let part = |v: &serde_json::Value| engine.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.c2ln",
        part(&serde_json::json!({"alg": "RS256"})),
        part(payload)
    )
}

#[test]
fn only_bearer_jwts_are_taken_and_their_claims_read() {
    let token = jwt(&serde_json::json!({"aud": "cattail", "exp": 1_900_000_000u64}));
    for header in [
        format!("Bearer {token}"),
        format!("bearer  {token} "),
        format!("BEARER {token}"),
    ] {
        assert_eq!(bearer(&value(&header)).unwrap(), token);
    }
    for garbage in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer a..c",
        "Bearer a.b+/.c",
        &token,
    ] {
        let failure = bearer(&value(garbage)).unwrap_err();
        assert_eq!(failure.reason, "malformed_authorization", "{garbage}");
        assert!(matches!(failure.refusal, Refusal::Unauthenticated(_)));
    }
    assert!(bearer(&Authorization::Invalid).is_err());

    let claims = Claims::decode(&token).unwrap();
    assert_eq!(claims.aud, Some(vec!["cattail".to_owned()]));
    assert_eq!(claims.exp, Some(1_900_000_000));
    let many = Claims::decode(&jwt(&serde_json::json!({"aud": ["a", "b"]}))).unwrap();
    assert_eq!(many.aud, Some(vec!["a".to_owned(), "b".to_owned()]));
    assert_eq!(many.exp, None);
    assert!(Claims::decode("a.b.c").is_err(), "not base64 JSON");
    assert!(Claims::decode(&format!("x.{}.y", "bm90IGpzb24")).is_err());
}

fn status(
    authenticated: bool,
    error: &str,
    audiences: &[&str],
    username: &str,
    node: Option<&str>,
) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(authenticated),
        error: (!error.is_empty()).then(|| error.to_owned()),
        audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
        user: Some(UserInfo {
            username: Some(username.to_owned()),
            extra: node.map(|n| [(NODE_NAME_EXTRA.to_owned(), vec![n.to_owned()])].into()),
            ..UserInfo::default()
        }),
    }
}

#[test]
fn token_review_answers_are_read_strictly() {
    let ours = ["cattail".to_owned()];
    let sa = "system:serviceaccount:agents:agent";
    assert_eq!(
        interpret(
            Some(status(true, "", &["cattail"], sa, Some("node-a"))),
            &ours
        ),
        Reviewed::Authenticated(account(Some("node-a")))
    );
    assert_eq!(
        interpret(Some(status(true, "", &["cattail"], sa, None)), &ours),
        Reviewed::Authenticated(account(None))
    );
    let reason = |status: Option<TokenReviewStatus>| match interpret(status, &ours) {
        Reviewed::Rejected { reason, .. } => reason,
        Reviewed::Authenticated(identity) => panic!("authenticated {identity}"),
    };
    assert_eq!(reason(None), "token_invalid");
    assert_eq!(
        reason(Some(status(false, "token has expired", &[], sa, None))),
        "token_invalid"
    );
    assert_eq!(
        reason(Some(status(
            false,
            "token audiences are invalid",
            &[],
            sa,
            None
        ))),
        "token_audience"
    );
    assert_eq!(
        reason(Some(status(true, "", &["other"], sa, None))),
        "token_audience"
    );
    assert_eq!(
        reason(Some(status(true, "", &["cattail"], "admin", None))),
        "token_invalid"
    );
}

fn certificates_only() -> Authenticator {
    Authenticator {
        certificates: Some(allowlist()),
        tokens: None,
        policy: Policy::default(),
    }
}

fn peer(certificate: Option<PeerCertificate>) -> Peer {
    Peer {
        certificate: certificate.map(Arc::new),
        ..Peer::default()
    }
}

#[tokio::test]
async fn certificate_identities_are_admitted_or_refused_with_a_reason() {
    let auth = certificates_only();
    let wanted = request("node-a", &[OWN_PODS, SERVICES]);
    let good = peer(Some(certificate(Some("cattail-agent"), &[], &[])));
    auth.check(&good, &wanted).await.unwrap();
    auth.admit(&good, &wanted).await.unwrap();

    let stranger = peer(Some(certificate(Some("someone"), &[], &[])));
    let failure = auth.check(&stranger, &wanted).await.unwrap_err();
    assert_eq!(failure.reason, "certificate_not_allowed");
    assert!(matches!(&failure.refusal, Refusal::PermissionDenied(m) if m.contains("CN=someone")));
    assert_eq!(
        auth.admit(&stranger, &wanted).await.unwrap_err(),
        failure.refusal
    );

    // Without a certificate, a token is no help when tokens are not configured.
    let mut none = peer(None);
    none.authorization = Some(value("Bearer a.b.c"));
    let failure = auth.check(&none, &wanted).await.unwrap_err();
    assert_eq!(failure.reason, "no_credentials");
    assert!(
        matches!(&failure.refusal, Refusal::Unauthenticated(m) if m.contains("a client certificate"))
    );

    let restricted = Authenticator {
        policy: Policy::new(&[PolicyConfig {
            common_name: Some("cattail-agent".into()),
            resources: Some(vec!["v1/services".parse().unwrap()]),
            ..PolicyConfig::default()
        }]),
        ..certificates_only()
    };
    let failure = restricted.check(&good, &wanted).await.unwrap_err();
    assert_eq!(failure.reason, "permission_denied");
    assert_eq!(
        failure.identity.as_deref(),
        Some("certificate CN=cattail-agent")
    );
}
