//! Tests of config parsing and validation: the defaults, the YAML format, and error messages
//! that name the offending field.

use std::time::Duration;

use super::*;

mod exclude;

fn path(s: &str) -> FieldPath {
    FieldPath::parse(s).unwrap()
}

fn resource(s: &str) -> Resource {
    Resource::parse(s).unwrap()
}

/// The error message of a config that must be rejected.
fn rejected(yaml: &str) -> String {
    match ServerConfig::from_yaml_str(yaml) {
        Ok(config) => panic!("accepted {yaml:?} as {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} does not mention {part:?}"
        );
    }
}

#[test]
fn default_profile_matches_the_design() {
    let config = ServerConfig::default();
    config.validate().unwrap();
    let names: Vec<&str> = config
        .resources
        .iter()
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "v1/pods",
            "v1/namespaces",
            "v1/nodes",
            "v1/services",
            "discovery.k8s.io/v1/endpointslices",
            "networking.k8s.io/v1/networkpolicies",
            "v1/serviceaccounts",
        ]
    );
    let pods = config.resource(&resource("v1/pods")).unwrap();
    assert_eq!(pods.scope, Some(path("spec.nodeName")));
    let fields: Vec<&str> = pods.fields.iter().map(FieldPath::as_str).collect();
    assert_eq!(
        fields,
        [
            "metadata.labels",
            "spec.nodeName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "spec.containers[].ports",
            "status.podIPs",
            "status.phase",
        ]
    );
    let nodes = config.resource(&resource("v1/nodes")).unwrap();
    assert!(nodes.fields.contains(&path("spec.podCIDRs")));
    assert!(nodes.scope.is_none());
    assert_eq!(default_for(&resource("v1/nodes")).as_ref(), Some(nodes));
    assert!(default_for(&resource("apps/v1/deployments")).is_none());
}

#[test]
fn empty_document_gives_the_defaults() {
    assert_eq!(
        ServerConfig::from_yaml_str("").unwrap(),
        ServerConfig::default()
    );
    assert_eq!(
        ServerConfig::from_yaml_str("store:\n  batch_max_changes: 10\n")
            .unwrap()
            .resources,
        default_resources()
    );
}

#[test]
fn parses_a_full_file() {
    let config = ServerConfig::from_yaml_str(
        r#"
resources:
  - resource: v1/pods
    fields: [metadata.labels, "spec.containers[].name", "spec.containers[].ports"]
    scope: spec.nodeName
  - resource: crd.projectcalico.org/v1/globalnetworkpolicies
store:
  log_max_bytes: 1000
  log_max_batches: 10
  log_max_age: 90s
  batch_max_changes: 5
projection:
  max_object_bytes: 2048
"#,
    )
    .unwrap();
    assert_eq!(config.resources.len(), 2);
    let calico = &config.resources[1];
    assert_eq!(calico.resource.group(), "crd.projectcalico.org");
    assert!(calico.fields.is_empty());
    assert_eq!(calico.scope, None);
    assert_eq!(config.store.log_max_age, Duration::from_secs(90));
    assert_eq!(config.store.log_max_batches, 10);
    assert_eq!(config.projection.max_object_bytes, 2048);
}

#[test]
fn serializes_back_to_an_equal_config() {
    let config = ServerConfig::default();
    let yaml = serde_yaml_ng::to_string(&config).unwrap();
    assert!(yaml.contains("log_max_age: 10m"), "{yaml}");
    assert_eq!(ServerConfig::from_yaml_str(&yaml).unwrap(), config);
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "resources:\n  - resource: v1/nodes\n").unwrap();
    let config = ServerConfig::load(&good).unwrap();
    assert_eq!(
        config.resources,
        vec![ResourceConfig::new(resource("v1/nodes"))]
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "resources: []\n").unwrap();
    let message = ServerConfig::load(&bad).unwrap_err().to_string();
    assert_mentions(&message, &["bad.yaml", "resources", "at least one"]);

    let missing = dir.path().join("missing.yaml");
    let message = ServerConfig::load(&missing).unwrap_err().to_string();
    assert_mentions(&message, &["cannot read config file", "missing.yaml"]);
}

#[test]
fn unknown_fields_are_rejected_by_name() {
    let message = rejected("resources:\n  - resource: v1/pods\n    feilds: [a]\n");
    assert_mentions(
        &message,
        &["resources[0]", "unknown field `feilds`", "line 3"],
    );
    let message = rejected("stroe:\n  log_max_bytes: 1\n");
    assert_mentions(&message, &["unknown field `stroe`"]);
    let message = rejected("store:\n  log_max_byte: 1\n");
    assert_mentions(&message, &["store", "unknown field `log_max_byte`"]);
}

#[test]
fn bad_values_name_their_place_and_value() {
    let message = rejected("resources:\n  - resource: v1/pods\n  - resource: pods\n");
    assert_mentions(
        &message,
        &["resources[1]", "\"pods\"", "group/version/plural"],
    );
    let message = rejected("resources:\n  - resource: v1/pods\n    fields: [a, 'spec..x']\n");
    assert_mentions(
        &message,
        &["resources[0].fields", "spec..x", "empty segment"],
    );
    let message = rejected("store:\n  log_max_age: soon\n");
    assert_mentions(&message, &["store", "\"soon\"", "not a duration"]);
    let message = rejected("store:\n  log_max_bytes: -1\n");
    assert_mentions(&message, &["store.log_max_bytes"]);
}

#[test]
fn cross_field_rules_name_the_field() {
    let cases: &[(&str, &[&str])] = &[
        (
            "resources:\n  - resource: v1/pods\n  - resource: v1/nodes\n  - resource: v1/pods\n",
            &["resources[2].resource", "listed twice", "resources[0]"],
        ),
        (
            "resources:\n  - resource: v1/pods\n    fields: [a.b, c, a.b]\n",
            &["resources[0].fields[2]", "a.b is listed twice"],
        ),
        (
            "resources:\n  - resource: v1/pods\n    fields: [metadata]\n",
            &["resources[0].fields[0]", "metadata.labels"],
        ),
        (
            "resources:\n  - resource: v1/pods\n    fields: [metadata.resourceVersion]\n",
            &["resources[0].fields[0]", "never projected"],
        ),
        (
            "resources:\n  - resource: v1/pods\n    fields: [metadata.managedFields]\n",
            &["resources[0].fields[0]", "managedFields"],
        ),
        (
            "resources:\n  - resource: v1/pods\n    scope: 'spec.containers[].name'\n",
            &["resources[0].scope", "one string field"],
        ),
        (
            "resources:\n  - resource: v1/pods\n    fields: ['spec.c[].a', spec.c.b]\n",
            &["resources[0].fields[1]", "spec.c", "fields[0]", "array"],
        ),
        ("resources: []\n", &["resources", "at least one"]),
        (
            "store:\n  log_max_batches: 0\n",
            &["store.log_max_batches", "greater than 0"],
        ),
        (
            "store:\n  log_max_age: 0s\n",
            &["store.log_max_age", "greater than 0"],
        ),
        (
            "projection:\n  max_object_bytes: 0\n",
            &["projection.max_object_bytes"],
        ),
    ];
    for (yaml, parts) in cases {
        let message = rejected(yaml);
        assert_mentions(&message, parts);
    }
}

#[test]
fn limits_on_counts() {
    let mut yaml = String::from("resources:\n");
    for i in 0..=MAX_RESOURCES {
        yaml.push_str(&format!("  - resource: example.com/v1/things{i}\n"));
    }
    assert_mentions(
        &rejected(&yaml),
        &["resources", "65 resources", "at most 64"],
    );

    let fields: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("spec.f{i}")).collect();
    let yaml = format!(
        "resources:\n  - resource: v1/pods\n    fields: [{}]\n",
        fields.join(", ")
    );
    assert_mentions(&rejected(&yaml), &["resources[0].fields", "65 fields"]);

    // Exactly at the limits is fine.
    let config = ServerConfig {
        resources: (0..MAX_RESOURCES)
            .map(|i| ResourceConfig::new(resource(&format!("example.com/v1/things{i}"))))
            .collect(),
        ..ServerConfig::default()
    };
    config.validate().unwrap();
}

#[test]
fn resource_names() {
    let pods = resource("v1/pods");
    assert_eq!(
        (
            pods.group(),
            pods.version(),
            pods.plural(),
            pods.api_version()
        ),
        ("", "v1", "pods", "v1")
    );
    let np = resource("networking.k8s.io/v1/networkpolicies");
    assert_eq!(
        (np.group(), np.version(), np.plural(), np.api_version()),
        (
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "networking.k8s.io/v1"
        )
    );
    let beta = resource("apps/v2beta1/deployments");
    assert_eq!((beta.group(), beta.version()), ("apps", "v2beta1"));
    assert_eq!(beta.to_string(), "apps/v2beta1/deployments");

    for bad in [
        "pods",
        "/v1/pods",
        "a/b/c/d",
        "v1/Pods",
        "V1/pods",
        "v 1/pods",
        "1/pods",
        "Apps/v1/deployments",
        "apps./v1/deployments",
        "v1/-pods",
        "v1/",
        "",
    ] {
        assert!(Resource::parse(bad).is_err(), "accepted {bad:?}");
    }
    // The message names the part that is wrong and what to write instead.
    let plural = Resource::parse("v1/Pods").unwrap_err().to_string();
    assert!(plural.contains("the plural \"Pods\""), "{plural}");
    let group = Resource::parse("x_y/v1/pods").unwrap_err().to_string();
    assert!(group.contains("the group \"x_y\""), "{group}");
}

#[test]
fn crd_versions_that_are_not_vn_alpha_beta_are_configurable() {
    // Kubernetes allows any DNS-1035 label as a CRD version; agents can subscribe to these,
    // so the server must be able to serve them.
    let yaml = "resources:\n\
                - resource: example.com/stable/widgets\n\
                - resource: example.com/v1alpha/gadgets\n\
                - resource: example.com/v1beta/gizmos\n";
    let config = ServerConfig::from_yaml_str(yaml).unwrap();
    let versions: Vec<&str> = config
        .resources
        .iter()
        .map(|r| r.resource.version())
        .collect();
    assert_eq!(versions, ["stable", "v1alpha", "v1beta"]);
}

#[test]
fn field_path_syntax() {
    let p = path("spec.containers[].ports");
    assert_eq!(p.segments().len(), 3);
    assert!(p.segments()[1].each && !p.segments()[2].each);
    assert!(p.is_multi_valued());
    assert_eq!(p.to_string(), "spec.containers[].ports");
    assert!(path("metadata.labels").starts_with(&["metadata"]));
    assert!(!path("metadata").starts_with(&["metadata", "labels"]));
    assert!(!path("spec.containers[].ports").starts_with(&["spec", "containers"]));

    assert_eq!(FieldPath::parse(""), Err(FieldPathError::Empty));
    for (bad, expected) in [
        (".a", "empty segment"),
        ("a..b", "empty segment"),
        ("a.", "empty segment"),
        ("a[]", "ends with `[]`"),
        ("a.b[]", "ends with `[]`"),
        ("a[0].b", "invalid segment"),
        ("a[].[]", "invalid segment"),
        ("a b", "invalid segment"),
        ("a/b", "invalid segment"),
        ("a[]b.c", "invalid segment"),
    ] {
        let message = FieldPath::parse(bad).unwrap_err().to_string();
        assert_mentions(&message, &[expected]);
    }
    let deep = vec!["a"; MAX_SEGMENTS + 1].join(".");
    assert!(matches!(
        FieldPath::parse(&deep),
        Err(FieldPathError::TooDeep { count: 17, .. })
    ));
    let long = "a".repeat(MAX_PATH_BYTES + 1);
    assert!(matches!(
        FieldPath::parse(&long),
        Err(FieldPathError::TooLong { .. })
    ));
}

#[test]
fn builders_validate_in_code() {
    let config = ResourceConfig::new(resource("v1/pods"))
        .with_field(path("spec.nodeName"))
        .with_field(path("spec.nodeName"));
    let message = config.validate().unwrap_err().to_string();
    assert_mentions(&message, &["fields[1]", "listed twice"]);
    let ok = ResourceConfig::new(resource("v1/pods"))
        .with_field(path("spec.containers"))
        .with_field(path("spec.containers[].name"))
        .with_scope(path("spec.nodeName"));
    ok.validate().unwrap();
}

const AUTH_RESOURCES: &str =
    "resources:\n  - resource: v1/pods\n    scope: spec.nodeName\n  - resource: v1/services\n";

#[test]
fn the_auth_section_parses_with_defaults_and_round_trips() {
    assert!(!ServerConfig::default().auth.enabled());
    let yaml = format!(
        "{AUTH_RESOURCES}auth:\n  tokens:\n    service_accounts: [kube-system/agent]\n  \
         certificates:\n    uri_san_prefixes: ['spiffe://cluster/ns/agents/']\n  policies:\n    \
         - service_account: kube-system/agent\n      resources: [v1/pods]\n      all_nodes: true\n    \
         - default_for: certificate\n      all_nodes: false\n"
    );
    let config = ServerConfig::from_yaml_str(&yaml).unwrap();
    let tokens = config.auth.tokens.as_ref().unwrap();
    assert_eq!(tokens.audiences, ["cattail"]);
    assert_eq!(tokens.cache_ttl, Duration::from_secs(60));
    assert_eq!(tokens.cache_max_entries, 10_000);
    assert_eq!(tokens.max_reviews_in_flight, 8);
    assert_eq!(config.auth.policies.len(), 2);
    assert_eq!(
        config.auth.policies[1].default_for,
        Some(IdentityKind::Certificate)
    );
    let text = serde_yaml_ng::to_string(&config).unwrap();
    assert_eq!(ServerConfig::from_yaml_str(&text).unwrap(), config);
    // Without the section, the YAML stays as it was.
    let plain = serde_yaml_ng::to_string(&ServerConfig::default()).unwrap();
    assert!(!plain.contains("auth"), "{plain}");
}

#[test]
fn the_auth_section_refuses_what_it_cannot_honour() {
    let cases: &[(&str, &[&str])] = &[
        (
            "tokens: {}",
            &["auth.tokens.service_accounts", "namespace/name"],
        ),
        (
            "tokens: {service_accounts: [agent]}",
            &["auth.tokens.service_accounts[0]", "not `namespace/name`"],
        ),
        (
            "tokens: {service_accounts: [a/b, a/b]}",
            &["auth.tokens.service_accounts[1]", "listed twice"],
        ),
        (
            "tokens: {service_accounts: [a/b], audiences: []}",
            &["auth.tokens.audiences"],
        ),
        (
            "tokens: {service_accounts: [a/b], cache_ttl: 0s}",
            &["auth.tokens.cache_ttl", "greater than 0"],
        ),
        (
            "tokens: {service_accounts: [a/b], max_reviews_in_flight: 100000}",
            &["auth.tokens.max_reviews_in_flight", "at most 1024"],
        ),
        ("certificates: {}", &["auth.certificates", "at least one"]),
        (
            "certificates: {uri_san_prefixes: ['spiffe://x']}",
            &["auth.certificates.uri_san_prefixes[0]", "ending with `/`"],
        ),
        (
            "certificates: {common_names: ['']}",
            &["auth.certificates.common_names[0]", "1 to 1024 bytes"],
        ),
        (
            "policies: [{default_for: service_account}]",
            &[
                "auth.policies",
                "only with auth.certificates or auth.tokens",
            ],
        ),
        (
            "tokens: {service_accounts: [a/b]}\n  policies: [{all_nodes: true}]",
            &["auth.policies[0]", "exactly one of"],
        ),
        (
            "tokens: {service_accounts: [a/b]}\n  policies: [{service_account: a/b, common_name: x}]",
            &["auth.policies[0]", "exactly one of"],
        ),
        (
            "tokens: {service_accounts: [a/b]}\n  policies: [{service_account: a/b}, {service_account: a/b}]",
            &["auth.policies[1]", "two entries"],
        ),
        (
            "tokens: {service_accounts: [a/b]}\n  policies: [{service_account: a/b, resources: [v1/secrets]}]",
            &[
                "auth.policies[0].resources[0]",
                "v1/secrets is not in `resources`",
            ],
        ),
        (
            "tokens: {service_accounts: [a/b], ttl: 5s}",
            &["unknown field `ttl`"],
        ),
    ];
    for (section, parts) in cases {
        let yaml = format!("{AUTH_RESOURCES}auth:\n  {section}\n");
        assert_mentions(&rejected(&yaml), parts);
    }
    let many: Vec<String> = (0..=MAX_AUTH_ENTRIES).map(|i| format!("n/a{i}")).collect();
    let yaml = format!(
        "{AUTH_RESOURCES}auth:\n  tokens: {{service_accounts: [{}]}}\n",
        many.join(", ")
    );
    assert_mentions(
        &rejected(&yaml),
        &["auth.tokens.service_accounts", "at most 1024"],
    );
}

#[test]
fn tls_settings_parse_and_bad_ones_name_the_field() {
    let config = ServerConfig::from_yaml_str(
        "tls:\n  cert_file: /tls/tls.crt\n  key_file: /tls/tls.key\n  client_ca_file: /tls/ca.crt\n  \
         handshake_timeout: 3s\n  max_handshakes: 10\n  reload_interval: 1m\n",
    )
    .unwrap();
    assert!(config.tls.is_enabled());
    assert!(
        config.tls.client_certificate_required(),
        "required with a CA by default"
    );
    assert_eq!(config.tls.handshake_timeout, Duration::from_secs(3));
    assert_eq!(config.tls.max_handshakes, 10);
    assert_eq!(config.tls.reload_interval, Duration::from_secs(60));
    let optional = ServerConfig::from_yaml_str(
        "tls:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n  require_client_certificate: false\n",
    )
    .unwrap();
    assert!(!optional.tls.client_certificate_required());
    let defaults = TlsConfig::default();
    assert!(!defaults.is_enabled());
    assert_eq!(defaults.handshake_timeout, Duration::from_secs(10));
    assert_eq!(defaults.max_handshakes, 1024);

    for (yaml, field) in [
        ("tls:\n  cert_file: a\n", "tls.key_file"),
        ("tls:\n  key_file: a\n", "tls.cert_file"),
        ("tls:\n  client_ca_file: a\n", "tls.client_ca_file"),
        (
            "tls:\n  cert_file: a\n  key_file: b\n  require_client_certificate: true\n",
            "tls.require_client_certificate",
        ),
        ("tls:\n  max_handshakes: 0\n", "tls.max_handshakes"),
        ("tls:\n  handshake_timeout: 0s\n", "tls.handshake_timeout"),
        ("tls:\n  reload_interval: 0s\n", "tls.reload_interval"),
        (
            "tls:\n  handshake_timeout: soon\n",
            "\"soon\" is not a duration",
        ),
        ("tls:\n  certfile: a\n", "certfile"),
    ] {
        assert_mentions(&rejected(yaml), &[field]);
    }
}
