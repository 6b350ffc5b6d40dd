//! Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, null members dropped.
//!
//! The writer sorts keys itself instead of trusting `serde_json::Map`'s order, so the bytes stay
//! canonical even if some crate in the build turns on serde_json's `preserve_order` feature.
//! Strings and numbers are written by serde_json, so escaping matches any JSON reader.

use serde_json::{Map, Value};

/// Appends the canonical encoding of `value` to `out`.
pub(super) fn write_value(out: &mut Vec<u8>, value: &Value) -> serde_json::Result<()> {
    match value {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
            Ok(())
        }
        scalar => serde_json::to_writer(out, scalar),
    }
}

/// Appends a JSON string (with escapes) to `out`.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    serde_json::to_writer(out, s)
}

/// Appends an object with sorted keys, leaving out members whose value is null: a typed client
/// reads a null and a missing field the same way, so both encode the same.
fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) -> serde_json::Result<()> {
    let mut members: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !v.is_null()).collect();
    // Already sorted with serde_json's default map; then this is a linear check.
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key)?;
        out.push(b':');
        write_value(out, value)?;
    }
    out.push(b'}');
    Ok(())
}

/// The canonical encoding of `value`, as a `String` (canonical JSON is always UTF-8).
#[cfg(test)]
pub(super) fn to_string(value: &Value) -> String {
    let mut out = Vec::new();
    write_value(&mut out, value).expect("writing to a Vec cannot fail");
    String::from_utf8(out).expect("JSON is UTF-8")
}
