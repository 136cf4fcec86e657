//! Invocation hooks (`wisp_control::hooks`): the pre-invocation hook runs before a call is dispatched —
//! synchronous, streaming, and events at enqueue — and passes, rewrites or rejects its event; the
//! post-invocation hook is sent each synchronous call's invocation record as an event (durable, retried
//! like any event) after the response has gone. Calls made by hooks, and the hook events themselves,
//! never run hooks, so hooks cannot loop.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use wisp_control::Resolved;
use wisp_types::*;

use crate::{Engine, InvocationType, InvokeRequest};

impl Engine {
    /// Runs the pre-invocation hook on `request` and puts its rewrite, if any, in place of the event
    /// (a rewrite must be JSON, and at most `limit` bytes).
    pub(crate) async fn apply_pre_hook(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        request: &mut InvokeRequest,
        request_id: &str,
        limit: usize,
    ) -> Result<(), ApiError> {
        let Some(rewritten) = self
            .pre_hook(resolved, version, request, request_id)
            .await?
        else {
            return Ok(());
        };
        crate::check_json(&rewritten)?;
        if rewritten.len() > limit {
            return Err(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "the pre-invocation hook rewrote the event to {} bytes; this call takes at most {limit}",
                    rewritten.len()
                ),
            ));
        }
        request.payload = rewritten;
        Ok(())
    }

    /// Runs the function's pre-invocation hook, if it has one, on `request`'s event: returns the event
    /// to dispatch (the same, or the hook's rewrite), or the hook's rejection.
    async fn pre_hook(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        request: &InvokeRequest,
        request_id: &str,
    ) -> Result<Option<Bytes>, ApiError> {
        if request.skip_hooks {
            return Ok(None);
        }
        let Some(hook) = resolved.hooks.as_ref().and_then(|hooks| hooks.pre.clone()) else {
            return Ok(None);
        };
        let event = json!({
            "functionArn": resolved.invoked_arn,
            "requestId": request_id,
            "event": result_value(&request.payload),
        });
        let call = InvokeRequest {
            account: resolved.account.clone(),
            function: FunctionRef::parse(&hook)?,
            qualifier: None,
            payload: Bytes::from(event.to_string()),
            invocation_type: InvocationType::RequestResponse,
            want_log_tail: false,
            client_context: None,
            idempotency_key: None,
            skip_hooks: true,
            grpc_method: None,
            caller_deadline_ms: None,
        };
        let failed = |why: String| {
            ApiError::internal(format!(
                "the pre-invocation hook {hook} of {} failed, so the call was not run: {why}",
                resolved.function_name
            ))
            .with_request_id(request_id)
        };
        let answer = Box::pin(self.invoke(call))
            .await
            .map_err(|error| failed(format!("{}: {}", error.code.aws_name(), error.message)))?;
        if answer.function_error.is_some() {
            return Err(failed(
                String::from_utf8_lossy(&answer.payload).into_owned(),
            ));
        }
        let verdict: Value = serde_json::from_slice(&answer.payload).unwrap_or(Value::Null);
        match verdict.get("action").and_then(Value::as_str) {
            Some("pass") => Ok(None),
            Some("rewrite") => {
                let Some(event) = verdict.get("event") else {
                    return Err(failed("it answered rewrite without an event".into()));
                };
                Ok(Some(Bytes::from(event.to_string())))
            }
            Some("reject") => {
                let reason = verdict
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                let error = ApiError::new(
                    ErrorCode::InvocationRejected,
                    format!("rejected by the pre-invocation hook {hook}: {reason}"),
                );
                let document = Bytes::from(
                    json!({ "errorType": error.code.aws_name(), "errorMessage": error.message })
                        .to_string(),
                );
                let invocation_type = match request.invocation_type {
                    InvocationType::Event => "Event",
                    _ => "RequestResponse",
                };
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
            _ => Err(failed(format!(
                "its answer {} is not {{\"action\": \"pass\"}}, {{\"action\": \"rewrite\", \"event\": …}} or {{\"action\": \"reject\", \"reason\": …}}",
                String::from_utf8_lossy(&answer.payload)
            ))),
        }
    }

    /// Sends a synchronous call's invocation record to the function's post-invocation hook, in the
    /// background (the caller has its answer already).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn post_hook(
        &self,
        resolved: &Resolved,
        skip_hooks: bool,
        request_id: &str,
        version: &str,
        input: &[u8],
        output: &[u8],
        function_error: bool,
    ) {
        if skip_hooks {
            return;
        }
        let Some(hook) = resolved.hooks.as_ref().and_then(|hooks| hooks.post.clone()) else {
            return;
        };
        let Ok(function) = FunctionRef::parse(&hook) else {
            return;
        };
        let mut response_context = json!({ "statusCode": 200, "executedVersion": version });
        if function_error {
            response_context["functionError"] = "Unhandled".into();
        }
        let record = json!({
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "requestContext": {
                "requestId": request_id,
                "functionArn": resolved.invoked_arn,
                "condition": if function_error { "Failure" } else { "Success" },
                "approximateInvokeCount": 1,
            },
            "requestPayload": result_value(input),
            "responseContext": response_context,
            "responsePayload": result_value(output),
        });
        let call = InvokeRequest {
            account: resolved.account.clone(),
            function,
            qualifier: None,
            payload: Bytes::from(record.to_string()),
            invocation_type: InvocationType::Event,
            want_log_tail: false,
            client_context: None,
            idempotency_key: None,
            skip_hooks: true,
            grpc_method: None,
            caller_deadline_ms: None,
        };
        let Some(engine) = self.me.upgrade() else {
            return;
        };
        let source = resolved.function_name.clone();
        tokio::spawn(async move {
            if let Err(error) = engine.enqueue(call).await {
                tracing::warn!(%error, function = source, hook, "could not send an invocation record to the post-invocation hook");
            }
        });
    }
}
