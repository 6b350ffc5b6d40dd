//! cattail-client: a local cache of the cluster fed by a cattail server.
#![warn(missing_docs)]

pub mod projected;
pub mod session;
pub mod subscription;
