//! `wisp check`: every place one function of an account is wired to another, checked again as it
//! would be checked if it were made now — the target exists, is in the account, and accepts what the
//! source sends (`compat`). Wiring is checked when it is made; this finds wirings that a later change
//! broke (a signature changed, a target deleted).

use prost_reflect::{Kind, MessageDescriptor};
use serde::Serialize;
use serde_json::Value;
use wisp_types::*;

use crate::ControlPlane;
use crate::compat::Mismatch;
use crate::protobuf::CompiledMessage;

/// One wiring and what is wrong with it, if anything.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Wiring {
    /// The function (qualified) whose outcomes or events flow.
    pub source: String,
    /// What kind of wiring, e.g. `OnSuccess destination`.
    pub kind: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every wiring of an account, with the number that have a problem.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WiringReport {
    pub wirings: Vec<Wiring>,
    pub problems: usize,
}

/// What a source sends a target, for the check: the JSON Schema of the whole document, and the
/// protobuf messages of the source's signature that the document carries, each with its place (a JSON
/// pointer, `""` for the whole document).
pub(crate) struct Produced {
    pub schema: Value,
    pub messages: Vec<(String, MessageDescriptor)>,
}

impl Produced {
    pub fn schema(schema: Value) -> Produced {
        Produced {
            schema,
            messages: Vec::new(),
        }
    }

    /// Notes that the document carries a value of type `spec` at `pointer`, when that is a protobuf
    /// message. (A signature that no longer compiles keeps only its JSON Schema description.)
    pub fn carrying(mut self, pointer: &str, spec: Option<&TypeSpec>) -> Produced {
        if let Some(TypeSpec::Protobuf(spec)) = spec
            && let Ok(compiled) = CompiledMessage::compile(spec)
        {
            self.messages
                .push((pointer.to_string(), compiled.descriptor));
        }
        self
    }

    /// Where a target whose input is `accepted` (and, for a protobuf input, `message`) refuses this
    /// document. Where a message of the source meets a message of the target, the two are compared
    /// on their descriptors — field numbers, types and labels (`proto_compat`) — and that part of the
    /// JSON Schema is left out; everything else is compared as JSON Schema (`compat`).
    fn refused_by(&self, accepted: &Value, message: Option<&MessageDescriptor>) -> Vec<Mismatch> {
        let mut accepted = accepted.clone();
        let mut by_descriptor = Vec::new();
        if let Some(target) = message {
            for (pointer, sent) in &self.messages {
                let Some(taken) = message_at(target, pointer) else {
                    continue;
                };
                if let Some(place) = accepted.pointer_mut(&schema_pointer(pointer)) {
                    *place = Value::Bool(true);
                }
                by_descriptor.extend(crate::proto_compat::check(sent, &taken, pointer));
            }
        }
        let mut mismatches = crate::compat::check(&self.schema, &accepted);
        mismatches.extend(by_descriptor);
        mismatches
    }
}

/// The message a target's input has at `pointer` (JSON names or field names, through singular message
/// fields); none where the path leaves the message, goes through a list or a map, or reaches a
/// well-known type (whose JSON form is not its fields, so JSON Schema describes it better).
fn message_at(root: &MessageDescriptor, pointer: &str) -> Option<MessageDescriptor> {
    let mut message = root.clone();
    for segment in pointer.split('/').skip(1) {
        if crate::proto_compat::is_well_known(&message) {
            return None;
        }
        let name = segment.replace("~1", "/").replace("~0", "~");
        let field = message
            .fields()
            .find(|field| field.json_name() == name || field.name() == name)?;
        if field.is_list() || field.is_map() {
            return None;
        }
        message = match field.kind() {
            Kind::Message(inner) => inner,
            _ => return None,
        };
    }
    (!crate::proto_compat::is_well_known(&message)).then_some(message)
}

/// Where the JSON Schema of a message (`protobuf::accepted_schema`) describes the value at `pointer`.
fn schema_pointer(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| format!("/properties/{segment}"))
        .collect()
}

/// An alias move being checked before it is stored: wirings see the alias at `config`'s versions.
#[derive(Clone, Copy)]
pub(crate) struct PendingAlias<'a> {
    pub function: &'a str,
    pub alias: &'a str,
    pub config: &'a AliasConfiguration,
}

impl PendingAlias<'_> {
    /// Whether `reference` (a function name or ARN with a qualifier) names this alias.
    fn names(&self, reference: &str) -> bool {
        FunctionRef::parse(reference).is_ok_and(|reference| {
            reference.name == self.function
                && matches!(&reference.qualifier, Some(Qualifier::Alias(alias)) if alias == self.alias)
        })
    }
}

impl ControlPlane {
    pub async fn check_wiring(&self, account: &AccountId) -> Result<WiringReport, ApiError> {
        self.check_wiring_with(account, None).await
    }

    /// Refuses an alias move that would break a wiring from or to the alias.
    pub(crate) async fn check_alias_wiring(
        &self,
        account: &AccountId,
        pending: PendingAlias<'_>,
    ) -> Result<(), ApiError> {
        let report = self.check_wiring_with(account, Some(pending)).await?;
        let broken: Vec<String> = report
            .wirings
            .iter()
            .filter(|wiring| pending.names(&wiring.source) || pending.names(&wiring.target))
            .filter_map(|wiring| {
                wiring.problem.as_ref().map(|problem| {
                    format!(
                        "{} -> {} ({}): {problem}",
                        wiring.source, wiring.target, wiring.kind
                    )
                })
            })
            .collect();
        if broken.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(format!(
            "alias {} of {} cannot point to version {}: it would break {} wiring(s): {}",
            pending.alias,
            pending.function,
            pending.config.function_version,
            broken.len(),
            broken.join("; ")
        )))
    }

    /// The target of a wiring (`what` names the setting in errors, `role` the kind of target): a function
    /// of the same account, other than `name`, that exists.
    pub(crate) async fn wired_function(
        &self,
        account: &AccountId,
        name: &str,
        what: &str,
        role: &str,
        target: &str,
    ) -> Result<FunctionRef, ApiError> {
        let reference = FunctionRef::parse(target).map_err(|error| {
            ApiError::invalid(format!(
                "{what} {target:?} is not a function name or ARN: {}",
                error.message
            ))
        })?;
        if reference
            .account
            .as_ref()
            .is_some_and(|named| named != account)
        {
            return Err(ApiError::invalid(format!(
                "{what} {target:?} belongs to another account; {role}s must be functions of account {account}"
            )));
        }
        if reference.name == name {
            return Err(ApiError::invalid(format!(
                "{what} {target:?} is the function {name} itself; a function may not be its own {role} (it would invoke itself in a loop)"
            )));
        }
        self.get_function(account, &reference.name, reference.qualifier.as_ref())
            .await
            .map_err(|error| {
                if error.code == ErrorCode::ResourceNotFound {
                    ApiError::invalid(format!(
                        "{what} {target:?} does not exist: {}",
                        error.message
                    ))
                } else {
                    error
                }
            })?;
        Ok(reference)
    }

    /// Where the input types of every version `target` may run disagree with what the source may
    /// send (one document per source version); empty when every pair is compatible.
    pub(crate) async fn refusals(
        &self,
        account: &AccountId,
        target: &FunctionRef,
        pending: Option<PendingAlias<'_>>,
        produced: &[Produced],
    ) -> Result<Vec<crate::compat::Mismatch>, ApiError> {
        let targets = self
            .typed_for(account, &target.name, target.qualifier.clone(), pending)
            .await?;
        for (signature, routes) in &targets {
            for produced in produced {
                // A target with routes takes each document by the route it matches, with that
                // route's input type (or the version's, for a route without a signature of its own).
                let inputs: Vec<Option<&TypeSpec>> = if routes.is_empty() {
                    vec![
                        signature
                            .as_ref()
                            .and_then(|signature| signature.input.as_ref()),
                    ]
                } else {
                    match crate::route_compat::routes_taken(&produced.schema, routes) {
                        Err(mismatch) => return Ok(vec![mismatch]),
                        Ok(taken) => taken
                            .into_iter()
                            .map(|route| {
                                routes[route]
                                    .signature
                                    .as_ref()
                                    .or(signature.as_ref())
                                    .and_then(|signature| signature.input.as_ref())
                            })
                            .collect(),
                    }
                };
                for accepted in inputs.into_iter().flatten() {
                    let message = match accepted {
                        TypeSpec::Protobuf(spec) => {
                            Some(CompiledMessage::compile(spec)?.descriptor)
                        }
                        TypeSpec::JsonSchema(_) => None,
                    };
                    let schema = match &message {
                        Some(message) => crate::protobuf::accepted_schema(message),
                        None => crate::signature::accepted_schema(accepted)?,
                    };
                    let mismatches = produced.refused_by(&schema, message.as_ref());
                    if !mismatches.is_empty() {
                        return Ok(mismatches);
                    }
                }
            }
        }
        Ok(Vec::new())
    }

    /// The signatures a source's events may run under, for what it sends on: each version a qualifier
    /// may run (both versions of a weighted alias), as they are or as `pending` would make them, and
    /// for a version with routes each route an event may take (its own signature, or the version's;
    /// routes bound to a gRPC method take no events).
    pub(crate) async fn signatures_for(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
        pending: Option<PendingAlias<'_>>,
    ) -> Result<Vec<Option<Signature>>, ApiError> {
        let typed = self.typed_for(account, name, qualifier, pending).await?;
        let mut signatures = Vec::new();
        for (signature, routes) in typed {
            let by_event: Vec<&Route> = routes
                .iter()
                .filter(|route| route.rule.grpc_method.is_none())
                .collect();
            if by_event.is_empty() {
                signatures.push(signature);
                continue;
            }
            signatures.extend(
                by_event
                    .into_iter()
                    .map(|route| route.signature.clone().or_else(|| signature.clone())),
            );
        }
        Ok(signatures)
    }

    /// [`ControlPlane::signatures_for`], with each version's routes.
    async fn typed_for(
        &self,
        account: &AccountId,
        name: &str,
        qualifier: Option<Qualifier>,
        pending: Option<PendingAlias<'_>>,
    ) -> Result<Vec<(Option<Signature>, Vec<Route>)>, ApiError> {
        if let (Some(pending), Some(Qualifier::Alias(alias))) = (pending, &qualifier)
            && pending.function == name
            && pending.alias == alias
        {
            let mut versions = vec![pending.config.function_version.clone()];
            if let Some(routing) = &pending.config.routing_config {
                versions.extend(routing.additional_version_weights.keys().cloned());
            }
            let mut typed = Vec::new();
            for version in versions {
                let qualifier = Some(Qualifier::parse(&version)?);
                let resolved = self.resolve_by_name(account, name, qualifier).await?;
                typed.push((
                    resolved.primary.signature.clone(),
                    resolved.primary.routes.clone(),
                ));
            }
            return Ok(typed);
        }
        let resolved = self.resolve_by_name(account, name, qualifier).await?;
        let mut typed = vec![(
            resolved.primary.signature.clone(),
            resolved.primary.routes.clone(),
        )];
        if let Some((additional, _)) = &resolved.additional {
            typed.push((additional.signature.clone(), additional.routes.clone()));
        }
        Ok(typed)
    }

    async fn check_wiring_with(
        &self,
        account: &AccountId,
        pending: Option<PendingAlias<'_>>,
    ) -> Result<WiringReport, ApiError> {
        let mut wirings = Vec::new();
        let mut marker = None;
        loop {
            let (functions, next) = self
                .list_functions(account, marker.as_deref(), 1000)
                .await?;
            for function in functions {
                self.check_destinations(account, &function.function_name, pending, &mut wirings)
                    .await?;
                self.check_hooks(account, &function.function_name, pending, &mut wirings)
                    .await?;
            }
            match next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        self.check_rules(account, pending, &mut wirings).await?;
        let problems = wirings
            .iter()
            .filter(|wiring| wiring.problem.is_some())
            .count();
        Ok(WiringReport { wirings, problems })
    }

    /// Every event-bus rule's targets, checked as when the rule was put.
    async fn check_rules(
        &self,
        account: &AccountId,
        pending: Option<PendingAlias<'_>>,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        for topic in self.list_topics(account).await? {
            for rule in self.list_rules(account, &topic.topic_name).await? {
                let pattern = crate::pattern::EventPattern::parse(&rule.event_pattern);
                for target in &rule.targets {
                    let problem = match &pattern {
                        Ok(pattern) => self
                            .check_rule_target(
                                account,
                                &topic.topic_name,
                                pattern,
                                &target.arn,
                                pending,
                            )
                            .await
                            .err()
                            .map(|error| error.message),
                        Err(error) => Some(error.message.clone()),
                    };
                    wirings.push(Wiring {
                        source: format!("topic {}", topic.topic_name),
                        kind: format!("event-bus rule {}", rule.rule_name),
                        target: target.arn.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    async fn check_hooks(
        &self,
        account: &AccountId,
        name: &str,
        pending: Option<PendingAlias<'_>>,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        let Some(hooks) = self.stored_hooks(account, name).await? else {
            return Ok(());
        };
        let source = match self.get_signature(account, name, None).await {
            Ok(source) => source,
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for (which, hook) in [("Pre", &hooks.pre), ("Post", &hooks.post)] {
            let Some(hook) = hook else { continue };
            let problem = self
                .check_hook(account, name, which, hook, source.as_ref(), pending)
                .await
                .err()
                .map(|error| error.message);
            wirings.push(Wiring {
                source: function_arn(&self.options.region, account, name),
                kind: format!("{which}-invocation hook"),
                target: hook.clone(),
                problem,
            });
        }
        Ok(())
    }

    async fn check_destinations(
        &self,
        account: &AccountId,
        name: &str,
        pending: Option<PendingAlias<'_>>,
        wirings: &mut Vec<Wiring>,
    ) -> Result<(), ApiError> {
        let configs = match self
            .list_event_invoke_configs(account, name, None, 10_000)
            .await
        {
            Ok((configs, _)) => configs,
            // Deleted while the account was being checked: nothing of it is wired any more.
            Err(error) if error.code == ErrorCode::ResourceNotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        for config in configs {
            let qualifier = FunctionRef::parse(&config.function_arn)?.qualifier;
            let sources = self
                .signatures_for(account, name, qualifier, pending)
                .await?;
            for (which, target) in [
                (
                    "OnSuccess",
                    &config.destination_config.on_success.destination,
                ),
                (
                    "OnFailure",
                    &config.destination_config.on_failure.destination,
                ),
            ] {
                let Some(target) = target else { continue };
                let problem = self
                    .check_destination(account, name, which, target, &sources, pending)
                    .await
                    .err()
                    .map(|error| error.message);
                wirings.push(Wiring {
                    source: config.function_arn.clone(),
                    kind: format!("{which} destination"),
                    target: target.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn message(package: &str, body: &str, name: &str) -> MessageDescriptor {
        let text = format!(
            "syntax = \"proto3\"; package {package};\nimport \"google/protobuf/struct.proto\";\n{body}"
        );
        let files = BTreeMap::from([(format!("{package}.proto"), text)]);
        crate::protobuf::compile_files(&files)
            .expect("the test's files compile")
            .get_message_by_name(&format!("{package}.{name}"))
            .expect("the test's message is declared")
    }

    /// What a pre-hook is sent by a function whose input is `src.Place`.
    fn pre_hook_call(quantity: &str) -> Produced {
        let input = message(
            "src",
            &format!("message Place {{ string sku = 1; {quantity}; }}"),
            "Place",
        );
        Produced {
            schema: json!({
                "type": "object",
                "required": ["functionArn", "requestId", "event"],
                "properties": {
                    "functionArn": {"type": "string"},
                    "requestId": {"type": "string"},
                    "event": crate::protobuf::accepted_schema(&input),
                },
                "additionalProperties": false,
            }),
            messages: vec![("/event".to_string(), input)],
        }
    }

    /// A hook whose input message has `event` of type `event`.
    fn gate(declarations: &str, event: &str) -> MessageDescriptor {
        message(
            "dst",
            &format!(
                "{declarations} message GateCall {{ string function_arn = 1; string request_id = 2; {event} event = 3; }}"
            ),
            "GateCall",
        )
    }

    fn refusals(produced: &Produced, target: &MessageDescriptor) -> Vec<Mismatch> {
        produced.refused_by(&crate::protobuf::accepted_schema(target), Some(target))
    }

    #[test]
    fn a_message_inside_the_document_is_compared_by_field_numbers() {
        // As JSON the two agree; as protobuf `quantity` is field 2 on one side and 3 on the other.
        let target = gate(
            "message Order { string sku = 1; int32 quantity = 3; }",
            "Order",
        );
        let found = refusals(&pre_hook_call("int32 quantity = 2"), &target);
        assert_eq!(
            found,
            [Mismatch {
                path: "/event/quantity".into(),
                expected: "int32 (field 3)".into(),
                found: "int32 (field 2)".into(),
            }]
        );
    }

    #[test]
    fn a_compatible_message_inside_the_document_is_accepted() {
        let target = gate(
            "message Order { string sku = 1; int64 quantity = 2; string note = 4; }",
            "Order",
        );
        assert_eq!(refusals(&pre_hook_call("int32 quantity = 2"), &target), []);
    }

    #[test]
    fn a_well_known_type_at_the_place_keeps_the_json_schema_check() {
        // `Struct` takes any object in JSON: the source's message is one.
        let target = gate("", "google.protobuf.Struct");
        assert_eq!(refusals(&pre_hook_call("int32 quantity = 2"), &target), []);
    }

    #[test]
    fn the_rest_of_the_document_is_still_compared_as_json_schema() {
        let target = message(
            "dst",
            "message Order { string sku = 1; int32 quantity = 3; } \
             message GateCall { bool function_arn = 1; string request_id = 2; Order event = 3; }",
            "GateCall",
        );
        let found = refusals(&pre_hook_call("int32 quantity = 2"), &target);
        let paths: Vec<&str> = found
            .iter()
            .map(|mismatch| mismatch.path.as_str())
            .collect();
        assert_eq!(paths, ["/functionArn", "/event/quantity"], "{found:?}");
    }

    #[test]
    fn a_whole_document_that_is_a_message_is_compared_by_descriptors() {
        let source = message("src", "message Place { sint32 quantity = 1; }", "Place");
        let target = message("dst", "message Place { int32 quantity = 1; }", "Place");
        let produced = Produced {
            schema: crate::protobuf::accepted_schema(&source),
            messages: vec![(String::new(), source)],
        };
        let found = refusals(&produced, &target);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].to_string(),
            "at /quantity: expected int32 (field 1), found sint32 (field 1)"
        );
        // A target typed by JSON Schema is compared as JSON Schema.
        let schema = json!({"type": "object", "properties": {"quantity": {"type": "integer"}}});
        assert_eq!(produced.refused_by(&schema, None)[0].path, "/quantity");
    }
}
