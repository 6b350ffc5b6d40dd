//! Typed and dynamic watchers over the in-memory scripted server, and direct-mode checks that
//! need no API server.

use std::time::Duration;

use cattail_proto::Epoch;
use cattail_proto::pb::{self, ResumeMode, ServerMessage};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio::time::timeout;

use super::*;
use crate::connection::tests::{DEADLINE, Harness, client};
use crate::reflector::{EventStreamExt, ObjectRef, store};
use crate::session::tests::{FrameSpec, NODE, PODS, frames, join, synced, welcome};

const POLICIES: &str = "crd.projectcalico.org/v1/globalnetworkpolicies";

const WEB_0: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"labels":{"app":"web"},"name":"web-0","namespace":"default","uid":"u-1"},"spec":{"nodeName":"node-a"},"status":{"phase":"Running"}}"#;

async fn next<T>(stream: &mut (impl Stream<Item = T> + Unpin)) -> T {
    timeout(DEADLINE, stream.next())
        .await
        .expect("nothing in time")
        .expect("the stream ended")
}

fn kind<K>(event: &Event<K>) -> &'static str {
    match event {
        Event::Init => "init",
        Event::InitApply(_) => "init-apply",
        Event::InitDone => "init-done",
        Event::Apply(_) => "apply",
        Event::Delete(_) => "delete",
    }
}

/// A welcome that also serves the Calico CRD.
fn welcome_with_crd(epoch: Epoch) -> ServerMessage {
    let mut message = welcome(epoch, ResumeMode::Snapshot, 1);
    let info = message.welcome.as_mut().unwrap();
    info.resources.push(pb::ResourceInfo {
        resource: POLICIES.into(),
        fingerprint: 1,
        scope_field: String::new(),
        digest_buckets: 16,
    });
    message
}

#[tokio::test(start_paused = true)]
async fn typed_pods_decode_from_projected_json_and_fill_a_store() {
    let mut server = Harness::start().await;
    let (pods, writer) = store::<Pod>();
    let mut events = Box::pin(
        watcher::<Pod>(
            client(&[&server.endpoint]),
            Subscription::default().node_scoped(),
        )
        .reflect(writer),
    );
    let stream = server.accept().await;
    let subscriptions = &stream.hello.subscriptions;
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].resource, PODS);
    assert!(subscriptions[0].node_scoped);
    stream
        .send(join(vec![
            welcome(Epoch::from(1), ResumeMode::Snapshot, 4),
            frames(&[FrameSpec::replace(PODS, 4).put_value("web-0", WEB_0)]),
            synced(4),
        ]))
        .await;
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(kind(&next(&mut events).await.unwrap()));
    }
    assert_eq!(kinds, ["init", "init-apply", "init-done"]);
    pods.wait_until_ready().await.unwrap();
    let pod = pods
        .get(&ObjectRef::new("web-0").within("default"))
        .unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE));
    assert!(spec.containers.is_empty(), "not projected, so empty");
    assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "web");

    // A value of the wrong shape is reported and skipped; the stream carries on.
    stream
        .send(frames(&[
            FrameSpec::delta(PODS, 5).put_value("bad", r#"{"metadata":5}"#)
        ]))
        .await;
    let error = next(&mut events).await.unwrap_err();
    assert!(
        matches!(&error, Error::Decode { name, .. } if name == "bad"),
        "{error}"
    );
    stream
        .send(frames(&[FrameSpec::delta(PODS, 6).del("web-0")]))
        .await;
    let event = next(&mut events).await.unwrap();
    let Event::Delete(deleted) = event else {
        panic!("expected a delete, got {}", kind(&event));
    };
    assert_eq!(deleted.metadata.uid.as_deref(), Some("u-1"));
    assert!(pods.state().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dynamic_watchers_serve_custom_resources() {
    let mut server = Harness::start().await;
    let subscription = Subscription::for_resource(POLICIES).unwrap();
    let mut events = Box::pin(dynamic_watcher(client(&[&server.endpoint]), subscription));
    let stream = server.accept().await;
    assert_eq!(stream.hello.subscriptions[0].resource, POLICIES);
    let policy = r#"{"apiVersion":"crd.projectcalico.org/v1","kind":"GlobalNetworkPolicy","metadata":{"name":"deny-all"},"spec":{"order":10}}"#;
    stream
        .send(join(vec![
            welcome_with_crd(Epoch::from(2)),
            frames(&[FrameSpec::replace(POLICIES, 1).put_value("deny-all", policy)]),
            synced(1),
        ]))
        .await;
    assert!(matches!(next(&mut events).await.unwrap(), Event::Init));
    let Event::InitApply(object) = next(&mut events).await.unwrap() else {
        panic!("expected an InitApply");
    };
    assert_eq!(object.metadata.name.as_deref(), Some("deny-all"));
    assert_eq!(object.types.unwrap().kind, "GlobalNetworkPolicy");
    assert_eq!(object.data["spec"]["order"], 10);
}

#[tokio::test]
async fn configurations_that_cannot_work_end_the_stream_after_one_error() {
    let kube_client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap();
    let direct = Client::direct(kube_client);
    let mut scoped = Box::pin(watcher::<Pod>(
        direct.clone(),
        Subscription::default().node_scoped(),
    ));
    assert!(matches!(
        next(&mut scoped).await,
        Err(Error::NodeNameRequired)
    ));
    assert!(
        timeout(Duration::from_secs(5), scoped.next())
            .await
            .unwrap()
            .is_none()
    );

    let mut unnamed = Box::pin(dynamic_watcher(direct, Subscription::default()));
    assert!(matches!(
        next(&mut unnamed).await,
        Err(Error::Connection(connection::Error::MissingResource))
    ));
    let mut no_endpoints = Box::pin(watcher::<Pod>(Client::default(), Subscription::default()));
    assert!(matches!(
        next(&mut no_endpoints).await,
        Err(Error::Connection(connection::Error::NoEndpoints))
    ));
}
