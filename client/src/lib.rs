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
//! ## TLS and credentials
//!
//! cattail servers serve TLS 1.3 by default: use `https://` endpoints and give the CA bundle
//! that signed the server's certificate with [`ClientTls::ca_file`] (a missing or malformed
//! file is an error when the settings are built; an `https://` endpoint without a CA bundle is
//! refused when a stream opens). Where the server verifies agents by certificate, add one with
//! [`ClientTls::identity_files`]; [`ClientTls::server_name`] sets the name to check when the
//! endpoint is an IP address. An agent that proves itself with a projected ServiceAccount token
//! gives its file to [`Client::token_file`]: the token goes out as `authorization: Bearer
//! <token>` on every stream, and the file is read again before every reconnect, so kubelet's
//! rotations are picked up (a token over [`connection::MAX_TOKEN_BYTES`] or that is not a valid
//! header value is an error). `http://` endpoints speak plaintext, for servers started with
//! `--insecure-plaintext`.
//!
//! ```no_run
//! # fn tls() -> cattail_client::connection::Result<()> {
//! use cattail_client::{Client, ClientTls, TokenFile};
//! let client = Client::new(["https://cattail.cattail-system.svc:5473"])
//!     .tls(ClientTls::new().ca_file("/var/run/cattail/ca.crt")?)
//!     .token_file(TokenFile::new("/var/run/secrets/cattail/token")?);
//! # Ok(()) }
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
