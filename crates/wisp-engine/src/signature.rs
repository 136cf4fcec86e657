//! Checks invocations against their function version's signature (`wisp_control::signature`):
//! input before any instance is touched, output before it is returned.
//!
//! - A sync or streaming call whose input breaks the input type is refused with
//!   `InputSchemaViolationException` (400), naming each offending JSON pointer and rule, and recorded
//!   as a failed invocation with nothing billed.
//! - An event is checked when it is enqueued, against every version its qualifier may run (both sides
//!   of a weighted alias), so a bad event is refused rather than retried. It is not checked again
//!   when it runs: a signature set in between applies to later events.
//! - A buffered result that breaks the output type becomes a function error of type
//!   `Wisp.OutputSchemaViolation`; streamed results are not checked here (the gRPC gateway checks
//!   each message of a server-streaming method's result as it goes).
//! - A protobuf side with `Encoding: Binary` is exchanged with the runtime in binary: the event is
//!   encoded just before it is handed over, the result decoded just after, so callers, records,
//!   caches and destinations only ever see JSON.
//! - The route of a sync or streaming call is chosen once, with its input check, and handed to
//!   `execute`: the route bound to the gRPC method the call arrived by, else the first whose rule
//!   matches the event. A queued event has no method; its route is chosen from the event when it runs.

use std::sync::Arc;

use bytes::Bytes;
use wisp_control::protobuf::CompiledMessage;
use wisp_control::signature::{CompiledSignature, describe, parse_event};
use wisp_control::{Resolved, Side};
use wisp_types::*;

use crate::Engine;

/// The function error a result that breaks its output type becomes.
pub const OUTPUT_VIOLATION: &str = "Wisp.OutputSchemaViolation";

impl Engine {
    /// Refuses (and records) an input that matches none of `version`'s routes or breaks the input type
    /// of the route it takes (or of the version). Returns the route taken, to run the call with:
    /// `grpc_method` is the method a call arrived by through the gRPC gateway, which selects the
    /// route bound to it before any other rule is tried.
    pub(crate) fn check_input(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        payload: &[u8],
        request_id: &str,
        invocation_type: &str,
        grpc_method: Option<&str>,
    ) -> Result<Option<TakenRoute>, ApiError> {
        let Some(typed) = resolved.typed_of(version) else {
            return Ok(None);
        };
        // The payload is known to be JSON (checked before), or empty.
        let Ok(event) = parse_event(payload) else {
            return Ok(None);
        };
        let route = match typed.route(&event, grpc_method) {
            Ok(route) => route,
            Err(error) => {
                let document = error_document(error.code.aws_name(), &error.message, None);
                self.record_refusal(
                    resolved,
                    version,
                    request_id,
                    invocation_type,
                    &error,
                    document,
                );
                return Err(error.with_request_id(request_id));
            }
        };
        let taken = route.map(|route| TakenRoute {
            name: route.name.clone(),
            handler: route.handler.clone(),
            by_grpc_method: grpc_method.is_some_and(|method| route.rule.binds(method)),
        });
        let Some(signature) = typed.signature_for(route) else {
            return Ok(taken);
        };
        let violations = signature.violations_of(Side::Input, &event);
        if violations.is_empty() {
            return Ok(taken);
        }
        let error = ApiError::new(
            ErrorCode::InputSchemaViolation,
            describe(Side::Input, &violations),
        );
        let document = error_document(error.code.aws_name(), &error.message, Some(&violations));
        self.record_refusal(
            resolved,
            version,
            request_id,
            invocation_type,
            &error,
            document,
        );
        Err(error.with_request_id(request_id))
    }

    /// Records a call refused before it ran: failed, nothing billed.
    pub(crate) fn record_refusal(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        request_id: &str,
        invocation_type: &str,
        error: &ApiError,
        document: Bytes,
    ) {
        let record = crate::unrun_record(
            resolved,
            request_id,
            &version.config.version,
            invocation_type,
            version.config.memory_size,
            Some(error.code.aws_name().to_string()),
        );
        self.sinks.record(record, Some(document));
    }

    /// [`Engine::check_input`] against every version a resolution may pick.
    pub(crate) fn check_input_all(
        &self,
        resolved: &Resolved,
        payload: &[u8],
        request_id: &str,
        invocation_type: &str,
    ) -> Result<(), ApiError> {
        self.check_input(
            resolved,
            &resolved.primary,
            payload,
            request_id,
            invocation_type,
            None,
        )?;
        if let Some((additional, _)) = &resolved.additional {
            self.check_input(
                resolved,
                additional,
                payload,
                request_id,
                invocation_type,
                None,
            )?;
        }
        Ok(())
    }
}

fn error_document(error_type: &str, message: &str, violations: Option<&[Violation]>) -> Bytes {
    let mut document = serde_json::json!({ "errorType": error_type, "errorMessage": message });
    if let Some(violations) = violations {
        document["violations"] = serde_json::json!(violations);
    }
    Bytes::from(document.to_string())
}

/// The route a call takes, as [`Engine::check_input`] chose it.
#[derive(Debug, Clone)]
pub(crate) struct TakenRoute {
    pub name: String,
    pub handler: String,
    /// Chosen by the gRPC method the call arrived by rather than by its event: the same event may
    /// take another route by another method, so cached and idempotent results are kept apart.
    pub by_grpc_method: bool,
}

impl TakenRoute {
    /// (route name, handler), as the runtime is told.
    pub(crate) fn for_runtime(route: Option<TakenRoute>) -> Option<(String, String)> {
        route.map(|route| (route.name, route.handler))
    }
}

/// What identifies a call's input for memoization and idempotency: the payload, and the route when
/// the gRPC method chose it (the payload alone cannot tell two methods' calls apart).
pub(crate) fn fingerprint(payload: &Bytes, route: Option<&TakenRoute>) -> Bytes {
    match route {
        Some(route) if route.by_grpc_method => {
            let mut bytes = payload.to_vec();
            bytes.extend_from_slice(b"\0route:");
            bytes.extend_from_slice(route.name.as_bytes());
            Bytes::from(bytes)
        }
        _ => payload.clone(),
    }
}

/// The route a queued event of `version` takes, as (route name, handler), for the runtime. Events
/// never arrive by a gRPC method, so only rules on the event apply. An event that matches no route
/// never gets this far (it is refused when enqueued), except one queued before the routes changed: it
/// goes to the function's own handler.
pub(crate) fn route_of(
    resolved: &Resolved,
    version: &Arc<StoredVersion>,
    payload: &[u8],
) -> Option<(String, String)> {
    let typed = resolved.typed_of(version)?;
    if typed.routes.is_empty() {
        return None;
    }
    let event = parse_event(payload).ok()?;
    let route = typed.route(&event, None).ok()??;
    Some((route.name.clone(), route.handler.clone()))
}

/// The signature an event of `version` that took `route` is checked against.
fn signature_of<'a>(
    resolved: &'a Resolved,
    version: &Arc<StoredVersion>,
    route: Option<&str>,
) -> Option<&'a CompiledSignature> {
    let typed = resolved.typed_of(version)?;
    let route = route.and_then(|name| typed.routes.iter().find(|route| route.name == name));
    typed.signature_for(route)
}

/// The event as the function takes it, with its media type: the JSON as it is, or binary protobuf
/// when the signature asks for it. The event was checked against the input type before (at enqueue
/// for an event), so a failure here means the signature changed since: it is refused the same way.
pub(crate) fn to_function(
    resolved: &Resolved,
    version: &Arc<StoredVersion>,
    route: Option<&str>,
    payload: Bytes,
) -> Result<(Bytes, &'static str), ApiError> {
    let Some(message) =
        signature_of(resolved, version, route).and_then(|signature| signature.binary(Side::Input))
    else {
        return Ok((payload, JSON));
    };
    match message.json_to_binary(&payload) {
        Ok(binary) => Ok((Bytes::from(binary), PROTOBUF)),
        Err(violation) => Err(ApiError::new(
            ErrorCode::InputSchemaViolation,
            describe(Side::Input, &[violation]),
        )),
    }
}

/// A successful result as callers see it (protobuf's JSON mapping of a binary result), or the error
/// document it is replaced with when it breaks the output type of the route it took (or of `version`).
pub(crate) fn from_function(
    resolved: &Resolved,
    version: &Arc<StoredVersion>,
    route: Option<&str>,
    payload: Bytes,
) -> Result<Bytes, Bytes> {
    let Some(signature) = signature_of(resolved, version, route) else {
        return Ok(payload);
    };
    let violations = match (signature.binary(Side::Output), signature.streams_output()) {
        (Some(message), false) => match message.binary_to_json(&payload) {
            Ok(json) => return Ok(Bytes::from(json)),
            Err(violation) => vec![violation],
        },
        (Some(message), true) => match binary_sequence_to_json(message, payload.clone()) {
            Ok(lines) => return Ok(lines),
            Err(violation) => vec![violation],
        },
        (None, true) => signature.sequence_violations(&payload),
        (None, false) => signature.violations(Side::Output, &payload),
    };
    if violations.is_empty() {
        return Ok(payload);
    }
    Err(error_document(
        OUTPUT_VIOLATION,
        &describe(Side::Output, &violations),
        Some(&violations),
    ))
}

/// A server-streaming function's binary result (length-delimited messages) as callers of a buffered
/// invoke see it: one JSON document per line.
fn binary_sequence_to_json(message: &CompiledMessage, payload: Bytes) -> Result<Bytes, Violation> {
    let mut rest = payload;
    let mut lines = Vec::new();
    let mut index = 0;
    loop {
        let taken =
            wisp_control::protobuf::take_delimited(&mut rest).map_err(|reason| Violation {
                pointer: format!("/{index}"),
                rule: message.descriptor.full_name().to_string(),
                message: reason,
            })?;
        let Some(one) = taken else { break };
        let mut json = message.binary_to_json(&one).map_err(|mut violation| {
            violation.pointer = format!("/{index}{}", violation.pointer);
            violation
        })?;
        json.push(b'\n');
        lines.extend_from_slice(&json);
        index += 1;
    }
    if !rest.is_empty() {
        return Err(Violation {
            pointer: format!("/{index}"),
            rule: message.descriptor.full_name().to_string(),
            message: format!("{} bytes after the last whole message", rest.len()),
        });
    }
    Ok(Bytes::from(lines))
}

const JSON: &str = "application/json";
const PROTOBUF: &str = "application/x-protobuf";

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(name: &str, by_grpc_method: bool) -> TakenRoute {
        TakenRoute {
            name: name.to_string(),
            handler: format!("app.{name}"),
            by_grpc_method,
        }
    }

    #[test]
    fn calls_routed_by_their_grpc_method_are_told_apart_by_the_route() {
        let payload = Bytes::from_static(b"{\"orderId\":\"o1\"}");
        assert_eq!(fingerprint(&payload, None), payload);
        assert_eq!(
            fingerprint(&payload, Some(&taken("place", false))),
            payload,
            "a route chosen by the event follows from the payload"
        );
        let place = fingerprint(&payload, Some(&taken("place", true)));
        let cancel = fingerprint(&payload, Some(&taken("cancel", true)));
        assert!(place != payload && cancel != payload && place != cancel);
    }
}
