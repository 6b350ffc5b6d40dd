//! cattail-client: a node agent's local cache of the cluster, fed by a cattail server.
//!
//! The API is shaped like kube-runtime's, so an agent switches with a few lines:
//!
//! ```no_run
//! use cattail_client::reflector::{self, EventStreamExt};
//! use cattail_client::{Client, Subscription, watcher};
//! use futures::TryStreamExt;
//! use k8s_openapi::api::core::v1::Pod;
//!
//! # async fn agent() -> Result<(), cattail_client::watcher::Error> {
//! // Direct mode instead: Client::direct(kube::Client::try_default().await?)
//! let client = Client::new(["http://cattail.cattail-system:5473"]).node_name("node-1");
//! let (pods, writer) = reflector::store::<Pod>();
//! let events = watcher::<Pod>(client, Subscription::default().node_scoped())
//!     .reflect(writer)
//!     .applied_objects();
//! # let _ = pods.wait_until_ready();
//! events.try_for_each(|pod| async move { Ok(()) }).await
//! # }
//! ```
//!
//! Layers, lowest first: [`session`] is the protocol as a pure state machine (cache, digests,
//! resyncs, events); [`connection`] runs it over gRPC with reconnects, resume and acks;
//! [`mod@watcher`] decodes objects into Kubernetes types (or runs kube-runtime directly);
//! [`reflector`] keeps kube-runtime's `Store` up to date.

#![warn(missing_docs)]

mod client;
pub mod connection;
pub mod projected;
pub mod reflector;
pub mod session;
pub mod subscription;
pub mod watcher;

pub use client::{Client, DEFAULT_ACK_INTERVAL, DEFAULT_CONNECT_TIMEOUT, DEFAULT_WELCOME_TIMEOUT};
pub use connection::{Backoff, ClientTls, EventStream, TokenFile};
pub use kube::runtime::watcher::Event;
pub use projected::{ProjectedObject, SubscriptionEvent};
pub use subscription::Subscription;
pub use watcher::{dynamic_watcher, watcher};
