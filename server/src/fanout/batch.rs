//! [`EncodedBatch`]: one published batch, encoded once per (resource, scope), as the log holds it.
//!
//! Every changed resource gets one unscoped frame with all its changes. A resource with a scope
//! field also gets one frame per scope its changes touch, built with `Change::for_scope`: an
//! object that moved off a node is a delete in that node's frame and an upsert in the new one.
//! Scopes the batch did not touch get no frame, so their agents pay nothing for it.

use std::collections::BTreeMap;
use std::collections::HashMap;

use cattail_proto::frame::FrameHeader;
use cattail_proto::pb::FramePayload;

use crate::store::{Change, Published, ScopedChange};

use super::Result;
use super::encode::{self, Encoded, FrameEncoder};
use super::log::LogEntry;
use super::message::Piece;
use super::resources::ResourceInfo;

/// The frames of one resource in one batch.
#[derive(Debug)]
pub(crate) struct EncodedResource {
    /// All the resource's changes: for unscoped subscribers.
    all: Piece,
    /// Per scope touched, what its subscribers must apply.
    scopes: HashMap<String, Piece>,
}

/// A published batch as pre-encoded pieces.
///
/// Invariant: `resources[i]` belongs to the hub's resource `i`, `None` when it did not change.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    resources: Vec<Option<EncodedResource>>,
    size: usize,
}

/// What encoding a batch cost, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchStats {
    /// Frames encoded.
    pub(crate) frames: u64,
    /// Payload sizes.
    pub(crate) bytes: Encoded,
}

impl EncodedBatch {
    /// Encodes `published` for the hub's `resources` (in hub order).
    pub(crate) fn encode(
        published: &Published,
        resources: &[ResourceInfo],
        encoder: &mut FrameEncoder,
    ) -> Result<(Self, BatchStats)> {
        let time = encode::unix_nanos(published.time);
        let mut stats = BatchStats::default();
        let mut size = 0;
        let mut encoded = Vec::with_capacity(resources.len());
        for info in resources {
            let changes = published.changes(&info.resource);
            if changes.is_empty() {
                encoded.push(None);
                continue;
            }
            let header = |scope: &str| FrameHeader {
                revision: published.revision.get(),
                resource: info.resource.as_str().to_owned(),
                scope: scope.to_owned(),
                replace: false,
                publish_time_unix_nanos: time,
                replaced_buckets: Vec::new(),
            };
            let (all, sizes) = encoder.piece(header(""), &unscoped_payload(changes), true)?;
            stats.frames += 1;
            stats.bytes.add(sizes);
            size += all.len();
            let mut scopes = HashMap::new();
            if info.scope_field.is_some() {
                for (scope, payload) in scoped_payloads(changes) {
                    let (piece, sizes) = encoder.piece(header(scope), &payload, true)?;
                    stats.frames += 1;
                    stats.bytes.add(sizes);
                    size += piece.len();
                    scopes.insert(scope.to_owned(), piece);
                }
            }
            encoded.push(Some(EncodedResource { all, scopes }));
        }
        let batch = Self {
            resources: encoded,
            size,
        };
        Ok((batch, stats))
    }

    /// The piece a subscriber of resource `index` in `scope` needs (`""` for unscoped), if any.
    pub(crate) fn piece(&self, index: usize, scope: &str) -> Option<&Piece> {
        let resource = self.resources.get(index)?.as_ref()?;
        if scope.is_empty() {
            Some(&resource.all)
        } else {
            resource.scopes.get(scope)
        }
    }
}

impl EncodedBatch {
    /// The resources this batch changes (hub indexes), each with the scopes it has frames for.
    pub(crate) fn touched(&self) -> impl Iterator<Item = (usize, impl Iterator<Item = &str>)> {
        self.resources
            .iter()
            .enumerate()
            .filter_map(|(index, resource)| {
                let resource = resource.as_ref()?;
                Some((index, resource.scopes.keys().map(String::as_str)))
            })
    }
}

impl LogEntry for EncodedBatch {
    fn size_bytes(&self) -> usize {
        self.size
    }
}

/// Every change of a resource, for unscoped subscribers.
pub(crate) fn unscoped_payload(changes: &[Change]) -> FramePayload {
    let mut payload = FramePayload::default();
    for change in changes {
        match change {
            Change::Upsert { object, .. } => payload.upserts.push(encode::upsert(object)),
            Change::Delete {
                namespace, name, ..
            } => payload.deletes.push(encode::delete(namespace, name)),
        }
    }
    payload
}

/// Per scope that the changes touch, what its subscribers must apply; sorted by scope.
pub(crate) fn scoped_payloads(changes: &[Change]) -> BTreeMap<&str, FramePayload> {
    let mut payloads: BTreeMap<&str, FramePayload> = BTreeMap::new();
    for change in changes {
        let (now, before) = match change {
            Change::Upsert {
                object,
                previous_scope,
            } => (object.scope.as_deref(), previous_scope.as_deref()),
            Change::Delete { scope, .. } => (scope.as_deref(), None),
        };
        let touched = [now, before.filter(|b| Some(*b) != now)];
        for scope in touched.into_iter().flatten() {
            let payload = payloads.entry(scope).or_default();
            match change.for_scope(scope) {
                Some(ScopedChange::Upsert(object)) => payload.upserts.push(encode::upsert(object)),
                Some(ScopedChange::Delete { namespace, name }) => {
                    payload.deletes.push(encode::delete(namespace, name));
                }
                None => {}
            }
        }
    }
    payloads
}
