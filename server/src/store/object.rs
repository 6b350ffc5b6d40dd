//! `ProjectedObject`: one stored object; its key is the protocol's `ObjectKey`.
//!
//! The value is canonical JSON bytes (see `k8s::project`), shared by reference count: cloning an
//! object into a snapshot, a published batch or a frame never copies the payload. Two objects with
//! the same value and scope are the same content, whatever their `resource_version`.

use bytes::Bytes;
pub use cattail_proto::ObjectKey;

/// An object reduced to its configured fields, as stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedObject {
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// Canonical JSON of the projected object: sorted keys, no whitespace, no resourceVersion.
    pub value: Bytes,
    /// The source `metadata.resourceVersion`, kept for debugging and ordering checks only. It is
    /// not part of the content: a write that only changes it is deduplicated.
    pub resource_version: String,
    /// The value of the resource's scope field (like the pod's node), if configured and set.
    pub scope: Option<String>,
}

impl ProjectedObject {
    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::new(self.namespace.clone(), self.name.clone())
    }

    /// Whether `self` and `other` serve the same content: same value bytes and same scope.
    /// The resource version is ignored.
    pub fn same_content(&self, other: &Self) -> bool {
        self.value == other.value && self.scope == other.scope
    }

    /// An estimate of the memory this object holds, for size bounds.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.namespace.len()
            + self.name.len()
            + self.value.len()
            + self.resource_version.len()
            + self.scope.as_ref().map_or(0, String::len)
    }

    /// The value as UTF-8 text, for logs and tests. Canonical JSON is always valid UTF-8.
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or("<invalid utf-8>")
    }
}
