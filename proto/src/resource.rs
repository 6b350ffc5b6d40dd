//! [`Resource`]: the `group/version/plural` names that configs, subscriptions, frames and
//! digests use, defined once for the server, the client and the load test.
//!
//! Parsing is strict and never normalises: a string that parses displays back byte for byte,
//! so the parsed form and the wire form can be used interchangeably as map keys. The core group
//! is written without a group (`v1/pods`); every other group is written out in full. A parsed
//! resource is one `Arc<str>`: the server clones it into every store map entry and log entry.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::{Error, Result};

/// The longest DNS label: each dot-separated part of a group, a version, a plural.
const MAX_LABEL_LEN: usize = 63;
/// The longest DNS subdomain: a whole group.
const MAX_SUBDOMAIN_LEN: usize = 253;

/// A Kubernetes resource type, such as `v1/pods` or `networking.k8s.io/v1/networkpolicies`.
///
/// Invariants, checked on construction:
/// - `group` is empty (the core group) or a lowercase DNS subdomain (RFC 1123);
/// - `version` and `plural` are lowercase DNS labels that start with a letter (RFC 1035), the
///   rule Kubernetes applies to a CRD's versions: `v1`, `v2beta3`, `v1alpha` and `stable` all
///   pass.
///
/// Ordering, equality and hashing are those of the text. Cloning copies one `Arc`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    text: Arc<str>,
    /// Length of the group part; 0 for the core group.
    group_len: usize,
    /// Byte offset where the plural starts.
    plural_start: usize,
}

impl Resource {
    /// Builds a resource from its parts; `group` is empty for the core group.
    ///
    /// # Errors
    /// [`Error::InvalidResource`] if a part breaks the rules in the type's documentation.
    pub fn new(group: &str, version: &str, plural: &str) -> Result<Self> {
        let text = if group.is_empty() {
            format!("{version}/{plural}")
        } else {
            format!("{group}/{version}/{plural}")
        };
        let invalid = |reason: String| Error::InvalidResource {
            resource: text.clone(),
            reason,
        };
        if !group.is_empty() {
            check_subdomain(group).map_err(|why| {
                invalid(format!(
                    "the group {group:?} {why}; use a lowercase DNS name like \"apps\""
                ))
            })?;
        }
        check_label(version).map_err(|why| {
            invalid(format!(
                "the version {version:?} {why}; use the version the API server serves, like \
                 \"v1\", \"v1beta1\" or a CRD's \"stable\""
            ))
        })?;
        check_label(plural).map_err(|why| {
            invalid(format!(
                "the plural {plural:?} {why}; use the lowercase plural name the API server \
                 serves, like \"pods\""
            ))
        })?;
        Ok(Resource {
            group_len: group.len(),
            plural_start: text.len() - plural.len(),
            text: Arc::from(text),
        })
    }

    /// Parses `version/plural` (core group) or `group/version/plural`.
    ///
    /// # Errors
    /// [`Error::InvalidResource`], with the rule that was broken.
    pub fn parse(resource: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidResource {
            resource: resource.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = resource.split('/').collect();
        match parts.as_slice() {
            [""] => Err(invalid("it is empty")),
            [_] => Err(invalid("it has no '/'")),
            ["", _, _] => Err(invalid(
                "the group is empty; core-group resources have no group part",
            )),
            [version, plural] => Resource::new("", version, plural),
            [group, version, plural] => Resource::new(group, version, plural),
            _ => Err(invalid(&format!(
                "it has {} parts separated by '/', expected 2 or 3",
                parts.len()
            ))),
        }
    }

    /// The whole `group/version/plural` text, as on the wire.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The API group; empty for the core group.
    #[must_use]
    pub fn group(&self) -> &str {
        &self.text[..self.group_len]
    }

    /// The API version, such as `v1`.
    #[must_use]
    pub fn version(&self) -> &str {
        let start = if self.group_len == 0 {
            0
        } else {
            self.group_len + 1
        };
        &self.text[start..self.plural_start - 1]
    }

    /// The plural resource name, such as `pods`.
    #[must_use]
    pub fn plural(&self) -> &str {
        &self.text[self.plural_start..]
    }

    /// True for the core (legacy, empty-named) API group.
    #[must_use]
    pub fn is_core(&self) -> bool {
        self.group_len == 0
    }

    /// The `apiVersion` of this resource's objects: `v1` for the core group, else `group/version`.
    #[must_use]
    pub fn api_version(&self) -> &str {
        &self.text[..self.plural_start - 1]
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resource({:?})", &*self.text)
    }
}

impl FromStr for Resource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Resource::parse(s)
    }
}

impl TryFrom<&str> for Resource {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self> {
        Resource::parse(s)
    }
}

impl TryFrom<String> for Resource {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        Resource::parse(&s)
    }
}

impl From<Resource> for String {
    fn from(r: Resource) -> Self {
        r.text.to_string()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Checks an RFC 1035 label: 1 to 63 of `[a-z0-9-]`, starting with a letter, not ending in `-`.
fn check_label(label: &str) -> std::result::Result<(), String> {
    if label.is_empty() {
        return Err("is empty".to_owned());
    }
    check_chars(label, MAX_LABEL_LEN)?;
    if !label.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter".to_owned());
    }
    Ok(())
}

/// Checks an RFC 1123 subdomain: at most 253 characters of dot-separated labels, each 1 to 63 of
/// `[a-z0-9-]` that neither starts nor ends with `-`.
fn check_subdomain(subdomain: &str) -> std::result::Result<(), String> {
    if subdomain.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!("is longer than {MAX_SUBDOMAIN_LEN} characters"));
    }
    for label in subdomain.split('.') {
        check_chars(label, MAX_LABEL_LEN)?;
        if label.starts_with('-') {
            return Err("has a dot-separated part that starts with '-'".to_owned());
        }
    }
    Ok(())
}

/// The rules labels share: non-empty, short enough, `[a-z0-9-]` only, no trailing `-`.
fn check_chars(label: &str, max_len: usize) -> std::result::Result<(), String> {
    if label.is_empty() {
        return Err("has an empty part".to_owned());
    }
    if label.len() > max_len {
        return Err(format!("has a part longer than {max_len} characters"));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {bad:?}; only lowercase letters, digits and '-' are allowed"
        ));
    }
    if label.ends_with('-') {
        return Err("must not end with '-'".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
