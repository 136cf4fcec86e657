//! Static compatibility of two protobuf messages, on their descriptors: may every message the source
//! sends (`produced`) be taken as the target's message (`accepted`) — by field numbers, types and labels?
//!
//! Used by the wiring check where a protobuf message of the source flows into a protobuf message of the
//! target (`wiring.rs`); every other pair of types is compared as JSON Schema (`compat.rs`). Functions
//! exchange protobuf's JSON mapping, while gRPC callers and tools speak the binary form, so a pair is
//! compatible only when both forms agree: the same field numbers *and* the same JSON names.
//!
//! The rules, recursively through nested messages (message names may differ):
//!
//! - every field of the source exists in the target under the same number, with the same name and
//!   JSON name (a renamed field would be refused as unknown by the JSON mapping); fields only the
//!   target has are fine, since every proto3 field is optional;
//! - the same label: singular, `repeated` or `map` (whose key and value types are compared too);
//!   presence (proto3 `optional`, oneofs) may differ;
//! - the same type, or one of these widenings, which keep every value in both the binary and the JSON
//!   form:
//!
//! | source | target | |
//! |---|---|---|
//! | `int32` | `int64` | accepted: a varint, a JSON number either way |
//! | `uint32` | `uint64`, `int64` | accepted: every value fits |
//! | `sint32` | `sint64` | accepted: zigzag varint either way |
//! | `int64`, `uint64`, `sint64` | a 32-bit type | refused: narrowing |
//! | `int32` | `uint32`, `uint64` | refused: negative values change |
//! | `int32`…`uint64` | `bool` (and back) | refused: the JSON forms differ |
//! | `fixed32` ↔ `sfixed32`, `fixed64` ↔ `sfixed64` | | refused: the sign changes values |
//! | `float` ↔ `double` | | refused: different wire types |
//! | `string` ↔ `bytes` | | refused: bytes are base64 in JSON |
//! | enum ↔ any integer | | refused: enums are names in JSON |
//! | enum | enum | accepted when every value of the source's enum has the same number and name in the target's |
//! | message | message | compared field by field, as above |
//! | `google.protobuf.*` | | accepted only as the very same well-known type (same full name) |
//!
//! Nothing here touches the store; recursive message types are compared once per pair of messages.

use std::collections::HashSet;

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

use crate::compat::Mismatch;

/// Every way a message `produced` may send is not taken as `accepted` (empty: compatible). Paths are
/// JSON pointers of JSON names under `at` (array items and map values as `*`, as in `compat.rs`).
pub fn check(
    produced: &MessageDescriptor,
    accepted: &MessageDescriptor,
    at: &str,
) -> Vec<Mismatch> {
    let mut comparison = Comparison::default();
    comparison.messages(produced, accepted, at);
    comparison.mismatches
}

/// Whether a message is one of protobuf's well-known types, which have their own JSON forms.
pub fn is_well_known(message: &MessageDescriptor) -> bool {
    message.full_name().starts_with("google.protobuf.")
}

#[derive(Default)]
struct Comparison {
    /// (source, target) message pairs already compared or being compared, so recursive types end.
    visited: HashSet<(String, String)>,
    mismatches: Vec<Mismatch>,
}

impl Comparison {
    fn messages(&mut self, produced: &MessageDescriptor, accepted: &MessageDescriptor, path: &str) {
        let pair = (
            produced.full_name().to_string(),
            accepted.full_name().to_string(),
        );
        if !self.visited.insert(pair) {
            return;
        }
        if is_well_known(produced) || is_well_known(accepted) {
            if produced.full_name() != accepted.full_name() {
                self.push(
                    path,
                    format!("message {}", accepted.full_name()),
                    format!("message {}", produced.full_name()),
                );
            }
            return;
        }
        for sent in produced.fields() {
            self.field(&sent, accepted, path);
        }
    }

    fn field(&mut self, sent: &FieldDescriptor, accepted: &MessageDescriptor, path: &str) {
        let here = format!("{path}/{}", escape(sent.json_name()));
        let Some(taken) = accepted.get_field(sent.number()) else {
            let expected = match accepted
                .fields()
                .find(|field| field.json_name() == sent.json_name())
            {
                Some(elsewhere) => describe_field(&elsewhere),
                None => format!(
                    "no field {} (message {} does not declare it)",
                    sent.number(),
                    accepted.full_name()
                ),
            };
            self.push(&here, expected, describe_field(sent));
            return;
        };
        if !same_names(sent, &taken) {
            let (expected, found) = if taken.json_name() != sent.json_name() {
                (taken.json_name(), sent.json_name())
            } else {
                (taken.name(), sent.name())
            };
            self.push(
                &here,
                format!("field {} named `{expected}`", taken.number()),
                format!("field {} named `{found}`", sent.number()),
            );
        }
        match (label(sent), label(&taken)) {
            (Label::Map, Label::Map) => {
                let (sent_key, sent_value) = map_kinds(sent);
                let (taken_key, taken_value) = map_kinds(&taken);
                if !scalar_accepted(&sent_key, &taken_key) {
                    self.push(&here, describe_field(&taken), describe_field(sent));
                    return;
                }
                let items = format!("{here}/*");
                self.kinds(&sent_value, &taken_value, sent.number(), &items);
            }
            (Label::Repeated, Label::Repeated) => {
                let items = format!("{here}/*");
                self.kinds(&sent.kind(), &taken.kind(), sent.number(), &items);
            }
            (Label::Singular, Label::Singular) => {
                self.kinds(&sent.kind(), &taken.kind(), sent.number(), &here)
            }
            _ => self.push(&here, describe_field(&taken), describe_field(sent)),
        }
    }

    /// One value's type: a field's, an item's or a map value's.
    fn kinds(&mut self, sent: &Kind, taken: &Kind, number: u32, path: &str) {
        match (sent, taken) {
            (Kind::Message(sent), Kind::Message(taken)) => self.messages(sent, taken, path),
            (Kind::Enum(sent), Kind::Enum(taken)) => self.enums(sent, taken, number, path),
            _ if scalar_accepted(sent, taken) => {}
            _ => self.push(
                path,
                format!("{} (field {number})", kind_name(taken)),
                format!("{} (field {number})", kind_name(sent)),
            ),
        }
    }

    /// Every value the source's enum has must mean the same in the target's: same number, same name
    /// (JSON carries the name, binary the number).
    fn enums(&mut self, sent: &EnumDescriptor, taken: &EnumDescriptor, number: u32, path: &str) {
        let extra: Vec<String> = sent
            .values()
            .filter(|value| {
                taken
                    .get_value(value.number())
                    .is_none_or(|known| known.name() != value.name())
            })
            .map(|value| format!("{} = {}", value.name(), value.number()))
            .collect();
        if extra.is_empty() {
            return;
        }
        let known: Vec<String> = taken
            .values()
            .map(|value| format!("{} = {}", value.name(), value.number()))
            .collect();
        self.push(
            path,
            format!(
                "enum {} of {} (field {number})",
                taken.full_name(),
                known.join(", ")
            ),
            format!(
                "enum {} with {} (field {number})",
                sent.full_name(),
                extra.join(", ")
            ),
        );
    }

    fn push(&mut self, path: &str, expected: String, found: String) {
        self.mismatches.push(Mismatch {
            path: path.to_string(),
            expected,
            found,
        });
    }
}

/// The target must know the field under both names the source may send (the JSON mapping writes
/// the JSON name and reads either).
fn same_names(sent: &FieldDescriptor, taken: &FieldDescriptor) -> bool {
    let known = [taken.name(), taken.json_name()];
    known.contains(&sent.name()) && known.contains(&sent.json_name())
}

#[derive(PartialEq, Eq)]
enum Label {
    Singular,
    Repeated,
    Map,
}

fn label(field: &FieldDescriptor) -> Label {
    if field.is_map() {
        Label::Map
    } else if field.is_list() {
        Label::Repeated
    } else {
        Label::Singular
    }
}

/// A map field's key and value types.
fn map_kinds(field: &FieldDescriptor) -> (Kind, Kind) {
    match field.kind() {
        Kind::Message(entry) => (
            entry.map_entry_key_field().kind(),
            entry.map_entry_value_field().kind(),
        ),
        other => (other.clone(), other),
    }
}

/// Scalars: the same type, or a widening that keeps every value in binary and in JSON (module doc).
fn scalar_accepted(sent: &Kind, taken: &Kind) -> bool {
    let same = match (sent, taken) {
        (Kind::Message(_), _) | (_, Kind::Message(_)) | (Kind::Enum(_), _) | (_, Kind::Enum(_)) => {
            false
        }
        _ => sent == taken,
    };
    same || matches!(
        (sent, taken),
        (Kind::Int32, Kind::Int64)
            | (Kind::Uint32, Kind::Uint64)
            | (Kind::Uint32, Kind::Int64)
            | (Kind::Sint32, Kind::Sint64)
    )
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(message) => format!("message {}", message.full_name()),
        Kind::Enum(enumeration) => format!("enum {}", enumeration.full_name()),
    }
}

/// A field as the target or source declares it: `repeated int32 (field 2)`, `map<string, int64> (field 3)`.
fn describe_field(field: &FieldDescriptor) -> String {
    let kind = match label(field) {
        Label::Map => {
            let (key, value) = map_kinds(field);
            format!("map<{}, {}>", kind_name(&key), kind_name(&value))
        }
        Label::Repeated => format!("repeated {}", kind_name(&field.kind())),
        Label::Singular => kind_name(&field.kind()),
    };
    format!("{kind} (field {})", field.number())
}

/// A JSON name as a JSON pointer segment.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// `M` of a proto3 file in package `package` with `body` as its declarations.
    fn message(package: &str, body: &str) -> MessageDescriptor {
        let text = format!(
            "syntax = \"proto3\"; package {package};\n\
             import \"google/protobuf/timestamp.proto\";\n\
             import \"google/protobuf/duration.proto\";\n{body}"
        );
        let files = BTreeMap::from([(format!("{package}.proto"), text)]);
        let pool = crate::protobuf::compile_files(&files)
            .unwrap_or_else(|error| panic!("{body}: {}", error.message));
        pool.get_message_by_name(&format!("{package}.M"))
            .unwrap_or_else(|| panic!("{body}: no message M"))
    }

    /// The first mismatch expected: its path, and words of its `expected` and its `found`.
    type Expect = Option<(&'static str, &'static str, &'static str)>;

    /// A rule, two declarations of `M`, and what checking `first` into `second` and then `second`
    /// into `first` must give.
    type Case = (&'static str, &'static str, &'static str, Expect, Expect);

    fn cases() -> Vec<Case> {
        vec![
            (
                "the same field",
                "message M { int32 a = 1; }",
                "message M { int32 a = 1; }",
                None,
                None,
            ),
            (
                "fields only the target has are optional",
                "message M { int32 a = 1; }",
                "message M { int32 a = 1; string b = 2; }",
                None,
                Some(("/b", "no field 2 (message", "string (field 2)")),
            ),
            (
                "a field under another number",
                "message M { int32 quantity = 2; }",
                "message M { int32 quantity = 3; }",
                Some(("/quantity", "int32 (field 3)", "int32 (field 2)")),
                Some(("/quantity", "int32 (field 2)", "int32 (field 3)")),
            ),
            (
                "a field under another name",
                "message M { int32 quantity = 2; }",
                "message M { int32 qty = 2; }",
                Some((
                    "/quantity",
                    "field 2 named `qty`",
                    "field 2 named `quantity`",
                )),
                Some(("/qty", "field 2 named `quantity`", "field 2 named `qty`")),
            ),
            (
                "the same JSON name from another field name",
                "message M { int32 order_id = 1; }",
                "message M { int32 orderId = 1; }",
                Some(("/orderId", "field 1 named `orderId`", "named `order_id`")),
                None,
            ),
            (
                "int32 widens to int64",
                "message M { int32 n = 1; }",
                "message M { int64 n = 1; }",
                None,
                Some(("/n", "int32 (field 1)", "int64 (field 1)")),
            ),
            (
                "uint32 widens to int64",
                "message M { uint32 n = 1; }",
                "message M { int64 n = 1; }",
                None,
                Some(("/n", "uint32 (field 1)", "int64 (field 1)")),
            ),
            (
                "uint32 widens to uint64",
                "message M { uint32 n = 1; }",
                "message M { uint64 n = 1; }",
                None,
                Some(("/n", "uint32 (field 1)", "uint64 (field 1)")),
            ),
            (
                "sint32 widens to sint64",
                "message M { sint32 n = 1; }",
                "message M { sint64 n = 1; }",
                None,
                Some(("/n", "sint32 (field 1)", "sint64 (field 1)")),
            ),
            (
                "signed and unsigned differ",
                "message M { int32 n = 1; }",
                "message M { uint32 n = 1; }",
                Some(("/n", "uint32 (field 1)", "int32 (field 1)")),
                Some(("/n", "int32 (field 1)", "uint32 (field 1)")),
            ),
            (
                "int64 and uint64 differ",
                "message M { int64 n = 1; }",
                "message M { uint64 n = 1; }",
                Some(("/n", "uint64", "int64")),
                Some(("/n", "int64", "uint64")),
            ),
            (
                "fixed32 and sfixed32 differ",
                "message M { fixed32 n = 1; }",
                "message M { sfixed32 n = 1; }",
                Some(("/n", "sfixed32 (field 1)", "fixed32 (field 1)")),
                Some(("/n", "fixed32 (field 1)", "sfixed32 (field 1)")),
            ),
            (
                "float and double differ",
                "message M { float n = 1; }",
                "message M { double n = 1; }",
                Some(("/n", "double (field 1)", "float (field 1)")),
                Some(("/n", "float (field 1)", "double (field 1)")),
            ),
            (
                "bool is not an integer",
                "message M { bool n = 1; }",
                "message M { int32 n = 1; }",
                Some(("/n", "int32 (field 1)", "bool (field 1)")),
                Some(("/n", "bool (field 1)", "int32 (field 1)")),
            ),
            (
                "string and bytes differ in JSON",
                "message M { string s = 1; }",
                "message M { bytes s = 1; }",
                Some(("/s", "bytes (field 1)", "string (field 1)")),
                Some(("/s", "string (field 1)", "bytes (field 1)")),
            ),
            (
                "presence may differ",
                "message M { optional int32 n = 1; }",
                "message M { int32 n = 1; }",
                None,
                None,
            ),
            (
                "repeated is not singular",
                "message M { repeated int32 n = 1; }",
                "message M { int32 n = 1; }",
                Some(("/n", "int32 (field 1)", "repeated int32 (field 1)")),
                Some(("/n", "repeated int32 (field 1)", "int32 (field 1)")),
            ),
            (
                "repeated items are compared",
                "message M { repeated int32 n = 1; }",
                "message M { repeated int64 n = 1; }",
                None,
                Some(("/n/*", "int32 (field 1)", "int64 (field 1)")),
            ),
            (
                "map values are compared",
                "message M { map<string, int32> m = 1; }",
                "message M { map<string, int64> m = 1; }",
                None,
                Some(("/m/*", "int32 (field 1)", "int64 (field 1)")),
            ),
            (
                "map keys are compared",
                "message M { map<string, int32> m = 1; }",
                "message M { map<int32, int32> m = 1; }",
                Some((
                    "/m",
                    "map<int32, int32> (field 1)",
                    "map<string, int32> (field 1)",
                )),
                Some((
                    "/m",
                    "map<string, int32> (field 1)",
                    "map<int32, int32> (field 1)",
                )),
            ),
            (
                "a map is not a list",
                "message M { map<string, int32> m = 1; }",
                "message M { message E { string key = 1; int32 value = 2; } repeated E m = 1; }",
                Some(("/m", "repeated message", "map<string, int32> (field 1)")),
                Some(("/m", "map<string, int32> (field 1)", "repeated message")),
            ),
            (
                "nested messages are compared, whatever their names",
                "message Line { int32 quantity = 2; } message M { repeated Line lines = 1; }",
                "message Item { int64 quantity = 2; string note = 3; } message M { repeated Item lines = 1; }",
                None,
                Some(("/lines/*/quantity", "int32 (field 2)", "int64 (field 2)")),
            ),
            (
                "a nested field under another number",
                "message Line { int32 quantity = 2; } message M { Line line = 1; }",
                "message Line { int32 quantity = 4; } message M { Line line = 1; }",
                Some(("/line/quantity", "int32 (field 4)", "int32 (field 2)")),
                Some(("/line/quantity", "int32 (field 2)", "int32 (field 4)")),
            ),
            (
                "a message is not a scalar",
                "message Line { int32 quantity = 2; } message M { Line line = 1; }",
                "message M { string line = 1; }",
                Some(("/line", "string (field 1)", "message src.Line (field 1)")),
                Some(("/line", "message dst.Line (field 1)", "string (field 1)")),
            ),
            (
                "an enum within an enum",
                "enum Color { RED = 0; BLUE = 1; } message M { Color c = 1; }",
                "enum Shade { RED = 0; BLUE = 1; GREEN = 2; } message M { Shade c = 1; }",
                None,
                Some(("/c", "enum dst.Color of RED = 0, BLUE = 1", "GREEN = 2")),
            ),
            (
                "an enum value under another name",
                "enum Color { RED = 0; BLUE = 1; } message M { Color c = 1; }",
                "enum Color { RED = 0; AZURE = 1; } message M { Color c = 1; }",
                Some(("/c", "AZURE = 1", "with BLUE = 1 (field 1)")),
                Some(("/c", "BLUE = 1", "with AZURE = 1 (field 1)")),
            ),
            (
                "an enum is not an integer",
                "enum Color { RED = 0; } message M { Color c = 1; }",
                "message M { int32 c = 1; }",
                Some(("/c", "int32 (field 1)", "enum src.Color (field 1)")),
                Some(("/c", "enum dst.Color (field 1)", "int32 (field 1)")),
            ),
            (
                "the same well-known type",
                "message M { google.protobuf.Timestamp at = 1; }",
                "message M { google.protobuf.Timestamp at = 1; }",
                None,
                None,
            ),
            (
                "another well-known type",
                "message M { google.protobuf.Timestamp at = 1; }",
                "message M { google.protobuf.Duration at = 1; }",
                Some((
                    "/at",
                    "message google.protobuf.Duration",
                    "message google.protobuf.Timestamp",
                )),
                Some((
                    "/at",
                    "message google.protobuf.Timestamp",
                    "message google.protobuf.Duration",
                )),
            ),
            (
                "a well-known type is only itself",
                "message M { google.protobuf.Timestamp at = 1; }",
                "message Ts { int64 seconds = 1; int32 nanos = 2; } message M { Ts at = 1; }",
                Some(("/at", "message dst.Ts", "message google.protobuf.Timestamp")),
                Some(("/at", "message google.protobuf.Timestamp", "message src.Ts")),
            ),
            (
                "recursive types end",
                "message M { int32 v = 1; repeated M children = 2; }",
                "message M { int64 v = 1; repeated M children = 2; }",
                None,
                Some(("/v", "int32 (field 1)", "int64 (field 1)")),
            ),
        ]
    }

    fn verify(rule: &str, direction: &str, found: &[Mismatch], expected: Expect) {
        match expected {
            None => assert!(
                found.is_empty(),
                "{rule} ({direction}): expected compatible, got {found:?}"
            ),
            Some((path, expected, found_words)) => {
                let first = found.first().unwrap_or_else(|| {
                    panic!("{rule} ({direction}): expected a mismatch, got none")
                });
                assert_eq!(first.path, path, "{rule} ({direction}): {first}");
                assert!(
                    first.expected.contains(expected) && first.found.contains(found_words),
                    "{rule} ({direction}): {first} lacks {expected:?} / {found_words:?}"
                );
            }
        }
    }

    #[test]
    fn each_rule_in_both_directions() {
        for (rule, first, second, forward, backward) in cases() {
            // `src` declares the first, `dst` the second, so names in messages tell the sides apart.
            let (first_as_source, second_as_target) =
                (message("src", first), message("dst", second));
            verify(
                rule,
                "forward",
                &check(&first_as_source, &second_as_target, ""),
                forward,
            );
            let (second_as_source, first_as_target) =
                (message("src", second), message("dst", first));
            verify(
                rule,
                "backward",
                &check(&second_as_source, &first_as_target, ""),
                backward,
            );
        }
    }

    #[test]
    fn a_message_is_compatible_with_itself() {
        for (rule, first, second, _, _) in cases() {
            for body in [first, second] {
                let found = check(&message("src", body), &message("dst", body), "");
                assert!(found.is_empty(), "{rule}: {body} against itself: {found:?}");
            }
        }
    }

    #[test]
    fn paths_start_where_the_message_sits_and_every_mismatch_is_reported() {
        let source = message(
            "src",
            "message M { int32 a = 1; string b = 2; bool c = 3; }",
        );
        let target = message("dst", "message M { int32 a = 5; bytes b = 2; bool c = 3; }");
        let found = check(&source, &target, "/event");
        let paths: Vec<&str> = found
            .iter()
            .map(|mismatch| mismatch.path.as_str())
            .collect();
        assert_eq!(paths, ["/event/a", "/event/b"], "{found:?}");
        assert_eq!(
            found[1].to_string(),
            "at /event/b: expected bytes (field 2), found string (field 2)"
        );
    }
}
