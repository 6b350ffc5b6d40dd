//! `ResourceState`: the objects of one resource and their scope index, in persistent maps.
//!
//! Both maps are `imbl` B-trees that share structure, so cloning a state for a snapshot is O(1)
//! and a later write copies only the path it touches. The index always agrees with the objects:
//! every object with `scope == Some(s)` is listed under `s`, and nothing else is.

use imbl::{OrdMap, OrdSet};

use super::batch::{Change, Op, PendingResource};
use super::{ObjectKey, ProjectedObject};

/// The stored objects of one resource.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResourceState {
    /// Every object, by key.
    pub(crate) objects: OrdMap<ObjectKey, ProjectedObject>,
    /// The keys of the objects in each scope. A scope with no object has no entry.
    pub(crate) by_scope: OrdMap<String, OrdSet<ObjectKey>>,
}

/// The outcome of applying one resource's pending writes.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The real changes, sorted by key.
    pub(crate) changes: Vec<Change>,
    /// Writes that matched what was stored.
    pub(crate) deduplicated: u64,
}

impl ResourceState {
    /// Applies pending writes: a relisted set first (if any), then the individual writes. Only
    /// real changes are applied and returned.
    pub(crate) fn apply(&mut self, pending: PendingResource) -> Applied {
        let mut applied = Applied::default();
        let PendingResource { replace, mut ops } = pending;
        if let Some(mut set) = replace {
            // Writes after the relist win over the relisted objects.
            for (key, op) in std::mem::take(&mut ops) {
                match op {
                    Op::Apply(object) => {
                        set.insert(key, object);
                    }
                    Op::Delete => {
                        // A key neither relisted nor stored: nothing to delete. A stored one is
                        // deleted by the sweep below.
                        if set.remove(&key).is_none() && !self.objects.contains_key(&key) {
                            applied.deduplicated += 1;
                        }
                    }
                }
            }
            // Keys stored but not relisted are gone.
            let gone: Vec<ObjectKey> = self
                .objects
                .keys()
                .filter(|k| !set.contains_key(*k))
                .cloned()
                .collect();
            let mut changes: Vec<(ObjectKey, Change)> = Vec::new();
            for key in gone {
                if let Some(change) = self.remove(&key) {
                    changes.push((key, change));
                }
            }
            for (key, object) in set {
                match self.upsert(object) {
                    Some(change) => changes.push((key, change)),
                    None => applied.deduplicated += 1,
                }
            }
            changes.sort_by(|a, b| a.0.cmp(&b.0));
            applied.changes = changes.into_iter().map(|(_, c)| c).collect();
            return applied;
        }
        for (key, op) in ops {
            let change = match op {
                Op::Apply(object) => self.upsert(object),
                Op::Delete => self.remove(&key),
            };
            match change {
                Some(change) => applied.changes.push(change),
                None => applied.deduplicated += 1,
            }
        }
        applied
    }

    /// Stores `object` unless identical content is already stored.
    fn upsert(&mut self, object: ProjectedObject) -> Option<Change> {
        let key = object.key();
        let previous_scope = match self.objects.get(&key) {
            Some(old) if old.same_content(&object) => return None,
            Some(old) => old.scope.clone(),
            None => None,
        };
        if previous_scope != object.scope {
            if let Some(old) = &previous_scope {
                self.unindex(old, &key);
            }
            if let Some(new) = &object.scope {
                self.index(new, key.clone());
            }
        }
        self.objects.insert(key, object.clone());
        Some(Change::Upsert {
            object,
            previous_scope,
        })
    }

    /// Removes `key` if it is stored.
    fn remove(&mut self, key: &ObjectKey) -> Option<Change> {
        let old = self.objects.remove(key)?;
        if let Some(scope) = &old.scope {
            self.unindex(scope, key);
        }
        Some(Change::Delete {
            namespace: old.namespace,
            name: old.name,
            scope: old.scope,
        })
    }

    fn index(&mut self, scope: &str, key: ObjectKey) {
        match self.by_scope.get_mut(scope) {
            Some(keys) => {
                keys.insert(key);
            }
            None => {
                self.by_scope.insert(scope.to_owned(), OrdSet::unit(key));
            }
        }
    }

    fn unindex(&mut self, scope: &str, key: &ObjectKey) {
        let now_empty = match self.by_scope.get_mut(scope) {
            Some(keys) => {
                keys.remove(key);
                keys.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.by_scope.remove(scope);
        }
    }
}
