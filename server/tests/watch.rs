//! The watchers against the real API server from testenv: discovery (CRDs included),
//! projection of what the API server sends, and the relist after a 410 Gone.

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

fn pods_config() -> ResourceConfig {
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
