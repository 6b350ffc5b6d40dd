//! `exclude:` rules: objects of a resource that agents never see.
//!
//! A rule names one single-valued projected field and a test on it; an object that passes any
//! rule of its resource is treated as absent: agents get no create for it, and a delete when an
//! object they hold starts to match. The default profile uses them to leave out pods a node's
//! network agent cannot use (no IP yet, host-networked, finished), whose churn is most of a
//! cluster's pod churn.
//!
//! A rule may only read a field the projection keeps, so an agent can see in the object itself
//! why it has it, and a misspelled field is an error instead of a rule that never matches.

use serde::{Deserialize, Serialize};

use super::{FieldPath, Result, invalid};

/// At most this many exclude rules per resource.
pub const MAX_EXCLUDE_RULES: usize = 16;
/// At most this many values in one rule's `in` list.
pub const MAX_EXCLUDE_VALUES: usize = 64;
/// At most this many bytes in one string value of a rule.
pub const MAX_EXCLUDE_VALUE_BYTES: usize = 256;

/// One rule: `field` and exactly one of `is`, `equals` and `in`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExcludeRule {
    /// A single-valued field the projection keeps, like `status.podIPs`.
    pub field: FieldPath,
    /// Matches when the field is empty (absent, null, `""`, `[]` or `{}`) or when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is: Option<Emptiness>,
    /// Matches when the field holds this string, boolean or integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Scalar>,
    /// Matches when the field holds one of these values.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Scalar>>,
}

/// The two tests of `is:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Emptiness {
    /// Absent, null, `""`, `[]` or `{}`. `false` and `0` are values, not empty.
    Empty,
    /// Anything else.
    NotEmpty,
}

/// A value a rule compares with. YAML `true` is a boolean and `"true"` a string, as in the
/// objects themselves; a field holding `80` does not equal `"80"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A string.
    String(String),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// The test of a rule, once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test<'a> {
    /// `is:`.
    Is(Emptiness),
    /// `equals:` or `in:`: the field holds one of these.
    OneOf(&'a [Scalar]),
}

impl ExcludeRule {
    /// A rule matching objects whose `field` is empty (or not).
    pub fn is(field: FieldPath, emptiness: Emptiness) -> Self {
        Self {
            field,
            is: Some(emptiness),
            equals: None,
            one_of: None,
        }
    }

    /// A rule matching objects whose `field` holds `value`.
    pub fn equals(field: FieldPath, value: Scalar) -> Self {
        Self {
            field,
            is: None,
            equals: Some(value),
            one_of: None,
        }
    }

    /// A rule matching objects whose `field` holds one of `values`.
    pub fn one_of(field: FieldPath, values: Vec<Scalar>) -> Self {
        Self {
            field,
            is: None,
            equals: None,
            one_of: Some(values),
        }
    }

    /// The rule's test. A rule that fails [`Self::validate`] may have none.
    pub fn test(&self) -> Option<Test<'_>> {
        match (&self.is, &self.equals, &self.one_of) {
            (Some(is), None, None) => Some(Test::Is(*is)),
            (None, Some(value), None) => Some(Test::OneOf(std::slice::from_ref(value))),
            (None, None, Some(values)) => Some(Test::OneOf(values)),
            _ => None,
        }
    }

    /// The rule as one canonical line, for fingerprints and logs.
    pub fn describe(&self) -> String {
        match self.test() {
            Some(Test::Is(Emptiness::Empty)) => format!("{} is empty", self.field),
            Some(Test::Is(Emptiness::NotEmpty)) => format!("{} is not empty", self.field),
            Some(Test::OneOf(values)) => {
                let values: Vec<String> = values.iter().map(Scalar::to_string).collect();
                format!("{} in [{}]", self.field, values.join(", "))
            }
            None => format!("{} (no test)", self.field),
        }
    }

    /// Checks one rule of a resource whose projection keeps `kept` (its fields, and its scope).
    /// `name` is the rule's place, like `resources[0].exclude[1]`.
    pub(super) fn validate(&self, name: &str, kept: &[&FieldPath]) -> Result<()> {
        let field = &self.field;
        if field.is_multi_valued() {
            return Err(invalid(
                format!("{name}.field"),
                format!("{field} selects many values; a rule tests one field, without `[]`"),
            ));
        }
        let identity = [["metadata", "name"], ["metadata", "namespace"]]
            .iter()
            .any(|path| field.segments().len() == 2 && field.starts_with(path));
        // At or under a kept path (and never under a `[]` of one, which a single value is not).
        let projected = kept
            .iter()
            .any(|kept| field.segments().starts_with(kept.segments()));
        if !identity && !projected {
            return Err(invalid(
                format!("{name}.field"),
                format!(
                    "{field} is not a projected field: a rule may only test what agents get \
                     (add it, or a field it is in, to `fields`)"
                ),
            ));
        }
        let Some(test) = self.test() else {
            return Err(invalid(
                name,
                "give exactly one of `is` (empty or not_empty), `equals` or `in`",
            ));
        };
        match test {
            Test::Is(Emptiness::NotEmpty)
                if identity && field.starts_with(&["metadata", "name"]) =>
            {
                Err(invalid(
                    format!("{name}.is"),
                    "every object has a name: this rule would leave out every object",
                ))
            }
            Test::Is(_) => Ok(()),
            Test::OneOf([]) => Err(invalid(
                format!("{name}.in"),
                "the list is empty, so the rule would match nothing: list at least one value",
            )),
            Test::OneOf(values) if values.len() > MAX_EXCLUDE_VALUES => Err(invalid(
                format!("{name}.in"),
                format!(
                    "{} values are listed; at most {MAX_EXCLUDE_VALUES} are allowed",
                    values.len()
                ),
            )),
            Test::OneOf(values) => match values
                .iter()
                .find(|v| matches!(v, Scalar::String(s) if s.len() > MAX_EXCLUDE_VALUE_BYTES))
            {
                Some(_) => Err(invalid(
                    format!(
                        "{name}.{}",
                        if self.equals.is_some() {
                            "equals"
                        } else {
                            "in"
                        }
                    ),
                    format!("a value is over {MAX_EXCLUDE_VALUE_BYTES} bytes"),
                )),
                None => Ok(()),
            },
        }
    }
}
