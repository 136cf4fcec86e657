//! Lifecycle events: every control-plane change and every instance start and stop, as one stable JSON
//! shape appended to the account's `wisp.lifecycle/{account}` topic of the store's `Log`.
//!
//! Control-plane events are appended before the change is answered, so an answered change always has
//! its event on disk. Instance events are observations and go through the engine's background writer.
//! The actor is the access key that signed the request, passed in with [`with_actor`] (a task-local,
//! so no control-plane signature changes); changes made by the platform itself carry [`PLATFORM_ACTOR`].
//! The field names are documented in `docs/LIFECYCLE.md` and are never renamed; a change of meaning
//! bumps [`SCHEMA_VERSION`].

use std::future::Future;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use wisp_store::Log;
use wisp_types::{AccountId, ApiError};

use crate::ControlPlane;

/// Version of the event shape; written in every event as `SchemaVersion`.
pub const SCHEMA_VERSION: u32 = 1;

/// The actor of changes and observations made by the platform itself.
pub const PLATFORM_ACTOR: &str = "wisp";

/// The topic holding an account's lifecycle events.
pub fn lifecycle_topic(account: &str) -> String {
    format!("wisp.lifecycle/{account}")
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    FunctionCreated,
    FunctionCodeUpdated,
    FunctionConfigurationUpdated,
    VersionPublished,
    VersionDeleted,
    AliasCreated,
    AliasUpdated,
    AliasDeleted,
    FunctionDeleted,
    ConcurrencyChanged,
    ProvisionedConcurrencyChanged,
    EventInvokeConfigChanged,
    IdempotencyChanged,
    MemoizationChanged,
    ReceiptsChanged,
    LayerVersionPublished,
    LayerVersionDeleted,
    SignatureChanged,
    RoutesChanged,
    HooksChanged,
    InstanceStarted,
    InstanceStopped,
}

impl EventType {
    /// Every type, in documentation order.
    pub const ALL: [EventType; 22] = [
        EventType::FunctionCreated,
        EventType::FunctionCodeUpdated,
        EventType::FunctionConfigurationUpdated,
        EventType::VersionPublished,
        EventType::VersionDeleted,
        EventType::AliasCreated,
        EventType::AliasUpdated,
        EventType::AliasDeleted,
        EventType::FunctionDeleted,
        EventType::ConcurrencyChanged,
        EventType::ProvisionedConcurrencyChanged,
        EventType::EventInvokeConfigChanged,
        EventType::IdempotencyChanged,
        EventType::MemoizationChanged,
        EventType::ReceiptsChanged,
        EventType::LayerVersionPublished,
        EventType::LayerVersionDeleted,
        EventType::SignatureChanged,
        EventType::RoutesChanged,
        EventType::HooksChanged,
        EventType::InstanceStarted,
        EventType::InstanceStopped,
    ];

    /// The type named `name` (as written in `Type`).
    pub fn parse(name: &str) -> Result<EventType, ApiError> {
        EventType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
                ApiError::invalid(format!(
                    "unknown event type {name:?}; the types are {}",
                    known.join(", ")
                ))
            })
    }

    /// The name written in the `Type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::FunctionCreated => "FunctionCreated",
            EventType::FunctionCodeUpdated => "FunctionCodeUpdated",
            EventType::FunctionConfigurationUpdated => "FunctionConfigurationUpdated",
            EventType::VersionPublished => "VersionPublished",
            EventType::VersionDeleted => "VersionDeleted",
            EventType::AliasCreated => "AliasCreated",
            EventType::AliasUpdated => "AliasUpdated",
            EventType::AliasDeleted => "AliasDeleted",
            EventType::FunctionDeleted => "FunctionDeleted",
            EventType::ConcurrencyChanged => "ConcurrencyChanged",
            EventType::ProvisionedConcurrencyChanged => "ProvisionedConcurrencyChanged",
            EventType::EventInvokeConfigChanged => "EventInvokeConfigChanged",
            EventType::IdempotencyChanged => "IdempotencyChanged",
            EventType::MemoizationChanged => "MemoizationChanged",
            EventType::ReceiptsChanged => "ReceiptsChanged",
            EventType::LayerVersionPublished => "LayerVersionPublished",
            EventType::LayerVersionDeleted => "LayerVersionDeleted",
            EventType::SignatureChanged => "SignatureChanged",
            EventType::RoutesChanged => "RoutesChanged",
            EventType::HooksChanged => "HooksChanged",
            EventType::InstanceStarted => "InstanceStarted",
            EventType::InstanceStopped => "InstanceStopped",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle event, as stored and as served by `GET /wisp/v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LifecycleEvent {
    pub schema_version: u32,
    /// A random UUID.
    pub id: String,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-12-04T20:31:07.123Z`.
    pub time: String,
    pub account: String,
    /// The access key id that made the change, or `wisp` for the platform itself.
    pub actor: String,
    #[serde(rename = "Type")]
    pub kind: EventType,
    /// ARN of the function, version, alias or layer version the event is about.
    pub resource: String,
    /// The relevant configuration before the change (null when it did not exist).
    pub before: Option<serde_json::Value>,
    /// The relevant configuration after the change (null when it no longer exists).
    pub after: Option<serde_json::Value>,
    /// Why an instance stopped; null for other events.
    pub reason: Option<String>,
}

impl LifecycleEvent {
    /// A new event stamped with a fresh id, the current time and the current actor.
    pub fn new(
        account: &str,
        kind: EventType,
        resource: impl Into<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> LifecycleEvent {
        LifecycleEvent {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            time: event_time(chrono::Utc::now()),
            account: account.to_string(),
            actor: current_actor(),
            kind,
            resource: resource.into(),
            before,
            after,
            reason: None,
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> LifecycleEvent {
        self.reason = Some(reason.into());
        self
    }

    /// Marks the event as the platform's own (instance starts and stops), whatever actor is current.
    pub fn by_platform(mut self) -> LifecycleEvent {
        self.actor = PLATFORM_ACTOR.to_string();
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<LifecycleEvent, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The `Time` format: RFC 3339, UTC, milliseconds.
pub fn event_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A value as event JSON (`Before`/`After`).
pub fn snapshot(value: &impl Serialize) -> Option<serde_json::Value> {
    Some(serde_json::to_value(value).expect("configurations serialise"))
}

tokio::task_local! {
    static ACTOR: String;
}

/// Runs `future` with `actor` as the actor of every lifecycle event it causes.
pub async fn with_actor<F: Future>(actor: String, future: F) -> F::Output {
    ACTOR.scope(actor, future).await
}

/// The actor set by [`with_actor`], or [`PLATFORM_ACTOR`] outside of one.
pub fn current_actor() -> String {
    ACTOR
        .try_with(|actor| actor.clone())
        .unwrap_or_else(|_| PLATFORM_ACTOR.to_string())
}

/// Where the control plane appends its events; unset (no events) until [`ControlPlane::record_lifecycle_to`].
#[derive(Default)]
pub(crate) struct Recorder {
    log: OnceLock<Arc<dyn Log>>,
}

impl Recorder {
    /// The store's `Log`, also used by the event bus for its topics.
    pub(crate) fn log(&self) -> Option<&Arc<dyn Log>> {
        self.log.get()
    }
}

impl ControlPlane {
    /// Appends lifecycle events of control-plane changes to `log` from now on.
    pub fn record_lifecycle_to(&self, log: Arc<dyn Log>) {
        let _ = self.lifecycle.log.set(log);
    }

    /// Appends one event durably; called after a change is stored and before it is answered.
    pub(crate) async fn announce(
        &self,
        account: &AccountId,
        kind: EventType,
        resource: impl Into<String>,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<(), ApiError> {
        let Some(log) = self.lifecycle.log.get() else {
            return Ok(());
        };
        let event = LifecycleEvent::new(&account.0, kind, resource, before, after);
        log.append(&lifecycle_topic(&account.0), event.encode())
            .await
            .map(|_| ())
            .map_err(|error| {
                ApiError::internal(format!(
                    "the change was stored but its {kind} event could not be: {error}"
                ))
            })
    }
}

impl ControlPlane {
    /// A `ConcurrencyChanged` event: reserved concurrency before and after (`null` = unreserved).
    pub(crate) async fn announce_concurrency(
        &self,
        account: &AccountId,
        name: &str,
        before: Option<u32>,
        after: Option<u32>,
    ) -> Result<(), ApiError> {
        let shape = |reserved: Option<u32>| {
            reserved.map(|value| serde_json::json!({ "ReservedConcurrentExecutions": value }))
        };
        self.announce(
            account,
            EventType::ConcurrencyChanged,
            wisp_types::function_arn(&self.options.region, account, name),
            shape(before),
            shape(after),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_use_the_documented_field_names() {
        let mut event = LifecycleEvent::new(
            "123456789012",
            EventType::FunctionConfigurationUpdated,
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            Some(serde_json::json!({ "Timeout": 3 })),
            Some(serde_json::json!({ "Timeout": 9 })),
        );
        event.id = "00000000-0000-4000-8000-000000000000".into();
        event.time = "2026-12-04T20:31:07.123Z".into();
        let value: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "SchemaVersion": 1,
                "Id": "00000000-0000-4000-8000-000000000000",
                "Time": "2026-12-04T20:31:07.123Z",
                "Account": "123456789012",
                "Actor": "wisp",
                "Type": "FunctionConfigurationUpdated",
                "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f",
                "Before": { "Timeout": 3 },
                "After": { "Timeout": 9 },
                "Reason": null,
            })
        );
        assert_eq!(LifecycleEvent::decode(&event.encode()).unwrap(), event);
    }

    #[test]
    fn every_type_is_written_by_its_name() {
        for kind in EventType::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
            assert_eq!(EventType::parse(kind.as_str()).unwrap(), kind);
        }
        let error = EventType::parse("FunctionCreatd").unwrap_err();
        assert!(
            error.message.contains("\"FunctionCreatd\"")
                && error.message.contains("InstanceStopped"),
            "{}",
            error.message
        );
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        let time = chrono::DateTime::parse_from_rfc3339("2026-12-04T20:31:07.1234Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(event_time(time), "2026-12-04T20:31:07.123Z");
    }

    #[tokio::test]
    async fn the_actor_is_the_one_set_around_the_call() {
        assert_eq!(current_actor(), "wisp");
        let inside = with_actor("AKIDEXAMPLE".into(), async { current_actor() }).await;
        assert_eq!(inside, "AKIDEXAMPLE");
        let event = with_actor("AKIDEXAMPLE".into(), async {
            LifecycleEvent::new("1", EventType::InstanceStopped, "arn", None, None)
                .with_reason("idle")
        })
        .await;
        assert_eq!(event.actor, "AKIDEXAMPLE");
        assert_eq!(event.reason.as_deref(), Some("idle"));
    }
}
