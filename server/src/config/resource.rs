//! `Resource`: the `group/version/plural` name of a watched resource type.
//!
//! A `Resource` is validated once when it is built, then cloned cheaply (one `Arc<str>`) into
//! every store map, published change and log entry. The core group is written without a group:
//! `v1/pods`; every other group is spelled out: `networking.k8s.io/v1/networkpolicies`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Why a resource string was rejected. Every message says what a valid string looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// The string did not have two (core group) or three `/`-separated parts.
    #[error(
        "{0:?} is not a resource: write `group/version/plural`, or `version/plural` for the core \
         group (for example `v1/pods` or `apps/v1/deployments`)"
    )]
    Shape(String),
    /// The group part is not a lowercase DNS subdomain.
    #[error("{resource:?} has an invalid group {group:?}: use a lowercase DNS name like `apps`")]
    Group {
        /// The whole resource string.
        resource: String,
        /// The offending group.
        group: String,
    },
    /// The version part does not look like `v1`, `v1beta1` or `v2alpha3`.
    #[error("{resource:?} has an invalid version {version:?}: use `v1`, `v1beta1` or similar")]
    Version {
        /// The whole resource string.
        resource: String,
        /// The offending version.
        version: String,
    },
    /// The plural part is not a lowercase DNS label.
    #[error(
        "{resource:?} has an invalid plural {plural:?}: use the lowercase plural name the API \
         server serves, like `pods`"
    )]
    Plural {
        /// The whole resource string.
        resource: String,
        /// The offending plural.
        plural: String,
    },
}

/// A resource type, `group/version/plural` with an empty group for the core group.
///
/// Invariant: the text was validated by [`Resource::parse`], so the accessors never fail.
/// Ordering and equality are those of the text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    text: Arc<str>,
    /// Length of the group part; 0 for the core group.
    group_len: usize,
    /// Byte offset where the plural starts.
    plural_start: usize,
}

impl Resource {
    /// Parses and validates `group/version/plural` or `version/plural`.
    pub fn parse(text: &str) -> Result<Self, ResourceError> {
        let parts: Vec<&str> = text.split('/').collect();
        let (group, version, plural) = match parts.as_slice() {
            [version, plural] => ("", *version, *plural),
            [group, version, plural] => (*group, *version, *plural),
            _ => return Err(ResourceError::Shape(text.to_owned())),
        };
        if parts.len() == 3 && !is_dns_subdomain(group) {
            return Err(ResourceError::Group {
                resource: text.to_owned(),
                group: group.to_owned(),
            });
        }
        if !is_version(version) {
            return Err(ResourceError::Version {
                resource: text.to_owned(),
                version: version.to_owned(),
            });
        }
        if !is_dns_label(plural) {
            return Err(ResourceError::Plural {
                resource: text.to_owned(),
                plural: plural.to_owned(),
            });
        }
        Ok(Self {
            text: Arc::from(text),
            group_len: group.len(),
            plural_start: text.len() - plural.len(),
        })
    }

    /// The whole `group/version/plural` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The API group, empty for the core group.
    pub fn group(&self) -> &str {
        &self.text[..self.group_len]
    }

    /// The version, like `v1`.
    pub fn version(&self) -> &str {
        let start = if self.group_len == 0 {
            0
        } else {
            self.group_len + 1
        };
        &self.text[start..self.plural_start - 1]
    }

    /// The plural name, like `pods`.
    pub fn plural(&self) -> &str {
        &self.text[self.plural_start..]
    }

    /// The `apiVersion` objects of this resource carry: `v1` or `group/v1`.
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
    type Err = ResourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Resource {
    type Error = ResourceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Resource> for String {
    fn from(r: Resource) -> Self {
        r.text.to_string()
    }
}

impl serde::Serialize for Resource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Resource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A DNS label: 1 to 63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A DNS subdomain: dot-separated DNS labels, at most 253 bytes.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `v<digits>` optionally followed by `alpha<digits>` or `beta<digits>`.
fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let major_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if major_len == 0 || rest.starts_with('0') {
        return false;
    }
    let rest = &rest[major_len..];
    if rest.is_empty() {
        return true;
    }
    let Some(minor) = rest
        .strip_prefix("alpha")
        .or_else(|| rest.strip_prefix("beta"))
    else {
        return false;
    };
    !minor.is_empty() && !minor.starts_with('0') && minor.bytes().all(|b| b.is_ascii_digit())
}
