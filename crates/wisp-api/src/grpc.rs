//! The gRPC gateway: gRPC over HTTP/2 on the API's own port (cleartext, prior knowledge), told apart
//! from REST by its `content-type: application/grpc` (`docs/GRPC.md`).
//!
//! A unary call of `/package.Service/Method` invokes the function whose signature names that method
//! (`GrpcMethod`), or one of whose routes is bound to it (a `GrpcMethod` rule, which the call then
//! takes): the binary request is decoded with that signature's input message, turned into
//! protobuf's JSON mapping, and invoked through `Engine::invoke` like any sync call (concurrency,
//! validation, idempotency, records); the JSON result is encoded with the output message. A
//! server-streaming method is invoked through `Engine::invoke_streaming` and its result, one JSON
//! document per line (or length-delimited binary), is sent message by message as it comes. Errors
//! map onto gRPC status codes. Server reflection (`grpc_reflection`) lists the account's services.
//!
//! Callers authenticate with the metadata `authorization: Wisp ACCESS_KEY_ID:SECRET_ACCESS_KEY`
//! (SigV4 does not fit gRPC clients); with `wisp serve --dev` the metadata may be left out.
//! Framing is done here (5-byte prefix, `grpc-status` trailers); no business rule lives here.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message as _;
use wisp_control::protobuf;
use wisp_control::{Resolved, Side};
use wisp_engine::{InvocationType, InvokeRequest, StreamEvent};
use wisp_types::{
    AccountId, ApiError, ErrorCode, FunctionRef, MAX_SYNC_PAYLOAD_BYTES, ProtobufEncoding,
    Qualifier,
};

use crate::ApiState;
use crate::grpc_reflection::{Catalog, ServerReflectionRequest};

const REFLECTION_SERVICES: [&str; 2] = [
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
];

/// gRPC status codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unimplemented = 12,
    Internal = 13,
    Unauthenticated = 16,
}

/// A gRPC status with its message, and the invocation's request id when there was one.
#[derive(Debug)]
pub struct Status {
    code: Code,
    message: String,
    request_id: Option<String>,
    function_error: Option<String>,
}

impl Status {
    fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
            request_id: None,
            function_error: None,
        }
    }

    /// A trailers-only response: the status travels in the headers and the body is empty.
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-accept-encoding",
            HeaderValue::from_static(ACCEPTED_ENCODINGS),
        );
        put_status(headers, self.code, &self.message);
        if let Some(value) = self
            .request_id
            .and_then(|id| HeaderValue::from_str(&id).ok())
        {
            headers.insert("wisp-request-id", value);
        }
        if let Some(value) = self
            .function_error
            .and_then(|kind| HeaderValue::from_str(&kind).ok())
        {
            headers.insert("wisp-function-error", value);
        }
        response
    }
}

/// How Wisp's errors read as gRPC statuses.
impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let code = match error.code {
            ErrorCode::InvalidParameterValue
            | ErrorCode::InvalidRequestContent
            | ErrorCode::InputSchemaViolation
            | ErrorCode::NoMatchingRoute
            | ErrorCode::InvalidEventPattern => Code::InvalidArgument,
            ErrorCode::InvocationRejected => Code::PermissionDenied,
            ErrorCode::ResourceNotFound | ErrorCode::ProvisionedConcurrencyConfigNotFound => {
                Code::NotFound
            }
            ErrorCode::TooManyRequests | ErrorCode::RequestTooLarge => Code::ResourceExhausted,
            ErrorCode::UnrecognizedClient
            | ErrorCode::InvalidSignature
            | ErrorCode::MissingAuthenticationToken => Code::Unauthenticated,
            ErrorCode::AccessDenied => Code::PermissionDenied,
            ErrorCode::ResourceConflict
            | ErrorCode::PreconditionFailed
            | ErrorCode::IdempotencyKeyMismatch => Code::FailedPrecondition,
            ErrorCode::Service => Code::Internal,
            ErrorCode::CodeStorageExceeded | ErrorCode::UnsupportedMediaType => Code::Unknown,
        };
        Status {
            code,
            message: format!("{}: {}", error.code.aws_name(), error.message),
            request_id: error.request_id,
            function_error: None,
        }
    }
}

/// gRPC's percent-encoding of `grpc-message`: everything outside printable ASCII, and '%' itself.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn put_status(headers: &mut HeaderMap, code: Code, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    if !message.is_empty() {
        let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string();
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
}

/// Which function serves each gRPC method, remembered so a warm call reads nothing from the store:
/// an entry is confirmed against the function's (cached) resolution on every call, and read again
/// from the control plane's index when that fails.
#[derive(Default)]
pub struct GrpcBindings(Mutex<HashMap<(AccountId, String), String>>);

impl GrpcBindings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, String), String>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

async fn binding(
    state: &ApiState,
    account: &AccountId,
    method: &str,
) -> Result<Option<Arc<Resolved>>, ApiError> {
    let key = (account.clone(), method.to_string());
    let remembered = state.grpc.lock().get(&key).cloned();
    if let Some(name) = remembered
        && let Some(resolved) = state.control.grpc_bound(account, &name, method).await?
    {
        return Ok(Some(resolved));
    }
    let found = match state.control.grpc_index(account, method).await? {
        Some(name) => state
            .control
            .grpc_bound(account, &name, method)
            .await?
            .map(|resolved| (name, resolved)),
        None => None,
    };
    let mut bindings = state.grpc.lock();
    match found {
        Some((name, resolved)) => {
            bindings.insert(key, name);
            Ok(Some(resolved))
        }
        None => {
            bindings.remove(&key);
            Ok(None)
        }
    }
}

/// Middleware in front of the REST API: gRPC requests are answered here, the rest pass on.
pub(crate) async fn dispatch(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let is_grpc = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if !is_grpc {
        return next.run(request).await;
    }
    match serve(state, request).await {
        Ok(response) => response,
        Err(status) => status.into_response(),
    }
}

async fn serve(state: Arc<ApiState>, request: Request) -> Result<Response, Status> {
    let path = request.uri().path().to_string();
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Err(Status::new(
            Code::Unimplemented,
            format!("{path:?} is not a gRPC method path (/package.Service/Method)"),
        ));
    };
    let account = authenticate(&state, request.headers()).await?;
    if REFLECTION_SERVICES.contains(&service) {
        if method != "ServerReflectionInfo" {
            return Err(Status::new(
                Code::Unimplemented,
                format!("{service} has no method {method}"),
            ));
        }
        return Ok(reflect(state, account, request.into_body()));
    }
    unary(&state, account, &format!("{service}/{method}"), request).await
}

/// The account named by the `authorization: Wisp KEY:SECRET` metadata.
async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<AccountId, Status> {
    let credentials = match headers.get("authorization") {
        None => None,
        Some(value) => {
            let text = value.to_str().unwrap_or_default();
            let pair = text
                .strip_prefix("Wisp ")
                .and_then(|rest| rest.trim().split_once(':'))
                .ok_or_else(|| {
                    Status::new(
                        Code::Unauthenticated,
                        "the authorization metadata must be \"Wisp ACCESS_KEY_ID:SECRET_ACCESS_KEY\"",
                    )
                })?;
            Some(pair)
        }
    };
    state
        .auth
        .authenticate_secret(credentials)
        .await
        .map_err(|error| Status::new(Code::Unauthenticated, error.message))
}

/// The message encodings a request may be compressed with (`grpc-encoding`), besides `identity`.
const ACCEPTED_ENCODINGS: &str = "gzip, deflate";

/// The body of a unary call: exactly one message, decompressed when its flag says it is compressed
/// with `encoding` (the request's `grpc-encoding`).
async fn read_message(body: Body, encoding: Option<&str>) -> Result<Bytes, Status> {
    let limit = MAX_SYNC_PAYLOAD_BYTES + 5;
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|_| too_large())?
        .to_bytes();
    let mut rest = bytes;
    let (compressed, message) = take_frame(&mut rest)?
        .ok_or_else(|| Status::new(Code::InvalidArgument, "the request carries no message"))?;
    if !rest.is_empty() {
        return Err(Status::new(
            Code::Unimplemented,
            "client streaming is not supported: send exactly one message",
        ));
    }
    if !compressed {
        return Ok(message);
    }
    decompress(&message, encoding.unwrap_or("identity"))
}

fn too_large() -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("the request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes"),
    )
}

/// A compressed message, inflated to at most the invoke payload limit (a small message may not
/// expand without bound).
fn decompress(message: &[u8], encoding: &str) -> Result<Bytes, Status> {
    use std::io::Read as _;
    let reader: Box<dyn std::io::Read + '_> = match encoding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(message)),
        // gRPC's "deflate" is the zlib format.
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(message)),
        other => {
            return Err(Status::new(
                Code::Unimplemented,
                format!(
                    "the message is compressed with {other:?}; this server accepts {ACCEPTED_ENCODINGS}"
                ),
            ));
        }
    };
    let mut inflated = Vec::new();
    reader
        .take(MAX_SYNC_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|error| {
            Status::new(
                Code::Internal,
                format!("the message is not valid {encoding} data: {error}"),
            )
        })?;
    if inflated.len() > MAX_SYNC_PAYLOAD_BYTES {
        return Err(too_large());
    }
    Ok(Bytes::from(inflated))
}

/// Takes one length-prefixed message, with whether it is compressed, from the front of `buffer`
/// (`None` until a whole one is there).
fn take_frame(buffer: &mut Bytes) -> Result<Option<(bool, Bytes)>, Status> {
    if buffer.len() < 5 {
        return Ok(None);
    }
    let compressed = match buffer[0] {
        0 => false,
        1 => true,
        flag => {
            return Err(Status::new(
                Code::Internal,
                format!("{flag} is not a message's compressed flag (0 or 1)"),
            ));
        }
    };
    let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if buffer.len() < 5 + length {
        return Ok(None);
    }
    let message = buffer.slice(5..5 + length);
    *buffer = buffer.slice(5 + length..);
    Ok(Some((compressed, message)))
}

/// [`take_frame`] for streams that are never compressed (server reflection).
fn take_message(buffer: &mut Bytes) -> Result<Option<Bytes>, Status> {
    match take_frame(buffer)? {
        Some((true, _)) => Err(Status::new(
            Code::Unimplemented,
            "compressed reflection requests are not supported; send them uncompressed",
        )),
        Some((false, message)) => Ok(Some(message)),
        None => Ok(None),
    }
}

fn length_prefixed(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    put_status(&mut trailers, Code::Ok, "");
    trailers
}

/// A response whose body is the given frames, then the trailers.
fn streamed(
    frames: impl futures::Stream<Item = Frame<Bytes>> + Send + 'static,
    headers: HeaderMap,
) -> Response {
    use futures::StreamExt as _;
    let body = StreamBody::new(frames.map(Ok::<_, Infallible>));
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = StatusCode::OK;
    *response.headers_mut() = headers;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    response
}

async fn unary(
    state: &ApiState,
    account: AccountId,
    method: &str,
    request: Request,
) -> Result<Response, Status> {
    let resolved = binding(state, &account, method).await?.ok_or_else(|| {
            Status::new(
                Code::Unimplemented,
                format!(
                    "no function serves the gRPC method {method} in this account; hint: set GrpcMethod in a function's signature, or a route's Match (docs/GRPC.md)"
                ),
            )
        })?;
    // `wisp-qualifier` metadata picks a version or alias; its own signature decodes the call.
    let qualifier = match request.headers().get("wisp-qualifier") {
        None => None,
        Some(value) => {
            Some(Qualifier::parse(value.to_str().unwrap_or_default()).map_err(Status::from)?)
        }
    };
    let resolved = match &qualifier {
        None => resolved,
        Some(qualifier) => {
            let reference = FunctionRef {
                account: None,
                region: None,
                name: resolved.function_name.clone(),
                qualifier: None,
            };
            state
                .control
                .resolve(&account, &reference, Some(qualifier.clone()))
                .await?
        }
    };
    let (input, output, streams) = messages_for(&resolved, method)?;
    let idempotency_key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let encoding = request
        .headers()
        .get("grpc-encoding")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let deadline = call_timeout(request.headers())?;
    let message = read_message(request.into_body(), encoding.as_deref()).await?;
    let decoded = input
        .decode(&message)
        .map_err(|reason| Status::new(Code::InvalidArgument, reason))?;
    let payload = Bytes::from(protobuf::to_json(&decoded));
    let invoke = InvokeRequest {
        account,
        function: FunctionRef {
            account: None,
            region: None,
            name: resolved.function_name.clone(),
            qualifier: None,
        },
        qualifier,
        payload,
        invocation_type: InvocationType::RequestResponse,
        want_log_tail: false,
        client_context: None,
        idempotency_key,
        skip_hooks: false,
        grpc_method: Some(method.to_string()),
        caller_deadline_ms: deadline.map(|timeout| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (now + timeout).as_millis() as u64
        }),
    };
    let deadline = deadline.map(|timeout| (tokio::time::Instant::now() + timeout, timeout));
    if streams {
        return server_streaming(state, invoke, output, deadline).await;
    }
    // The invocation runs in its own task, as a REST one does: a caller that hangs up or whose
    // deadline passes does not cancel it; it completes and is recorded.
    let engine = state.engine.clone();
    let running = tokio::spawn(async move { engine.invoke(invoke).await });
    let joined = match deadline {
        Some((at, timeout)) => tokio::time::timeout_at(at, running)
            .await
            .map_err(|_| deadline_passed(timeout))?,
        None => running.await,
    };
    let response = joined.map_err(|error| {
        Status::new(Code::Internal, format!("invocation task failed: {error}"))
    })??;
    let request_id = response.request_id.clone();
    if response.function_error.is_some() {
        let document: serde_json::Value =
            serde_json::from_slice(&response.payload).unwrap_or_default();
        let kind = document["errorType"].as_str().unwrap_or("Unhandled");
        let text = document["errorMessage"].as_str().unwrap_or_default();
        return Err(function_failed(kind, text, request_id));
    }
    let result = output
        .from_json(&response.payload)
        .map_err(|violation| Status {
            code: Code::Internal,
            message: format!(
                "the function's result is not a {}: {violation}",
                output.descriptor.full_name()
            ),
            request_id: Some(request_id.clone()),
            function_error: None,
        })?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("wisp-request-id", value);
    }
    let frames = futures::stream::iter([
        Frame::data(length_prefixed(&protobuf::to_binary(&result))),
        Frame::trailers(ok_trailers()),
    ]);
    Ok(streamed(frames, headers))
}

/// The call's timeout from its `grpc-timeout` metadata (up to eight digits, then `H`, `M`, `S`, `m`,
/// `u` or `n`), if it has one.
fn call_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    let malformed = || {
        Status::new(
            Code::InvalidArgument,
            format!("grpc-timeout {text:?} is not up to 8 digits followed by H, M, S, m, u or n"),
        )
    };
    let split = text.len().checked_sub(1).ok_or_else(malformed)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(malformed());
    }
    let amount: u64 = digits.parse().map_err(|_| malformed())?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(malformed()),
    };
    Ok(Some(timeout))
}

/// The status of a call whose deadline passed before the function answered (or finished its stream).
fn deadline_passed(timeout: Duration) -> Status {
    Status::new(
        Code::DeadlineExceeded,
        format!(
            "the call's deadline ({} ms) passed before the function answered; the invocation runs on to its own end and is recorded",
            timeout.as_millis()
        ),
    )
}

/// An instant no call waits for (a call without a deadline).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// The status of a call whose function failed with `kind` (its `errorType`).
fn function_failed(kind: &str, text: &str, request_id: String) -> Status {
    let code = match kind {
        "Sandbox.Timedout" => Code::DeadlineExceeded,
        "Wisp.OutputSchemaViolation" => Code::Internal,
        _ => Code::Unknown,
    };
    Status {
        code,
        message: format!("{kind}: {text}"),
        request_id: Some(request_id),
        function_error: Some(kind.to_string()),
    }
}

/// A server-streaming call: the function's result, streamed or buffered, is cut into messages as it
/// arrives ([`Splitter`]) and each is sent as soon as it is whole; the function's failure, or a
/// message that is not an `output`, ends the call with its status in the trailers.
async fn server_streaming(
    state: &ApiState,
    invoke: InvokeRequest,
    output: protobuf::CompiledMessage,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> Result<Response, Status> {
    // The invocation runs in the engine's own task; only the wait for it ends at the deadline.
    let until = |at: Option<tokio::time::Instant>| at.unwrap_or_else(far_future);
    let started = tokio::time::timeout_at(
        until(deadline.map(|(at, _)| at)),
        state.engine.invoke_streaming(invoke),
    )
    .await
    .map_err(|_| deadline_passed(deadline.map(|(_, timeout)| timeout).unwrap_or_default()))??;
    let request_id = started.request_id;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("wisp-request-id", value);
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Frame<Bytes>>(16);
    let mut events = started.events;
    tokio::spawn(async move {
        let mut splitter = Splitter::new(output);
        let outcome: Result<(), Status> = loop {
            // What came, and the call's end when this event ends it.
            let next = tokio::time::timeout_at(until(deadline.map(|(at, _)| at)), events.next());
            let Ok(next) = next.await else {
                let timeout = deadline.map(|(_, timeout)| timeout).unwrap_or_default();
                break Err(deadline_passed(timeout));
            };
            let (messages, end) = match next {
                Some(StreamEvent::Chunk(chunk)) => {
                    let (messages, failure) = splitter.push(&chunk);
                    (messages, failure.map(Err))
                }
                Some(StreamEvent::Complete(completion)) => match completion.error_code {
                    Some(kind) => {
                        let text = completion.error_details.unwrap_or_default();
                        let failed = function_failed(&kind, &text, request_id.clone());
                        (Vec::new(), Some(Err(failed)))
                    }
                    None => {
                        let (messages, failure) = splitter.finish();
                        (messages, Some(failure.map_or(Ok(()), Err)))
                    }
                },
                None => (
                    Vec::new(),
                    Some(Err(Status::new(
                        Code::Internal,
                        "the invocation ended without completing",
                    ))),
                ),
            };
            for message in messages {
                if sender
                    .send(Frame::data(length_prefixed(&message)))
                    .await
                    .is_err()
                {
                    // The client went away; the invocation runs on to its end.
                    return;
                }
            }
            if let Some(end) = end {
                break end;
            }
        };
        let trailers = match outcome {
            Ok(()) => ok_trailers(),
            Err(status) => {
                let mut trailers = HeaderMap::new();
                put_status(&mut trailers, status.code, &status.message);
                if let Some(value) = status
                    .function_error
                    .and_then(|kind| HeaderValue::from_str(&kind).ok())
                {
                    trailers.insert("wisp-function-error", value);
                }
                trailers
            }
        };
        let _ = sender.send(Frame::trailers(trailers)).await;
    });
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    Ok(streamed(frames, headers))
}

/// Cuts a server-streaming function's result into binary messages: one JSON document per line
/// (protobuf's JSON mapping), or length-delimited binary protobuf when the function returns binary.
struct Splitter {
    message: protobuf::CompiledMessage,
    buffer: Vec<u8>,
    taken: usize,
}

impl Splitter {
    fn new(message: protobuf::CompiledMessage) -> Splitter {
        Splitter {
            message,
            buffer: Vec::new(),
            taken: 0,
        }
    }

    fn binary(&self) -> bool {
        self.message.encoding == ProtobufEncoding::Binary
    }

    /// The messages made whole by `chunk`, and what ended the call when a message is not an output
    /// message (the messages before it still go out).
    fn push(&mut self, chunk: &[u8]) -> (Vec<Vec<u8>>, Option<Status>) {
        self.buffer.extend_from_slice(chunk);
        let mut messages = Vec::new();
        let failure = if self.binary() {
            let mut rest = Bytes::from(std::mem::take(&mut self.buffer));
            let failure = loop {
                match protobuf::take_delimited(&mut rest) {
                    Ok(Some(one)) => match self.message.binary_to_json(&one) {
                        Ok(_) => {
                            messages.push(one.to_vec());
                            self.taken += 1;
                        }
                        Err(violation) => break Some(self.not_a_message(violation.to_string())),
                    },
                    Ok(None) => break None,
                    Err(reason) => break Some(self.not_a_message(reason)),
                }
            };
            self.buffer = rest.to_vec();
            failure
        } else {
            let mut failure = None;
            while let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if let Err(status) = self.line(&line, &mut messages) {
                    failure = Some(status);
                    break;
                }
            }
            failure
        };
        (messages, failure)
    }

    /// The last messages, once the result is complete.
    fn finish(&mut self) -> (Vec<Vec<u8>>, Option<Status>) {
        let rest = std::mem::take(&mut self.buffer);
        if self.binary() {
            if rest.is_empty() {
                return (Vec::new(), None);
            }
            let reason = format!("{} bytes after the last whole message", rest.len());
            return (Vec::new(), Some(self.not_a_message(reason)));
        }
        let mut messages = Vec::new();
        let failure = self.line(&rest, &mut messages).err();
        (messages, failure)
    }

    /// Adds the binary forms of the messages of one line of JSON (the line, or the elements of an
    /// array) to `messages`, up to the first that is not an output message.
    fn line(&mut self, line: &[u8], messages: &mut Vec<Vec<u8>>) -> Result<(), Status> {
        if line.trim_ascii().is_empty() {
            return Ok(());
        }
        let items = protobuf::line_messages(line)
            .map_err(|violation| self.not_a_message(violation.to_string()))?;
        for item in items {
            let message = self
                .message
                .from_json(&item)
                .map_err(|violation| self.not_a_message(violation.to_string()))?;
            self.taken += 1;
            messages.push(protobuf::to_binary(&message));
        }
        Ok(())
    }

    fn not_a_message(&self, reason: String) -> Status {
        Status::new(
            Code::Internal,
            format!(
                "{}: message {} of the function's result is not a {}: {reason}",
                wisp_engine::signature::OUTPUT_VIOLATION,
                self.taken,
                self.message.descriptor.full_name()
            ),
        )
    }
}

/// The input and output messages a call of `method` is decoded and encoded with, and whether the
/// method streams its responses: those of the route bound to the method, else those of the
/// version's own signature.
fn messages_for(
    resolved: &Resolved,
    method: &str,
) -> Result<(protobuf::CompiledMessage, protobuf::CompiledMessage, bool), Status> {
    let signature = resolved
        .typed_of(&resolved.primary)
        .and_then(|typed| typed.signature_for_method(method));
    match (
        signature.and_then(|signature| signature.message(Side::Input)),
        signature.and_then(|signature| signature.message(Side::Output)),
    ) {
        (Some(input), Some(output)) => Ok((
            input.clone(),
            output.clone(),
            signature.is_some_and(|signature| signature.streams_output()),
        )),
        _ => Err(Status::new(
            Code::FailedPrecondition,
            format!(
                "{} has no protobuf input and output messages for {method}, so it cannot be called over gRPC",
                resolved.invoked_arn
            ),
        )),
    }
}

/// Server reflection: a bidirectional stream, one answer per request as each arrives.
fn reflect(state: Arc<ApiState>, account: AccountId, mut body: Body) -> Response {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Frame<Bytes>>(8);
    tokio::spawn(async move {
        let mut buffer = Bytes::new();
        let mut catalog: Option<Catalog> = None;
        let outcome: Result<(), Status> = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| {
                    Status::new(
                        Code::Internal,
                        format!("reading the request failed: {error}"),
                    )
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let mut joined = Vec::with_capacity(buffer.len() + data.len());
                joined.extend_from_slice(&buffer);
                joined.extend_from_slice(&data);
                buffer = Bytes::from(joined);
                while let Some(message) = take_message(&mut buffer)? {
                    let request = ServerReflectionRequest::decode(message).map_err(|error| {
                        Status::new(
                            Code::InvalidArgument,
                            format!("not a ServerReflectionRequest: {error}"),
                        )
                    })?;
                    if catalog.is_none() {
                        catalog = Some(build_catalog(&state, &account).await?);
                    }
                    let answer = catalog
                        .as_ref()
                        .expect("built above")
                        .answer(request)
                        .encode_to_vec();
                    if sender
                        .send(Frame::data(length_prefixed(&answer)))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
            Ok(())
        }
        .await;
        let trailers = match outcome {
            Ok(()) => ok_trailers(),
            Err(status) => {
                let mut trailers = HeaderMap::new();
                put_status(&mut trailers, status.code, &status.message);
                trailers
            }
        };
        let _ = sender.send(Frame::trailers(trailers)).await;
    });
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    streamed(frames, HeaderMap::new())
}

/// The services and `.proto` files of every gRPC method the account's functions (or their routes) bind.
async fn build_catalog(state: &ApiState, account: &AccountId) -> Result<Catalog, Status> {
    let bindings = state.control.grpc_bindings(account).await?;
    let mut services = Vec::new();
    let mut pools = Vec::new();
    for (bound, resolved) in bindings {
        let Some(method) = resolved.typed_of(&resolved.primary).and_then(|typed| {
            typed
                .grpc_methods()
                .into_iter()
                .find(|method| wisp_control::grpc::grpc_name(method) == bound)
        }) else {
            continue;
        };
        let service = method.parent_service().full_name().to_string();
        if !services.contains(&service) {
            services.push(service);
        }
        pools.push(method.parent_pool().clone());
    }
    services.sort();
    Ok(Catalog { services, pools })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_taken_whole_from_the_front_of_the_buffer() {
        let mut buffer = Bytes::from([length_prefixed(b"one"), length_prefixed(b"")].concat());
        assert_eq!(take_message(&mut buffer).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(take_message(&mut buffer).unwrap().unwrap(), &b""[..]);
        assert!(take_message(&mut buffer).unwrap().is_none());
        let framed = length_prefixed(b"partial");
        let mut partial = framed.slice(..framed.len() - 1);
        assert!(take_message(&mut partial).unwrap().is_none());
        let mut compressed = Bytes::from_static(&[1, 0, 0, 0, 0]);
        assert_eq!(
            take_message(&mut compressed).unwrap_err().code,
            Code::Unimplemented
        );
    }

    #[test]
    fn compressed_messages_are_inflated_within_the_payload_limit() {
        use std::io::Write as _;
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(b"hello").unwrap();
        let gzipped = gzip.finish().unwrap();
        assert_eq!(decompress(&gzipped, "gzip").unwrap(), &b"hello"[..]);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(b"hello").unwrap();
        assert_eq!(
            decompress(&zlib.finish().unwrap(), "deflate").unwrap(),
            &b"hello"[..]
        );
        assert_eq!(
            decompress(&gzipped, "snappy").unwrap_err().code,
            Code::Unimplemented
        );
        assert_eq!(
            decompress(b"not gzip", "gzip").unwrap_err().code,
            Code::Internal
        );
        // A few kilobytes that inflate past the limit are refused, not inflated whole.
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![0u8; MAX_SYNC_PAYLOAD_BYTES + 1024])
            .unwrap();
        let bomb = bomb.finish().unwrap();
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            decompress(&bomb, "gzip").unwrap_err().code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn wisp_errors_map_onto_grpc_codes() {
        let cases = [
            (ErrorCode::InputSchemaViolation, Code::InvalidArgument),
            (ErrorCode::InvalidRequestContent, Code::InvalidArgument),
            (ErrorCode::ResourceNotFound, Code::NotFound),
            (ErrorCode::TooManyRequests, Code::ResourceExhausted),
            (ErrorCode::RequestTooLarge, Code::ResourceExhausted),
            (ErrorCode::UnrecognizedClient, Code::Unauthenticated),
            (ErrorCode::AccessDenied, Code::PermissionDenied),
            (ErrorCode::IdempotencyKeyMismatch, Code::FailedPrecondition),
            (ErrorCode::Service, Code::Internal),
        ];
        for (error, expected) in cases {
            let status = Status::from(ApiError::new(error, "why"));
            assert_eq!(status.code, expected, "{error:?}");
            assert!(status.message.ends_with("why"));
        }
    }

    fn item(encoding: ProtobufEncoding) -> protobuf::CompiledMessage {
        let files = std::collections::BTreeMap::from([(
            "feed.proto".to_string(),
            "syntax = \"proto3\"; package feed; message Item { int32 index = 1; }".to_string(),
        )]);
        protobuf::CompiledMessage::compile(&wisp_types::ProtobufType {
            files,
            message: "feed.Item".to_string(),
            encoding,
        })
        .unwrap()
    }

    #[test]
    fn json_results_are_cut_into_messages_line_by_line_as_they_come() {
        let mut splitter = Splitter::new(item(ProtobufEncoding::Json));
        let (messages, failure) = splitter.push(b"{\"index\": 1}\n{\"ind");
        assert_eq!((messages, failure.is_none()), (vec![vec![8, 1]], true));
        let (messages, failure) = splitter.push(b"ex\": 2}\n\n{\"index\": 3}");
        assert_eq!((messages, failure.is_none()), (vec![vec![8, 2]], true));
        let (messages, failure) = splitter.finish();
        assert_eq!((messages, failure.is_none()), (vec![vec![8, 3]], true));

        let mut splitter = Splitter::new(item(ProtobufEncoding::Json));
        let (messages, failure) = splitter.push(b"{\"index\": 1}\n{\"index\": \"x\"}\n{}\n");
        assert_eq!(
            messages,
            vec![vec![8, 1]],
            "the message before the bad one goes out"
        );
        let failure = failure.expect("the second line is not an Item");
        assert_eq!(failure.code, Code::Internal);
        assert!(failure.message.contains("message 1"), "{}", failure.message);
    }

    #[test]
    fn a_json_array_is_a_sequence_of_messages() {
        let mut splitter = Splitter::new(item(ProtobufEncoding::Json));
        assert!(
            splitter
                .push(b"[{\"index\": 1}, {\"index\": 2},")
                .0
                .is_empty()
        );
        let (messages, failure) = splitter.push(b" {\"index\": \"x\"}]");
        assert!(messages.is_empty() && failure.is_none());
        let (messages, failure) = splitter.finish();
        assert_eq!(messages, vec![vec![8, 1], vec![8, 2]]);
        assert!(failure.unwrap().message.contains("message 2"));
    }

    #[test]
    fn binary_results_are_cut_at_their_length_prefixes() {
        let whole = protobuf::delimited(&[vec![8, 5], vec![8, 6]]);
        let mut splitter = Splitter::new(item(ProtobufEncoding::Binary));
        let (messages, failure) = splitter.push(&whole[..4]);
        assert_eq!((messages, failure.is_none()), (vec![vec![8, 5]], true));
        let (messages, failure) = splitter.push(&whole[4..]);
        assert_eq!((messages, failure.is_none()), (vec![vec![8, 6]], true));
        assert!(splitter.finish().1.is_none());

        let mut splitter = Splitter::new(item(ProtobufEncoding::Binary));
        let (_, failure) = splitter.push(&[2, 8]);
        assert!(failure.is_none(), "half a message waits for the rest");
        let (messages, failure) = splitter.finish();
        assert!(messages.is_empty());
        assert!(
            failure
                .unwrap()
                .message
                .contains("after the last whole message")
        );
        let (_, failure) = Splitter::new(item(ProtobufEncoding::Binary)).push(&[1, 0xff]);
        assert_eq!(failure.expect("not an Item").code, Code::Internal);
    }

    #[test]
    fn call_timeouts_are_read_in_every_unit() {
        let timeout = |text: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", HeaderValue::from_str(text).unwrap());
            call_timeout(&headers)
        };
        for (text, expected) in [
            ("2H", Duration::from_secs(7200)),
            ("3M", Duration::from_secs(180)),
            ("10S", Duration::from_secs(10)),
            ("250m", Duration::from_millis(250)),
            ("99999999u", Duration::from_micros(99_999_999)),
            ("5n", Duration::from_nanos(5)),
        ] {
            assert_eq!(timeout(text).unwrap(), Some(expected), "{text}");
        }
        for text in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S"] {
            assert_eq!(
                timeout(text).unwrap_err().code,
                Code::InvalidArgument,
                "{text:?}"
            );
        }
        assert_eq!(call_timeout(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn status_messages_are_percent_encoded() {
        let mut headers = HeaderMap::new();
        put_status(&mut headers, Code::Unknown, "50% off: café\nnext");
        assert_eq!(headers["grpc-status"], "2");
        assert_eq!(headers["grpc-message"], "50%25 off: caf%C3%A9%0Anext");
    }
}
