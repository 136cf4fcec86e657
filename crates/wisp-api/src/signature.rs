//! `/wisp/v1/check` (every wiring of the account, checked again), `/wisp/v1/functions/{name}/routes`
//! (`{"Routes": [...]}`, like the signature: set on `$LATEST`, read for any qualifier) and
//! `/wisp/v1/functions/{name}/signature`: the input and output types of `$LATEST` (PUT, DELETE) or of
//! any version or alias (GET with `?Qualifier=`).
//!
//! The body is `{"Input": {"JsonSchema": {...}}, "Output": {"JsonSchema": {...}}}`, either side optional;
//! `?RevisionId=` makes a PUT or DELETE conditional on `$LATEST`'s current revision.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wisp_types::{FunctionRef, HooksConfig, Route, Signature};

use crate::lambda::query_qualifier;
use crate::{ApiState, Caller, Failure, json_response, parse_settings};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/wisp/v1/functions/{name}/signature",
            get(get_signature)
                .put(put_signature)
                .delete(delete_signature),
        )
        .route(
            "/wisp/v1/functions/{name}/routes",
            get(get_routes).put(put_routes).delete(delete_routes),
        )
        .route(
            "/wisp/v1/functions/{name}/hooks",
            get(get_hooks).put(put_hooks).delete(delete_hooks),
        )
        .route("/wisp/v1/check", get(check))
}

/// `{"Pre": "function", "Post": "function"}`, either optional.
async fn put_hooks(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config: HooksConfig = parse_settings(
        &body,
        "the hooks are",
        r#"{"Pre": "function", "Post": "function"}"#,
    )?;
    let config = state
        .control
        .put_hooks(&account, &function.name, config)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn get_hooks(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config = state.control.get_hooks(&account, &function.name).await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn delete_hooks(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state.control.delete_hooks(&account, &function.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Routes {
    routes: Vec<Route>,
}

async fn put_routes(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let Routes { routes } = parse_settings(
        &body,
        "the routes are",
        r#"{"Routes": [{"Name", "Match", "Handler", "Signature"?}]}"#,
    )?;
    let routes = state
        .control
        .put_routes(
            &account,
            &function.name,
            routes,
            params.get("RevisionId").cloned(),
        )
        .await?;
    Ok(json_response(StatusCode::OK, &Routes { routes }))
}

async fn get_routes(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let qualifier = query_qualifier(&params)?.or(function.qualifier.clone());
    let routes = state
        .control
        .get_routes(&account, &function.name, qualifier)
        .await?;
    Ok(json_response(StatusCode::OK, &Routes { routes }))
}

async fn delete_routes(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state
        .control
        .put_routes(
            &account,
            &function.name,
            Vec::new(),
            params.get("RevisionId").cloned(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every wiring of the caller's account, checked again (`wisp check`).
async fn check(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Response, Failure> {
    let report = state.control.check_wiring(&account).await?;
    Ok(json_response(StatusCode::OK, &report))
}

async fn put_signature(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let signature: Signature = parse_settings(
        &body,
        "the signature is",
        r#"{"Input": {"JsonSchema": {...}}, "Output": {"JsonSchema": {...}}}"#,
    )?;
    let stored = state
        .control
        .put_signature(
            &account,
            &function.name,
            signature,
            params.get("RevisionId").cloned(),
        )
        .await?;
    Ok(json_response(StatusCode::OK, &stored.unwrap_or_default()))
}

async fn get_signature(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let qualifier = query_qualifier(&params)?.or(function.qualifier.clone());
    let signature = state
        .control
        .get_signature(&account, &function.name, qualifier)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &signature.unwrap_or_default(),
    ))
}

async fn delete_signature(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state
        .control
        .put_signature(
            &account,
            &function.name,
            Signature::default(),
            params.get("RevisionId").cloned(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
