//! Static compatibility of JSON Schemas: may every document `produced` allows be accepted by `accepted`?
//!
//! Used whenever one function is wired to another (a destination today), so a wiring that would fail on
//! its first event is refused when it is made. The check is structural and conservative on what it
//! covers: types (an integer is a number), required properties, property types, `enum` and `const`,
//! array `items`, and closed objects (`additionalProperties: false`), recursively. A side with no
//! constraint means "any value". Value constraints (`minimum`, `pattern`, lengths…) and combinators
//! (`anyOf`, `oneOf`, `allOf`, `not`, `$ref`) in the accepting schema are not checked statically; they
//! are still checked at run time when the target validates its input.

use std::collections::BTreeSet;

use serde_json::Value;

/// Where two schemas disagree: the JSON pointer into the document, what the target accepts there,
/// and what the source may send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mismatch {
    pub path: String,
    pub expected: String,
    pub found: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.path.is_empty() {
            "the document"
        } else {
            &self.path
        };
        write!(
            f,
            "at {at}: expected {}, found {}",
            self.expected, self.found
        )
    }
}

const ALL_TYPES: [&str; 7] = [
    "array", "boolean", "integer", "null", "number", "object", "string",
];

/// Every way a document allowed by `produced` may be refused by `accepted` (empty: compatible).
pub fn check(produced: &Value, accepted: &Value) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    compare(produced, accepted, String::new(), &mut mismatches);
    mismatches
}

fn compare(produced: &Value, accepted: &Value, path: String, out: &mut Vec<Mismatch>) {
    if accepted == &Value::Bool(true) || accepted.as_object().is_some_and(|map| map.is_empty()) {
        return;
    }
    if accepted == &Value::Bool(false) {
        out.push(Mismatch {
            path,
            expected: "nothing (the schema is false)".into(),
            found: describe_types(&types_of(produced)),
        });
        return;
    }
    if produced == &Value::Bool(false) {
        return;
    }
    // Types: every type the source may send must be one the target takes.
    let produced_types = types_of(produced);
    if let Some(accepted_types) = types_of(accepted) {
        let offending: BTreeSet<&str> = produced_types
            .clone()
            .unwrap_or_else(|| ALL_TYPES.into_iter().collect())
            .into_iter()
            .filter(|kind| !type_accepted(kind, &accepted_types))
            .collect();
        if !offending.is_empty() {
            out.push(Mismatch {
                path,
                expected: describe_types(&Some(accepted_types)),
                found: describe_types(&produced_types),
            });
            return;
        }
    }
    // Values: a target with an enum takes only those values.
    if let Some(allowed) = values_of(accepted) {
        match values_of(produced) {
            Some(sent) => {
                let extra: Vec<&Value> = sent
                    .iter()
                    .filter(|value| !allowed.contains(value))
                    .collect();
                if !extra.is_empty() {
                    out.push(Mismatch {
                        path: path.clone(),
                        expected: format!("one of {}", list(&allowed)),
                        found: format!(
                            "also {}",
                            list(&extra.into_iter().cloned().collect::<Vec<_>>())
                        ),
                    });
                }
            }
            None if produced_types
                .as_ref()
                .is_some_and(|kinds| kinds.len() == 1 && kinds.contains("boolean"))
                && allowed.contains(&Value::Bool(true))
                && allowed.contains(&Value::Bool(false)) => {}
            None => out.push(Mismatch {
                path: path.clone(),
                expected: format!("one of {}", list(&allowed)),
                found: format!("any {}", describe_types(&produced_types)),
            }),
        }
    }
    if may_be(&produced_types, "object") {
        compare_objects(produced, accepted, &path, out);
    }
    if may_be(&produced_types, "array")
        && let Some(items) = accepted.get("items")
    {
        let sent = produced.get("items").unwrap_or(&Value::Bool(true));
        compare(sent, items, format!("{path}/*"), out);
    }
}

fn compare_objects(produced: &Value, accepted: &Value, path: &str, out: &mut Vec<Mismatch>) {
    let empty = serde_json::Map::new();
    let sent_properties = produced
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let taken_properties = accepted
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let sent_required = required_of(produced);
    let sent_extra = produced
        .get("additionalProperties")
        .unwrap_or(&Value::Bool(true));
    let produced_closed = sent_extra == &Value::Bool(false);
    for name in required_of(accepted) {
        if !sent_required.contains(&name) {
            let found = if sent_properties.contains_key(&name) {
                "an optional property"
            } else if produced_closed {
                "no such property"
            } else {
                "a property that may be missing"
            };
            out.push(Mismatch {
                path: format!("{path}/{}", escape(&name)),
                expected: "a required property".into(),
                found: found.into(),
            });
        }
    }
    let taken_extra = accepted.get("additionalProperties");
    // Properties the target describes: whatever the source may put there must fit.
    for (name, taken) in taken_properties {
        let sent = match sent_properties.get(name) {
            Some(sent) => sent,
            None if produced_closed => continue,
            None => sent_extra,
        };
        compare(sent, taken, format!("{path}/{}", escape(name)), out);
    }
    // Properties only the source describes: the target must allow them.
    for (name, sent) in sent_properties {
        if taken_properties.contains_key(name) {
            continue;
        }
        match taken_extra {
            Some(Value::Bool(false)) => out.push(Mismatch {
                path: format!("{path}/{}", escape(name)),
                expected: "no such property (the object is closed)".into(),
                found: format!("a property of type {}", describe_types(&types_of(sent))),
            }),
            Some(schema) if schema.is_object() => {
                compare(sent, schema, format!("{path}/{}", escape(name)), out)
            }
            _ => {}
        }
    }
    // An open source may send properties nobody described: a closed target refuses them.
    if !produced_closed && taken_extra == Some(&Value::Bool(false)) {
        let known: Vec<&str> = taken_properties.keys().map(String::as_str).collect();
        out.push(Mismatch {
            path: path.to_string(),
            expected: format!("an object with only the properties {}", known.join(", ")),
            found: "an open object (it may carry other properties)".into(),
        });
    }
}

/// The JSON types a schema allows; `None` when it does not restrict them.
fn types_of(schema: &Value) -> Option<BTreeSet<&'static str>> {
    if let Some(kind) = schema.get("type") {
        let names: Vec<&str> = match kind {
            Value::String(name) => vec![name.as_str()],
            Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        return Some(
            ALL_TYPES
                .into_iter()
                .filter(|known| names.contains(known))
                .collect(),
        );
    }
    values_of(schema).map(|values| values.iter().map(type_of_value).collect())
}

fn type_of_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_accepted(kind: &str, accepted: &BTreeSet<&str>) -> bool {
    accepted.contains(kind) || (kind == "integer" && accepted.contains("number"))
}

fn may_be(types: &Option<BTreeSet<&str>>, kind: &str) -> bool {
    types.as_ref().is_none_or(|types| types.contains(kind))
}

/// The values an `enum` or `const` allows.
fn values_of(schema: &Value) -> Option<Vec<Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    schema.get("enum").and_then(Value::as_array).cloned()
}

fn required_of(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn describe_types(types: &Option<BTreeSet<&str>>) -> String {
    match types {
        None => "any JSON value".into(),
        Some(types) if types.is_empty() => "no value".into(),
        Some(types) => types.iter().copied().collect::<Vec<_>>().join(" or "),
    }
}

fn list(values: &[Value]) -> String {
    let shown: Vec<String> = values.iter().map(Value::to_string).collect();
    format!("[{}]", shown.join(", "))
}

/// A property name as a JSON pointer segment.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A rule, what the source sends, what the target accepts, and (path, words) of the first
    /// mismatch expected, or `None` when they are compatible.
    type Case = (
        &'static str,
        Value,
        Value,
        Option<(&'static str, &'static str)>,
    );

    fn cases() -> Vec<Case> {
        vec![
            (
                "same type",
                json!({"type": "string"}),
                json!({"type": "string"}),
                None,
            ),
            (
                "other type",
                json!({"type": "string"}),
                json!({"type": "integer"}),
                Some(("", "found string")),
            ),
            (
                "integer is a number",
                json!({"type": "integer"}),
                json!({"type": "number"}),
                None,
            ),
            (
                "a number is not an integer",
                json!({"type": "number"}),
                json!({"type": "integer"}),
                Some(("", "expected integer")),
            ),
            (
                "fewer types",
                json!({"type": "string"}),
                json!({"type": ["string", "null"]}),
                None,
            ),
            (
                "more types",
                json!({"type": ["string", "null"]}),
                json!({"type": "string"}),
                Some(("", "found null or string")),
            ),
            (
                "anything into a typed target",
                json!({}),
                json!({"type": "object"}),
                Some(("", "found any JSON value")),
            ),
            (
                "anything into an untyped target",
                json!({"type": "integer"}),
                json!({}),
                None,
            ),
            (
                "required and sent",
                json!({"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}),
                json!({"type": "object", "required": ["id"]}),
                None,
            ),
            (
                "required but optional",
                json!({"type": "object", "properties": {"id": {"type": "string"}}}),
                json!({"type": "object", "required": ["id"]}),
                Some(("/id", "an optional property")),
            ),
            (
                "required but absent from a closed source",
                json!({"type": "object", "additionalProperties": false}),
                json!({"type": "object", "required": ["id"]}),
                Some(("/id", "no such property")),
            ),
            (
                "property types agree",
                json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
                json!({"type": "object", "properties": {"n": {"type": "number"}}}),
                None,
            ),
            (
                "property types differ",
                json!({"type": "object", "properties": {"n": {"type": "string"}}}),
                json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
                Some(("/n", "found string")),
            ),
            (
                "nested property",
                json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "boolean"}}}}}),
                json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}),
                Some(("/a/b", "expected string")),
            ),
            (
                "open source, typed target property",
                json!({"type": "object"}),
                json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
                Some(("/n", "found any JSON value")),
            ),
            (
                "closed source never sends the property",
                json!({"type": "object", "additionalProperties": false}),
                json!({"type": "object", "properties": {"n": {"type": "integer"}}}),
                None,
            ),
            (
                "enum within enum",
                json!({"enum": ["red", "blue"]}),
                json!({"enum": ["red", "green", "blue"]}),
                None,
            ),
            (
                "enum beyond enum",
                json!({"enum": ["red", "pink"]}),
                json!({"enum": ["red", "blue"]}),
                Some(("", "also [\"pink\"]")),
            ),
            (
                "const within enum",
                json!({"const": "red"}),
                json!({"enum": ["red", "blue"]}),
                None,
            ),
            (
                "free string into enum",
                json!({"type": "string"}),
                json!({"type": "string", "enum": ["red"]}),
                Some(("", "one of [\"red\"]")),
            ),
            (
                "boolean into both booleans",
                json!({"type": "boolean"}),
                json!({"enum": [true, false]}),
                None,
            ),
            (
                "array items agree",
                json!({"type": "array", "items": {"type": "integer"}}),
                json!({"type": "array", "items": {"type": "number"}}),
                None,
            ),
            (
                "array items differ",
                json!({"type": "array", "items": {"type": "string"}}),
                json!({"type": "array", "items": {"type": "integer"}}),
                Some(("/*", "found string")),
            ),
            (
                "untyped items into typed items",
                json!({"type": "array"}),
                json!({"type": "array", "items": {"type": "integer"}}),
                Some(("/*", "found any JSON value")),
            ),
            (
                "closed target, closed source within it",
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "additionalProperties": false}),
                None,
            ),
            (
                "closed target, extra property",
                json!({"type": "object", "properties": {"c": {"type": "string"}}, "additionalProperties": false}),
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
                Some(("/c", "the object is closed")),
            ),
            (
                "closed target, open source",
                json!({"type": "object", "properties": {"a": {"type": "string"}}}),
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
                Some(("", "an open object")),
            ),
            (
                "additionalProperties schema checks extras",
                json!({"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": false}),
                json!({"type": "object", "additionalProperties": {"type": "integer"}}),
                Some(("/x", "expected integer")),
            ),
            (
                "pointer escaping",
                json!({"type": "object", "properties": {"a/b": {"type": "string"}}}),
                json!({"type": "object", "properties": {"a/b": {"type": "integer"}}}),
                Some(("/a~1b", "expected integer")),
            ),
            (
                "false target",
                json!({"type": "string"}),
                json!(false),
                Some(("", "nothing")),
            ),
        ]
    }

    #[test]
    fn each_rule_in_both_directions() {
        for (rule, produced, accepted, expected) in cases() {
            let found = check(&produced, &accepted);
            match expected {
                None => assert!(
                    found.is_empty(),
                    "{rule}: expected compatible, got {found:?}"
                ),
                Some((path, words)) => {
                    let first = found
                        .first()
                        .unwrap_or_else(|| panic!("{rule}: expected a mismatch, got none"));
                    assert_eq!(first.path, path, "{rule}: {first}");
                    assert!(
                        first.to_string().contains(words),
                        "{rule}: {first} lacks {words:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_schema_is_compatible_with_itself() {
        for (rule, produced, accepted, _) in cases() {
            for schema in [&produced, &accepted] {
                if schema == &json!(false) {
                    continue;
                }
                assert!(
                    check(schema, schema).is_empty(),
                    "{rule}: {schema} against itself: {:?}",
                    check(schema, schema)
                );
            }
        }
    }

    #[test]
    fn every_mismatch_is_reported_not_only_the_first() {
        let produced = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        let accepted = json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}});
        let found = check(&produced, &accepted);
        let paths: Vec<&str> = found
            .iter()
            .map(|mismatch| mismatch.path.as_str())
            .collect();
        assert_eq!(paths, ["/a", "/a", "/b"], "{found:?}");
    }
}
