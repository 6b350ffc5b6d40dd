//! cattail's wire protocol, `cattail.v1`: the generated gRPC types, and the rules that a server
//! and every agent must apply identically.
//!
//! - [`pb`]: the prost messages and the tonic client and server for `cattail/v1/sync.proto`,
//!   generated ahead of time and checked in (`tests/codegen.rs` keeps them current).
//! - [`digest`]: the bucketed XOR digest agents send to resume without a full snapshot.
//! - [`frame`]: payload encoding, bounded decoding, and pre-encoded `ServerMessage` pieces.
//! - [`hello`]: the protocol checks on an agent's opening message.
//! - [`resource`]: the `group/version/plural` resource names.
//! - [`Epoch`], [`Revision`] and [`ObjectKey`]: the names of a server state and of an object,
//!   shared by the server, the client and the load test.
//!
//! docs/PROTOCOL.md is the specification; this crate is its Rust implementation.

#![warn(missing_docs)]

use std::time::Duration;

/// The protobuf messages and gRPC service of package `cattail.v1`.
#[path = "gen/cattail.v1.rs"]
#[rustfmt::skip]
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod pb;

pub mod digest;
mod error;
pub mod frame;
pub mod hello;
mod object;
pub mod resource;
mod revision;

pub use digest::{DEFAULT_DIGEST_BUCKETS, Digest, MAX_DIGEST_BUCKETS};
pub use error::{Error, Result};
pub use object::ObjectKey;
pub use resource::Resource;
pub use revision::{EPOCH_LEN, Epoch, Revision};

/// The protocol version this crate speaks: `Hello.protocol_version` and
/// `Welcome.protocol_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest `Hello` a server accepts unless configured otherwise: 4 MiB.
///
/// A resuming `Hello` carries one digest per subscription, 32 KiB each at the default 4096
/// buckets, so the limit must hold [`DEFAULT_MAX_SUBSCRIPTIONS`] of them (about 2.1 MiB).
pub const DEFAULT_MAX_HELLO_BYTES: u32 = 4 * 1024 * 1024;

/// The largest gRPC message either side sends unless configured otherwise: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 16 * 1024 * 1024;

/// How often a server sends a `Heartbeat` on an idle stream unless configured otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// The most subscriptions a `Hello` may carry unless the server is configured otherwise.
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 64;

/// How long a server waits for the `Hello` after a stream opens, unless configured otherwise.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP/2 `SETTINGS_MAX_FRAME_SIZE` an agent should advertise: 128 KiB.
///
/// A server's messages are about 64 KiB (snapshots and catch-up) or much smaller (live deltas).
/// At HTTP/2's default of 16 KiB each large message goes out as several DATA frames, one
/// write each; at this size it is one. It also bounds what the agent's HTTP/2 reader buffers
/// for one frame.
pub const AGENT_MAX_FRAME_BYTES: u32 = 128 * 1024;

/// The `Limits` a server with the default configuration sends in its `Welcome`.
#[must_use]
pub fn default_limits() -> pb::Limits {
    pb::Limits {
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        max_hello_bytes: DEFAULT_MAX_HELLO_BYTES,
        heartbeat_interval_ms: u32::try_from(DEFAULT_HEARTBEAT_INTERVAL.as_millis())
            .unwrap_or(u32::MAX),
        max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_match_the_documented_numbers() {
        let limits = default_limits();
        assert_eq!(limits.max_message_bytes, 16 << 20);
        assert_eq!(limits.max_hello_bytes, 4 << 20);
        assert_eq!(limits.heartbeat_interval_ms, 10_000);
        assert_eq!(limits.max_subscriptions, 64);
    }

    #[test]
    fn the_generated_service_has_the_documented_path() {
        // Agents in other languages dial the method `/cattail.v1.Sync/Watch`.
        assert_eq!(pb::sync_server::SERVICE_NAME, "cattail.v1.Sync");
    }
}
