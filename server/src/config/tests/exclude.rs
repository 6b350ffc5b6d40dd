//! `exclude:` rules: parsing, the default profile's rules, and every way a rule is refused.

use super::*;

fn pods_with(rules: &str) -> String {
    format!(
        "resources:\n  - resource: v1/pods\n    scope: spec.nodeName\n    fields: [metadata.labels, \
         status.podIPs, status.phase, spec.hostNetwork, 'spec.containers[].ports', spec.priority]\n    \
         exclude:\n{rules}"
    )
}

#[test]
fn the_default_profile_leaves_out_pods_without_ip_host_networked_or_finished() {
    let config = ServerConfig::default();
    let pods = config.resource(&resource("v1/pods")).unwrap();
    let rules: Vec<String> = pods.exclude.iter().map(ExcludeRule::describe).collect();
    assert_eq!(
        rules,
        [
            "status.podIPs is empty",
            "spec.hostNetwork in [true]",
            "status.phase in [\"Succeeded\", \"Failed\"]",
        ]
    );
    for other in config
        .resources
        .iter()
        .filter(|r| r.resource != pods.resource)
    {
        assert!(other.exclude.is_empty(), "{}", other.resource);
    }
}

#[test]
fn rules_parse_in_each_form_and_round_trip() {
    let yaml = pods_with(
        "      - {field: status.podIPs, is: empty}\n      - {field: spec.hostNetwork, equals: true}\n      \
         - {field: status.phase, in: [Succeeded, Failed]}\n      - {field: spec.priority, equals: 7}\n      \
         - {field: metadata.labels.tier, is: not_empty}\n",
    );
    let config = ServerConfig::from_yaml_str(&yaml).unwrap();
    let rules = &config.resources[0].exclude;
    assert_eq!(
        rules[0],
        ExcludeRule::is(path("status.podIPs"), Emptiness::Empty)
    );
    assert_eq!(rules[1].equals, Some(Scalar::Bool(true)));
    assert_eq!(
        rules[2].one_of,
        Some(vec![
            Scalar::String("Succeeded".into()),
            Scalar::String("Failed".into())
        ])
    );
    assert_eq!(rules[3].equals, Some(Scalar::Int(7)));
    assert_eq!(rules[4].describe(), "metadata.labels.tier is not empty");
    let again = serde_yaml_ng::to_string(&config).unwrap();
    assert_eq!(ServerConfig::from_yaml_str(&again).unwrap(), config);
}

#[test]
fn bad_rules_name_their_place_and_say_what_to_write() {
    let cases: &[(&str, &[&str])] = &[
        // No test, or two.
        (
            "      - {field: status.phase}\n",
            &["resources[0].exclude[0]", "exactly one of"],
        ),
        (
            "      - {field: status.phase, is: empty, equals: Failed}\n",
            &["resources[0].exclude[0]", "exactly one of"],
        ),
        // A field the projection does not keep, or misspelled.
        (
            "      - {field: status.podIP, is: empty}\n",
            &[
                "resources[0].exclude[0].field",
                "status.podIP is not a projected field",
            ],
        ),
        (
            "      - {field: status.hostIP, is: empty}\n",
            &["exclude[0].field", "not a projected field"],
        ),
        // Many values: a rule tests one field.
        (
            "      - {field: 'spec.containers[].ports', is: empty}\n",
            &["exclude[0].field", "selects many values"],
        ),
        // Under an array of a kept path, which is not one value either.
        (
            "      - {field: spec.containers.ports, is: empty}\n",
            &["exclude[0].field", "not a projected field"],
        ),
        // Would leave out every object, or match nothing.
        (
            "      - {field: metadata.name, is: not_empty}\n",
            &["exclude[0].is", "every object"],
        ),
        (
            "      - {field: status.phase, in: []}\n",
            &["exclude[0].in", "match nothing"],
        ),
        // Unknown keys and values, and values of the wrong type.
        (
            "      - {field: status.phase, is: missing}\n",
            &["exclude[0].is", "unknown variant"],
        ),
        (
            "      - {field: status.phase, matches: Failed}\n",
            &["exclude[0]", "unknown field"],
        ),
        (
            "      - {field: status.phase, equals: [a]}\n",
            &["exclude[0].equals"],
        ),
        (
            "      - {field: status..phase, is: empty}\n",
            &["exclude[0].field"],
        ),
        (
            "      - {field: status.phase, equals: 1.5}\n",
            &["exclude[0].equals"],
        ),
    ];
    for (rules, parts) in cases {
        assert_mentions(&rejected(&pods_with(rules)), parts);
    }
    let long = "x".repeat(MAX_EXCLUDE_VALUE_BYTES + 1);
    assert_mentions(
        &rejected(&pods_with(&format!(
            "      - {{field: status.phase, equals: {long}}}\n"
        ))),
        &["exclude[0].equals", "bytes"],
    );
    let many: String = (0..=MAX_EXCLUDE_RULES)
        .map(|i| format!("      - {{field: status.phase, equals: v{i}}}\n"))
        .collect();
    assert_mentions(
        &rejected(&pods_with(&many)),
        &["resources[0].exclude", "at most 16"],
    );
    let values: Vec<String> = (0..=MAX_EXCLUDE_VALUES).map(|i| format!("v{i}")).collect();
    assert_mentions(
        &rejected(&pods_with(&format!(
            "      - {{field: status.phase, in: [{}]}}\n",
            values.join(", ")
        ))),
        &["exclude[0].in", "at most 64"],
    );
}

#[test]
fn identity_fields_and_the_scope_can_be_tested_without_being_listed() {
    let yaml = "resources:\n  - resource: v1/pods\n    scope: spec.nodeName\n    exclude:\n      \
                - {field: metadata.namespace, equals: kube-system}\n      \
                - {field: spec.nodeName, is: empty}\n";
    let config = ServerConfig::from_yaml_str(yaml).unwrap();
    assert_eq!(config.resources[0].exclude.len(), 2);
}
