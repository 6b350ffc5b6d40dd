//! The admin HTTP endpoint: `/livez`, `/readyz`, `/metrics` and `/status`.
//!
//! `/status` is the replica's state and its fleet of agents (`status`), as an HTML page for
//! browsers or as JSON for everyone else (`negotiate`, `page`); both are bounded in size
//! whatever the number of agents. Each `/status` request and each scrape of `/metrics` walks
//! the connected agents once; the agents' senders never wait for it.
//!
//! `/readyz` answers 200 only once every configured resource has completed its first list
//! (`InSync`), and 503 `WaitingForDatastore` before that, so a Service sends no agent to a
//! replica that would hand it an incomplete snapshot. Losing the API server later does not
//! make a replica unready: it keeps serving its last state (`cattail_watch_connected` says so).
//! A draining replica (after SIGTERM) answers 503 `Draining`, so its Service stops sending it
//! agents and the other replicas stop naming it.
//! `/metrics` renders the process-wide Prometheus recorder. Nothing here blocks the data path.

mod negotiate;
mod page;
mod status;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The admin endpoint's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Prometheus recorder could not be installed (another one already is).
    #[error("installing the Prometheus metrics recorder: {0}")]
    Recorder(String),
    /// Serving failed.
    #[error("admin endpoint on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// This module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Installs the process-wide Prometheus recorder and returns a handle that renders it.
///
/// Call once per process; a second call fails (tests use [`metrics_handle`] instead).
pub fn install_recorder() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Error::Recorder(e.to_string()))
}

/// A handle on the process-wide recorder: installs it on first use, then reuses it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // If another recorder is installed already, ours only renders what it holds.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub use crate::fanout::SyncStatus;
pub use negotiate::{Format, MAX_ACCEPT_BYTES, StatusRequest};
pub use status::{Status, StatusSource};

#[derive(Clone)]
struct AdminState {
    sync: SyncStatus,
    metrics: PrometheusHandle,
    status: StatusSource,
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    sync: SyncStatus,
    metrics: PrometheusHandle,
    status: StatusSource,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string());
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/status", get(status_page))
        .with_state(AdminState {
            sync,
            metrics,
            status,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|source| Error::Serve { addr, source })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.status.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "Draining")
    } else if state.sync.get() {
        (StatusCode::OK, "InSync")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "WaitingForDatastore")
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.status.refresh_metrics();
    state.metrics.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// `/status`: HTML for browsers, JSON for everyone else, or what `?format=` asks for; a bad
/// query is a 400 that says what to send, never a 500.
async fn status_page(
    State(state): State<AdminState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let accept: Vec<&[u8]> = headers
        .get_all(header::ACCEPT)
        .iter()
        .map(|value| value.as_bytes())
        .collect();
    let request = match StatusRequest::parse(&accept, query.as_deref()) {
        Ok(request) => request,
        Err(message) => {
            return (StatusCode::BAD_REQUEST, [(header::VARY, "Accept")], message).into_response();
        }
    };
    let status = state.status.status(state.sync.get(), request.top);
    match request.format {
        Format::Json => ([(header::VARY, "Accept")], Json(status.to_json())).into_response(),
        Format::Html => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::VARY, "Accept"),
            ],
            page::render(&status).into_string(),
        )
            .into_response(),
    }
}
