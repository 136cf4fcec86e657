//! Lambda's event invoke configuration routes (`/2019-09-25/functions/{name}/event-invoke-config`):
//! Put, Update, Get, Delete and List, decoded and encoded in Lambda's shape.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use wisp_control::EventInvokeInput;
use wisp_types::*;

use crate::lambda::{max_items, path_function, query_qualifier};
use crate::{ApiState, Caller, Failure, json_response, parse_json};

type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(get_config)
                .put(put_config)
                .post(update_config)
                .delete(delete_config),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config/list",
            get(list_configs),
        )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigBody {
    /// Signed, so that a negative number gets a clear range error rather than a parse error.
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfig>,
}

fn in_range(name: &str, value: Option<i64>) -> Result<Option<u32>, Failure> {
    value
        .map(|number| {
            u32::try_from(number).map_err(|_| {
                Failure(ApiError::invalid(format!(
                    "{name} {number} is out of range"
                )))
            })
        })
        .transpose()
}

/// The function and qualifier a request names: in the path (`name:qualifier`) or as `?Qualifier=`.
fn target(
    name: &str,
    account: &AccountId,
    params: &HashMap<String, String>,
) -> Result<(String, Option<Qualifier>), Failure> {
    let (name, from_path) = path_function(name, account)?;
    let from_query = query_qualifier(params)?;
    match (from_path, from_query) {
        (Some(path), Some(query)) if path != query => Err(Failure(ApiError::invalid(format!(
            "the qualifier in the function name ({path}) and the Qualifier parameter ({query}) differ"
        )))),
        (Some(path), _) => Ok((name, Some(path))),
        (None, query) => Ok((name, query)),
    }
}

async fn write_config(
    state: &ApiState,
    account: &AccountId,
    name: &str,
    params: &HashMap<String, String>,
    body: &Bytes,
    replace: bool,
) -> Result<Response, Failure> {
    let (name, qualifier) = target(name, account, params)?;
    let body: ConfigBody = parse_json(body)?;
    let input = EventInvokeInput {
        maximum_retry_attempts: in_range("MaximumRetryAttempts", body.maximum_retry_attempts)?,
        maximum_event_age_in_seconds: in_range(
            "MaximumEventAgeInSeconds",
            body.maximum_event_age_in_seconds,
        )?,
        destination_config: body.destination_config,
    };
    let config = state
        .control
        .put_event_invoke_config(account, &name, qualifier.as_ref(), input, replace)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn put_config(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, Failure> {
    write_config(&state, &account, &name, &params, &body, true).await
}

async fn update_config(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> Result<Response, Failure> {
    write_config(&state, &account, &name, &params, &body, false).await
}

async fn get_config(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, Failure> {
    let (name, qualifier) = target(&name, &account, &params)?;
    let config = state
        .control
        .get_event_invoke_config(&account, &name, qualifier.as_ref())
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn delete_config(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, Failure> {
    let (name, qualifier) = target(&name, &account, &params)?;
    state
        .control
        .delete_event_invoke_config(&account, &name, qualifier.as_ref())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_configs(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, Failure> {
    let (name, _) = path_function(&name, &account)?;
    let (configs, marker) = state
        .control
        .list_event_invoke_configs(
            &account,
            &name,
            params.get("Marker").map(String::as_str),
            max_items(&params)?,
        )
        .await?;
    let mut body = json!({ "FunctionEventInvokeConfigs": configs });
    if let Some(marker) = marker {
        body["NextMarker"] = marker.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}
