//! Against the real kube-apiserver and etcd: objects, CRDs, kube-runtime watchers,
//! a forced compaction with the 410 Gone relist it causes, and RBAC.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::time::Duration;

use cattail_testenv::TestEnv;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "registry.invalid/web:1",
                            "ports": [{"containerPort": 8080}]}]
        }
    }))
    .unwrap()
}

/// Patches a pod's status with IPs and a phase, as a kubelet would.
async fn patch_status(pods: &Api<Pod>, name: &str, ip: &str) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn version_is_the_pinned_kubernetes() {
    let env = TestEnv::start().await.unwrap();
    let version = env.client().apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );
    assert!(
        version.git_version.starts_with("v1.36."),
        "{}",
        version.git_version
    );

    // The README tells people to point kubectl at DIR/kubeconfig; check that it works.
    match std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["get", "--raw", "/version"])
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                v["gitVersion"].as_str().unwrap().starts_with("v1.36."),
                "{v}"
            );
        }
        Err(e) => eprintln!("kubectl not on PATH ({e}); checked /version through kube only"),
    }
}

#[tokio::test]
async fn pods_and_custom_resources_are_watched() {
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    create_namespace(&client, "demo").await;

    // A CRD, and objects of it once it is established.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]
        }
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let established = kube::runtime::wait::conditions::is_crd_established();
    timeout(
        WAIT,
        kube::runtime::wait::await_condition(crds, "widgets.example.com", established),
    )
    .await
    .unwrap()
    .unwrap();
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "demo", &ApiResource::from_gvk(&gvk));
    for (name, size) in [("a", 1), ("b", 2)] {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"size": size}
        }))
        .unwrap();
        widgets.create(&PostParams::default(), &obj).await.unwrap();
    }
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2);

    // Pods on nodes, with kubelet-style status, seen through kube-runtime's watcher.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    pods.create(&PostParams::default(), &pod("p1", "node-1"))
        .await
        .unwrap();
    let mut stream = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut initial = BTreeSet::new();
    loop {
        match timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Init => {}
            Event::InitApply(p) => {
                initial.insert(p.metadata.name.unwrap());
            }
            Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, BTreeSet::from(["p1".to_owned()]));

    pods.create(&PostParams::default(), &pod("p2", "node-2"))
        .await
        .unwrap();
    patch_status(&pods, "p2", "10.0.0.2").await;
    // Wait until the watcher shows p2 with its IP on node-2.
    timeout(WAIT, async {
        loop {
            if let Event::Apply(p) = stream.try_next().await.unwrap().unwrap() {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                if p.metadata.name.as_deref() == Some("p2") && ip.as_deref() == Some("10.0.0.2") {
                    let node = p.spec.and_then(|s| s.node_name);
                    assert_eq!(node.as_deref(), Some("node-2"));
                    break;
                }
            }
        }
    })
    .await
    .unwrap();

    // And a custom resource watched the same way sees a delete.
    let mut widget_stream = watcher::watcher(widgets.clone(), watcher::Config::default()).boxed();
    timeout(WAIT, async {
        while !matches!(
            widget_stream.try_next().await.unwrap().unwrap(),
            Event::InitDone
        ) {}
    })
    .await
    .unwrap();
    widgets.delete("a", &Default::default()).await.unwrap();
    timeout(WAIT, async {
        loop {
            if let Event::Delete(w) = widget_stream.try_next().await.unwrap().unwrap() {
                assert_eq!(w.metadata.name.as_deref(), Some("a"));
                break;
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn watcher_relists_after_compaction_410() {
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    create_namespace(&client, "churn").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "churn");
    pods.create(&PostParams::default(), &pod("before", "node-1"))
        .await
        .unwrap();

    let mut stream = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    timeout(WAIT, async {
        while !matches!(stream.try_next().await.unwrap().unwrap(), Event::InitDone) {}
    })
    .await
    .unwrap();

    // Changes made while the watch is open arrive as plain Apply events.
    pods.create(&PostParams::default(), &pod("during", "node-1"))
        .await
        .unwrap();
    timeout(WAIT, async {
        loop {
            if let Event::Apply(p) = stream.try_next().await.unwrap().unwrap()
                && p.metadata.name.as_deref() == Some("during")
            {
                break;
            }
        }
    })
    .await
    .unwrap();

    let outcome = env.compact().await.unwrap();
    assert!(outcome.revision > 0);
    pods.create(&PostParams::default(), &pod("after", "node-2"))
        .await
        .unwrap();

    // The watch resumes from a compacted resourceVersion: the server answers 410 Gone
    // and the watcher starts over with a full list that holds all three pods.
    let mut saw_gone = false;
    let mut relisted = BTreeSet::new();
    timeout(WAIT, async {
        loop {
            match stream.next().await.unwrap() {
                Err(watcher::Error::WatchError(status)) if status.code == 410 => saw_gone = true,
                Err(other) => eprintln!("watcher error (retried): {other}"),
                Ok(Event::Init) => relisted.clear(),
                Ok(Event::InitApply(p)) => {
                    relisted.insert(p.metadata.name.unwrap());
                }
                Ok(Event::InitDone) if saw_gone => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the watcher never relisted after the compaction");
    assert!(saw_gone, "no 410 Gone was observed");
    let want: BTreeSet<String> = ["before", "during", "after"].map(String::from).into();
    // "after" may arrive in the relist or right after it, depending on timing.
    assert!(
        relisted.is_superset(&["before", "during"].map(String::from).into()),
        "{relisted:?}"
    );
    assert!(relisted.is_subset(&want), "{relisted:?}");
}

#[tokio::test]
async fn service_account_can_read_pods_but_not_secrets() {
    let env = TestEnv::start().await.unwrap();
    let admin = env.client();
    create_namespace(&admin, "rbac").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "rbac");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "agent"}})).unwrap();
    accounts.create(&PostParams::default(), &sa).await.unwrap();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), "rbac")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "agent-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "rbac"}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "rbac")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    Api::<Pod>::namespaced(admin.clone(), "rbac")
        .create(&PostParams::default(), &pod("web", "node-1"))
        .await
        .unwrap();

    let agent = env.service_account_client("rbac", "agent").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(agent.clone(), "rbac");
    let listed = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    // It can watch, too.
    let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
    let first = timeout(WAIT, stream.try_next()).await.unwrap().unwrap();
    assert!(matches!(first, Some(Event::Init)), "{first:?}");

    let secrets: Api<Secret> = Api::namespaced(agent, "rbac");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing secrets as the agent should be forbidden, got {other:?}"),
    }
}
