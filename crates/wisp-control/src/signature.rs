//! Signatures (`/wisp/v1/functions/{name}/signature`): the JSON Schema types of a function's input and
//! output. A signature is part of `$LATEST` ([`StoredVersion::signature`]): setting it gives `$LATEST` a new
//! `RevisionId`, and publishing copies it into the version, where it never changes. Schemas are compiled
//! once per resolution ([`Resolved::signature_of`]), so the invoke path only validates.

use std::sync::Arc;

use wisp_types::*;

use crate::{ControlPlane, Resolved, lifecycle};

/// Most violations listed in one error; the rest are counted.
const MAX_VIOLATIONS: usize = 10;

/// A signature with its schemas compiled.
pub struct CompiledSignature {
    input: Option<jsonschema::Validator>,
    output: Option<jsonschema::Validator>,
}

impl std::fmt::Debug for CompiledSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSignature")
            .field("input", &self.input.is_some())
            .field("output", &self.output.is_some())
            .finish()
    }
}

/// Which side of a signature a document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Input => "input",
            Side::Output => "output",
        }
    }
}

impl CompiledSignature {
    pub fn compile(signature: &Signature) -> Result<CompiledSignature, ApiError> {
        Ok(CompiledSignature {
            input: signature
                .input
                .as_ref()
                .map(|spec| compile(spec, Side::Input))
                .transpose()?,
            output: signature
                .output
                .as_ref()
                .map(|spec| compile(spec, Side::Output))
                .transpose()?,
        })
    }

    pub fn has(&self, side: Side) -> bool {
        self.validator(side).is_some()
    }

    fn validator(&self, side: Side) -> Option<&jsonschema::Validator> {
        match side {
            Side::Input => self.input.as_ref(),
            Side::Output => self.output.as_ref(),
        }
    }

    /// Checks a JSON document (already known to parse) against one side; empty when it conforms or
    /// the side has no type. An empty body is checked as `{}`, which is what the function receives.
    pub fn violations(&self, side: Side, document: &[u8]) -> Vec<Violation> {
        let Some(validator) = self.validator(side) else {
            return Vec::new();
        };
        let value: serde_json::Value = if document.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            match serde_json::from_slice(document) {
                Ok(value) => value,
                Err(error) => {
                    return vec![Violation {
                        pointer: String::new(),
                        rule: String::new(),
                        message: format!("not JSON: {error}"),
                    }];
                }
            }
        };
        if validator.is_valid(&value) {
            return Vec::new();
        }
        validator
            .iter_errors(&value)
            .take(MAX_VIOLATIONS + 1)
            .map(|error| Violation {
                pointer: error.instance_path().to_string(),
                rule: error.schema_path().to_string(),
                message: error.to_string(),
            })
            .collect()
    }
}

/// One sentence naming the first violations of a document, e.g.
/// `input does not match the function's input schema: at /age: "5" is not of type "integer" (rule /properties/age/type)`.
pub fn describe(side: Side, violations: &[Violation]) -> String {
    let mut shown: Vec<String> = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(ToString::to_string)
        .collect();
    if violations.len() > MAX_VIOLATIONS {
        shown.push("and more".to_string());
    }
    format!(
        "{} does not match the function's {} schema: {}",
        side.name(),
        side.name(),
        shown.join("; ")
    )
}

fn compile(spec: &TypeSpec, side: Side) -> Result<jsonschema::Validator, ApiError> {
    match spec {
        TypeSpec::JsonSchema(schema) => {
            // Draft 2020-12 unless the document's `$schema` names another; no remote references
            // are fetched (the crate is built without them), so a `$ref` must point inside the document.
            jsonschema::options().build(schema).map_err(|error| {
                ApiError::invalid(format!(
                    "the {} schema is not a valid JSON Schema: {error}",
                    side.name()
                ))
            })
        }
    }
}

impl Resolved {
    /// The compiled signature of `version` (one this resolution picked), if it has one.
    pub fn signature_of(&self, version: &Arc<StoredVersion>) -> Option<&CompiledSignature> {
        if Arc::ptr_eq(version, &self.primary) {
            return self.signatures.0.as_deref();
        }
        match &self.additional {
            Some((additional, _)) if Arc::ptr_eq(version, additional) => {
                self.signatures.1.as_deref()
            }
            _ => None,
        }
    }
}

/// The compiled signatures of a resolution's primary and additional versions.
#[derive(Debug, Default)]
pub struct Signatures(
    pub(crate) Option<Arc<CompiledSignature>>,
    pub(crate) Option<Arc<CompiledSignature>>,
);

impl Signatures {
    pub(crate) fn of(
        primary: &StoredVersion,
        additional: Option<&StoredVersion>,
    ) -> Result<Signatures, ApiError> {
        let compile_stored = |version: &StoredVersion| {
            version
                .signature
                .as_ref()
                .map(|signature| CompiledSignature::compile(signature).map(Arc::new))
                .transpose()
                .map_err(|error| {
                    ApiError::internal(format!(
                        "the stored signature of {} no longer compiles: {}",
                        version.config.function_arn, error.message
                    ))
                })
        };
        Ok(Signatures(
            compile_stored(primary)?,
            additional.map(compile_stored).transpose()?.flatten(),
        ))
    }
}

impl ControlPlane {
    /// Sets the signature of `$LATEST` (an empty one removes it); published versions keep theirs.
    pub async fn put_signature(
        &self,
        account: &AccountId,
        name: &str,
        signature: Signature,
        revision_id: Option<String>,
    ) -> Result<Option<Signature>, ApiError> {
        CompiledSignature::compile(&signature)?;
        let signature = (!signature.is_empty()).then_some(signature);
        let mut before = None;
        let config = self
            .modify_function(account, name, |function| {
                crate::check_revision(
                    &function.latest.config.revision_id,
                    revision_id.as_deref(),
                    "function",
                )?;
                before = function.latest.signature.clone();
                function.latest.signature = signature.clone();
                crate::touch(&mut function.latest.config);
                Ok(function.latest.config.clone())
            })
            .await?;
        self.announce(
            account,
            lifecycle::EventType::SignatureChanged,
            config.function_arn,
            before.as_ref().and_then(lifecycle::snapshot),
            signature.as_ref().and_then(lifecycle::snapshot),
        )
        .await?;
        Ok(signature)
    }

    /// The signature of `$LATEST` or of a published version (`None`: it has none).
    pub async fn get_signature(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
    ) -> Result<Option<Signature>, ApiError> {
        let reference = FunctionRef {
            account: None,
            region: None,
            name: name.to_string(),
            qualifier: None,
        };
        let resolved = self.resolve(account, &reference, qualifier).await?;
        Ok(resolved.primary.signature.clone())
    }
}
