//! Receipt routes under `/wisp/v1`: the receipt switches of a function and of an account, one
//! receipt by request id, the published public keys, and key rotation (root account only).
//! The private keys never appear in any answer.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;
use wisp_control::receipts::ReceiptsConfig;
use wisp_engine::receipts::receipt_key;
use wisp_types::receipt::Receipt;
use wisp_types::{ApiError, FunctionRef};

use crate::{ApiState, Caller, Failure, json_response, parse_json};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/wisp/v1/functions/{name}/receipts",
            get(get_function_switch).put(put_function_switch),
        )
        .route(
            "/wisp/v1/receipts-config",
            get(get_account_switch).put(put_account_switch),
        )
        .route("/wisp/v1/receipts/{request_id}", get(receipt))
        .route("/wisp/v1/keys", get(keys))
        .route("/wisp/v1/keys/rotate", post(rotate))
}

async fn get_function_switch(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config = state
        .control
        .function_receipts(&account, &function.name)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn put_function_switch(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config: ReceiptsConfig = parse_json(&body)?;
    let config = state
        .control
        .put_function_receipts(&account, &function.name, config)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn get_account_switch(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Response, Failure> {
    let config = state.control.account_receipts(&account).await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn put_account_switch(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Failure> {
    let config: ReceiptsConfig = parse_json(&body)?;
    let config = state.control.put_account_receipts(&account, config).await?;
    Ok(json_response(StatusCode::OK, &config))
}

/// One invocation's receipt; only its own account can read it.
async fn receipt(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(request_id): Path<String>,
) -> Result<Response, Failure> {
    let key = receipt_key(&account.0, &request_id);
    let entry = state
        .control
        .kv()
        .get(&key)
        .await
        .map_err(|error| Failure(ApiError::internal(format!("store error: {error}"))))?
        .ok_or_else(|| {
            Failure(ApiError::not_found(format!(
                "no receipt for invocation {request_id} in account {account}; receipts are issued only when the function or account has them on (wisp receipts on FUNCTION), and are stored a few milliseconds after the invocation ends"
            )))
        })?;
    let receipt: Receipt = serde_json::from_slice(&entry.value).map_err(|error| {
        Failure(ApiError::internal(format!(
            "stored receipt {key} is unreadable: {error}"
        )))
    })?;
    Ok(json_response(StatusCode::OK, &receipt))
}

/// Every public key that signed or signs receipts.
async fn keys(State(state): State<Arc<ApiState>>) -> Result<Response, Failure> {
    let keys = state.control.receipt_public_keys().await?;
    let current = state.control.receipt_key().map(|key| key.key_id.clone());
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Keys": keys, "Current": current }),
    ))
}

/// Makes a new signing key; the old one stays published as retired.
async fn rotate(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Response, Failure> {
    let key = state.control.rotate_receipt_key(&account).await?;
    Ok(json_response(StatusCode::OK, &key))
}
