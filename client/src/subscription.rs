//! [`Subscription`]: what an agent asks a cattail server (or, in direct mode, the API server) for.
//!
//! A subscription is configuration only, like kube-runtime's `watcher::Config`: it names a
//! resource (or lets a typed watcher take it from `K`), and says whether to receive only the
//! objects of the agent's own node. Resource strings are checked when they are set, so a
//! subscription that exists is well formed.

use cattail_proto::Resource;

/// The field that scopes objects to a node in direct mode unless configured: `spec.nodeName`.
pub const DEFAULT_SCOPE_FIELD: &str = "spec.nodeName";

/// One resource an agent wants, and whether only its node's objects.
///
/// `Subscription::default()` is "all objects of the watcher's resource type"; typed watchers
/// fill in the resource from `K`'s group, version and plural.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The resource, or `None` to take it from the watcher's object type.
    resource: Option<Resource>,
    /// Only objects whose scope field equals the client's node name.
    node_scoped: bool,
    /// The field selector field used for `node_scoped` in direct mode; `None` for the default.
    scope_field: Option<String>,
}

impl Subscription {
    /// A subscription to an explicit resource, such as `"v1/pods"` or
    /// `"crd.projectcalico.org/v1/globalnetworkpolicies"`.
    ///
    /// # Errors
    /// The resource string's parse error, which says how to write it.
    pub fn for_resource(resource: &str) -> cattail_proto::Result<Self> {
        Ok(Subscription::default().resource(Resource::parse(resource)?))
    }

    /// A subscription to the resource of a k8s-openapi type, such as `Pod` for `v1/pods`.
    ///
    /// # Errors
    /// When `K` reports a group, version or plural that is not a valid resource name.
    pub fn for_type<K>() -> cattail_proto::Result<Self>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Ok(Subscription::default().resource(resource_of::<K>()?))
    }

    /// Sets the resource explicitly.
    #[must_use]
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// Receives only the objects on the client's node (the server's scope field, such as
    /// `spec.nodeName` for pods). The client must have a node name.
    #[must_use]
    pub fn node_scoped(mut self) -> Self {
        self.node_scoped = true;
        self
    }

    /// The field a direct-mode watcher selects on for a node-scoped subscription. A cattail
    /// server knows each resource's scope field itself and ignores this.
    #[must_use]
    pub fn scope_field(mut self, field: impl Into<String>) -> Self {
        self.scope_field = Some(field.into());
        self
    }

    /// The resource, if one was set explicitly.
    #[must_use]
    pub fn explicit_resource(&self) -> Option<&Resource> {
        self.resource.as_ref()
    }

    /// True when only the client's node's objects are wanted.
    #[must_use]
    pub fn is_node_scoped(&self) -> bool {
        self.node_scoped
    }

    /// The direct-mode scope field: the configured one, or [`DEFAULT_SCOPE_FIELD`].
    #[must_use]
    pub fn direct_scope_field(&self) -> &str {
        self.scope_field.as_deref().unwrap_or(DEFAULT_SCOPE_FIELD)
    }

    /// The resource to subscribe to: the explicit one, else `default`'s.
    pub(crate) fn resolve(&self, default: Option<&Resource>) -> Option<ResolvedSubscription> {
        let resource = self.resource.as_ref().or(default)?.clone();
        Some(ResolvedSubscription {
            resource,
            node_scoped: self.node_scoped,
        })
    }
}

/// The resource string of a k8s-openapi type: `v1/pods`, `apps/v1/deployments`.
///
/// # Errors
/// When `K` reports a group, version or plural that is not a valid resource name.
pub fn resource_of<K>() -> cattail_proto::Result<Resource>
where
    K: kube::Resource<DynamicType = ()>,
{
    Resource::new(&K::group(&()), &K::version(&()), &K::plural(&()))
}

/// A subscription whose resource is known: what a session puts in its `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedSubscription {
    /// The resource.
    pub resource: Resource,
    /// Only the objects of the agent's node.
    pub node_scoped: bool,
}

impl ResolvedSubscription {
    /// A resolved subscription to all objects of `resource`.
    #[must_use]
    pub fn new(resource: Resource) -> Self {
        ResolvedSubscription {
            resource,
            node_scoped: false,
        }
    }

    /// The same subscription, node scoped.
    #[must_use]
    pub fn node_scoped(mut self) -> Self {
        self.node_scoped = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    use super::*;

    #[test]
    fn typed_subscriptions_take_the_resource_from_the_type() {
        let pods = Subscription::for_type::<Pod>().unwrap();
        assert_eq!(pods.explicit_resource().unwrap().to_string(), "v1/pods");
        let policies = resource_of::<NetworkPolicy>().unwrap();
        assert_eq!(policies.to_string(), "networking.k8s.io/v1/networkpolicies");
    }

    #[test]
    fn the_explicit_resource_wins_over_the_default() {
        let default = resource_of::<Pod>().unwrap();
        let resolved = Subscription::default()
            .node_scoped()
            .resolve(Some(&default));
        assert_eq!(
            resolved,
            Some(ResolvedSubscription::new(default.clone()).node_scoped())
        );
        let explicit = Subscription::for_resource("v1/nodes").unwrap();
        let resolved = explicit.resolve(Some(&default)).unwrap();
        assert_eq!(resolved.resource.to_string(), "v1/nodes");
        assert!(!resolved.node_scoped);
        assert_eq!(Subscription::default().resolve(None), None);
    }

    #[test]
    fn bad_resource_strings_are_refused_early() {
        assert!(Subscription::for_resource("pods").is_err());
        assert!(Subscription::for_resource("V1/Pods").is_err());
    }

    #[test]
    fn direct_mode_scope_field_defaults_to_node_name() {
        let subscription = Subscription::default();
        assert_eq!(subscription.direct_scope_field(), "spec.nodeName");
        let custom = subscription.scope_field("spec.host");
        assert_eq!(custom.direct_scope_field(), "spec.host");
    }
}
