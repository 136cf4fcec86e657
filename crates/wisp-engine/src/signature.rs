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
use wisp_control::{Resolved, Side, signature::describe};
use wisp_types::*;

use crate::{Engine, instance};

/// The function error a result that breaks its output type becomes.
pub const OUTPUT_VIOLATION: &str = "Wisp.OutputSchemaViolation";

impl Engine {
    /// Refuses (and records) an input that breaks `version`'s input type.
    pub(crate) fn check_input(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        payload: &[u8],
        request_id: &str,
        invocation_type: &str,
    ) -> Result<(), ApiError> {
        let Some(signature) = resolved.signature_of(version) else {
            return Ok(());
        };
        let violations = signature.violations(Side::Input, payload);
        if violations.is_empty() {
            return Ok(());
        }
        let message = describe(Side::Input, &violations);
        let document = Bytes::from(
            serde_json::json!({
                "errorType": ErrorCode::InputSchemaViolation.aws_name(),
                "errorMessage": message,
                "violations": violations,
            })
            .to_string(),
        );
        let record = InvocationRecord {
            request_id: request_id.to_string(),
            account: resolved.account.0.clone(),
            function_name: resolved.function_name.clone(),
            version: version.config.version.clone(),
            invocation_type: invocation_type.to_string(),
            status: InvocationStatus::Failed,
            error_type: Some(ErrorCode::InputSchemaViolation.aws_name().to_string()),
            started_ms: instance::unix_ms(),
            duration_us: 0,
            billed_duration_ms: 0,
            init_duration_us: None,
            memory_size_mb: version.config.memory_size,
            max_memory_used_mb: 0,
            cold_start: false,
            attempts: 0,
            enqueued_ms: None,
            queue_delay_us: None,
            result: None,
            idempotency_key: None,
            replay_of: None,
            memoized: false,
            memo_byte_seconds: None,
        };
        self.sinks.record(record, Some(document));
        Err(ApiError::new(ErrorCode::InputSchemaViolation, message).with_request_id(request_id))
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

/// The error document a successful result that breaks `version`'s output type is replaced with.
pub(crate) fn output_violation(
    resolved: &Resolved,
    version: &Arc<StoredVersion>,
    payload: &[u8],
) -> Option<Bytes> {
    let signature = resolved.signature_of(version)?;
    if !signature.has(Side::Output) {
        return None;
    }
    let violations = signature.violations(Side::Output, payload);
    if violations.is_empty() {
        return None;
    }
    Some(Bytes::from(
        serde_json::json!({
            "errorType": OUTPUT_VIOLATION,
            "errorMessage": describe(Side::Output, &violations),
            "violations": violations,
        })
        .to_string(),
    ))
}
