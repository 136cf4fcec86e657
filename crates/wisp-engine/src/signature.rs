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
    /// of the route it takes (or of the version).
    pub(crate) fn check_input(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        payload: &[u8],
        request_id: &str,
        invocation_type: &str,
    ) -> Result<(), ApiError> {
        let Some(typed) = resolved.typed_of(version) else {
            return Ok(());
        };
        // The payload is known to be JSON (checked before), or empty.
        let Ok(event) = parse_event(payload) else {
            return Ok(());
        };
        let route = match typed.route(&event) {
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
        let Some(signature) = typed.signature_for(route) else {
            return Ok(());
        };
        let violations = signature.violations_of(Side::Input, &event);
        if violations.is_empty() {
            return Ok(());
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
        )?;
        if let Some((additional, _)) = &resolved.additional {
            self.check_input(resolved, additional, payload, request_id, invocation_type)?;
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

/// The route an event of `version` takes, as (route name, handler), for the runtime. An event that
/// matches no route never gets this far (it is refused by [`Engine::check_input`]), except one queued
/// before the routes changed: it goes to the function's own handler.
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
    let route = typed.route(&event).ok()??;
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
