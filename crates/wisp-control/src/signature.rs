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
    /// or a JSON array of them ([`CompiledSignature::streams_output`]); each names the message's
    /// index in its pointer.
    pub fn sequence_violations(&self, document: &[u8]) -> Vec<Violation> {
        let Some(Checker::Message(message)) = &self.output else {
            return Vec::new();
        };
        let mut violations = Vec::new();
        let mut index = 0;
        for line in crate::protobuf::json_lines(document) {
            let items = match crate::protobuf::line_messages(line) {
                Ok(items) => items,
                Err(mut violation) => {
                    violation.pointer = format!("/{index}");
                    violations.push(violation);
                    continue;
                }
            };
            for item in items {
                if let Err(mut violation) = message.from_json(&item) {
                    violation.pointer = format!("/{index}{}", violation.pointer);
                    violations.push(violation);
                }
                index += 1;
            }
            if violations.len() > MAX_VIOLATIONS {
                break;
            }
        }
        violations
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
        Typed::compile_parts(version.signature.as_ref(), &version.routes)
    }

    fn compile_parts(
        signature: Option<&Signature>,
        routes: &[Route],
    ) -> Result<Option<Typed>, ApiError> {
        if signature.is_none() && routes.is_empty() {
            return Ok(None);
        }
        let signature = signature.map(CompiledSignature::compile).transpose()?;
        let routes = routes
            .iter()
            .map(|route| {
                Ok(CompiledRoute {
                    name: route.name.clone(),
                    rule: route.rule.clone(),
                    handler: route.handler.clone(),
                    signature: compile_route_signature(route)?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(Some(Typed { signature, routes }))
    }

    /// The route a call takes: the route bound to the gRPC method it arrived by (`grpc_method`, set
    /// only by the gRPC gateway), else the first route its event matches. `Ok(None)` when the version
    /// has no routes, an error that lists them when it has some and none applies. A method is bound by
    /// at most one route, so the order of routes only matters among the other rules.
    pub fn route(
        &self,
        event: &serde_json::Value,
        grpc_method: Option<&str>,
    ) -> Result<Option<&CompiledRoute>, ApiError> {
        if self.routes.is_empty() {
            return Ok(None);
        }
        if let Some(route) = grpc_method.and_then(|method| self.grpc_route(method)) {
            return Ok(Some(route));
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

    /// The route whose rule is the gRPC method `method` (`package.Service/Method`), if any.
    pub fn grpc_route(&self, method: &str) -> Option<&CompiledRoute> {
        self.routes.iter().find(|route| route.rule.binds(method))
    }

    /// Whether a gRPC call of `method` is served by this version: its own signature or one of its
    /// routes binds the method.
    pub fn serves(&self, method: &str) -> bool {
        self.grpc_route(method).is_some()
            || self
                .signature
                .as_ref()
                .and_then(CompiledSignature::grpc_method)
                .is_some_and(|bound| crate::grpc::grpc_name(bound) == method)
    }

    /// The signature a gRPC call of `method` is decoded and encoded with: that of the route bound to
    /// the method, else the version's own (a call by a qualifier may reach a version that does not
    /// bind the method; it is then decoded with the version's messages, as for a function-level method).
    pub fn signature_for_method(&self, method: &str) -> Option<&CompiledSignature> {
        self.signature_for(self.grpc_route(method))
    }

    /// Every gRPC method this version binds, its signature's and its routes'.
    pub fn grpc_methods(&self) -> Vec<&prost_reflect::MethodDescriptor> {
        let routed = self
            .routes
            .iter()
            .filter_map(|route| route.signature.as_ref()?.grpc_method());
        self.signature
            .as_ref()
            .and_then(CompiledSignature::grpc_method)
            .into_iter()
            .chain(routed)
            .collect()
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
            .modify_typing(account, name, revision_id.as_deref(), |latest| {
                if let Some(method) = signature.as_ref().and_then(|s| s.grpc_method.as_deref())
                    && let Some(route) = latest.routes.iter().find(|route| route.rule.binds(method))
                {
                    return Err(ApiError::conflict(format!(
                        "the gRPC method {method} is already bound by the function's route {:?}; a method is bound once",
                        route.name
                    )));
                }
                before = latest.signature.clone();
                latest.signature = signature.clone();
                Ok(())
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

    /// Changes what `$LATEST` declares about its events (`change` edits its signature or routes, or
    /// refuses), after the revision check: `$LATEST` gets a new `RevisionId` and the gRPC method
    /// index follows the methods it binds before and after.
    async fn modify_typing(
        &self,
        account: &AccountId,
        name: &str,
        revision_id: Option<&str>,
        mut change: impl FnMut(&mut StoredVersion) -> Result<(), ApiError>,
    ) -> Result<FunctionConfiguration, ApiError> {
        let mut methods_before = Vec::new();
        let mut methods_after = Vec::new();
        let config = self
            .modify_function(account, name, |function| {
                crate::check_revision(
                    &function.latest.config.revision_id,
                    revision_id,
                    "function",
                )?;
                methods_before = bound_methods(&function.latest);
                change(&mut function.latest)?;
                methods_after = bound_methods(&function.latest);
                crate::touch(&mut function.latest.config);
                Ok(function.latest.config.clone())
            })
            .await?;
        self.index_grpc_methods(account, name, &methods_before, &methods_after)
            .await?;
        Ok(config)
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
        for method in routes
            .iter()
            .filter_map(|route| route.rule.grpc_method.as_deref())
        {
            self.check_grpc_method_free(account, name, method).await?;
        }
        let mut before = Vec::new();
        let config = self
            .modify_typing(account, name, revision_id.as_deref(), |latest| {
                let own_method = latest
                    .signature
                    .as_ref()
                    .and_then(|signature| signature.grpc_method.as_deref());
                if let Some(method) = own_method
                    && let Some(route) = routes.iter().find(|route| route.rule.binds(method))
                {
                    return Err(ApiError::conflict(format!(
                        "route {:?}: the gRPC method {method} is already bound by the function's own signature; a method is bound once (remove GrpcMethod from the signature, or drop the route)",
                        route.name
                    )));
                }
                before = latest.routes.clone();
                latest.routes = routes.clone();
                Ok(())
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

/// The gRPC methods a version binds: its signature's `GrpcMethod` and its routes' `GrpcMethod` rules.
pub(crate) fn bound_methods(version: &StoredVersion) -> Vec<String> {
    let own = version
        .signature
        .as_ref()
        .and_then(|signature| signature.grpc_method.clone());
    let routed = version
        .routes
        .iter()
        .filter_map(|route| route.rule.grpc_method.clone());
    own.into_iter().chain(routed).collect()
}

/// A route's signature, compiled; a route whose rule is a gRPC method is compiled as if its signature
/// named that method, so the method is checked against its messages like a function's `GrpcMethod`.
fn compile_route_signature(route: &Route) -> Result<Option<CompiledSignature>, ApiError> {
    match (&route.signature, &route.rule.grpc_method) {
        (None, None) => Ok(None),
        (None, Some(method)) => Err(ApiError::invalid(format!(
            "GrpcMethod {method:?} needs the route's own Signature with protobuf Input and Output messages"
        ))),
        (Some(signature), None) => CompiledSignature::compile(signature).map(Some),
        (Some(signature), Some(method)) => {
            let bound = Signature {
                grpc_method: Some(method.clone()),
                ..signature.clone()
            };
            CompiledSignature::compile(&bound).map(Some)
        }
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
    let mut methods = std::collections::BTreeSet::new();
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
                "route {name:?}: a route's signature cannot name a GrpcMethod; bind the method with the route's Match instead ({{\"GrpcMethod\": \"package.Service/Method\"}})"
            )));
        }
        if let Some(method) = &route.rule.grpc_method
            && !methods.insert(method.as_str())
        {
            return Err(ApiError::invalid(format!(
                "route {name:?}: the gRPC method {method} is bound by another route too; a method is bound by one route"
            )));
        }
        if route.handler.trim().is_empty() || route.handler.len() > 128 {
            return Err(ApiError::invalid(format!(
                "route {name:?}: Handler must be 1 to 128 characters"
            )));
        }
        // A route's method is checked as a signature's is: unary or server-streaming, never
        // client-streaming.
        compile_route_signature(route)
            .map_err(|error| ApiError::invalid(format!("route {name:?}: {}", error.message)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ORDERS: &str = r#"
        syntax = "proto3";
        package orders.v1;
        message PlaceRequest { string customer_id = 1; }
        message PlaceReply { int64 total = 1; }
        message CancelRequest { string order_id = 1; }
        message CancelReply { bool cancelled = 1; }
        service Orders {
          rpc Place(PlaceRequest) returns (PlaceReply);
          rpc Cancel(CancelRequest) returns (CancelReply);
          rpc Watch(CancelRequest) returns (stream CancelReply);
          rpc Upload(stream CancelRequest) returns (CancelReply);
        }
    "#;

    fn message(name: &str) -> TypeSpec {
        TypeSpec::Protobuf(ProtobufType {
            files: [("orders/v1/orders.proto".to_string(), ORDERS.to_string())].into(),
            message: name.to_string(),
            encoding: ProtobufEncoding::Json,
        })
    }

    fn route(name: &str, rule: serde_json::Value, types: Option<(&str, &str)>) -> Route {
        Route {
            name: name.to_string(),
            rule: serde_json::from_value(rule).expect("a rule"),
            handler: format!("app.{name}"),
            signature: types.map(|(input, output)| Signature {
                input: Some(message(input)),
                output: Some(message(output)),
                grpc_method: None,
            }),
        }
    }

    fn place() -> Route {
        route(
            "place",
            json!({"GrpcMethod": "orders.v1.Orders/Place"}),
            Some(("orders.v1.PlaceRequest", "orders.v1.PlaceReply")),
        )
    }

    fn cancel() -> Route {
        route(
            "cancel",
            json!({"GrpcMethod": "orders.v1.Orders/Cancel"}),
            Some(("orders.v1.CancelRequest", "orders.v1.CancelReply")),
        )
    }

    fn typed(routes: Vec<Route>) -> Typed {
        validate_routes(&routes).expect("valid routes");
        Typed::compile_parts(None, &routes)
            .expect("compiles")
            .expect("has routes")
    }

    #[test]
    fn a_grpc_method_rule_takes_the_call_that_arrived_by_that_method() {
        let by_action = route(
            "by-action",
            json!({"Pointer": "/action", "Equals": "place"}),
            None,
        );
        let typed = typed(vec![by_action, place(), cancel()]);
        let event = json!({"action": "place", "orderId": "o1"});
        let name = |method| {
            typed
                .route(&event, method)
                .expect("a route")
                .map(|route| route.name.as_str())
        };
        assert_eq!(
            name(Some("orders.v1.Orders/Cancel")),
            Some("cancel"),
            "the method's route wins over an earlier rule that matches the event"
        );
        assert_eq!(name(Some("orders.v1.Orders/Place")), Some("place"));
        assert_eq!(
            name(None),
            Some("by-action"),
            "a call without a method never takes a GrpcMethod route"
        );
        assert_eq!(
            name(Some("orders.v1.Other/Place")),
            Some("by-action"),
            "a method no route binds falls back to the other rules"
        );
        let refused = typed
            .route(&json!({"orderId": "o1"}), None)
            .expect_err("no route for a REST call");
        assert_eq!(refused.code, ErrorCode::NoMatchingRoute);
        assert!(refused.message.contains("orders.v1.Orders/Cancel"));
    }

    #[test]
    fn a_route_bound_to_a_method_is_decoded_with_its_own_messages() {
        let typed = typed(vec![place(), cancel()]);
        assert!(typed.serves("orders.v1.Orders/Cancel") && typed.serves("orders.v1.Orders/Place"));
        assert!(!typed.serves("orders.v1.Orders/Watch"));
        let watch = route(
            "watch",
            json!({"GrpcMethod": "orders.v1.Orders/Watch"}),
            Some(("orders.v1.CancelRequest", "orders.v1.CancelReply")),
        );
        let streaming = Typed::compile_parts(None, &[watch])
            .expect("a server-streaming method can be bound by a route")
            .expect("has routes");
        let signature = streaming.signature_for_method("orders.v1.Orders/Watch");
        assert!(signature.is_some_and(CompiledSignature::streams_output));
        let signature = typed
            .signature_for_method("orders.v1.Orders/Cancel")
            .expect("the route's signature");
        let input = signature.message(Side::Input).expect("a message");
        assert_eq!(input.descriptor.full_name(), "orders.v1.CancelRequest");
        let mut methods: Vec<String> = typed
            .grpc_methods()
            .into_iter()
            .map(crate::grpc::grpc_name)
            .collect();
        methods.sort();
        assert_eq!(
            methods,
            ["orders.v1.Orders/Cancel", "orders.v1.Orders/Place"]
        );
    }

    #[test]
    fn grpc_method_routes_are_checked_against_their_messages() {
        for (routes, words) in [
            (
                vec![route(
                    "r",
                    json!({"GrpcMethod": "orders.v1.Orders/Place"}),
                    None,
                )],
                "needs the route's own Signature",
            ),
            (
                vec![route(
                    "r",
                    json!({"GrpcMethod": "orders.v1.Orders/Place"}),
                    Some(("orders.v1.CancelRequest", "orders.v1.CancelReply")),
                )],
                "takes orders.v1.PlaceRequest",
            ),
            (
                vec![route(
                    "r",
                    json!({"GrpcMethod": "orders.v1.Orders/Refund"}),
                    Some(("orders.v1.PlaceRequest", "orders.v1.PlaceReply")),
                )],
                "is not declared",
            ),
            (
                vec![route(
                    "r",
                    json!({"GrpcMethod": "orders.v1.Orders/Upload"}),
                    Some(("orders.v1.CancelRequest", "orders.v1.CancelReply")),
                )],
                "stream of requests",
            ),
            (
                vec![place(), {
                    let mut again = place();
                    again.name = "again".to_string();
                    again
                }],
                "bound by another route",
            ),
            (
                vec![Route {
                    signature: Some(Signature {
                        grpc_method: Some("orders.v1.Orders/Place".to_string()),
                        ..place().signature.unwrap()
                    }),
                    ..route("r", json!({"Pointer": "/a", "Equals": 1}), None)
                }],
                "cannot name a GrpcMethod",
            ),
        ] {
            let error = validate_routes(&routes).expect_err(words);
            assert!(
                error.message.contains(words) && error.message.contains("route \""),
                "{words}: {}",
                error.message
            );
        }
    }
}
