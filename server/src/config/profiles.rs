//! The default profile: the resources and fields a network agent needs, as Typha serves them.
//!
//! Each profile keeps what policy, service proxy and IPAM agents read and leaves out what churns
//! without meaning to them (pod conditions, container statuses, node heartbeats), so a readiness
//! flap or a container restart projects to identical bytes and is deduped away.

use super::{Emptiness, ExcludeRule, FieldPath, Resource, ResourceConfig, Scalar};

/// `(resource, projected fields, scope)` for every resource of the default profile.
const DEFAULT_PROFILE: &[(&str, &[&str], Option<&str>)] = &[
    (
        "v1/pods",
        &[
            "metadata.labels",
            "spec.nodeName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "spec.containers[].ports",
            "status.podIPs",
            "status.phase",
        ],
        Some("spec.nodeName"),
    ),
    ("v1/namespaces", &["metadata.labels"], None),
    (
        "v1/nodes",
        &["metadata.labels", "status.addresses", "spec.podCIDRs"],
        None,
    ),
    (
        "v1/services",
        &[
            "metadata.labels",
            "spec.selector",
            "spec.ports",
            "spec.clusterIPs",
            "spec.type",
        ],
        None,
    ),
    (
        "discovery.k8s.io/v1/endpointslices",
        &["metadata.labels", "addressType", "endpoints", "ports"],
        None,
    ),
    (
        "networking.k8s.io/v1/networkpolicies",
        &["metadata.labels", "spec"],
        None,
    ),
    ("v1/serviceaccounts", &["metadata.labels"], None),
];

/// The resources of the default profile, in a stable order.
pub fn default_resources() -> Vec<ResourceConfig> {
    DEFAULT_PROFILE
        .iter()
        .filter_map(|(resource, fields, scope)| profile(resource, fields, *scope))
        .collect()
}

/// The default profile's entry for `resource`, if it has one: handy to extend a profile in code.
pub fn default_for(resource: &Resource) -> Option<ResourceConfig> {
    DEFAULT_PROFILE
        .iter()
        .find(|(name, _, _)| *name == resource.as_str())
        .and_then(|(resource, fields, scope)| profile(resource, fields, *scope))
}

/// Builds one entry. The table above is constant and covered by tests, so a parse failure here
/// is a programming error; it is skipped rather than panicking in a server.
fn profile(resource: &str, fields: &[&str], scope: Option<&str>) -> Option<ResourceConfig> {
    let fields = fields
        .iter()
        .map(|f| FieldPath::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let scope = match scope {
        Some(s) => Some(FieldPath::parse(s).ok()?),
        None => None,
    };
    Some(ResourceConfig {
        resource: Resource::parse(resource).ok()?,
        fields,
        scope,
        exclude: default_exclude(resource)?,
    })
}

/// The default profile's exclude rules for `resource`: pods a node's network agent cannot use
/// are absent, as Calico's Felix skips them when it turns pods into workload endpoints. A pod
/// with no IP yet has nothing to police or route; a host-networked pod shares its node's IP
/// and gets no endpoint; a pod that has finished (`Succeeded` or `Failed`) has released its IP,
/// which a new pod may already hold. Each becomes visible (a create for agents) once it has an
/// IP, and leaves (a delete) when it finishes.
fn default_exclude(resource: &str) -> Option<Vec<ExcludeRule>> {
    if resource != "v1/pods" {
        return Some(Vec::new());
    }
    let field = |text: &str| FieldPath::parse(text).ok();
    Some(vec![
        ExcludeRule::is(field("status.podIPs")?, Emptiness::Empty),
        ExcludeRule::equals(field("spec.hostNetwork")?, Scalar::Bool(true)),
        ExcludeRule::one_of(
            field("status.phase")?,
            vec![
                Scalar::String("Succeeded".into()),
                Scalar::String("Failed".into()),
            ],
        ),
    ])
}
