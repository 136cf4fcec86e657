//! A function's signature: the type of the event it accepts and of the result it returns.
//!
//! A signature belongs to `$LATEST` and is copied into each published version, where it never changes.
//! Each side is optional; a side that is absent is not checked. A type is a JSON Schema document
//! (draft 2020-12) or a protobuf message with the `.proto` files that declare it; a function with
//! protobuf types may also name the gRPC method it serves, and a route may be bound to one gRPC method
//! (its rule is then the method a call arrives by, not anything in the event).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The input and output types of a function version, as `/wisp/v1/functions/{name}/signature` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<TypeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<TypeSpec>,
    /// The gRPC method that invokes the function, `package.Service/Method`, declared by an `rpc` in
    /// the input's `.proto` files whose request and response are the input and output messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_method: Option<String>,
}

impl Signature {
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none() && self.grpc_method.is_none()
    }
}

/// One side of a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TypeSpec {
    /// A JSON Schema document; draft 2020-12 unless its `$schema` names another draft.
    JsonSchema(serde_json::Value),
    /// A protobuf message; the function sees it in protobuf's JSON mapping.
    Protobuf(ProtobufType),
}

/// A protobuf message type: `.proto` source files and the full name of one message they declare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProtobufType {
    /// The `.proto` files by import path (`orders/v1/orders.proto`), as text. Imports resolve among
    /// them and the well-known `google/protobuf/*.proto` files.
    pub files: BTreeMap<String, String>,
    /// The message's full name, `package.Message`.
    pub message: String,
    /// How the function itself receives (input) or returns (output) the message: protobuf's JSON
    /// mapping by default, or binary protobuf. Callers see the same either way: JSON over REST,
    /// binary over gRPC.
    #[serde(default, skip_serializing_if = "ProtobufEncoding::is_json")]
    pub encoding: ProtobufEncoding,
}

/// The form a protobuf message takes between Wisp and the function's runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProtobufEncoding {
    /// Protobuf's JSON mapping (`Content-Type: application/json`).
    #[default]
    Json,
    /// Binary protobuf (`Content-Type: application/x-protobuf`).
    Binary,
}

impl ProtobufEncoding {
    pub fn is_json(&self) -> bool {
        *self == ProtobufEncoding::Json
    }
}

/// One way a document broke its type: where, which rule, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Violation {
    /// JSON pointer to the offending value in the document (`""` is the whole document).
    pub pointer: String,
    /// JSON pointer to the rule in the schema that failed, e.g. `/properties/age/type`.
    pub rule: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "the document"
        } else {
            &self.pointer
        };
        write!(f, "at {at}: {} (rule {})", self.message, self.rule)
    }
}

/// One entry point of a function: events that match go to `handler`, checked against `signature`
/// (or, when it has none, the function's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Route {
    /// Unique within the function: letters, digits, `-` and `_`, at most 64.
    pub name: String,
    #[serde(rename = "Match")]
    pub rule: RouteMatch,
    /// The handler the runtime calls, in the runtime's own form (`module.function`, `file.export`).
    pub handler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// What a route matches. Exactly one form:
/// `{"Pointer": "/action", "Equals": "create"}`, `{"Pointer": "/action", "AnyOf": ["a", "b"]}`,
/// `{"HttpMethod": "POST", "HttpPath": "/orders/{id}"}` (API Gateway and function URL events; either part
/// may be left out, `{name}` matches one path segment and a final `{name+}` the rest), or
/// `{"GrpcMethod": "orders.Orders/Cancel"}` (calls that arrive through the gRPC gateway by that method;
/// no event matches it by its content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_of: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_method: Option<String>,
}

impl RouteMatch {
    /// Checks that the rule has exactly one form, completely.
    pub fn validate(&self, route: &str) -> Result<(), crate::ApiError> {
        let by_value = self.pointer.is_some() || self.equals.is_some() || self.any_of.is_some();
        let by_http = self.http_method.is_some() || self.http_path.is_some();
        let invalid = |what: &str| {
            Err(crate::ApiError::invalid(format!(
                "route {route:?}: {what}; a Match is {{\"Pointer\": \"/field\", \"Equals\": value}}, {{\"Pointer\": \"/field\", \"AnyOf\": [values]}}, {{\"HttpMethod\": \"POST\", \"HttpPath\": \"/path/{{id}}\"}} or {{\"GrpcMethod\": \"package.Service/Method\"}}"
            )))
        };
        if let Some(method) = &self.grpc_method {
            if by_value || by_http {
                return invalid("Match mixes GrpcMethod with another rule");
            }
            if !is_grpc_method_name(method) {
                return invalid(&format!(
                    "GrpcMethod {method:?} is not of the form package.Service/Method"
                ));
            }
            return Ok(());
        }
        match (by_value, by_http) {
            (true, true) => invalid("Match mixes a value rule with an HTTP rule"),
            (false, false) => invalid("Match is empty"),
            (true, false) => {
                let Some(pointer) = &self.pointer else {
                    return invalid("Match needs a Pointer");
                };
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return invalid(&format!(
                        "Pointer {pointer:?} is not a JSON pointer (it starts with /)"
                    ));
                }
                match (&self.equals, &self.any_of) {
                    (Some(_), None) => Ok(()),
                    (None, Some(values)) if !values.is_empty() => Ok(()),
                    (None, Some(_)) => invalid("AnyOf is empty"),
                    (Some(_), Some(_)) => invalid("Match has both Equals and AnyOf"),
                    (None, None) => invalid("Match needs Equals or AnyOf"),
                }
            }
            (false, true) => match &self.http_path {
                Some(path) if !path.starts_with('/') => {
                    invalid(&format!("HttpPath {path:?} must start with /"))
                }
                _ => Ok(()),
            },
        }
    }

    /// Whether a call that arrived through the gRPC gateway by `method` (`package.Service/Method`)
    /// is bound to this rule.
    pub fn binds(&self, method: &str) -> bool {
        self.grpc_method.as_deref() == Some(method)
    }

    /// Whether an event matches.
    /// A `GrpcMethod` rule matches no event: only the method a call arrived by selects it ([`RouteMatch::binds`]).
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        if self.grpc_method.is_some() {
            return false;
        }
        if let Some(pointer) = &self.pointer {
            let Some(found) = event.pointer(pointer) else {
                return false;
            };
            return match (&self.equals, &self.any_of) {
                (Some(expected), _) => found == expected,
                (None, Some(values)) => values.contains(found),
                (None, None) => false,
            };
        }
        // API Gateway HTTP APIs and function URLs (payload 2.0), then REST APIs (1.0).
        let method = event
            .pointer("/requestContext/http/method")
            .or_else(|| event.get("httpMethod"))
            .and_then(serde_json::Value::as_str);
        let path = event
            .get("rawPath")
            .or_else(|| event.get("path"))
            .and_then(serde_json::Value::as_str);
        if let Some(expected) = &self.http_method
            && !method.is_some_and(|method| method.eq_ignore_ascii_case(expected))
        {
            return false;
        }
        match &self.http_path {
            Some(pattern) => path.is_some_and(|path| path_matches(pattern, path)),
            None => method.is_some(),
        }
    }
}

/// `package.Service/Method`: a dotted name of protobuf identifiers with a package (at least two
/// parts), a slash, and one identifier.
pub fn is_grpc_method_name(name: &str) -> bool {
    let is_identifier = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let Some((service, method)) = name.split_once('/') else {
        return false;
    };
    let parts: Vec<&str> = service.split('.').collect();
    parts.len() >= 2 && parts.iter().all(|part| is_identifier(part)) && is_identifier(method)
}

/// `/orders/{id}` matches `/orders/7`; a final `{rest+}` matches one or more remaining segments.
fn path_matches(pattern: &str, path: &str) -> bool {
    let mut wanted = pattern.trim_start_matches('/').split('/');
    let mut given = path.trim_start_matches('/').split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(segment), Some(value)) if segment.starts_with('{') && segment.ends_with("+}") => {
                return !value.is_empty() && wanted.next().is_none();
            }
            (Some(segment), Some(value)) if segment.starts_with('{') && segment.ends_with('}') => {
                if value.is_empty() {
                    return false;
                }
            }
            (Some(segment), Some(value)) if segment == value => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(value: serde_json::Value) -> RouteMatch {
        serde_json::from_value(value).expect("a rule")
    }

    #[test]
    fn value_rules_match_by_pointer() {
        let equals = rule(json!({"Pointer": "/action", "Equals": "create"}));
        assert!(equals.matches(&json!({"action": "create"})));
        assert!(!equals.matches(&json!({"action": "delete"})));
        assert!(!equals.matches(&json!({})));
        let any = rule(json!({"Pointer": "/order/kind", "AnyOf": ["a", 2]}));
        assert!(any.matches(&json!({"order": {"kind": 2}})));
        assert!(
            !any.matches(&json!({"order": {"kind": "2"}})),
            "values compare as JSON, 2 is not \"2\""
        );
    }

    #[test]
    fn http_rules_match_both_api_gateway_payloads() {
        let get_order = rule(json!({"HttpMethod": "GET", "HttpPath": "/orders/{id}"}));
        let v2 = json!({"rawPath": "/orders/17", "requestContext": {"http": {"method": "GET"}}});
        let v1 = json!({"path": "/orders/17", "httpMethod": "get"});
        assert!(get_order.matches(&v2) && get_order.matches(&v1));
        assert!(!get_order.matches(
            &json!({"rawPath": "/orders/17", "requestContext": {"http": {"method": "POST"}}})
        ));
        assert!(!get_order.matches(
            &json!({"rawPath": "/orders", "requestContext": {"http": {"method": "GET"}}})
        ));
        assert!(!get_order.matches(
            &json!({"rawPath": "/orders/17/lines", "requestContext": {"http": {"method": "GET"}}})
        ));
        let files = rule(json!({"HttpPath": "/files/{path+}"}));
        assert!(files.matches(
            &json!({"rawPath": "/files/a/b/c", "requestContext": {"http": {"method": "PUT"}}})
        ));
        assert!(!files.matches(
            &json!({"rawPath": "/files/", "requestContext": {"http": {"method": "PUT"}}})
        ));
        assert!(
            !files.matches(&json!({"action": "x"})),
            "a non-HTTP event never matches an HTTP rule"
        );
    }

    #[test]
    fn malformed_rules_are_refused_with_the_route_name() {
        for (value, words) in [
            (json!({}), "Match is empty"),
            (
                json!({"Pointer": "/a", "HttpMethod": "GET", "Equals": 1}),
                "mixes",
            ),
            (json!({"Pointer": "a", "Equals": 1}), "not a JSON pointer"),
            (json!({"Pointer": "/a"}), "needs Equals or AnyOf"),
            (json!({"Pointer": "/a", "AnyOf": []}), "AnyOf is empty"),
            (json!({"Equals": 1}), "needs a Pointer"),
            (json!({"HttpPath": "orders"}), "must start with /"),
            (
                json!({"GrpcMethod": "orders.Orders/Cancel", "HttpMethod": "POST"}),
                "mixes GrpcMethod",
            ),
            (
                json!({"GrpcMethod": "orders.Orders/Cancel", "Pointer": "/a", "Equals": 1}),
                "mixes GrpcMethod",
            ),
            (
                json!({"GrpcMethod": "Orders/Cancel"}),
                "package.Service/Method",
            ),
            (
                json!({"GrpcMethod": "orders.Orders"}),
                "package.Service/Method",
            ),
            (
                json!({"GrpcMethod": "orders.Orders/"}),
                "package.Service/Method",
            ),
            (
                json!({"GrpcMethod": "orders.Orders/Can/cel"}),
                "package.Service/Method",
            ),
            (
                json!({"GrpcMethod": "orders..Orders/Cancel"}),
                "package.Service/Method",
            ),
            (
                json!({"GrpcMethod": "/orders.Orders/Cancel"}),
                "package.Service/Method",
            ),
            (
                json!({"GrpcMethod": "orders.1Orders/Cancel"}),
                "package.Service/Method",
            ),
        ] {
            let error = rule(value.clone()).validate("r1").expect_err("refused");
            assert!(
                error.message.contains(words) && error.message.contains("\"r1\""),
                "{value}: {}",
                error.message
            );
        }
    }

    #[test]
    fn grpc_method_rules_are_selected_by_the_method_not_by_the_event() {
        let cancel = rule(json!({"GrpcMethod": "orders.v1.Orders/Cancel"}));
        cancel.validate("cancel").expect("a valid rule");
        assert!(cancel.binds("orders.v1.Orders/Cancel"));
        assert!(!cancel.binds("orders.v1.Orders/Place"));
        for event in [
            json!({}),
            json!({"GrpcMethod": "orders.v1.Orders/Cancel"}),
            json!({"rawPath": "/orders.v1.Orders/Cancel", "requestContext": {"http": {"method": "POST"}}}),
        ] {
            assert!(!cancel.matches(&event), "{event}");
        }
        let by_value = rule(json!({"Pointer": "/action", "Equals": "cancel"}));
        assert!(!by_value.binds("orders.v1.Orders/Cancel"));
        assert_eq!(
            serde_json::to_value(&cancel).unwrap(),
            json!({"GrpcMethod": "orders.v1.Orders/Cancel"}),
            "only the form that is set is written"
        );
    }
}
