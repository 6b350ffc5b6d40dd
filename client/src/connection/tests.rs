//! Loopback gRPC tests of the connection task.
//!
//! The server here is a scripted stand-in, not cattail's: the real server lives in
//! `cattail-server`, which this crate does not depend on. It implements the generated `Sync`
//! trait, reports each `Hello` and ack to the test, and sends whatever the test tells it to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cattail_proto::pb::sync_server::{Sync, SyncServer};
use cattail_proto::pb::{ResumeMode, ServerMessage};
use cattail_proto::{Digest, Epoch};
use futures::StreamExt;
use kube::runtime::watcher::Event;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::client::Client;
use crate::session::tests::{
    FrameSpec, NODE, NODES, PODS, frames, heartbeat, join, synced, welcome,
};

pub(crate) mod memory;
mod scenarios;

/// Long enough for anything a test waits for; with paused time it costs nothing.
pub(crate) const DEADLINE: Duration = Duration::from_secs(600);

/// One stream the scripted server accepted (or refused).
pub(crate) struct Accepted {
    pub(crate) hello: cattail_proto::pb::Hello,
    pub(crate) at: Instant,
    /// Sends to the agent; `None` when the stream was refused. Dropping it ends the stream.
    pub(crate) replies: Option<mpsc::Sender<Result<ServerMessage, Status>>>,
    pub(crate) acks: mpsc::UnboundedReceiver<u64>,
}

impl Accepted {
    pub(crate) async fn send(&self, message: ServerMessage) {
        let replies = self.replies.as_ref().expect("the stream was refused");
        replies.send(Ok(message)).await.unwrap();
    }

    pub(crate) async fn fail(self, status: Status) {
        let replies = self.replies.expect("the stream was refused");
        replies.send(Err(status)).await.unwrap();
    }

    /// Waits for an ack of at least `revision`; returns every ack seen on the way.
    pub(crate) async fn acks_until(&mut self, revision: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|&last| last < revision) {
            let ack = timeout(DEADLINE, self.acks.recv()).await.unwrap();
            seen.push(ack.expect("the agent stopped acking"));
        }
        seen
    }
}

struct ScriptedServer {
    accepted: mpsc::UnboundedSender<Accepted>,
    refusals: Arc<Mutex<VecDeque<Status>>>,
}

#[tonic::async_trait]
impl Sync for ScriptedServer {
    type WatchStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<cattail_proto::pb::AgentMessage>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        use cattail_proto::pb::agent_message::Message;
        let mut inbound = request.into_inner();
        let Some(Message::Hello(hello)) = inbound.message().await?.and_then(|m| m.message) else {
            return Err(Status::invalid_argument(
                "the first message must be a Hello",
            ));
        };
        let (ack_sender, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(Message::Ack(ack)) = message.message {
                    let _ = ack_sender.send(ack.revision);
                }
            }
        });
        let refusal = self.refusals.lock().unwrap().pop_front();
        let (replies, outbound) = mpsc::channel(64);
        let at = Instant::now();
        let (replies, result) = match refusal {
            Some(status) => (None, Err(status)),
            None => (
                Some(replies),
                Ok(Response::new(ReceiverStream::new(outbound))),
            ),
        };
        let _ = self.accepted.send(Accepted {
            hello,
            at,
            replies,
            acks,
        });
        result
    }
}

/// A running scripted server.
pub(crate) struct Harness {
    pub(crate) endpoint: String,
    accepted: mpsc::UnboundedReceiver<Accepted>,
    refusals: Arc<Mutex<VecDeque<Status>>>,
}

impl Harness {
    /// A server on the in-memory network, for paused-time tests.
    pub(crate) async fn start() -> Self {
        let (endpoint, incoming) = memory::listen();
        Self::serve(endpoint, incoming)
    }

    /// A server on a real loopback socket, port 0.
    async fn start_tcp() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        Self::serve(endpoint, TcpListenerStream::new(listener))
    }

    fn serve<S, IO>(endpoint: String, incoming: S) -> Self
    where
        S: futures::Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
    {
        let (sender, accepted) = mpsc::unbounded_channel();
        let refusals = Arc::new(Mutex::new(VecDeque::new()));
        let server = ScriptedServer {
            accepted: sender,
            refusals: refusals.clone(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SyncServer::new(server))
                .serve_with_incoming(incoming),
        );
        Harness {
            endpoint,
            accepted,
            refusals,
        }
    }

    pub(crate) fn refuse_next(&self, status: Status) {
        self.refusals.lock().unwrap().push_back(status);
    }

    pub(crate) async fn accept(&mut self) -> Accepted {
        timeout(DEADLINE, self.accepted.recv())
            .await
            .expect("no stream arrived in time")
            .expect("server gone")
    }
}

pub(crate) fn client(endpoints: &[&str]) -> Client {
    Client::new(endpoints).agent_id("agent-1").node_name(NODE)
}

fn subscriptions() -> Vec<Subscription> {
    vec![
        Subscription::for_resource(PODS).unwrap().node_scoped(),
        Subscription::for_resource(NODES).unwrap(),
    ]
}

/// The next item of an event stream, within the deadline.
async fn next_item(events: &mut EventStream) -> Result<SubscriptionEvent> {
    timeout(DEADLINE, events.next())
        .await
        .expect("no event in time")
        .expect("the event stream ended")
}

/// Event kinds and names until `count` items have been seen, errors as `error`.
async fn describe_next(events: &mut EventStream, count: usize) -> Vec<String> {
    let mut described = Vec::new();
    for _ in 0..count {
        described.push(match next_item(events).await {
            Ok(tagged) => match tagged.event {
                Event::Init => format!("{} init", tagged.resource),
                Event::InitDone => format!("{} init-done", tagged.resource),
                Event::InitApply(o) => format!("{} init-apply {}", tagged.resource, o.name),
                Event::Apply(o) => format!("{} apply {}", tagged.resource, o.name),
                Event::Delete(o) => format!("{} delete {}", tagged.resource, o.name),
            },
            Err(error) => format!("error {error}"),
        });
    }
    described
}

/// A snapshot at revision `revision` from `epoch`: pod web-0, node n1.
fn snapshot(epoch: Epoch, revision: u64) -> ServerMessage {
    join(vec![
        welcome(epoch, ResumeMode::Snapshot, revision),
        frames(&[
            FrameSpec::replace(PODS, revision).put("web-0", 1),
            FrameSpec::replace(NODES, revision).put("n1", 1),
        ]),
        synced(revision),
    ])
}

const INITIAL_SYNC: [&str; 6] = [
    "v1/pods init",
    "v1/pods init-apply web-0",
    "v1/pods init-done",
    "v1/nodes init",
    "v1/nodes init-apply n1",
    "v1/nodes init-done",
];

#[tokio::test]
async fn subscribe_refuses_configurations_that_cannot_work() {
    assert!(matches!(
        Client::default().subscribe(&subscriptions()),
        Err(Error::NoEndpoints)
    ));
    assert!(matches!(
        client(&["http://127.0.0.1:1"]).subscribe(&[Subscription::default()]),
        Err(Error::MissingResource)
    ));
    let unscoped = Client::new(["http://127.0.0.1:1"]);
    let error = unscoped.subscribe(&subscriptions()).err().unwrap();
    assert!(matches!(error, Error::Config(_)), "{error}");
    assert!(error.is_fatal());
}

/// The digest the agent should hold after [`snapshot`]: pod `default/web-0` = `{"v":1}`.
fn expected_pod_digest() -> Digest {
    let mut digest = Digest::new(crate::session::tests::BUCKETS).unwrap();
    digest.insert("default", "web-0", br#"{"v":1}"#);
    digest
}
