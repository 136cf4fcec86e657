//! Signatures (`/wisp/v1/functions/{name}/signature`): the JSON Schema types of a function's input and
//! output. A signature is part of `$LATEST` ([`StoredVersion::signature`]): setting it gives `$LATEST` a new
//! `RevisionId`, and publishing copies it into the version, where it never changes. Schemas are compiled
//! once per resolution ([`Resolved::signature_of`]), so the invoke path only validates.

use std::sync::Arc;

use wisp_types::*;

use crate::protobuf::CompiledMessage;
use crate::{ControlPlane, Resolved, lifecycle};

/// Most violations listed in one error; the rest are counted.
const MAX_VIOLATIONS: usize = 10;

/// A signature with its types compiled.
pub struct CompiledSignature {
    input: Option<Checker>,
    output: Option<Checker>,
    grpc_method: Option<prost_reflect::MethodDescriptor>,
}

/// One compiled side.
enum Checker {
    Schema(Box<jsonschema::Validator>),
    Message(CompiledMessage),
}

impl std::fmt::Debug for CompiledSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSignature")
            .field("input", &self.input.is_some())
            .field("output", &self.output.is_some())
            .field(
                "grpc_method",
                &self.grpc_method.as_ref().map(|method| method.full_name()),
            )
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
        let input = signature
            .input
            .as_ref()
            .map(|spec| compile(spec, Side::Input))
            .transpose()?;
        let output = signature
            .output
            .as_ref()
            .map(|spec| compile(spec, Side::Output))
            .transpose()?;
        let grpc_method = match &signature.grpc_method {
            None => None,
            Some(name) => Some(grpc_method(name, input.as_ref(), output.as_ref())?),
        };
        Ok(CompiledSignature {
            input,
            output,
            grpc_method,
        })
    }

    pub fn has(&self, side: Side) -> bool {
        self.validator(side).is_some()
    }

    fn validator(&self, side: Side) -> Option<&Checker> {
        match side {
            Side::Input => self.input.as_ref(),
            Side::Output => self.output.as_ref(),
        }
    }

    /// The protobuf message of one side, when that side is a protobuf type.
    pub fn message(&self, side: Side) -> Option<&CompiledMessage> {
        match self.validator(side)? {
            Checker::Message(message) => Some(message),
            Checker::Schema(_) => None,
        }
    }

    /// The protobuf message of one side when the function takes or gives it in binary
    /// ([`ProtobufEncoding::Binary`]).
    pub fn binary(&self, side: Side) -> Option<&CompiledMessage> {
        self.message(side)
            .filter(|message| message.encoding == ProtobufEncoding::Binary)
    }

    /// The gRPC method the function serves, if its signature names one.
    pub fn grpc_method(&self) -> Option<&prost_reflect::MethodDescriptor> {
        self.grpc_method.as_ref()
    }

    /// Whether the function answers with a sequence of output messages (its gRPC method is
    /// server-streaming): newline-delimited JSON, or length-delimited binary protobuf.
    pub fn streams_output(&self) -> bool {
        self.grpc_method
            .as_ref()
            .is_some_and(|method| method.is_server_streaming())
    }

    /// Checks a JSON document against one side; empty when it conforms or the side has no type.
    /// An empty body is checked as `{}`, which is what the function receives.
    pub fn violations(&self, side: Side, document: &[u8]) -> Vec<Violation> {
        if self.validator(side).is_none() {
            return Vec::new();
        }
        match parse_event(document) {
            Ok(value) => self.violations_of(side, &value),
            Err(error) => vec![Violation {
                pointer: String::new(),
                rule: String::new(),
                message: format!("not JSON: {error}"),
            }],
        }
    }

    /// The violations of a result that is a sequence of output messages, one JSON document per line
    /// ([`CompiledSignature::streams_output`]); each names the message's index in its pointer.
    pub fn sequence_violations(&self, document: &[u8]) -> Vec<Violation> {
        let Some(Checker::Message(message)) = &self.output else {
            return Vec::new();
        };
        crate::protobuf::json_lines(document)
            .enumerate()
            .filter_map(|(index, line)| {
                message.from_json(line).err().map(|mut violation| {
                    violation.pointer = format!("/{index}{}", violation.pointer);
                    violation
                })
            })
            .take(MAX_VIOLATIONS + 1)
            .collect()
    }

    /// [`CompiledSignature::violations`] of a parsed document.
    pub fn violations_of(&self, side: Side, value: &serde_json::Value) -> Vec<Violation> {
        let validator = match self.validator(side) {
            None => return Vec::new(),
            Some(Checker::Message(message)) => return message.violations_of(value),
            Some(Checker::Schema(validator)) => validator,
        };
        if validator.is_valid(value) {
            return Vec::new();
        }
        validator
            .iter_errors(value)
            .take(MAX_VIOLATIONS + 1)
            .map(|error| Violation {
                pointer: error.instance_path().to_string(),
                rule: error.schema_path().to_string(),
                message: error.to_string(),
            })
            .collect()
    }
}

/// The JSON Schema a side accepts, for the static wiring check: the schema itself, or what maps onto
/// the protobuf message.
pub fn accepted_schema(spec: &TypeSpec) -> Result<serde_json::Value, ApiError> {
    match spec {
        TypeSpec::JsonSchema(schema) => Ok(schema.clone()),
        TypeSpec::Protobuf(message) => Ok(crate::protobuf::accepted_schema(
            &CompiledMessage::compile(message)?.descriptor,
        )),
    }
}

/// An event as the function sees it: an empty body is `{}`.
pub fn parse_event(document: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    if document.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_json::from_slice(document)
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

fn compile(spec: &TypeSpec, side: Side) -> Result<Checker, ApiError> {
    match spec {
        TypeSpec::JsonSchema(schema) => {
            // Draft 2020-12 unless the document's `$schema` names another; no remote references
            // are fetched (the crate is built without them), so a `$ref` must point inside the document.
            let validator = jsonschema::options().build(schema).map_err(|error| {
                ApiError::invalid(format!(
                    "the {} schema is not a valid JSON Schema: {error}",
                    side.name()
                ))
            })?;
            Ok(Checker::Schema(Box::new(validator)))
        }
        TypeSpec::Protobuf(message) => CompiledMessage::compile(message)
            .map(Checker::Message)
            .map_err(|error| {
                ApiError::invalid(format!("the {} type: {}", side.name(), error.message))
            }),
    }
}

/// Finds `package.Service/Method` among the input's `.proto` files and checks that it takes the input
/// message and returns the output message.
fn grpc_method(
    name: &str,
    input: Option<&Checker>,
    output: Option<&Checker>,
) -> Result<prost_reflect::MethodDescriptor, ApiError> {
    let (Some(Checker::Message(input)), Some(Checker::Message(output))) = (input, output) else {
        return Err(ApiError::invalid(format!(
            "GrpcMethod {name:?} needs protobuf messages on both sides (Input and Output)"
        )));
    };
    let method = crate::protobuf::find_method(input.pool(), name).ok_or_else(|| {
        let declared: Vec<String> = input
            .pool()
            .services()
            .flat_map(|service| {
                service
                    .methods()
                    .map(|method| crate::grpc::grpc_name(&method))
                    .collect::<Vec<_>>()
            })
            .collect();
        ApiError::invalid(format!(
            "GrpcMethod {name:?} is not declared in the input's .proto files (expected package.Service/Method); declared: {}",
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        ))
    })?;
    if method.is_client_streaming() {
        return Err(ApiError::invalid(format!(
            "GrpcMethod {name:?} takes a stream of requests; a function can serve unary and server-streaming methods only"
        )));
    }
    for (what, declared, expected) in [
        ("takes", method.input(), &input.descriptor),
        ("returns", method.output(), &output.descriptor),
    ] {
        if declared.full_name() != expected.full_name() {
            return Err(ApiError::invalid(format!(
                "GrpcMethod {name:?} {what} {}, but the signature's message is {}",
                declared.full_name(),
                expected.full_name()
            )));
        }
    }
    Ok(method)
}

/// One route with its signature compiled.
#[derive(Debug)]
pub struct CompiledRoute {
    pub name: String,
    pub rule: RouteMatch,
    pub handler: String,
    pub signature: Option<CompiledSignature>,
}

/// What a version declares about its events: its signature and its routes, compiled.
#[derive(Debug)]
pub struct Typed {
    pub signature: Option<CompiledSignature>,
    pub routes: Vec<CompiledRoute>,
}

impl Typed {
    fn compile(version: &StoredVersion) -> Result<Option<Typed>, ApiError> {
        if version.signature.is_none() && version.routes.is_empty() {
            return Ok(None);
        }
        let signature = version
            .signature
            .as_ref()
            .map(CompiledSignature::compile)
            .transpose()?;
        let routes = version
            .routes
            .iter()
            .map(|route| {
                Ok(CompiledRoute {
                    name: route.name.clone(),
                    rule: route.rule.clone(),
                    handler: route.handler.clone(),
                    signature: route
                        .signature
                        .as_ref()
                        .map(CompiledSignature::compile)
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Some(Typed { signature, routes }))
    }

    /// The first route an event matches: `Ok(None)` when the version has no routes, an error that
    /// lists them when it has some and none matches.
    pub fn route(&self, event: &serde_json::Value) -> Result<Option<&CompiledRoute>, ApiError> {
        if self.routes.is_empty() {
            return Ok(None);
        }
        if let Some(route) = self.routes.iter().find(|route| route.rule.matches(event)) {
            return Ok(Some(route));
        }
        let listed: Vec<String> = self
            .routes
            .iter()
            .map(|route| {
                format!(
                    "{} {} -> {}",
                    route.name,
                    serde_json::to_string(&route.rule).unwrap_or_default(),
                    route.handler
                )
            })
            .collect();
        Err(ApiError::new(
            ErrorCode::NoMatchingRoute,
            format!(
                "the event matches none of the function's routes: {}",
                listed.join("; ")
            ),
        ))
    }

    /// The signature an event taking `route` is checked against: the route's, else the version's.
    pub fn signature_for<'a>(
        &'a self,
        route: Option<&'a CompiledRoute>,
    ) -> Option<&'a CompiledSignature> {
        route
            .and_then(|route| route.signature.as_ref())
            .or(self.signature.as_ref())
    }
}

impl Resolved {
    /// The compiled signature and routes of `version` (one this resolution picked), if it has any.
    pub fn typed_of(&self, version: &Arc<StoredVersion>) -> Option<&Typed> {
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

/// The compiled signatures and routes of a resolution's primary and additional versions.
#[derive(Debug, Default)]
pub struct Signatures(pub(crate) Option<Arc<Typed>>, pub(crate) Option<Arc<Typed>>);

impl Signatures {
    pub(crate) fn of(
        primary: &StoredVersion,
        additional: Option<&StoredVersion>,
    ) -> Result<Signatures, ApiError> {
        let compile_stored = |version: &StoredVersion| {
            Typed::compile(version)
                .map(|typed| typed.map(Arc::new))
                .map_err(|error| {
                    ApiError::internal(format!(
                        "the stored signature or routes of {} no longer compile: {}",
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
        if let Some(method) = &signature.grpc_method {
            self.check_grpc_method_free(account, name, method).await?;
        }
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
        let method_of = |signature: &Option<Signature>| {
            signature
                .as_ref()
                .and_then(|signature| signature.grpc_method.clone())
        };
        self.index_grpc_method(
            account,
            name,
            method_of(&before).as_deref(),
            method_of(&signature).as_deref(),
        )
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

    /// Resolves a function of the account by its bare name and a qualifier.
    pub(crate) async fn resolve_by_name(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
    ) -> Result<Arc<Resolved>, ApiError> {
        let reference = FunctionRef {
            account: None,
            region: None,
            name: name.to_string(),
            qualifier: None,
        };
        self.resolve(account, &reference, qualifier).await
    }

    /// Sets the routes of `$LATEST` (empty removes them); published versions keep theirs.
    pub async fn put_routes(
        &self,
        account: &AccountId,
        name: &str,
        routes: Vec<Route>,
        revision_id: Option<String>,
    ) -> Result<Vec<Route>, ApiError> {
        validate_routes(&routes)?;
        let mut before = Vec::new();
        let config = self
            .modify_function(account, name, |function| {
                crate::check_revision(
                    &function.latest.config.revision_id,
                    revision_id.as_deref(),
                    "function",
                )?;
                before = function.latest.routes.clone();
                function.latest.routes = routes.clone();
                crate::touch(&mut function.latest.config);
                Ok(function.latest.config.clone())
            })
            .await?;
        self.announce(
            account,
            lifecycle::EventType::RoutesChanged,
            config.function_arn,
            (!before.is_empty()).then(|| serde_json::json!({ "Routes": before })),
            (!routes.is_empty()).then(|| serde_json::json!({ "Routes": routes })),
        )
        .await?;
        Ok(routes)
    }

    /// The routes of `$LATEST` or of a published version or alias.
    pub async fn get_routes(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
    ) -> Result<Vec<Route>, ApiError> {
        let resolved = self.resolve_by_name(account, name, qualifier).await?;
        Ok(resolved.primary.routes.clone())
    }

    /// The signature of `$LATEST` or of a published version (`None`: it has none).
    pub async fn get_signature(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
    ) -> Result<Option<Signature>, ApiError> {
        let resolved = self.resolve_by_name(account, name, qualifier).await?;
        Ok(resolved.primary.signature.clone())
    }
}

/// Most routes a function may declare.
pub const MAX_ROUTES: usize = 64;

fn validate_routes(routes: &[Route]) -> Result<(), ApiError> {
    if routes.len() > MAX_ROUTES {
        return Err(ApiError::invalid(format!(
            "{} routes given; a function has at most {MAX_ROUTES}",
            routes.len()
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    for route in routes {
        let name = &route.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ApiError::invalid(format!(
                "route name {name:?} must be 1 to 64 letters, digits, - or _"
            )));
        }
        if !names.insert(name.as_str()) {
            return Err(ApiError::invalid(format!(
                "route name {name:?} is used twice"
            )));
        }
        route.rule.validate(name)?;
        if route
            .signature
            .as_ref()
            .is_some_and(|signature| signature.grpc_method.is_some())
        {
            return Err(ApiError::invalid(format!(
                "route {name:?}: a route's signature cannot name a GrpcMethod; bind the method in the function's own signature"
            )));
        }
        if route.handler.trim().is_empty() || route.handler.len() > 128 {
            return Err(ApiError::invalid(format!(
                "route {name:?}: Handler must be 1 to 128 characters"
            )));
        }
        if let Some(signature) = &route.signature {
            CompiledSignature::compile(signature)
                .map_err(|error| ApiError::invalid(format!("route {name:?}: {}", error.message)))?;
        }
    }
    Ok(())
}
