//! `Snapshot`: the full state of the store at one revision, frozen and cheap to share.
//!
//! Taking a snapshot is O(1) (persistent maps share structure with the live store), and a
//! snapshot never changes after it is taken: later commits copy the paths they touch. Scoped
//! reads go through the scope index, so listing the pods of one node does not scan all pods.

use imbl::OrdMap;

use crate::config::Resource;

use super::state::ResourceState;
use super::{Epoch, ObjectKey, ProjectedObject, Revision};

/// The state of every resource at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) epoch: Epoch,
    pub(crate) revision: Revision,
    pub(crate) resources: OrdMap<Resource, ResourceState>,
}

impl Snapshot {
    /// The epoch of the store this snapshot was taken from.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The revision of the last batch included.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The configured resources, sorted.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.resources.keys()
    }

    /// Whether `resource` is configured.
    pub fn contains(&self, resource: &Resource) -> bool {
        self.resources.contains_key(resource)
    }

    /// The number of objects of `resource`, or `None` if it is not configured.
    pub fn len(&self, resource: &Resource) -> Option<usize> {
        self.resources.get(resource).map(|s| s.objects.len())
    }

    /// Whether no resource holds any object.
    pub fn is_empty(&self) -> bool {
        self.resources.values().all(|s| s.objects.is_empty())
    }

    /// One object, if stored.
    pub fn get(&self, resource: &Resource, key: &ObjectKey) -> Option<&ProjectedObject> {
        self.resources.get(resource)?.objects.get(key)
    }

    /// Every object of `resource`, sorted by key, or `None` if it is not configured.
    pub fn objects(
        &self,
        resource: &Resource,
    ) -> Option<impl Iterator<Item = &ProjectedObject> + '_> {
        self.resources.get(resource).map(|s| s.objects.values())
    }

    /// The objects of `resource` whose scope is `scope`, sorted by key, through the scope index.
    /// `None` if the resource is not configured; empty if nothing is in that scope.
    pub fn scoped<'a>(
        &'a self,
        resource: &Resource,
        scope: &str,
    ) -> Option<impl Iterator<Item = &'a ProjectedObject> + 'a> {
        let state = self.resources.get(resource)?;
        let keys = state.by_scope.get(scope);
        Some(
            keys.into_iter()
                .flat_map(|keys| keys.iter())
                .filter_map(|key| state.objects.get(key)),
        )
    }

    /// The number of objects of `resource` in `scope` (0 if none or not configured).
    pub fn scope_len(&self, resource: &Resource, scope: &str) -> usize {
        self.resources
            .get(resource)
            .and_then(|s| s.by_scope.get(scope))
            .map_or(0, |keys| keys.len())
    }

    /// Every scope of `resource` that holds an object, sorted, with its object count.
    pub fn scopes<'a>(
        &'a self,
        resource: &Resource,
    ) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        self.resources
            .get(resource)
            .into_iter()
            .flat_map(|s| s.by_scope.iter())
            .map(|(scope, keys)| (scope.as_str(), keys.len()))
    }

    /// An estimate of the bytes of projected values held, summed over all objects. It walks
    /// every object: for status pages and tests, not for the hot path.
    pub fn value_bytes(&self) -> usize {
        self.resources
            .values()
            .flat_map(|s| s.objects.values())
            .map(|o| o.value.len())
            .sum()
    }
}
