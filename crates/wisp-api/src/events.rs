//! `GET /wisp/v1/events`: the caller's account's lifecycle events (see `wisp_control::lifecycle`),
//! read from offset `from` (default: the last `limit`), with `wait` seconds of long-polling when none
//! are newer, like a function's logs; `type=A,B` keeps only those types (of the records read).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use wisp_control::lifecycle::{EventType, LifecycleEvent, lifecycle_topic};
use wisp_types::ApiError;

use crate::{ApiState, Caller, Failure, json_response};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/wisp/v1/events", get(events))
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

async fn events(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let store_failure = |error: wisp_store::StoreError| {
        Failure(ApiError::internal(format!("store error: {error}")))
    };
    let topic = lifecycle_topic(&account.0);
    let limit = number(&params, "limit", 100)?.clamp(1, 10_000) as usize;
    let last = state.log.last_offset(&topic).await.map_err(store_failure)?;
    let from = match params.get("from") {
        Some(_) => number(&params, "from", 1)?.max(1),
        None => last.saturating_sub(limit as u64 - 1).max(1),
    };
    let wait = number(&params, "wait", 0)?.min(60);
    let types = match params.get("type") {
        Some(names) => Some(
            names
                .split(',')
                .map(EventType::parse)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
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
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        match LifecycleEvent::decode(&record.payload) {
            Ok(event)
                if types
                    .as_ref()
                    .is_some_and(|types| !types.contains(&event.kind)) => {}
            Ok(event) => {
                let mut value = serde_json::to_value(event).expect("events serialise");
                value["Offset"] = record.offset.into();
                events.push(value);
            }
            Err(error) => {
                tracing::warn!(%error, offset = record.offset, topic, "unreadable lifecycle event")
            }
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Events": events, "NextOffset": next }),
    ))
}
