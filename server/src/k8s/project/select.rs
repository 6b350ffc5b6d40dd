//! `Selection`: the configured field paths merged into one tree, and the walk that writes it.
//!
//! Paths are merged once at startup: `spec.containers[].name` and `spec.containers[].ports` share
//! one `containers` step, and a path that keeps a whole value absorbs every path below it. The
//! walk writes canonical JSON straight from the source object, with no intermediate tree.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::FieldPath;

use super::canonical;

/// What to keep of the value found under one field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keep {
    /// The whole value.
    Whole,
    /// Only some fields of an object (or of each object in an array, when `each` is set).
    Fields { each: bool, node: Selection },
}

/// A set of fields to keep from an object, sorted by name as canonical JSON needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Selection {
    children: BTreeMap<String, Keep>,
}

/// Two paths disagree on whether a field holds an array, like `a[].b` and `a.c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShapeConflict {
    /// The path that disagreed with an earlier one.
    pub(super) path: String,
    /// The field both paths step through.
    pub(super) field: String,
}

impl Selection {
    /// Adds a path: keep the whole value at its end.
    pub(super) fn add(&mut self, path: &FieldPath) -> Result<(), ShapeConflict> {
        let mut node = self;
        let segments = path.segments();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            if last {
                node.children.insert(segment.name.clone(), Keep::Whole);
                return Ok(());
            }
            let keep = node
                .children
                .entry(segment.name.clone())
                .or_insert_with(|| Keep::Fields {
                    each: segment.each,
                    node: Selection::default(),
                });
            match keep {
                // Something above already keeps the whole value; this path adds nothing.
                Keep::Whole => return Ok(()),
                Keep::Fields { each, node: child } => {
                    if *each != segment.each {
                        return Err(ShapeConflict {
                            path: path.as_str().to_owned(),
                            field: segments[..=i]
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join("."),
                        });
                    }
                    node = child;
                }
            }
        }
        Ok(())
    }

    /// Adds a path given as field names, with no arrays. For the built-in identity fields.
    pub(super) fn add_names(&mut self, names: &[&str]) {
        let mut node = self;
        for (i, name) in names.iter().enumerate() {
            if i + 1 == names.len() {
                node.children.insert((*name).to_owned(), Keep::Whole);
                return;
            }
            let keep = node
                .children
                .entry((*name).to_owned())
                .or_insert_with(|| Keep::Fields {
                    each: false,
                    node: Selection::default(),
                });
            match keep {
                Keep::Whole => return,
                Keep::Fields { node: child, .. } => node = child,
            }
        }
    }

    /// Removes a top-level field, so that the caller can write it itself.
    pub(super) fn remove(&mut self, name: &str) {
        self.children.remove(name);
    }

    /// Writes the selected fields of `source` as a canonical JSON object, with `extra` members
    /// (already encoded values, keyed by names absent from the selection) merged in key order.
    /// Returns the number of members written.
    pub(super) fn write(
        &self,
        out: &mut Vec<u8>,
        source: &Map<String, Value>,
        extra: &[(&str, &[u8])],
    ) -> serde_json::Result<usize> {
        out.push(b'{');
        let mut written = 0;
        let mut extra = extra.iter().peekable();
        for (name, keep) in &self.children {
            while let Some((key, encoded)) = extra.next_if(|(k, _)| k.as_bytes() < name.as_bytes())
            {
                write_member(out, &mut written, key, |out| {
                    out.extend_from_slice(encoded);
                    Ok(true)
                })?;
            }
            let Some(value) = source.get(name).filter(|v| !v.is_null()) else {
                continue;
            };
            write_member(out, &mut written, name, |out| keep.write(out, value))?;
        }
        for (key, encoded) in extra {
            write_member(out, &mut written, key, |out| {
                out.extend_from_slice(encoded);
                Ok(true)
            })?;
        }
        out.push(b'}');
        Ok(written)
    }
}

impl Keep {
    /// Writes what to keep of `value`; returns false (having written nothing that counts) when
    /// nothing of it is kept, so the caller drops the member.
    fn write(&self, out: &mut Vec<u8>, value: &Value) -> serde_json::Result<bool> {
        match (self, value) {
            (Keep::Whole, value) => {
                canonical::write_value(out, value)?;
                Ok(true)
            }
            (Keep::Fields { each: false, node }, Value::Object(map)) => {
                // An object none of whose selected fields is present is left out entirely.
                Ok(node.write(out, map, &[])? > 0)
            }
            (Keep::Fields { each: true, node }, Value::Array(items)) => {
                // Every element keeps its position, so an element with none of the selected
                // fields is `{}` and a non-object element is `null`.
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match item {
                        Value::Object(map) => {
                            node.write(out, map, &[])?;
                        }
                        _ => out.extend_from_slice(b"null"),
                    }
                }
                out.push(b']');
                Ok(true)
            }
            // The source has another shape than the path expects: nothing to keep.
            _ => Ok(false),
        }
    }
}

/// Writes `"key":<value>` with a separating comma, then takes it back out if `value` reports
/// that it kept nothing.
fn write_member(
    out: &mut Vec<u8>,
    written: &mut usize,
    key: &str,
    value: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<bool>,
) -> serde_json::Result<()> {
    let mark = out.len();
    if *written > 0 {
        out.push(b',');
    }
    canonical::write_str(out, key)?;
    out.push(b':');
    if value(out)? {
        *written += 1;
    } else {
        out.truncate(mark);
    }
    Ok(())
}
