//! The admin HTTP endpoint: `/livez`, `/readyz`, `/metrics` and `/status`.
//!
//! `/readyz` answers 200 only once every configured resource has completed its first list
//! (`InSync`), and 503 `WaitingForDatastore` before that, so a Service sends no agent to a
//! replica that would hand it an incomplete snapshot. Losing the API server later does not
//! make a replica unready: it keeps serving its last state (`cattail_watch_connected` says so).
//! `/metrics` renders the process-wide Prometheus recorder. Nothing here blocks the data path.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
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

/// What `/status` shows: produced on request by the server.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    sync: SyncStatus,
    metrics: PrometheusHandle,
    status: StatusFn,
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    sync: SyncStatus,
    metrics: PrometheusHandle,
    status: StatusFn,
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
    if state.sync.get() {
        (StatusCode::OK, "InSync")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "WaitingForDatastore")
    }
}

async fn render_metrics(State(state): State<AdminState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn status_page(State(state): State<AdminState>) -> impl IntoResponse {
    let mut status = (state.status)();
    if let Some(map) = status.as_object_mut() {
        let text = if state.sync.get() {
            "InSync"
        } else {
            "WaitingForDatastore"
        };
        map.insert("syncStatus".into(), text.into());
    }
    Json(status)
}
