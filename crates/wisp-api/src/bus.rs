//! The event bus and admission hooks under `/wisp/v1` (see `docs/EVENTS.md`): topics, publishing
//! and reading events, rules, a topic's dead letters, and the account's admission configuration.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use wisp_control::admission::AdmissionConfig;
use wisp_control::bus::{RuleInput, dead_letter_log, topic_log};
use wisp_types::{ApiError, ErrorCode};

use crate::{
    ApiState, Caller, Failure, json_response, log_page, number, parse_json, store_failure,
};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/wisp/v1/topics", get(list_topics).post(create_topic))
        .route(
            "/wisp/v1/topics/{topic}",
            get(get_topic).delete(delete_topic),
        )
        .route(
            "/wisp/v1/topics/{topic}/events",
            get(read_events).post(publish),
        )
        .route("/wisp/v1/topics/{topic}/rules", get(list_rules))
        .route(
            "/wisp/v1/topics/{topic}/rules/{rule}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route("/wisp/v1/topics/{topic}/dlq", get(dead_letters))
        .route(
            "/wisp/v1/admission",
            get(get_admission)
                .put(put_admission)
                .delete(delete_admission),
        )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct CreateTopic {
    topic_name: String,
}

async fn create_topic(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Failure> {
    let input: CreateTopic = parse_json(&body)?;
    let topic = state
        .control
        .create_topic(&account, &input.topic_name)
        .await?;
    Ok(json_response(StatusCode::CREATED, &topic))
}

async fn list_topics(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Response, Failure> {
    let topics = state.control.list_topics(&account).await?;
    Ok(json_response(StatusCode::OK, &json!({ "Topics": topics })))
}

async fn get_topic(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<Response, Failure> {
    let configuration = state.control.get_topic(&account, &topic).await?;
    Ok(json_response(StatusCode::OK, &configuration))
}

async fn delete_topic(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<Response, Failure> {
    state.control.delete_topic(&account, &topic).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One JSON object is one event; a JSON array is a batch of them.
async fn publish(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Result<Response, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Failure(ApiError::new(
            ErrorCode::InvalidRequestContent,
            "the body is empty: send one JSON object, or an array of them",
        )));
    }
    // Not empty (refused above), so parsed exactly as sent.
    let value: Value = parse_json(&body)?;
    let events = match value {
        Value::Array(events) => events,
        single => vec![single],
    };
    let receipts = state.control.publish(&account, &topic, events).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Events": receipts }),
    ))
}

/// Events of a topic from offset `from` (default: the last `limit`); `wait` seconds to long-poll.
async fn read_events(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(topic): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    state.control.get_topic(&account, &topic).await?;
    let store_topic = topic_log(&account.0, &topic);
    let (records, next) = log_page(&state, &store_topic, &params).await?;
    let events: Vec<Value> = records
        .into_iter()
        .filter_map(|record| {
            let mut event: Value = serde_json::from_slice(&record.payload).ok()?;
            event["Offset"] = record.offset.into();
            Some(event)
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "Events": events, "NextOffset": next }),
    ))
}

async fn list_rules(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(topic): Path<String>,
) -> Result<Response, Failure> {
    state.control.get_topic(&account, &topic).await?;
    let rules = state.control.list_rules(&account, &topic).await?;
    Ok(json_response(StatusCode::OK, &json!({ "Rules": rules })))
}

async fn put_rule(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((topic, rule)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Failure> {
    let input: RuleInput = parse_json(&body)?;
    let stored = state
        .control
        .put_rule(&account, &topic, &rule, input)
        .await?;
    Ok(json_response(StatusCode::OK, &stored))
}

async fn get_rule(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((topic, rule)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let stored = state.control.get_rule(&account, &topic, &rule).await?;
    Ok(json_response(StatusCode::OK, &stored))
}

async fn delete_rule(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path((topic, rule)): Path<(String, String)>,
) -> Result<Response, Failure> {
    state.control.delete_rule(&account, &topic, &rule).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deliveries of a topic's events that failed for good, oldest first, from offset `from`.
async fn dead_letters(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Path(topic): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let limit = number(&params, "limit", 100)?.clamp(1, 10_000) as usize;
    let from = number(&params, "from", 1)?.max(1);
    let records = state
        .log
        .read(&dead_letter_log(&account.0, &topic), from, limit)
        .await
        .map_err(store_failure)?;
    let next = records
        .last()
        .map(|record| record.offset + 1)
        .unwrap_or(from);
    let letters: Vec<Value> = records
        .into_iter()
        .filter_map(|record| serde_json::from_slice(&record.payload).ok())
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "DeadLetters": letters, "NextOffset": next }),
    ))
}

async fn get_admission(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Response, Failure> {
    match state.control.get_admission(&account).await? {
        Some(config) => Ok(json_response(StatusCode::OK, &config)),
        None => Err(Failure(ApiError::not_found(format!(
            "account {account} has no admission hooks; hint: wisp admission set FUNCTION"
        )))),
    }
}

async fn put_admission(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    body: Bytes,
) -> Result<Response, Failure> {
    let config: AdmissionConfig = parse_json(&body)?;
    let stored = state.control.put_admission(&account, config).await?;
    Ok(json_response(StatusCode::OK, &stored))
}

async fn delete_admission(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
) -> Result<Response, Failure> {
    if !state.control.delete_admission(&account).await? {
        return Err(Failure(ApiError::not_found(format!(
            "account {account} has no admission hooks"
        ))));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
