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
//!   `Wisp.OutputSchemaViolation`; streamed results are not checked.

use std::sync::Arc;

use bytes::Bytes;
use wisp_control::signature::{describe, parse_event};
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

/// The error document a successful result that breaks the output type of the route it took (or of
/// `version`) is replaced with.
pub(crate) fn output_violation(
    resolved: &Resolved,
    version: &Arc<StoredVersion>,
    route: Option<&str>,
    payload: &[u8],
) -> Option<Bytes> {
    let typed = resolved.typed_of(version)?;
    let route = route.and_then(|name| typed.routes.iter().find(|route| route.name == name));
    let signature = typed.signature_for(route)?;
    if !signature.has(Side::Output) {
        return None;
    }
    let violations = signature.violations(Side::Output, payload);
    if violations.is_empty() {
        return None;
    }
    Some(error_document(
        OUTPUT_VIOLATION,
        &describe(Side::Output, &violations),
        Some(&violations),
    ))
}
