//! Agent authentication and per-node authorization against the real API server from testenv.
//!
//! One control plane serves every case (a start costs 10-20 s on a busy machine), so the cases
//! run in order inside one test, each an `async fn` named after what it shows; a failure names
//! its case. Tokens are real: TokenRequest bound to real Pod objects with `spec.nodeName` (the
//! API server puts the node into TokenReview's `extra`), and for an expired token, which
//! TokenRequest cannot issue, a token signed with testenv's own service-account key. cattail
//! runs in-process as deploy/'s ServiceAccount with deploy/'s ClusterRole, on both transports.
//! Agents talk plaintext here and send the `authorization` metadata themselves: TLS is another
//! layer's job.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod fanout_support;
#[path = "auth/support.rs"]
mod support;

use cattail_server::grpc::Transport;
use cattail_testenv::TestEnv;
use fanout_support::{TestAgent, hello};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams};
use tonic::Code;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_against_the_real_api_server() {
    let env = TestEnv::start().await.unwrap();
    seed(&env).await;
    let role: ClusterRole = manifest("clusterrole.yaml");
    let client = install(&env, role.clone(), "cattail").await;
    let native = Server::start(client.clone(), Transport::Native).await;
    let tonic = Server::start(client, Transport::Tonic).await;
    let agent_a = pod(&env, "agent-a", "node-a", AGENT).await;
    pod(&env, "agent-b", "node-b", AGENT).await;
    let token_a = token(&env, AGENT, "cattail", Some(&agent_a)).await;

    let mut admitted = Vec::new();
    for server in [&native, &tonic] {
        admitted.push(a_pod_bound_token_sees_its_own_node(server, &token_a).await);
        another_node_or_every_node_is_permission_denied(server, &token_a).await;
        no_credentials_are_unauthenticated(server).await;
    }
    let server = &native;
    garbage_authorization_is_unauthenticated(server).await;
    a_token_for_another_audience_is_unauthenticated(&env, server, &agent_a).await;
    a_token_bound_to_no_node_sees_no_node_scoped_objects(&env, server).await;
    tokens_of_a_deleted_service_account_or_pod_are_unauthenticated(&env, server).await;
    an_expired_token_is_unauthenticated(&env, server).await;
    a_service_account_off_the_allowlist_is_permission_denied(&env, server).await;
    concurrent_agents_with_one_token_cost_one_token_review(&env, server).await;
    api_server_failures_are_unavailable_and_never_cached(&env, role, &token_a).await;
    bad_agents_leave_the_server_and_good_agents_alone(&env, server, &token_a, admitted).await;
    native.token.cancel();
    tonic.token.cancel();
}

/// A token bound to a Pod on node-a, asking for node-a's pods: admitted, and synced.
async fn a_pod_bound_token_sees_its_own_node(server: &Server, token: &str) -> TestAgent {
    let mut agent = server.connect(node_hello("node-a"), Some(token)).await;
    agent.synced().await;
    assert!(has_pod(&agent, "agent-a"), "node-a's pod is synced");
    assert!(!has_pod(&agent, "agent-b"), "node-b's pod is not");
    agent
}

/// The same token asking for node-b's pods, or for every node's: PERMISSION_DENIED naming it.
async fn another_node_or_every_node_is_permission_denied(server: &Server, token: &str) {
    let before = failures("permission_denied");
    let mut agent = server.connect(node_hello("node-b"), Some(token)).await;
    let words = [
        "v1/pods of node node-b",
        "ServiceAccount agents/agent on node node-a",
    ];
    refused(&mut agent, Code::PermissionDenied, &words).await;
    let unscoped = hello("node-a", &[("v1/namespaces", false), ("v1/pods", false)]);
    let mut agent = server.connect(unscoped, Some(token)).await;
    let message = refused(
        &mut agent,
        Code::PermissionDenied,
        &["v1/pods of every node"],
    )
    .await;
    assert!(!message.contains("v1/namespaces"), "{message}");
    assert_eq!(failures("permission_denied"), before + 2);
}

/// No `authorization` at all: UNAUTHENTICATED.
async fn no_credentials_are_unauthenticated(server: &Server) {
    let before = failures("no_credentials");
    let mut agent = server.connect(node_hello("node-a"), None).await;
    refused(
        &mut agent,
        Code::Unauthenticated,
        &["no credentials", "Bearer"],
    )
    .await;
    assert_eq!(failures("no_credentials"), before + 1);
}

/// Values that are not a bearer JWT: UNAUTHENTICATED, and no TokenReview is spent on them.
async fn garbage_authorization_is_unauthenticated(server: &Server) {
    let (before, sent) = (failures("malformed_authorization"), reviews_sent());
    let long = format!("Bearer {}", "a".repeat(9 * 1024));
    let values: [&[u8]; 6] = [
        b"Bearer not-a-jwt",
        b"Basic dXNlcjpwYXNz",
        b"Bearer a.b.c",
        b"Bearer",
        b"Bearer \xff\xfe.\xfd.\xfc",
        long.as_bytes(),
    ];
    for value in values {
        let mut agent = server.connect_raw(node_hello("node-a"), Some(value)).await;
        refused(&mut agent, Code::Unauthenticated, &["authorization"]).await;
    }
    assert_eq!(failures("malformed_authorization"), before + 6);
    assert_eq!(reviews_sent(), sent, "garbage never reaches the API server");
}

/// Tokens for another audience, the API server's own among them: UNAUTHENTICATED.
async fn a_token_for_another_audience_is_unauthenticated(
    env: &TestEnv,
    server: &Server,
    pod: &Pod,
) {
    let before = failures("token_audience");
    for audience in [
        "someone-else",
        "https://kubernetes.default.svc.cluster.local",
    ] {
        let token = token(env, AGENT, audience, Some(pod)).await;
        let mut agent = server.connect(node_hello("node-a"), Some(&token)).await;
        refused(&mut agent, Code::Unauthenticated, &["audience"]).await;
    }
    assert_eq!(failures("token_audience"), before + 2);
}

/// A token bound to no Pod names no node: node-scoped resources are refused, the rest served.
async fn a_token_bound_to_no_node_sees_no_node_scoped_objects(env: &TestEnv, server: &Server) {
    let token = token(env, AGENT, "cattail", None).await;
    let mut agent = server.connect(node_hello("node-a"), Some(&token)).await;
    let words = ["v1/pods of node node-a", "not bound to a Pod"];
    refused(&mut agent, Code::PermissionDenied, &words).await;
    let namespaces = hello("node-a", &[("v1/namespaces", false)]);
    let mut agent = server.connect(namespaces, Some(&token)).await;
    agent.synced().await;
    let key = ("v1/namespaces".to_owned(), String::new(), NS.to_owned());
    assert!(agent.state.contains_key(&key), "namespaces are served");
}

/// Fresh tokens (never reviewed, so cached nowhere) whose ServiceAccount or Pod is deleted
/// before they are used: UNAUTHENTICATED.
async fn tokens_of_a_deleted_service_account_or_pod_are_unauthenticated(
    env: &TestEnv,
    server: &Server,
) {
    let before = failures("token_invalid");
    let doomed_pod = pod(env, "doomed-a", "node-a", DOOMED).await;
    let doomed = token(env, DOOMED, "cattail", Some(&doomed_pod)).await;
    Api::<ServiceAccount>::namespaced(env.client(), NS)
        .delete(DOOMED, &DeleteParams::default())
        .await
        .unwrap();
    let mut agent = server.connect(node_hello("node-a"), Some(&doomed)).await;
    refused(
        &mut agent,
        Code::Unauthenticated,
        &["fresh projected token"],
    )
    .await;

    let gone_pod = pod(env, "gone-a", "node-a", AGENT).await;
    let gone = token(env, AGENT, "cattail", Some(&gone_pod)).await;
    delete_pod(env, "gone-a").await;
    let mut agent = server.connect(node_hello("node-a"), Some(&gone)).await;
    refused(
        &mut agent,
        Code::Unauthenticated,
        &["fresh projected token"],
    )
    .await;
    assert_eq!(failures("token_invalid"), before + 2);
}

/// A token signed with the cluster's key that has expired: UNAUTHENTICATED. The same token
/// with a later expiry is admitted, so the expiry is what counts.
async fn an_expired_token_is_unauthenticated(env: &TestEnv, server: &Server) {
    let account = Api::<ServiceAccount>::namespaced(env.client(), NS)
        .get(AGENT)
        .await
        .unwrap();
    let namespaces = hello("node-a", &[("v1/namespaces", false)]);
    let valid = signed_token(env, &account, now() + 600);
    let mut agent = server.connect(namespaces.clone(), Some(&valid)).await;
    agent.synced().await;

    let before = failures("token_invalid");
    let expired = signed_token(env, &account, now() - 3600);
    let mut agent = server.connect(namespaces, Some(&expired)).await;
    refused(
        &mut agent,
        Code::Unauthenticated,
        &["fresh projected token"],
    )
    .await;
    assert_eq!(failures("token_invalid"), before + 1);
}

/// A valid token of a ServiceAccount not on the allowlist: PERMISSION_DENIED.
async fn a_service_account_off_the_allowlist_is_permission_denied(env: &TestEnv, server: &Server) {
    let before = failures("service_account_not_allowed");
    let stranger_pod = pod(env, "stranger-a", "node-a", STRANGER).await;
    let token = token(env, STRANGER, "cattail", Some(&stranger_pod)).await;
    let mut agent = server.connect(node_hello("node-a"), Some(&token)).await;
    let words = [
        "agents/stranger is not allowed",
        "auth.tokens.service_accounts",
    ];
    refused(&mut agent, Code::PermissionDenied, &words).await;
    assert_eq!(failures("service_account_not_allowed"), before + 1);
}

/// Eight agents at once with one fresh token: one TokenReview, the others share or reuse it.
async fn concurrent_agents_with_one_token_cost_one_token_review(env: &TestEnv, server: &Server) {
    const AGENTS: u64 = 8;
    let crowd_pod = pod(env, "crowd-a", "node-a", AGENT).await;
    let token = token(env, AGENT, "cattail", Some(&crowd_pod)).await;
    let sent = reviews_sent();
    let reused = reviews("cached") + reviews("shared");
    let agents = join_all((0..AGENTS).map(|_| async {
        let mut agent = server.connect(node_hello("node-a"), Some(&token)).await;
        agent.synced().await;
        // The server may see the new pod after the agent's first Synced.
        until_pod(&mut agent, "crowd-a").await;
        agent
    }))
    .await;
    assert_eq!(agents.len() as u64, AGENTS);
    assert_eq!(
        reviews_sent(),
        sent + 1,
        "one TokenReview for {AGENTS} agents"
    );
    assert_eq!(reviews("cached") + reviews("shared"), reused + AGENTS - 1);
}

/// A server whose ServiceAccount may not create TokenReviews: its agents get UNAVAILABLE (retry
/// later), not UNAUTHENTICATED, and the failure is not cached: every try asks again.
async fn api_server_failures_are_unavailable_and_never_cached(
    env: &TestEnv,
    mut role: ClusterRole,
    token: &str,
) {
    role.metadata.name = Some("cattail-no-token-reviews".into());
    let rules = role.rules.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|rule| !rule.resources.iter().flatten().any(|r| r == "tokenreviews"));
    assert_eq!(
        rules.len(),
        before - 1,
        "deploy/'s role grants tokenreviews in one rule"
    );
    let client = install(env, role, "cattail-no-token-reviews").await;
    let server = Server::start(client, Transport::Native).await;
    let (failed, errors) = (failures("token_review_error"), reviews("error"));
    for _ in 0..2 {
        let mut agent = server.connect(node_hello("node-a"), Some(token)).await;
        refused(&mut agent, Code::Unavailable, &["retry"]).await;
    }
    assert_eq!(failures("token_review_error"), failed + 2);
    assert_eq!(
        reviews("error"),
        errors + 2,
        "a failed review is never reused"
    );
    server.token.cancel();
}

/// Twenty bad agents at once are all refused, while the admitted agents keep following the
/// cluster and a new good agent still gets in.
async fn bad_agents_leave_the_server_and_good_agents_alone(
    env: &TestEnv,
    server: &Server,
    token: &str,
    mut admitted: Vec<TestAgent>,
) {
    let bad = join_all((0..20).map(|i| async move {
        let (hello, authorization) = match i % 3 {
            0 => (node_hello("node-a"), None),
            1 => (node_hello("node-a"), Some("Bearer garbage".to_owned())),
            _ => (node_hello("node-b"), Some(format!("Bearer {token}"))),
        };
        let mut agent = server
            .connect_raw(hello, authorization.as_deref().map(str::as_bytes))
            .await;
        agent.next().await.map(|_| "admitted").unwrap_err().code()
    }))
    .await;
    assert!(
        bad.iter()
            .all(|c| matches!(c, Code::Unauthenticated | Code::PermissionDenied)),
        "{bad:?}"
    );
    pod(env, "late-a", "node-a", AGENT).await;
    for agent in &mut admitted {
        until_pod(agent, "late-a").await;
    }
    let mut agent = server.connect(node_hello("node-a"), Some(token)).await;
    agent.synced().await;
    until_pod(&mut agent, "late-a").await;
}
