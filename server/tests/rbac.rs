//! The kustomize base in `deploy/kustomize/base` against the code and the real API server.
//!
//! Pure checks: the generated ConfigMap's `config.yaml` is the built-in default config, the
//! ClusterRole grants exactly `list` and `watch` on the default profile's resources (and
//! `create` on tokenreviews, for agents' tokens), and the
//! Deployment's arguments parse with the real CLI and agree with its ports, probes and volumes.
//! Against testenv: the Namespace, ServiceAccount, ClusterRole and ClusterRoleBinding are created
//! from the manifests, and the real server, acting as that ServiceAccount, becomes InSync while
//! the account cannot read Secrets; without `watch` in the role it stays WaitingForDatastore
//! until the role is fixed.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod deploy_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cattail_server::args::{Cli, Command};
use cattail_server::config::ServerConfig;
use cattail_server::serve::{ServeOptions, ServerHandle, serve};
use cattail_testenv::TestEnv;
use clap::Parser;
use deploy_support::{
    assert_grants_exactly, base, config_file, kustomization, manifest, resources_of,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);
/// How long a server without `watch` must stay out of sync.
const NOT_READY_FOR: Duration = Duration::from_secs(5);

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = kustomization();
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for file in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "deployment.yaml",
        "service.yaml",
        "poddisruptionbudget.yaml",
    ] {
        assert!(listed.contains(file), "kustomization.yaml misses {file}");
        assert!(base().join(file).is_file(), "{file} is listed but missing");
    }
}

#[test]
fn config_map_holds_the_default_config() {
    let path = config_file();
    let text = std::fs::read_to_string(&path).unwrap();
    let config = ServerConfig::from_yaml_str(&text).unwrap();
    assert_eq!(
        config,
        ServerConfig::default(),
        "{} differs from the built-in default: regenerate it with \
         `cargo run -p cattail-server --bin cattail -- check-config`",
        path.display()
    );
    assert_eq!(ServerConfig::load(&path).unwrap(), config);
}

#[test]
fn cluster_role_grants_list_and_watch_on_the_default_profile_only() {
    let role: ClusterRole = manifest("clusterrole.yaml");
    let needed = resources_of(&ServerConfig::default());
    assert_eq!(
        assert_grants_exactly(&role, &ServerConfig::default(), "clusterrole.yaml"),
        1,
        "clusterrole.yaml grants create on tokenreviews, in one rule of its own"
    );
    let configured = ServerConfig::load(config_file()).unwrap();
    assert_eq!(
        resources_of(&configured),
        needed,
        "config.yaml and clusterrole.yaml disagree"
    );

    let binding: ClusterRoleBinding = manifest("clusterrolebinding.yaml");
    let account: ServiceAccount = manifest("serviceaccount.yaml");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, account.metadata.namespace);
}

#[test]
fn deployment_agrees_with_the_server_flags() {
    let deployment: Deployment = manifest("deployment.yaml");
    let namespace: Namespace = manifest("namespace.yaml");
    let account: ServiceAccount = manifest("serviceaccount.yaml");
    assert_eq!(deployment.metadata.namespace, namespace.metadata.name);
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(pod.service_account_name, account.metadata.name);
    let container = &pod.containers[0];

    // The arguments parse with the real CLI.
    let args = std::iter::once("cattail".to_owned()).chain(container.args.clone().unwrap());
    let Command::Serve(serve_args) = Cli::try_parse_from(args).unwrap().command else {
        panic!("the container must run `cattail serve`");
    };

    // The config file comes from the generated ConfigMap.
    let config = serve_args.config.unwrap();
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| config.starts_with(&m.mount_path))
        .expect("--config is on a mounted volume");
    assert_eq!(config, Path::new(&mount.mount_path).join("config.yaml"));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(volume.config_map.as_ref().unwrap().name, "cattail-config");

    // TLS is on, from the whole Secret cattail-tls (a subPath mount would never see a
    // rotation), with the keys cert-manager and `kubectl create secret tls` write.
    assert!(!serve_args.insecure_plaintext);
    for (flag, key) in [
        (serve_args.tls_cert_file.as_ref(), "tls.crt"),
        (serve_args.tls_key_file.as_ref(), "tls.key"),
    ] {
        let flag = flag.expect("the TLS certificate and key flags are set");
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| flag.parent() == Some(Path::new(&m.mount_path)))
            .unwrap_or_else(|| panic!("{} is not on a mounted volume", flag.display()));
        assert!(mount.sub_path.is_none(), "the TLS Secret is mounted whole");
        assert_eq!(flag.file_name().unwrap(), key);
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap();
        let secret = volume.secret.as_ref().expect("the TLS volume is a Secret");
        assert_eq!(secret.secret_name.as_deref(), Some("cattail-tls"));
    }

    // Ports, probes and the Service.
    let port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no container port {name}"))
            .container_port
    };
    assert_eq!(i32::from(serve_args.listen.port()), port("grpc"));
    assert_eq!(i32::from(serve_args.admin_listen.port()), port("admin"));
    assert_eq!(port("grpc"), 5473);
    assert_eq!(port("admin"), 9101);
    let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/livez")
    );
    let service: Service = manifest("service.yaml");
    let service_spec = service.spec.unwrap();
    for (key, value) in service_spec.selector.unwrap() {
        assert_eq!(labels.get(&key), Some(&value), "Service selector {key}");
    }
    let pdb: PodDisruptionBudget = manifest("poddisruptionbudget.yaml");
    for (key, value) in pdb.spec.unwrap().selector.unwrap().match_labels.unwrap() {
        assert_eq!(labels.get(&key), Some(&value), "PDB selector {key}");
    }

    // The kubelet's SIGKILL comes only after the server's own grace period.
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        u64::try_from(grace).unwrap() > serve_args.shutdown_grace.as_secs(),
        "terminationGracePeriodSeconds {grace} must exceed --shutdown-grace {:?}",
        serve_args.shutdown_grace
    );

    // The replica's name comes from the pod's name.
    let server_id = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "CATTAIL_SERVER_ID")
        .expect("CATTAIL_SERVER_ID is set");
    let field = server_id.value_from.as_ref().unwrap().field_ref.as_ref();
    assert_eq!(field.unwrap().field_path, "metadata.name");

    // Non-root, read-only root filesystem.
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
}

/// Creates the base's Namespace, ServiceAccount, `role` and the ClusterRoleBinding, and returns
/// a client that acts as the ServiceAccount.
async fn install(env: &TestEnv, role: &ClusterRole) -> kube::Client {
    let admin = env.client();
    let post = PostParams::default();
    let namespace: Namespace = manifest("namespace.yaml");
    Api::<Namespace>::all(admin.clone())
        .create(&post, &namespace)
        .await
        .unwrap();
    let account: ServiceAccount = manifest("serviceaccount.yaml");
    let ns = account.metadata.namespace.clone().unwrap();
    let name = account.metadata.name.clone().unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&post, &account)
        .await
        .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&post, role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = manifest("clusterrolebinding.yaml");
    Api::<ClusterRoleBinding>::all(admin)
        .create(&post, &binding)
        .await
        .unwrap();
    env.service_account_client(&ns, &name).await.unwrap()
}

/// A server running in-process as some client, with its admin endpoint.
struct RunningServer {
    handle: ServerHandle,
    admin: SocketAddr,
    token: CancellationToken,
    task: JoinHandle<cattail_server::serve::Result<()>>,
}

impl RunningServer {
    /// Starts the real server with the base's config file, acting as `client`.
    async fn start(client: kube::Client) -> RunningServer {
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let options = ServeOptions {
            config: ServerConfig::load(config_file()).unwrap(),
            ..ServeOptions::default()
        };
        let token = CancellationToken::new();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(
            options,
            client,
            grpc,
            Some(admin),
            cattail_server::admin::metrics_handle(),
            token.clone(),
            Some(ready_tx),
        ));
        let handle = ready_rx.await.unwrap();
        RunningServer {
            handle,
            admin: admin_addr,
            token,
            task,
        }
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the server stops within the deadline")
            .unwrap()
            .unwrap();
    }
}

/// `GET /readyz` on the admin endpoint: status code and body.
async fn readyz(admin: SocketAddr) -> (u16, String) {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: cattail\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Polls `condition` until it holds, failing after [`WAIT`].
async fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that `result` is the API server's 403 Forbidden.
fn assert_forbidden<T: std::fmt::Debug>(result: kube::Result<T>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test]
async fn the_cluster_role_is_enough_to_get_in_sync_and_no_more() {
    let env = TestEnv::start().await.unwrap();
    let role: ClusterRole = manifest("clusterrole.yaml");
    let agent = install(&env, &role).await;

    // The token works: the account may list what the role grants...
    Api::<Pod>::all(agent.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    // ...and nothing else: no Secrets, no `get`, no writes.
    assert_forbidden(
        Api::<Secret>::all(agent.clone())
            .list(&ListParams::default())
            .await,
        "listing secrets in all namespaces",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(agent.clone(), "cattail-system")
            .list(&ListParams::default())
            .await,
        "listing secrets in cattail-system",
    );
    assert_forbidden(
        Api::<Namespace>::all(agent.clone()).get("default").await,
        "getting a namespace",
    );
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
    assert_forbidden(
        Api::<Namespace>::all(agent.clone())
            .create(&PostParams::default(), &namespace)
            .await,
        "creating a namespace",
    );

    // The real server, acting as the account, lists and watches every resource of the config.
    let server = RunningServer::start(agent).await;
    wait_for(|| server.handle.sync.get(), "the server to be in sync").await;
    assert_eq!(readyz(server.admin).await, (200, "InSync".to_owned()));
    assert!(!server.task.is_finished());
    server.stop().await;
}

#[tokio::test]
async fn without_watch_the_server_stays_waiting_for_datastore() {
    let env = TestEnv::start().await.unwrap();
    let full: ClusterRole = manifest("clusterrole.yaml");
    let mut role = full.clone();
    for rule in role.rules.iter_mut().flatten() {
        rule.verbs.retain(|verb| verb != "watch");
    }
    let agent = install(&env, &role).await;
    let server = RunningServer::start(agent).await;

    // Streaming lists (the default) are watches: every one is refused with 403, so no
    // resource completes its first list and the replica never turns ready.
    let deadline = tokio::time::Instant::now() + NOT_READY_FOR;
    while tokio::time::Instant::now() < deadline {
        assert!(
            !server.handle.sync.get(),
            "in sync although the role lacks watch"
        );
        assert!(!server.task.is_finished(), "a 403 must not stop the server");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        readyz(server.admin).await,
        (503, "WaitingForDatastore".to_owned())
    );

    // Fixing the role is enough: the watches retry with backoff and the replica turns ready
    // without a restart.
    let name = full.metadata.name.clone().unwrap();
    let fix = serde_json::json!({"rules": full.rules});
    Api::<ClusterRole>::all(env.client())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    wait_for(|| server.handle.sync.get(), "the server to be in sync").await;
    assert_eq!(readyz(server.admin).await, (200, "InSync".to_owned()));
    server.stop().await;
}
