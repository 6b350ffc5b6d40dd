//! The Kubernetes edge: what the server keeps of each API object, and (later) the watchers.
//!
//! [`project`] turns a raw API object into a [`ProjectedObject`](crate::store::ProjectedObject):
//! the configured fields as canonical JSON bytes, its key and its scope. It is pure and cheap
//! enough to run on every watch event before anything is compared or stored.

pub mod project;
pub mod watch;
