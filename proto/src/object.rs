//! [`ObjectKey`]: the key of one object within a resource, the same on the server and in an
//! agent's cache.
//!
//! On the wire a key is a `pb::ObjectKey` (in delete frames) or the `namespace` and `name` of
//! a `pb::Object`; this is its Rust form, ordered by namespace and then name, so a map of keys
//! iterates in the order digests and snapshots use.

use std::fmt;

/// The key of an object within one resource. `namespace` is empty for cluster-scoped objects
/// (Kubernetes never names a namespace with the empty string).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ObjectKey {
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    #[must_use]
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `namespace/name`, or `name` alone for a cluster-scoped object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({self})")
    }
}

impl From<crate::pb::ObjectKey> for ObjectKey {
    fn from(key: crate::pb::ObjectKey) -> Self {
        Self::new(key.namespace, key.name)
    }
}

impl From<ObjectKey> for crate::pb::ObjectKey {
    fn from(key: ObjectKey) -> Self {
        crate::pb::ObjectKey {
            namespace: key.namespace,
            name: key.name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_namespace_then_name_and_print_like_kubectl() {
        let a = ObjectKey::new("a", "z");
        let b = ObjectKey::new("b", "a");
        assert!(a < b);
        assert_eq!(a.to_string(), "a/z");
        assert_eq!(ObjectKey::new("", "node-1").to_string(), "node-1");
        let wire = crate::pb::ObjectKey::from(b.clone());
        assert_eq!((wire.namespace.as_str(), wire.name.as_str()), ("b", "a"));
        assert_eq!(ObjectKey::from(wire), b);
    }
}
