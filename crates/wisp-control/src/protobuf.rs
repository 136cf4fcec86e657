//! Protobuf types of signatures: `.proto` files compiled at set time without `protoc` (`protox`),
//! messages checked and converted at run time through `prost-reflect`'s dynamic messages.
//!
//! A function with a protobuf type receives and returns protobuf's JSON mapping; a JSON document
//! conforms when it maps onto the message with no unknown field. The gRPC gateway (`wisp-api`)
//! uses the same descriptors to turn binary requests into that JSON and results back into binary.
//! Nothing here touches the store or the network.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, MethodDescriptor,
    SerializeOptions,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use wisp_types::{ApiError, ProtobufEncoding, ProtobufType, Violation};

/// The `.proto` files a signature uploaded, served to `protox` by name.
struct UploadedFiles(BTreeMap<String, String>);

impl FileResolver for UploadedFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// Compiles a set of `.proto` files (and the well-known types they import) into one pool.
pub fn compile_files(files: &BTreeMap<String, String>) -> Result<DescriptorPool, ApiError> {
    if files.is_empty() {
        return Err(ApiError::invalid(
            "a protobuf type needs at least one .proto file in Files",
        ));
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(UploadedFiles(files.clone()));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_files(files.keys()).map_err(|error| {
        ApiError::invalid(format!(
            "the .proto files do not compile: {}{error}",
            location(&error, files)
        ))
    })?;
    Ok(compiler.descriptor_pool())
}

/// `file.proto:LINE:COLUMN: ` of a compile error, when it points into an uploaded file.
fn location(error: &protox::Error, files: &BTreeMap<String, String>) -> String {
    use miette::Diagnostic as _;
    let Some(name) = error.file() else {
        return String::new();
    };
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    match (files.get(name), offset) {
        (Some(source), Some(offset)) if offset <= source.len() => {
            let before = &source[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("{name}:{line}:{column}: ")
        }
        _ => format!("{name}: "),
    }
}

/// A compiled protobuf type: the message and the pool that declares it.
#[derive(Debug, Clone)]
pub struct CompiledMessage {
    pub descriptor: MessageDescriptor,
    /// How the function receives or returns the message.
    pub encoding: ProtobufEncoding,
}

impl CompiledMessage {
    pub fn compile(spec: &ProtobufType) -> Result<CompiledMessage, ApiError> {
        let pool = compile_files(&spec.files)?;
        let descriptor = pool.get_message_by_name(&spec.message).ok_or_else(|| {
            let known: Vec<String> = pool
                .all_messages()
                .filter(|message| !message.full_name().starts_with("google.protobuf."))
                .map(|message| message.full_name().to_string())
                .take(20)
                .collect();
            ApiError::invalid(format!(
                "message {:?} is not declared in the .proto files (give its full name, package.Message); declared: {}",
                spec.message,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        Ok(CompiledMessage {
            descriptor,
            encoding: spec.encoding,
        })
    }

    pub fn pool(&self) -> &DescriptorPool {
        self.descriptor.parent_pool()
    }

    /// Why a JSON document does not map onto the message (empty when it does).
    pub fn violations(&self, document: &[u8]) -> Vec<Violation> {
        match self.from_json(document) {
            Ok(_) => Vec::new(),
            Err(violation) => vec![violation],
        }
    }

    /// [`CompiledMessage::violations`] of a parsed document.
    pub fn violations_of(&self, value: &serde_json::Value) -> Vec<Violation> {
        match self.map(value) {
            Ok(_) => Vec::new(),
            Err(violation) => vec![violation],
        }
    }

    /// Parses protobuf's JSON mapping (unknown fields refused; an empty document is `{}`).
    pub fn from_json(&self, document: &[u8]) -> Result<DynamicMessage, Violation> {
        let document: &[u8] = if document.is_empty() { b"{}" } else { document };
        let mut deserializer = serde_json::Deserializer::from_slice(document);
        let message = self.map(&mut deserializer)?;
        deserializer
            .end()
            .map_err(|error| self.violation(String::new(), error.to_string()))?;
        Ok(message)
    }

    /// Maps JSON onto the message, naming where it failed.
    fn map<'de, D>(&self, deserializer: D) -> Result<DynamicMessage, Violation>
    where
        D: serde::Deserializer<'de>,
    {
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        DynamicMessage::deserialize_with_options(self.descriptor.clone(), tracked, &options)
            .map_err(|error| {
                let message = error.to_string();
                let mut pointer = json_pointer(&track.path());
                // An unknown field fails before serde descends into it: name it in the pointer.
                if let Some(field) = message
                    .strip_prefix("unrecognized field name '")
                    .and_then(|rest| rest.split_once('\'').map(|(field, _)| field))
                {
                    pointer.push('/');
                    pointer.push_str(&field.replace('~', "~0").replace('/', "~1"));
                }
                self.violation(pointer, message)
            })
    }

    fn violation(&self, pointer: String, message: String) -> Violation {
        Violation {
            pointer,
            rule: self.descriptor.full_name().to_string(),
            message,
        }
    }

    /// The function's binary form of a JSON document that maps onto the message.
    pub fn json_to_binary(&self, document: &[u8]) -> Result<Vec<u8>, Violation> {
        self.from_json(document).map(|message| to_binary(&message))
    }

    /// The JSON mapping of a binary message the function returned, as callers see it; a violation
    /// when the bytes are not a valid message of this type.
    pub fn binary_to_json(&self, bytes: &[u8]) -> Result<Vec<u8>, Violation> {
        DynamicMessage::decode(self.descriptor.clone(), bytes)
            .map(|message| to_json(&message))
            .map_err(|error| {
                let message = format!(
                    "not a valid binary {}: {error}",
                    self.descriptor.full_name()
                );
                self.violation(String::new(), message)
            })
    }

    /// Decodes binary protobuf.
    pub fn decode(&self, bytes: &[u8]) -> Result<DynamicMessage, String> {
        DynamicMessage::decode(self.descriptor.clone(), bytes).map_err(|error| {
            format!(
                "the request is not a valid {}: {error}",
                self.descriptor.full_name()
            )
        })
    }
}

/// The JSON Schema of the documents that map onto `message` (protobuf's JSON mapping): an object closed
/// to fields the message does not have, under either name; no field required; 32- and 64-bit integers
/// as integers or strings, floats as numbers or strings, enums by name or number, `null` anywhere a
/// field may be. Used as the accepting side of the static wiring check (`compat.rs`); well-known
/// types and messages nested deeper than eight levels accept any value.
pub fn accepted_schema(message: &MessageDescriptor) -> serde_json::Value {
    message_schema(message, 0)
}

fn message_schema(message: &MessageDescriptor, depth: usize) -> serde_json::Value {
    use serde_json::json;
    if depth > 8 || message.full_name().starts_with("google.protobuf.") {
        return json!({});
    }
    let mut properties = serde_json::Map::new();
    for field in message.fields() {
        let value = if field.is_map() {
            let entry = match field.kind() {
                prost_reflect::Kind::Message(entry) => entry,
                _ => unreachable!("a map field's kind is its entry message"),
            };
            json!({
                "type": "object",
                "additionalProperties": kind_schema(&entry.map_entry_value_field().kind(), depth),
            })
        } else if field.is_list() {
            json!({ "type": "array", "items": kind_schema(&field.kind(), depth) })
        } else {
            kind_schema(&field.kind(), depth)
        };
        let value = with_null(value);
        properties.insert(field.name().to_string(), value.clone());
        properties.insert(field.json_name().to_string(), value);
    }
    json!({ "type": "object", "properties": properties, "additionalProperties": false })
}

fn kind_schema(kind: &prost_reflect::Kind, depth: usize) -> serde_json::Value {
    use prost_reflect::Kind;
    use serde_json::json;
    match kind {
        Kind::Double | Kind::Float => json!({ "type": ["number", "string"] }),
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Uint32
        | Kind::Fixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64
        | Kind::Uint64
        | Kind::Fixed64 => json!({ "type": ["integer", "string"] }),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String | Kind::Bytes => json!({ "type": "string" }),
        Kind::Message(message) => message_schema(message, depth + 1),
        Kind::Enum(enumeration) => {
            let mut values: Vec<serde_json::Value> = enumeration
                .values()
                .map(|value| json!(value.name()))
                .collect();
            values.extend(enumeration.values().map(|value| json!(value.number())));
            json!({ "enum": values })
        }
    }
}

/// The same schema, also accepting `null` (a field set to `null` means its default).
fn with_null(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(kind) = schema.get_mut("type") {
        let mut kinds = match kind.take() {
            serde_json::Value::Array(kinds) => kinds,
            single => vec![single],
        };
        kinds.push("null".into());
        *kind = serde_json::Value::Array(kinds);
    } else if let Some(serde_json::Value::Array(values)) = schema.get_mut("enum") {
        values.push(serde_json::Value::Null);
    }
    schema
}

/// The JSON a function receives for a message: protobuf's JSON mapping (lowerCamelCase names,
/// 64-bit integers as strings, enums by name), with fields at their default values included, so a
/// function need not know proto3's defaults.
pub fn to_json(message: &DynamicMessage) -> Vec<u8> {
    let mut serializer = serde_json::Serializer::new(Vec::new());
    let options = SerializeOptions::new().skip_default_fields(false);
    message
        .serialize_with_options(&mut serializer, &options)
        .expect("a dynamic message serialises to JSON");
    serializer.into_inner()
}

/// Binary protobuf of a message.
pub fn to_binary(message: &DynamicMessage) -> Vec<u8> {
    message.encode_to_vec()
}

/// The messages of a server-streaming function's JSON result: one document per line, blank lines
/// skipped.
pub fn json_lines(document: &[u8]) -> impl Iterator<Item = &[u8]> {
    document
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.trim_ascii().is_empty())
}

/// The messages of one line of a server-streaming function's JSON result: the line itself, or each
/// element when the line is a JSON array (a buffered handler may return its messages as a list).
pub fn line_messages(line: &[u8]) -> Result<Vec<Vec<u8>>, Violation> {
    if !line.trim_ascii_start().starts_with(b"[") {
        return Ok(vec![line.to_vec()]);
    }
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(line).map_err(|error| Violation {
            pointer: String::new(),
            rule: String::new(),
            message: format!("not a JSON array of messages: {error}"),
        })?;
    Ok(items
        .iter()
        .map(|item| item.to_string().into_bytes())
        .collect())
}

/// Takes one length-delimited message (a varint length, then the bytes, as protobuf's
/// `writeDelimitedTo` writes them) from the front of `buffer`: `Ok(None)` until a whole one is there.
pub fn take_delimited(
    buffer: &mut prost::bytes::Bytes,
) -> Result<Option<prost::bytes::Bytes>, String> {
    let mut length: u64 = 0;
    for (index, byte) in buffer.iter().take(10).enumerate() {
        length |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let start = index + 1;
            let Some(end) = usize::try_from(length)
                .ok()
                .and_then(|length| start.checked_add(length))
            else {
                return Err(format!("a message length of {length} bytes is too large"));
            };
            if buffer.len() < end {
                return Ok(None);
            }
            let message = buffer.slice(start..end);
            *buffer = buffer.slice(end..);
            return Ok(Some(message));
        }
    }
    if buffer.len() >= 10 {
        return Err("a message length is not a valid varint".to_string());
    }
    Ok(None)
}

/// The length-delimited binary form of a sequence of messages.
pub fn delimited(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        prost::encoding::encode_varint(message.len() as u64, &mut out);
        out.extend_from_slice(message);
    }
    out
}

/// Finds `package.Service/Method` in a pool.
pub fn find_method(pool: &DescriptorPool, grpc_method: &str) -> Option<MethodDescriptor> {
    let (service, method) = grpc_method.split_once('/')?;
    pool.get_service_by_name(service)?
        .methods()
        .find(|candidate| candidate.name() == method)
}

/// The path serde reported, as a JSON pointer (`/items/0/name`).
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: &str = r#"
        syntax = "proto3";
        package orders;
        import "google/protobuf/timestamp.proto";
        message Line { string sku = 1; int32 quantity = 2; }
        message PlaceRequest {
            string customer_id = 1;
            repeated Line lines = 2;
            google.protobuf.Timestamp at = 3;
        }
        message PlaceReply { int64 total = 1; }
        service Orders { rpc Place(PlaceRequest) returns (PlaceReply); }
    "#;

    fn spec(message: &str) -> ProtobufType {
        ProtobufType {
            files: BTreeMap::from([("orders.proto".to_string(), ORDERS.to_string())]),
            message: message.to_string(),
            encoding: Default::default(),
        }
    }

    #[test]
    fn a_message_compiles_with_well_known_imports() {
        let compiled = CompiledMessage::compile(&spec("orders.PlaceRequest")).unwrap();
        assert!(find_method(compiled.pool(), "orders.Orders/Place").is_some());
        assert!(find_method(compiled.pool(), "orders.Orders/Cancel").is_none());
    }

    #[test]
    fn an_unknown_message_is_refused_with_the_declared_ones() {
        let error = CompiledMessage::compile(&spec("orders.Missing")).unwrap_err();
        assert!(
            error.message.contains("orders.PlaceRequest"),
            "{}",
            error.message
        );
    }

    #[test]
    fn invalid_proto_is_refused() {
        let mut broken = spec("orders.PlaceRequest");
        broken.files.insert(
            "orders.proto".into(),
            "syntax = \"proto3\"; message {".into(),
        );
        let error = CompiledMessage::compile(&broken).unwrap_err();
        assert!(
            error.message.contains("do not compile"),
            "{}",
            error.message
        );
    }

    #[test]
    fn json_is_checked_with_a_pointer() {
        let compiled = CompiledMessage::compile(&spec("orders.PlaceRequest")).unwrap();
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"customerId": "c1", "lines": [{"sku": "a", "quantity": 2}]}"#,
                None,
            ),
            (r#"{"customer_id": "c1"}"#, None),
            ("", None),
            (
                r#"{"lines": [{"sku": "a", "quantity": "many"}]}"#,
                Some("/lines/0/quantity"),
            ),
            (r#"{"customerId": 5}"#, Some("/customerId")),
        ];
        for (document, pointer) in cases {
            let violations = compiled.violations(document.as_bytes());
            match pointer {
                None => assert!(violations.is_empty(), "{document}: {violations:?}"),
                Some(pointer) => {
                    assert_eq!(violations.len(), 1, "{document}");
                    assert_eq!(
                        &violations[0].pointer, pointer,
                        "{document}: {violations:?}"
                    );
                }
            }
        }
        let unknown = compiled.violations(br#"{"lines": [{"colour": "red"}]}"#);
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[0].pointer, "/lines/0/colour", "{unknown:?}");
    }

    #[test]
    fn the_accepted_schema_matches_what_maps_onto_the_message() {
        let compiled = CompiledMessage::compile(&spec("orders.PlaceRequest")).unwrap();
        let schema = accepted_schema(&compiled.descriptor);
        let validator = jsonschema::validator_for(&schema).unwrap();
        for document in [
            r#"{"customerId": "c1", "lines": [{"sku": "a", "quantity": 2}]}"#,
            r#"{"customer_id": "c1", "lines": [{"quantity": "2"}], "at": "2026-01-01T00:00:00Z"}"#,
            r#"{"customerId": null}"#,
            r#"{"lines": [{"colour": "red"}]}"#,
            r#"{"customerId": 5}"#,
            r#"{"extra": 1}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(document).unwrap();
            assert_eq!(
                validator.is_valid(&value),
                compiled.violations_of(&value).is_empty(),
                "{document}"
            );
        }
    }

    #[test]
    fn delimited_messages_are_taken_whole() {
        let long = vec![7u8; 300];
        let mut buffer = prost::bytes::Bytes::from(delimited(&[b"ab".to_vec(), long.clone()]));
        assert_eq!(take_delimited(&mut buffer).unwrap().unwrap(), &b"ab"[..]);
        let mut partial = buffer.slice(..buffer.len() - 1);
        assert!(take_delimited(&mut partial).unwrap().is_none());
        assert_eq!(take_delimited(&mut buffer).unwrap().unwrap(), &long[..]);
        assert!(take_delimited(&mut buffer).unwrap().is_none());
        let mut broken = prost::bytes::Bytes::from(vec![0xff; 11]);
        assert!(take_delimited(&mut broken).is_err());
    }

    #[test]
    fn an_array_line_holds_one_message_per_element() {
        assert_eq!(
            line_messages(br#"[{"a": 1}, {}]"#).unwrap(),
            vec![br#"{"a":1}"#.to_vec(), b"{}".to_vec()]
        );
        assert_eq!(line_messages(b"{}").unwrap(), vec![b"{}".to_vec()]);
        assert!(line_messages(b"[1,").is_err());
    }

    #[test]
    fn json_lines_skip_blank_lines() {
        let lines: Vec<&[u8]> = json_lines(b"{}\n\n  \n{\"a\":1}").collect();
        assert_eq!(lines, vec![&b"{}"[..], &b"{\"a\":1}"[..]]);
    }

    #[test]
    fn binary_round_trips_through_json() {
        let compiled = CompiledMessage::compile(&spec("orders.PlaceRequest")).unwrap();
        let message = compiled
            .from_json(br#"{"customerId": "c1", "lines": [{"sku": "a", "quantity": 2}]}"#)
            .unwrap();
        let decoded = compiled.decode(&to_binary(&message)).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&to_json(&decoded)).unwrap();
        assert_eq!(json["customerId"], "c1");
        assert_eq!(json["lines"][0]["quantity"], 2);
    }
}
