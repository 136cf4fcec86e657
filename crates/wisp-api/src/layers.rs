//! Lambda's layer routes (`/2018-10-31/layers…`): PublishLayerVersion, GetLayerVersion,
//! GetLayerVersionByArn, ListLayers, ListLayerVersions and DeleteLayerVersion.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use wisp_control::layers::{LayerVersion, PublishLayer, path_layer_name};
use wisp_types::*;

use crate::lambda::max_items;
use crate::{ApiState, Caller, Failure, json_response, parse_json};

type ApiResult = Result<Response, Failure>;
type Params = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/2018-10-31/layers", get(list_layers))
        .route("/2018-10-31/layers/", get(list_layers))
        .route(
            "/2018-10-31/layers/{name}/versions",
            get(list_layer_versions).post(publish_layer_version),
        )
        .route(
            "/2018-10-31/layers/{name}/versions/{version}",
            get(get_layer_version).delete(delete_layer_version),
        )
}

/// A layer version as Lambda answers it (without what only Wisp needs).
fn answer(version: &LayerVersion) -> Value {
    let mut value = serde_json::to_value(version).expect("layer versions serialise");
    if let Some(object) = value.as_object_mut() {
        object.remove("WispDigest");
    }
    value
}

fn path_version(text: &str) -> Result<u64, Failure> {
    text.parse::<u64>()
        .ok()
        .filter(|number| *number > 0)
        .ok_or_else(|| {
            Failure(ApiError::invalid(format!(
                "layer version number {text:?} must be a positive integer"
            )))
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContentBody {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishBody {
    content: Option<ContentBody>,
    description: Option<String>,
    #[serde(default)]
    compatible_runtimes: Vec<String>,
    license_info: Option<String>,
}

async fn publish_layer_version(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    let name = path_layer_name(&account, &name)?;
    let body: PublishBody = parse_json(&body)?;
    let content = body
        .content
        .ok_or_else(|| Failure(ApiError::invalid("Content is required")))?;
    if content.s3_bucket.is_some() {
        return Err(Failure(ApiError::invalid(
            "Content.S3Bucket is not supported: upload the layer as Content.ZipFile",
        )));
    }
    let text = content.zip_file.ok_or_else(|| {
        Failure(ApiError::invalid(
            "Content.ZipFile is required (S3 locations are not supported)",
        ))
    })?;
    let zip = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|error| {
            Failure(ApiError::invalid(format!(
                "Content.ZipFile is not valid base64: {error}"
            )))
        })?;
    let version = state
        .control
        .publish_layer_version(
            &account,
            PublishLayer {
                name,
                zip,
                description: body.description,
                compatible_runtimes: body.compatible_runtimes,
                license_info: body.license_info,
            },
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, &answer(&version)))
}

async fn get_layer_version(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let name = path_layer_name(&account, &name)?;
    let version = state
        .control
        .get_layer_version(&account, &name, path_version(&version)?)
        .await?;
    Ok(json_response(StatusCode::OK, &answer(&version)))
}

async fn delete_layer_version(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let name = path_layer_name(&account, &name)?;
    state
        .control
        .delete_layer_version(&account, &name, path_version(&version)?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_layer_versions(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Params,
) -> ApiResult {
    let name = path_layer_name(&account, &name)?;
    let (versions, next) = state
        .control
        .list_layer_versions(
            &account,
            &name,
            params.get("CompatibleRuntime").map(String::as_str),
            params.get("Marker").map(String::as_str),
            max_items(&params)?,
        )
        .await?;
    let mut body = json!({ "LayerVersions": versions.iter().map(|v| {
        let mut value = answer(v);
        if let Some(object) = value.as_object_mut() {
            object.remove("Content");
            object.remove("LayerArn");
        }
        value
    }).collect::<Vec<_>>() });
    if let Some(marker) = next {
        body["NextMarker"] = marker.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// ListLayers, or GetLayerVersionByArn when the query is `find=LayerVersion&Arn=…`.
async fn list_layers(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Query(params): Params,
) -> ApiResult {
    if let Some(find) = params.get("find") {
        if find != "LayerVersion" {
            return Err(Failure(ApiError::invalid(format!(
                "find={find} is not supported; use find=LayerVersion&Arn=…"
            ))));
        }
        let arn = params
            .get("Arn")
            .ok_or_else(|| Failure(ApiError::invalid("Arn is required with find=LayerVersion")))?;
        let version = state
            .control
            .get_layer_version_by_arn(&account, arn)
            .await?;
        return Ok(json_response(StatusCode::OK, &answer(&version)));
    }
    let (layers, next) = state
        .control
        .list_layers(
            &account,
            params.get("CompatibleRuntime").map(String::as_str),
            params.get("Marker").map(String::as_str),
            max_items(&params)?,
        )
        .await?;
    let mut body = json!({ "Layers": layers });
    if let Some(marker) = next {
        body["NextMarker"] = marker.into();
    }
    Ok(json_response(StatusCode::OK, &body))
}
