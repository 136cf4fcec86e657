//! The Runtime API that function runtimes talk to (`/2018-06-01/runtime/...`), one server per sandbox.
//!
//! Each sandbox's listener lives in that sandbox's own network namespace; the engine hands the
//! accepted connections' listener to [`serve`] together with the instance's [`InstanceChannel`], so a
//! runtime can only ever see the invocations of its own instance.
//!
//! This crate knows nothing about storage, scheduling or the public API: it moves invocations from a
//! channel to the runtime and outcomes back. Responses come whole (buffered, up to 6 MB) or, in the
//! streaming response mode, frame by frame ([`streaming`]). Wisp's own shutdown extension
//! (`/runtime/wisp/shutdown`) is in [`shutdown`].

pub mod extensions;
pub mod shutdown;
pub mod streaming;
pub mod telemetry;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot, watch};

pub use extensions::{ExtensionsHandle, FunctionIdentity};
pub use streaming::{MAX_STREAMED_RESPONSE_BYTES, StreamFrame};

/// Largest response or error body a runtime may post (Lambda's 6 MB).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// One invocation handed to a runtime.
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    /// Deadline in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    /// The route the event took, with the handler to call: sent as `Wisp-Route` and `Wisp-Handler`.
    pub route: Option<(String, String)>,
    /// The payload's media type: `application/json`, or `application/x-protobuf` for a function that
    /// takes its protobuf input in binary.
    pub content_type: &'static str,
}

/// What the runtime answered for one invocation.
#[derive(Debug)]
pub enum RuntimeOutcome {
    Response(Bytes),
    /// The function failed; `body` is the error document the runtime posted.
    Error {
        error_type: String,
        body: Bytes,
    },
    /// The runtime answers in the streaming response mode: its body follows frame by frame.
    Stream(mpsc::Receiver<StreamFrame>),
}

/// An invocation together with where its outcome goes.
#[derive(Debug)]
pub struct Dispatch {
    pub invocation: Invocation,
    pub respond: oneshot::Sender<RuntimeOutcome>,
}

/// Where the runtime is in its life, as seen through the Runtime API.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeState {
    Initializing,
    /// The runtime asked for its first invocation at this instant: init is done.
    Ready(Instant),
    /// The runtime reported an init error through `/runtime/init/error`.
    InitFailed {
        error_type: String,
        body: Bytes,
    },
}

/// The engine's side of one instance's Runtime API.
pub struct InstanceChannel {
    pub dispatch: mpsc::Sender<Dispatch>,
    pub state: watch::Receiver<RuntimeState>,
    /// Announces a stop to the runtime and follows its shutdown hook.
    pub shutdown: shutdown::ShutdownHandle,
    /// The instance's extensions (Extensions API), if any register.
    pub extensions: ExtensionsHandle,
}

/// The server's side of one instance's Runtime API.
pub struct RuntimeEndpoint {
    inner: Arc<EndpointInner>,
}

pub(crate) struct EndpointInner {
    dispatches: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    current: Mutex<Option<(String, oneshot::Sender<RuntimeOutcome>)>>,
    state: watch::Sender<RuntimeState>,
    shutdown: Arc<shutdown::Shared>,
    extensions: Arc<extensions::Extensions>,
}

/// Creates the two sides of one instance's Runtime API; `identity` is what extensions are told at
/// registration, and names the extensions init waits for.
///
/// `connector` reaches a port inside the sandbox, for the Telemetry API; without it, subscribing fails.
pub fn channel(
    identity: FunctionIdentity,
    connector: Option<telemetry::Connector>,
) -> (InstanceChannel, RuntimeEndpoint) {
    let (dispatch, dispatches) = mpsc::channel(1);
    let (state_sender, state) = watch::channel(RuntimeState::Initializing);
    let shutdown = shutdown::Shared::new();
    let extensions = extensions::Extensions::new(identity, connector);
    let inner = EndpointInner {
        dispatches: tokio::sync::Mutex::new(dispatches),
        current: Mutex::new(None),
        state: state_sender,
        shutdown: shutdown.clone(),
        extensions: extensions.clone(),
    };
    (
        InstanceChannel {
            dispatch,
            state,
            shutdown: shutdown::ShutdownHandle::new(shutdown),
            extensions: ExtensionsHandle { extensions },
        },
        RuntimeEndpoint {
            inner: Arc::new(inner),
        },
    )
}

/// Serves the Runtime API on `listener` until the listener fails or the endpoint's channel closes.
///
/// # Cancel safety
/// Dropping the returned future stops accepting; connections already accepted run until they close.
pub async fn serve(listener: tokio::net::TcpListener, endpoint: RuntimeEndpoint) {
    let inner = endpoint.inner;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "runtime api listener closed");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let inner = inner.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&inner, request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "runtime api connection ended");
            }
        });
    }
}

pub(crate) type Body = Full<Bytes>;

async fn handle(inner: &EndpointInner, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["2018-06-01", "runtime", "invocation", "next"]) => {
            next_invocation(inner).await
        }
        (
            &Method::POST,
            [
                "2018-06-01",
                "runtime",
                "invocation",
                request_id,
                "response",
            ],
        ) => {
            let request_id = request_id.to_string();
            if streaming::is_streaming(&request) {
                return streaming::respond(inner, &request_id, request).await;
            }
            match read_body(request).await {
                Ok(body) => {
                    let answer = complete(inner, &request_id, RuntimeOutcome::Response(body));
                    // Let the invoker answer its caller before this 202 goes out: the caller is
                    // waiting, the runtime only wants to ask for its next invocation.
                    tokio::task::yield_now().await;
                    answer
                }
                Err(response) => {
                    complete(inner, &request_id, too_large_outcome());
                    response
                }
            }
        }
        (&Method::POST, ["2018-06-01", "runtime", "invocation", request_id, "error"]) => {
            let request_id = request_id.to_string();
            let header_type = error_type_header(&request);
            match read_body(request).await {
                Ok(body) => {
                    let (error_type, body) = normalise_error(header_type, body);
                    complete(
                        inner,
                        &request_id,
                        RuntimeOutcome::Error { error_type, body },
                    )
                }
                Err(response) => response,
            }
        }
        (&Method::POST, ["2018-06-01", "runtime", "init", "error"]) => {
            let header_type = error_type_header(&request);
            match read_body(request).await {
                Ok(body) => {
                    let (error_type, body) = normalise_error(header_type, body);
                    inner
                        .state
                        .send_replace(RuntimeState::InitFailed { error_type, body });
                    accepted()
                }
                Err(response) => response,
            }
        }
        (&Method::POST, ["2018-06-01", "runtime", "wisp", "shutdown"]) => {
            shutdown::started(&inner.shutdown)
        }
        (&Method::POST, ["2018-06-01", "runtime", "wisp", "shutdown", "done"]) => {
            shutdown::done(&inner.shutdown, request).await
        }
        (&Method::POST, ["2020-01-01", "extension", "register"]) => {
            let extensions = inner.extensions.clone();
            extensions.handle(inner, "register", request).await
        }
        (&Method::GET, ["2020-01-01", "extension", "event", "next"]) => {
            let extensions = inner.extensions.clone();
            extensions.handle(inner, "next", request).await
        }
        (&Method::POST, ["2020-01-01", "extension", "init", "error"]) => {
            let extensions = inner.extensions.clone();
            extensions.handle(inner, "init-error", request).await
        }
        (&Method::PUT, ["2022-07-01", "telemetry"] | ["2022-07-01", "telemetry", ""]) => {
            let extensions = inner.extensions.clone();
            extensions.handle(inner, "subscribe", request).await
        }
        (&Method::POST, ["2020-01-01", "extension", "exit", "error"]) => {
            let extensions = inner.extensions.clone();
            extensions.handle(inner, "exit-error", request).await
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            format!(
                r#"{{"errorMessage":"no such runtime api route: {} {}","errorType":"InvalidRoute"}}"#,
                request.method(),
                path.replace('"', "")
            ),
        ),
    }
}

async fn next_invocation(inner: &EndpointInner) -> Response<Body> {
    if *inner.state.borrow() == RuntimeState::Initializing {
        // Init is complete once the extensions are ready too.
        inner.extensions.runtime_ready(inner, Instant::now());
    }
    let dispatch = {
        let mut dispatches = inner.dispatches.lock().await;
        dispatches.recv().await
    };
    let Some(Dispatch {
        invocation,
        respond,
    }) = dispatch
    else {
        // The instance is being stopped: no more invocations will come.
        return json_response(
            StatusCode::GONE,
            r#"{"errorMessage":"instance is shutting down","errorType":"InstanceStopping"}"#.into(),
        );
    };
    *inner
        .current
        .lock()
        .unwrap_or_else(|poison| poison.into_inner()) =
        Some((invocation.request_id.clone(), respond));
    inner.extensions.invoke(&invocation);
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", invocation.content_type)
        .header("lambda-runtime-aws-request-id", &invocation.request_id)
        .header(
            "lambda-runtime-deadline-ms",
            invocation.deadline_ms.to_string(),
        )
        .header(
            "lambda-runtime-invoked-function-arn",
            &invocation.invoked_function_arn,
        )
        .header("lambda-runtime-trace-id", &invocation.trace_id);
    if let Some(client_context) = &invocation.client_context {
        response = response.header("lambda-runtime-client-context", client_context);
    }
    if let Some(identity) = &invocation.cognito_identity {
        response = response.header("lambda-runtime-cognito-identity", identity);
    }
    if let Some((route, handler)) = &invocation.route {
        response = response
            .header("wisp-route", route)
            .header("wisp-handler", handler);
    }
    response
        .body(Full::new(invocation.payload))
        .unwrap_or_else(|_| internal_error())
}

pub(crate) fn complete(
    inner: &EndpointInner,
    request_id: &str,
    outcome: RuntimeOutcome,
) -> Response<Body> {
    let mut current = inner
        .current
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    match current.take() {
        Some((current_id, respond)) if current_id == request_id => {
            // The invoker may have given up (timeout); the runtime still gets its 202.
            let _ = respond.send(outcome);
            accepted()
        }
        other => {
            *current = other;
            json_response(
                StatusCode::BAD_REQUEST,
                format!(
                    r#"{{"errorMessage":"request id {:?} is not the invocation in progress","errorType":"InvalidRequestID"}}"#,
                    request_id.replace('"', "")
                ),
            )
        }
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(request.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                r#"{{"errorMessage":"response body exceeds {MAX_RESPONSE_BYTES} bytes","errorType":"RequestEntityTooLarge"}}"#
            ),
        )),
    }
}

fn too_large_outcome() -> RuntimeOutcome {
    RuntimeOutcome::Error {
        error_type: "Function.ResponseSizeTooLarge".into(),
        body: Bytes::from(format!(
            r#"{{"errorMessage":"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).","errorType":"Function.ResponseSizeTooLarge"}}"#
        )),
    }
}

fn error_type_header(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get("lambda-runtime-function-error-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// Picks the error type (the body's `errorType` first, as `awslambdaric` sends no header, then the header)
/// and makes sure the body is a JSON error document.
pub(crate) fn normalise_error(header_type: Option<String>, body: Bytes) -> (String, Bytes) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let body_type = parsed
        .as_ref()
        .and_then(|value| value.get("errorType"))
        .and_then(|value| value.as_str())
        .map(str::to_string);
    let error_type = body_type
        .or(header_type)
        .unwrap_or_else(|| "Unhandled".to_string());
    if parsed.as_ref().is_some_and(|value| value.is_object()) {
        (error_type, body)
    } else {
        let message = String::from_utf8_lossy(&body).into_owned();
        let document = serde_json::json!({ "errorMessage": message, "errorType": error_type });
        (error_type, Bytes::from(document.to_string()))
    }
}

pub(crate) fn accepted() -> Response<Body> {
    json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.into())
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| internal_error())
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
