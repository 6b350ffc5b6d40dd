//! What the deploy tests share (`rbac.rs` for the kustomize base, `helm.rs` for the chart): the
//! base's files, and the one derivation of the RBAC rules the server needs from its config.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cattail_server::config::ServerConfig;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use serde::de::DeserializeOwned;

/// `deploy/kustomize/base`.
pub(crate) fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kustomize/base")
}

/// A file of the base, as text.
pub(crate) fn read(file: &str) -> String {
    let path = base().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One manifest of the base, parsed into its k8s-openapi type.
pub(crate) fn manifest<T: DeserializeOwned>(file: &str) -> T {
    serde_yaml_ng::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The base's kustomization.yaml.
pub(crate) fn kustomization() -> serde_yaml_ng::Value {
    manifest("kustomization.yaml")
}

/// The file that kustomization.yaml turns into the ConfigMap `cattail-config`, key `config.yaml`.
pub(crate) fn config_file() -> PathBuf {
    let kustomization = kustomization();
    let generator = kustomization["configMapGenerator"]
        .as_sequence()
        .expect("kustomization.yaml has a configMapGenerator")
        .iter()
        .find(|g| g["name"].as_str() == Some("cattail-config"))
        .expect("a configMapGenerator named cattail-config");
    let files: Vec<&str> = generator["files"]
        .as_sequence()
        .expect("cattail-config lists files")
        .iter()
        .map(|f| f.as_str().expect("a file name"))
        .collect();
    // `config.yaml` or `config.yaml=some/path`: either way the key is config.yaml.
    let file = files
        .iter()
        .find_map(|f| match f.split_once('=') {
            Some(("config.yaml", path)) => Some(path),
            None if Path::new(f).file_name() == Some("config.yaml".as_ref()) => Some(*f),
            _ => None,
        })
        .expect("cattail-config holds a key config.yaml");
    base().join(file)
}

/// `(apiGroup, plural)` of every resource of `config`.
pub(crate) fn resources_of(config: &ServerConfig) -> BTreeSet<(String, String)> {
    config
        .resources
        .iter()
        .map(|r| {
            (
                r.resource.group().to_owned(),
                r.resource.plural().to_owned(),
            )
        })
        .collect()
}

/// `(apiGroup, plural)` that `role` grants both `list` and `watch` on.
pub(crate) fn list_watch_grants(role: &ClusterRole) -> BTreeSet<(String, String)> {
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        if !(verbs.contains("list") && verbs.contains("watch")) {
            continue;
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                granted.insert((group.clone(), resource.clone()));
            }
        }
    }
    granted
}

/// Whether `rule` is exactly `create` on `tokenreviews.authentication.k8s.io`, which token
/// authentication of agents needs (`auth.tokens`).
pub(crate) fn is_token_review_rule(rule: &PolicyRule) -> bool {
    rule.verbs == ["create"]
        && rule.api_groups.as_deref() == Some(&["authentication.k8s.io".to_owned()][..])
        && rule.resources.as_deref() == Some(&["tokenreviews".to_owned()][..])
}

/// Asserts that every rule of `role` is `list`+`watch` or the tokenreviews rule, with no
/// wildcards, resource names or non-resource URLs, and that the list+watch grants are exactly
/// `config`'s resources. Returns how many tokenreviews rules there are.
pub(crate) fn assert_grants_exactly(
    role: &ClusterRole,
    config: &ServerConfig,
    what: &str,
) -> usize {
    let rules = role.rules.as_deref().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert!(
            is_token_review_rule(rule) || verbs == BTreeSet::from(["list", "watch"]),
            "{what}: rule {i} grants other verbs: {verbs:?}"
        );
        assert!(
            rule.non_resource_urls.is_none(),
            "{what}: rule {i}: non-resource URLs"
        );
        assert!(
            rule.resource_names.is_none(),
            "{what}: rule {i}: resourceNames"
        );
        let wildcard = |v: &Option<Vec<String>>| v.iter().flatten().any(|s| s.contains('*'));
        assert!(
            !wildcard(&rule.api_groups) && !wildcard(&rule.resources),
            "{what}: rule {i}: wildcard"
        );
    }
    assert_eq!(
        list_watch_grants(role),
        resources_of(config),
        "{what}: list and watch must be granted on exactly the config's resources"
    );
    rules.iter().filter(|r| is_token_review_rule(r)).count()
}
