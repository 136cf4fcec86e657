//! Event patterns of event-bus rules, in EventBridge's style: a JSON object whose keys name fields of
//! the event and whose values are either a nested pattern (an object) or a list of matchers (an
//! array) of which at least one must match.
//!
//! Matchers: a literal (string, number, `true`, `false`, `null`: equal; numbers compare as numbers),
//! `{"prefix": s}`, `{"suffix": s}`, `{"equals-ignore-case": s}`, `{"numeric": [op, n, …]}` (ops
//! `=`, `<`, `<=`, `>`, `>=`, at most one lower and one upper bound), `{"exists": true|false}`,
//! and `{"anything-but": literal | [literals] | {"prefix": s} | {"suffix": s}}`. All fields of a
//! pattern must match (and); the matchers of one field are alternatives (or). When the event's value
//! is an array, the field matches when any element does. A missing field matches only
//! `{"exists": false}`. The empty pattern `{}` matches every event (EventBridge refuses it).
//!
//! [`EventPattern::parse`] checks a pattern once, when a rule is put, and answers mistakes with
//! `InvalidEventPatternException` naming the field; matching never fails. This module is pure: no I/O.

use serde_json::{Map, Value};
use wisp_types::{ApiError, ErrorCode};

/// Largest pattern, as JSON text.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// A checked pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPattern {
    fields: Vec<(String, FieldPattern)>,
}

#[derive(Debug, Clone, PartialEq)]
enum FieldPattern {
    Nested(EventPattern),
    AnyOf(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    Null,
}

impl Literal {
    fn to_value(&self) -> Value {
        match self {
            Literal::Text(text) => Value::String(text.clone()),
            Literal::Number(number) => serde_json::Number::from_f64(*number)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Literal::Bool(flag) => Value::Bool(*flag),
            Literal::Null => Value::Null,
        }
    }

    fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Literal::Text(expected), Value::String(found)) => expected == found,
            (Literal::Number(expected), Value::Number(found)) => {
                found.as_f64().is_some_and(|found| found == *expected)
            }
            (Literal::Bool(expected), Value::Bool(found)) => expected == found,
            (Literal::Null, Value::Null) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Equals(Literal),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
    AnythingBut(Vec<Literal>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
}

fn invalid(path: &str, message: impl std::fmt::Display) -> ApiError {
    let place = if path.is_empty() {
        "the pattern".to_string()
    } else {
        format!("field {path:?}")
    };
    ApiError::new(
        ErrorCode::InvalidEventPattern,
        format!("invalid event pattern: {place}: {message}"),
    )
}

fn literal(path: &str, value: &Value) -> Result<Literal, ApiError> {
    Ok(match value {
        Value::String(text) => Literal::Text(text.clone()),
        Value::Number(number) => Literal::Number(
            number
                .as_f64()
                .ok_or_else(|| invalid(path, format!("{number} is not a usable number")))?,
        ),
        Value::Bool(flag) => Literal::Bool(*flag),
        Value::Null => Literal::Null,
        other => {
            return Err(invalid(
                path,
                format!("expected a string, number, boolean or null, found {other}"),
            ));
        }
    })
}

fn text<'a>(path: &str, operator: &str, value: &'a Value) -> Result<&'a str, ApiError> {
    value
        .as_str()
        .ok_or_else(|| invalid(path, format!("{operator:?} takes a string, found {value}")))
}

fn numeric(path: &str, value: &Value) -> Result<Vec<(Comparison, f64)>, ApiError> {
    let items = value
        .as_array()
        .filter(|items| !items.is_empty())
        .ok_or_else(|| {
            invalid(
                path,
                format!("\"numeric\" takes a list such as [\">\", 0, \"<=\", 5], found {value}"),
            )
        })?;
    if items.len() % 2 != 0 || items.len() > 4 {
        return Err(invalid(
            path,
            "\"numeric\" takes one or two pairs of operator and number, such as [\">\", 0, \"<=\", 5]",
        ));
    }
    let mut bounds = Vec::new();
    let (mut lower, mut upper) = (false, false);
    for pair in items.chunks(2) {
        let comparison = match pair[0].as_str() {
            Some("=") => Comparison::Equal,
            Some("<") => Comparison::Less,
            Some("<=") => Comparison::LessOrEqual,
            Some(">") => Comparison::Greater,
            Some(">=") => Comparison::GreaterOrEqual,
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "unknown numeric operator {}; the operators are =, <, <=, >, >=",
                        pair[0]
                    ),
                ));
            }
        };
        let bound = pair[1].as_f64().ok_or_else(|| {
            invalid(
                path,
                format!(
                    "numeric operator {} needs a number, found {}",
                    pair[0], pair[1]
                ),
            )
        })?;
        let equal_with_another = !bounds.is_empty()
            && (comparison == Comparison::Equal
                || bounds
                    .iter()
                    .any(|(previous, _)| *previous == Comparison::Equal));
        let seen = match comparison {
            Comparison::Equal => &mut lower,
            Comparison::Less | Comparison::LessOrEqual => &mut upper,
            Comparison::Greater | Comparison::GreaterOrEqual => &mut lower,
        };
        if *seen || equal_with_another {
            return Err(invalid(
                path,
                "\"numeric\" takes at most one lower and one upper bound, or one \"=\"",
            ));
        }
        *seen = true;
        bounds.push((comparison, bound));
    }
    Ok(bounds)
}

fn matcher(path: &str, value: &Value) -> Result<Matcher, ApiError> {
    let Value::Object(operator) = value else {
        return Ok(Matcher::Equals(literal(path, value)?));
    };
    if operator.len() != 1 {
        return Err(invalid(
            path,
            format!("a matcher object has exactly one operator, found {value}"),
        ));
    }
    let (name, argument) = operator.iter().next().expect("one entry");
    Ok(match name.as_str() {
        "prefix" => Matcher::Prefix(text(path, name, argument)?.to_string()),
        "suffix" => Matcher::Suffix(text(path, name, argument)?.to_string()),
        "equals-ignore-case" => {
            Matcher::EqualsIgnoreCase(text(path, name, argument)?.to_lowercase())
        }
        "numeric" => Matcher::Numeric(numeric(path, argument)?),
        "exists" => Matcher::Exists(argument.as_bool().ok_or_else(|| {
            invalid(
                path,
                format!("\"exists\" takes true or false, found {argument}"),
            )
        })?),
        "anything-but" => match argument {
            Value::Array(items) if !items.is_empty() => Matcher::AnythingBut(
                items
                    .iter()
                    .map(|item| literal(path, item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(inner) if inner.len() == 1 => {
                let (inner_name, inner_argument) = inner.iter().next().expect("one entry");
                match inner_name.as_str() {
                    "prefix" => Matcher::AnythingButPrefix(
                        text(path, inner_name, inner_argument)?.to_string(),
                    ),
                    "suffix" => Matcher::AnythingButSuffix(
                        text(path, inner_name, inner_argument)?.to_string(),
                    ),
                    _ => {
                        return Err(invalid(
                            path,
                            format!(
                                "\"anything-but\" takes a value, a list of values, {{\"prefix\": …}} or {{\"suffix\": …}}, found {argument}"
                            ),
                        ));
                    }
                }
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(invalid(
                    path,
                    format!(
                        "\"anything-but\" takes a value, a non-empty list of values, {{\"prefix\": …}} or {{\"suffix\": …}}, found {argument}"
                    ),
                ));
            }
            single => Matcher::AnythingBut(vec![literal(path, single)?]),
        },
        other => {
            return Err(invalid(
                path,
                format!(
                    "unknown operator {other:?}; the operators are prefix, suffix, equals-ignore-case, numeric, exists, anything-but"
                ),
            ));
        }
    })
}

impl EventPattern {
    /// Checks a pattern given as JSON text.
    pub fn parse_text(text: &str) -> Result<EventPattern, ApiError> {
        if text.len() > MAX_PATTERN_BYTES {
            return Err(invalid(
                "",
                format!(
                    "it is {} bytes; the limit is {MAX_PATTERN_BYTES}",
                    text.len()
                ),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|error| invalid("", format!("not JSON: {error}")))?;
        EventPattern::parse(&value)
    }

    /// Checks a pattern given as a JSON value.
    pub fn parse(value: &Value) -> Result<EventPattern, ApiError> {
        let Value::Object(fields) = value else {
            return Err(invalid(
                "",
                format!(
                    "a pattern is a JSON object such as {{\"Type\": [\"FunctionCodeUpdated\"]}}, found {value}"
                ),
            ));
        };
        let size = value.to_string().len();
        if size > MAX_PATTERN_BYTES {
            return Err(invalid(
                "",
                format!("it is {size} bytes; the limit is {MAX_PATTERN_BYTES}"),
            ));
        }
        parse_object("", fields)
    }

    /// Whether `event` matches. An event that is not an object matches only patterns every field of
    /// which accepts a missing value.
    pub fn matches(&self, event: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match event {
            Value::Object(fields) => self.matches_object(fields),
            _ => self.matches_object(EMPTY.get_or_init(Map::new)),
        }
    }

    /// Fields every matching event holds one of a few exact values in, with those values: the fields
    /// (as paths of names) whose matchers are all literals. Used to narrow what a topic is known to
    /// deliver before a rule's target is checked against it.
    pub fn exact_values(&self) -> Vec<(Vec<String>, Vec<Value>)> {
        let mut found = Vec::new();
        self.collect_exact(&mut Vec::new(), &mut found);
        found
    }

    fn collect_exact(&self, path: &mut Vec<String>, found: &mut Vec<(Vec<String>, Vec<Value>)>) {
        for (name, field) in &self.fields {
            path.push(name.clone());
            match field {
                FieldPattern::Nested(pattern) => pattern.collect_exact(path, found),
                FieldPattern::AnyOf(matchers) => {
                    let literals: Option<Vec<Value>> = matchers
                        .iter()
                        .map(|matcher| match matcher {
                            Matcher::Equals(literal) => Some(literal.to_value()),
                            _ => None,
                        })
                        .collect();
                    if let Some(values) = literals {
                        found.push((path.clone(), values));
                    }
                }
            }
            path.pop();
        }
    }

    fn matches_object(&self, event: &Map<String, Value>) -> bool {
        self.fields
            .iter()
            .all(|(name, field)| field.matches(event.get(name)))
    }
}

fn parse_object(path: &str, fields: &Map<String, Value>) -> Result<EventPattern, ApiError> {
    let mut parsed = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        let field_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let field = match value {
            Value::Object(nested) => {
                if nested.is_empty() {
                    return Err(invalid(&field_path, "a nested pattern may not be empty"));
                }
                FieldPattern::Nested(parse_object(&field_path, nested)?)
            }
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(invalid(
                        &field_path,
                        "the list of matchers is empty, so nothing could match",
                    ));
                }
                FieldPattern::AnyOf(
                    items
                        .iter()
                        .map(|item| matcher(&field_path, item))
                        .collect::<Result<_, _>>()?,
                )
            }
            other => {
                return Err(invalid(
                    &field_path,
                    format!(
                        "a field's value must be a list of matchers (e.g. [{other}]) or a nested pattern, found {other}"
                    ),
                ));
            }
        };
        parsed.push((name.clone(), field));
    }
    Ok(EventPattern { fields: parsed })
}

impl FieldPattern {
    fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            FieldPattern::Nested(pattern) => match value {
                Some(Value::Object(fields)) => pattern.matches_object(fields),
                Some(Value::Array(items)) => items.iter().any(|item| match item {
                    Value::Object(fields) => pattern.matches_object(fields),
                    _ => false,
                }),
                _ => pattern.matches(&Value::Null),
            },
            FieldPattern::AnyOf(matchers) => matchers.iter().any(|matcher| match value {
                None => *matcher == Matcher::Exists(false),
                Some(_) if matches!(matcher, Matcher::Exists(_)) => {
                    *matcher == Matcher::Exists(true)
                }
                Some(Value::Array(items)) => items.iter().any(|item| matcher.matches(item)),
                Some(single) => matcher.matches(single),
            }),
        }
    }
}

impl Matcher {
    /// Whether one present, non-array value matches (`exists` is decided by the caller).
    fn matches(&self, value: &Value) -> bool {
        match self {
            Matcher::Equals(expected) => expected.equals(value),
            Matcher::Prefix(prefix) => value.as_str().is_some_and(|text| text.starts_with(prefix)),
            Matcher::Suffix(suffix) => value.as_str().is_some_and(|text| text.ends_with(suffix)),
            Matcher::EqualsIgnoreCase(lowered) => value
                .as_str()
                .is_some_and(|text| text.to_lowercase() == *lowered),
            Matcher::Numeric(bounds) => value.as_f64().is_some_and(|number| {
                bounds.iter().all(|(comparison, bound)| match comparison {
                    Comparison::Equal => number == *bound,
                    Comparison::Less => number < *bound,
                    Comparison::LessOrEqual => number <= *bound,
                    Comparison::Greater => number > *bound,
                    Comparison::GreaterOrEqual => number >= *bound,
                })
            }),
            Matcher::Exists(_) => false,
            Matcher::AnythingBut(excluded) => {
                !value.is_object() && !excluded.iter().any(|literal| literal.equals(value))
            }
            Matcher::AnythingButPrefix(prefix) => {
                value.as_str().is_some_and(|text| !text.starts_with(prefix))
            }
            Matcher::AnythingButSuffix(suffix) => {
                value.as_str().is_some_and(|text| !text.ends_with(suffix))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// (pattern, event, expected) — each operator with cases that match and cases that do not.
    #[test]
    fn patterns_match_like_eventbridge() {
        let cases = [
            // exact values: strings, numbers (numerically), booleans, null; a list is "any of"
            (
                json!({"Type": ["FunctionCodeUpdated"]}),
                json!({"Type": "FunctionCodeUpdated"}),
                true,
            ),
            (
                json!({"Type": ["FunctionCodeUpdated"]}),
                json!({"Type": "FunctionCreated"}),
                false,
            ),
            (json!({"Type": ["A", "B"]}), json!({"Type": "B"}), true),
            (json!({"Type": ["A", "B"]}), json!({"Type": "C"}), false),
            (json!({"n": [5]}), json!({"n": 5.0}), true),
            (json!({"n": [5]}), json!({"n": "5"}), false),
            (json!({"ok": [true]}), json!({"ok": true}), true),
            (json!({"ok": [true]}), json!({"ok": false}), false),
            (json!({"x": [null]}), json!({"x": null}), true),
            (json!({"x": [null]}), json!({}), false),
            // a field missing from the event never matches a value
            (json!({"Type": ["A"]}), json!({"Other": "A"}), false),
            // every field must match
            (
                json!({"a": ["1"], "b": ["2"]}),
                json!({"a": "1", "b": "2"}),
                true,
            ),
            (
                json!({"a": ["1"], "b": ["2"]}),
                json!({"a": "1", "b": "3"}),
                false,
            ),
            // nested fields
            (
                json!({"Detail": {"state": ["ok"]}}),
                json!({"Detail": {"state": "ok"}}),
                true,
            ),
            (
                json!({"Detail": {"state": ["ok"]}}),
                json!({"Detail": {"state": "bad"}}),
                false,
            ),
            (
                json!({"Detail": {"state": ["ok"]}}),
                json!({"Detail": "ok"}),
                false,
            ),
            (
                json!({"Detail": {"state": ["ok"]}}),
                json!({"state": "ok"}),
                false,
            ),
            // arrays in the event: any element
            (
                json!({"tags": ["red"]}),
                json!({"tags": ["blue", "red"]}),
                true,
            ),
            (json!({"tags": ["red"]}), json!({"tags": ["blue"]}), false),
            (
                json!({"items": {"sku": ["a"]}}),
                json!({"items": [{"sku": "b"}, {"sku": "a"}]}),
                true,
            ),
            (
                json!({"items": {"sku": ["a"]}}),
                json!({"items": [{"sku": "b"}]}),
                false,
            ),
            // prefix, suffix, equals-ignore-case
            (
                json!({"Resource": [{"prefix": "arn:aws:lambda:"}]}),
                json!({"Resource": "arn:aws:lambda:x"}),
                true,
            ),
            (
                json!({"Resource": [{"prefix": "arn:aws:lambda:"}]}),
                json!({"Resource": "arn:aws:s3:x"}),
                false,
            ),
            (
                json!({"Resource": [{"prefix": "1"}]}),
                json!({"Resource": 12}),
                false,
            ),
            (
                json!({"file": [{"suffix": ".png"}]}),
                json!({"file": "a.png"}),
                true,
            ),
            (
                json!({"file": [{"suffix": ".png"}]}),
                json!({"file": "a.jpg"}),
                false,
            ),
            (
                json!({"s": [{"equals-ignore-case": "Ok"}]}),
                json!({"s": "OK"}),
                true,
            ),
            (
                json!({"s": [{"equals-ignore-case": "Ok"}]}),
                json!({"s": "oK!"}),
                false,
            ),
            // numeric ranges
            (
                json!({"n": [{"numeric": [">", 0, "<=", 5]}]}),
                json!({"n": 5}),
                true,
            ),
            (
                json!({"n": [{"numeric": [">", 0, "<=", 5]}]}),
                json!({"n": 0}),
                false,
            ),
            (
                json!({"n": [{"numeric": [">", 0, "<=", 5]}]}),
                json!({"n": 5.5}),
                false,
            ),
            (
                json!({"n": [{"numeric": [">=", 10]}]}),
                json!({"n": 10}),
                true,
            ),
            (
                json!({"n": [{"numeric": ["<", 10]}]}),
                json!({"n": 10}),
                false,
            ),
            (
                json!({"n": [{"numeric": ["=", 3.5]}]}),
                json!({"n": 3.5}),
                true,
            ),
            (
                json!({"n": [{"numeric": ["=", 3.5]}]}),
                json!({"n": "3.5"}),
                false,
            ),
            // exists
            (
                json!({"Reason": [{"exists": true}]}),
                json!({"Reason": "idle"}),
                true,
            ),
            (
                json!({"Reason": [{"exists": true}]}),
                json!({"Reason": null}),
                true,
            ),
            (json!({"Reason": [{"exists": true}]}), json!({}), false),
            (json!({"Reason": [{"exists": false}]}), json!({}), true),
            (
                json!({"Reason": [{"exists": false}]}),
                json!({"Reason": "idle"}),
                false,
            ),
            (
                json!({"Detail": {"x": [{"exists": false}]}}),
                json!({}),
                true,
            ),
            // anything-but: a value, a list, a prefix, a suffix; a missing field does not match
            (
                json!({"s": [{"anything-but": "init"}]}),
                json!({"s": "ready"}),
                true,
            ),
            (
                json!({"s": [{"anything-but": "init"}]}),
                json!({"s": "init"}),
                false,
            ),
            (json!({"s": [{"anything-but": "init"}]}), json!({}), false),
            (
                json!({"s": [{"anything-but": ["a", "b"]}]}),
                json!({"s": "c"}),
                true,
            ),
            (
                json!({"s": [{"anything-but": ["a", "b"]}]}),
                json!({"s": "b"}),
                false,
            ),
            (
                json!({"n": [{"anything-but": 1}]}),
                json!({"n": 1.0}),
                false,
            ),
            (json!({"n": [{"anything-but": 1}]}), json!({"n": 2}), true),
            (
                json!({"s": [{"anything-but": {"prefix": "us-"}}]}),
                json!({"s": "eu-1"}),
                true,
            ),
            (
                json!({"s": [{"anything-but": {"prefix": "us-"}}]}),
                json!({"s": "us-1"}),
                false,
            ),
            (
                json!({"s": [{"anything-but": {"suffix": ".png"}}]}),
                json!({"s": "a.jpg"}),
                true,
            ),
            (
                json!({"s": [{"anything-but": {"suffix": ".png"}}]}),
                json!({"s": "a.png"}),
                false,
            ),
            // alternatives mixing operators
            (
                json!({"n": [0, {"numeric": [">", 100]}]}),
                json!({"n": 0}),
                true,
            ),
            (
                json!({"n": [0, {"numeric": [">", 100]}]}),
                json!({"n": 101}),
                true,
            ),
            (
                json!({"n": [0, {"numeric": [">", 100]}]}),
                json!({"n": 50}),
                false,
            ),
            // the empty pattern matches everything
            (json!({}), json!({"anything": 1}), true),
        ];
        for (pattern, event, expected) in cases {
            let parsed = EventPattern::parse(&pattern)
                .unwrap_or_else(|error| panic!("{pattern} refused: {}", error.message));
            assert_eq!(
                parsed.matches(&event),
                expected,
                "pattern {pattern} against event {event}"
            );
        }
    }

    #[test]
    fn exact_values_name_the_fields_a_pattern_pins() {
        let pattern = EventPattern::parse(&json!({
            "Type": ["FunctionCodeUpdated", "FunctionCreated"],
            "Resource": [{"prefix": "arn:"}],
            "Detail": {"kind": ["a"], "n": [1, {"numeric": [">", 5]}]},
        }))
        .unwrap();
        let mut found = pattern.exact_values();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            vec![
                (
                    vec!["Detail".to_string(), "kind".to_string()],
                    vec![json!("a")]
                ),
                (
                    vec!["Type".to_string()],
                    vec![json!("FunctionCodeUpdated"), json!("FunctionCreated")]
                ),
            ]
        );
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_field_named() {
        let cases = [
            (json!([1]), "a pattern is a JSON object"),
            (
                json!({"Type": "FunctionCreated"}),
                "field \"Type\": a field's value must be a list",
            ),
            (
                json!({"Type": []}),
                "field \"Type\": the list of matchers is empty",
            ),
            (
                json!({"Detail": {}}),
                "field \"Detail\": a nested pattern may not be empty",
            ),
            (
                json!({"Detail": {"n": [{"numeric": [">"]}]}}),
                "field \"Detail.n\": \"numeric\" takes one or two pairs",
            ),
            (
                json!({"n": [{"numeric": ["~", 1]}]}),
                "unknown numeric operator",
            ),
            (json!({"n": [{"numeric": [">", "1"]}]}), "needs a number"),
            (
                json!({"n": [{"numeric": [">", 1, ">=", 2]}]}),
                "at most one lower and one upper bound",
            ),
            (json!({"s": [{"prefix": 1}]}), "\"prefix\" takes a string"),
            (
                json!({"s": [{"exists": "yes"}]}),
                "\"exists\" takes true or false",
            ),
            (
                json!({"s": [{"wildcard": "*"}]}),
                "unknown operator \"wildcard\"",
            ),
            (
                json!({"s": [{"prefix": "a", "suffix": "b"}]}),
                "exactly one operator",
            ),
            (json!({"s": [{"anything-but": []}]}), "non-empty list"),
            (
                json!({"s": [{"anything-but": {"contains": "x"}}]}),
                "\"anything-but\" takes",
            ),
            (
                json!({"s": [[1]]}),
                "expected a string, number, boolean or null",
            ),
        ];
        for (pattern, expected) in cases {
            let error = EventPattern::parse(&pattern).expect_err(&pattern.to_string());
            assert_eq!(error.code, ErrorCode::InvalidEventPattern);
            assert!(
                error.message.contains(expected),
                "{pattern}: {:?} lacks {expected:?}",
                error.message
            );
        }
        let long = format!("{{\"s\": [\"{}\"]}}", "x".repeat(MAX_PATTERN_BYTES));
        assert!(
            EventPattern::parse_text(&long)
                .unwrap_err()
                .message
                .contains("the limit is 4096")
        );
        assert!(
            EventPattern::parse_text("{nope")
                .unwrap_err()
                .message
                .contains("not JSON")
        );
    }
}
