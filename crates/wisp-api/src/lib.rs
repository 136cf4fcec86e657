//! The HTTP API: Lambda's REST protocol (control plane, Invoke and InvokeWithResponseStream),
//! Wisp's own `/wisp/v1` routes, and the gRPC gateway on the same port (`grpc.rs`).
//!
//! Handlers decode the wire format, call the control plane or the engine, and encode the answer
//! in AWS's shape (errors: `X-Amzn-ErrorType` header and a JSON body with `Type` and `Message`).
//! No business rule lives here: validation of values is the control plane's, invocation is the engine's.

pub mod auth;
mod bus;
mod event_config;
mod events;
pub mod grpc;
mod grpc_reflection;
mod lambda;
mod layers;
mod provisioned;
mod receipts;
mod signature;
mod streaming;
mod wisp;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use wisp_control::ControlPlane;
use wisp_engine::Engine;
use wisp_store::Log;
use wisp_types::{AccountId, ApiError, ErrorCode};

pub use auth::{AccessKey, Authenticator};

/// Largest request body read at all (a 50 MB zip, base64-encoded, inside JSON).
pub const MAX_REQUEST_BYTES: usize = 70 * 1024 * 1024;

/// Everything the handlers need.
pub struct ApiState {
    pub control: Arc<ControlPlane>,
    pub engine: Arc<Engine>,
    pub log: Arc<dyn Log>,
    pub auth: Authenticator,
    pub region: String,
    /// The gRPC gateway's memory of which function serves which method.
    pub grpc: grpc::GrpcBindings,
}

/// The whole HTTP API as one router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .merge(lambda::routes())
        .merge(wisp::routes())
        .merge(receipts::routes())
        .merge(events::routes())
        .merge(signature::routes())
        .merge(bus::routes())
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        // gRPC calls are told apart before authentication reads (and buffers) the whole body.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            grpc::dispatch,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// The authenticated caller, placed in request extensions by [`authenticate`].
#[derive(Clone)]
pub struct Caller(pub AccountId);

/// An error answered in AWS's shape.
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Failure {
        Failure(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = StatusCode::from_u16(error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if error.code == ErrorCode::Service {
            "Service"
        } else {
            "User"
        };
        let mut body =
            serde_json::json!({ "Type": kind, "Message": error.message, "message": error.message });
        if let Some(reason) = error.reason {
            body["Reason"] = reason.into();
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(error.code.aws_name()),
        );
        if let Some(seconds) = error.retry_after_seconds {
            headers.insert("retry-after", HeaderValue::from(seconds));
        }
        if let Some(value) = error
            .request_id
            .and_then(|id| HeaderValue::from_str(&id).ok())
        {
            headers.insert("x-amzn-requestid", value);
        }
        response
    }
}

async fn unknown_route(request: Request) -> Failure {
    Failure(ApiError::new(
        ErrorCode::ResourceNotFound,
        format!(
            "no such API route: {} {}",
            request.method(),
            request.uri().path()
        ),
    ))
}

/// Reads the body (bounded), verifies the SigV4 signature, and passes the request on with the caller attached.
async fn authenticate(
    State(state): State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return with_request_id(
                Failure(ApiError::new(
                    ErrorCode::RequestTooLarge,
                    format!("Request must be smaller than {MAX_REQUEST_BYTES} bytes"),
                ))
                .into_response(),
            );
        }
    };
    let signed = auth::SignedRequest {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
    };
    let response = match state.auth.authenticate(&signed).await {
        Ok(account) => {
            parts.extensions.insert(Caller(account));
            // Lifecycle events of whatever the request changes name the key that signed it.
            let actor = auth::access_key_id(&parts.headers).unwrap_or_else(|| "anonymous".into());
            let request = Request::from_parts(parts, Body::from(body));
            wisp_control::lifecycle::with_actor(actor, next.run(request)).await
        }
        Err(error) => Failure(error).into_response(),
    };
    with_request_id(response)
}

/// Adds `x-amzn-RequestId` to answers that have none (invocations carry the engine's request id).
fn with_request_id(mut response: Response) -> Response {
    if !response.headers().contains_key("x-amzn-requestid")
        && let Ok(value) = HeaderValue::from_str(&wisp_engine::random_uuid().to_string())
    {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

/// Parses a JSON body, answering malformed input with InvalidRequestContentException.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    let text: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(text).map_err(|error| {
        Failure(ApiError::new(
            ErrorCode::InvalidRequestContent,
            format!("Could not parse request body into json: {error}"),
        ))
    })
}

/// Parses a Wisp settings document, naming the shape expected when it is not one
/// (InvalidParameterValueException: `{what} not valid (expected {expected}): …`).
pub(crate) fn parse_settings<T: serde::de::DeserializeOwned>(
    body: &Bytes,
    what: &str,
    expected: &str,
) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| {
        Failure(ApiError::invalid(format!(
            "{what} not valid (expected {expected}): {error}"
        )))
    })
}

pub(crate) fn store_failure(error: wisp_store::StoreError) -> Failure {
    Failure(ApiError::internal(format!("store error: {error}")))
}

/// A whole-number query parameter, or `default` when it is absent.
pub(crate) fn number(
    params: &std::collections::HashMap<String, String>,
    name: &str,
    default: u64,
) -> Result<u64, Failure> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            Failure(ApiError::invalid(format!(
                "{name} {text:?} must be a number"
            )))
        }),
    }
}

/// One page of a log topic as the `/wisp/v1` readers serve it (logs, topic events, lifecycle
/// events): from offset `from` (default: the last `limit` records, at most 10,000), after long-polling
/// up to `wait` seconds (at most 60) when nothing is newer; with the offset to ask for next.
pub(crate) async fn log_page(
    state: &ApiState,
    topic: &str,
    params: &std::collections::HashMap<String, String>,
) -> Result<(Vec<wisp_store::Record>, u64), Failure> {
    let limit = number(params, "limit", 100)?.clamp(1, 10_000) as usize;
    let last = state.log.last_offset(topic).await.map_err(store_failure)?;
    let from = match params.get("from") {
        Some(_) => number(params, "from", 1)?.max(1),
        None => last.saturating_sub(limit as u64 - 1).max(1),
    };
    let wait = number(params, "wait", 0)?.min(60);
    if from > last && wait > 0 {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(wait),
            state.log.wait_for(topic, from - 1),
        )
        .await;
    }
    let records = state
        .log
        .read(topic, from, limit)
        .await
        .map_err(store_failure)?;
    let next = records
        .last()
        .map(|record| record.offset + 1)
        .unwrap_or(from);
    Ok((records, next))
}

pub(crate) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("responses serialise");
    (status, [("content-type", "application/json")], body).into_response()
}
