//! The server's configuration: a YAML file turned into typed, validated config structs.
//!
//! Every struct has a `Default` (the default profile of DESIGN.md), so a missing file or a missing
//! section means "the defaults". Parsing is strict: unknown fields, bad resource names, bad field
//! paths, duplicates and limits are rejected with a message that names the offending field, like
//! `resources[2].fields[0]`, and says what to write instead.

mod auth;
mod exclude;
mod field_path;
mod profiles;
mod serving;
#[cfg(test)]
mod tests;
mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{
    AuthConfig, CertificateAuthConfig, IdentityKind, MAX_AUTH_ENTRIES, MAX_AUTH_NAME_BYTES,
    PolicyConfig, TokenAuthConfig,
};
pub use cattail_proto::Resource;
pub use exclude::{
    Emptiness, ExcludeRule, MAX_EXCLUDE_RULES, MAX_EXCLUDE_VALUE_BYTES, MAX_EXCLUDE_VALUES, Scalar,
    Test,
};
pub use field_path::{FieldPath, FieldPathError, MAX_PATH_BYTES, MAX_SEGMENTS, Segment};
pub use profiles::{default_for, default_resources};
pub use serving::{FanoutSettings, GrpcSettings, WatchSettings};
pub use tls::TlsConfig;

/// At most this many resources in one config.
pub const MAX_RESOURCES: usize = 64;
/// At most this many projected fields per resource.
pub const MAX_FIELDS: usize = 64;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown field, or a value of the wrong type or syntax.
    /// The message names the field and the line.
    #[error("invalid config: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// A value parsed but breaks a rule that spans fields (a duplicate, a limit, a forbidden path).
    #[error("invalid config: {field}: {reason}")]
    Invalid {
        /// The offending field, like `resources[1].scope`.
        field: String,
        /// What is wrong and what to do instead.
        reason: String,
    },
    /// An error found in a file, with the file's name.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        source: Box<Error>,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The resources to watch, project and serve. Defaults to the default profile.
    pub resources: Vec<ResourceConfig>,
    /// Store, batching and log limits.
    pub store: StoreConfig,
    /// Projection limits.
    pub projection: ProjectionConfig,
    /// What agents are sent and how long the server waits for them.
    pub fanout: FanoutSettings,
    /// The HTTP/2 side of the gRPC port.
    pub grpc: GrpcSettings,
    /// How resources are listed and watched.
    pub watch: WatchSettings,
    /// Agent authentication and authorization; absent, agents are not authenticated.
    #[serde(skip_serializing_if = "AuthConfig::is_default")]
    pub auth: AuthConfig,
    /// TLS on the gRPC port.
    pub tls: TlsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            resources: default_resources(),
            store: StoreConfig::default(),
            projection: ProjectionConfig::default(),
            fanout: FanoutSettings::default(),
            grpc: GrpcSettings::default(),
            watch: WatchSettings::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// One watched resource and what to keep of its objects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// `group/version/plural`, like `v1/pods`.
    pub resource: Resource,
    /// Fields kept beyond the identity (`apiVersion`, `kind`, name, namespace, uid).
    #[serde(default)]
    pub fields: Vec<FieldPath>,
    /// A single-valued string field that agents can filter on, like `spec.nodeName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<FieldPath>,
    /// Objects that pass any of these rules are treated as absent (see [`ExcludeRule`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<ExcludeRule>,
}

impl ResourceConfig {
    /// A resource that keeps only the identity, with no scope.
    pub fn new(resource: Resource) -> Self {
        Self {
            resource,
            fields: Vec::new(),
            scope: None,
            exclude: Vec::new(),
        }
    }

    /// Adds a projected field.
    #[must_use]
    pub fn with_field(mut self, field: FieldPath) -> Self {
        self.fields.push(field);
        self
    }

    /// Sets the scope field.
    #[must_use]
    pub fn with_scope(mut self, scope: FieldPath) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Adds an exclude rule.
    #[must_use]
    pub fn with_exclude(mut self, rule: ExcludeRule) -> Self {
        self.exclude.push(rule);
        self
    }
}

/// Limits of the store's writer and of the log of published batches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The log keeps batches up to this many bytes in total (the newest batch is always kept).
    pub log_max_bytes: u64,
    /// The log keeps at most this many batches.
    pub log_max_batches: usize,
    /// The log drops batches older than this, written like `10m` or `90s`.
    #[serde(with = "duration_text")]
    pub log_max_age: Duration,
    /// The writer publishes a batch once it holds this many changes, even if more are queued.
    pub batch_max_changes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            log_max_bytes: 64 * 1024 * 1024,
            log_max_batches: 100_000,
            log_max_age: Duration::from_secs(10 * 60),
            batch_max_changes: 4096,
        }
    }
}

/// Limits of projection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectionConfig {
    /// A projected object larger than this is rejected (and logged), not stored.
    pub max_object_bytes: usize,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        Self {
            max_object_bytes: 1024 * 1024,
        }
    }
}

impl ServerConfig {
    /// Parses and validates a YAML config. An empty document gives the defaults.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            let document = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(document).map_err(|error| {
                let field = error.path().to_string();
                let inner = error.into_inner();
                if field == "." {
                    Error::Yaml(inner)
                } else {
                    invalid(field, inner.to_string())
                }
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a YAML config file. Errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml_str(&text).map_err(|e| Error::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// The config of `resource`, if it is configured.
    pub fn resource(&self, resource: &Resource) -> Option<&ResourceConfig> {
        self.resources.iter().find(|r| &r.resource == resource)
    }

    /// Checks the rules that span fields. [`Self::from_yaml_str`] calls it; call it again after
    /// building or changing a config in code.
    pub fn validate(&self) -> Result<()> {
        if self.resources.is_empty() {
            return Err(invalid("resources", "list at least one resource to watch"));
        }
        if self.resources.len() > MAX_RESOURCES {
            return Err(invalid(
                "resources",
                format!(
                    "{} resources are listed; at most {MAX_RESOURCES} are allowed",
                    self.resources.len()
                ),
            ));
        }
        let mut seen: BTreeMap<&Resource, usize> = BTreeMap::new();
        for (i, r) in self.resources.iter().enumerate() {
            if let Some(first) = seen.insert(&r.resource, i) {
                return Err(invalid(
                    format!("resources[{i}].resource"),
                    format!(
                        "{} is listed twice (first at resources[{first}]): merge the two entries",
                        r.resource
                    ),
                ));
            }
            r.validate_at(&format!("resources[{i}]."))?;
        }
        self.store.validate()?;
        if self.projection.max_object_bytes == 0 {
            return Err(invalid(
                "projection.max_object_bytes",
                "must be greater than 0",
            ));
        }
        let served = self.resources.iter().map(|r| &r.resource).collect();
        self.auth.validate(&served)?;
        self.tls.validate()
    }
}

impl StoreConfig {
    fn validate(&self) -> Result<()> {
        let zero = [
            ("store.log_max_bytes", self.log_max_bytes == 0),
            ("store.log_max_batches", self.log_max_batches == 0),
            ("store.log_max_age", self.log_max_age.is_zero()),
            ("store.batch_max_changes", self.batch_max_changes == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((field, _)) => Err(invalid(*field, "must be greater than 0")),
            None => Ok(()),
        }
    }
}

impl ResourceConfig {
    /// Checks the rules of one entry: limits, duplicates, forbidden paths, a single-valued scope,
    /// and paths that agree on which fields are arrays. Error fields are named like `fields[2]`.
    pub fn validate(&self) -> Result<()> {
        self.validate_at("")
    }

    /// Like [`Self::validate`], with `prefix` (like `resources[3].`) before every field name.
    fn validate_at(&self, prefix: &str) -> Result<()> {
        if self.fields.len() > MAX_FIELDS {
            return Err(invalid(
                format!("{prefix}fields"),
                format!(
                    "{} fields are listed; at most {MAX_FIELDS} are allowed",
                    self.fields.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        // For every field that a path steps through: whether it is an array, and which path
        // said so first.
        let mut shapes: BTreeMap<String, (bool, usize)> = BTreeMap::new();
        for (j, field) in self.fields.iter().enumerate() {
            let name = format!("{prefix}fields[{j}]");
            if !seen.insert(field) {
                return Err(invalid(name, format!("{field} is listed twice")));
            }
            check_not_volatile(&name, field)?;
            let segments = field.segments();
            let mut through = String::new();
            for segment in &segments[..segments.len() - 1] {
                if !through.is_empty() {
                    through.push('.');
                }
                through.push_str(&segment.name);
                let (is_array, first) = *shapes.entry(through.clone()).or_insert((segment.each, j));
                if is_array != segment.each {
                    return Err(invalid(
                        name,
                        format!(
                            "{field} treats {through} as {}, but {prefix}fields[{first}] treats it \
                             as {}: use `[]` on {through} in every path or in none",
                            if segment.each {
                                "an array"
                            } else {
                                "an object"
                            },
                            if is_array { "an array" } else { "an object" },
                        ),
                    ));
                }
            }
        }
        if let Some(scope) = &self.scope {
            let name = format!("{prefix}scope");
            if scope.is_multi_valued() {
                return Err(invalid(
                    name,
                    format!("{scope} selects many values; a scope must be one string field"),
                ));
            }
            check_not_volatile(&name, scope)?;
        }
        if self.exclude.len() > MAX_EXCLUDE_RULES {
            return Err(invalid(
                format!("{prefix}exclude"),
                format!(
                    "{} rules are listed; at most {MAX_EXCLUDE_RULES} are allowed",
                    self.exclude.len()
                ),
            ));
        }
        let kept: Vec<&FieldPath> = self.fields.iter().chain(&self.scope).collect();
        for (j, rule) in self.exclude.iter().enumerate() {
            rule.validate(&format!("{prefix}exclude[{j}]"), &kept)?;
        }
        Ok(())
    }
}

/// Rejects paths that would keep `resourceVersion` or `managedFields`, which change on every
/// write and would defeat dedupe.
fn check_not_volatile(name: &str, path: &FieldPath) -> Result<()> {
    if path.segments().len() == 1 && path.starts_with(&["metadata"]) {
        return Err(invalid(
            name,
            "`metadata` as a whole would keep resourceVersion and managedFields: list the \
             metadata fields you need, like `metadata.labels`",
        ));
    }
    for volatile in ["resourceVersion", "managedFields"] {
        if path.starts_with(&["metadata", volatile]) {
            return Err(invalid(
                name,
                format!("metadata.{volatile} changes on every write and is never projected"),
            ));
        }
    }
    Ok(())
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Serde for durations written like `10m` or `1h 30m`.
pub(crate) mod duration_text {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}): write it like `90s` or `10m`"
            ))
        })
    }
}
