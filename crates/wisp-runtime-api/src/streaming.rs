//! The Runtime API's streaming response mode: `POST …/invocation/{id}/response` with
//! `Lambda-Runtime-Function-Response-Mode: streaming` and a chunked body.
//!
//! The body is forwarded to the invoker frame by frame as it arrives ([`StreamFrame`]), up to
//! Lambda's 20 MB streamed-response limit. A runtime reports a failure in the middle of the
//! stream in one of two ways, both understood here:
//! - HTTP trailers `Lambda-Runtime-Function-Error-Type` and `Lambda-Runtime-Function-Error-Body`
//!   (the body base64-encoded), as Lambda's Node.js runtime sends them;
//! - the same two lines written *inside* the body as a last chunk,
//!   `Lambda-Runtime-Function-Error-Type: T\r\nLambda-Runtime-Function-Error-Body: B64\r\n`, which is
//!   what the `lambda_runtime` crate writes because its HTTP client cannot send trailers.
//!
//! This module never buffers a whole response; the buffered mode in `lib.rs` is untouched by it.

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::{Body, EndpointInner, RuntimeOutcome, complete, json_response, normalise_error};

/// Largest streamed response (Lambda's 20 MB).
pub const MAX_STREAMED_RESPONSE_BYTES: usize = 20 * 1024 * 1024;

/// Error type of a streamed response whose connection broke before it ended.
pub const TRUNCATED_RESPONSE: &str = "Runtime.TruncatedResponse";

/// Frames in flight between the runtime's connection and the invoker; beyond this the runtime waits.
const FRAMES_IN_FLIGHT: usize = 16;

/// Header (and trailer) names of the streaming mode.
const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const ERROR_BODY: &str = "lambda-runtime-function-error-body";

/// How the inline error of the `lambda_runtime` crate starts (compared without case).
const INLINE_ERROR_PREFIX: &[u8] = b"lambda-runtime-function-error-type:";
/// The inline error is a few hundred bytes; more than this is not one.
const INLINE_ERROR_LIMIT: usize = 64 * 1024;

/// One step of a streamed response, in order; the last is [`StreamFrame::End`] or
/// [`StreamFrame::Error`]. A receiver that sees the channel close without either lost the runtime
/// mid-stream (its connection or its process ended).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamFrame {
    Data(Bytes),
    /// The runtime finished its response.
    End,
    /// The runtime reported a failure, or the response broke a limit.
    Error {
        error_type: String,
        body: Bytes,
    },
}

/// Whether a response post uses the streaming mode.
pub(crate) fn is_streaming(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(RESPONSE_MODE)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"streaming"))
}

/// Hands a stream to the invoker of `request_id`, then forwards the body to it as it arrives.
pub(crate) async fn respond(
    inner: &EndpointInner,
    request_id: &str,
    request: Request<Incoming>,
) -> Response<Body> {
    let (frames, receiver) = mpsc::channel(FRAMES_IN_FLIGHT);
    let answer = complete(inner, request_id, RuntimeOutcome::Stream(receiver));
    if answer.status() != StatusCode::ACCEPTED {
        return answer;
    }
    let mut body = request.into_body();
    let mut sent = 0usize;
    // The inline error's text, once a chunk starts like one.
    let mut inline_error: Option<BytesMut> = None;
    // Whether the invoker still listens; when it stops (timeout), the body is read and dropped.
    let mut listening = true;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let _ = frames
                    .send(StreamFrame::Error {
                        error_type: TRUNCATED_RESPONSE.into(),
                        body: error_json(
                            TRUNCATED_RESPONSE,
                            &format!("the runtime's streamed response broke off: {error}"),
                        ),
                    })
                    .await;
                return json_response(
                    StatusCode::BAD_REQUEST,
                    r#"{"errorMessage":"the streamed response body broke off","errorType":"InvalidStreamingBody"}"#
                        .into(),
                );
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                if let Some(text) = inline_error.as_mut() {
                    if text.len() + data.len() <= INLINE_ERROR_LIMIT {
                        text.extend_from_slice(&data);
                    }
                    continue;
                }
                if starts_like_inline_error(&data) {
                    inline_error = Some(BytesMut::from(&data[..]));
                    continue;
                }
                sent += data.len();
                if sent > MAX_STREAMED_RESPONSE_BYTES {
                    let _ = frames.send(too_large()).await;
                    return json_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            r#"{{"errorMessage":"streamed response exceeds {MAX_STREAMED_RESPONSE_BYTES} bytes","errorType":"RequestEntityTooLarge"}}"#
                        ),
                    );
                }
                if listening && !data.is_empty() {
                    listening = frames.send(StreamFrame::Data(data)).await.is_ok();
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers()
            && let Some(error_type) = trailers
                .get(ERROR_TYPE)
                .and_then(|value| value.to_str().ok())
        {
            let body = trailers
                .get(ERROR_BODY)
                .map(|value| decode_error_body(value.as_bytes()))
                .unwrap_or_default();
            let (error_type, body) = normalise_error(Some(error_type.to_string()), body);
            let _ = frames.send(StreamFrame::Error { error_type, body }).await;
            return crate::accepted();
        }
    }
    let last = match inline_error.and_then(|text| parse_inline_error(&text)) {
        Some((error_type, body)) => {
            let (error_type, body) = normalise_error(Some(error_type), body);
            StreamFrame::Error { error_type, body }
        }
        None => StreamFrame::End,
    };
    let _ = frames.send(last).await;
    crate::accepted()
}

fn starts_like_inline_error(data: &[u8]) -> bool {
    data.len() >= INLINE_ERROR_PREFIX.len()
        && data[..INLINE_ERROR_PREFIX.len()].eq_ignore_ascii_case(INLINE_ERROR_PREFIX)
}

/// Reads `Lambda-Runtime-Function-Error-Type: T` and `Lambda-Runtime-Function-Error-Body: B64` lines.
fn parse_inline_error(text: &[u8]) -> Option<(String, Bytes)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut error_type = None;
    let mut body = Bytes::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case(ERROR_TYPE) {
            error_type = Some(value.to_string());
        } else if name.trim().eq_ignore_ascii_case(ERROR_BODY) {
            body = decode_error_body(value.as_bytes());
        }
    }
    Some((error_type?, body))
}

/// The error body is base64; a runtime that sent plain text is taken at its word.
fn decode_error_body(value: &[u8]) -> Bytes {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(decoded) => Bytes::from(decoded),
        Err(_) => Bytes::copy_from_slice(value),
    }
}

fn too_large() -> StreamFrame {
    StreamFrame::Error {
        error_type: "Function.ResponseSizeTooLarge".into(),
        body: error_json(
            "Function.ResponseSizeTooLarge",
            &format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_STREAMED_RESPONSE_BYTES} bytes)."
            ),
        ),
    }
}

fn error_json(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lambda_runtime_crates_inline_error_is_understood() {
        // What `lambda_runtime` writes for a stream item that failed with "boom".
        let text = b"Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\nLambda-Runtime-Function-Error-Body: Ym9vbQ==\r\n";
        assert!(starts_like_inline_error(text));
        let (error_type, body) = parse_inline_error(text).unwrap();
        assert_eq!(error_type, "Runtime.StreamError");
        assert_eq!(&body[..], b"boom");
        let (error_type, document) = normalise_error(Some(error_type), body);
        assert_eq!(error_type, "Runtime.StreamError");
        let document: serde_json::Value = serde_json::from_slice(&document).unwrap();
        assert_eq!(document["errorMessage"], "boom");
    }

    #[test]
    fn ordinary_chunks_are_not_taken_for_errors() {
        for chunk in [
            &b"hello"[..],
            b"Lambda-Runtime",
            b"{\"errorType\":\"x\"}",
            b"",
        ] {
            assert!(!starts_like_inline_error(chunk), "{chunk:?}");
        }
        assert_eq!(
            parse_inline_error(b"Lambda-Runtime-Function-Error-Body: eA==\r\n"),
            None
        );
    }

    #[test]
    fn error_bodies_are_base64_or_taken_as_they_are() {
        assert_eq!(&decode_error_body(b"eyJhIjoxfQ==")[..], b"{\"a\":1}");
        assert_eq!(&decode_error_body(b"not base64!")[..], b"not base64!");
    }
}
