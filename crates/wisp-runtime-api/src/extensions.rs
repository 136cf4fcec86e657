//! The Extensions API (`/2020-01-01/extension/…`) of one sandbox, served on the Runtime API's address.
//!
//! External extensions (agents started from `/opt/extensions` before the runtime) and internal ones
//! (threads of the runtime) register here during init, then long-poll `event/next`. The rules are
//! Lambda's: init is complete once every started extension has registered and asked for its first
//! event and the runtime has asked for its first invocation; each invocation sends `INVOKE` to the
//! extensions registered for it, and the instance is settled again once each of them has asked for
//! its next event; a stop sends `SHUTDOWN`. Wisp adds two opt-in events: `HEARTBEAT`, sent at the
//! interval the extension asked for while the instance is idle, and `CHECKPOINT`, sent before
//! `SHUTDOWN` when the instance is about to be stopped.
//!
//! This module only keeps the registry and moves events; the engine decides when an instance is
//! stopped and how long it waits ([`Extensions`]). It never touches processes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::shutdown::ShutdownReason;
use crate::telemetry::{Connector, Subscriber};
use crate::{Body, EndpointInner, Invocation, RuntimeState, json_response};

/// Telemetry events kept from the start of init for extensions that subscribe during init.
const TELEMETRY_BACKLOG: usize = 1000;

/// Header naming an extension at registration (its file name, for an external one).
pub const NAME_HEADER: &str = "lambda-extension-name";
/// Header carrying the identifier `register` handed out.
pub const IDENTIFIER_HEADER: &str = "lambda-extension-identifier";
/// Wisp's register header choosing the `HEARTBEAT` interval, in milliseconds.
pub const HEARTBEAT_INTERVAL_HEADER: &str = "wisp-heartbeat-interval-ms";
/// Interval of `HEARTBEAT` events when the extension does not choose one.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest `HEARTBEAT` interval an extension may ask for.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Who the function is, as `register` answers it.
#[derive(Debug, Clone, Default)]
pub struct FunctionIdentity {
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
    pub account_id: String,
    /// File names of the external extensions started in the sandbox: init waits for each to register.
    pub started_extensions: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Subscriptions {
    invoke: bool,
    shutdown: bool,
    heartbeat: bool,
    checkpoint: bool,
}

struct Agent {
    id: String,
    name: String,
    events: Subscriptions,
    heartbeat_interval: Duration,
    queue: VecDeque<serde_json::Value>,
    /// Handed an event (or just registered) and not back in `event/next` yet.
    busy: bool,
}

#[derive(Default)]
struct Registry {
    agents: Vec<Agent>,
    /// Registration is closed once init is complete.
    init_complete: bool,
    runtime_ready_at: Option<Instant>,
    /// Set by `exit/error`: the instance must not be used again.
    exit_error: Option<String>,
    /// Invocations sent to the extensions so far.
    invoke_epoch: u64,
    /// The value of `invoke_epoch` when every extension was last back in `event/next` with nothing
    /// queued: the invocations up to it are done with, as far as extensions go.
    settled_epoch: u64,
    /// Telemetry API subscriptions, by extension identifier.
    subscribers: Vec<(String, Subscriber)>,
    /// Telemetry made before init completed, for subscriptions made during init.
    backlog: Vec<serde_json::Value>,
}

impl Registry {
    /// Records that the invocations so far are done with, if every extension is waiting.
    fn note_settled(&mut self) {
        if self
            .agents
            .iter()
            .all(|agent| !agent.busy && agent.queue.is_empty())
        {
            self.settled_epoch = self.invoke_epoch;
        }
    }
}

/// One sandbox's extensions: shared by the HTTP handlers and the engine's [`ExtensionsHandle`].
pub(crate) struct Extensions {
    identity: FunctionIdentity,
    registry: Mutex<Registry>,
    /// Bumped on every change anyone may wait for (an event queued, an extension back in `next`).
    changed: watch::Sender<u64>,
    /// How telemetry reaches an extension's listener inside the sandbox (none: no Telemetry API).
    connector: Option<Connector>,
    /// Whether telemetry is worth making: someone subscribed, or may still subscribe during init.
    telemetry_wanted: AtomicBool,
}

impl Extensions {
    pub(crate) fn new(identity: FunctionIdentity, connector: Option<Connector>) -> Arc<Extensions> {
        let (changed, _) = watch::channel(0);
        let telemetry_wanted = connector.is_some() && !identity.started_extensions.is_empty();
        Arc::new(Extensions {
            identity,
            registry: Mutex::new(Registry::default()),
            changed,
            connector,
            telemetry_wanted: AtomicBool::new(telemetry_wanted),
        })
    }

    /// Sends a telemetry event to the subscriptions that want its type.
    pub(crate) fn emit(&self, event_type: &str, record: serde_json::Value) {
        if !self.telemetry_wanted.load(Ordering::Relaxed) {
            return;
        }
        let event = crate::telemetry::event_at(event_type, record);
        let mut registry = self.lock();
        for (_, subscriber) in &registry.subscribers {
            if subscriber.streams.wants(event_type) {
                subscriber.send(event.clone());
            }
        }
        if !registry.init_complete && registry.backlog.len() < TELEMETRY_BACKLOG {
            registry.backlog.push(event);
        }
    }

    async fn subscribe(&self, request: Request<Incoming>) -> Response<Body> {
        let Some(id) = header(&request, IDENTIFIER_HEADER) else {
            return missing_identifier();
        };
        let Some(connector) = self.connector.clone() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Telemetry.Unavailable",
                "this sandbox cannot deliver telemetry",
            );
        };
        let body = match crate::read_body(request).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let subscription = match crate::telemetry::parse_subscription(&body) {
            Ok(subscription) => subscription,
            Err(message) => return error(StatusCode::BAD_REQUEST, "ValidationError", &message),
        };
        let streams = subscription.streams;
        let name = {
            let mut registry = self.lock();
            let Some(name) = registry
                .agents
                .iter()
                .find(|agent| agent.id == id)
                .map(|agent| agent.name.clone())
            else {
                return unknown_identifier(&id);
            };
            let subscriber = Subscriber::start(subscription, connector);
            for event in &registry.backlog {
                if subscriber
                    .streams
                    .wants(event["type"].as_str().unwrap_or_default())
                {
                    subscriber.send(event.clone());
                }
            }
            registry.subscribers.retain(|(owner, _)| *owner != id);
            registry.subscribers.push((id.clone(), subscriber));
            name
        };
        self.telemetry_wanted.store(true, Ordering::Relaxed);
        let types: Vec<&str> = [
            ("platform", streams.platform),
            ("function", streams.function),
            ("extension", streams.extension),
        ]
        .into_iter()
        .filter(|(_, wanted)| *wanted)
        .map(|(name, _)| name)
        .collect();
        self.emit(
            "platform.telemetrySubscription",
            serde_json::json!({ "name": name, "state": "Subscribed", "types": types }),
        );
        json_response(StatusCode::OK, "\"OK\"".into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// The runtime asked for its first invocation at `at`.
    pub(crate) fn runtime_ready(&self, inner: &EndpointInner, at: Instant) {
        self.lock().runtime_ready_at.get_or_insert(at);
        self.check_init(inner);
    }

    /// Moves the instance to `Ready` once the runtime and every extension are.
    fn check_init(&self, inner: &EndpointInner) {
        let ready_at = {
            let mut registry = self.lock();
            if registry.init_complete {
                return;
            }
            let Some(runtime_at) = registry.runtime_ready_at else {
                return;
            };
            let all_registered = self
                .identity
                .started_extensions
                .iter()
                .all(|name| registry.agents.iter().any(|agent| &agent.name == name));
            if !all_registered || registry.agents.iter().any(|agent| agent.busy) {
                return;
            }
            registry.init_complete = true;
            registry.backlog = Vec::new();
            if registry.subscribers.is_empty() {
                self.telemetry_wanted.store(false, Ordering::Relaxed);
            }
            runtime_at.max(Instant::now())
        };
        inner.state.send_if_modified(|state| {
            if *state == RuntimeState::Initializing {
                *state = RuntimeState::Ready(ready_at);
                true
            } else {
                false
            }
        });
    }

    /// Queues `INVOKE` for every extension registered for it; called as the runtime gets the invocation.
    pub(crate) fn invoke(&self, invocation: &Invocation) {
        let mut registry = self.lock();
        if registry.agents.is_empty() {
            return;
        }
        let event = serde_json::json!({
            "eventType": "INVOKE",
            "deadlineMs": invocation.deadline_ms,
            "requestId": invocation.request_id,
            "invokedFunctionArn": invocation.invoked_function_arn,
            "tracing": { "type": "X-Amzn-Trace-Id", "value": invocation.trace_id },
        });
        let mut queued = false;
        for agent in registry
            .agents
            .iter_mut()
            .filter(|agent| agent.events.invoke)
        {
            agent.queue.push_back(event.clone());
            queued = true;
        }
        registry.invoke_epoch += 1;
        registry.note_settled();
        drop(registry);
        if queued {
            self.bump();
        }
    }

    pub(crate) async fn handle(
        self: &Arc<Self>,
        inner: &EndpointInner,
        action: &str,
        request: Request<Incoming>,
    ) -> Response<Body> {
        match action {
            "register" => self.register(inner, request).await,
            "next" => self.next(inner, request).await,
            "init-error" => self.report_error(inner, request, true).await,
            "exit-error" => self.report_error(inner, request, false).await,
            "subscribe" => self.subscribe(request).await,
            _ => error(
                StatusCode::NOT_FOUND,
                "InvalidRoute",
                "no such extensions api route",
            ),
        }
    }

    async fn register(&self, inner: &EndpointInner, request: Request<Incoming>) -> Response<Body> {
        let Some(name) = header(&request, NAME_HEADER) else {
            return error(
                StatusCode::BAD_REQUEST,
                "Extension.InvalidRequest",
                "the Lambda-Extension-Name header is missing: name the extension (its file name in /opt/extensions)",
            );
        };
        let interval = match header(&request, HEARTBEAT_INTERVAL_HEADER) {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(ms) if Duration::from_millis(ms) >= MIN_HEARTBEAT_INTERVAL => {
                    Some(Duration::from_millis(ms))
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "Extension.InvalidRequest",
                        &format!(
                            "Wisp-Heartbeat-Interval-Ms must be a whole number of milliseconds, at least {}; got {text:?}",
                            MIN_HEARTBEAT_INTERVAL.as_millis()
                        ),
                    );
                }
            },
        };
        let body = match crate::read_body(request).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let events = match parse_events(&body) {
            Ok(events) => events,
            Err(message) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Extension.InvalidRequest",
                    &message,
                );
            }
        };
        let id = uuid::Uuid::new_v4().to_string();
        {
            let mut registry = self.lock();
            if registry.init_complete {
                return error(
                    StatusCode::FORBIDDEN,
                    "Extension.ForbiddenOperation",
                    &format!(
                        "extension {name} registered after init completed; extensions register during init"
                    ),
                );
            }
            if registry.agents.iter().any(|agent| agent.name == name) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Extension.InvalidRequest",
                    &format!("an extension named {name} is already registered"),
                );
            }
            registry.agents.push(Agent {
                id: id.clone(),
                name: name.clone(),
                events,
                heartbeat_interval: interval.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
                queue: VecDeque::new(),
                busy: true,
            });
        }
        tracing::debug!(extension = %name, "extension registered");
        self.bump();
        let subscribed: Vec<&str> = [
            ("INVOKE", events.invoke),
            ("SHUTDOWN", events.shutdown),
            ("HEARTBEAT", events.heartbeat),
            ("CHECKPOINT", events.checkpoint),
        ]
        .into_iter()
        .filter(|(_, wanted)| *wanted)
        .map(|(event, _)| event)
        .collect();
        self.emit(
            "platform.extension",
            serde_json::json!({ "name": name, "state": "Ready", "events": subscribed }),
        );
        let body = serde_json::json!({
            "functionName": self.identity.function_name,
            "functionVersion": self.identity.function_version,
            "handler": self.identity.handler,
            "accountId": self.identity.account_id,
        });
        let _ = inner;
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header(IDENTIFIER_HEADER, id)
            .body(http_body_util::Full::new(Bytes::from(body.to_string())))
            .unwrap_or_else(|_| crate::internal_error())
    }

    /// Long-polls the extension's next event; asking for it also says the last one is handled.
    async fn next(&self, inner: &EndpointInner, request: Request<Incoming>) -> Response<Body> {
        let Some(id) = header(&request, IDENTIFIER_HEADER) else {
            return missing_identifier();
        };
        {
            let mut registry = self.lock();
            let Some(agent) = registry.agents.iter_mut().find(|agent| agent.id == id) else {
                return unknown_identifier(&id);
            };
            agent.busy = false;
            registry.note_settled();
        }
        self.bump();
        self.check_init(inner);
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let heartbeat = {
                let mut registry = self.lock();
                let init_complete = registry.init_complete;
                let Some(agent) = registry.agents.iter_mut().find(|agent| agent.id == id) else {
                    return unknown_identifier(&id);
                };
                if let Some(event) = agent.queue.pop_front() {
                    agent.busy = true;
                    drop(registry);
                    self.bump();
                    return event_response(event);
                }
                (agent.events.heartbeat && init_complete).then_some(agent.heartbeat_interval)
            };
            match heartbeat {
                Some(interval) => {
                    if tokio::time::timeout(interval, changed.changed())
                        .await
                        .is_err()
                        && self.idle(inner)
                    {
                        let mut registry = self.lock();
                        if let Some(agent) = registry.agents.iter_mut().find(|agent| agent.id == id)
                            && agent.queue.is_empty()
                        {
                            agent.busy = true;
                            drop(registry);
                            self.bump();
                            return event_response(serde_json::json!({
                                "eventType": "HEARTBEAT",
                                "timestampMs": crate::unix_ms(),
                            }));
                        }
                    }
                }
                None => {
                    if changed.changed().await.is_err() {
                        return error(
                            StatusCode::GONE,
                            "InstanceStopping",
                            "instance is shutting down",
                        );
                    }
                }
            }
        }
    }

    /// No invocation is in progress and every extension is waiting for its next event.
    fn idle(&self, inner: &EndpointInner) -> bool {
        let no_invocation = inner
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .is_none();
        no_invocation
            && self
                .lock()
                .agents
                .iter()
                .all(|agent| agent.queue.is_empty())
    }

    async fn report_error(
        &self,
        inner: &EndpointInner,
        request: Request<Incoming>,
        during_init: bool,
    ) -> Response<Body> {
        let Some(id) = header(&request, IDENTIFIER_HEADER) else {
            return missing_identifier();
        };
        let error_type = header(&request, "lambda-extension-function-error-type")
            .unwrap_or_else(|| "Extension.Unknown".into());
        let name = match self.lock().agents.iter().find(|agent| agent.id == id) {
            Some(agent) => agent.name.clone(),
            None => return unknown_identifier(&id),
        };
        let body = crate::read_body(request).await.unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|document| document["errorMessage"].as_str().map(str::to_string))
            .unwrap_or_default();
        let message = if detail.is_empty() {
            format!("extension {name} reported {error_type}")
        } else {
            format!("extension {name} reported {error_type}: {detail}")
        };
        if during_init && !self.lock().init_complete {
            let document = serde_json::json!({ "errorType": error_type, "errorMessage": message });
            inner.state.send_replace(RuntimeState::InitFailed {
                error_type: error_type.clone(),
                body: Bytes::from(document.to_string()),
            });
        } else {
            self.lock().exit_error = Some(message);
        }
        self.bump();
        json_response(StatusCode::ACCEPTED, r#"{"status":"OK"}"#.into())
    }
}

/// The engine's side of one instance's extensions. Cheap to clone.
#[derive(Clone)]
pub struct ExtensionsHandle {
    pub(crate) extensions: Arc<Extensions>,
}

impl ExtensionsHandle {
    /// Whether any extension registered.
    pub fn any(&self) -> bool {
        !self.extensions.lock().agents.is_empty()
    }

    /// Whether an extension registered for `INVOKE`: only then does an invocation wait for them.
    pub fn any_for_invoke(&self) -> bool {
        self.extensions
            .lock()
            .agents
            .iter()
            .any(|agent| agent.events.invoke)
    }

    /// Started extensions that have not registered yet (for an init timeout's message).
    pub fn unregistered(&self) -> Vec<String> {
        let registry = self.extensions.lock();
        self.extensions
            .identity
            .started_extensions
            .iter()
            .filter(|name| !registry.agents.iter().any(|agent| &agent.name == *name))
            .cloned()
            .collect()
    }

    /// Registered extensions that have not asked for their first event yet.
    pub fn not_ready(&self) -> Vec<String> {
        self.busy()
    }

    /// Extensions handed an event (or still in init) that have not asked for the next one.
    pub fn busy(&self) -> Vec<String> {
        self.extensions
            .lock()
            .agents
            .iter()
            .filter(|agent| agent.busy || !agent.queue.is_empty())
            .map(|agent| agent.name.clone())
            .collect()
    }

    /// What an extension said through `exit/error`, if one did: the instance must not be reused.
    pub fn exit_error(&self) -> Option<String> {
        self.extensions.lock().exit_error.clone()
    }

    /// Waits until every extension is back in `event/next` with nothing queued, or `limit` passes.
    /// Returns whether they all were.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches.
    pub async fn settled(&self, limit: Duration) -> bool {
        let mut changed = self.extensions.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changed.borrow_and_update();
            if self.busy().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Whether telemetry events are wanted now (cheap: check before building one).
    pub fn telemetry_wanted(&self) -> bool {
        self.extensions.telemetry_wanted.load(Ordering::Relaxed)
    }

    /// Sends a telemetry event (`platform.report`, `function`, …) with `record` to the
    /// subscriptions that want its type.
    pub fn emit(&self, event_type: &str, record: serde_json::Value) {
        self.extensions.emit(event_type, record);
    }

    /// Delivers buffered telemetry now instead of at the end of its buffering time.
    pub fn flush_telemetry(&self) {
        for (_, subscriber) in &self.extensions.lock().subscribers {
            subscriber.flush();
        }
    }

    /// How many invocations were sent to the extensions so far: right after an invocation, its number.
    pub fn invocation_number(&self) -> u64 {
        self.extensions.lock().invoke_epoch
    }

    /// Waits until every extension was back in `event/next`, with nothing queued, at some moment
    /// after invocation number `invocation` was sent to them (even if a later invocation keeps them
    /// busy again), or `limit` passes. Returns whether they were.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches.
    pub async fn done_with(&self, invocation: u64, limit: Duration) -> bool {
        let mut changed = self.extensions.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changed.borrow_and_update();
            if self.extensions.lock().settled_epoch >= invocation {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Queues `CHECKPOINT` for the extensions that asked for it; returns their names.
    pub fn checkpoint(&self, reason: ShutdownReason, deadline_ms: u64) -> Vec<String> {
        self.queue_for(
            |events| events.checkpoint,
            serde_json::json!({
                "eventType": "CHECKPOINT",
                "reason": reason.as_str(),
                "deadlineMs": deadline_ms,
            }),
        )
    }

    /// Queues `SHUTDOWN` for the extensions registered for it; returns their names.
    pub fn shutdown(&self, reason: ShutdownReason, deadline_ms: u64) -> Vec<String> {
        self.queue_for(
            |events| events.shutdown,
            serde_json::json!({
                "eventType": "SHUTDOWN",
                "shutdownReason": reason.as_str(),
                "deadlineMs": deadline_ms,
            }),
        )
    }

    fn queue_for(
        &self,
        wanted: impl Fn(&Subscriptions) -> bool,
        event: serde_json::Value,
    ) -> Vec<String> {
        let mut names = Vec::new();
        {
            let mut registry = self.extensions.lock();
            for agent in registry
                .agents
                .iter_mut()
                .filter(|agent| wanted(&agent.events))
            {
                agent.queue.push_back(event.clone());
                names.push(agent.name.clone());
            }
        }
        if !names.is_empty() {
            self.extensions.bump();
        }
        names
    }
}

fn parse_events(body: &[u8]) -> Result<Subscriptions, String> {
    let document: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        format!(
            r#"the register body must be JSON like {{"events":["INVOKE","SHUTDOWN"]}}: {error}"#
        )
    })?;
    let mut events = Subscriptions::default();
    let Some(list) = document.get("events").and_then(|events| events.as_array()) else {
        return Err(
            r#"the register body needs an "events" list, e.g. {"events":["INVOKE","SHUTDOWN"]}"#
                .into(),
        );
    };
    for event in list {
        match event.as_str() {
            Some("INVOKE") => events.invoke = true,
            Some("SHUTDOWN") => events.shutdown = true,
            Some("HEARTBEAT") => events.heartbeat = true,
            Some("CHECKPOINT") => events.checkpoint = true,
            _ => {
                return Err(format!(
                    "unknown event {event}; expected INVOKE, SHUTDOWN, HEARTBEAT or CHECKPOINT"
                ));
            }
        }
    }
    Ok(events)
}

fn header(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

fn event_response(event: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header(
            "lambda-extension-event-identifier",
            uuid::Uuid::new_v4().to_string(),
        )
        .body(http_body_util::Full::new(Bytes::from(event.to_string())))
        .unwrap_or_else(|_| crate::internal_error())
}

fn error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string(),
    )
}

fn missing_identifier() -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        "Extension.MissingExtensionIdentifier",
        "the Lambda-Extension-Identifier header is missing: pass the identifier register returned",
    )
}

fn unknown_identifier(id: &str) -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        "Extension.UnknownExtensionIdentifier",
        &format!("no extension is registered with identifier {id:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_bodies_name_known_events_only() {
        let cases: &[(&str, Result<[bool; 4], &str>)] = &[
            (
                r#"{"events":["INVOKE","SHUTDOWN"]}"#,
                Ok([true, true, false, false]),
            ),
            (
                r#"{"events":["HEARTBEAT","CHECKPOINT"]}"#,
                Ok([false, false, true, true]),
            ),
            (r#"{"events":[]}"#, Ok([false, false, false, false])),
            (r#"{"events":["LOGS"]}"#, Err("unknown event \"LOGS\"")),
            (r#"{}"#, Err("needs an \"events\" list")),
            ("not json", Err("must be JSON")),
        ];
        for (body, expected) in cases {
            let parsed = parse_events(body.as_bytes()).map(|events| {
                [
                    events.invoke,
                    events.shutdown,
                    events.heartbeat,
                    events.checkpoint,
                ]
            });
            match (parsed, expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{body}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{body}: {got}"),
                (got, want) => panic!("{body}: got {got:?}, expected {want:?}"),
            }
        }
    }
}
