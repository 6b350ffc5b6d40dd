//! Bringing one agent up to date: the plan made under the hub's lock, the delta messages taken
//! from the log, and the resyncs (snapshot or digest) built from shared or per-agent frames.
//! These are functions over a read-only view of the hub (`Hub::view` and the [`Hub`]'s read
//! methods); nothing here changes the hub, except that a resync may leave an encoded snapshot
//! in its cache for the next agent.
//!
//! Delta messages join shared pieces only; a revision's frames never straddle two messages. A
//! step takes at most one message's worth of batches, so a lagging agent never holds more than
//! one message of references. A digest resync's bucket frames are the one per-agent encoding:
//! they are built on the blocking pool, and whole (resource, scope) pairs come from the cache.

use std::time::SystemTime;

use bytes::Bytes;
use cattail_proto::Digest;
use cattail_proto::frame::{FrameHeader, encode_piece};
use cattail_proto::pb::{self, ResumeMode, ServerMessage};

use crate::store::{Revision, Snapshot};

use super::digests::{digest_of, group_by_bucket};
use super::encode::{unix_nanos, with_encoder};
use super::hello::AgentHello;
use super::message::{MessageSplitter, OutgoingMessage, Piece};
use super::resume::{self, Decision};
use super::snapshot::{ReplaceChunks, SnapshotCache};
use super::{Error, Hub, Result};

/// At most this many batches are looked at per step, to bound the time under the read lock.
const MAX_BATCHES_PER_STEP: usize = 4096;

/// The next thing to send to an agent whose cursor is behind the head.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing after the cursor.
    UpToDate,
    /// A message (maybe empty, when no batch touched the agent) that moves the cursor.
    Deltas {
        message: OutgoingMessage,
        cursor: Revision,
        at_head: bool,
    },
    /// The agent needs a resync to at least `min_revision`.
    Resync {
        min_revision: Revision,
        reason: &'static str,
    },
}

/// How a new agent will be brought up to date, decided under the lock.
#[derive(Debug)]
pub(crate) enum Plan {
    Deltas { head: Revision, from: Revision },
    Digest(DigestPlan),
    Snapshot { head: Revision },
}

/// The state a digest resync compares against: the head when the plan was made.
#[derive(Debug)]
pub(crate) struct DigestPlan {
    snapshot: Snapshot,
    time: SystemTime,
    /// Per subscription: the agent's usable digest and, for unscoped ones, ours.
    digests: Vec<(Option<Digest>, Option<Digest>)>,
}

impl Plan {
    pub(crate) fn head(&self) -> Revision {
        match self {
            Plan::Deltas { head, .. } | Plan::Snapshot { head } => *head,
            Plan::Digest(plan) => plan.snapshot.revision(),
        }
    }

    pub(crate) fn mode(&self) -> ResumeMode {
        match self {
            Plan::Deltas { .. } => ResumeMode::Deltas,
            Plan::Digest(_) => ResumeMode::Digest,
            Plan::Snapshot { .. } => ResumeMode::Snapshot,
        }
    }
}

/// What a digest resync sends for one subscription.
enum Replacement {
    /// The whole pair, from the shared cache.
    Whole,
    /// Frames for the differing buckets only (none when nothing differs).
    Buckets(Vec<Piece>),
}

/// Decides how to bring `agent` up to date (docs/PROTOCOL.md section 6).
pub(crate) fn plan(hub: &Hub, agent: &AgentHello) -> Plan {
    let view = hub.view();
    let head = view.head();
    let decision = resume::decide(
        agent.resume.as_ref(),
        hub.epoch(),
        |from| view.since(from).is_some(),
        &agent.subscriptions,
        hub.resources().infos(),
        hub.config().digest_buckets,
    );
    match decision {
        Decision::Deltas { from } => Plan::Deltas { head, from },
        Decision::Snapshot => Plan::Snapshot { head },
        Decision::Digest { digests } => Plan::Digest(DigestPlan {
            snapshot: view.snapshot().clone(),
            time: view.head_time(),
            digests: digests
                .into_iter()
                .zip(&agent.subscriptions)
                .map(|(theirs, sub)| {
                    let ours = (theirs.is_some() && sub.scope.is_empty())
                        .then(|| view.digest(sub.index).cloned())
                        .flatten();
                    (theirs, ours)
                })
                .collect(),
        }),
    }
}

/// The deltas after `cursor` that fit in one message, or why the agent needs a resync.
pub(crate) fn next_deltas(hub: &Hub, agent: &AgentHello, cursor: Revision) -> Step {
    let view = hub.view();
    let config = hub.config();
    let max = config.max_message_bytes as usize;
    // Several batches join up to the target; one batch alone may use the whole limit.
    let target = config.target_message_bytes;
    let derived = hub.plain_frames_derived();
    let Some(batches) = view.since(cursor) else {
        return Step::Resync {
            min_revision: cursor,
            reason: "fell_off_log",
        };
    };
    let mut message = OutgoingMessage::default();
    let mut reached = cursor;
    for item in batches.take(MAX_BATCHES_PER_STEP) {
        let group: Vec<(Bytes, u32)> = agent
            .subscriptions
            .iter()
            .filter_map(|sub| item.entry.piece(sub.index, &sub.scope))
            .map(|piece| {
                let bytes = piece.bytes(agent.encoding, derived);
                (bytes, piece.uncompressed_len())
            })
            .collect();
        // A batch for other scopes costs a lookup per subscription (an empty `Vec` does not
        // allocate) and moves the cursor.
        if group.is_empty() {
            reached = item.revision;
            continue;
        }
        let len: usize = group.iter().map(|(bytes, _)| bytes.len()).sum();
        // Leave room for a Synced after the frames.
        let oversized = len + 64 > max || group.iter().any(|(_, raw)| *raw as usize > max);
        if oversized && message.is_empty() {
            return Step::Resync {
                min_revision: item.revision,
                reason: "oversized_batch",
            };
        }
        if oversized || (!message.is_empty() && message.len() + len + 64 > target) {
            break;
        }
        for (bytes, _) in group {
            message.push_frame(bytes);
        }
        reached = item.revision;
    }
    if reached == cursor {
        return Step::UpToDate;
    }
    Step::Deltas {
        message,
        cursor: reached,
        at_head: reached == view.head(),
    }
}

/// `Welcome` for an agent accepted at `head` in `mode`.
pub(crate) fn welcome_piece(hub: &Hub, head: Revision, mode: ResumeMode) -> Bytes {
    let config = hub.config();
    encode_piece(&ServerMessage {
        welcome: Some(pb::Welcome {
            protocol_version: cattail_proto::PROTOCOL_VERSION,
            server_id: config.server_id.clone(),
            epoch: hub.epoch().to_bytes(),
            head_revision: head.get(),
            resources: hub.resources().welcome().to_vec(),
            limits: Some(config.limits()),
            resume_mode: mode as i32,
        }),
        ..ServerMessage::default()
    })
}

/// Adds a resync of every subscription from `cache`, closed by its `Synced`; returns its
/// revision.
pub(crate) async fn add_snapshot_resync(
    hub: &Hub,
    agent: &AgentHello,
    cache: &SnapshotCache,
    splitter: &mut MessageSplitter,
) -> Result<Revision> {
    for sub in &agent.subscriptions {
        add_whole(hub, agent, cache, sub.index, &sub.scope, splitter).await?;
    }
    splitter.control(synced_piece(cache.revision()));
    Ok(cache.revision())
}

/// Adds a digest resync at the plan's revision, closed by its `Synced`; returns the revision.
pub(crate) async fn add_digest_resync(
    hub: &Hub,
    agent: &AgentHello,
    plan: DigestPlan,
    splitter: &mut MessageSplitter,
) -> Result<Revision> {
    let revision = plan.snapshot.revision();
    let snapshot = plan.snapshot.clone();
    let time = plan.time;
    let resync_agent = agent.clone();
    let owned = hub.clone();
    let replacements = hub
        .pool()
        .run(move || bucket_replacements(&owned, &resync_agent, plan))
        .await?;
    let mut cache = None;
    for (sub, replacement) in agent.subscriptions.iter().zip(replacements) {
        match replacement {
            Replacement::Whole => {
                let cache = cache.get_or_insert_with(|| hub.snapshot_cache_at(&snapshot, time));
                add_whole(hub, agent, cache, sub.index, &sub.scope, splitter).await?;
            }
            Replacement::Buckets(pieces) => {
                let derived = hub.plain_frames_derived();
                for piece in pieces {
                    splitter.group(vec![piece.bytes(agent.encoding, derived)]);
                }
            }
        }
    }
    splitter.control(synced_piece(revision));
    Ok(revision)
}

async fn add_whole(
    hub: &Hub,
    agent: &AgentHello,
    cache: &SnapshotCache,
    index: usize,
    scope: &str,
    splitter: &mut MessageSplitter,
) -> Result<()> {
    let chunks = cache.chunks(hub.chunk_context(), index, scope).await?;
    let derived = hub.plain_frames_derived();
    for piece in chunks.iter() {
        splitter.group(vec![piece.bytes(agent.encoding, derived)]);
    }
    Ok(())
}

/// Per subscription, what a digest resync sends. Runs on the blocking pool.
fn bucket_replacements(
    hub: &Hub,
    agent: &AgentHello,
    plan: DigestPlan,
) -> Result<Vec<Replacement>> {
    let config = hub.config();
    let bucket_count = config.digest_buckets;
    let snapshot = &plan.snapshot;
    let mut replacements = Vec::with_capacity(agent.subscriptions.len());
    for (sub, (theirs, ours)) in agent.subscriptions.iter().zip(plan.digests) {
        let Some(theirs) = theirs else {
            replacements.push(Replacement::Whole);
            continue;
        };
        let Some(info) = hub.resources().get(sub.index) else {
            return Err(Error::Encode(format!("no resource {}", sub.index)));
        };
        let resource = &info.resource;
        let scoped = || snapshot.scoped(resource, &sub.scope).into_iter().flatten();
        let ours = match ours {
            Some(ours) => ours,
            None => digest_of(scoped(), bucket_count),
        };
        let differing = ours
            .differing_buckets(theirs.buckets())
            .map_err(|e| Error::Encode(e.to_string()))?;
        // Past half the buckets, the shared whole snapshot is cheaper than our own frames.
        if differing.len() * 2 > bucket_count as usize {
            replacements.push(Replacement::Whole);
            continue;
        }
        if differing.is_empty() {
            replacements.push(Replacement::Buckets(Vec::new()));
            continue;
        }
        let header = FrameHeader {
            revision: snapshot.revision().get(),
            resource: resource.as_str().to_owned(),
            scope: sub.scope.clone(),
            replace: true,
            publish_time_unix_nanos: unix_nanos(plan.time),
            replaced_buckets: Vec::new(),
        };
        let allow_zstd = agent.encoding == pb::Encoding::ProtoZstd;
        let pieces = with_encoder(config.zstd_level, |encoder| {
            let mut chunks =
                ReplaceChunks::new(encoder, header, config.snapshot_chunk_bytes, allow_zstd);
            let groups = if sub.scope.is_empty() {
                let all = snapshot.objects(resource).into_iter().flatten();
                group_by_bucket(all, &differing, bucket_count)
            } else {
                group_by_bucket(scoped(), &differing, bucket_count)
            };
            for (bucket, objects) in groups {
                chunks.bucket(bucket);
                for object in objects {
                    chunks.object(object)?;
                }
            }
            chunks.finish()
        })?;
        replacements.push(Replacement::Buckets(pieces.0));
    }
    Ok(replacements)
}

/// `ServerMessage{synced: Synced{revision}}`.
pub(crate) fn synced_piece(revision: Revision) -> Bytes {
    encode_piece(&ServerMessage {
        synced: Some(pb::Synced {
            revision: revision.get(),
        }),
        ..ServerMessage::default()
    })
}

/// `ServerMessage{heartbeat}` for a stream that has delivered everything up to `revision`.
pub(crate) fn heartbeat_piece(revision: Revision, now: SystemTime) -> Bytes {
    encode_piece(&ServerMessage {
        heartbeat: Some(pb::Heartbeat {
            head_revision: revision.get(),
            server_time_unix_nanos: unix_nanos(now),
        }),
        ..ServerMessage::default()
    })
}
