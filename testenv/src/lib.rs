//! A real Kubernetes control plane on loopback, for cattail's tests, demo and load tests.
//!
//! The Go module beside this crate (`testenv/*.go`) builds one binary that runs an
//! embedded etcd and kube-apiserver v1.36 in one process, plus a kube-controller-manager
//! child for namespace deletion and garbage collection. This crate builds that binary
//! when it is missing or stale ([`ensure_binary`]), starts it on free loopback ports
//! ([`TestEnv::start`]) and stops it, with everything it started, on drop.
//!
//! ```no_run
//! # async fn demo() -> cattail_testenv::Result<()> {
//! let env = cattail_testenv::TestEnv::start().await?;
//! let client = env.client();
//! let version = client.apiserver_version().await?;
//! assert_eq!(version.minor, "36");
//! env.compact().await?; // clients resuming from older resourceVersions now get 410 Gone
//! # Ok(()) }
//! ```

mod binary;
mod control;
mod env;
mod error;
mod process;

pub use binary::{BinaryPaths, ensure_binary, go_binary};
pub use control::{CompactOutcome, compact};
pub use env::{Options, ReadyInfo, TestEnv};
pub use error::{Error, Result};
pub use process::ControlPlane;
