//! `Batch` (writes gathered for one commit) and `Published` (what a commit made public).
//!
//! A batch collapses as it fills: a later write to a key replaces the earlier one, and a relist
//! (`replace`) supersedes every earlier write to its resource. Nothing is compared against the
//! store until commit, so a create followed by a delete of a new key leaves nothing to publish.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::config::Resource;

use super::{ObjectKey, ProjectedObject, Revision};

/// One pending write to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Create or update to this content.
    Apply(ProjectedObject),
    /// Remove the key.
    Delete,
}

/// The pending writes to one resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct PendingResource {
    /// A full relisted set that replaces the resource's content, if a relist ended in this batch.
    pub(crate) replace: Option<BTreeMap<ObjectKey, ProjectedObject>>,
    /// Writes after the relist (or all writes, without one), last write per key.
    pub(crate) ops: BTreeMap<ObjectKey, Op>,
}

/// Writes gathered for one commit, collapsed per key.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) resources: BTreeMap<Resource, PendingResource>,
    pub(crate) counters: BatchCounters,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or updates an object. A later write to the same key in this batch replaces it.
    pub fn apply(&mut self, resource: &Resource, object: ProjectedObject) {
        let key = object.key();
        self.put(resource, key, Op::Apply(object));
    }

    /// Deletes an object. Dropped at commit if the store does not hold the key.
    pub fn delete(&mut self, resource: &Resource, namespace: &str, name: &str) {
        self.put(resource, ObjectKey::new(namespace, name), Op::Delete);
    }

    /// Replaces the whole content of `resource` with `objects`, superseding earlier writes to it
    /// in this batch. The store turns it into upserts of what changed and deletions of keys not
    /// in `objects`. `Store::end_relist` calls this.
    pub fn replace(
        &mut self,
        resource: &Resource,
        objects: impl IntoIterator<Item = ProjectedObject>,
    ) {
        let mut received = 0u64;
        let set: BTreeMap<ObjectKey, ProjectedObject> = objects
            .into_iter()
            .inspect(|_| received += 1)
            .map(|o| (o.key(), o))
            .collect();
        // A key listed twice keeps its last object; the earlier one counts as collapsed.
        self.counters.received += received;
        self.counters.collapsed += received - set.len() as u64;
        self.replace_set(resource, set);
    }

    /// Appends the writes of a later batch, as if they had been made on this one.
    pub fn merge(&mut self, later: Batch) {
        self.counters.add(&later.counters);
        for (resource, pending) in later.resources {
            if let Some(set) = pending.replace {
                self.replace_set(&resource, set);
            }
            for (key, op) in pending.ops {
                self.put_op(&resource, key, op);
            }
        }
    }

    /// The number of pending writes (keys written, plus relisted objects).
    pub fn len(&self) -> usize {
        self.resources
            .values()
            .map(|p| p.ops.len() + p.replace.as_ref().map_or(0, BTreeMap::len))
            .sum()
    }

    /// Whether the batch holds no write and no relist. An empty relist still counts: it can
    /// delete everything, and it marks its resource as synced.
    pub fn is_empty(&self) -> bool {
        self.resources
            .values()
            .all(|p| p.ops.is_empty() && p.replace.is_none())
    }

    /// What this batch's writes came to so far; `deduplicated` and `published` are filled in
    /// at commit.
    pub fn counters(&self) -> BatchCounters {
        self.counters
    }

    fn put(&mut self, resource: &Resource, key: ObjectKey, op: Op) {
        self.counters.received += 1;
        self.put_op(resource, key, op);
    }

    /// Records `op`, counting an overwritten write as collapsed; `received` is the caller's.
    fn put_op(&mut self, resource: &Resource, key: ObjectKey, op: Op) {
        // Cloning a `Resource` is one reference-count increment.
        let pending = self.resources.entry(resource.clone()).or_default();
        if pending.ops.insert(key, op).is_some() {
            self.counters.collapsed += 1;
        }
    }

    /// Installs a relisted set, counting the writes it supersedes as collapsed.
    fn replace_set(&mut self, resource: &Resource, set: BTreeMap<ObjectKey, ProjectedObject>) {
        let pending = self.resources.entry(resource.clone()).or_default();
        let superseded = pending.ops.len() + pending.replace.as_ref().map_or(0, BTreeMap::len);
        pending.ops.clear();
        pending.replace = Some(set);
        self.counters.collapsed += superseded as u64;
    }
}

/// Counts of what happened to the writes of one batch, or of all batches so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounters {
    /// Writes received: applies, deletes and relisted objects.
    pub received: u64,
    /// Writes replaced by a later write to the same key in the same batch, or by a relist.
    pub collapsed: u64,
    /// Writes that matched the stored state: identical content, or deletion of an absent key.
    pub deduplicated: u64,
    /// Changes published (upserts and deletions, including deletions found by a relist).
    pub published: u64,
}

impl BatchCounters {
    /// Adds another set of counts to this one.
    pub fn add(&mut self, other: &BatchCounters) {
        self.received += other.received;
        self.collapsed += other.collapsed;
        self.deduplicated += other.deduplicated;
        self.published += other.published;
    }
}

/// One published change to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The object was created, or its content changed.
    Upsert {
        /// The new content.
        object: ProjectedObject,
        /// The scope the stored object had before this change; `None` if it is new or had none.
        /// When it differs from `object.scope`, the object has left that scope.
        previous_scope: Option<String>,
    },
    /// The object was deleted.
    Delete {
        /// The namespace, empty for cluster-scoped objects.
        namespace: String,
        /// The name.
        name: String,
        /// The scope the object had, so scoped subscribers know whether it concerns them.
        scope: Option<String>,
    },
}

/// A [`Change`] as seen by a subscriber of a single scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopedChange<'a> {
    /// The object is (now) in the scope, with this content.
    Upsert(&'a ProjectedObject),
    /// The object is no longer in the scope: deleted, or moved to another scope.
    Delete {
        /// The namespace.
        namespace: &'a str,
        /// The name.
        name: &'a str,
    },
}

impl Change {
    /// The namespace of the changed object.
    pub fn namespace(&self) -> &str {
        match self {
            Change::Upsert { object, .. } => &object.namespace,
            Change::Delete { namespace, .. } => namespace,
        }
    }

    /// The name of the changed object.
    pub fn name(&self) -> &str {
        match self {
            Change::Upsert { object, .. } => &object.name,
            Change::Delete { name, .. } => name,
        }
    }

    /// What a subscriber of `scope` must apply, if anything. An object that moved out of the
    /// scope is a deletion for it; an object that moved in is an upsert.
    pub fn for_scope(&self, scope: &str) -> Option<ScopedChange<'_>> {
        match self {
            Change::Upsert {
                object,
                previous_scope,
            } => {
                if object.scope.as_deref() == Some(scope) {
                    Some(ScopedChange::Upsert(object))
                } else if previous_scope.as_deref() == Some(scope) {
                    Some(ScopedChange::Delete {
                        namespace: &object.namespace,
                        name: &object.name,
                    })
                } else {
                    None
                }
            }
            Change::Delete {
                namespace,
                name,
                scope: Some(s),
            } if s == scope => Some(ScopedChange::Delete { namespace, name }),
            Change::Delete { .. } => None,
        }
    }

    /// An estimate of the memory this change holds.
    pub fn size_bytes(&self) -> usize {
        match self {
            Change::Upsert {
                object,
                previous_scope,
            } => object.size_bytes() + previous_scope.as_ref().map_or(0, String::len),
            Change::Delete {
                namespace,
                name,
                scope,
            } => {
                std::mem::size_of::<Self>()
                    + namespace.len()
                    + name.len()
                    + scope.as_ref().map_or(0, String::len)
            }
        }
    }
}

/// The changes of one resource in a published batch, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceChanges {
    /// The resource.
    pub resource: Resource,
    /// Its changes, one per key, sorted by `(namespace, name)`.
    pub changes: Vec<Change>,
}

/// A committed batch with at least one real change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The revision this batch created.
    pub revision: Revision,
    /// When the store published it (wall clock, for latency measurements across processes).
    pub time: SystemTime,
    /// The changes, per resource sorted by resource; resources without changes are left out.
    pub resources: Vec<ResourceChanges>,
    /// What happened to the batch's writes.
    pub counters: BatchCounters,
}

impl Published {
    /// The changes to `resource`, empty if it did not change.
    pub fn changes(&self, resource: &Resource) -> &[Change] {
        self.resources
            .iter()
            .find(|r| &r.resource == resource)
            .map_or(&[], |r| &r.changes)
    }

    /// The number of changes over all resources.
    pub fn len(&self) -> usize {
        self.resources.iter().map(|r| r.changes.len()).sum()
    }

    /// Whether there is no change (never true for a batch the store returned).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An estimate of the memory this batch holds.
    pub fn size_bytes(&self) -> usize {
        self.resources
            .iter()
            .flat_map(|r| &r.changes)
            .map(Change::size_bytes)
            .sum::<usize>()
            + std::mem::size_of::<Self>()
    }
}
