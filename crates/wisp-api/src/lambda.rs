//! Lambda's REST routes: control plane (`/2015-03-31/functions…`, concurrency) and Invoke.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use wisp_control::{AliasInput, CreateFunction, UpdateConfiguration};
use wisp_engine::{InvocationType, InvokeRequest};
use wisp_types::*;

use crate::{ApiState, Caller, Failure, json_response, parse_json};

type ApiResult = Result<Response, Failure>;
type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(create_function).get(list_functions),
        )
        .route(
            "/2015-03-31/functions/",
            post(create_function).get(list_functions),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(get_function).delete(delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(get_function_configuration).put(update_function_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            put(update_function_code),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(publish_version).get(list_versions),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(create_alias).get(list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(get_alias).put(update_alias).delete(delete_alias),
        )
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            post(crate::streaming::invoke_with_response_stream),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(put_concurrency).delete(delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(get_concurrency),
        )
        .merge(crate::event_config::routes())
        .merge(crate::provisioned::routes())
        .merge(crate::layers::routes())
}

/// A function named in a path: a name, or a (partial) ARN; returns the name and any qualifier in it.
pub(crate) fn path_function(
    text: &str,
    account: &AccountId,
) -> Result<(String, Option<Qualifier>), Failure> {
    let reference = FunctionRef::parse(text)?;
    if let Some(named) = &reference.account
        && named != account
    {
        return Err(Failure(ApiError::new(
            ErrorCode::AccessDenied,
            format!("account {account} may not access functions of account {named}"),
        )));
    }
    Ok((reference.name, reference.qualifier))
}

pub(crate) fn query_qualifier(
    params: &HashMap<String, String>,
) -> Result<Option<Qualifier>, Failure> {
    Ok(params
        .get("Qualifier")
        .map(|text| Qualifier::parse(text))
        .transpose()?)
}

pub(crate) fn max_items(params: &HashMap<String, String>) -> Result<usize, Failure> {
    match params.get("MaxItems") {
        None => Ok(50),
        Some(text) => match text.parse::<usize>() {
            Ok(count) if (1..=10_000).contains(&count) => Ok(count),
            _ => Err(Failure(ApiError::invalid(format!(
                "MaxItems {text:?} must be a number from 1 to 10000"
            )))),
        },
    }
}

fn decode_zip(zip_base64: Option<&str>) -> Result<Vec<u8>, Failure> {
    let text = zip_base64.ok_or_else(|| {
        Failure(ApiError::invalid(
            "Code.ZipFile is required (S3 and image code locations are not supported)",
        ))
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|error| {
            Failure(ApiError::invalid(format!(
                "Code.ZipFile is not valid base64: {error}"
            )))
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CodeBody {
    zip_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateFunctionBody {
    function_name: String,
    runtime: Option<String>,
    handler: Option<String>,
    role: Option<String>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    ephemeral_storage: Option<EphemeralStorage>,
    code: Option<CodeBody>,
    #[serde(default)]
    publish: bool,
    package_type: Option<String>,
    #[serde(default)]
    layers: Vec<String>,
}

async fn create_function(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let body: CreateFunctionBody = parse_json(&body)?;
    if body
        .package_type
        .as_deref()
        .is_some_and(|package| package != "Zip")
    {
        return Err(Failure(ApiError::invalid(
            "PackageType Image is not supported: deploy a zip package",
        )));
    }
    let runtime = body
        .runtime
        .ok_or_else(|| Failure(ApiError::invalid("Runtime is required")))?;
    let zip = decode_zip(body.code.as_ref().and_then(|code| code.zip_file.as_deref()))?;
    let input = CreateFunction {
        name: body.function_name,
        runtime,
        handler: body.handler,
        role: body.role,
        description: body.description,
        timeout: body.timeout,
        memory_size: body.memory_size,
        environment: body.environment,
        ephemeral_storage: body.ephemeral_storage,
        zip,
        publish: body.publish,
        layers: body.layers,
    };
    let config = state.control.create_function(&account, input).await?;
    Ok(json_response(StatusCode::CREATED, &config))
}

async fn list_functions(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Query(params): Params,
) -> ApiResult {
    let (functions, next_marker) = state
        .control
        .list_functions(
            &account,
            params.get("Marker").map(String::as_str),
            max_items(&params)?,
        )
        .await?;
    let mut body = json!({ "Functions": functions });
    if let Some(marker) = next_marker {
        body["NextMarker"] = marker.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_function(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let (name, path_qualifier) = path_function(&name, &account)?;
    let qualifier = query_qualifier(&params)?.or(path_qualifier);
    let (version, reserved) = state
        .control
        .get_function(&account, &name, qualifier.as_ref())
        .await?;
    let mut body = json!({
        "Configuration": version.config,
        "Code": { "RepositoryType": "Wisp", "Location": format!("wisp://blobs/{}", version.code_digest) },
        "Tags": {},
    });
    if let Some(reserved) = reserved {
        body["Concurrency"] = json!({ "ReservedConcurrentExecutions": reserved });
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_function_configuration(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let (name, path_qualifier) = path_function(&name, &account)?;
    let qualifier = query_qualifier(&params)?.or(path_qualifier);
    let (version, _) = state
        .control
        .get_function(&account, &name, qualifier.as_ref())
        .await?;
    Ok(json_response(StatusCode::OK, &version.config))
}

async fn delete_function(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let (name, path_qualifier) = path_function(&name, &account)?;
    let qualifier = query_qualifier(&params)?.or(path_qualifier);
    state
        .control
        .delete_function(&account, &name, qualifier.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeBody {
    zip_file: Option<String>,
    #[serde(default)]
    publish: bool,
    revision_id: Option<String>,
}

async fn update_function_code(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let body: UpdateCodeBody = parse_json(&body)?;
    let zip = decode_zip(body.zip_file.as_deref())?;
    let config = state
        .control
        .update_function_code(&account, &name, zip, body.publish, body.revision_id)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateConfigurationBody {
    runtime: Option<String>,
    handler: Option<String>,
    role: Option<String>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<Environment>,
    ephemeral_storage: Option<EphemeralStorage>,
    layers: Option<Vec<String>>,
    revision_id: Option<String>,
}

async fn update_function_configuration(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let body: UpdateConfigurationBody = parse_json(&body)?;
    let update = UpdateConfiguration {
        runtime: body.runtime,
        handler: body.handler,
        role: body.role,
        description: body.description,
        timeout: body.timeout,
        memory_size: body.memory_size,
        environment: body.environment,
        ephemeral_storage: body.ephemeral_storage,
        layers: body.layers,
        revision_id: body.revision_id,
    };
    let config = state
        .control
        .update_function_configuration(&account, &name, update)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishBody {
    description: Option<String>,
    revision_id: Option<String>,
}

async fn publish_version(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let body: PublishBody = parse_json(&body)?;
    let config = state
        .control
        .publish_version(&account, &name, body.description, body.revision_id)
        .await?;
    Ok(json_response(StatusCode::CREATED, &config))
}

async fn list_versions(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let (versions, next_marker) = state
        .control
        .list_versions(
            &account,
            &name,
            params.get("Marker").map(String::as_str),
            max_items(&params)?,
        )
        .await?;
    let mut body = json!({ "Versions": versions });
    if let Some(marker) = next_marker {
        body["NextMarker"] = marker.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasBody {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<AliasRoutingConfiguration>,
    revision_id: Option<String>,
}

impl AliasBody {
    fn input(self) -> AliasInput {
        AliasInput {
            function_version: self.function_version,
            description: self.description,
            routing: self.routing_config,
            revision_id: self.revision_id,
        }
    }
}

async fn create_alias(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let mut body: AliasBody = parse_json(&body)?;
    let alias = body
        .name
        .take()
        .ok_or_else(|| Failure(ApiError::invalid("Name is required")))?;
    let config = state
        .control
        .create_alias(&account, &name, &alias, body.input())
        .await?;
    Ok(json_response(StatusCode::CREATED, &config))
}

async fn list_aliases(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let aliases = state
        .control
        .list_aliases(
            &account,
            &name,
            params.get("FunctionVersion").map(String::as_str),
        )
        .await?;
    // Aliases per function are few; Marker is the last alias name of the previous page.
    let limit = max_items(&params)?;
    let start = match params.get("Marker") {
        Some(marker) => aliases
            .iter()
            .position(|alias| alias.name == *marker)
            .map(|index| index + 1)
            .unwrap_or(aliases.len()),
        None => 0,
    };
    let page: Vec<_> = aliases.iter().skip(start).take(limit).collect();
    let mut body = json!({ "Aliases": page });
    if start + limit < aliases.len()
        && let Some(last) = page.last()
    {
        body["NextMarker"] = last.name.clone().into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

async fn get_alias(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    Ok(json_response(
        StatusCode::OK,
        &state.control.get_alias(&account, &name, &alias).await?,
    ))
}

async fn update_alias(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let body: AliasBody = parse_json(&body)?;
    Ok(json_response(
        StatusCode::OK,
        &state
            .control
            .update_alias(&account, &name, &alias, body.input())
            .await?,
    ))
}

async fn delete_alias(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    state.control.delete_alias(&account, &name, &alias).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyBody {
    reserved_concurrent_executions: Option<u32>,
}

async fn put_concurrency(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let body: ConcurrencyBody = parse_json(&body)?;
    let reserved = body.reserved_concurrent_executions.ok_or_else(|| {
        Failure(ApiError::invalid(
            "ReservedConcurrentExecutions is required",
        ))
    })?;
    let reserved = state
        .control
        .put_function_concurrency(&account, &name, reserved)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "ReservedConcurrentExecutions": reserved }),
    ))
}

async fn get_concurrency(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    let (_, reserved) = state.control.get_function(&account, &name, None).await?;
    let body = match reserved {
        Some(reserved) => json!({ "ReservedConcurrentExecutions": reserved }),
        None => json!({}),
    };
    Ok(json_response(StatusCode::OK, &body))
}

async fn delete_concurrency(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let (name, _) = path_function(&name, &account)?;
    state
        .control
        .delete_function_concurrency(&account, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `X-Amz-Log-Type`: whether the caller wants the log tail.
pub(crate) fn log_tail_wanted(headers: &HeaderMap) -> Result<bool, Failure> {
    match headers.get("x-amz-log-type").map(|value| value.to_str()) {
        None | Some(Ok("None")) => Ok(false),
        Some(Ok("Tail")) => Ok(true),
        Some(other) => Err(Failure(ApiError::invalid(format!(
            "LogType {:?} must be None or Tail",
            other.unwrap_or("(not text)")
        )))),
    }
}

/// `X-Amz-Client-Context`, decoded from base64 (the runtime receives JSON text).
pub(crate) fn client_context(headers: &HeaderMap) -> Result<Option<String>, Failure> {
    let Some(encoded) = headers.get("x-amz-client-context") else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|_| {
            Failure(ApiError::invalid(
                "X-Amz-Client-Context must be base64-encoded JSON",
            ))
        })?;
    Ok(Some(String::from_utf8(decoded).map_err(|_| {
        Failure(ApiError::invalid("X-Amz-Client-Context must be UTF-8 JSON"))
    })?))
}

async fn invoke(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let invocation_type = match header("x-amz-invocation-type").unwrap_or("RequestResponse") {
        "RequestResponse" => InvocationType::RequestResponse,
        "DryRun" => InvocationType::DryRun,
        "Event" => InvocationType::Event,
        other => {
            return Err(Failure(ApiError::invalid(format!(
                "InvocationType {other:?} must be RequestResponse, Event or DryRun"
            ))));
        }
    };
    let want_log_tail = log_tail_wanted(&headers)?;
    let client_context = client_context(&headers)?;
    let function = FunctionRef::parse(&name)?;
    let request = InvokeRequest {
        account,
        function,
        qualifier: query_qualifier(&params)?,
        payload: body,
        invocation_type,
        want_log_tail,
        client_context,
        idempotency_key: header("idempotency-key").map(str::to_string),
        skip_hooks: false,
        grpc_method: None,
        caller_deadline_ms: None,
    };
    if invocation_type == InvocationType::Event {
        // Answered only once the event is durable; it runs later, from its function's queue.
        let accepted = state.engine.invoke(request).await?;
        let mut response = StatusCode::ACCEPTED.into_response();
        if let Ok(value) = HeaderValue::from_str(&accepted.request_id) {
            response.headers_mut().insert("x-amzn-requestid", value);
        }
        return Ok(response);
    }
    let dry_run = invocation_type == InvocationType::DryRun;
    // The invocation runs in its own task: a caller that hangs up does not cancel it, so it still
    // completes, is recorded, and returns its instance and concurrency slot only when it is done.
    let engine = state.engine.clone();
    let outcome = tokio::spawn(async move { engine.invoke(request).await })
        .await
        .map_err(|error| {
            Failure(ApiError::internal(format!(
                "invocation task failed: {error}"
            )))
        })??;
    let status = if dry_run {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = (status, outcome.payload).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&outcome.request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Ok(value) = HeaderValue::from_str(&outcome.executed_version) {
        headers.insert("x-amz-executed-version", value);
    }
    if let Some(error) = outcome.function_error
        && let Ok(value) = HeaderValue::from_str(&error)
    {
        headers.insert("x-amz-function-error", value);
    }
    // A duplicate of an idempotent call: the outcome is the one of this earlier request.
    if let Some(original) = outcome.replay_of
        && let Ok(value) = HeaderValue::from_str(&original)
    {
        let name = if outcome.memoized {
            "x-wisp-memoized"
        } else {
            "x-wisp-idempotent-replay"
        };
        headers.insert(name, value);
    }
    if let Some(tail) = outcome.log_tail
        && let Ok(value) =
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(tail))
    {
        headers.insert("x-amz-log-result", value);
    }
    Ok(response)
}
