//! The resume digest: a fixed number of buckets, each the XOR of its entries' 64-bit hashes.
//!
//! The hash function and the bucket rule are part of the protocol (docs/PROTOCOL.md, "Digests"),
//! so an agent in any language keeps the same digest as the server while it applies frames:
//! - key hash = xxh3-64, seed 0, of `namespace` `\0` `name`;
//! - bucket = key hash modulo the bucket count, a power of two from 1 to 65536;
//! - entry hash = xxh3-64, seed 0, of `namespace` `\0` `name` `\0` `value`;
//! - bucket value = XOR of the entry hashes of the entries in it; 0 when empty.
//!
//! XOR is its own inverse, so adding and removing an entry are the same operation, and a digest
//! depends only on the set of entries, never on the order they were applied in.

use xxhash_rust::xxh3::Xxh3Default;

use crate::{Error, Result, pb};

/// The number of digest buckets a server keeps per resource and scope unless configured.
pub const DEFAULT_DIGEST_BUCKETS: u32 = 4096;

/// The largest digest bucket count the protocol allows.
pub const MAX_DIGEST_BUCKETS: u32 = 65536;

/// The separator between namespace, name and value. Kubernetes names never contain it.
const SEPARATOR: &[u8] = b"\0";

/// The hash of an object's key, which picks its bucket: xxh3-64 of `namespace \0 name`.
#[must_use]
pub fn key_hash(namespace: &str, name: &str) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(namespace.as_bytes());
    hasher.update(SEPARATOR);
    hasher.update(name.as_bytes());
    hasher.digest()
}

/// The hash an object contributes to its bucket: xxh3-64 of `namespace \0 name \0 value`.
///
/// `value` is the exact bytes of `Upsert.value`, the object's canonical JSON.
#[must_use]
pub fn entry_hash(namespace: &str, name: &str, value: &[u8]) -> u64 {
    let mut hasher = Xxh3Default::new();
    hasher.update(namespace.as_bytes());
    hasher.update(SEPARATOR);
    hasher.update(name.as_bytes());
    hasher.update(SEPARATOR);
    hasher.update(value);
    hasher.digest()
}

/// The bucket a key falls in: `key_hash % bucket_count`.
///
/// # Errors
/// [`Error::InvalidBucketCount`] unless `bucket_count` is a power of two from 1 to 65536.
pub fn bucket_of(namespace: &str, name: &str, bucket_count: u32) -> Result<u32> {
    check_bucket_count(u64::from(bucket_count))?;
    Ok(bucket_index(key_hash(namespace, name), bucket_count))
}

/// Checks that a bucket count is a power of two from 1 to [`MAX_DIGEST_BUCKETS`].
///
/// # Errors
/// [`Error::InvalidBucketCount`] otherwise.
pub fn check_bucket_count(bucket_count: u64) -> Result<()> {
    if bucket_count.is_power_of_two() && bucket_count <= u64::from(MAX_DIGEST_BUCKETS) {
        Ok(())
    } else {
        Err(Error::InvalidBucketCount(bucket_count))
    }
}

/// `key_hash % bucket_count` for a count already known to be a power of two.
fn bucket_index(key_hash: u64, bucket_count: u32) -> u32 {
    // The remainder is below bucket_count, which fits in u32, so the cast is exact.
    (key_hash & (u64::from(bucket_count) - 1)) as u32
}

/// The digest of one resource and scope: `bucket_count` buckets of XORed entry hashes.
///
/// Invariant: the number of buckets is a power of two from 1 to [`MAX_DIGEST_BUCKETS`]. The
/// digest trusts its caller to insert each key at most once and to remove only what it inserted
/// (with the same value); it cannot tell a mistake from a real change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    buckets: Vec<u64>,
}

impl Default for Digest {
    /// An empty digest of [`DEFAULT_DIGEST_BUCKETS`] buckets.
    fn default() -> Self {
        Digest {
            buckets: vec![0; DEFAULT_DIGEST_BUCKETS as usize],
        }
    }
}

impl Digest {
    /// An empty digest of `bucket_count` buckets, all 0.
    ///
    /// # Errors
    /// [`Error::InvalidBucketCount`] unless `bucket_count` is a power of two from 1 to 65536.
    pub fn new(bucket_count: u32) -> Result<Self> {
        check_bucket_count(u64::from(bucket_count))?;
        Ok(Digest {
            buckets: vec![0; bucket_count as usize],
        })
    }

    /// A digest with the given bucket values, such as ones received from a peer.
    ///
    /// # Errors
    /// [`Error::InvalidBucketCount`] unless there are a power of two from 1 to 65536 buckets.
    pub fn from_buckets(buckets: Vec<u64>) -> Result<Self> {
        check_bucket_count(buckets.len() as u64)?;
        Ok(Digest { buckets })
    }

    /// The digest an agent sent in `Hello.resume`, after checking that it is consistent.
    ///
    /// # Errors
    /// [`Error::InvalidBucketCount`] for a bad `bucket_count`, and
    /// [`Error::DigestLengthMismatch`] when `buckets` does not hold `bucket_count` values.
    pub fn from_proto(digest: &pb::ResourceDigest) -> Result<Self> {
        check_bucket_count(u64::from(digest.bucket_count))?;
        if digest.buckets.len() != digest.bucket_count as usize {
            return Err(Error::DigestLengthMismatch {
                declared: digest.bucket_count,
                actual: digest.buckets.len(),
            });
        }
        Ok(Digest {
            buckets: digest.buckets.clone(),
        })
    }

    /// This digest as the `ResourceDigest` an agent puts in `Hello.resume`.
    #[must_use]
    pub fn to_proto(&self, resource: &str, scope: &str, fingerprint: u64) -> pb::ResourceDigest {
        pb::ResourceDigest {
            resource: resource.to_owned(),
            scope: scope.to_owned(),
            fingerprint,
            bucket_count: self.bucket_count(),
            buckets: self.buckets.clone(),
        }
    }

    /// The number of buckets.
    #[must_use]
    pub fn bucket_count(&self) -> u32 {
        // The invariant keeps the length at most 65536.
        self.buckets.len() as u32
    }

    /// The bucket `namespace/name` falls in, in this digest.
    #[must_use]
    pub fn bucket_of(&self, namespace: &str, name: &str) -> u32 {
        bucket_index(key_hash(namespace, name), self.bucket_count())
    }

    /// XORs an entry hash into the bucket its key hash picks: adds the entry if it is absent,
    /// removes it if it is present. For callers that keep hashes beside their entries.
    pub fn toggle(&mut self, key_hash: u64, entry_hash: u64) {
        let index = bucket_index(key_hash, self.bucket_count()) as usize;
        self.buckets[index] ^= entry_hash;
    }

    /// Adds an object that is not yet in the digest.
    pub fn insert(&mut self, namespace: &str, name: &str, value: &[u8]) {
        self.toggle(
            key_hash(namespace, name),
            entry_hash(namespace, name, value),
        );
    }

    /// Removes an object that is in the digest with exactly this value.
    pub fn remove(&mut self, namespace: &str, name: &str, value: &[u8]) {
        // XOR is its own inverse: removing is adding again.
        self.insert(namespace, name, value);
    }

    /// Replaces an object's value `old` with `new`.
    pub fn update(&mut self, namespace: &str, name: &str, old: &[u8], new: &[u8]) {
        let key = key_hash(namespace, name);
        self.toggle(key, entry_hash(namespace, name, old));
        self.toggle(key, entry_hash(namespace, name, new));
    }

    /// The bucket values, indexed by bucket number.
    #[must_use]
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// The numbers of the buckets whose values differ from `other`'s, in increasing order.
    ///
    /// # Errors
    /// [`Error::BucketCountMismatch`] when `other` has a different number of buckets.
    pub fn differing_buckets(&self, other: &[u64]) -> Result<Vec<u32>> {
        if other.len() != self.buckets.len() {
            return Err(Error::BucketCountMismatch {
                ours: self.buckets.len(),
                theirs: other.len(),
            });
        }
        Ok(self
            .buckets
            .iter()
            .zip(other)
            .enumerate()
            .filter(|(_, (ours, theirs))| ours != theirs)
            // Fewer than 65536 buckets, so every index fits in u32.
            .map(|(index, _)| index as u32)
            .collect())
    }
}

#[cfg(test)]
mod tests;
