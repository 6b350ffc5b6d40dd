//! The watchers against the real API server from testenv: discovery (CRDs included),
//! projection of what the API server sends, an object that cannot be projected, the default
//! profile's `exclude:` rules, and the relist after a 410 Gone.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use cattail_server::config::{ResourceConfig, default_for};
use cattail_server::k8s::watch::{self, WatchConfig, WatchEvent, WatchHealth, WatchInput};
use cattail_testenv::TestEnv;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// The default profile's pods, less its `exclude:` rules: these tests watch pods without IPs.
fn pods_config() -> ResourceConfig {
    ResourceConfig {
        exclude: Vec::new(),
        ..default_profile_pods()
    }
}

fn default_profile_pods() -> ResourceConfig {
    default_for(&"v1/pods".parse().unwrap()).unwrap()
}

async fn setup(env: &TestEnv) -> Api<Pod> {
    let client = env.client();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "w"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "w");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p1", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods
}

fn start(
    env: &TestEnv,
    config: ResourceConfig,
    streaming_lists: bool,
) -> (mpsc::Receiver<WatchInput>, CancellationToken) {
    let (tx, rx) = mpsc::channel(64);
    let token = CancellationToken::new();
    let watch = WatchConfig {
        streaming_lists,
        ..WatchConfig::default()
    };
    tokio::spawn(watch::run(
        env.client(),
        config,
        watch,
        1 << 20,
        tx,
        Arc::new(WatchHealth::default()),
        token.clone(),
    ));
    (rx, token)
}

/// Receives events until `InitDone`, returning the names listed.
async fn until_init_done(rx: &mut mpsc::Receiver<WatchInput>) -> Vec<String> {
    let mut names = Vec::new();
    timeout(WAIT, async {
        loop {
            match rx.recv().await.unwrap().event {
                WatchEvent::Init => names.clear(),
                WatchEvent::InitApply(obj) => names.push(obj.name),
                WatchEvent::InitDone => break,
                other => panic!("unexpected before InitDone: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    names
}

#[tokio::test]
async fn pods_are_listed_projected_and_relisted_after_410() {
    let env = TestEnv::start().await.unwrap();
    let pods = setup(&env).await;
    for streaming in [false, true] {
        let (mut rx, token) = start(&env, pods_config(), streaming);
        assert_eq!(
            until_init_done(&mut rx).await,
            vec!["p1"],
            "streaming lists: {streaming}"
        );
        token.cancel();
    }

    let (mut rx, _token) = start(&env, pods_config(), false);
    until_init_done(&mut rx).await;
    // A kubelet-style status patch arrives projected: the IP is kept, the condition is not.
    let status = json!({"status": {"podIP": "10.1.1.1", "podIPs": [{"ip": "10.1.1.1"}],
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("p1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let obj = timeout(WAIT, async {
        loop {
            if let WatchEvent::Apply(obj) = rx.recv().await.unwrap().event {
                break obj;
            }
        }
    })
    .await
    .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&obj.value).unwrap();
    assert_eq!(value["status"]["podIPs"][0]["ip"], "10.1.1.1", "{value}");
    assert!(value["status"].get("conditions").is_none(), "{value}");
    assert!(
        value["metadata"].get("resourceVersion").is_none(),
        "{value}"
    );
    assert_eq!(obj.scope.as_deref(), Some("node-1"));

    // After a compaction the watch gets 410 Gone and relists.
    env.compact().await.unwrap();
    timeout(WAIT, async {
        loop {
            if let WatchEvent::Init = rx.recv().await.unwrap().event {
                break;
            }
        }
    })
    .await
    .expect("no relist after the compaction");
}

#[tokio::test]
async fn a_resource_that_is_not_served_is_retried_until_its_crd_exists() {
    let env = TestEnv::start().await.unwrap();
    let config = ResourceConfig::new("example.com/v1/gadgets".parse().unwrap());
    let (mut rx, _token) = start(&env, config, false);
    // Nothing can arrive before the CRD exists.
    assert!(
        timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err()
    );

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(env.client());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
    // Discovery is retried every 5 s; the first list of the new resource is empty.
    let names = until_init_done(&mut rx).await;
    assert!(names.is_empty(), "{names:?}");
}

/// Receives events until `pick` returns something for one; fails the test after [`WAIT`].
async fn next_matching<T>(
    rx: &mut mpsc::Receiver<WatchInput>,
    mut pick: impl FnMut(WatchEvent) -> Option<T>,
    what: &str,
) -> T {
    timeout(WAIT, async {
        loop {
            if let Some(found) = pick(rx.recv().await.unwrap().event) {
                break found;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

#[tokio::test]
async fn an_update_that_cannot_be_projected_reaches_the_writer_as_a_delete() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

    let metrics = cattail_server::admin::metrics_handle();
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    // A CRD served as `v1alpha` (a version the server config must accept), whose schema lets
    // `spec.node` hold anything: the API server stores a number there, which the configured
    // scope field cannot be. The real API server delivers it; no fake is needed.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1alpha", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}
    });
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(crd).unwrap(),
    )
    .await
    .unwrap();
    let established = kube::runtime::wait::conditions::is_crd_established();
    timeout(
        WAIT,
        kube::runtime::wait::await_condition(crds, "widgets.example.com", established),
    )
    .await
    .unwrap()
    .unwrap();
    let gvk = GroupVersionKind::gvk("example.com", "v1alpha", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client, "default", &ApiResource::from_gvk(&gvk));
    let widget = json!({"apiVersion": "example.com/v1alpha", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"node": "node-1"}});
    widgets
        .create(
            &PostParams::default(),
            &serde_json::from_value(widget).unwrap(),
        )
        .await
        .unwrap();

    let resource = "example.com/v1alpha/widgets";
    let config = ResourceConfig::new(resource.parse().unwrap())
        .with_scope(cattail_server::config::FieldPath::parse("spec.node").unwrap());
    let (mut rx, _token) = start(&env, config, false);
    assert_eq!(until_init_done(&mut rx).await, vec!["w1"]);

    let set_node = |node: serde_json::Value| {
        let widgets = widgets.clone();
        async move {
            let patch = json!({"spec": {"node": node}});
            widgets
                .patch("w1", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    // The node becomes a number: agents must drop the object, not keep `node-1`.
    set_node(json!(5)).await;
    let deleted = next_matching(
        &mut rx,
        |event| match event {
            WatchEvent::Delete(key) => Some(key),
            WatchEvent::Apply(object) => panic!("served an unprojectable object: {object:?}"),
            _ => None,
        },
        "delete",
    )
    .await;
    assert_eq!(
        (deleted.namespace.as_str(), deleted.name.as_str()),
        ("default", "w1")
    );
    let rendered = metrics.render();
    let counted = format!("cattail_projection_failures_total{{resource=\"{resource}\"}} 1");
    assert!(rendered.contains(&counted), "{rendered}");

    // Once it projects again, agents get it back with its new scope.
    set_node(json!("node-2")).await;
    let back = next_matching(
        &mut rx,
        |event| match event {
            WatchEvent::Apply(object) => Some(object),
            _ => None,
        },
        "apply",
    )
    .await;
    assert_eq!(back.scope.as_deref(), Some("node-2"));
}

/// The next event that is not a delete of a key nobody holds (an excluded object's update is a
/// delete of its key, which the store ignores when it does not hold it).
async fn next_event(rx: &mut mpsc::Receiver<WatchInput>, ignore_deletes_of: &[&str]) -> WatchEvent {
    timeout(WAIT, async {
        loop {
            let event = rx.recv().await.unwrap().event;
            match &event {
                WatchEvent::Delete(key) if ignore_deletes_of.contains(&key.name.as_str()) => {}
                _ => break event,
            }
        }
    })
    .await
    .expect("no event")
}

async fn give_ip(pods: &Api<Pod>, name: &str, ip: &str) {
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// The default profile leaves out pods a network agent cannot use: without an IP, host-networked
/// or finished. A pod that gets an IP appears (an apply), one that finishes leaves (a delete),
/// and a relist lists only the rest.
#[tokio::test]
async fn the_default_profile_leaves_out_pods_without_an_ip_host_networked_or_finished() {
    let env = TestEnv::start().await.unwrap();
    // p1: no IP yet.
    let pods = setup(&env).await;
    // p2: host-networked, with its node's IP.
    let host: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p2"},
        "spec": {"nodeName": "node-1", "hostNetwork": true,
                 "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &host).await.unwrap();
    give_ip(&pods, "p2", "172.16.0.1").await;

    let (mut rx, _token) = start(&env, default_profile_pods(), true);
    assert_eq!(until_init_done(&mut rx).await, Vec::<String>::new());

    // p1 gets an IP: agents get it. p2's changes stay deletes of a key nobody holds.
    give_ip(&pods, "p1", "10.1.1.1").await;
    match next_event(&mut rx, &["p2"]).await {
        WatchEvent::Apply(obj) => assert_eq!(obj.name, "p1"),
        other => panic!("expected p1 to appear, got {other:?}"),
    }
    // p1 finishes: agents get a delete.
    let done = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status("p1", &PatchParams::default(), &Patch::Merge(&done))
        .await
        .unwrap();
    match next_event(&mut rx, &["p2"]).await {
        WatchEvent::Delete(key) => assert_eq!(key.name, "p1"),
        other => panic!("expected p1's delete, got {other:?}"),
    }
    // p3 runs with an IP; a relist after a 410 lists it alone.
    let p3: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p3"},
        "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p3).await.unwrap();
    give_ip(&pods, "p3", "10.1.2.1").await;
    match next_event(&mut rx, &["p1", "p2", "p3"]).await {
        WatchEvent::Apply(obj) => assert_eq!(obj.name, "p3"),
        other => panic!("expected p3 to appear, got {other:?}"),
    }
    env.compact().await.unwrap();
    let relisted = timeout(WAIT, async {
        loop {
            match rx.recv().await.unwrap().event {
                WatchEvent::Init => break until_init_done(&mut rx).await,
                WatchEvent::InitApply(obj) => panic!("{} listed before Init", obj.name),
                _ => {}
            }
        }
    })
    .await
    .expect("no relist after the compaction");
    assert_eq!(relisted, vec!["p3"]);
}
