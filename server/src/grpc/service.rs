//! [`SyncService`]: a hand-written `cattail.v1.Sync` service whose `Watch` spawns one
//! [`AgentSender`] per stream and answers with its queue.
//!
//! The response stream is the receiving end of a bounded queue of `queue` messages, so the
//! sender feels the agent's HTTP/2 flow control directly: when the agent stops reading, the
//! queue fills and the sender's write timeout starts. Inbound errors are classified here, in
//! terms the fan-out understands; fan-out errors become a `Status` through [`super::status`].

use std::convert::Infallible;
use std::task::{Context, Poll};

use cattail_proto::pb::AgentMessage;
use cattail_proto::pb::sync_server::SERVICE_NAME;
use futures::StreamExt;
use futures::stream::Map;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tracing::Instrument;

use crate::fanout::{self, AgentSender, Hub, InboundError, OutgoingMessage};

use super::codec::PassthroughCodec;

/// The path of the one method.
const WATCH_PATH: &str = "/cattail.v1.Sync/Watch";
/// Bytes an `AgentMessage` adds around its Hello: a tag and a length.
const HELLO_ENVELOPE_BYTES: usize = 16;

/// The `cattail.v1.Sync` service.
#[derive(Debug, Clone)]
pub(crate) struct SyncService {
    hub: Hub,
    shutdown: CancellationToken,
    queue: usize,
}

impl SyncService {
    pub(crate) fn new(hub: Hub, shutdown: CancellationToken, queue: usize) -> Self {
        Self {
            hub,
            shutdown,
            queue: queue.max(1),
        }
    }
}

impl NamedService for SyncService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for SyncService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != WATCH_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("cattail.v1.Sync has only Watch").into_http())
            });
        }
        let config = self.hub.config();
        // The agent's only large message is its Hello: nothing bigger is ever buffered.
        let max_decoding = config.max_hello_bytes as usize + HELLO_ENVELOPE_BYTES;
        let max_encoding = config.max_message_bytes as usize;
        let method = WatchMethod {
            hub: self.hub.clone(),
            shutdown: self.shutdown.clone(),
            queue: self.queue,
        };
        Box::pin(async move {
            let mut grpc = Grpc::new(PassthroughCodec)
                .apply_max_message_size_config(Some(max_decoding), Some(max_encoding));
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// The item type of the agent's queue.
type QueueItem = fanout::Result<OutgoingMessage>;
/// The response stream of one Watch call.
type ResponseStream =
    Map<ReceiverStream<QueueItem>, fn(QueueItem) -> Result<OutgoingMessage, Status>>;

/// One Watch call.
struct WatchMethod {
    hub: Hub,
    shutdown: CancellationToken,
    queue: usize,
}

impl StreamingService<AgentMessage> for WatchMethod {
    type Response = OutgoingMessage;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<AgentMessage>>) -> Self::Future {
        let peer = request.remote_addr();
        let inbound = request.into_inner().map(classify as fn(_) -> _);
        let (outbound, queue) = mpsc::channel(self.queue);
        let sender = AgentSender::new(self.hub.clone(), inbound, outbound, self.shutdown.clone());
        let span = tracing::info_span!("agent", peer = ?peer, agent_id = tracing::field::Empty);
        tokio::spawn(sender.run().instrument(span));
        let responses: ResponseStream = ReceiverStream::new(queue).map(to_response);
        Box::pin(async move { Ok(tonic::Response::new(responses)) })
    }
}

/// Turns an inbound transport result into what the sender understands.
fn classify(item: Result<AgentMessage, Status>) -> Result<AgentMessage, InboundError> {
    item.map_err(|status| match status.code() {
        // tonic's decoder refuses a message over the size limit with OUT_OF_RANGE.
        tonic::Code::OutOfRange => InboundError::TooLarge(status.message().to_owned()),
        // Our decoder's answer to bytes that are not an AgentMessage.
        tonic::Code::InvalidArgument => InboundError::Malformed(status.message().to_owned()),
        _ => InboundError::Closed(status.message().to_owned()),
    })
}

fn to_response(item: QueueItem) -> Result<OutgoingMessage, Status> {
    item.map_err(|error| super::status(&error))
}
