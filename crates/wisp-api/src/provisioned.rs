//! Lambda's provisioned concurrency routes (`/2019-09-30/functions/{name}/provisioned-concurrency`):
//! Put, Get and Delete with `?Qualifier=`, List with `?List=ALL`. Decoding and encoding only; the
//! rules are the control plane's and the instances the engine's.

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
use wisp_types::*;

use crate::{ApiState, Caller, Failure, json_response, parse_json};

type ApiResult = Result<Response, Failure>;
type Params = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route(
        "/2019-09-30/functions/{name}/provisioned-concurrency",
        get(get_or_list).put(put).delete(delete),
    )
}

/// The function name and the qualifier, from the `Qualifier` parameter or the name itself.
fn function_and_qualifier(
    text: &str,
    account: &AccountId,
    params: &HashMap<String, String>,
    required: bool,
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
    let from_parameter = params
        .get("Qualifier")
        .map(|text| Qualifier::parse(text))
        .transpose()?;
    let qualifier = match (reference.qualifier, from_parameter) {
        (Some(from_name), Some(from_parameter)) if from_name != from_parameter => {
            return Err(Failure(ApiError::invalid(format!(
                "the qualifier in the function name ({from_name}) and the Qualifier parameter ({from_parameter}) differ"
            ))));
        }
        (from_name, from_parameter) => from_parameter.or(from_name),
    };
    if required && qualifier.is_none() {
        return Err(Failure(ApiError::invalid(
            "Qualifier is required: give a version number or an alias name",
        )));
    }
    Ok((reference.name, qualifier))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutBody {
    provisioned_concurrent_executions: Option<i64>,
}

async fn put(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
    body: Bytes,
) -> ApiResult {
    let (name, qualifier) = function_and_qualifier(&name, &account, &params, true)?;
    let qualifier = qualifier.expect("required above");
    let body: PutBody = parse_json(&body)?;
    let requested = match body.provisioned_concurrent_executions {
        None => {
            return Err(Failure(ApiError::invalid(
                "ProvisionedConcurrentExecutions is required",
            )));
        }
        Some(count) => u32::try_from(count).map_err(|_| {
            Failure(ApiError::invalid(format!(
                "ProvisionedConcurrentExecutions {count} must be a whole number of at least 1"
            )))
        })?,
    };
    let config = state
        .engine
        .put_provisioned_concurrency(&account, &name, &qualifier, requested)
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &config))
}

/// GetProvisionedConcurrencyConfig, or ListProvisionedConcurrencyConfigs when `List=ALL` is given.
async fn get_or_list(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    if let Some(list) = params.get("List") {
        if list != "ALL" {
            return Err(Failure(ApiError::invalid(format!(
                "List {list:?} must be ALL"
            ))));
        }
        let (name, _) = function_and_qualifier(&name, &account, &params, false)?;
        let max_items = match params.get("MaxItems") {
            None => 50,
            Some(text) => match text.parse::<usize>() {
                Ok(count) if (1..=50).contains(&count) => count,
                _ => {
                    return Err(Failure(ApiError::invalid(format!(
                        "MaxItems {text:?} must be a number from 1 to 50"
                    ))));
                }
            },
        };
        let (configs, next_marker) = state
            .engine
            .list_provisioned_concurrency(
                &account,
                &name,
                params.get("Marker").map(String::as_str),
                max_items,
            )
            .await?;
        let mut body = json!({ "ProvisionedConcurrencyConfigs": configs });
        if let Some(marker) = next_marker {
            body["NextMarker"] = marker.into();
        }
        return Ok(json_response(StatusCode::OK, &body));
    }
    let (name, qualifier) = function_and_qualifier(&name, &account, &params, true)?;
    let config = state
        .engine
        .get_provisioned_concurrency(&account, &name, &qualifier.expect("required above"))
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn delete(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let (name, qualifier) = function_and_qualifier(&name, &account, &params, true)?;
    state
        .engine
        .delete_provisioned_concurrency(&account, &name, &qualifier.expect("required above"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
