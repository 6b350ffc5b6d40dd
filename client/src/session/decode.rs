//! Checking and decoding the frames of one `ServerMessage` before any of them is applied.
//!
//! [`decode_frames`] refuses the whole message on the first frame that is undecodable, over the
//! payload limit, for a resource or scope the agent did not subscribe to, or out of protocol
//! order. Because it runs before anything is applied, a bad message leaves the session exactly
//! as it was, so the agent can reconnect and resume from a state that is still valid.

use cattail_proto::Revision;
use cattail_proto::frame::decode_payload;
use cattail_proto::pb::{Frame, FramePayload, ResumeMode};

use super::welcome::Link;
use super::{CompletePoint, Error, Result, SubscriptionState};

/// One checked frame, ready to apply.
#[derive(Debug)]
pub(crate) struct DecodedFrame {
    /// The index of the subscription it belongs to.
    pub(crate) subscription: usize,
    /// The frame's revision.
    pub(crate) revision: Revision,
    /// True for a frame of a resync.
    pub(crate) replace: bool,
    /// The digest buckets a replace frame covers; empty for the whole (resource, scope).
    pub(crate) replaced_buckets: Vec<u32>,
    /// The decoded changes.
    pub(crate) payload: FramePayload,
}

/// Checks and decodes `frames` for a stream in state `link`.
///
/// `complete` is the session's complete point before this message; `max_payload_bytes` bounds
/// every decoded payload.
pub(crate) fn decode_frames(
    frames: Vec<Frame>,
    link: &Link,
    subscriptions: &[SubscriptionState],
    complete: Option<CompletePoint>,
    max_payload_bytes: usize,
) -> Result<Vec<DecodedFrame>> {
    let mut resync_open = link.resync.is_some();
    // The newest delta revision so far: deltas must move past the complete revision, in order.
    let mut delta_floor = complete
        .filter(|point| point.epoch == link.epoch)
        .map(|point| point.revision);
    let mut floor_is_strict = true;
    let mut decoded = Vec::with_capacity(frames.len());
    for frame in frames {
        let Some(index) = subscriptions
            .iter()
            .position(|subscription| *subscription.resource == frame.resource)
        else {
            return Err(Error::UnsubscribedFrame {
                resource: frame.resource,
            });
        };
        let subscription = &subscriptions[index];
        if frame.scope != subscription.scope {
            return Err(Error::ScopeMismatch {
                resource: frame.resource,
                expected: subscription.scope.clone(),
                got: frame.scope,
            });
        }
        if frame.replace {
            resync_open = true;
            let bucket_count = link.resources[index].digest_buckets;
            if let Some(&bucket) = frame
                .replaced_buckets
                .iter()
                .find(|&&bucket| bucket >= bucket_count)
            {
                return Err(Error::BucketOutOfRange {
                    resource: frame.resource,
                    bucket,
                    bucket_count,
                });
            }
        } else {
            check_delta_order(&frame, link, resync_open, delta_floor, floor_is_strict)?;
            delta_floor = Some(Revision(frame.revision));
            floor_is_strict = false;
        }
        let payload =
            decode_payload(&frame, max_payload_bytes).map_err(|source| Error::BadFrame {
                resource: frame.resource.clone(),
                revision: Revision(frame.revision),
                source,
            })?;
        decoded.push(DecodedFrame {
            subscription: index,
            revision: Revision(frame.revision),
            replace: frame.replace,
            replaced_buckets: frame.replaced_buckets,
            payload,
        });
    }
    Ok(decoded)
}

/// A delta is allowed only at a consistent point, and its revision moves forward: past the
/// complete revision, and not below an earlier delta of the same message.
fn check_delta_order(
    frame: &Frame,
    link: &Link,
    resync_open: bool,
    floor: Option<Revision>,
    floor_is_strict: bool,
) -> Result<()> {
    let revision = Revision(frame.revision);
    if resync_open {
        return Err(Error::DeltaDuringResync {
            resource: frame.resource.clone(),
            revision,
        });
    }
    if !link.synced && link.mode != ResumeMode::Deltas {
        return Err(Error::DeltaBeforeSynced {
            resource: frame.resource.clone(),
            revision,
        });
    }
    let backwards = match floor {
        Some(floor) if floor_is_strict => revision <= floor,
        Some(floor) => revision < floor,
        None => false,
    };
    if backwards {
        return Err(Error::RevisionWentBack {
            resource: frame.resource.clone(),
            revision,
            floor: floor.unwrap_or_default(),
        });
    }
    Ok(())
}
