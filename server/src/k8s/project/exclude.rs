//! Whether an API object passes one of its resource's `exclude:` rules.
//!
//! Rules read the raw object as the API server sent it, before projection; validation has made
//! sure each reads a single-valued field the projection keeps, so what a rule sees is what
//! agents would have got.

use serde_json::Value;

use crate::config::{Emptiness, ExcludeRule, Scalar, Test};

/// Whether `object` passes `rule`.
pub(super) fn matches(rule: &ExcludeRule, object: &Value) -> bool {
    let value = super::lookup(object, &rule.field);
    match rule.test() {
        Some(Test::Is(Emptiness::Empty)) => is_empty(value),
        Some(Test::Is(Emptiness::NotEmpty)) => !is_empty(value),
        Some(Test::OneOf(values)) => value.is_some_and(|v| values.iter().any(|s| equal(s, v))),
        // Refused by validation; a rule without a test leaves every object in.
        None => false,
    }
}

fn is_empty(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Bool(_) | Value::Number(_)) => false,
    }
}

fn equal(scalar: &Scalar, value: &Value) -> bool {
    match (scalar, value) {
        (Scalar::Bool(b), Value::Bool(v)) => b == v,
        (Scalar::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
        (Scalar::String(s), Value::String(v)) => s == v,
        _ => false,
    }
}
