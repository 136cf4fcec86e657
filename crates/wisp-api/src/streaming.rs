//! InvokeWithResponseStream (`POST /2021-11-15/functions/{name}/response-streaming-invocations`):
//! the function's response as AWS's event stream (`application/vnd.amazon.eventstream`), one
//! `PayloadChunk` event per chunk as it arrives, then one `InvokeComplete` event with `ErrorCode`,
//! `ErrorDetails` and `LogResult`.
//!
//! Errors found before the stream starts are answered as Invoke answers them (AWS's error shape and
//! status); once it has started the status is 200 and a failure travels in `InvokeComplete`.
//! The framing itself is [`wisp_types::eventstream`]; this module decodes the request, calls the
//! engine and encodes events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use wisp_engine::{InvocationType, InvokeRequest, StreamCompletion, StreamEvent};
use wisp_types::{ApiError, FunctionRef, eventstream};

use crate::{ApiState, Caller, Failure};

/// Largest payload of one `PayloadChunk` event; longer chunks are split.
const MAX_EVENT_PAYLOAD: usize = 256 * 1024;

pub(crate) async fn invoke_with_response_stream(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let invocation_type = match header("x-amz-invocation-type").unwrap_or("RequestResponse") {
        "RequestResponse" => InvocationType::RequestResponse,
        "DryRun" => InvocationType::DryRun,
        other => {
            return Err(Failure(ApiError::invalid(format!(
                "InvocationType {other:?} must be RequestResponse or DryRun for InvokeWithResponseStream"
            ))));
        }
    };
    let want_log_tail = crate::lambda::log_tail_wanted(&headers)?;
    let client_context = crate::lambda::client_context(&headers)?;
    let qualifier = crate::lambda::query_qualifier(&params)?;
    let request = InvokeRequest {
        account,
        function: FunctionRef::parse(&name)?,
        qualifier,
        payload: body,
        invocation_type,
        want_log_tail,
        client_context,
        // Streamed responses are not stored, so a streaming call is never an idempotent replay.
        idempotency_key: None,
        skip_hooks: false,
        grpc_method: None,
        caller_deadline_ms: None,
    };
    let started = state.engine.invoke_streaming(request).await?;
    let status = if invocation_type == InvocationType::DryRun {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        let events = futures::stream::unfold(started.events, |mut events| async move {
            let event = events.next().await?;
            Some((Ok::<Bytes, Infallible>(encode_event(&event)), events))
        });
        let mut response = Response::new(Body::from_stream(events));
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/vnd.amazon.eventstream"),
        );
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&started.request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Ok(value) = HeaderValue::from_str(&started.executed_version) {
        headers.insert("x-amz-executed-version", value);
    }
    Ok(response)
}

/// One engine event as event-stream messages (a long chunk becomes several `PayloadChunk`s).
fn encode_event(event: &StreamEvent) -> Bytes {
    let mut out = Vec::new();
    match event {
        StreamEvent::Chunk(chunk) => {
            for piece in chunk.chunks(MAX_EVENT_PAYLOAD) {
                eventstream::encode(
                    &[
                        (":event-type", "PayloadChunk"),
                        (":content-type", "application/octet-stream"),
                        (":message-type", "event"),
                    ],
                    piece,
                    &mut out,
                );
            }
        }
        StreamEvent::Complete(completion) => {
            eventstream::encode(
                &[
                    (":event-type", "InvokeComplete"),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                &completion_document(completion),
                &mut out,
            );
        }
    }
    Bytes::from(out)
}

/// `InvokeComplete`'s payload: `{"ErrorCode", "ErrorDetails", "LogResult"}`, members present when set.
fn completion_document(completion: &StreamCompletion) -> Vec<u8> {
    let mut document = serde_json::Map::new();
    if let Some(code) = &completion.error_code {
        document.insert("ErrorCode".into(), code.clone().into());
    }
    if let Some(details) = &completion.error_details {
        document.insert("ErrorDetails".into(), details.clone().into());
    }
    if let Some(tail) = &completion.log_tail {
        document.insert(
            "LogResult".into(),
            base64::engine::general_purpose::STANDARD
                .encode(tail)
                .into(),
        );
    }
    serde_json::to_vec(&document).expect("a JSON object serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_payload_chunk_events_in_order() {
        let long = Bytes::from(vec![b'x'; MAX_EVENT_PAYLOAD + 10]);
        let encoded = encode_event(&StreamEvent::Chunk(long));
        let (first, used) = eventstream::decode(&encoded).unwrap().unwrap();
        assert_eq!(first.header(":event-type"), Some("PayloadChunk"));
        assert_eq!(first.header(":message-type"), Some("event"));
        assert_eq!(
            first.header(":content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(first.payload.len(), MAX_EVENT_PAYLOAD);
        let (second, rest) = eventstream::decode(&encoded[used..]).unwrap().unwrap();
        assert_eq!(second.payload.len(), 10);
        assert_eq!(used + rest, encoded.len());
    }

    #[test]
    fn invoke_complete_carries_the_error_and_the_log_tail() {
        let encoded = encode_event(&StreamEvent::Complete(StreamCompletion {
            error_code: Some("Sandbox.Timedout".into()),
            error_details: Some("Task timed out after 1.00 seconds".into()),
            log_tail: Some(b"REPORT".to_vec()),
        }));
        let (message, _) = eventstream::decode(&encoded).unwrap().unwrap();
        assert_eq!(message.header(":event-type"), Some("InvokeComplete"));
        let document: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(document["ErrorCode"], "Sandbox.Timedout");
        assert_eq!(
            document["ErrorDetails"],
            "Task timed out after 1.00 seconds"
        );
        assert_eq!(document["LogResult"], "UkVQT1JU");
        let success = encode_event(&StreamEvent::Complete(StreamCompletion::default()));
        let (message, _) = eventstream::decode(&success).unwrap().unwrap();
        assert_eq!(message.payload, b"{}");
    }
}
