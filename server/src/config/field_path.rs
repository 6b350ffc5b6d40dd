//! `FieldPath`: a dotted path into an object, like `spec.nodeName` or `spec.containers[].ports`.
//!
//! A segment is a field name; a `[]` suffix maps the rest of the path over every element of the
//! array found there. A path is validated once when it is built; projection then walks the parsed
//! segments without re-checking. The text form round-trips exactly.

use std::fmt;
use std::str::FromStr;

/// At most this many segments in one path; deeper paths are almost certainly a mistake.
pub const MAX_SEGMENTS: usize = 16;
/// At most this many bytes in one path.
pub const MAX_PATH_BYTES: usize = 256;

/// Why a field path was rejected. Every message says how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    /// The path is empty.
    #[error("the field path is empty: write a dotted path like `spec.nodeName`")]
    Empty,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("the field path is {len} bytes long; at most {MAX_PATH_BYTES} are allowed")]
    TooLong {
        /// Length of the path in bytes.
        len: usize,
    },
    /// The path has more than [`MAX_SEGMENTS`] segments.
    #[error("{path:?} has {count} segments; at most {MAX_SEGMENTS} are allowed")]
    TooDeep {
        /// The path.
        path: String,
        /// Number of segments.
        count: usize,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("{path:?} has an empty segment: remove the extra `.`")]
    EmptySegment {
        /// The path.
        path: String,
    },
    /// A segment holds a character other than `[A-Za-z0-9_-]`, or a misplaced bracket.
    #[error(
        "{path:?} has an invalid segment {segment:?}: a segment is a field name of letters, \
         digits, `_` or `-`, optionally followed by `[]`"
    )]
    InvalidSegment {
        /// The path.
        path: String,
        /// The offending segment.
        segment: String,
    },
    /// The last segment ends with `[]`, which selects nothing more than the array itself.
    #[error("{path:?} ends with `[]`: drop the `[]` to keep the whole array")]
    TrailingArray {
        /// The path.
        path: String,
    },
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    /// The object field to step into.
    pub name: String,
    /// Whether the value found there is an array whose elements the rest of the path applies to.
    pub each: bool,
}

/// A validated dotted field path.
///
/// Invariant: at least one segment, every name non-empty and of `[A-Za-z0-9_-]`, and the last
/// segment has `each == false`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

impl FieldPath {
    /// Parses and validates a dotted path.
    pub fn parse(text: &str) -> Result<Self, FieldPathError> {
        if text.is_empty() {
            return Err(FieldPathError::Empty);
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(FieldPathError::TooLong { len: text.len() });
        }
        let mut segments = Vec::new();
        for raw in text.split('.') {
            if raw.is_empty() {
                return Err(FieldPathError::EmptySegment {
                    path: text.to_owned(),
                });
            }
            let (name, each) = match raw.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (raw, false),
            };
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(FieldPathError::InvalidSegment {
                    path: text.to_owned(),
                    segment: raw.to_owned(),
                });
            }
            segments.push(Segment {
                name: name.to_owned(),
                each,
            });
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(FieldPathError::TooDeep {
                path: text.to_owned(),
                count: segments.len(),
            });
        }
        if segments.last().is_some_and(|s| s.each) {
            return Err(FieldPathError::TrailingArray {
                path: text.to_owned(),
            });
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed segments, never empty.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether any segment maps over an array, so the path may select many values.
    pub fn is_multi_valued(&self) -> bool {
        self.segments.iter().any(|s| s.each)
    }

    /// Whether this path equals `prefix` or lies below it (`metadata.labels` is below
    /// `metadata`). Array markers are compared too.
    pub fn starts_with(&self, prefix: &[&str]) -> bool {
        prefix.len() <= self.segments.len()
            && self
                .segments
                .iter()
                .zip(prefix)
                .all(|(s, p)| !s.each && s.name == *p)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({:?})", self.text)
    }
}

impl FromStr for FieldPath {
    type Err = FieldPathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}
