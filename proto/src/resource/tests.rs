//! Tests for [`Resource`] parsing: what parses, what displays back, and why the rest is refused.

use super::*;

#[test]
fn core_group_resources_have_two_parts() {
    let pods = Resource::parse("v1/pods").unwrap();
    assert_eq!(pods.group(), "");
    assert_eq!(pods.version(), "v1");
    assert_eq!(pods.plural(), "pods");
    assert!(pods.is_core());
    assert_eq!(pods.api_version(), "v1");
}

#[test]
fn named_groups_have_three_parts() {
    let policies = Resource::parse("networking.k8s.io/v1/networkpolicies").unwrap();
    assert_eq!(policies.group(), "networking.k8s.io");
    assert_eq!(policies.version(), "v1");
    assert_eq!(policies.plural(), "networkpolicies");
    assert!(!policies.is_core());
    assert_eq!(policies.api_version(), "networking.k8s.io/v1");

    let deployments = Resource::parse("apps/v1/deployments").unwrap();
    assert_eq!(deployments.api_version(), "apps/v1");

    let calico = Resource::parse("crd.projectcalico.org/v1/globalnetworkpolicies").unwrap();
    assert_eq!(calico.group(), "crd.projectcalico.org");
}

#[test]
fn display_gives_back_the_parsed_string() {
    for input in [
        "v1/pods",
        "v1/namespaces",
        "discovery.k8s.io/v1/endpointslices",
        "networking.k8s.io/v1/networkpolicies",
        "crd.projectcalico.org/v1/globalnetworkpolicies",
        "example-1.com/v2beta3/widgets",
    ] {
        let parsed: Resource = input.parse().unwrap();
        assert_eq!(parsed.to_string(), input);
        assert_eq!(Resource::try_from(input).unwrap(), parsed);
    }
}

#[test]
fn new_agrees_with_parse() {
    assert_eq!(
        Resource::new("", "v1", "pods").unwrap(),
        Resource::parse("v1/pods").unwrap()
    );
    assert_eq!(
        Resource::new("apps", "v1", "deployments").unwrap(),
        Resource::parse("apps/v1/deployments").unwrap()
    );
    assert!(Resource::new("Apps", "v1", "deployments").is_err());
}

/// Asserts that `input` is refused and that the reason mentions `expected`.
#[track_caller]
fn assert_refused(input: &str, expected: &str) {
    match Resource::parse(input) {
        Ok(resource) => panic!("{input:?} parsed as {resource:?}"),
        Err(Error::InvalidResource { resource, reason }) => {
            assert_eq!(resource, input);
            assert!(
                reason.contains(expected),
                "reason for {input:?} is {reason:?}, expected it to mention {expected:?}"
            );
        }
        Err(other) => panic!("{input:?} failed with the wrong error: {other:?}"),
    }
}

#[test]
fn wrong_shapes_are_refused() {
    assert_refused("", "empty");
    assert_refused("pods", "no '/'");
    assert_refused("/v1/pods", "group is empty");
    assert_refused("a/b/c/d", "4 parts");
    assert_refused("v1/pods/", "plural \"\" is empty");
    assert_refused("apps//deployments", "version \"\" is empty");
    assert_refused("v1/", "plural \"\" is empty");
}

#[test]
fn bad_characters_are_refused() {
    assert_refused("V1/pods", "contains 'V'");
    assert_refused("v1/Pods", "contains 'P'");
    assert_refused("apps/v1/deploy_ments", "contains '_'");
    assert_refused("Apps/v1/deployments", "contains 'A'");
    assert_refused("apps/v1/pods-", "must not end with '-'");
    assert_refused("apps/1v/pods", "must start with a lowercase letter");
    assert_refused("networking..k8s.io/v1/networkpolicies", "empty part");
    assert_refused("-apps/v1/deployments", "starts with '-'");
    assert_refused("apps-/v1/deployments", "must not end with '-'");
    assert_refused("v1/pods ", "contains ' '");
}

#[test]
fn long_names_are_refused() {
    let long_label = "a".repeat(64);
    assert_refused(&format!("v1/{long_label}"), "longer than 63");
    assert_refused(&format!("{long_label}.io/v1/things"), "longer than 63");
    let ok_label = "a".repeat(63);
    assert!(Resource::parse(&format!("v1/{ok_label}")).is_ok());

    let long_group = vec!["b".repeat(60); 5].join(".");
    assert!(long_group.len() > 253);
    assert_refused(&format!("{long_group}/v1/things"), "longer than 253");
}

#[test]
fn errors_tell_the_user_the_expected_form() {
    let message = Resource::parse("pods").unwrap_err().to_string();
    assert!(message.contains("\"pods\""), "{message}");
    assert!(message.contains("v1/pods"), "{message}");
}

#[test]
fn any_version_kubernetes_serves_is_accepted() {
    // A CRD's versions are DNS-1035 labels, not only `vN(alphaN|betaN)`.
    for version in ["v1", "v2beta3", "v1alpha", "stable", "v1-preview"] {
        let text = format!("example.com/{version}/widgets");
        let resource = Resource::parse(&text).unwrap();
        assert_eq!(resource.version(), version);
        assert_eq!(resource.api_version(), format!("example.com/{version}"));
        assert_eq!(resource.as_str(), text);
    }
    assert_refused(
        "example.com/1/widgets",
        "must start with a lowercase letter",
    );
    assert_refused("example.com/v1_1/widgets", "contains '_'");
}

#[test]
fn clones_share_the_text() {
    let pods = Resource::parse("v1/pods").unwrap();
    let clone = pods.clone();
    assert!(std::ptr::eq(pods.as_str(), clone.as_str()));
    assert_eq!(format!("{clone:?}"), "Resource(\"v1/pods\")");
}
