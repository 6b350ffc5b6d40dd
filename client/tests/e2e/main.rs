//! End to end against the real API server from testenv: the real cattail server (in-process)
//! watching it, and agents built on cattail-client (in-process and the `cattail-agent` binary).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use cattail_client::Subscription;
use cattail_client::reflector::{self, EventStreamExt};
use cattail_testenv::{ControlPlane, Options, TestEnv, ensure_binary};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::{Agent, Server, State, WAIT, converge, counter, expected_state, wait_for};

async fn create<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap();
}

fn pod(name: &str, node: &str, app: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 8080}]}]}
    })
}

/// Creates a pod and reports it running with `ip`, as a kubelet would: the server's default
/// profile leaves out pods that have no IP yet.
async fn run_pod(pods: &Api<Pod>, name: &str, node: &str, app: &str, ip: &str) {
    create(pods, pod(name, node, app)).await;
    let running = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    status(pods, name, running).await;
}

async fn status(pods: &Api<Pod>, name: &str, value: Value) {
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&value))
        .await
        .unwrap();
}

fn widgets(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Namespaces a and b, a CRD with objects, pods on two nodes with kubelet-style status,
/// and a network policy.
async fn seed(client: &kube::Client) {
    let client = client.clone();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["a", "b"] {
        create(
            &namespaces,
            json!({"metadata": {"name": ns, "labels": {"team": ns}}}),
        )
        .await;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    create(
        &crds,
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}
        }),
    )
    .await;
    let established = kube::runtime::wait::conditions::is_crd_established();
    tokio::time::timeout(
        WAIT,
        kube::runtime::wait::await_condition(crds, "widgets.example.com", established),
    )
    .await
    .unwrap()
    .unwrap();
    for (name, size) in [("w1", 1), ("w2", 2)] {
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": size}});
        create(&widgets(&client, "a"), widget).await;
    }
    for ns in ["a", "b"] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for (i, node) in ["node-1", "node-2"].iter().enumerate() {
            let ip = format!("10.0.{}.{}", ns.len(), i + 1);
            run_pod(&pods, &format!("p{i}"), node, "web", &ip).await;
        }
    }
    let policies: Api<NetworkPolicy> = Api::namespaced(client, "a");
    create(&policies, json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})).await;
}

/// One test's world: the metrics lock, a seeded control plane, and a server in sync with it.
async fn seeded() -> (tokio::sync::MutexGuard<'static, ()>, TestEnv, Server) {
    let serial = support::SERIAL.lock().await;
    let env = TestEnv::start().await.unwrap();
    seed(&env.client()).await;
    let server = Server::start(env.client(), "127.0.0.1:0".parse().unwrap()).await;
    (serial, env, server)
}

/// `cattail-agent dump`'s output, as a state.
fn dump(endpoint: &str) -> State {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cattail-agent"));
    cmd.args(["dump", "--server", endpoint, "--timeout", "60s"]);
    for resource in support::config().resources {
        cmd.args(["--resource", resource.resource.as_str()]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut state = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["resource"].as_str().unwrap().to_owned(),
            v["namespace"].as_str().unwrap().to_owned(),
            v["name"].as_str().unwrap().to_owned(),
        );
        state.insert(key, v["value"].clone());
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_hold_exactly_the_projected_cluster() {
    let (_serial, env, server) = seeded().await;
    let endpoints = vec![server.endpoint()];
    let agents: Vec<Agent> = (0..3)
        .map(|i| Agent::start(&endpoints, &format!("agent-{i}")))
        .collect();
    converge(&env.client(), &agents).await;
    let want = expected_state(&env.client()).await;
    assert!(want.len() > 10, "the seed should be visible: {want:?}");
    assert_eq!(
        dump(&server.endpoint()),
        want,
        "cattail-agent dump differs from the API server"
    );

    // Creates, updates and deletes of pods, namespaces, network policies and CRD objects.
    let client = env.client();
    let pods_a: Api<Pod> = Api::namespaced(client.clone(), "a");
    pods_a
        .patch(
            "p0",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "db"}}})),
        )
        .await
        .unwrap();
    pods_a
        .delete("p1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    run_pod(&pods_a, "p9", "node-3", "new", "10.9.0.9").await;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "a");
    policies
        .patch(
            "deny",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"policyTypes": ["Ingress", "Egress"]}})),
        )
        .await
        .unwrap();
    create(&policies, json!({"metadata": {"name": "allow"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}}})).await;
    widgets(&env.client(), "a")
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    widgets(&env.client(), "a")
        .patch(
            "w2",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"size": 20}})),
        )
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": "c"}})).await;
    // Deleting b takes its objects with it (kube-controller-manager's namespace controller).
    // No kubelet confirms pod deletions here, so its pods are force-deleted first, as a
    // kubelet would finish them.
    let pods_b: Api<Pod> = Api::namespaced(client.clone(), "b");
    for name in ["p0", "p1"] {
        pods_b
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    namespaces
        .delete("b", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_gone(&namespaces, "b").await;

    converge(&env.client(), &agents).await;
    let after = expected_state(&env.client()).await;
    assert!(
        !after.keys().any(|(r, ns, _)| r == "v1/pods" && ns == "b"),
        "b's pods are gone"
    );
    assert_eq!(dump(&server.endpoint()), after);
    server.stop().await;
}

async fn wait_for_gone(namespaces: &Api<Namespace>, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while namespaces.get_opt(name).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace {name} was never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_only_changes_reach_no_agent() {
    let (_serial, env, server) = seeded().await;
    let agent = Agent::start(&[server.endpoint()], "agent-0");
    converge(&env.client(), std::slice::from_ref(&agent)).await;

    let before_events = agent.event_count();
    let dropped = || {
        counter("cattail_updates_deduplicated_total") + counter("cattail_updates_collapsed_total")
    };
    let before_dedup = dropped();
    let pods: Api<Pod> = Api::namespaced(env.client(), "a");
    // Readiness flaps and restarts: status fields the projection does not keep.
    for ready in ["True", "False", "True"] {
        status(&pods, "p0", json!({"status": {"conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": ready == "True",
                "restartCount": 3, "state": {"running": {}}}]}})).await;
    }
    // A projected change afterwards, as a barrier: once it arrives, the others would have too.
    pods.patch(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"barrier": "1"}}})),
    )
    .await
    .unwrap();
    wait_for(|| agent.event_count() > before_events, "the barrier change").await;
    let events = agent.events_since(before_events);
    assert_eq!(
        events,
        vec![("apply".to_owned(), "v1/pods a/p1".to_owned())],
        "only the barrier arrives"
    );
    let after_dedup = dropped();
    assert!(
        after_dedup >= before_dedup + 3.0,
        "deduplicated {before_dedup} -> {after_dedup}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_410_sends_only_real_changes() {
    let (_serial, env, server) = seeded().await;
    let agent = Agent::start(&[server.endpoint()], "agent-0");
    converge(&env.client(), std::slice::from_ref(&agent)).await;

    let relists = counter("cattail_relists_total");
    let before_events = agent.event_count();
    env.compact().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), "a");
    run_pod(&pods, "meanwhile", "node-1", "web", "10.9.0.1").await;
    // Every resource's watch relists after the compaction (one Init each).
    let resources = support::config().resources.len() as f64;
    wait_for(
        || counter("cattail_relists_total") >= relists + resources,
        "every watch to relist",
    )
    .await;
    converge(&env.client(), std::slice::from_ref(&agent)).await;
    let events = agent.events_since(before_events);
    assert_eq!(
        events,
        vec![("apply".to_owned(), "v1/pods a/meanwhile".to_owned())]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_resync_to_the_exact_state_after_a_server_restart() {
    let (_serial, env, server) = seeded().await;
    let addr = server.addr;
    let agents: Vec<Agent> = (0..2)
        .map(|i| Agent::start(&[server.endpoint()], &format!("agent-{i}")))
        .collect();
    converge(&env.client(), &agents).await;
    server.stop().await;

    // While the server is down, the cluster changes.
    let pods: Api<Pod> = Api::namespaced(env.client(), "a");
    pods.delete("p0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    run_pod(&pods, "while-down", "node-2", "web", "10.9.0.2").await;
    let before: Vec<usize> = agents.iter().map(Agent::event_count).collect();

    let server = Server::start(env.client(), addr).await;
    converge(&env.client(), &agents).await;
    // The resync was diffed: each agent saw exactly the two real changes.
    for (agent, before) in agents.iter().zip(before) {
        let mut events = agent.events_since(before);
        events.sort();
        assert_eq!(
            events,
            vec![
                ("apply".to_owned(), "v1/pods a/while-down".to_owned()),
                ("delete".to_owned(), "v1/pods a/p0".to_owned())
            ]
        );
    }
    server.stop().await;
}

/// A free port on 127.0.0.1 (free until someone else takes it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_plane(dir: std::path::PathBuf, options: Options) -> ControlPlane {
    tokio::task::spawn_blocking(move || {
        let binary = ensure_binary().unwrap().binary;
        ControlPlane::spawn(&binary, &dir, &options).unwrap()
    })
    .await
    .unwrap()
}

async fn admin_client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_state_is_served_while_the_api_server_is_away() {
    let _serial = support::SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // Fixed ports and the same data dir, so the control plane can come back as it was.
    let options = Options {
        apiserver_port: free_port(),
        etcd_port: free_port(),
        control_port: free_port(),
        ..Options::default()
    };
    let mut plane = spawn_plane(dir.path().to_owned(), options.clone()).await;
    let client = admin_client(&plane.info().kubeconfig).await;
    seed(&client).await;
    let server = Server::start(client.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let agent = Agent::start(&[server.endpoint()], "agent-0");
    converge(&client, std::slice::from_ref(&agent)).await;
    let before = agent.snapshot();

    // The API server goes away: the server stays ready and keeps serving what it had,
    // to connected agents and to new ones.
    tokio::task::spawn_blocking(move || {
        plane.stop(std::time::Duration::from_secs(30));
    })
    .await
    .unwrap();
    let events = agent.event_count();
    let resources = support::config().resources.len() as f64;
    wait_for(
        || counter("cattail_watch_connected") < resources,
        "the watches to notice the API server is gone",
    )
    .await;
    assert!(server.sync.get(), "still ready without the API server");
    assert_eq!(
        dump(&server.endpoint()),
        before,
        "a new agent gets the last state"
    );
    assert_eq!(agent.event_count(), events);
    assert!(server.sync.get());

    // It comes back; the server's watches resume (a relist, diffed) and new changes flow.
    let _plane = spawn_plane(dir.path().to_owned(), options).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "a");
    run_pod(&pods, "after-restart", "node-1", "web", "10.9.0.3").await;
    converge(&client, std::slice::from_ref(&agent)).await;
    wait_for(
        || counter("cattail_watch_connected") == resources,
        "every watch to reconnect",
    )
    .await;
    assert_eq!(
        agent.events_since(events),
        vec![("apply".to_owned(), "v1/pods a/after-restart".to_owned())]
    );
    server.stop().await;
}

/// Typed watcher and reflector store, the same code in both modes: through the cattail
/// server, and directly against the API server (clusters without a cattail server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_fanned_out_modes_give_the_same_node_scoped_store() {
    let (_serial, env, server) = seeded().await;
    let fanned_out = cattail_client::Client::new([server.endpoint()]).node_name("node-1");
    let direct = cattail_client::Client::direct(env.client()).node_name("node-1");
    let mut stores = Vec::new();
    for client in [fanned_out, direct] {
        let (store, writer) = reflector::store::<Pod>();
        let events = cattail_client::watcher::<Pod>(client, Subscription::default().node_scoped())
            .reflect(writer)
            .applied_objects();
        tokio::spawn(events.for_each(|_| async {}));
        tokio::time::timeout(WAIT, store.wait_until_ready())
            .await
            .unwrap()
            .unwrap();
        stores.push(store);
    }
    let names = |store: &reflector::Store<Pod>| {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.clone().unwrap(),
                    p.metadata.name.clone().unwrap()
                )
            })
            .collect();
        names.sort();
        names
    };
    for store in &stores {
        assert_eq!(names(store), vec!["a/p0", "b/p0"], "only node-1's pods");
    }

    // A pod on another node never shows up; one on this node does, in both stores.
    let pods: Api<Pod> = Api::namespaced(env.client(), "a");
    run_pod(&pods, "elsewhere", "node-2", "web", "10.9.0.4").await;
    run_pod(&pods, "here", "node-1", "web", "10.9.0.5").await;
    for store in &stores {
        wait_for(
            || names(store).contains(&"a/here".to_owned()),
            "the new pod",
        )
        .await;
        assert_eq!(names(store), vec!["a/here", "a/p0", "b/p0"]);
        let here = store
            .state()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some("here"))
            .unwrap();
        assert_eq!(
            here.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-1")
        );
    }
    server.stop().await;
}
