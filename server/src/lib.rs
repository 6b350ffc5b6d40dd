//! cattail-server: one watch per resource against the Kubernetes API, fanned out to many agents.
//!
//! This crate holds the cluster-independent core: [`config`] (the YAML file and typed config),
//! [`k8s::project`] (projection of API objects to canonical JSON bytes) and [`store`] (the
//! single-writer state with dedupe, relist diffs, revisions and snapshots),
//! [`fanout`] (frames encoded once, the bounded log of them, digests and one sender per agent),
//! [`grpc`] (the `cattail.v1.Sync` and health services), with [`tls`] (TLS on the gRPC port), and
//! [`auth`] (agent identity and authorization, plugged into the fan-out's `Admission` seam).
//! Lower modules never import higher ones: `config` <- `store` <- `k8s`, and
//! `store` <- `fanout` <- `tls` <- `grpc`. [`writer`] (the single
//! task that changes the store), [`replicas`] (the other ready replicas, for hints) and
//! [`serve`] (everything wired together) sit on top; the
//! `cattail` binary (`main.rs`, `args.rs`) only parses flags and handles signals.

pub mod admin;
pub mod args;
pub mod auth;
pub mod config;
pub mod fanout;
pub mod grpc;
pub mod k8s;
pub mod replicas;
pub mod serve;
pub mod store;
pub mod tls;
pub mod writer;
