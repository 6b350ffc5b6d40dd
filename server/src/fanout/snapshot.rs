//! [`SnapshotCache`]: the snapshot at one revision, encoded lazily once per (resource, scope) and
//! shared by every agent resynced from it; [`ReplaceChunks`]: replace frames of bounded size.
//!
//! The first agent to need a (resource, scope) encodes it: in place when it is small (a node's
//! pods), else on the blocking pool, at most one encode per core at a time. Agents arriving
//! meanwhile wait for that same encode instead of starting their own. If the waiting agent goes
//! away, the next one finishes the job. Chunks hold at most `snapshot_chunk_bytes` of
//! uncompressed payload (one object larger than that gets a chunk of its own).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use cattail_proto::frame::FrameHeader;
use cattail_proto::pb::FramePayload;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::Resource;
use crate::store::{ProjectedObject, Revision, Snapshot};

use super::blocking::BlockingPool;
use super::encode::{self, Encoded, FrameEncoder};
use super::message::Piece;
use super::resources::ServedResources;
use super::{Error, FanoutConfig, Result, metrics};

/// A (resource, scope) of at most this many objects is encoded on the asking task's thread;
/// a bigger one on the blocking pool.
const INLINE_OBJECTS: usize = 128;

/// The encoded replace frames of one (resource, scope).
pub(crate) type Chunks = Arc<Vec<Piece>>;

/// Per (hub resource index, scope), the encoding of that pair, made once.
type Entries = HashMap<(usize, String), Arc<OnceCell<Chunks>>>;

/// What encoding a snapshot's frames needs from its surroundings: passed in by the hub, so
/// this module depends on nothing above it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkContext<'a> {
    /// The served resources, to turn a hub index into a resource.
    pub(crate) resources: &'a ServedResources,
    /// `zstd_level` and `snapshot_chunk_bytes`.
    pub(crate) config: &'a FanoutConfig,
    /// Where a large encode runs.
    pub(crate) pool: &'a BlockingPool,
    /// Counts each (resource, scope) encoded.
    pub(crate) encoded: &'a AtomicU64,
}

/// The snapshot at one revision and its encodings, made on demand.
#[derive(Debug)]
pub(crate) struct SnapshotCache {
    snapshot: Snapshot,
    revision: Revision,
    time: SystemTime,
    created: Instant,
    entries: Mutex<Entries>,
}

impl SnapshotCache {
    /// A cache of `snapshot`, which is the state at `revision`, published at `time`.
    pub(crate) fn new(snapshot: Snapshot, revision: Revision, time: SystemTime) -> Self {
        Self {
            snapshot,
            revision,
            time,
            created: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How many objects of `resource` are in `scope` (`""`: all of them).
    fn len(&self, resource: &Resource, scope: &str) -> usize {
        if scope.is_empty() {
            self.snapshot.len(resource).unwrap_or(0)
        } else {
            self.snapshot.scope_len(resource, scope)
        }
    }

    /// The revision of the snapshot: the `Synced` of a resync from it.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// How long ago the cache was made.
    pub(crate) fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// The replace frames of hub resource `index` in `scope` (`""`: unscoped), encoded by the
    /// first caller and shared with every other.
    pub(crate) async fn chunks(
        &self,
        context: ChunkContext<'_>,
        index: usize,
        scope: &str,
    ) -> Result<Chunks> {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(entries.entry((index, scope.to_owned())).or_default())
        };
        let chunks = cell
            .get_or_try_init(|| async {
                let info = context
                    .resources
                    .get(index)
                    .ok_or_else(|| Error::Encode(format!("no resource {index}")))?;
                let snapshot = self.snapshot.clone();
                let resource = info.resource.clone();
                let scope = scope.to_owned();
                let header = FrameHeader {
                    revision: self.revision.get(),
                    resource: resource.as_str().to_owned(),
                    scope: scope.clone(),
                    replace: true,
                    publish_time_unix_nanos: encode::unix_nanos(self.time),
                    replaced_buckets: Vec::new(),
                };
                let inline = self.len(&info.resource, &scope) <= INLINE_OBJECTS;
                let level = context.config.zstd_level;
                let chunk_bytes = context.config.snapshot_chunk_bytes;
                let encode = move || {
                    encode::with_encoder(level, |encoder| {
                        let mut chunks = ReplaceChunks::new(encoder, header, chunk_bytes, true);
                        let objects: Box<dyn Iterator<Item = &ProjectedObject>> =
                            if scope.is_empty() {
                                Box::new(snapshot.objects(&resource).into_iter().flatten())
                            } else {
                                Box::new(snapshot.scoped(&resource, &scope).into_iter().flatten())
                            };
                        for object in objects {
                            chunks.object(object)?;
                        }
                        chunks.finish()
                    })
                };
                // Encoding a large resource takes long enough to stall other tasks on this
                // worker, so the blocking pool runs it. A small one (a node's pods) is cheaper
                // to encode here than to hand over: a connect storm makes one per node.
                let (pieces, sizes) = if inline {
                    encode()?
                } else {
                    context.pool.run(encode).await?
                };
                context.encoded.fetch_add(1, Ordering::Relaxed);
                metrics::snapshot_encoded(sizes);
                Ok::<_, Error>(Arc::new(pieces))
            })
            .await?;
        Ok(Arc::clone(chunks))
    }
}

/// Builds the replace frames of one (resource, scope), a chunk at a time.
///
/// With buckets (a digest resync), every frame lists the buckets it covers; a bucket whose
/// objects span two frames is listed in both, which replace semantics allow.
pub(crate) struct ReplaceChunks<'e> {
    encoder: &'e mut FrameEncoder,
    header: FrameHeader,
    chunk_bytes: usize,
    allow_zstd: bool,
    payload: FramePayload,
    size: usize,
    buckets: Vec<u32>,
    pieces: Vec<Piece>,
    sizes: Encoded,
}

impl<'e> ReplaceChunks<'e> {
    /// Frames like `header` (its `replaced_buckets` is filled in per frame).
    pub(crate) fn new(
        encoder: &'e mut FrameEncoder,
        header: FrameHeader,
        chunk_bytes: usize,
        allow_zstd: bool,
    ) -> Self {
        Self {
            encoder,
            header,
            chunk_bytes,
            allow_zstd,
            payload: FramePayload::default(),
            size: 0,
            buckets: Vec::new(),
            pieces: Vec::new(),
            sizes: Encoded::default(),
        }
    }

    /// Starts covering `bucket`: the objects added next are in it.
    pub(crate) fn bucket(&mut self, bucket: u32) {
        self.buckets.push(bucket);
    }

    /// Adds one object, closing the current frame first if it would grow past the chunk size.
    pub(crate) fn object(&mut self, object: &ProjectedObject) -> Result<()> {
        let upsert = encode::upsert(object);
        let len = encode::upsert_len(&upsert);
        if !self.payload.upserts.is_empty() && self.size + len > self.chunk_bytes {
            self.flush()?;
            // The bucket being filled continues in the next frame.
            if let Some(current) = self.buckets.last().copied() {
                self.buckets = vec![current];
            }
        }
        self.size += len;
        self.payload.upserts.push(upsert);
        Ok(())
    }

    /// The frames, at least one (an empty one for an empty scope), and their sizes.
    pub(crate) fn finish(mut self) -> Result<(Vec<Piece>, Encoded)> {
        if self.pieces.is_empty() || !self.payload.upserts.is_empty() || !self.buckets.is_empty() {
            self.flush()?;
        }
        Ok((self.pieces, self.sizes))
    }

    fn flush(&mut self) -> Result<()> {
        let mut header = self.header.clone();
        header.replaced_buckets = std::mem::take(&mut self.buckets);
        let payload = std::mem::take(&mut self.payload);
        let (piece, sizes) = self.encoder.piece(header, &payload, self.allow_zstd)?;
        self.pieces.push(piece);
        self.sizes.add(sizes);
        self.size = 0;
        Ok(())
    }
}
