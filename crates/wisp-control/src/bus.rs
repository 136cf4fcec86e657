//! The event bus's records: topics, the events published to them, and rules that route a topic's
//! events to functions (see `docs/EVENTS.md`).
//!
//! A topic's events live in the store's `Log` (`bus/{account}/{topic}`; the built-in topic
//! [`LIFECYCLE_TOPIC`] is the lifecycle log `wisp.lifecycle/{account}` itself). Keys:
//! `topic/{account}/{topic}` → [`TopicConfiguration`], `rule/{account}/{topic}/{rule}` → [`Rule`].
//! Publishing appends the events durably and returns; delivery is the engine's dispatcher's work
//! (`wisp_engine::bus`), which follows these keys. This module never runs code.
//!
//! Rule targets are checked when a rule is put, and again by `wisp check`, in one place
//! ([`ControlPlane::check_rule_target`]): the function exists in the caller's account, and when it
//! declares an input type, that type accepts every event the rule can deliver ([`rule_event_schema`]:
//! the topic's event shape, narrowed by the fields the pattern pins to exact values), with the
//! checked-wiring comparison of `compat`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wisp_store::StoreError;
use wisp_types::*;

use crate::lifecycle::{current_actor, event_time, lifecycle_topic};
use crate::pattern::EventPattern;
use crate::{ControlPlane, decode, encode, store_error};

/// The built-in topic of every account: its lifecycle events.
pub const LIFECYCLE_TOPIC: &str = "wisp.lifecycle";
/// Largest published event (its `Detail`, as JSON text), like EventBridge's entry limit.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Most events in one publish request.
pub const MAX_BATCH_EVENTS: usize = 100;
/// Largest publish request (all its events' `Detail`s together).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Most targets of one rule.
pub const MAX_TARGETS: usize = 5;
/// Most rules on one topic.
pub const MAX_RULES_PER_TOPIC: usize = 100;

/// The store topic holding a bus topic's events.
pub fn topic_log(account: &str, topic: &str) -> String {
    if topic == LIFECYCLE_TOPIC {
        lifecycle_topic(account)
    } else {
        format!("bus/{account}/{topic}")
    }
}

/// The store topic of a bus topic's dead letters (events a rule could not deliver to a target).
pub fn dead_letter_log(account: &str, topic: &str) -> String {
    format!("busdlq/{account}/{topic}")
}

pub(crate) fn topic_key(account: &AccountId, topic: &str) -> String {
    format!("topic/{account}/{topic}")
}

/// Prefix of every rule key; a rule's key is `rule/{account}/{topic}/{rule}`.
pub const RULE_PREFIX: &str = "rule/";

pub fn rule_key(account: &AccountId, topic: &str, rule: &str) -> String {
    format!("{RULE_PREFIX}{account}/{topic}/{rule}")
}

fn rule_prefix(account: &AccountId, topic: &str) -> String {
    format!("{RULE_PREFIX}{account}/{topic}/")
}

/// Splits a rule key into (account, topic, rule).
pub fn parse_rule_key(key: &str) -> Option<(AccountId, String, String)> {
    let mut parts = key.strip_prefix(RULE_PREFIX)?.splitn(3, '/');
    Some((
        AccountId(parts.next()?.to_string()),
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

fn validate_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{kind} name {name:?} is invalid: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// The JSON Schema of what a rule on `topic` delivers: the lifecycle event on [`LIFECYCLE_TOPIC`], the
/// envelope (with any object as `Detail`) on other topics; then every field the pattern pins to exact
/// values, where the shape declares a scalar type for it, is narrowed to those values.
pub fn rule_event_schema(topic: &str, pattern: &EventPattern) -> Value {
    use serde_json::json;
    let text = json!({ "type": "string" });
    let mut schema = if topic == LIFECYCLE_TOPIC {
        let types: Vec<&str> = crate::lifecycle::EventType::ALL
            .iter()
            .map(|kind| kind.as_str())
            .collect();
        json!({
            "type": "object",
            "required": ["SchemaVersion", "Id", "Time", "Account", "Actor", "Type", "Resource", "Before", "After", "Reason"],
            "properties": {
                "SchemaVersion": { "type": "integer" },
                "Id": text, "Time": text, "Account": text, "Actor": text, "Resource": text,
                "Type": { "type": "string", "enum": types },
                "Before": { "type": ["object", "null"] },
                "After": { "type": ["object", "null"] },
                "Reason": { "type": ["string", "null"] },
            },
        })
    } else {
        json!({
            "type": "object",
            "required": ["SchemaVersion", "Id", "Time", "Topic", "Account", "Actor", "Detail"],
            "properties": {
                "SchemaVersion": { "type": "integer" },
                "Id": text, "Time": text, "Account": text, "Actor": text,
                "Topic": { "type": "string", "enum": [topic] },
                "Detail": { "type": "object" },
            },
        })
    };
    for (path, values) in pattern.exact_values() {
        let Some(place) = schema.pointer_mut(&pointer_of(&path)) else {
            continue;
        };
        let scalar = place
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|kind| !matches!(kind, "object" | "array"));
        if !scalar {
            continue;
        }
        let allowed: Vec<Value> = match place.get("enum").and_then(Value::as_array) {
            Some(known) => values
                .iter()
                .filter(|value| known.contains(value))
                .cloned()
                .collect(),
            None => values,
        };
        place["enum"] = Value::Array(allowed);
    }
    schema
}

fn pointer_of(path: &[String]) -> String {
    path.iter()
        .map(|name| format!("/properties/{}", name.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// A topic, as `/wisp/v1/topics` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopicConfiguration {
    pub topic_name: String,
    /// `true` for [`LIFECYCLE_TOPIC`]: written by the platform, never deleted.
    #[serde(default)]
    pub built_in: bool,
    pub created: String,
}

/// A function a rule delivers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleTarget {
    pub function_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    /// The function's ARN, qualified when the target is.
    pub arn: String,
}

/// A rule: which events of a topic go to which functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rule {
    pub rule_name: String,
    pub topic_name: String,
    /// The pattern as it was given (checked by [`EventPattern::parse`]).
    pub event_pattern: Value,
    pub targets: Vec<RuleTarget>,
    #[serde(default)]
    pub description: String,
    /// The first topic offset this rule applies to: events appended before the rule was first put
    /// are never delivered by it, even if the dispatcher had not reached them yet.
    pub from_offset: u64,
    pub last_modified: String,
}

/// `PUT /wisp/v1/topics/{topic}/rules/{rule}`'s body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RuleInput {
    pub event_pattern: Option<Value>,
    /// Function names, `name:qualifier`, or function ARNs (optionally qualified).
    pub targets: Option<Vec<String>>,
    pub description: Option<String>,
}

/// One event as published to a topic and delivered to rule targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishedEvent {
    pub schema_version: u32,
    pub id: String,
    pub time: String,
    pub topic: String,
    pub account: String,
    /// The access key id that published it.
    pub actor: String,
    /// What the publisher sent (a JSON object).
    pub detail: Value,
}

/// Where a published event landed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishReceipt {
    pub id: String,
    pub time: String,
    pub offset: u64,
}

impl ControlPlane {
    fn bus_log(&self) -> Result<&std::sync::Arc<dyn wisp_store::Log>, ApiError> {
        self.lifecycle.log().ok_or_else(|| {
            ApiError::internal("the event bus is unavailable: the control plane has no Log")
        })
    }

    fn topic_not_found(&self, account: &AccountId, topic: &str) -> ApiError {
        ApiError::not_found(format!(
            "topic {topic:?} not found in account {account}; hint: wisp topic create {topic}"
        ))
    }

    /// Creates a topic; creating one that exists is a conflict.
    pub async fn create_topic(
        &self,
        account: &AccountId,
        topic: &str,
    ) -> Result<TopicConfiguration, ApiError> {
        validate_name("topic", topic)?;
        if topic.starts_with("wisp.") {
            return Err(ApiError::invalid(format!(
                "topic name {topic:?} is reserved: names starting with \"wisp.\" belong to the platform"
            )));
        }
        let configuration = TopicConfiguration {
            topic_name: topic.to_string(),
            built_in: false,
            created: event_time(chrono::Utc::now()),
        };
        match self
            .kv
            .put_if_absent(&topic_key(account, topic), encode(&configuration), None)
            .await
            .map_err(store_error)?
        {
            Some(_) => Ok(configuration),
            None => Err(ApiError::conflict(format!(
                "topic {topic:?} already exists"
            ))),
        }
    }

    /// A topic's configuration (the built-in one always exists).
    pub async fn get_topic(
        &self,
        account: &AccountId,
        topic: &str,
    ) -> Result<TopicConfiguration, ApiError> {
        if topic == LIFECYCLE_TOPIC {
            return Ok(TopicConfiguration {
                topic_name: LIFECYCLE_TOPIC.into(),
                built_in: true,
                created: String::new(),
            });
        }
        validate_name("topic", topic)?;
        let key = topic_key(account, topic);
        let entry = self
            .kv
            .get(&key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| self.topic_not_found(account, topic))?;
        decode(&key, &entry.value)
    }

    /// Every topic of the account, the built-in one first.
    pub async fn list_topics(
        &self,
        account: &AccountId,
    ) -> Result<Vec<TopicConfiguration>, ApiError> {
        let mut topics = vec![self.get_topic(account, LIFECYCLE_TOPIC).await?];
        for (key, entry) in self.scan_all(&format!("topic/{account}/")).await? {
            topics.push(decode(&key, &entry.value)?);
        }
        Ok(topics)
    }

    /// Deletes a topic, its rules and its events (the dead-letter log stays until read).
    pub async fn delete_topic(&self, account: &AccountId, topic: &str) -> Result<(), ApiError> {
        if topic == LIFECYCLE_TOPIC {
            return Err(ApiError::invalid(format!(
                "{LIFECYCLE_TOPIC} is built in and cannot be deleted; delete its rules instead"
            )));
        }
        self.get_topic(account, topic).await?;
        // Rules first, the topic last: a crash in between leaves a topic that can be deleted again.
        for rule in self.list_rules(account, topic).await? {
            self.kv
                .delete(&rule_key(account, topic, &rule.rule_name))
                .await
                .map_err(store_error)?;
        }
        let log = self.bus_log()?;
        let store_topic = topic_log(&account.0, topic);
        let last = log.last_offset(&store_topic).await.map_err(store_error)?;
        if last > 0 {
            log.trim(&store_topic, last + 1)
                .await
                .map_err(store_error)?;
        }
        self.kv
            .delete(&topic_key(account, topic))
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Checks and wraps events (each a JSON object) and appends them to the topic atomically; returns
    /// once they are durable. The built-in topic is written by the platform only.
    pub async fn publish(
        &self,
        account: &AccountId,
        topic: &str,
        details: Vec<Value>,
    ) -> Result<Vec<PublishReceipt>, ApiError> {
        if topic == LIFECYCLE_TOPIC {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                format!(
                    "{LIFECYCLE_TOPIC} is written by the platform only; publish to a topic of your own"
                ),
            ));
        }
        if details.is_empty() {
            return Err(ApiError::invalid(
                "no events to publish: send one JSON object, or an array of 1 to 100",
            ));
        }
        if details.len() > MAX_BATCH_EVENTS {
            return Err(ApiError::invalid(format!(
                "{} events in one request; the limit is {MAX_BATCH_EVENTS}",
                details.len()
            )));
        }
        self.get_topic(account, topic).await?;
        let actor = current_actor();
        let mut total = 0;
        let mut payloads = Vec::with_capacity(details.len());
        let mut receipts = Vec::with_capacity(details.len());
        for (index, detail) in details.into_iter().enumerate() {
            if !detail.is_object() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequestContent,
                    format!("event {index} is not a JSON object: {detail}"),
                ));
            }
            let size = detail.to_string().len();
            if size > MAX_EVENT_BYTES {
                return Err(ApiError::new(
                    ErrorCode::RequestTooLarge,
                    format!("event {index} is {size} bytes; the limit is {MAX_EVENT_BYTES}"),
                ));
            }
            total += size;
            let event = PublishedEvent {
                schema_version: crate::lifecycle::SCHEMA_VERSION,
                id: uuid::Uuid::new_v4().to_string(),
                time: event_time(chrono::Utc::now()),
                topic: topic.to_string(),
                account: account.0.clone(),
                actor: actor.clone(),
                detail,
            };
            receipts.push(PublishReceipt {
                id: event.id.clone(),
                time: event.time.clone(),
                offset: 0,
            });
            payloads.push(serde_json::to_vec(&event).expect("events serialise"));
        }
        if total > MAX_BATCH_BYTES {
            return Err(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "the events are {total} bytes together; the limit is {MAX_BATCH_BYTES} per request"
                ),
            ));
        }
        let offsets = self
            .bus_log()?
            .append_batch(&topic_log(&account.0, topic), payloads)
            .await
            .map_err(|error| ApiError::internal(format!("the events were not stored: {error}")))?;
        for (receipt, offset) in receipts.iter_mut().zip(offsets) {
            receipt.offset = offset;
        }
        Ok(receipts)
    }

    /// Creates or replaces a rule. The pattern and every target are checked first; a new rule applies
    /// to events appended from now on, a replaced one keeps its starting offset.
    pub async fn put_rule(
        &self,
        account: &AccountId,
        topic: &str,
        rule: &str,
        input: RuleInput,
    ) -> Result<Rule, ApiError> {
        validate_name("rule", rule)?;
        self.get_topic(account, topic).await?;
        let pattern = input.event_pattern.ok_or_else(|| {
            ApiError::invalid(
                "EventPattern is required, e.g. {\"Type\": [\"FunctionCodeUpdated\"]}",
            )
        })?;
        let parsed = EventPattern::parse(&pattern)?;
        let given = input
            .targets
            .filter(|targets| !targets.is_empty())
            .ok_or_else(|| {
                ApiError::invalid("Targets is required: a list of 1 to 5 function names or ARNs")
            })?;
        if given.len() > MAX_TARGETS {
            return Err(ApiError::invalid(format!(
                "{} targets; a rule has at most {MAX_TARGETS}",
                given.len()
            )));
        }
        let mut targets = Vec::with_capacity(given.len());
        for target in &given {
            targets.push(
                self.check_rule_target(account, topic, &parsed, target, None)
                    .await?,
            );
        }
        let key = rule_key(account, topic, rule);
        let existing = self.kv.get(&key).await.map_err(store_error)?;
        let from_offset = match &existing {
            Some(entry) => decode::<Rule>(&key, &entry.value)?.from_offset,
            None => {
                if self.list_rules(account, topic).await?.len() >= MAX_RULES_PER_TOPIC {
                    return Err(ApiError::invalid(format!(
                        "topic {topic:?} has {MAX_RULES_PER_TOPIC} rules, the most it may have"
                    )));
                }
                self.bus_log()?
                    .last_offset(&topic_log(&account.0, topic))
                    .await
                    .map_err(store_error)?
                    + 1
            }
        };
        let stored = Rule {
            rule_name: rule.to_string(),
            topic_name: topic.to_string(),
            event_pattern: pattern,
            targets,
            description: input.description.unwrap_or_default(),
            from_offset,
            last_modified: event_time(chrono::Utc::now()),
        };
        let expected = existing.map(|entry| entry.revision);
        match self
            .kv
            .compare_and_set(&key, expected, encode(&stored), None)
            .await
        {
            Ok(_) => Ok(stored),
            Err(StoreError::Conflict { .. }) => Err(ApiError::conflict(format!(
                "rule {rule:?} was changed by another request; retry"
            ))),
            Err(error) => Err(store_error(error)),
        }
    }

    /// The single place a rule's target is checked: it must be a function (optionally qualified) of
    /// the caller's account that exists now. Issue #4's checked wiring (what the topic carries against
    /// what the target accepts) plugs in here.
    pub(crate) async fn check_rule_target(
        &self,
        account: &AccountId,
        topic: &str,
        pattern: &EventPattern,
        target: &str,
        pending: Option<crate::wiring::PendingAlias<'_>>,
    ) -> Result<RuleTarget, ApiError> {
        if target.starts_with("arn:") && target.split(':').nth(2) != Some("lambda") {
            return Err(ApiError::invalid(format!(
                "target {target:?} is not a function ARN; rules deliver to functions only"
            )));
        }
        let reference = FunctionRef::parse(target).map_err(|error| {
            ApiError::invalid(format!(
                "target {target:?} is not a function name or ARN: {}",
                error.message
            ))
        })?;
        if let Some(named) = &reference.account
            && named != account
        {
            return Err(ApiError::new(
                ErrorCode::AccessDenied,
                format!(
                    "target {target:?} belongs to account {named}; rules may only target functions of account {account}"
                ),
            ));
        }
        self.get_function(account, &reference.name, reference.qualifier.as_ref())
            .await
            .map_err(|error| {
                if error.code == ErrorCode::ResourceNotFound {
                    ApiError::not_found(format!(
                        "target {target:?} does not exist: {}",
                        error.message
                    ))
                } else {
                    error
                }
            })?;
        // What the rule delivers must be what the target accepts (issue #4's checked wiring).
        // Every version the target may run (both of a weighted alias) must accept it.
        let produced = crate::wiring::Produced::schema(rule_event_schema(topic, pattern));
        let mismatches = self
            .refusals(account, &reference, pending, &[produced])
            .await?;
        if !mismatches.is_empty() {
            let shown: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
            return Err(ApiError::invalid(format!(
                "target {target:?} does not accept the events this rule delivers from topic {topic:?}: {}; hint: widen its input schema, or pin the fields it needs with exact values in the pattern",
                shown.join("; ")
            )));
        }
        let qualifier = reference.qualifier.map(|qualifier| qualifier.to_string());
        let arn = match &qualifier {
            Some(qualifier) => {
                qualified_arn(&self.options.region, account, &reference.name, qualifier)
            }
            None => function_arn(&self.options.region, account, &reference.name),
        };
        Ok(RuleTarget {
            function_name: reference.name,
            qualifier,
            arn,
        })
    }

    pub async fn get_rule(
        &self,
        account: &AccountId,
        topic: &str,
        rule: &str,
    ) -> Result<Rule, ApiError> {
        self.get_topic(account, topic).await?;
        let key = rule_key(account, topic, rule);
        let entry = self
            .kv
            .get(&key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "rule {rule:?} not found on topic {topic:?}; hint: wisp rule ls {topic}"
                ))
            })?;
        decode(&key, &entry.value)
    }

    /// The rules of a topic, in name order (no topic check: the dispatcher calls it for its own topic).
    pub async fn list_rules(
        &self,
        account: &AccountId,
        topic: &str,
    ) -> Result<Vec<Rule>, ApiError> {
        self.scan_all(&rule_prefix(account, topic))
            .await?
            .into_iter()
            .map(|(key, entry)| decode(&key, &entry.value))
            .collect()
    }

    pub async fn delete_rule(
        &self,
        account: &AccountId,
        topic: &str,
        rule: &str,
    ) -> Result<(), ApiError> {
        self.get_topic(account, topic).await?;
        if !self
            .kv
            .delete(&rule_key(account, topic, rule))
            .await
            .map_err(store_error)?
        {
            return Err(ApiError::not_found(format!(
                "rule {rule:?} not found on topic {topic:?}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keys_round_trip() {
        let account = AccountId("123456789012".into());
        let key = rule_key(&account, "orders.v1", "big-ones");
        assert_eq!(key, "rule/123456789012/orders.v1/big-ones");
        assert_eq!(
            parse_rule_key(&key),
            Some((account, "orders.v1".into(), "big-ones".into()))
        );
        assert_eq!(parse_rule_key("fn/1/x"), None);
    }

    #[test]
    fn a_pattern_narrows_what_a_rule_delivers_to_its_exact_values() {
        use serde_json::json;
        let accepts_code_updates = json!({
            "type": "object",
            "required": ["Type"],
            "properties": {"Type": {"enum": ["FunctionCodeUpdated"]}},
        });
        let any = EventPattern::parse(&json!({})).unwrap();
        let pinned = EventPattern::parse(&json!({"Type": ["FunctionCodeUpdated"]})).unwrap();
        let wide = crate::compat::check(
            &rule_event_schema(LIFECYCLE_TOPIC, &any),
            &accepts_code_updates,
        );
        assert_eq!(wide.len(), 1, "{wide:?}");
        assert_eq!(wide[0].path, "/Type");
        assert!(
            crate::compat::check(
                &rule_event_schema(LIFECYCLE_TOPIC, &pinned),
                &accepts_code_updates
            )
            .is_empty()
        );
        // A value the lifecycle shape never has narrows to nothing rather than widening it.
        let impossible = EventPattern::parse(&json!({"Type": ["NoSuchType"]})).unwrap();
        assert_eq!(
            rule_event_schema(LIFECYCLE_TOPIC, &impossible).pointer("/properties/Type/enum"),
            Some(&json!([]))
        );
        // Publishers' Detail is untyped: pinning a Detail field does not invent a type for it.
        let detail = EventPattern::parse(&json!({"Detail": {"kind": ["a"]}})).unwrap();
        assert_eq!(
            rule_event_schema("orders", &detail).pointer("/properties/Detail"),
            Some(&json!({"type": "object"}))
        );
    }

    #[test]
    fn the_lifecycle_topic_is_the_lifecycle_log() {
        assert_eq!(topic_log("1", LIFECYCLE_TOPIC), "wisp.lifecycle/1");
        assert_eq!(topic_log("1", "orders"), "bus/1/orders");
        assert!(validate_name("topic", "a.b-c_d").is_ok());
        for bad in ["", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name("topic", bad).is_err(), "{bad:?}");
        }
    }
}
