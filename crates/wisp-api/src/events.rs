//! `GET /wisp/v1/events`: the caller's account's lifecycle events (see `wisp_control::lifecycle`),
//! read from offset `from` (default: the last `limit`), with `wait` seconds of long-polling when none
//! are newer, like a function's logs; `type=A,B` keeps only those types (of the records read).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use wisp_control::lifecycle::{EventType, LifecycleEvent, lifecycle_topic};

use crate::{ApiState, Caller, Failure, json_response, log_page};

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/wisp/v1/events", get(events))
}

async fn events(
    State(state): State<Arc<ApiState>>,
    Extension(Caller(account)): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Failure> {
    let topic = lifecycle_topic(&account.0);
    let types = match params.get("type") {
        Some(names) => Some(
            names
                .split(',')
                .map(EventType::parse)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let (records, next) = log_page(&state, &topic, &params).await?;
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
