//! Event-bus delivery: one dispatcher task per topic that has (or had) a rule, consuming the topic's
//! log as the named consumer [`BUS_CONSUMER`] and, for every rule whose pattern matches an event,
//! queueing the event to each target function as an async invocation ([`Engine::enqueue`], so the
//! target's retries, event invoke configuration, destinations and dead-letter log apply).
//!
//! A record is acked only after every matching target's enqueue has returned (durable) or the
//! delivery was written to the topic's dead-letter log `busdlq/{account}/{topic}` (target function
//! gone, event refused by it): delivery is at least once, and a crash can queue an event to a target
//! twice but never lose it. Dispatchers start for every topic with a rule when the engine starts
//! (found by scanning `rule/`) and when a rule is put (the `rule/` prefix is watched), and resume
//! from the consumer's position in the store. Rules are read from the store for every batch, so a
//! changed rule applies from the next batch. This module also gives the control plane its
//! [`HookInvoker`] for admission hooks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use wisp_control::admission::{HookAnswer, HookInvoker};
use wisp_control::bus::{
    RULE_PREFIX, Rule, RuleTarget, dead_letter_log, parse_rule_key, topic_log,
};
use wisp_control::lifecycle::event_time;
use wisp_control::pattern::EventPattern;
use wisp_store::KvEvent;
use wisp_types::*;

use crate::{Engine, InvocationType, InvokeRequest};

/// Name of the consumer that delivers a topic's events.
pub const BUS_CONSUMER: &str = "bus";
/// Records consumed at once.
const CONSUME_BATCH: usize = 256;
/// Consumed records stay leased until acked or the server stops (leases are not kept across restarts).
const LEASE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Attempts to queue one event to one target when the failure may pass (store errors, throttling),
/// before it goes to the dead-letter log.
const MAX_ATTEMPTS: u32 = 8;
/// How long an idle dispatcher waits before it looks at the store again without being woken.
const IDLE_RECHECK: Duration = Duration::from_secs(5);

/// The bus dispatchers this engine runs.
#[derive(Default)]
pub(crate) struct Dispatchers {
    running: Mutex<HashMap<(AccountId, String), Arc<TopicDispatcher>>>,
    stopping: AtomicBool,
    stopped: Arc<tokio::sync::Notify>,
}

impl Dispatchers {
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stopped.notify_waiters();
    }
}

struct TopicDispatcher {
    account: AccountId,
    topic: String,
    store_topic: String,
}

/// One delivery that could not be made, as kept in a topic's dead-letter log.
fn dead_letter(
    dispatcher: &TopicDispatcher,
    offset: u64,
    rule: &str,
    target: &RuleTarget,
    condition: &str,
    reason: &str,
    event: &Value,
) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Topic": dispatcher.topic,
        "Offset": offset,
        "Rule": rule,
        "Target": target.arn,
        "Condition": condition,
        "Reason": reason,
        "FailedTime": event_time(chrono::Utc::now()),
        "Event": event,
    }))
    .expect("dead letters serialise")
}

impl Engine {
    /// The control plane's way to invoke admission hooks (holds the engine weakly).
    pub fn hook_invoker(&self) -> Arc<dyn HookInvoker> {
        Arc::new(EngineHookInvoker {
            engine: self.me.clone(),
        })
    }

    /// Starts the dispatcher of a topic unless it runs already.
    fn start_dispatcher(&self, account: &AccountId, topic: &str) {
        if self.bus.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut running = self
            .bus
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        running
            .entry((account.clone(), topic.to_string()))
            .or_insert_with(|| {
                let dispatcher = Arc::new(TopicDispatcher {
                    account: account.clone(),
                    topic: topic.to_string(),
                    store_topic: topic_log(&account.0, topic),
                });
                tokio::spawn(dispatch(self.me.clone(), dispatcher.clone()));
                dispatcher
            });
    }

    /// Queues one event to one target; `Err((condition, reason))` when it must go to the dead-letter
    /// log instead (after [`MAX_ATTEMPTS`] for failures that may pass).
    async fn queue_for_target(
        &self,
        account: &AccountId,
        target: &RuleTarget,
        payload: Bytes,
    ) -> Result<(), (&'static str, String)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = InvokeRequest {
                account: account.clone(),
                function: FunctionRef {
                    account: None,
                    region: None,
                    name: target.function_name.clone(),
                    qualifier: None,
                },
                qualifier: match &target.qualifier {
                    Some(text) => match Qualifier::parse(text) {
                        Ok(qualifier) => Some(qualifier),
                        Err(error) => return Err(("InvalidTarget", error.message)),
                    },
                    None => None,
                },
                payload: payload.clone(),
                invocation_type: InvocationType::Event,
                want_log_tail: false,
                client_context: None,
                idempotency_key: None,
                // A delivered event is an ordinary event: the target's own hooks run.
                skip_hooks: false,
                grpc_method: None,
                caller_deadline_ms: None,
            };
            let error = match self.enqueue(request).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            let condition = match error.code {
                ErrorCode::ResourceNotFound => "FunctionNotFound",
                ErrorCode::Service | ErrorCode::TooManyRequests if attempt < MAX_ATTEMPTS => {
                    tracing::warn!(%error, target = target.arn, attempt, "could not queue a bus event; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
                    continue;
                }
                ErrorCode::Service | ErrorCode::TooManyRequests => "DeliveryFailed",
                _ => "EventRefused",
            };
            return Err((condition, error.message));
        }
    }

    /// Delivers one record to every matching rule's targets; returns once each is queued or dead-lettered.
    async fn route(
        &self,
        dispatcher: &TopicDispatcher,
        rules: &[(Rule, EventPattern)],
        offset: u64,
        payload: Bytes,
    ) -> Result<(), wisp_store::StoreError> {
        let Ok(event) = serde_json::from_slice::<Value>(&payload) else {
            tracing::warn!(
                topic = dispatcher.store_topic,
                offset,
                "unreadable bus event skipped"
            );
            return Ok(());
        };
        let mut deliveries = Vec::new();
        for (rule, pattern) in rules {
            if rule.from_offset > offset || !pattern.matches(&event) {
                continue;
            }
            for target in &rule.targets {
                let payload = payload.clone();
                let account = &dispatcher.account;
                deliveries.push(async move {
                    let outcome = self.queue_for_target(account, target, payload).await;
                    (rule.rule_name.as_str(), target, outcome)
                });
            }
        }
        for (rule, target, outcome) in futures::future::join_all(deliveries).await {
            if let Err((condition, reason)) = outcome {
                tracing::warn!(
                    topic = dispatcher.topic,
                    rule,
                    target = target.arn,
                    condition,
                    reason,
                    "bus event dead-lettered"
                );
                self.log
                    .append(
                        &dead_letter_log(&dispatcher.account.0, &dispatcher.topic),
                        dead_letter(dispatcher, offset, rule, target, condition, &reason, &event),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// Starts a dispatcher for every topic with a rule, then one for each topic that gets its first rule.
pub(crate) async fn follow_rules(engine: Weak<Engine>) {
    loop {
        let Some(strong) = engine.upgrade() else {
            return;
        };
        let kv = strong.control.kv().clone();
        // Watch first, then scan: a rule put in between is seen by one or the other.
        let mut changes = match kv.watch(RULE_PREFIX).await {
            Ok(changes) => changes,
            Err(error) => {
                tracing::error!(%error, "cannot watch event-bus rules; retrying");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut after: Option<String> = None;
        loop {
            match kv.scan(RULE_PREFIX, after.as_deref(), 1000).await {
                Ok(page) => {
                    let Some((last, _)) = page.last() else { break };
                    after = Some(last.clone());
                    for (key, _) in &page {
                        if let Some((account, topic, _)) = parse_rule_key(key) {
                            strong.start_dispatcher(&account, &topic);
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cannot list event-bus rules; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        drop(strong);
        while let Some(change) = changes.next().await {
            let KvEvent::Put { key, .. } = change else {
                continue;
            };
            let Some(strong) = engine.upgrade() else {
                return;
            };
            if let Some((account, topic, _)) = parse_rule_key(&key) {
                strong.start_dispatcher(&account, &topic);
            }
        }
        // The watch fell behind (or the store closed it): scan again.
    }
}

/// The rules of a topic with their patterns (a stored pattern that no longer parses is skipped).
async fn load_rules(
    engine: &Engine,
    dispatcher: &TopicDispatcher,
) -> Result<Vec<(Rule, EventPattern)>, ApiError> {
    let rules = engine
        .control
        .list_rules(&dispatcher.account, &dispatcher.topic)
        .await?;
    Ok(rules
        .into_iter()
        .filter_map(|rule| match EventPattern::parse(&rule.event_pattern) {
            Ok(pattern) => Some((rule, pattern)),
            Err(error) => {
                tracing::error!(
                    rule = rule.rule_name,
                    error = error.message,
                    "stored rule has an unusable pattern; skipped"
                );
                None
            }
        })
        .collect())
}

/// One topic's dispatcher: consume, route, ack; wait for appends when there is nothing to do.
async fn dispatch(engine: Weak<Engine>, dispatcher: Arc<TopicDispatcher>) {
    loop {
        let Some(strong) = engine.upgrade() else {
            return;
        };
        if strong.bus.stopping.load(Ordering::SeqCst) {
            return;
        }
        let log = strong.log.clone();
        let records = match log
            .consume(&dispatcher.store_topic, BUS_CONSUMER, CONSUME_BATCH, LEASE)
            .await
        {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, topic = dispatcher.store_topic, "bus dispatcher cannot consume; retrying");
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if records.is_empty() {
            let last = log.last_offset(&dispatcher.store_topic).await.unwrap_or(0);
            let stopped = strong.bus.stopped.clone();
            drop(strong);
            tokio::select! {
                _ = log.wait_for(&dispatcher.store_topic, last) => {}
                _ = stopped.notified() => {}
                _ = tokio::time::sleep(IDLE_RECHECK) => {}
            }
            continue;
        }
        let rules = match load_rules(&strong, &dispatcher).await {
            Ok(rules) => rules,
            Err(error) => {
                tracing::error!(
                    error = error.message,
                    topic = dispatcher.topic,
                    "cannot read the topic's rules; retrying"
                );
                drop(strong);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Records of a batch are routed concurrently (their appends share group commits); each is
        // acked once its own deliveries are stored. A record whose deliveries or ack fail is routed
        // again (at least once); one left when the server stops is delivered again after a restart.
        let routed = records.into_iter().map(|record| {
            let strong = &strong;
            let dispatcher = &dispatcher;
            let rules = &rules;
            async move {
                let offset = record.offset;
                let payload = Bytes::from(record.payload);
                loop {
                    let outcome = match strong
                        .route(dispatcher, rules, offset, payload.clone())
                        .await
                    {
                        Ok(()) => {
                            strong
                                .log
                                .ack(&dispatcher.store_topic, BUS_CONSUMER, offset)
                                .await
                        }
                        Err(error) => Err(error),
                    };
                    let Err(error) = outcome else { return };
                    tracing::error!(%error, topic = dispatcher.store_topic, offset, "a bus event could not be settled; retrying");
                    if strong.bus.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        });
        futures::future::join_all(routed).await;
    }
}

struct EngineHookInvoker {
    engine: Weak<Engine>,
}

#[async_trait]
impl HookInvoker for EngineHookInvoker {
    async fn invoke_hook(
        &self,
        account: &AccountId,
        function: &FunctionRef,
        payload: Vec<u8>,
    ) -> Result<HookAnswer, ApiError> {
        let engine = self
            .engine
            .upgrade()
            .ok_or_else(|| ApiError::internal("the server is stopping"))?;
        let response = engine
            .invoke(InvokeRequest {
                account: account.clone(),
                function: function.clone(),
                qualifier: None,
                payload: Bytes::from(payload),
                invocation_type: InvocationType::RequestResponse,
                want_log_tail: false,
                client_context: None,
                idempotency_key: None,
                // The platform asks the hook directly: no invocation hook may rewrite its verdict.
                skip_hooks: true,
                grpc_method: None,
                caller_deadline_ms: None,
            })
            .await?;
        Ok(HookAnswer {
            payload: response.payload.to_vec(),
            function_error: response.function_error,
        })
    }
}
