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

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wisp_types::*;

use crate::{Engine, Execution, InvocationType, InvokeRequest};

/// A streaming invoke that has started; its events follow on [`StreamingInvoke::events`].
pub struct StreamingInvoke {
    pub request_id: String,
    pub executed_version: String,
    pub events: StreamEvents,
}

/// The events of a streaming invoke, in order: chunks, then one completion.
pub struct StreamEvents {
    /// The event that showed the stream had started, given back first.
    first: Option<StreamEvent>,
    rest: mpsc::UnboundedReceiver<StreamEvent>,
}

impl StreamEvents {
    /// The next event; `None` after the completion.
    ///
    /// # Cancel safety
    /// Cancel-safe: an event is only taken when the call returns it.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        match self.first.take() {
            Some(event) => Some(event),
            None => self.rest.recv().await,
        }
    }
}

/// What a streaming invoke produces.
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
    /// (DryRun: the events end at once with an empty completion). Returns once the function has
    /// produced its first chunk (or ended), so that an instance that cannot start is still an error.
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
        let request_id = crate::request_id().to_string();
        let executed_version = version.config.version.clone();
        let (events, receiver) = mpsc::unbounded_channel();
        if request.invocation_type == InvocationType::DryRun {
            return Ok(StreamingInvoke {
                request_id,
                executed_version,
                events: StreamEvents {
                    first: Some(StreamEvent::Complete(StreamCompletion::default())),
                    rest: receiver,
                },
            });
        }
        let mut request = request;
        self.apply_pre_hook(
            &resolved,
            &version,
            &mut request,
            &request_id,
            MAX_SYNC_PAYLOAD_BYTES,
        )
        .await?;
        let route = self.check_input(
            &resolved,
            &version,
            &request.payload,
            &request_id,
            "RequestResponse",
            request.grpc_method.as_deref(),
        )?;
        let slot = self.acquire_slot(
            &resolved.account,
            &resolved.function_name,
            resolved.reserved_concurrency,
        )?;
        let (failed, failure) = oneshot::channel();
        let engine = self.clone();
        let task_request_id = request_id.clone();
        tokio::spawn(async move {
            // Held until the invocation ends, however the caller fares.
            let _slot = slot;
            let (chunks, mut chunk_receiver) = mpsc::unbounded_channel();
            // Forward chunks while the invocation runs, then whatever is left once it has ended.
            let execution = {
                let run = engine.execute_with(
                    &resolved,
                    &version,
                    None,
                    crate::signature::TakenRoute::for_runtime(route),
                    request.caller_deadline_ms,
                    task_request_id,
                    request.payload,
                    request.client_context,
                    "RequestResponse",
                    Some(&chunks),
                );
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        biased;
                        Some(chunk) = chunk_receiver.recv() => {
                            let _ = events.send(StreamEvent::Chunk(chunk));
                        }
                        execution = &mut run => break execution,
                    }
                }
            };
            drop(chunks);
            while let Some(chunk) = chunk_receiver.recv().await {
                let _ = events.send(StreamEvent::Chunk(chunk));
            }
            match execution {
                Ok(execution) => {
                    let completion = engine.finish_streamed(execution, request.want_log_tail);
                    let _ = events.send(StreamEvent::Complete(completion));
                }
                Err(error) => {
                    let _ = failed.send(error);
                }
            }
        });
        // The stream has started with its first event; before that, an error is the caller's answer.
        let mut receiver = receiver;
        let first = tokio::select! {
            biased;
            error = failure => match error {
                Ok(error) => return Err(error),
                Err(_) => receiver.recv().await,
            },
            first = receiver.recv() => first,
        };
        let first = first.ok_or_else(|| {
            ApiError::internal(format!(
                "the streaming invocation {request_id} ended without an answer"
            ))
        })?;
        Ok(StreamingInvoke {
            request_id,
            executed_version,
            events: StreamEvents {
                first: Some(first),
                rest: receiver,
            },
        })
    }

    /// Writes a streamed invocation's END and REPORT lines, log and record, and says how it ended.
    fn finish_streamed(&self, execution: Execution, want_log_tail: bool) -> StreamCompletion {
        let Execution {
            payload,
            error_type,
            record,
            mut log_text,
        } = execution;
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
        self.sinks
            .log(&record.account, &record.function_name, log_text);
        // A streamed response went to the caller only (it may be 20 MB); a buffered one or an error
        // document is kept with the record, as for Invoke.
        let result = (!payload.is_empty()).then(|| payload.clone());
        self.sinks.record(record, result);
        StreamCompletion {
            error_details: error_type.as_ref().map(|_| error_message(&payload)),
            error_code: error_type,
            log_tail,
        }
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
