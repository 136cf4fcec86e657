//! Wisp's own routes under `/wisp/v1`: logs, invocation records and the machine's isolation report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use wisp_engine::sinks::{logs_topic, records_topic};
use wisp_types::{ApiError, FunctionRef, InvocationRecord};

use crate::{ApiState, Caller, Failure, json_response};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/wisp/v1/functions/{name}/logs", get(logs))
        .route("/wisp/v1/functions/{name}/invocations", get(invocations))
        .route("/wisp/v1/doctor", get(doctor))
}

fn store_failure(error: wisp_store::StoreError) -> Failure {
    Failure(ApiError::internal(format!("store error: {error}")))
}

fn number(params: &HashMap<String, String>, name: &str, default: u64) -> Result<u64, Failure> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            Failure(ApiError::invalid(format!(
                "{name} {text:?} must be a number"
            )))
        }),
    }
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
    let limit = number(&params, "limit", 100)?.clamp(1, 10_000) as usize;
    let last = state.log.last_offset(&topic).await.map_err(store_failure)?;
    let from = match params.get("from") {
        Some(_) => number(&params, "from", 1)?.max(1),
        None => last.saturating_sub(limit as u64 - 1).max(1),
    };
    let wait = number(&params, "wait", 0)?.min(60);
    if from > last && wait > 0 {
        let _ = tokio::time::timeout(
            Duration::from_secs(wait),
            state.log.wait_for(&topic, from - 1),
        )
        .await;
    }
    let records = state
        .log
        .read(&topic, from, limit)
        .await
        .map_err(store_failure)?;
    let next = records
        .last()
        .map(|record| record.offset + 1)
        .unwrap_or(from);
    let records: Vec<_> = records
        .into_iter()
        .map(|record| json!({ "Offset": record.offset, "Timestamp": record.timestamp_ms, "Text": String::from_utf8_lossy(&record.payload) }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Records": records, "NextOffset": next }),
    ))
}

/// The most recent invocation records of a function, newest first.
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
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Invocations": invocations }),
    ))
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
