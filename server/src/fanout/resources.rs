//! The leaf that describes what a hub serves: [`ResourceInfo`] for one resource,
//! [`ServedResources`] for the list in hub order (with the `Welcome.resources` it announces),
//! and [`Subscription`], an agent's subscription resolved against that list.
//!
//! Every other fan-out module refers to a resource by its hub index into this list; none of
//! them depends on the hub to learn what a resource is. The list never changes once built.

use cattail_proto::pb;

use crate::config::Resource;

/// One served resource, as the hub and `Welcome.resources` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The resource, like `v1/pods`.
    pub resource: Resource,
    /// The projection fingerprint: agents trust a digest only when it matches.
    pub fingerprint: u64,
    /// The field that scopes objects to a node (`spec.nodeName`), or `None`: agents can
    /// subscribe node-scoped only where it is set.
    pub scope_field: Option<String>,
}

/// The served resources in hub order; the index of each is its hub index.
#[derive(Debug, Clone)]
pub(crate) struct ServedResources {
    infos: Vec<ResourceInfo>,
    /// `Welcome.resources`, in the same order.
    welcome: Vec<pb::ResourceInfo>,
}

impl ServedResources {
    /// The list `infos`, announced with digests of `digest_buckets` buckets.
    pub(crate) fn new(infos: Vec<ResourceInfo>, digest_buckets: u32) -> Self {
        let welcome = infos
            .iter()
            .map(|info| pb::ResourceInfo {
                resource: info.resource.as_str().to_owned(),
                fingerprint: info.fingerprint,
                scope_field: info.scope_field.clone().unwrap_or_default(),
                digest_buckets,
            })
            .collect();
        Self { infos, welcome }
    }

    /// Every served resource, in hub order.
    pub(crate) fn infos(&self) -> &[ResourceInfo] {
        &self.infos
    }

    /// The resource at hub index `index`.
    pub(crate) fn get(&self, index: usize) -> Option<&ResourceInfo> {
        self.infos.get(index)
    }

    /// How many resources are served.
    pub(crate) fn len(&self) -> usize {
        self.infos.len()
    }

    /// The hub index of the resource whose text is `resource`.
    pub(crate) fn index_of(&self, resource: &str) -> Option<usize> {
        self.infos
            .iter()
            .position(|info| info.resource.as_str() == resource)
    }

    /// `Welcome.resources`.
    pub(crate) fn welcome(&self) -> &[pb::ResourceInfo] {
        &self.welcome
    }
}

/// One subscription of an agent, resolved against the served resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The hub index of the resource.
    pub(crate) index: usize,
    /// The node name for a node-scoped subscription, else empty.
    pub(crate) scope: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_the_welcome_follow_the_given_order() {
        let info = |resource: &str, scope: Option<&str>| ResourceInfo {
            resource: resource.parse().unwrap(),
            fingerprint: 7,
            scope_field: scope.map(str::to_owned),
        };
        let served = ServedResources::new(
            vec![
                info("v1/pods", Some("spec.nodeName")),
                info("v1/nodes", None),
            ],
            256,
        );
        assert_eq!(served.len(), 2);
        assert_eq!(served.index_of("v1/nodes"), Some(1));
        assert_eq!(served.index_of("v1/services"), None);
        assert_eq!(served.get(0).map(|i| i.resource.as_str()), Some("v1/pods"));
        let welcome = served.welcome();
        assert_eq!(welcome[0].scope_field, "spec.nodeName");
        assert_eq!(welcome[1].scope_field, "");
        assert!(welcome.iter().all(|w| w.digest_buckets == 256));
    }
}
