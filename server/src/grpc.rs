//! The gRPC edge: `cattail.v1.Sync` and `grpc.health.v1.Health` on one port, and the one place
//! where fan-out errors become a `tonic::Status`.
//!
//! [`serve`] runs until the shutdown token is cancelled: every agent stream then ends with
//! `UNAVAILABLE` ("server shutting down") so agents reconnect elsewhere, health watches end, and
//! the HTTP/2 connections close gracefully. Health is `SERVING` only while the hub is in sync.

mod body;
mod framing;
mod http2;
mod incoming;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub use http2::fuzz as http2_fuzz;
mod request_body;
mod service;
#[cfg(test)]
mod tests;

use std::time::Duration;

use cattail_proto::pb::sync_server::SERVICE_NAME;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use crate::config::GrpcSettings;
use crate::fanout::{self, Hub};
use crate::tls::ServerTls;

use service::SyncService;

/// Why the gRPC endpoint stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP/2 server failed.
    #[error("the gRPC server failed: {0}; check the listen address and the logs above")]
    Transport(#[from] tonic::transport::Error),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which HTTP/2 implementation serves the gRPC port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// cattail's own HTTP/2 framing for its streams (the default): one task, no per-connection
    /// codec buffers and one vectored write for everything ready, per connection.
    #[default]
    Native,
    /// tonic on hyper and h2: the general-purpose stack, kept as a fallback.
    Tonic,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Tonic => "tonic",
        })
    }
}

/// Transport settings of the gRPC endpoint.
///
/// HTTP/2 windows here are the server's *receive* windows: agents send a Hello and small Acks,
/// so they are small. What bounds a slow agent's memory is its own receive window, the
/// transport's send buffer (hyper's 400 KiB per stream under tonic; 256 KiB per connection,
/// mostly shared pieces, natively) and [`GrpcConfig::queue`].
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// The HTTP/2 implementation.
    pub transport: Transport,
    /// Messages queued per agent between its sender and the transport.
    pub queue: usize,
    /// HTTP/2 stream receive window, bytes.
    pub initial_stream_window_bytes: u32,
    /// HTTP/2 connection receive window, bytes.
    pub initial_connection_window_bytes: u32,
    /// HTTP/2 PING interval, to find dead connections; `None` disables it.
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub http2_keepalive_timeout: Option<Duration>,
    /// Streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`), the same on both transports.
    /// An agent opens one; a few more are health checks.
    pub max_concurrent_streams: u32,
    /// `TCP_NODELAY` on accepted sockets: deltas are small and latency matters.
    pub tcp_nodelay: bool,
    /// TLS on the port; `None` serves plaintext (h2c).
    pub tls: Option<ServerTls>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self::from_settings(&GrpcSettings::default(), Transport::default())
    }
}

/// The largest HTTP/2 window (RFC 9113 6.9.1), and the smallest this server accepts: the
/// protocol's initial window.
const WINDOW_RANGE: std::ops::RangeInclusive<u32> = 65_535..=0x7fff_ffff;

impl GrpcConfig {
    /// The config file's `grpc:` section, served with `transport`.
    pub fn from_settings(settings: &GrpcSettings, transport: Transport) -> Self {
        Self {
            transport,
            queue: settings.queue,
            initial_stream_window_bytes: settings.initial_stream_window_bytes,
            initial_connection_window_bytes: settings.initial_connection_window_bytes,
            http2_keepalive_interval: settings.keepalive_interval,
            http2_keepalive_timeout: Some(settings.keepalive_timeout),
            max_concurrent_streams: settings.max_concurrent_streams,
            tcp_nodelay: settings.tcp_nodelay,
            tls: None,
        }
    }

    /// Checks every field, naming the first bad one (as in the config file's `grpc:` section)
    /// and its allowed range.
    ///
    /// # Errors
    /// A message for the operator, like `queue: 0 is out of range: use 1 to 64`.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=64).contains(&self.queue) {
            return Err(format!(
                "queue: {} is out of range: use 1 to 64",
                self.queue
            ));
        }
        for (field, value) in [
            (
                "initial_stream_window_bytes",
                self.initial_stream_window_bytes,
            ),
            (
                "initial_connection_window_bytes",
                self.initial_connection_window_bytes,
            ),
        ] {
            if !WINDOW_RANGE.contains(&value) {
                return Err(format!(
                    "{field}: {value} is out of range: use {} to {}",
                    WINDOW_RANGE.start(),
                    WINDOW_RANGE.end()
                ));
            }
        }
        if self.http2_keepalive_interval.is_some_and(|d| d.is_zero()) {
            return Err("keepalive_interval: must be greater than 0, or `off`".to_owned());
        }
        if self.http2_keepalive_timeout.is_some_and(|d| d.is_zero()) {
            return Err("keepalive_timeout: must be greater than 0".to_owned());
        }
        if !(1..=1000).contains(&self.max_concurrent_streams) {
            return Err(format!(
                "max_concurrent_streams: {} is out of range: use 1 to 1000",
                self.max_concurrent_streams
            ));
        }
        Ok(())
    }
}

/// Serves `cattail.v1.Sync` and `grpc.health.v1.Health` on `listener` until `shutdown`.
///
/// # Errors
/// [`Error::Transport`] if the tonic transport fails; agents' problems never end it.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: GrpcConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let reloader = config.tls.clone().map(|tls| {
        crate::tls::describe_metrics();
        tokio::spawn(
            tls.run_reloader(shutdown.clone())
                .instrument(tracing::info_span!("tls_reloader")),
        )
    });
    let served = match config.transport {
        Transport::Native => {
            http2::serve(listener, hub, config, shutdown).await;
            Ok(())
        }
        Transport::Tonic => serve_tonic(listener, hub, config, shutdown).await,
    };
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    served
}

/// The tonic transport.
async fn serve_tonic(
    listener: TcpListener,
    hub: Hub,
    config: GrpcConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_health(&reporter, hub.in_sync()).await;
    let reporting = tokio::spawn(
        report_health(reporter, hub.clone(), shutdown.clone())
            .instrument(tracing::info_span!("grpc_health")),
    );
    let sync = SyncService::new(hub, shutdown.clone(), config.queue);
    let router = Server::builder()
        .initial_stream_window_size(config.initial_stream_window_bytes)
        .initial_connection_window_size(config.initial_connection_window_bytes)
        .http2_keepalive_interval(config.http2_keepalive_interval)
        .http2_keepalive_timeout(config.http2_keepalive_timeout)
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .add_service(health)
        .add_service(sync);
    let served = match config.tls {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(config.tcp_nodelay));
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
        Some(tls) => {
            let incoming =
                incoming::TlsIncoming::new(listener, tls, config.tcp_nodelay, shutdown.clone());
            router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
        }
    };
    reporting.abort();
    served.map_err(Error::from)
}

/// The path of the one method agents call.
const WATCH_PATH: &str = "/cattail.v1.Sync/Watch";

/// The status that refuses a call to `path` whose messages are compressed with `encoding`
/// (its `grpc-encoding`), before anything runs, on either transport; `None` for a Watch call
/// this server serves. Health calls are routed before this.
fn refuse_call(path: &str, encoding: Option<&[u8]>) -> Option<Status> {
    if path != WATCH_PATH {
        return Some(if path.starts_with("/cattail.v1.Sync/") {
            Status::unimplemented("cattail.v1.Sync has only Watch")
        } else {
            Status::unimplemented(format!(
                "unknown method {path:?}: this port serves cattail.v1.Sync/Watch and \
                 grpc.health.v1.Health"
            ))
        });
    }
    match encoding {
        None | Some(b"identity") => None,
        Some(other) => Some(Status::unimplemented(format!(
            "request compression {:?} is not supported: send uncompressed messages (server \
             payloads are compressed inside frames)",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// The gRPC status that ends an agent's stream for `error`: docs/PROTOCOL.md section 10.
pub fn status(error: &fanout::Error) -> Status {
    use fanout::Error as E;
    let code = match error {
        E::HelloTimeout(_) => Code::DeadlineExceeded,
        E::NotHello(_) | E::SecondHello | E::Malformed(_) => Code::InvalidArgument,
        E::Hello(error) => error.code(),
        E::HelloTooLarge { .. } | E::MessageTooLarge(_) | E::OverTarget { .. } => {
            Code::ResourceExhausted
        }
        E::NotInSync(_)
        | E::ShuttingDown
        | E::Draining(_)
        | E::WriteTimeout(_)
        | E::AgentGone
        | E::AuthUnavailable(_) => Code::Unavailable,
        E::Unauthenticated(_) => Code::Unauthenticated,
        E::PermissionDenied(_) => Code::PermissionDenied,
        E::Encode(_) | E::Task(_) => Code::Internal,
    };
    let mut status = Status::new(code, error.to_string());
    if let Some(endpoints) = error.try_endpoints() {
        // Addresses from EndpointSlices are ASCII; anything else is left out, not sent broken.
        match tonic::metadata::MetadataValue::try_from(endpoints) {
            Ok(value) => {
                status.metadata_mut().insert(TRY_ENDPOINTS_METADATA, value);
            }
            Err(_) => tracing::warn!(endpoints, "replica addresses that are not ASCII; not sent"),
        }
    }
    status
}

/// The trailing metadata key that lists other replicas to try, `host:port` joined by commas
/// (docs/PROTOCOL.md section 10).
pub const TRY_ENDPOINTS_METADATA: &str = "cattail-try-endpoints";

/// Follows the hub's sync status (`NOT_SERVING` for good once a drain starts) until shutdown,
/// then ends every health watch.
async fn report_health(mut reporter: HealthReporter, hub: Hub, shutdown: CancellationToken) {
    let mut in_sync = hub.watch_in_sync();
    let drain = hub.drain_started();
    loop {
        let serving = *in_sync.borrow_and_update() && !drain.is_cancelled();
        set_health(&reporter, serving).await;
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = drain.cancelled(), if !drain.is_cancelled() => {}
            changed = in_sync.changed() => if changed.is_err() { break },
        }
    }
    set_health(&reporter, false).await;
    // Dropping the statuses ends `Watch` streams, so they never hold the shutdown open.
    for name in ["", SERVICE_NAME] {
        reporter.clear_service_status(name).await;
    }
}

async fn set_health(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in ["", SERVICE_NAME] {
        reporter.set_service_status(name, status).await;
    }
}
