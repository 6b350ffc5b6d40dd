//! A real store, hub and gRPC server on 127.0.0.1 port 0, and a minimal agent that applies frames
//! as docs/PROTOCOL.md says (including replace semantics), so tests compare whole states.

#![allow(dead_code)] // each test file uses a different part

/// `on_both_transports!(a, b)`: tests `on_native::a`, `on_tonic::a`, ... that run the
/// scenarios `async fn a(transport: Transport)` on each transport of the gRPC port.
#[allow(unused_macros)] // fanout_resume runs on the default transport only
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod on_native {
            use cattail_server::grpc::Transport;
            $(#[tokio::test]
            async fn $name() {
                super::$name(Transport::Native).await;
            })*
        }
        mod on_tonic {
            use cattail_server::grpc::Transport;
            $(#[tokio::test]
            async fn $name() {
                super::$name(Transport::Tonic).await;
            })*
        }
    };
}

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cattail_proto::Digest;
use cattail_proto::pb::sync_client::SyncClient;
use cattail_proto::pb::{
    AgentMessage, Encoding, Frame, Hello, Resume, ServerMessage, Subscription, Welcome,
    agent_message,
};
use cattail_server::config::Resource;
use cattail_server::fanout::{FanoutConfig, Hub, ResourceInfo};
use cattail_server::grpc::{self, GrpcConfig, Transport};
use cattail_server::store::{Batch, ProjectedObject, Published, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How long any single wait in these tests may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(20);
/// The digest size of the test hub.
pub(crate) const BUCKETS: u32 = 64;

pub(crate) fn pods() -> Resource {
    Resource::parse("v1/pods").unwrap()
}

pub(crate) fn namespaces() -> Resource {
    Resource::parse("v1/namespaces").unwrap()
}

/// Pods are node scoped (fingerprint 11); namespaces are not (fingerprint 22).
pub(crate) fn infos() -> Vec<ResourceInfo> {
    vec![
        ResourceInfo {
            resource: pods(),
            fingerprint: 11,
            scope_field: Some("spec.nodeName".into()),
        },
        ResourceInfo {
            resource: namespaces(),
            fingerprint: 22,
            scope_field: None,
        },
    ]
}

/// A config with small digests and fast timers for tests.
pub(crate) fn config() -> FanoutConfig {
    FanoutConfig {
        server_id: "test".into(),
        digest_buckets: BUCKETS,
        ..FanoutConfig::default()
    }
}

/// A pod on `node` whose value grows with `version`.
pub(crate) fn pod(
    namespace: &str,
    name: &str,
    node: Option<&str>,
    version: u32,
) -> ProjectedObject {
    ProjectedObject {
        namespace: namespace.into(),
        name: name.into(),
        value: Bytes::from(format!(
            r#"{{"kind":"Pod","name":"{name}","node":"{}","v":{version}}}"#,
            node.unwrap_or("")
        )),
        resource_version: version.to_string(),
        scope: node.map(str::to_owned),
    }
}

pub(crate) fn namespace(name: &str, version: u32) -> ProjectedObject {
    ProjectedObject {
        namespace: String::new(),
        name: name.into(),
        value: Bytes::from(format!(
            r#"{{"kind":"Namespace","name":"{name}","v":{version}}}"#
        )),
        resource_version: version.to_string(),
        scope: None,
    }
}

/// A running server over a real store.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) hub: Hub,
    pub(crate) store: Store,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<Result<(), grpc::Error>>,
}

impl TestServer {
    /// A server in sync with an empty store.
    pub(crate) async fn start(config: FanoutConfig) -> Self {
        Self::start_with(config, true, Transport::default()).await
    }

    /// A server in sync with an empty store, on `transport`.
    pub(crate) async fn start_on(config: FanoutConfig, transport: Transport) -> Self {
        Self::start_with(config, true, transport).await
    }

    pub(crate) async fn start_with(
        config: FanoutConfig,
        in_sync: bool,
        transport: Transport,
    ) -> Self {
        let grpc = GrpcConfig {
            transport,
            ..GrpcConfig::default()
        };
        Self::start_with_grpc(config, in_sync, grpc).await
    }

    /// A server with gRPC settings of its own (TLS, say).
    pub(crate) async fn start_with_grpc(
        config: FanoutConfig,
        in_sync: bool,
        grpc: GrpcConfig,
    ) -> Self {
        let store = Store::new([pods(), namespaces()]);
        let hub = Hub::new(config, store.snapshot(), infos());
        hub.set_in_sync(in_sync);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(grpc::serve(listener, hub.clone(), grpc, shutdown.clone()));
        Self {
            addr,
            hub,
            store,
            shutdown,
            task,
        }
    }

    /// Commits `batch` and publishes it, as the writer does.
    pub(crate) fn commit(&mut self, batch: Batch) -> Published {
        let published = self.store.commit(batch).unwrap().expect("a real change");
        self.hub.publish(&published, self.store.snapshot());
        published
    }

    pub(crate) fn apply(
        &mut self,
        pods_: &[ProjectedObject],
        namespaces_: &[ProjectedObject],
    ) -> u64 {
        let mut batch = Batch::new();
        for object in pods_ {
            batch.apply(&pods(), object.clone());
        }
        for object in namespaces_ {
            batch.apply(&namespaces(), object.clone());
        }
        self.commit(batch).revision.get()
    }

    /// What an agent of `subscription` must hold: `(resource, namespace, name) -> value`.
    pub(crate) fn expected(&self, subscriptions: &[(Resource, Option<&str>)]) -> State {
        let snapshot = self.store.snapshot();
        let mut state = State::new();
        for (resource, scope) in subscriptions {
            let objects: Vec<&ProjectedObject> = match scope {
                Some(scope) => snapshot.scoped(resource, scope).unwrap().collect(),
                None => snapshot.objects(resource).unwrap().collect(),
            };
            for o in objects {
                let key = (resource.to_string(), o.namespace.clone(), o.name.clone());
                state.insert(key, o.value.clone());
            }
        }
        state
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub(crate) async fn client(&self) -> SyncClient<Channel> {
        SyncClient::new(self.channel().await).max_decoding_message_size(64 << 20)
    }
}

/// `(resource, namespace, name) -> value`.
pub(crate) type State = BTreeMap<(String, String, String), Bytes>;

/// What an open resync covers for one resource: whole, buckets, and the keys it upserted.
type Coverage = (bool, BTreeSet<u32>, BTreeSet<(String, String)>);

/// A Hello subscribing to `subscriptions` (`(resource, node_scoped)`), accepting zstd.
pub(crate) fn hello(node: &str, subscriptions: &[(&str, bool)]) -> Hello {
    Hello {
        protocol_version: 1,
        agent_id: format!("agent-{node}"),
        node_name: node.into(),
        agent_version: "test".into(),
        subscriptions: subscriptions
            .iter()
            .map(|(resource, node_scoped)| Subscription {
                resource: (*resource).into(),
                node_scoped: *node_scoped,
            })
            .collect(),
        resume: None,
        accepted_encodings: vec![Encoding::ProtoZstd as i32],
    }
}

/// A minimal agent: one Watch stream, a store with replace semantics, and a history of frames.
pub(crate) struct TestAgent {
    pub(crate) hello: Hello,
    requests: mpsc::Sender<AgentMessage>,
    responses: tonic::Streaming<ServerMessage>,
    pub(crate) welcome: Option<Welcome>,
    pub(crate) state: State,
    /// The complete revision (PROTOCOL.md section 4.4).
    pub(crate) revision: u64,
    /// Every frame received, in order.
    pub(crate) frames: Vec<Frame>,
    pub(crate) heartbeats: usize,
    /// The open resync: resource -> (whole, buckets, upserted keys).
    resync: Option<BTreeMap<String, Coverage>>,
}

impl TestAgent {
    /// Opens a stream and sends `hello`; `Err` if the call itself is refused.
    pub(crate) async fn connect(server: &TestServer, hello: Hello) -> Result<Self, tonic::Status> {
        Self::connect_over(server.channel().await, hello).await
    }

    /// [`TestAgent::connect`] over a channel of the test's own making.
    pub(crate) async fn connect_over(
        channel: Channel,
        hello: Hello,
    ) -> Result<Self, tonic::Status> {
        Self::connect_as(channel, hello, None).await
    }

    /// [`TestAgent::connect_over`], sending `authorization` metadata (raw bytes, so tests can
    /// send garbage) when given.
    pub(crate) async fn connect_as(
        channel: Channel,
        hello: Hello,
        authorization: Option<&[u8]>,
    ) -> Result<Self, tonic::Status> {
        let mut client = SyncClient::new(channel).max_decoding_message_size(64 << 20);
        let (requests, rx) = mpsc::channel(16);
        requests
            .send(AgentMessage {
                message: Some(agent_message::Message::Hello(hello.clone())),
            })
            .await
            .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(value) = authorization {
            let value = tonic::metadata::MetadataValue::try_from(value)
                .expect("a header value tonic can send");
            request.metadata_mut().insert("authorization", value);
        }
        let responses = client.watch(request).await?.into_inner();
        Ok(Self {
            hello,
            requests,
            responses,
            welcome: None,
            state: State::new(),
            revision: 0,
            frames: Vec::new(),
            heartbeats: 0,
            resync: None,
        })
    }

    /// The next message, or the status that ended the stream (`Ok(None)`: ended with OK).
    pub(crate) async fn next(&mut self) -> Result<Option<ServerMessage>, tonic::Status> {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("no message from the server in time")
    }

    /// Reads and applies messages until the stream ends; returns its status.
    pub(crate) async fn status(&mut self) -> tonic::Status {
        loop {
            match self.next().await {
                Ok(Some(message)) => self.apply(&message),
                Ok(None) => panic!("the stream ended with OK"),
                Err(status) => return status,
            }
        }
    }

    /// Reads and applies messages until `done` holds after one.
    pub(crate) async fn until(&mut self, mut done: impl FnMut(&Self, &ServerMessage) -> bool) {
        loop {
            let message = self.next().await.unwrap().expect("stream ended");
            self.apply(&message);
            if done(self, &message) {
                return;
            }
        }
    }

    /// Reads until the next `Synced`; returns its revision.
    pub(crate) async fn synced(&mut self) -> u64 {
        self.until(|_, m| m.synced.is_some()).await;
        self.revision
    }

    /// Reads until the complete revision is at least `revision`.
    pub(crate) async fn reach(&mut self, revision: u64) {
        if self.revision < revision || self.resync.is_some() {
            self.until(|agent, _| agent.revision >= revision && agent.resync.is_none())
                .await;
        }
    }

    pub(crate) async fn ack(&self, revision: u64) {
        let ack = agent_message::Message::Ack(cattail_proto::pb::Ack { revision });
        self.requests
            .send(AgentMessage { message: Some(ack) })
            .await
            .unwrap();
    }

    /// A Hello that resumes from this agent's state, with digests when `digests`, else naming
    /// every subscription in `covered`.
    pub(crate) fn resume_hello(&self, digests: bool) -> Hello {
        let welcome = self.welcome.as_ref().expect("a welcome");
        let mut hello = self.hello.clone();
        let mut resume = Resume {
            epoch: welcome.epoch.clone(),
            revision: self.revision,
            digests: Vec::new(),
            covered: Vec::new(),
        };
        if !digests {
            for subscription in &hello.subscriptions {
                let scope = if subscription.node_scoped {
                    hello.node_name.clone()
                } else {
                    String::new()
                };
                resume.covered.push(cattail_proto::pb::Coverage {
                    resource: subscription.resource.clone(),
                    scope,
                });
            }
        }
        if digests {
            for subscription in &hello.subscriptions {
                let info = welcome
                    .resources
                    .iter()
                    .find(|r| r.resource == subscription.resource)
                    .unwrap();
                let scope = if subscription.node_scoped {
                    hello.node_name.as_str()
                } else {
                    ""
                };
                let mut digest = Digest::new(info.digest_buckets).unwrap();
                for ((resource, namespace, name), value) in &self.state {
                    if *resource == subscription.resource {
                        digest.insert(namespace, name, value);
                    }
                }
                let resource = &subscription.resource;
                resume
                    .digests
                    .push(digest.to_proto(resource, scope, info.fingerprint));
            }
        }
        hello.resume = Some(resume);
        hello
    }

    /// Applies one message in the order PROTOCOL.md section 3 gives.
    pub(crate) fn apply(&mut self, message: &ServerMessage) {
        if let Some(welcome) = &message.welcome {
            self.welcome = Some(welcome.clone());
        }
        let mut last_delta = None;
        for frame in &message.frames {
            self.frames.push(frame.clone());
            let payload = cattail_proto::frame::decode_payload(frame, 64 << 20).unwrap();
            if frame.replace {
                let resync = self.resync.get_or_insert_with(BTreeMap::new);
                let coverage = resync.entry(frame.resource.clone()).or_default();
                if frame.replaced_buckets.is_empty() {
                    coverage.0 = true;
                }
                coverage.1.extend(frame.replaced_buckets.iter().copied());
                for upsert in &payload.upserts {
                    coverage
                        .2
                        .insert((upsert.namespace.clone(), upsert.name.clone()));
                }
            } else if self.resync.is_none() {
                last_delta = Some(frame.revision);
            }
            for upsert in payload.upserts {
                self.state.insert(
                    (frame.resource.clone(), upsert.namespace, upsert.name),
                    upsert.value,
                );
            }
            for delete in payload.deletes {
                self.state
                    .remove(&(frame.resource.clone(), delete.namespace, delete.name));
            }
        }
        if let Some(revision) = last_delta {
            self.revision = revision;
        }
        if let Some(synced) = &message.synced {
            let buckets = self
                .welcome
                .as_ref()
                .map_or(BUCKETS, |w| w.resources[0].digest_buckets);
            for (resource, (whole, covered, upserted)) in self.resync.take().unwrap_or_default() {
                self.state.retain(|(r, namespace, name), _| {
                    let key = (namespace.clone(), name.clone());
                    let bucket =
                        cattail_proto::digest::bucket_of(namespace, name, buckets).unwrap();
                    !(r == &resource
                        && !upserted.contains(&key)
                        && (whole || covered.contains(&bucket)))
                });
            }
            self.revision = synced.revision;
        }
        if let Some(heartbeat) = &message.heartbeat {
            self.heartbeats += 1;
            self.revision = self.revision.max(heartbeat.head_revision);
        }
    }
}
