//! [`Resync`]: the replace frames of an open resync, staged until its `Synced` arrives.
//!
//! Nothing a replace frame carries touches the cache before `Synced`, so a stream that breaks in
//! the middle of a resync leaves the cache, its digests and the complete revision exactly as they
//! were, and the next `Resume` is still valid. At `Synced`, [`Coverage::commit`] applies the
//! staged upserts and deletes and removes every covered object that was not upserted, reporting
//! only real changes (docs/PROTOCOL.md, "Replace semantics").

use std::collections::{BTreeMap, BTreeSet, HashSet};

use cattail_proto::digest::key_hash;

use super::cache::{CacheChange, ObjectCache, ObjectKey, StoredObject};

/// The staged replace frames of one open resync, per subscription index.
#[derive(Debug, Default)]
pub(crate) struct Resync {
    pub(crate) pairs: BTreeMap<usize, Coverage>,
}

/// What a resync covers for one (resource, scope), and what it carried for it.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    /// A replace frame with no `replaced_buckets` covered the whole (resource, scope).
    whole: bool,
    /// The buckets covered by digest-resync frames.
    buckets: HashSet<u32>,
    /// The last operation staged per key: `Some` for an upsert, `None` for a delete.
    staged: BTreeMap<ObjectKey, Option<StoredObject>>,
}

impl Coverage {
    /// Widens the coverage by one frame's `replaced_buckets` (empty means everything).
    pub(crate) fn cover(&mut self, replaced_buckets: &[u32]) {
        if replaced_buckets.is_empty() {
            self.whole = true;
        } else {
            self.buckets.extend(replaced_buckets.iter().copied());
        }
    }

    /// Stages an upsert; a later frame's operation on the same key wins.
    pub(crate) fn stage_upsert(&mut self, key: ObjectKey, object: StoredObject) {
        self.staged.insert(key, Some(object));
    }

    /// Stages a delete; a later frame's operation on the same key wins.
    pub(crate) fn stage_delete(&mut self, key: ObjectKey) {
        self.staged.insert(key, None);
    }

    /// True when a key in `bucket_count` buckets is covered by this resync.
    fn covers(&self, key: &ObjectKey, bucket_count: u32) -> bool {
        if self.whole {
            return true;
        }
        // The bucket rule of docs/PROTOCOL.md, section 7: key_hash mod B, B a power of two.
        let bucket = key_hash(&key.namespace, &key.name) & (u64::from(bucket_count) - 1);
        u32::try_from(bucket).is_ok_and(|bucket| self.buckets.contains(&bucket))
    }

    /// Applies the staged frames to `cache` and returns the real changes: deletions of covered
    /// objects that were not upserted first, then staged operations in key order.
    ///
    /// `bucket_count` is the server's `digest_buckets` for the resource, already validated as a
    /// power of two by the session.
    pub(crate) fn commit(self, cache: &mut ObjectCache, bucket_count: u32) -> Vec<CacheChange> {
        let removed: BTreeSet<ObjectKey> = cache
            .iter()
            .map(|(key, _)| key)
            .filter(|key| !matches!(self.staged.get(*key), Some(Some(_))))
            .filter(|key| self.covers(key, bucket_count))
            .cloned()
            .collect();
        let mut changes: Vec<CacheChange> =
            removed.iter().filter_map(|key| cache.delete(key)).collect();
        for (key, operation) in self.staged {
            let change = match operation {
                Some(object) => cache.upsert(key, object),
                None => cache.delete(&key),
            };
            changes.extend(change);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cattail_proto::Digest;
    use cattail_proto::digest::bucket_of;

    use super::*;

    fn stored(value: &str) -> StoredObject {
        StoredObject {
            value: Bytes::copy_from_slice(value.as_bytes()),
            resource_version: "1".into(),
        }
    }

    fn cache_with(names: &[&str]) -> ObjectCache {
        let mut cache = ObjectCache::with_digest(Digest::new(16).unwrap());
        for name in names {
            cache.upsert(ObjectKey::new("default", *name), stored("{}"));
        }
        cache
    }

    fn names(changes: &[CacheChange]) -> Vec<String> {
        changes
            .iter()
            .map(|change| match change {
                CacheChange::Applied(object) => format!("apply {}", object.name),
                CacheChange::Deleted(object) => format!("delete {}", object.name),
            })
            .collect()
    }

    #[test]
    fn whole_coverage_removes_what_was_not_upserted() {
        let mut cache = cache_with(&["a", "b", "c"]);
        let mut coverage = Coverage::default();
        coverage.cover(&[]);
        coverage.stage_upsert(ObjectKey::new("default", "a"), stored("{}"));
        coverage.stage_upsert(ObjectKey::new("default", "b"), stored(r#"{"v":2}"#));
        coverage.stage_upsert(ObjectKey::new("default", "d"), stored("{}"));
        let changes = coverage.commit(&mut cache, 16);
        assert_eq!(names(&changes), ["delete c", "apply b", "apply d"]);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn bucket_coverage_only_touches_covered_buckets() {
        let all: Vec<String> = (0..64).map(|i| format!("pod-{i}")).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut cache = cache_with(&refs);
        let bucket = bucket_of("default", "pod-0", 16).unwrap();
        let in_bucket: Vec<&String> = all
            .iter()
            .filter(|name| bucket_of("default", name, 16).unwrap() == bucket)
            .collect();
        assert!(in_bucket.len() > 1, "the test needs a bucket with company");
        let mut coverage = Coverage::default();
        coverage.cover(&[bucket]);
        // The resync keeps pod-0 only: every other object of its bucket goes, nothing else.
        coverage.stage_upsert(ObjectKey::new("default", "pod-0"), stored("{}"));
        let changes = coverage.commit(&mut cache, 16);
        assert_eq!(changes.len(), in_bucket.len() - 1);
        assert!(
            changes
                .iter()
                .all(|change| matches!(change, CacheChange::Deleted(_)))
        );
        assert_eq!(cache.len(), 64 - (in_bucket.len() - 1));
        assert!(cache.get(&ObjectKey::new("default", "pod-0")).is_some());
    }

    #[test]
    fn the_last_staged_operation_on_a_key_wins() {
        let mut cache = cache_with(&["a"]);
        let mut coverage = Coverage::default();
        coverage.cover(&[3]);
        coverage.stage_upsert(ObjectKey::new("default", "x"), stored("{}"));
        coverage.stage_delete(ObjectKey::new("default", "x"));
        coverage.stage_delete(ObjectKey::new("default", "a"));
        let changes = coverage.commit(&mut cache, 16);
        assert_eq!(names(&changes), ["delete a"]);
        assert_eq!(cache.len(), 0);
    }
}
