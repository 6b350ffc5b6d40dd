//! `Projection`: turns a raw API object into the canonical bytes the store keeps and serves.
//!
//! A projection keeps `apiVersion`, `kind`, `metadata.{name,namespace,uid}` and the configured
//! fields, never `resourceVersion` or `managedFields`, and writes canonical JSON (sorted keys, no
//! whitespace, null members dropped). `apiVersion` and `kind` always come from the projection, not
//! the source, because list responses leave them out of their items while watch events carry
//! them: the same object must give the same bytes either way, or every relist would look like a
//! change. Projecting is pure; equal inputs give equal bytes in every process.

mod canonical;
mod exclude;
mod select;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use serde_json::Value;

use crate::config::{self, ExcludeRule, FieldPath, ProjectionConfig, Resource, ResourceConfig};

pub use crate::store::ProjectedObject;

use select::Selection;

/// Version tag of the projection rules, part of every fingerprint. Bump it whenever a change
/// here would make the same config produce different bytes.
const RULES_VERSION: &str = "cattail.projection.v1";

/// Why a projection could not be built, or an object could not be projected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource config breaks a rule (see [`ResourceConfig::validate`]).
    #[error("invalid projection of {resource}: {source}")]
    Config {
        /// The resource.
        resource: Resource,
        /// What is wrong.
        source: config::Error,
    },
    /// The object is not a JSON object.
    #[error("a {resource} object is not a JSON object")]
    NotAnObject {
        /// The resource.
        resource: Resource,
    },
    /// `metadata.name` is missing, empty or not a string.
    #[error("a {resource} object has no metadata.name")]
    MissingName {
        /// The resource.
        resource: Resource,
    },
    /// An identity field or the scope field holds something other than a string.
    #[error("{resource} {name}: {field} is not a string")]
    NotAString {
        /// The resource.
        resource: Resource,
        /// The object's `namespace/name`.
        name: String,
        /// The field.
        field: String,
    },
    /// The projected object is larger than the configured limit.
    #[error(
        "{resource} {name} projects to {size} bytes, over the limit of {limit}: project fewer \
         fields or raise projection.max_object_bytes"
    )]
    TooLarge {
        /// The resource.
        resource: Resource,
        /// The object's `namespace/name`.
        name: String,
        /// The projected size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// serde_json failed to write a string or number (not expected when writing to memory).
    #[error("cannot encode a {resource} object: {source}")]
    Encode {
        /// The resource.
        resource: Resource,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The compiled projection of one resource.
#[derive(Debug, Clone)]
pub struct Projection {
    config: ResourceConfig,
    selection: Selection,
    /// `"apiVersion"` and `"kind"` values, already encoded as JSON strings.
    api_version_json: Vec<u8>,
    kind_json: Vec<u8>,
    fingerprint: u64,
    max_object_bytes: usize,
}

impl Projection {
    /// Compiles the projection of `config`. `kind` is the resource's kind (from discovery, like
    /// `Pod`), written into every object. The size limit defaults to
    /// [`ProjectionConfig::default`]'s.
    pub fn new(config: &ResourceConfig, kind: &str) -> Result<Self> {
        let config_err = |source| Error::Config {
            resource: config.resource.clone(),
            source,
        };
        config.validate().map_err(config_err)?;
        let mut selection = Selection::default();
        for (i, path) in config.fields.iter().enumerate() {
            // `validate` has rejected conflicting paths already; this keeps the tree honest.
            selection.add(path).map_err(|c| {
                config_err(config::Error::Invalid {
                    field: format!("fields[{i}]"),
                    reason: format!("{} disagrees with another path on {}", c.path, c.field),
                })
            })?;
        }
        for identity in [
            ["metadata", "name"],
            ["metadata", "namespace"],
            ["metadata", "uid"],
        ] {
            selection.add_names(&identity);
        }
        // Written from the projection itself; see the module docs.
        selection.remove("apiVersion");
        selection.remove("kind");
        let encode = |s: &str| {
            let mut out = Vec::new();
            canonical::write_str(&mut out, s).map(|()| out)
        };
        let encode_err = |source| Error::Encode {
            resource: config.resource.clone(),
            source,
        };
        Ok(Self {
            api_version_json: encode(config.resource.api_version()).map_err(encode_err)?,
            kind_json: encode(kind).map_err(encode_err)?,
            fingerprint: fingerprint(config),
            selection,
            config: config.clone(),
            max_object_bytes: ProjectionConfig::default().max_object_bytes,
        })
    }

    /// Sets the size limit of a projected object.
    #[must_use]
    pub fn with_max_object_bytes(mut self, limit: usize) -> Self {
        self.max_object_bytes = limit;
        self
    }

    /// The resource projected.
    pub fn resource(&self) -> &Resource {
        &self.config.resource
    }

    /// The config this projection was built from.
    pub fn config(&self) -> &ResourceConfig {
        &self.config
    }

    /// A hash of the configuration (resource, fields, scope) and of the projection rules: equal
    /// fingerprints mean equal bytes for equal objects, in any process of any version that keeps
    /// the rules. xxh3-64 of a canonical text, so it is stable across processes and platforms.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The first `exclude:` rule `object` passes, if any: such an object is treated as absent
    /// (a relist leaves it out, an update of it is a delete of its key). Call it before
    /// [`Self::project`].
    pub fn excluded_by(&self, object: &Value) -> Option<&ExcludeRule> {
        self.config
            .exclude
            .iter()
            .find(|rule| exclude::matches(rule, object))
    }

    /// Projects one API object (as the API server sends it, in a watch event or a list item).
    pub fn project(&self, object: &Value) -> Result<ProjectedObject> {
        let resource = || self.config.resource.clone();
        let Value::Object(map) = object else {
            return Err(Error::NotAnObject {
                resource: resource(),
            });
        };
        let metadata = map.get("metadata");
        let field = |name: &str| metadata.and_then(|m| m.get(name));
        let name = match field("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            _ => {
                return Err(Error::MissingName {
                    resource: resource(),
                });
            }
        };
        let namespace = match field("namespace") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(ns)) => ns.clone(),
            Some(_) => return Err(self.not_a_string(&name, "", "metadata.namespace")),
        };
        let resource_version = match field("resourceVersion") {
            Some(Value::String(rv)) => rv.clone(),
            _ => String::new(),
        };
        let scope = match &self.config.scope {
            None => None,
            Some(path) => match lookup(object, path) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(self.not_a_string(&name, &namespace, path.as_str())),
            },
        };
        let mut out = Vec::with_capacity(256);
        let extra: [(&str, &[u8]); 2] = [
            ("apiVersion", &self.api_version_json),
            ("kind", &self.kind_json),
        ];
        self.selection
            .write(&mut out, map, &extra)
            .map_err(|source| Error::Encode {
                resource: resource(),
                source,
            })?;
        if out.len() > self.max_object_bytes {
            return Err(Error::TooLarge {
                resource: resource(),
                name: display_name(&namespace, &name),
                size: out.len(),
                limit: self.max_object_bytes,
            });
        }
        Ok(ProjectedObject {
            namespace,
            name,
            value: Bytes::from(out),
            resource_version,
            scope,
        })
    }

    fn not_a_string(&self, name: &str, namespace: &str, field: &str) -> Error {
        Error::NotAString {
            resource: self.config.resource.clone(),
            name: display_name(namespace, name),
            field: field.to_owned(),
        }
    }
}

/// The value at a single-valued path, if present.
fn lookup<'a>(object: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.segments()
        .iter()
        .try_fold(object, |value, segment| value.get(&segment.name))
}

fn display_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

/// xxh3-64 of `RULES_VERSION`, the resource, the sorted distinct fields, the scope and the
/// sorted exclude rules, each terminated by a newline (field paths and resources cannot contain
/// one, and rule values are quoted). A config without exclude rules keeps the fingerprint it had
/// before they existed. Public because the server announces fingerprints before discovery has
/// told it each kind.
pub fn fingerprint(config: &ResourceConfig) -> u64 {
    xxhash_rust::xxh3::xxh3_64(fingerprint_text(config).as_bytes())
}

/// The canonical text that [`fingerprint`] hashes.
fn fingerprint_text(config: &ResourceConfig) -> String {
    let mut fields: Vec<&str> = config.fields.iter().map(FieldPath::as_str).collect();
    fields.sort_unstable();
    fields.dedup();
    let mut text = String::new();
    for line in [RULES_VERSION, config.resource.as_str()] {
        text.push_str(line);
        text.push('\n');
    }
    for field in fields {
        text.push_str("field ");
        text.push_str(field);
        text.push('\n');
    }
    if let Some(scope) = &config.scope {
        text.push_str("scope ");
        text.push_str(scope.as_str());
        text.push('\n');
    }
    let mut rules: Vec<String> = config.exclude.iter().map(ExcludeRule::describe).collect();
    rules.sort_unstable();
    rules.dedup();
    for rule in rules {
        text.push_str("exclude ");
        text.push_str(&rule);
        text.push('\n');
    }
    text
}
