//! The native transport: gRPC over HTTP/2 written for this server's one kind of call, a
//! long-lived stream of pre-encoded messages to each of thousands of agents.
//!
//! hyper and h2 cost each agent about 28 KiB of codec buffers allocated at the handshake, a
//! frame slab that never shrinks, a task per stream besides the connection's, and a system
//! call per DATA frame (docs/BENCHMARKS.md). Here one task per connection reads frames,
//! runs its streams' senders, and writes every frame that is ready (shared pieces without a
//! copy) in one vectored write; buffers exist only while they hold something. It serves
//! `cattail.v1.Sync/Watch` and `grpc.health.v1.Health` with the same statuses, limits and
//! shutdown behaviour as the tonic transport, which stays selectable (`--grpc-transport`).
//! The subset of HTTP/2 it speaks is in docs/PROTOCOL.md section 2.

mod closed;
mod connection;
mod frame;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod headers;
mod health;
mod hpack;
mod inbound;
mod io;
mod outbox;
mod request;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Status;
use tracing::Instrument;

use crate::fanout::Hub;
use crate::grpc::framing::InboundBudget;

use super::GrpcConfig;
use io::Io;

/// After a failed accept (out of file descriptors, say), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Open HTTP/2 connections on the native transport.
pub(crate) const CONNECTIONS: &str = "cattail_grpc_connections";
/// Connections closed on an error, by `reason`.
pub(crate) const CONNECTION_ERRORS: &str = "cattail_grpc_connection_errors_total";
/// Streams reset by the server, by `reason`.
pub(crate) const STREAM_RESETS: &str = "cattail_grpc_stream_resets_total";

/// Describes the transport's metrics to the installed recorder.
pub(crate) fn describe_metrics() {
    describe_gauge!(CONNECTIONS, "Open HTTP/2 connections (native transport).");
    describe_counter!(
        CONNECTION_ERRORS,
        "HTTP/2 connections closed on an error, by reason: an HTTP/2 error code, \
         handshake_timeout or keepalive_timeout (native transport)."
    );
    describe_counter!(
        STREAM_RESETS,
        "HTTP/2 streams reset by the server, by HTTP/2 error code (native transport)."
    );
}

/// What every connection shares.
#[derive(Debug)]
struct Services {
    hub: Hub,
    shutdown: CancellationToken,
    config: GrpcConfig,
    /// The largest agent message read: a Hello at its limit.
    max_inbound_bytes: usize,
    /// Bytes held for incomplete agent messages, across connections.
    inbound_budget: Arc<InboundBudget>,
    /// The largest message sent.
    max_message_bytes: usize,
}

impl Services {
    /// What every connection of a transport serving `hub` with `config` shares.
    fn new(hub: Hub, config: GrpcConfig, shutdown: CancellationToken) -> Self {
        let fanout = hub.config();
        Self {
            // `max_hello_bytes` bounds the whole `AgentMessage`, the size an agent's gRPC stack
            // sees (PROTOCOL.md section 9), so the limit a refusal quotes is the one `Welcome`
            // announces.
            max_inbound_bytes: fanout.max_hello_bytes as usize,
            inbound_budget: Arc::new(InboundBudget::for_messages(fanout.max_hello_bytes as usize)),
            max_message_bytes: fanout.max_message_bytes as usize,
            hub,
            shutdown,
            config,
        }
    }
}

/// Serves until `shutdown`, then waits for every connection to finish: each stream ends with
/// its status, and each connection with a GOAWAY.
pub(super) async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: GrpcConfig,
    shutdown: CancellationToken,
) {
    describe_metrics();
    let services = Arc::new(Services::new(hub, config, shutdown.clone()));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed; retrying shortly");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        if let Err(error) = socket.set_nodelay(services.config.tcp_nodelay) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let span = tracing::debug_span!("http2", %peer);
        let Some(tls) = &services.config.tls else {
            let connection =
                connection::Connection::new(Io::Plain(socket), peer, None, services.clone());
            connections.spawn(connection.instrument(span));
            continue;
        };
        // Over the cap of handshakes in flight, the socket is closed here, at once.
        let Some(handshake) = tls.admit(peer) else {
            continue;
        };
        connections.spawn(
            handshake_then_serve(handshake, socket, peer, services.clone()).instrument(span),
        );
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// The TLS handshake, in the connection's own task so the accept loop never waits on it, then
/// the connection. Shutdown ends a handshake at once.
async fn handshake_then_serve(
    handshake: crate::tls::Handshake,
    socket: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    services: Arc<Services>,
) {
    let accepted = tokio::select! {
        accepted = handshake.accept(socket) => accepted,
        () = services.shutdown.cancelled() => return,
    };
    if let Some(accepted) = accepted {
        let io = Io::Tls(Box::new(accepted.stream));
        connection::Connection::new(io, peer, accepted.certificate, services).await;
    }
}

/// Logs a call refused before it started.
fn refused(status: &Status) {
    tracing::info!(code = ?status.code(), message = status.message(), "refused a call");
}
