//! A function's signature: the type of the event it accepts and of the result it returns.
//!
//! A signature belongs to `$LATEST` and is copied into each published version, where it never changes.
//! Each side is optional; a side that is absent is not checked. Types are JSON Schema documents
//! (draft 2020-12) for now; the enum leaves room for protobuf messages.

use serde::{Deserialize, Serialize};

/// The input and output types of a function version, as `/wisp/v1/functions/{name}/signature` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<TypeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<TypeSpec>,
}

impl Signature {
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }
}

/// One side of a signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum TypeSpec {
    /// A JSON Schema document; draft 2020-12 unless its `$schema` names another draft.
    JsonSchema(serde_json::Value),
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
