//! The pieces of the auth tests: the control plane's objects, tokens, a server, metrics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fanout_support::{TestAgent, hello};
use cattail_proto::pb::Hello;
use cattail_server::config::{
    AuthConfig, FieldPath, ResourceConfig, ServerConfig, TokenAuthConfig,
};
use cattail_server::grpc::Transport;
use cattail_server::serve::{ServeOptions, serve};
use cattail_testenv::TestEnv;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

pub(crate) const WAIT: Duration = Duration::from_secs(90);
/// The namespace of the agents' ServiceAccounts and Pods.
pub(crate) const NS: &str = "agents";
/// The ServiceAccount on the allowlist.
pub(crate) const AGENT: &str = "agent";
/// A ServiceAccount on the allowlist that the test deletes.
pub(crate) const DOOMED: &str = "doomed";
/// A ServiceAccount not on the allowlist.
pub(crate) const STRANGER: &str = "stranger";

pub(crate) fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/base")
}

pub(crate) fn manifest<T: DeserializeOwned>(file: &str) -> T {
    let path = base().join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

pub(crate) fn object<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// The server's config: pods scoped by node, namespaces, and ServiceAccount tokens.
pub(crate) fn server_config() -> ServerConfig {
    let pods = ResourceConfig::new("v1/pods".parse().unwrap())
        .with_field(FieldPath::parse("spec.nodeName").unwrap())
        .with_scope(FieldPath::parse("spec.nodeName").unwrap());
    let namespaces = ResourceConfig::new("v1/namespaces".parse().unwrap());
    let config = ServerConfig {
        resources: vec![pods, namespaces],
        auth: AuthConfig {
            tokens: Some(TokenAuthConfig {
                service_accounts: vec![format!("{NS}/{AGENT}"), format!("{NS}/{DOOMED}")],
                ..TokenAuthConfig::default()
            }),
            ..AuthConfig::default()
        },
        ..ServerConfig::default()
    };
    config.validate().unwrap();
    config
}

/// Installs deploy/'s Namespace, ServiceAccount and ClusterRoleBinding with `role` (deploy/'s
/// ClusterRole, possibly changed and renamed) for the ServiceAccount `account`, and returns a
/// client acting as it.
pub(crate) async fn install(env: &TestEnv, role: ClusterRole, account: &str) -> kube::Client {
    let admin = env.client();
    let post = PostParams::default();
    let namespace: Namespace = manifest("namespace.yaml");
    let ns = namespace.metadata.name.clone().unwrap();
    let _ = Api::<Namespace>::all(admin.clone())
        .create(&post, &namespace)
        .await;
    let mut sa: ServiceAccount = manifest("serviceaccount.yaml");
    sa.metadata.name = Some(account.to_owned());
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&post, &sa)
        .await
        .unwrap();
    let role_name = role.metadata.name.clone().unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&post, &role)
        .await
        .unwrap();
    let mut binding: ClusterRoleBinding = manifest("clusterrolebinding.yaml");
    binding.metadata.name = Some(role_name.clone());
    binding.role_ref.name = role_name;
    for subject in binding.subjects.iter_mut().flatten() {
        subject.name = account.to_owned();
    }
    Api::<ClusterRoleBinding>::all(admin)
        .create(&post, &binding)
        .await
        .unwrap();
    env.service_account_client(&ns, account).await.unwrap()
}

/// A cattail server in-process.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) token: CancellationToken,
}

impl Server {
    pub(crate) async fn start(client: kube::Client, transport: Transport) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut options = ServeOptions {
            config: server_config(),
            ..ServeOptions::default()
        };
        options.grpc.transport = transport;
        let token = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(
            options,
            client,
            listener,
            None,
            cattail_server::admin::metrics_handle(),
            token.clone(),
            Some(ready_tx),
        ));
        let handle = ready_rx.await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !handle.sync.get() {
            assert!(tokio::time::Instant::now() < deadline, "server not in sync");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { addr, token }
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// An agent with `hello`, sending `Bearer <token>` if given.
    pub(crate) async fn connect(&self, hello: Hello, token: Option<&str>) -> TestAgent {
        let header = token.map(|t| format!("Bearer {t}"));
        self.connect_raw(hello, header.as_deref().map(str::as_bytes))
            .await
    }

    pub(crate) async fn connect_raw(
        &self,
        hello: Hello,
        authorization: Option<&[u8]>,
    ) -> TestAgent {
        TestAgent::connect_as(self.channel().await, hello, authorization)
            .await
            .unwrap()
    }
}

/// The value of `cattail_<name>{<label>="<value>"}` in the process's metrics; 0 if absent.
pub(crate) fn metric(name: &str, label: &str, value: &str) -> u64 {
    let text = cattail_server::admin::metrics_handle().render();
    let prefix = format!("{name}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

pub(crate) fn failures(reason: &str) -> u64 {
    metric("cattail_auth_failures_total", "reason", reason)
}

pub(crate) fn reviews(result: &str) -> u64 {
    metric("cattail_token_reviews_total", "result", result)
}

/// TokenReviews sent so far, whatever their answer.
pub(crate) fn reviews_sent() -> u64 {
    reviews("authenticated") + reviews("rejected") + reviews("error")
}

/// The stream's status: it must end with `code`, and its message must hold every `words`.
pub(crate) async fn refused(agent: &mut TestAgent, code: Code, words: &[&str]) -> String {
    // The first thing the agent gets must be the refusal: never a Welcome, never data.
    let status = match agent.next().await {
        Err(status) => status,
        Ok(message) => panic!(
            "expected {code:?}, but the server sent a message (a Welcome: {:?})",
            message.map(|m| m.welcome.is_some())
        ),
    };
    assert_eq!(status.code(), code, "{status:?}");
    for word in words {
        assert!(status.message().contains(word), "{word:?} in {status:?}");
    }
    assert!(
        agent.welcome.is_none(),
        "nothing was sent before the refusal"
    );
    status.message().to_owned()
}

/// A TokenRequest for `account`, for `audience`, bound to `pod` when given.
pub(crate) async fn token(
    env: &TestEnv,
    account: &str,
    audience: &str,
    pod: Option<&Pod>,
) -> String {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(3600),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(env.client(), NS)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap();
    issued.status.unwrap().token.unwrap()
}

/// Creates `name` on `node`, running as `account`.
pub(crate) async fn pod(env: &TestEnv, name: &str, node: &str, account: &str) -> Pod {
    let pod: Pod = object(serde_json::json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": node,
            "serviceAccountName": account,
            "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}],
        },
    }));
    Api::<Pod>::namespaced(env.client(), NS)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

pub(crate) async fn delete_pod(env: &TestEnv, name: &str) {
    // No kubelet runs: without a zero grace period the pod would wait for one forever.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    Api::<Pod>::namespaced(env.client(), NS)
        .delete(name, &now)
        .await
        .unwrap();
}

/// Nodes, the agents' namespace and ServiceAccounts.
pub(crate) async fn seed(env: &TestEnv) {
    let post = PostParams::default();
    for node in ["node-a", "node-b"] {
        let node: Node = object(serde_json::json!({"metadata": {"name": node}}));
        Api::<Node>::all(env.client())
            .create(&post, &node)
            .await
            .unwrap();
    }
    let namespace: Namespace = object(serde_json::json!({"metadata": {"name": NS}}));
    Api::<Namespace>::all(env.client())
        .create(&post, &namespace)
        .await
        .unwrap();
    for account in [AGENT, DOOMED, STRANGER] {
        let sa: ServiceAccount = object(serde_json::json!({"metadata": {"name": account}}));
        Api::<ServiceAccount>::namespaced(env.client(), NS)
            .create(&post, &sa)
            .await
            .unwrap();
    }
}

/// The Hello of an agent on `node`: its node's pods (node-scoped) and every namespace.
pub(crate) fn node_hello(node: &str) -> Hello {
    hello(node, &[("v1/pods", true), ("v1/namespaces", false)])
}

pub(crate) fn has_pod(agent: &TestAgent, name: &str) -> bool {
    agent
        .state
        .contains_key(&("v1/pods".to_owned(), NS.to_owned(), name.to_owned()))
}

/// Reads until `agent` holds the pod `name`.
pub(crate) async fn until_pod(agent: &mut TestAgent, name: &str) {
    if !has_pod(agent, name) {
        agent.until(|a, _| has_pod(a, name)).await;
    }
}

/// A token for `account` signed with testenv's service-account key, as the API server signs
/// them, expiring at `expires` (seconds since the epoch): TokenRequest cannot issue an expired
/// one.
pub(crate) fn signed_token(env: &TestEnv, account: &ServiceAccount, expires: u64) -> String {
    let pem = std::fs::read(env.dir().join("pki/sa.key")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let name = account.metadata.name.clone().unwrap();
    let claims = serde_json::json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{NS}:{name}"),
        "aud": ["cattail"],
        "exp": expires,
        "iat": expires - 3600,
        "nbf": expires - 3600,
        "kubernetes.io": {
            "namespace": NS,
            "serviceaccount": {"name": name, "uid": account.metadata.uid},
        },
    });
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
