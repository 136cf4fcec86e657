//! Streaming invokes (InvokeWithResponseStream): the function's response reaches the caller chunk
//! by chunk while the invocation runs.
//!
//! Everything else is a synchronous invoke's: the same validation, resolution, concurrency slot,
//! instance choice, timeout, `REPORT` line and invocation record. Errors found before the
//! invocation starts (bad payload, unknown function, throttling, an instance that cannot start)
//! are returned as errors; everything after — a function error, a timeout or crash mid-stream —
//! ends the stream with a [`StreamCompletion`] that carries it. A function that does not stream
//! answers with its whole response as one chunk.
//!
//! The invocation runs in a task of its own, so a caller that hangs up does not cancel it: it still
//! completes, is recorded, and returns its instance and slot only when it ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use wisp_runtime_api::Invocation;
use wisp_types::*;

use crate::instance::{self, RunOutcome};
use crate::{Engine, InvocationType, InvokeRequest};

/// A streaming invoke that has started; its events follow on [`StreamingInvoke::events`].
pub struct StreamingInvoke {
    pub request_id: String,
    pub executed_version: String,
    pub events: mpsc::UnboundedReceiver<StreamEvent>,
}

/// What a streaming invoke produces, in order: chunks, then one completion.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Chunk(Bytes),
    Complete(StreamCompletion),
}

/// How a streaming invoke ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamCompletion {
    /// The error type (`Sandbox.Timedout`, `Runtime.StreamError`, the function's own…), if it failed.
    pub error_code: Option<String>,
    /// The error's message (the `errorMessage` of the error document, or the document itself).
    pub error_details: Option<String>,
    /// The invocation's log text (last 4 KB) when asked for.
    pub log_tail: Option<Vec<u8>>,
}

impl Engine {
    /// Starts a streaming invoke (InvocationType RequestResponse) or checks that one could start
    /// (DryRun: the events end at once with an empty completion).
    pub async fn invoke_streaming(
        self: &Arc<Self>,
        request: InvokeRequest,
    ) -> Result<StreamingInvoke, ApiError> {
        check_payload(&request.payload)?;
        let resolved = self
            .control
            .resolve(
                &request.account,
                &request.function,
                request.qualifier.clone(),
            )
            .await?;
        let version = resolved.pick(crate::rand_unit()).clone();
        let request_id = crate::random_uuid().to_string();
        let executed_version = version.config.version.clone();
        let (events, receiver) = mpsc::unbounded_channel();
        if request.invocation_type == InvocationType::DryRun {
            let _ = events.send(StreamEvent::Complete(StreamCompletion::default()));
            return Ok(StreamingInvoke {
                request_id,
                executed_version,
                events: receiver,
            });
        }
        let slot = self.acquire_slot(
            &resolved.account,
            &resolved.function_name,
            resolved.reserved_concurrency,
        )?;
        let pool = self.pool(&resolved.account, &resolved.function_name, &version);
        let (instance, cold) = match self.take_idle(&pool) {
            Some(instance) => (instance, false),
            None => (self.start_instance(&pool).await?, true),
        };
        let payload = if request.payload.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            request.payload
        };
        let invocation = Invocation {
            request_id: request_id.clone(),
            payload,
            deadline_ms: 0,
            invoked_function_arn: resolved.invoked_arn.clone(),
            trace_id: crate::trace_id(),
            client_context: request.client_context,
            cognito_identity: None,
        };
        let engine = self.clone();
        let want_log_tail = request.want_log_tail;
        let account = resolved.account.0.clone();
        let function_name = resolved.function_name.clone();
        let task_request_id = request_id.clone();
        tokio::spawn(async move {
            // Held until the invocation ends, however the caller fares.
            let _slot = slot;
            let config = &version.config;
            let (chunks, mut chunk_receiver) = mpsc::unbounded_channel();
            let started_ms = instance::unix_ms();
            // Forward chunks while the invocation runs, then whatever is left once it has ended.
            let result = {
                let run = instance.run_streaming(
                    invocation,
                    Duration::from_secs(config.timeout as u64),
                    &config.version,
                    &chunks,
                );
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        biased;
                        Some(chunk) = chunk_receiver.recv() => {
                            let _ = events.send(StreamEvent::Chunk(chunk));
                        }
                        result = &mut run => break result,
                    }
                }
            };
            drop(chunks);
            while let Some(chunk) = chunk_receiver.recv().await {
                let _ = events.send(StreamEvent::Chunk(chunk));
            }

            let (status, error, duration_us, reusable) = match result.outcome {
                RunOutcome::Response { duration_us, .. } => {
                    (InvocationStatus::Succeeded, None, duration_us, true)
                }
                RunOutcome::FunctionError {
                    error_type,
                    payload,
                    duration_us,
                } => (
                    InvocationStatus::Failed,
                    Some((error_type, payload)),
                    duration_us,
                    true,
                ),
                RunOutcome::Fatal {
                    error_type,
                    payload,
                    duration_us,
                    timed_out,
                } => {
                    let status = if timed_out {
                        InvocationStatus::TimedOut
                    } else {
                        InvocationStatus::Failed
                    };
                    (status, Some((error_type, payload)), duration_us, false)
                }
            };
            let record = InvocationRecord {
                request_id: task_request_id,
                account,
                function_name,
                version: config.version.clone(),
                invocation_type: "RequestResponse".into(),
                status,
                error_type: error.as_ref().map(|(error_type, _)| error_type.clone()),
                started_ms,
                duration_us,
                billed_duration_ms: billed_milliseconds(duration_us),
                init_duration_us: result.init_duration_us,
                memory_size_mb: config.memory_size,
                max_memory_used_mb: result
                    .max_memory_bytes
                    .map(|bytes| bytes.div_ceil(1024 * 1024) as u32)
                    .unwrap_or(0),
                cold_start: cold,
            };
            let mut log_text = result.log_text;
            log_text.extend_from_slice(
                format!(
                    "END RequestId: {}\n{}\n",
                    record.request_id,
                    report_line(&record)
                )
                .as_bytes(),
            );
            let log_tail =
                want_log_tail.then(|| log_text[log_text.len().saturating_sub(4096)..].to_vec());
            engine
                .sinks
                .log(&record.account, &record.function_name, log_text);
            engine.sinks.record(record);
            let (error_code, error_details) = match error {
                Some((error_type, document)) => (Some(error_type), Some(error_message(&document))),
                None => (None, None),
            };
            let _ = events.send(StreamEvent::Complete(StreamCompletion {
                error_code,
                error_details,
                log_tail,
            }));

            if reusable && !instance.has_exited() {
                engine.return_idle(&pool, instance);
            } else {
                let grace = engine.options.shutdown_grace;
                instance.stop(grace, "failed").await;
            }
        });
        Ok(StreamingInvoke {
            request_id,
            executed_version,
            events: receiver,
        })
    }
}

/// The same payload rules as a synchronous invoke.
fn check_payload(payload: &Bytes) -> Result<(), ApiError> {
    if payload.len() > MAX_SYNC_PAYLOAD_BYTES {
        return Err(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the InvokeWithResponseStream operation"
            ),
        ));
    }
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestContent,
            "Could not parse request body into json: the payload is not valid JSON",
        ));
    }
    Ok(())
}

/// The `errorMessage` of an error document, or the document's text when it has none.
fn error_message(document: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(document)
        .ok()
        .and_then(|value| {
            value
                .get("errorMessage")
                .and_then(|message| message.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(document).into_owned())
}

/// Compile-time check: the streaming invoke future can move between threads.
#[allow(dead_code)]
fn invoke_streaming_future_is_send(engine: &Arc<Engine>, request: InvokeRequest) -> impl Send + '_ {
    engine.invoke_streaming(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_details_are_the_error_message_when_there_is_one() {
        assert_eq!(
            error_message(br#"{"errorType":"Sandbox.Timedout","errorMessage":"Task timed out"}"#),
            "Task timed out"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
    }
}
