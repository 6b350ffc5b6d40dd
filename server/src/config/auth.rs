//! The `auth:` section: who may connect (client certificates, ServiceAccount tokens) and what
//! each identity may subscribe to (`policies`).
//!
//! Absent or empty, agents are not authenticated (the behaviour of a server without `auth:`).
//! Every list and string has a limit, and errors name the field, like
//! `auth.tokens.service_accounts[1]`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Resource, Result, duration_text, invalid};

/// At most this many entries in any list of the section.
pub const MAX_AUTH_ENTRIES: usize = 1024;
/// At most this many bytes in any name, audience or URI of the section.
pub const MAX_AUTH_NAME_BYTES: usize = 1024;

/// Agent authentication and authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Agents may prove who they are with a client certificate (verified by TLS against the
    /// client CA bundle) whose names are on these allowlists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificateAuthConfig>,
    /// Agents may prove who they are with a ServiceAccount token (`authorization: Bearer`),
    /// checked with a TokenReview.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenAuthConfig>,
    /// What each identity may subscribe to; identities without a matching entry get the
    /// defaults of their kind (see [`PolicyConfig`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyConfig>,
}

/// The client-certificate allowlists; a certificate is allowed when any one entry matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateAuthConfig {
    /// Exact subject common names.
    pub common_names: Vec<String>,
    /// Exact URI SANs, like `spiffe://cluster.local/ns/cattail/sa/agent`.
    pub uri_sans: Vec<String>,
    /// URI SAN prefixes, like `spiffe://cluster.local/ns/cattail/` (must end with `/`).
    pub uri_san_prefixes: Vec<String>,
}

/// ServiceAccount tokens checked with TokenReview.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenAuthConfig {
    /// A token must be issued for one of these audiences.
    pub audiences: Vec<String>,
    /// The ServiceAccounts (`namespace/name`) whose tokens are accepted. Required.
    pub service_accounts: Vec<String>,
    /// How long a TokenReview's answer is reused (never past the token's own expiry).
    #[serde(with = "duration_text")]
    pub cache_ttl: Duration,
    /// How many answers are kept; the oldest go first.
    pub cache_max_entries: usize,
    /// TokenReviews sent at once; more wait their turn.
    pub max_reviews_in_flight: usize,
    /// How long one TokenReview may take before the agent gets `UNAVAILABLE`.
    #[serde(with = "duration_text")]
    pub review_timeout: Duration,
}

impl Default for TokenAuthConfig {
    fn default() -> Self {
        Self {
            audiences: vec!["cattail".to_owned()],
            service_accounts: Vec::new(),
            cache_ttl: Duration::from_secs(60),
            cache_max_entries: 10_000,
            max_reviews_in_flight: 8,
            review_timeout: Duration::from_secs(10),
        }
    }
}

/// The kinds of identity a default policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// Every ServiceAccount without an entry of its own.
    ServiceAccount,
    /// Every client certificate without an entry of its own.
    Certificate,
}

/// What one identity, or every identity of a kind, may subscribe to. Exactly one of
/// `service_account`, `common_name`, `uri_san` and `default_for` names whom it is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// A ServiceAccount, `namespace/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// A client certificate's common name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// A client certificate's URI SAN (takes precedence over `common_name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri_san: Option<String>,
    /// Every identity of this kind without an entry of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_for: Option<IdentityKind>,
    /// The resources it may subscribe to; absent means every served resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<Resource>>,
    /// Whether it may see node-scoped objects of every node. Absent: `false` for
    /// ServiceAccounts (only their own node's objects), `true` for certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_nodes: Option<bool>,
}

impl AuthConfig {
    /// Whether agents are authenticated at all.
    pub fn enabled(&self) -> bool {
        self.certificates.is_some() || self.tokens.is_some()
    }

    /// Whether this is the default (nothing configured): then it is left out of the YAML.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the section against the configured `resources`.
    pub(super) fn validate(&self, resources: &BTreeSet<&Resource>) -> Result<()> {
        if !self.enabled() && !self.policies.is_empty() {
            return Err(invalid(
                "auth.policies",
                "policies apply only with auth.certificates or auth.tokens: configure one",
            ));
        }
        if let Some(certificates) = &self.certificates {
            certificates.validate()?;
        }
        if let Some(tokens) = &self.tokens {
            tokens.validate()?;
        }
        check_count("auth.policies", self.policies.len())?;
        let mut seen = BTreeSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let field = format!("auth.policies[{i}]");
            let whom = policy.whom(&field)?;
            if !seen.insert(whom.clone()) {
                return Err(invalid(
                    field,
                    format!("{whom} has two entries: merge them"),
                ));
            }
            for (j, resource) in policy.resources.iter().flatten().enumerate() {
                if !resources.contains(resource) {
                    return Err(invalid(
                        format!("{field}.resources[{j}]"),
                        format!("{resource} is not in `resources`: list only served resources"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl CertificateAuthConfig {
    fn validate(&self) -> Result<()> {
        let lists = [
            ("common_names", &self.common_names),
            ("uri_sans", &self.uri_sans),
            ("uri_san_prefixes", &self.uri_san_prefixes),
        ];
        for (name, list) in lists {
            check_names(&format!("auth.certificates.{name}"), list)?;
        }
        if lists.iter().all(|(_, list)| list.is_empty()) {
            return Err(invalid(
                "auth.certificates",
                "list at least one of common_names, uri_sans or uri_san_prefixes",
            ));
        }
        for (i, prefix) in self.uri_san_prefixes.iter().enumerate() {
            if !prefix.contains("://") || !prefix.ends_with('/') {
                return Err(invalid(
                    format!("auth.certificates.uri_san_prefixes[{i}]"),
                    format!(
                        "{prefix:?} must be a URI ending with `/`, like spiffe://cluster/ns/x/"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl TokenAuthConfig {
    fn validate(&self) -> Result<()> {
        check_names("auth.tokens.audiences", &self.audiences)?;
        if self.audiences.is_empty() {
            return Err(invalid(
                "auth.tokens.audiences",
                "list the audience agents' tokens are issued for, like `cattail`",
            ));
        }
        check_names("auth.tokens.service_accounts", &self.service_accounts)?;
        if self.service_accounts.is_empty() {
            return Err(invalid(
                "auth.tokens.service_accounts",
                "list the ServiceAccounts (namespace/name) your agents run as",
            ));
        }
        for (i, account) in self.service_accounts.iter().enumerate() {
            check_service_account(&format!("auth.tokens.service_accounts[{i}]"), account)?;
        }
        let positive = [
            ("auth.tokens.cache_ttl", self.cache_ttl.is_zero()),
            ("auth.tokens.cache_max_entries", self.cache_max_entries == 0),
            (
                "auth.tokens.max_reviews_in_flight",
                self.max_reviews_in_flight == 0,
            ),
            ("auth.tokens.review_timeout", self.review_timeout.is_zero()),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(invalid(*field, "must be greater than 0"));
        }
        if self.max_reviews_in_flight > MAX_AUTH_ENTRIES {
            return Err(invalid(
                "auth.tokens.max_reviews_in_flight",
                format!("at most {MAX_AUTH_ENTRIES}; the API server pays for each one"),
            ));
        }
        Ok(())
    }
}

impl PolicyConfig {
    /// Whom the entry is for, as text; checks that exactly one selector is set.
    fn whom(&self, field: &str) -> Result<String> {
        let mut named = Vec::new();
        if let Some(account) = &self.service_account {
            check_service_account(&format!("{field}.service_account"), account)?;
            named.push(format!("service_account {account}"));
        }
        for (name, value) in [
            ("common_name", &self.common_name),
            ("uri_san", &self.uri_san),
        ] {
            if let Some(value) = value {
                check_names(&format!("{field}.{name}"), std::slice::from_ref(value))?;
                named.push(format!("{name} {value}"));
            }
        }
        if let Some(kind) = self.default_for {
            named.push(format!("default_for {kind:?}"));
        }
        if let Some(resources) = &self.resources {
            check_count(&format!("{field}.resources"), resources.len())?;
        }
        match named.len() {
            1 => Ok(named.remove(0)),
            _ => Err(invalid(
                field,
                "set exactly one of service_account, common_name, uri_san or default_for",
            )),
        }
    }
}

fn check_count(field: &str, count: usize) -> Result<()> {
    if count > MAX_AUTH_ENTRIES {
        return Err(invalid(
            field,
            format!("{count} entries; at most {MAX_AUTH_ENTRIES} are allowed"),
        ));
    }
    Ok(())
}

/// Limits, no empty names, no duplicates.
fn check_names(field: &str, names: &[String]) -> Result<()> {
    check_count(field, names.len())?;
    let mut seen = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.len() > MAX_AUTH_NAME_BYTES {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("must be 1 to {MAX_AUTH_NAME_BYTES} bytes"),
            ));
        }
        if !seen.insert(name) {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

fn check_service_account(field: &str, account: &str) -> Result<()> {
    let valid = account.split_once('/').is_some_and(|(namespace, name)| {
        !namespace.is_empty() && !name.is_empty() && !name.contains('/')
    });
    if !valid || account.len() > MAX_AUTH_NAME_BYTES {
        return Err(invalid(
            field,
            format!("{account:?} is not `namespace/name`, like `kube-system/cattail-agent`"),
        ));
    }
    Ok(())
}
