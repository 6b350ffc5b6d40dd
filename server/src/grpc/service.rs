//! [`SyncService`]: a hand-written `cattail.v1.Sync` service whose `Watch` answers with a
//! [`WatchBody`] that runs the stream's [`AgentSender`] and sends what it queues.
//!
//! The generated `SyncServer` is not used: its prost codec would encode every `ServerMessage`
//! once per agent, and tonic's encoder copies each message into a per-stream buffer. Here the
//! request body is read by the same message reader as the native transport's
//! ([`RequestMessages`]), and the response is the shared pieces themselves.
//! The response body reads a bounded queue of `queue` messages, so the sender feels the agent's
//! HTTP/2 flow control directly: when the agent stops reading, the queue fills, the body is not
//! polled, and neither is the sender, whose write timeout ends the stream if it is still blocked
//! when it runs again. Calls are refused as on the native transport (`super::refuse_call`);
//! fan-out errors become a `Status` through [`super::status`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use cattail_proto::pb::sync_server::SERVICE_NAME;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tracing::Instrument;

use crate::fanout::{AgentSender, Authorization, Hub, Peer};

use super::body::WatchBody;
use super::framing::InboundBudget;
use super::incoming::TlsConnectInfo;
use super::request_body::RequestMessages;

/// The header that names a request's message compression.
const GRPC_ENCODING: &str = "grpc-encoding";

/// The `cattail.v1.Sync` service.
#[derive(Debug, Clone)]
pub(crate) struct SyncService {
    hub: Hub,
    shutdown: CancellationToken,
    queue: usize,
    /// Bytes held for partial messages, across every stream of the transport.
    inbound_budget: Arc<InboundBudget>,
}

impl SyncService {
    pub(crate) fn new(hub: Hub, shutdown: CancellationToken, queue: usize) -> Self {
        // The same budget as the native transport's: `max_hello_bytes` bounds a whole message.
        let inbound_budget = Arc::new(InboundBudget::for_messages(
            hub.config().max_hello_bytes as usize,
        ));
        Self {
            hub,
            shutdown,
            queue: queue.max(1),
            inbound_budget,
        }
    }
}

impl NamedService for SyncService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for SyncService
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.watch(request);
        Box::pin(async move { Ok(response) })
    }
}

impl SyncService {
    /// Starts one Watch call, or refuses it with a trailers-only status.
    pub(super) fn watch<B>(&self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        let encoding = request.headers().get(GRPC_ENCODING).map(|v| v.as_bytes());
        if let Some(refused) = super::refuse_call(request.uri().path(), encoding) {
            return refused.into_http();
        }
        let config = self.hub.config();
        // The agent's only large message is its Hello: nothing bigger is ever buffered.
        // `max_hello_bytes` bounds the whole `AgentMessage` (PROTOCOL.md section 9).
        let max_decoding = config.max_hello_bytes as usize;
        let max_message = config.max_message_bytes as usize;
        let tls = request.extensions().get::<TlsConnectInfo>();
        let peer = Peer {
            address: tls.map(|tls| tls.remote_addr).or_else(|| {
                request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(TcpConnectInfo::remote_addr)
            }),
            certificate: tls.and_then(|tls| tls.certificate.clone()),
            authorization: request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|value| Authorization::from_bytes(value.as_bytes())),
            transport: "tonic",
        };
        let address = peer.address;
        let inbound = RequestMessages::new(
            request.into_body(),
            max_decoding,
            self.inbound_budget.clone(),
        );
        let (outbound, queue) = mpsc::channel(self.queue);
        let sender = AgentSender::new(
            self.hub.clone(),
            peer,
            inbound,
            outbound,
            self.shutdown.clone(),
        );
        let span = tracing::info_span!("agent", peer = ?address, agent_id = tracing::field::Empty);
        let sender = Box::pin(sender.run().instrument(span));
        let body = tonic::body::Body::new(WatchBody::driving(queue, sender, max_message));
        let mut response = http::Response::new(body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        response
    }
}
