//! [`ObjectCache`]: the objects of one (resource, scope), and their digest, kept in step.
//!
//! Every mutation goes through [`ObjectCache::upsert`] or [`ObjectCache::delete`], which update
//! the digest in the same call, so the digest always equals one recomputed from the objects.
//! Both report a [`CacheChange`] only when the object really changed: re-writing identical
//! bytes, or deleting an absent key, is silent.

use std::collections::BTreeMap;

use bytes::Bytes;
use cattail_proto::Digest;
pub(crate) use cattail_proto::ObjectKey;

use crate::projected::ProjectedObject;

/// What the cache holds for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredObject {
    /// Canonical JSON, exactly as received: the digest hashes these bytes.
    pub(crate) value: Bytes,
    /// The source `resourceVersion`, not part of the value or the digest.
    pub(crate) resource_version: String,
}

impl StoredObject {
    pub(crate) fn to_projected(&self, key: &ObjectKey) -> ProjectedObject {
        ProjectedObject {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            value: self.value.clone(),
            resource_version: self.resource_version.clone(),
        }
    }
}

/// A real change to the cache, carrying the object the application should see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CacheChange {
    /// The key was created or its value changed; the new object.
    Applied(ProjectedObject),
    /// The key was removed; the object as it last was.
    Deleted(ProjectedObject),
}

/// The objects of one (resource, scope) with their digest.
///
/// Invariant: `digest` is the XOR digest of exactly the entries in `objects`.
#[derive(Clone, Debug, Default)]
pub(crate) struct ObjectCache {
    objects: BTreeMap<ObjectKey, StoredObject>,
    digest: Digest,
}

impl ObjectCache {
    /// An empty cache with the given (empty) digest.
    #[cfg(test)]
    pub(crate) fn with_digest(digest: Digest) -> Self {
        ObjectCache {
            objects: BTreeMap::new(),
            digest,
        }
    }

    /// Creates or replaces an object. `None` when the value is unchanged; the
    /// `resourceVersion` is still updated then, silently.
    pub(crate) fn upsert(&mut self, key: ObjectKey, object: StoredObject) -> Option<CacheChange> {
        let (namespace, name) = (&key.namespace, &key.name);
        match self.objects.get_mut(&key) {
            Some(current) if current.value == object.value => {
                current.resource_version = object.resource_version;
                None
            }
            Some(current) => {
                self.digest
                    .update(namespace, name, &current.value, &object.value);
                let change = CacheChange::Applied(object.to_projected(&key));
                *current = object;
                Some(change)
            }
            None => {
                self.digest.insert(namespace, name, &object.value);
                let change = CacheChange::Applied(object.to_projected(&key));
                self.objects.insert(key, object);
                Some(change)
            }
        }
    }

    /// Removes an object; `None` when it was absent.
    pub(crate) fn delete(&mut self, key: &ObjectKey) -> Option<CacheChange> {
        let old = self.objects.remove(key)?;
        self.digest.remove(&key.namespace, &key.name, &old.value);
        Some(CacheChange::Deleted(old.to_projected(key)))
    }

    /// The object at `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// All objects, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &StoredObject)> {
        self.objects.iter()
    }

    /// The number of objects.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    /// The digest of the objects.
    pub(crate) fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Recomputes the digest with `bucket_count` buckets, when the server keeps another count.
    pub(crate) fn rehash(&mut self, bucket_count: u32) -> cattail_proto::Result<()> {
        if self.digest.bucket_count() == bucket_count {
            return Ok(());
        }
        self.digest = self.compute_digest(bucket_count)?;
        Ok(())
    }

    /// The digest of the current objects, computed from scratch.
    pub(crate) fn compute_digest(&self, bucket_count: u32) -> cattail_proto::Result<Digest> {
        let mut digest = Digest::new(bucket_count)?;
        for (key, object) in &self.objects {
            digest.insert(&key.namespace, &key.name, &object.value);
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(value: &str, rv: &str) -> StoredObject {
        StoredObject {
            value: Bytes::copy_from_slice(value.as_bytes()),
            resource_version: rv.into(),
        }
    }

    fn cache() -> ObjectCache {
        ObjectCache::with_digest(Digest::new(16).unwrap())
    }

    #[test]
    fn identical_values_are_silent_but_refresh_the_resource_version() {
        let mut cache = cache();
        let key = ObjectKey::new("default", "web-0");
        assert!(matches!(
            cache.upsert(key.clone(), stored("{}", "1")),
            Some(CacheChange::Applied(_))
        ));
        assert_eq!(cache.upsert(key.clone(), stored("{}", "2")), None);
        assert_eq!(cache.get(&key).unwrap().resource_version, "2");
        let change = cache
            .upsert(key.clone(), stored(r#"{"a":1}"#, "3"))
            .unwrap();
        let CacheChange::Applied(object) = change else {
            panic!("expected an Applied change, got {change:?}");
        };
        assert_eq!(&object.value[..], br#"{"a":1}"#);
    }

    #[test]
    fn deletes_report_the_last_object_and_absent_keys_are_silent() {
        let mut cache = cache();
        let key = ObjectKey::new("", "node-1");
        cache.upsert(key.clone(), stored("{}", "1"));
        let Some(CacheChange::Deleted(old)) = cache.delete(&key) else {
            panic!("expected a Deleted change");
        };
        assert_eq!(old.name, "node-1");
        assert_eq!(old.resource_version, "1");
        assert_eq!(cache.delete(&key), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_digest_always_matches_a_recomputed_one() {
        let mut cache = cache();
        for round in 0..3 {
            for index in 0..40 {
                let key = ObjectKey::new(format!("ns-{}", index % 3), format!("obj-{index}"));
                if (index + round) % 4 == 0 {
                    cache.delete(&key);
                } else {
                    let value = format!(r#"{{"round":{},"i":{index}}}"#, round % 2);
                    cache.upsert(key, stored(&value, "1"));
                }
            }
            assert_eq!(cache.digest(), &cache.compute_digest(16).unwrap());
        }
        assert_ne!(cache.digest(), &Digest::new(16).unwrap());
    }

    #[test]
    fn rehash_changes_the_bucket_count_and_keeps_the_content() {
        let mut cache = cache();
        cache.upsert(ObjectKey::new("default", "web-0"), stored("{}", "1"));
        cache.rehash(4096).unwrap();
        assert_eq!(cache.digest().bucket_count(), 4096);
        assert_eq!(cache.digest(), &cache.compute_digest(4096).unwrap());
        assert!(cache.rehash(3).is_err());
    }
}
