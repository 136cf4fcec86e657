//! Wisp's own routes under `/wisp/v1`: logs, invocation records (by function and by request id), the
//! dead-letter log of async invocations, and the machine's isolation report.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;
use wisp_engine::sinks::{logs_topic, record_key, records_topic};
use wisp_types::{
    ApiError, DEFAULT_IDEMPOTENCY_WINDOW_SECONDS, FunctionRef, IdempotencyConfig, InvocationRecord,
    MemoizationConfig,
};

use crate::{
    ApiState, Caller, Failure, json_response, log_page, number, parse_settings, store_failure,
};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/wisp/v1/functions/{name}/logs", get(logs))
        .route("/wisp/v1/functions/{name}/invocations", get(invocations))
        .route("/wisp/v1/invocations/{request_id}", get(invocation))
        .route(
            "/wisp/v1/functions/{name}/idempotency",
            get(get_idempotency)
                .put(put_idempotency)
                .delete(delete_idempotency),
        )
        .route(
            "/wisp/v1/functions/{name}/idempotency/{key}",
            get(idempotency_key),
        )
        .route(
            "/wisp/v1/functions/{name}/memoization",
            get(get_memoization)
                .put(put_memoization)
                .delete(delete_memoization),
        )
        .route("/wisp/v1/functions/{name}/dlq", get(dead_letters))
        .route("/wisp/v1/functions/{name}/dlq/redrive", post(redrive))
        .route("/wisp/v1/doctor", get(doctor))
}

/// Log text of a function from offset `from` (default: the last `limit` records); `wait` seconds to long-poll.
async fn logs(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let topic = logs_topic(&account.0, &function.name);
    let (records, next) = log_page(&state, &topic, &params).await?;
    let records: Vec<_> = records
        .into_iter()
        .map(|record| json!({ "Offset": record.offset, "Timestamp": record.timestamp_ms, "Text": String::from_utf8_lossy(&record.payload) }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Records": records, "NextOffset": next }),
    ))
}

/// The most recent invocation records of a function, newest first, and how many were ever recorded.
async fn invocations(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state
        .control
        .get_function(&account, &function.name, None)
        .await?;
    let topic = records_topic(&account.0, &function.name);
    let limit = number(&params, "limit", 20)?.clamp(1, 1000);
    let last = state.log.last_offset(&topic).await.map_err(store_failure)?;
    let from = last.saturating_sub(limit - 1).max(1);
    let records = state
        .log
        .read(&topic, from, limit as usize)
        .await
        .map_err(store_failure)?;
    let mut invocations: Vec<InvocationRecord> = records
        .iter()
        .filter_map(|record| serde_json::from_slice(&record.payload).ok())
        .collect();
    invocations.reverse();
    // Records are never trimmed, so the last offset counts every recorded run of the function.
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Invocations": invocations, "Recorded": last }),
    ))
}

/// One invocation's record by request id: its state, attempts, timings and (once finished) its result.
async fn invocation(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(request_id): Path<String>,
) -> Result<Response, Failure> {
    let key = record_key(&account.0, &request_id);
    let entry = state
        .control
        .kv()
        .get(&key)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| {
            Failure(ApiError::not_found(format!(
                "no invocation {request_id} in account {account}; records are kept for the server's --record-retention (and those of the last moments before a crash may be missing)"
            )))
        })?;
    let record: InvocationRecord = serde_json::from_slice(&entry.value).map_err(|error| {
        Failure(ApiError::internal(format!(
            "stored record {key} is unreadable: {error}"
        )))
    })?;
    Ok(json_response(StatusCode::OK, &record))
}

async fn put_idempotency(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let mut config: serde_json::Value = crate::parse_json(&body)?;
    // The window has a default; everything else is the caller's to give.
    if config.get("WindowSeconds").is_none() {
        config["WindowSeconds"] = DEFAULT_IDEMPOTENCY_WINDOW_SECONDS.into();
    }
    let config: IdempotencyConfig = serde_json::from_value(config).map_err(|error| {
        Failure(ApiError::invalid(format!(
            "idempotency settings are not valid: {error}"
        )))
    })?;
    let config = state
        .control
        .put_idempotency_config(&account, &function.name, config)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn get_idempotency(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config = state
        .control
        .get_idempotency_config(&account, &function.name)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn delete_idempotency(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state
        .control
        .delete_idempotency_config(&account, &function.name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Declares a function pure: `{"TtlSeconds": N}`.
async fn put_memoization(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config: MemoizationConfig =
        parse_settings(&body, "memoization settings are", r#"{"TtlSeconds": N}"#)?;
    let config = state
        .control
        .put_memoization_config(&account, &function.name, config)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn get_memoization(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let config = state
        .control
        .get_memoization_config(&account, &function.name)
        .await?;
    Ok(json_response(StatusCode::OK, &config))
}

async fn delete_memoization(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state
        .control
        .delete_memoization_config(&account, &function.name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The state and outcome of the execution behind one idempotency key.
async fn idempotency_key(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    state
        .control
        .get_function(&account, &function.name, None)
        .await?;
    let record = state
        .engine
        .idempotency_record(&account, &function.name, &key)
        .await?
        .ok_or_else(|| {
            Failure(ApiError::not_found(format!(
                "no execution of {} with idempotency key {key:?} (or it expired more than an hour ago)",
                function.name
            )))
        })?;
    let now = chrono::Utc::now().timestamp_millis() as u64;
    let mut body = json!({
        "Key": record.key,
        "State": record.reported_state(now),
        "RequestId": record.request_id,
        "StartedMs": record.started_ms,
        "UntilMs": record.until_ms,
    });
    if let Some(version) = &record.version {
        body["Version"] = version.clone().into();
    }
    if let Some(error_type) = &record.error_type {
        body["ErrorType"] = error_type.clone().into();
    }
    if record.result_base64.is_some() {
        body["Result"] = wisp_types::result_value(&record.result());
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// Entries of a function's dead-letter log, oldest first.
async fn dead_letters(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let limit = number(&params, "limit", 100)?.clamp(1, 1000) as usize;
    let from = number(&params, "from", 1)?;
    let letters = state
        .engine
        .dead_letters(&account, &function.name, from, limit)
        .await?;
    let next = letters.last().map(|(offset, _)| offset + 1).unwrap_or(from);
    let letters: Vec<_> = letters.into_iter().map(|(_, letter)| letter).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "DeadLetters": letters, "NextOffset": next }),
    ))
}

/// Sends every dead letter of a function back to its queue.
async fn redrive(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let function = FunctionRef::parse(&name)?;
    let count = state.engine.redrive(&account, &function.name).await?;
    Ok(json_response(StatusCode::OK, &json!({ "Redriven": count })))
}

async fn doctor() -> Result<Response, Failure> {
    let report = tokio::task::spawn_blocking(wisp_sandbox::doctor::probe)
        .await
        .map_err(|error| Failure(ApiError::internal(format!("probe failed: {error}"))))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Report": report.to_string() }),
    ))
}
