//! Checking a `Welcome` and turning it into the [`Link`] state of one stream.
//!
//! A `Welcome` is accepted only when the session can follow the stream it announces: the
//! protocol version is 1, the epoch has 16 bytes, the resume mode is known, `RESUME_MODE_DELTAS`
//! answers a `Resume` from the same epoch, and every subscribed resource is served with a valid
//! digest bucket count. Nothing here mutates the session.

use cattail_proto::pb::{ResumeMode, Welcome};
use cattail_proto::{Epoch, PROTOCOL_VERSION, digest};

use super::resync::Resync;
use super::{CompletePoint, Error, Result, SubscriptionState};

/// What the session knows about its current stream, from the `Welcome` on.
#[derive(Debug)]
pub(crate) struct Link {
    /// The server process's epoch.
    pub(crate) epoch: Epoch,
    /// How the server brings the agent up to date before the first `Synced`.
    pub(crate) mode: ResumeMode,
    /// Per subscription index: the server's fingerprint and digest bucket count for it.
    pub(crate) resources: Vec<ServedResource>,
    /// The server's `max_hello_bytes`, for trimming the next `Hello`.
    pub(crate) max_hello_bytes: Option<u32>,
    /// True once the first `Synced` of this stream has been applied.
    pub(crate) synced: bool,
    /// The resync being staged, from its first replace frame to its `Synced`.
    pub(crate) resync: Option<Resync>,
}

/// The server's description of one subscribed resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServedResource {
    /// The projection fingerprint.
    pub(crate) fingerprint: u64,
    /// The digest bucket count, a valid power of two.
    pub(crate) digest_buckets: u32,
}

/// Checks a `Welcome` against the session's subscriptions and the `Resume` it sent.
pub(crate) fn accept_welcome(
    welcome: &Welcome,
    subscriptions: &[SubscriptionState],
    resumed_from: Option<CompletePoint>,
) -> Result<Link> {
    if welcome.protocol_version != PROTOCOL_VERSION {
        return Err(Error::UnsupportedProtocolVersion {
            got: welcome.protocol_version,
        });
    }
    let epoch = Epoch::from_slice(&welcome.epoch).map_err(Error::InvalidEpoch)?;
    let mode = match ResumeMode::try_from(welcome.resume_mode) {
        Ok(ResumeMode::Unspecified) | Err(_) => {
            return Err(Error::InvalidResumeMode(welcome.resume_mode));
        }
        Ok(mode) => mode,
    };
    if mode == ResumeMode::Deltas && resumed_from.is_none_or(|point| point.epoch != epoch) {
        return Err(Error::DeltasWithoutResume {
            server_epoch: epoch.to_string(),
        });
    }
    let mut resources = Vec::with_capacity(subscriptions.len());
    for subscription in subscriptions {
        let Some(info) = welcome
            .resources
            .iter()
            .find(|info| info.resource == *subscription.resource)
        else {
            let served: Vec<&str> = welcome
                .resources
                .iter()
                .map(|info| info.resource.as_str())
                .collect();
            return Err(Error::NotServed {
                resource: subscription.resource.to_string(),
                served: served.join(", "),
            });
        };
        digest::check_bucket_count(u64::from(info.digest_buckets)).map_err(|source| {
            Error::InvalidBucketCount {
                resource: info.resource.clone(),
                source,
            }
        })?;
        resources.push(ServedResource {
            fingerprint: info.fingerprint,
            digest_buckets: info.digest_buckets,
        });
    }
    Ok(Link {
        epoch,
        mode,
        resources,
        max_hello_bytes: welcome.limits.map(|limits| limits.max_hello_bytes),
        synced: false,
        resync: None,
    })
}
