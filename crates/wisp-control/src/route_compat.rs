//! Which routes of a target a source's documents may take, judged from the JSON Schema of what the
//! source sends (`wiring.rs`).
//!
//! An event that matches none of a function's routes is refused when it arrives, so a wiring whose
//! documents may match none is refused when it is made. A value rule (`{"Pointer": "/action",
//! "Equals": "create"}`, or `AnyOf`) is judged by the values the source's schema allows at the
//! pointer, followed through `properties`: a `const`, an `enum` or a `boolean` type gives a finite set;
//! anything else, or a property the schema does not require (it may be missing), leaves the document
//! free to match no route. Routes are taken in order, as at run time: the values a route takes are no
//! longer open to the routes after it, and once every possible value is taken the rest are
//! unreachable. An HTTP rule cannot be judged from a schema: a target with one is given the benefit of
//! the doubt (its documents may take it, and may take the routes before it). Any other rule (a gRPC
//! method) never matches a wired document. The routes a document may take are then each checked
//! against the input type that applies to them.

use std::collections::BTreeMap;

use serde_json::Value;
use wisp_types::Route;

use crate::compat::Mismatch;

/// The values a schema allows at one place: `None` for any value; `may_be_missing` when the place may
/// be absent from the document.
#[derive(Debug, Clone, PartialEq)]
struct Possible {
    values: Option<Vec<Value>>,
    may_be_missing: bool,
}

/// The indexes of the routes a document `produced` allows may take, or why it may take none.
pub fn routes_taken(produced: &Value, routes: &[Route]) -> Result<Vec<usize>, Mismatch> {
    let mut open: BTreeMap<String, Possible> = BTreeMap::new();
    let mut taken = Vec::new();
    let mut lenient = false;
    for (index, route) in routes.iter().enumerate() {
        let rule = &route.rule;
        let Some(pointer) = &rule.pointer else {
            if rule.http_method.is_some() || rule.http_path.is_some() {
                taken.push(index);
                lenient = true;
            }
            continue;
        };
        let wanted: Vec<&Value> = match (&rule.equals, &rule.any_of) {
            (Some(value), _) => vec![value],
            (None, Some(values)) => values.iter().collect(),
            (None, None) => continue,
        };
        let possible = open
            .entry(pointer.clone())
            .or_insert_with(|| possible_at(produced, pointer));
        match &mut possible.values {
            None => taken.push(index),
            Some(values) => {
                if values.iter().any(|value| wanted.contains(&value)) {
                    taken.push(index);
                }
                values.retain(|value| !wanted.contains(&value));
                if values.is_empty() && !possible.may_be_missing {
                    return Ok(taken);
                }
            }
        }
    }
    if lenient {
        return Ok(taken);
    }
    // Some document may match no route: name the first place left open.
    let Some((pointer, possible)) = open.iter().next() else {
        return Err(Mismatch {
            path: String::new(),
            expected: "a document one of the target's routes takes".to_string(),
            found: "a wired document, which no route takes (they match gRPC methods only)"
                .to_string(),
        });
    };
    let expected: Vec<String> = routes
        .iter()
        .filter(|route| route.rule.pointer.as_ref() == Some(pointer))
        .flat_map(|route| match (&route.rule.equals, &route.rule.any_of) {
            (Some(value), _) => vec![value.to_string()],
            (None, Some(values)) => values.iter().map(Value::to_string).collect(),
            (None, None) => Vec::new(),
        })
        .collect();
    let mut found = match &possible.values {
        None => vec!["any value".to_string()],
        Some(values) => values.iter().map(Value::to_string).collect(),
    };
    if possible.may_be_missing {
        found.push("no value (it may be missing)".to_string());
    }
    Err(Mismatch {
        path: pointer.clone(),
        expected: format!(
            "a value one of the target's routes takes ({})",
            expected.join(", ")
        ),
        found: format!("{}, which matches no route", found.join(", ")),
    })
}

/// What `schema` allows at `pointer`.
fn possible_at(schema: &Value, pointer: &str) -> Possible {
    let mut here = schema;
    let mut may_be_missing = false;
    for segment in pointer.split('/').skip(1) {
        let name = segment.replace("~1", "/").replace("~0", "~");
        let required = here
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|required| required.iter().any(|field| field.as_str() == Some(&name)));
        let Some(property) = here
            .get("properties")
            .and_then(|properties| properties.get(&name))
        else {
            return Possible {
                values: None,
                may_be_missing: true,
            };
        };
        may_be_missing |= !required;
        here = property;
    }
    Possible {
        values: values_of(here),
        may_be_missing,
    }
}

/// The finite set of values a schema allows, when it says so plainly.
fn values_of(schema: &Value) -> Option<Vec<Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value.clone()]);
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(values.clone());
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("boolean") => Some(vec![Value::Bool(true), Value::Bool(false)]),
        Some("null") => Some(vec![Value::Null]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn routes(rules: Value) -> Vec<Route> {
        rules
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(index, rule)| Route {
                name: format!("r{index}"),
                rule: serde_json::from_value(rule.clone()).unwrap(),
                handler: format!("app.h{index}"),
                signature: None,
            })
            .collect()
    }

    fn action(values: Value, required: bool) -> Value {
        let mut schema = json!({"type": "object", "properties": {"action": values}});
        if required {
            schema["required"] = json!(["action"]);
        }
        schema
    }

    #[test]
    fn documents_take_the_routes_their_values_reach() {
        let create_or_delete = routes(json!([
            {"Pointer": "/action", "Equals": "create"},
            {"Pointer": "/action", "AnyOf": ["delete", "purge"]},
        ]));
        let cases = [
            (action(json!({"const": "create"}), true), Ok(vec![0])),
            (
                action(json!({"enum": ["purge", "delete"]}), true),
                Ok(vec![1]),
            ),
            (
                action(json!({"enum": ["create", "delete"]}), true),
                Ok(vec![0, 1]),
            ),
        ];
        for (produced, expected) in cases {
            assert_eq!(
                routes_taken(&produced, &create_or_delete).map_err(|m| m.to_string()),
                expected,
                "{produced}"
            );
        }
    }

    #[test]
    fn documents_that_may_match_no_route_are_refused_with_the_place_and_values() {
        let create_or_delete = routes(json!([
            {"Pointer": "/action", "Equals": "create"},
            {"Pointer": "/action", "Equals": "delete"},
        ]));
        let cases = [
            (
                action(json!({"enum": ["create", "archive"]}), true),
                "\"archive\"",
            ),
            (action(json!({"type": "string"}), true), "any value"),
            (action(json!({"const": "create"}), false), "may be missing"),
            (json!({}), "any value"),
            (json!({"type": "object"}), "any value"),
        ];
        for (produced, found) in cases {
            let mismatch = routes_taken(&produced, &create_or_delete).expect_err("refused");
            assert_eq!(mismatch.path, "/action");
            assert!(
                mismatch.expected.contains("\"create\", \"delete\""),
                "{mismatch}"
            );
            assert!(mismatch.found.contains(found), "{produced}: {mismatch}");
        }
    }

    #[test]
    fn values_are_followed_through_nested_properties_and_booleans() {
        let by_flag = routes(json!([
            {"Pointer": "/order/urgent", "Equals": true},
            {"Pointer": "/order/urgent", "Equals": false},
        ]));
        let produced = json!({
            "type": "object", "required": ["order"],
            "properties": {"order": {"type": "object", "required": ["urgent"], "properties": {"urgent": {"type": "boolean"}}}}
        });
        assert_eq!(routes_taken(&produced, &by_flag).unwrap(), vec![0, 1]);
        let only_true = routes(json!([{"Pointer": "/order/urgent", "Equals": true}]));
        let mismatch = routes_taken(&produced, &only_true).unwrap_err();
        assert_eq!(mismatch.path, "/order/urgent");
        assert!(mismatch.found.contains("false"), "{mismatch}");
    }

    #[test]
    fn a_route_after_every_value_is_taken_is_unreachable() {
        let shadowed = routes(json!([
            {"Pointer": "/action", "AnyOf": ["create", "delete"]},
            {"Pointer": "/action", "Equals": "create"},
        ]));
        let produced = action(json!({"const": "create"}), true);
        assert_eq!(routes_taken(&produced, &shadowed).unwrap(), vec![0]);
    }

    #[test]
    fn http_rules_are_given_the_benefit_of_the_doubt_and_grpc_rules_never_match() {
        let mixed = routes(json!([
            {"Pointer": "/action", "Equals": "create"},
            {"GrpcMethod": "shop.v1.Orders/Place"},
            {"HttpMethod": "GET", "HttpPath": "/orders/{id}"},
        ]));
        assert_eq!(routes_taken(&json!({}), &mixed).unwrap(), vec![0, 2]);
        let grpc_only = routes(json!([{"GrpcMethod": "shop.v1.Orders/Place"}]));
        let mismatch = routes_taken(&json!({}), &grpc_only).unwrap_err();
        assert!(mismatch.found.contains("gRPC methods only"), "{mismatch}");
    }
}
