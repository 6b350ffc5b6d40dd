//! The one error type of the launcher. Messages say what to do next.

use std::path::PathBuf;

/// Everything that can go wrong while building, starting or talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `go` tool is not on PATH, so the control-plane binary cannot be built.
    #[error(
        "the `go` tool was not found on PATH ({0}); install Go (see README.md), or set \
         CATTAIL_TESTENV_BIN (the control plane) or CATTAIL_GRPCAGENT_BIN (the grpc-go agent) \
         to a prebuilt binary"
    )]
    GoMissing(std::io::Error),

    /// `go build` failed; its output is included.
    #[error("go build {package} in {dir} failed:\n{output}")]
    GoBuild {
        /// The package that was built.
        package: String,
        /// The Go module directory.
        dir: PathBuf,
        /// What `go build` printed.
        output: String,
    },

    /// The control-plane process could not be started.
    #[error("could not start {binary}: {source}")]
    Spawn {
        /// The binary that was started.
        binary: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },

    /// The control plane exited before it was ready, or while it was running.
    #[error("the control plane exited ({status}) {when}; last lines of {log}:\n{tail}")]
    Exited {
        /// How it exited.
        status: String,
        /// "before it was ready" or "while running".
        when: &'static str,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// The control plane did not print its ready line in time.
    #[error("the control plane was not ready within {0:?}; see the log in {1}")]
    NotReady(std::time::Duration, PathBuf),

    /// The ready line was not the JSON this crate expects.
    #[error("unexpected ready line from the control plane: {line:?}: {source}")]
    ReadyLine {
        /// The line.
        line: String,
        /// The parse error.
        source: serde_json::Error,
    },

    /// A file of the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The kubeconfig written by the control plane could not be turned into a client.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig path.
        path: PathBuf,
        /// Why it was refused.
        message: String,
    },

    /// A request to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    /// The control endpoint refused or failed a request.
    #[error("testenv control endpoint {url}: {message}")]
    Control {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// The launcher's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
