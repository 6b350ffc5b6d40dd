//! The single-writer state: dedupe, relist diffs, revisions and snapshots.
//!
//! One owner (the writer task) holds the `Store` and feeds it `Batch`es; `commit` compares each
//! write against the stored content, applies only real changes, and assigns the next `Revision`
//! only when something changed. Readers never touch the store: they get `Snapshot`s (O(1) to
//! take) and `Published` batches. The store is plain synchronous code with no runtime in it.

mod batch;
mod object;
mod revision;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use imbl::OrdMap;

use crate::config::Resource;

pub use batch::{Batch, BatchCounters, Change, Published, ResourceChanges, ScopedChange};
pub use cattail_proto::{Epoch, Revision};
pub use object::{ObjectKey, ProjectedObject};
pub use revision::random_epoch;
pub use snapshot::Snapshot;

use state::ResourceState;

/// Why the store refused an operation. Each is a bug in the caller, never a data problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A batch or relist named a resource the store was not built with.
    #[error("resource {0} is not configured: add it to the config's `resources`")]
    UnknownResource(Resource),
    /// `relist_apply` or `end_relist` was called without `begin_relist`.
    #[error("no relist of {0} is in progress: call begin_relist first")]
    NoRelist(Resource),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The state of every configured resource, owned by one writer.
#[derive(Debug)]
pub struct Store {
    epoch: Epoch,
    revision: Revision,
    resources: OrdMap<Resource, ResourceState>,
    /// Relists in progress: the objects listed so far, per resource.
    relists: BTreeMap<Resource, Vec<ProjectedObject>>,
    /// Resources whose first relist has been committed.
    synced: BTreeSet<Resource>,
    /// Counts over every commit so far.
    totals: BatchCounters,
}

impl Store {
    /// An empty store at `Revision::ZERO` for these resources, with a fresh random epoch.
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        Self::with_epoch(resources, random_epoch())
    }

    /// Like [`Store::new`] with a given epoch (for tests and reproducible tools).
    pub fn with_epoch(resources: impl IntoIterator<Item = Resource>, epoch: Epoch) -> Self {
        Self {
            epoch,
            revision: Revision::ZERO,
            resources: resources
                .into_iter()
                .map(|r| (r, ResourceState::default()))
                .collect(),
            relists: BTreeMap::new(),
            synced: BTreeSet::new(),
            totals: BatchCounters::default(),
        }
    }

    /// This process's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The revision of the last published batch.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The configured resources, sorted.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.resources.keys()
    }

    /// The current state, frozen. O(1).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            epoch: self.epoch,
            revision: self.revision,
            resources: self.resources.clone(),
        }
    }

    /// Counts over every commit so far.
    pub fn counters(&self) -> BatchCounters {
        self.totals
    }

    /// Whether the first relist of `resource` has been committed.
    pub fn is_synced(&self, resource: &Resource) -> bool {
        self.synced.contains(resource)
    }

    /// Whether every configured resource has committed its first relist: the point where the
    /// server stops reporting `WaitingForDatastore`.
    pub fn all_synced(&self) -> bool {
        self.resources.keys().all(|r| self.synced.contains(r))
    }

    /// Whether a relist of `resource` is in progress.
    pub fn is_relisting(&self, resource: &Resource) -> bool {
        self.relists.contains_key(resource)
    }

    /// Starts (or restarts, dropping what was listed so far) a relist of `resource`. Until
    /// `end_relist`, the stored state of the resource is served unchanged.
    pub fn begin_relist(&mut self, resource: &Resource) -> Result<()> {
        self.check(resource)?;
        self.relists.insert(resource.clone(), Vec::new());
        Ok(())
    }

    /// Adds one listed object to the relist of `resource`.
    pub fn relist_apply(&mut self, resource: &Resource, object: ProjectedObject) -> Result<()> {
        match self.relists.get_mut(resource) {
            Some(listed) => {
                listed.push(object);
                Ok(())
            }
            None => Err(Error::NoRelist(resource.clone())),
        }
    }

    /// Ends the relist of `resource` and puts it into `batch` as a replacement of the whole
    /// resource. At commit it becomes upserts of what changed and deletions of keys not listed;
    /// a relist that found the stored state unchanged publishes nothing.
    pub fn end_relist(&mut self, resource: &Resource, batch: &mut Batch) -> Result<()> {
        let listed = self
            .relists
            .remove(resource)
            .ok_or_else(|| Error::NoRelist(resource.clone()))?;
        batch.replace(resource, listed);
        Ok(())
    }

    /// Commits `batch` at the current wall-clock time. See [`Store::commit_at`].
    pub fn commit(&mut self, batch: Batch) -> Result<Option<Published>> {
        self.commit_at(batch, SystemTime::now())
    }

    /// Applies the real changes of `batch` and, if there are any, assigns the next revision and
    /// returns them as published at `time`. Writes identical to the stored content and deletes
    /// of absent keys are dropped and counted. The batch is checked before anything is applied:
    /// if it names an unknown resource, nothing changes.
    pub fn commit_at(&mut self, batch: Batch, time: SystemTime) -> Result<Option<Published>> {
        for resource in batch.resources.keys() {
            self.check(resource)?;
        }
        let Batch {
            resources: pending,
            mut counters,
        } = batch;
        let mut published = Vec::new();
        for (resource, pending) in pending {
            let relisted = pending.replace.is_some();
            let Some(state) = self.resources.get_mut(&resource) else {
                return Err(Error::UnknownResource(resource));
            };
            let applied = state.apply(pending);
            counters.deduplicated += applied.deduplicated;
            counters.published += applied.changes.len() as u64;
            if relisted {
                self.synced.insert(resource.clone());
            }
            if !applied.changes.is_empty() {
                published.push(ResourceChanges {
                    resource,
                    changes: applied.changes,
                });
            }
        }
        self.totals.add(&counters);
        if published.is_empty() {
            return Ok(None);
        }
        self.revision = self.revision.next();
        Ok(Some(Published {
            revision: self.revision,
            time,
            resources: published,
            counters,
        }))
    }

    fn check(&self, resource: &Resource) -> Result<()> {
        if self.resources.contains_key(resource) {
            Ok(())
        } else {
            Err(Error::UnknownResource(resource.clone()))
        }
    }
}
