//! [`Digests`]: the digest of every resource (unscoped) at the hub's head, kept up to date from
//! each published batch, and digests of one scope computed on demand through the scope index.
//!
//! Updating needs each changed object's previous value, which the batch does not carry: it comes
//! from the snapshot of the previous head, which the hub keeps. The XORs to apply are computed
//! before the hub takes its lock, so readers wait only for the XORs themselves.

use std::collections::BTreeMap;

use cattail_proto::Digest;
use cattail_proto::digest::{entry_hash, key_hash};

use crate::store::{Change, ObjectKey, ProjectedObject, Published, Snapshot};

use super::resources::ResourceInfo;

/// One XOR into one resource's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Toggle {
    index: usize,
    key_hash: u64,
    entry_hash: u64,
}

/// The unscoped digest of each hub resource, in hub order.
#[derive(Debug, Clone)]
pub(crate) struct Digests {
    per_resource: Vec<Digest>,
}

impl Digests {
    /// The digests of everything in `snapshot`, with `buckets` buckets each.
    pub(crate) fn from_snapshot(
        snapshot: &Snapshot,
        resources: &[ResourceInfo],
        buckets: u32,
    ) -> Self {
        let per_resource = resources
            .iter()
            .map(|info| {
                let objects = snapshot.objects(&info.resource);
                digest_of(objects.into_iter().flatten(), buckets)
            })
            .collect();
        Self { per_resource }
    }

    /// The XORs that take the digests from `previous` (the snapshot before `published`) to the
    /// state after it.
    pub(crate) fn toggles(
        published: &Published,
        previous: &Snapshot,
        resources: &[ResourceInfo],
    ) -> Vec<Toggle> {
        let mut toggles = Vec::new();
        for (index, info) in resources.iter().enumerate() {
            let resource = &info.resource;
            for change in published.changes(resource) {
                let (namespace, name) = (change.namespace(), change.name());
                let key = key_hash(namespace, name);
                let mut toggle = |entry_hash| {
                    toggles.push(Toggle {
                        index,
                        key_hash: key,
                        entry_hash,
                    });
                };
                if let Some(old) = previous.get(resource, &ObjectKey::new(namespace, name)) {
                    toggle(entry_hash(namespace, name, &old.value));
                }
                if let Change::Upsert { object, .. } = change {
                    toggle(entry_hash(namespace, name, &object.value));
                }
            }
        }
        toggles
    }

    /// Applies XORs computed by [`Digests::toggles`].
    pub(crate) fn apply(&mut self, toggles: &[Toggle]) {
        for toggle in toggles {
            if let Some(digest) = self.per_resource.get_mut(toggle.index) {
                digest.toggle(toggle.key_hash, toggle.entry_hash);
            }
        }
    }

    /// The digest of hub resource `index`.
    pub(crate) fn get(&self, index: usize) -> Option<&Digest> {
        self.per_resource.get(index)
    }
}

/// The digest of `objects` with `buckets` buckets (a valid count, checked by the config).
pub(crate) fn digest_of<'a>(
    objects: impl IntoIterator<Item = &'a ProjectedObject>,
    buckets: u32,
) -> Digest {
    let mut digest = Digest::new(buckets).unwrap_or_default();
    for object in objects {
        digest.insert(&object.namespace, &object.name, &object.value);
    }
    digest
}

/// The objects that fall in one of the `buckets` (sorted), grouped by bucket. Every bucket asked
/// for is in the map, even an empty one: agents delete what they hold in it.
pub(crate) fn group_by_bucket<'a>(
    objects: impl IntoIterator<Item = &'a ProjectedObject>,
    buckets: &[u32],
    bucket_count: u32,
) -> BTreeMap<u32, Vec<&'a ProjectedObject>> {
    let mut groups: BTreeMap<u32, Vec<&ProjectedObject>> =
        buckets.iter().map(|b| (*b, Vec::new())).collect();
    let mask = u64::from(bucket_count.max(1)) - 1;
    for object in objects {
        // The remainder of a power of two that fits in u32 fits in u32.
        let bucket = (key_hash(&object.namespace, &object.name) & mask) as u32;
        if let Some(group) = groups.get_mut(&bucket) {
            group.push(object);
        }
    }
    groups
}
