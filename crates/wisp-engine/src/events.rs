//! Async invocations (`InvocationType: Event`): a durable queue per function, its dispatcher, retries,
//! event age, destinations and the dead-letter log.
//!
//! - **Accepting** an event appends it to the function's queue topic `events/{account}/{function}` in the
//!   store's `Log`; the caller's 202 is sent only after the append returns, that is after the store's group
//!   commit has fsync'd it. The queue's name is stored first (`evq/{account}/{function}` in the `Kv`), so a
//!   restarted server finds every queue.
//! - **Dispatching**: one task per queue takes its records in offset order — consumed from the store
//!   (consumer `dispatcher`), or, for an event just accepted, handed over in memory by the enqueue path so it
//!   can start without a second fsync (taken only if every earlier record was, so order holds) — takes a
//!   concurrency slot for each (a throttled event waits in memory for a slot and is never dropped) and a
//!   warm instance, or starts a new one (at most [`MAX_STARTING`] at a time per queue, so a backlog grows its
//!   instances gradually instead of starting one per waiting event), and runs it like a synchronous invoke.
//! - **Retries** after a function error, crash or timeout are new records in the same queue, due after a
//!   backoff (`event_retry_delay` × 2^retry), up to the configuration's MaximumRetryAttempts (default 2).
//! - **Age**: an event older than MaximumEventAgeInSeconds (default 6 hours) when its turn comes is not run.
//! - **Outcomes**: a success goes to the OnSuccess destination; exhausted retries and expired events go to the
//!   OnFailure destination, or else to the dead-letter log `dlq/{account}/{function}` (`wisp dlq` lists and
//!   redrives it). Destinations are functions; they receive Lambda's invocation record as their event.
//!
//! The rule that makes this durable: a record is acked only after what follows from it is stored — the
//! retry appended, the destination's event appended, the dead-letter record appended. A server killed at any
//! moment loses no accepted event; unacked records are delivered again after a restart (at least once), and
//! the store counts deliveries, so the invocation record's `attempts` includes runs cut short by the crash.
//! This module must never ack before that, nor drop an event it cannot run.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wisp_control::Resolved;
use wisp_types::*;

use crate::instance::{Instance, unix_ms};
use crate::{Engine, InvokeRequest, InvokeResponse, Slot, request_id};

/// Name of the consumer that runs a queue's events.
pub const QUEUE_CONSUMER: &str = "dispatcher";
/// Kv prefix listing the functions that have a queue.
const QUEUE_INDEX_PREFIX: &str = "evq/";
/// Events one queue holds in memory at most (running, waiting for a slot, or waiting for a retry).
const MAX_HELD: usize = 1024;
/// Events consumed from the store in one call.
const CONSUME_BATCH: usize = 256;
/// Deliveries of one record (each restart during its run adds one) before it goes to the dead-letter log
/// instead of being run again: a guard against an event that kills the server.
const MAX_DELIVERIES: u32 = 5;
/// A consumed record stays leased until it is acked or the server stops.
const LEASE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How often a throttled queue looks for a free slot when no release wakes it.
const THROTTLE_POLL: Duration = Duration::from_millis(50);
/// New instances one queue starts at once. A backlog takes warm instances as they come free and grows
/// by this many at a time, rather than starting an instance for every waiting event.
const MAX_STARTING: usize = 2;
/// How long an event waits for one of its queue's busy instances before a new one is started for it.
const NEW_INSTANCE_AFTER: Duration = Duration::from_millis(10);
/// How soon after events are taken from memory the store is asked to count their deliveries.
const COUNT_INTERVAL: Duration = Duration::from_millis(10);

/// Topic of a function's event queue.
pub fn queue_topic(account: &str, function: &str) -> String {
    format!("events/{account}/{function}")
}

/// Topic of a function's dead-letter log.
pub fn dead_letter_topic(account: &str, function: &str) -> String {
    format!("dlq/{account}/{function}")
}

fn queue_index_key(account: &str, function: &str) -> String {
    format!("{QUEUE_INDEX_PREFIX}{account}/{function}")
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

fn store_failure(error: wisp_store::StoreError) -> ApiError {
    ApiError::internal(format!("store error: {error}"))
}

/// What travels with an event in its queue record, before the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventHeader {
    request_id: String,
    /// The qualifier the caller invoked (`None`: unqualified, i.e. `$LATEST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    qualifier: Option<String>,
    /// When the event was accepted, microseconds since the Unix epoch; its age counts from here.
    enqueued_us: u64,
    /// Retries already made after failed runs.
    #[serde(default)]
    retries: u32,
    /// Runs made for this invocation by earlier records (before a retry or a redrive).
    #[serde(default)]
    prior_attempts: u32,
    /// Not to be run before this time (milliseconds since the Unix epoch); 0 means at once.
    #[serde(default)]
    due_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_context: Option<String>,
    /// The event's idempotency key, when its function is idempotent (taken from the event or the header
    /// when it was accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
}

/// A queue record: the header's length (4 bytes, big-endian), the header as JSON, then the payload.
fn encode_event(header: &EventHeader, payload: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(header).expect("event headers serialise");
    let mut bytes = Vec::with_capacity(4 + head.len() + payload.len());
    bytes.extend_from_slice(&(head.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(payload);
    bytes
}

fn decode_event(bytes: &[u8]) -> Option<(EventHeader, Bytes)> {
    let length = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let head = bytes.get(4..4 + length)?;
    let header = serde_json::from_slice(head).ok()?;
    Some((header, Bytes::copy_from_slice(&bytes[4 + length..])))
}

/// One entry of a function's dead-letter log, as `wisp dlq` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeadLetter {
    pub request_id: String,
    pub function_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    /// `RetriesExhausted`, `EventAgeExceeded`, `FunctionNotFound`, `DeliveryLimitExceeded` or
    /// `DestinationFailed`.
    pub condition: String,
    pub reason: String,
    pub attempts: u32,
    pub enqueued_ms: u64,
    pub failed_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The last run's response or error document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    /// The event exactly as it was sent (JSON text).
    pub payload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The queues this engine runs.
#[derive(Default)]
pub(crate) struct Queues {
    running: Mutex<HashMap<(AccountId, String), Arc<Queue>>>,
    stopping: AtomicBool,
    /// One redrive at a time, so two callers cannot send the same dead letters twice.
    redriving: tokio::sync::Mutex<()>,
}

impl Queues {
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for queue in self
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
        {
            queue.wake.notify_one();
        }
    }
}

struct Queue {
    account: AccountId,
    function: String,
    topic: String,
    wake: tokio::sync::Notify,
    /// Offsets of records being run or settled right now.
    in_flight: Mutex<BTreeSet<u64>>,
    /// Offsets acked since the dispatcher last asked the store for records: a record handed over in
    /// memory is not leased, so a consume that overlapped its ack may still return it.
    settled: Mutex<BTreeSet<u64>>,
    /// Events just appended, handed over in memory (see [`Engine::append_event`]).
    handoff: Mutex<Vec<Held>>,
    /// Instances this queue is starting right now.
    starting: AtomicUsize,
    /// Whether the store may hold records the dispatcher has not taken (set at start, and by appends
    /// that were not handed over).
    unseen: AtomicBool,
}

impl Queue {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn settled(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.settled
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn handed(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        self.handoff
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The end of one event's handling: no longer in flight, and (if acked) remembered as settled.
    fn finish(&self, offset: u64) {
        self.settled().insert(offset);
        self.in_flight().remove(&offset);
        self.wake.notify_one();
    }
}

/// A consumed record the dispatcher holds until it is acked.
struct Held {
    offset: u64,
    /// How many times the store has handed this record out (more than 1 after a restart during its run).
    deliveries: u32,
    header: EventHeader,
    payload: Bytes,
}

impl Held {
    fn attempts(&self) -> u32 {
        self.header.prior_attempts + self.deliveries
    }
}

/// Why an event ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    RetriesExhausted,
    EventAgeExceeded,
    FunctionNotFound,
    DeliveryLimitExceeded,
    IdempotencyKeyMismatch,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::RetriesExhausted => "RetriesExhausted",
            Condition::EventAgeExceeded => "EventAgeExceeded",
            Condition::FunctionNotFound => "FunctionNotFound",
            Condition::DeliveryLimitExceeded => "DeliveryLimitExceeded",
            Condition::IdempotencyKeyMismatch => "IdempotencyKeyMismatch",
        }
    }
}

/// The last run of an event, for records, destinations and dead letters.
struct LastRun {
    version: String,
    error_type: Option<String>,
    response: Bytes,
}

impl Engine {
    /// Accepts an event: checks it, resolves the function (so a missing one is refused now), appends the
    /// event to the function's queue and returns once it is durable. The response has no payload.
    pub(crate) async fn enqueue(&self, request: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        if request.payload.len() > MAX_ASYNC_PAYLOAD_BYTES {
            return Err(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "Request must be smaller than {MAX_ASYNC_PAYLOAD_BYTES} bytes for an asynchronous (Event) invocation; this one is {} bytes",
                    request.payload.len()
                ),
            ));
        }
        crate::check_json(&request.payload)?;
        let qualifier = request
            .function
            .qualifier
            .clone()
            .or(request.qualifier.clone());
        let resolved = self
            .control
            .resolve(
                &request.account,
                &request.function,
                request.qualifier.clone(),
            )
            .await?;
        let request_id = request_id().to_string();
        let mut request = request;
        self.apply_pre_hook(
            &resolved,
            &resolved.primary,
            &mut request,
            &request_id,
            MAX_ASYNC_PAYLOAD_BYTES,
        )
        .await?;
        self.check_input_all(&resolved, &request.payload, &request_id, "Event")?;
        let header = EventHeader {
            request_id,
            qualifier: qualifier.map(|qualifier| qualifier.to_string()),
            enqueued_us: unix_us(),
            retries: 0,
            prior_attempts: 0,
            due_ms: 0,
            client_context: request.client_context,
            idempotency_key: resolved.idempotency.as_ref().and_then(|config| {
                config.key_of(&request.payload, request.idempotency_key.as_deref())
            }),
        };
        let payload = if request.payload.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            request.payload
        };
        // The queued record is written with the event (the two share a group commit), so the request
        // id the caller gets back can be looked up at once.
        let retention = self.options.record_retention;
        let (key, record) = crate::sinks::by_id_entry(
            waiting_record(&resolved, &header, InvocationStatus::Queued, 0),
            None,
        );
        let kv = self.control.kv().clone();
        let keep_record = async {
            if !retention.is_zero()
                && let Err(error) = kv.put(&key, record, Some(retention)).await
            {
                tracing::warn!(%error, key, "could not store a queued invocation's record");
            }
        };
        let (appended, ()) = futures::future::join(
            self.append_event(
                &resolved.account,
                &resolved.function_name,
                &header,
                &payload,
            ),
            keep_record,
        )
        .await;
        appended?;
        Ok(InvokeResponse {
            request_id: header.request_id,
            executed_version: String::new(),
            payload: Bytes::new(),
            function_error: None,
            log_tail: None,
            replay_of: None,
            memoized: false,
        })
    }

    /// Appends an event to a function's queue (durable on return) and wakes its dispatcher.
    async fn append_event(
        &self,
        account: &AccountId,
        function: &str,
        header: &EventHeader,
        payload: &[u8],
    ) -> Result<u64, ApiError> {
        let queue = self.queue(account, function).await?;
        let offset = self
            .log
            .append(&queue.topic, encode_event(header, payload))
            .await
            .map_err(store_failure)?;
        // An event due now is also handed to the dispatcher in memory, so it can start without waiting
        // for the store to hand it out (a second fsync); the dispatcher takes it only if it has consumed
        // everything before it, so arrival order holds.
        let mut handed = queue.handed();
        if header.due_ms == 0 && handed.len() < MAX_HELD {
            handed.push(Held {
                offset,
                deliveries: 1,
                header: header.clone(),
                payload: Bytes::copy_from_slice(payload),
            });
        } else {
            queue.unseen.store(true, Ordering::SeqCst);
        }
        drop(handed);
        queue.wake.notify_one();
        Ok(offset)
    }

    /// The running queue of a function; the first time, its name is stored and its dispatcher started.
    async fn queue(&self, account: &AccountId, function: &str) -> Result<Arc<Queue>, ApiError> {
        if let Some(queue) = self
            .queues
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&(account.clone(), function.to_string()))
        {
            return Ok(queue.clone());
        }
        // Stored before the first event is appended, so a restarted server finds this queue.
        self.control
            .kv()
            .put_if_absent(&queue_index_key(&account.0, function), Vec::new(), None)
            .await
            .map_err(store_failure)?;
        Ok(self.start_queue(account, function))
    }

    fn start_queue(&self, account: &AccountId, function: &str) -> Arc<Queue> {
        let mut running = self
            .queues
            .running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        running
            .entry((account.clone(), function.to_string()))
            .or_insert_with(|| {
                let queue = Arc::new(Queue {
                    account: account.clone(),
                    function: function.to_string(),
                    topic: queue_topic(&account.0, function),
                    wake: tokio::sync::Notify::new(),
                    in_flight: Mutex::new(BTreeSet::new()),
                    settled: Mutex::new(BTreeSet::new()),
                    handoff: Mutex::new(Vec::new()),
                    starting: AtomicUsize::new(0),
                    unseen: AtomicBool::new(true),
                });
                tokio::spawn(dispatch(self.me.clone(), queue.clone()));
                queue
            })
            .clone()
    }

    /// Up to `limit` entries of a function's dead-letter log, oldest first, from offset `from`.
    pub async fn dead_letters(
        &self,
        account: &AccountId,
        function: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, ApiError> {
        let records = self
            .log
            .read(&dead_letter_topic(&account.0, function), from.max(1), limit)
            .await
            .map_err(store_failure)?;
        Ok(records
            .into_iter()
            .filter_map(|record| {
                let letter = serde_json::from_slice(&record.payload).ok()?;
                Some((record.offset, letter))
            })
            .collect())
    }

    /// Sends every dead letter of a function back to its queue as a new event (same request id, age
    /// counted from now, retries from zero) and removes each from the dead-letter log once it is queued;
    /// returns how many. A crash in the middle can send one twice (at least once, never lost).
    pub async fn redrive(&self, account: &AccountId, function: &str) -> Result<usize, ApiError> {
        let _one_at_a_time = self.queues.redriving.lock().await;
        let topic = dead_letter_topic(&account.0, function);
        let last = self.log.last_offset(&topic).await.map_err(store_failure)?;
        let mut from = 1;
        let mut count = 0;
        while from <= last {
            let records = self
                .log
                .read(&topic, from, 500)
                .await
                .map_err(store_failure)?;
            let Some(end) = records.last().map(|record| record.offset) else {
                break;
            };
            for record in records.into_iter().filter(|record| record.offset <= last) {
                // An unreadable entry stops the redrive: it and the entries after it stay in the log.
                let letter: DeadLetter =
                    serde_json::from_slice(&record.payload).map_err(|error| {
                        ApiError::internal(format!(
                            "dead letter {} of {function} is unreadable ({error}); the entries before it were sent again, it and the rest are left in place",
                            record.offset
                        ))
                    })?;
                let qualifier = letter
                    .qualifier
                    .as_deref()
                    .map(Qualifier::parse)
                    .transpose()?;
                let reference = FunctionRef {
                    account: None,
                    region: None,
                    name: letter.function_name.clone(),
                    qualifier: None,
                };
                let resolved = self.control.resolve(account, &reference, qualifier).await?;
                let header = EventHeader {
                    request_id: letter.request_id,
                    qualifier: letter.qualifier,
                    enqueued_us: unix_us(),
                    retries: 0,
                    prior_attempts: letter.attempts,
                    due_ms: 0,
                    client_context: letter.client_context,
                    idempotency_key: letter.idempotency_key,
                };
                self.append_event(
                    account,
                    &resolved.function_name,
                    &header,
                    letter.payload.as_bytes(),
                )
                .await?;
                self.sinks.state(
                    waiting_record(
                        &resolved,
                        &header,
                        InvocationStatus::Queued,
                        letter.attempts,
                    ),
                    None,
                );
                // Removed once its event is queued again: a crash in between sends it twice, never zero times.
                self.log
                    .trim(&topic, record.offset + 1)
                    .await
                    .map_err(store_failure)?;
                count += 1;
            }
            from = end + 1;
        }
        Ok(count)
    }

    /// Runs one event that holds a concurrency slot — on `warm`, or on a new instance the dispatcher
    /// counted in `queue.starting` — then settles it.
    async fn run_event(
        &self,
        queue: &Queue,
        event: Held,
        resolved: Arc<Resolved>,
        version: Arc<StoredVersion>,
        warm: Option<Arc<Instance>>,
        slot: Slot,
    ) {
        let attempts = event.attempts();
        let ready_us = event
            .header
            .enqueued_us
            .max(event.header.due_ms.saturating_mul(1000));
        let queue_delay_us = unix_us().saturating_sub(ready_us);
        // An idempotent event runs only if it claims its key; otherwise it ends with the stored outcome.
        let mut idempotent = None;
        if let (Some(config), Some(key)) = (&resolved.idempotency, &event.header.idempotency_key) {
            let timeout = Duration::from_secs(version.config.timeout as u64);
            let claimed = self
                .claim_key(
                    &resolved,
                    config,
                    key,
                    &event.payload,
                    &event.header.request_id,
                    timeout,
                )
                .await;
            let claimed = match claimed {
                Ok(crate::idempotency::Claim::Run(held)) => {
                    idempotent = Some(held);
                    None
                }
                other => Some(other),
            };
            if let Some(claimed) = claimed {
                // Nothing runs: give back the slot and the instance taken for this event.
                drop(slot);
                match warm {
                    Some(instance) => {
                        let pool = self.pool(&resolved.account, &resolved.function_name, &version);
                        self.return_idle(&pool, instance);
                    }
                    None => {
                        queue.starting.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                match claimed {
                    Ok(crate::idempotency::Claim::Replay(stored)) => {
                        self.replay(
                            &resolved,
                            event.header.request_id.clone(),
                            key.clone(),
                            stored,
                            "Event",
                        );
                        self.ack(queue, event.offset).await;
                    }
                    Ok(crate::idempotency::Claim::Run(_)) => unreachable!("handled above"),
                    Err(error) => {
                        let run = LastRun {
                            version: version.config.version.clone(),
                            error_type: Some(error.code.aws_name().to_string()),
                            response: Bytes::from(
                                json!({ "errorType": error.code.aws_name(), "errorMessage": error.message })
                                    .to_string(),
                            ),
                        };
                        self.fail(
                            queue,
                            &resolved,
                            &event,
                            Condition::IdempotencyKeyMismatch,
                            Some(&run),
                        )
                        .await;
                    }
                }
                return;
            }
        }
        self.sinks.state(
            waiting_record(
                &resolved,
                &event.header,
                InvocationStatus::Running,
                attempts,
            ),
            None,
        );
        let instance = match warm {
            Some(instance) => Ok((instance, false)),
            None => {
                let pool = self.pool(&resolved.account, &resolved.function_name, &version);
                let started = self.start_instance(&pool).await;
                queue.starting.fetch_sub(1, Ordering::SeqCst);
                queue.wake.notify_one();
                started.map(|instance| (instance, true))
            }
        };
        let execution = match instance {
            Ok(instance) => {
                self.execute(
                    &resolved,
                    &version,
                    Some(instance),
                    crate::signature::route_of(&resolved, &version, &event.payload),
                    None,
                    event.header.request_id.clone(),
                    event.payload.clone(),
                    event.header.client_context.clone(),
                    "Event",
                )
                .await
            }
            Err(error) => Err(error),
        };
        drop(slot);
        match (&execution, idempotent) {
            (Ok(execution), Some(held)) => {
                self.complete_key(
                    held,
                    &execution.record.version,
                    execution.error_type.as_deref(),
                    &execution.payload,
                )
                .await
            }
            (Err(_), Some(held)) => self.release_key(held).await,
            (_, None) => {}
        }
        let (mut record, response) = match execution {
            Ok(execution) => {
                let mut log_text = execution.log_text;
                log_text.extend_from_slice(
                    format!(
                        "END RequestId: {}\n{}\n",
                        event.header.request_id,
                        report_line(&execution.record)
                    )
                    .as_bytes(),
                );
                self.sinks.log(&queue.account.0, &queue.function, log_text);
                (execution.record, execution.payload)
            }
            // The instance could not be started (missing interpreter, unreadable code): a failed run.
            Err(error) => {
                let mut record =
                    waiting_record(&resolved, &event.header, InvocationStatus::Failed, attempts);
                record.version = version.config.version.clone();
                record.error_type = Some(error.code.aws_name().to_string());
                let body =
                    json!({ "errorType": error.code.aws_name(), "errorMessage": error.message });
                (record, Bytes::from(body.to_string()))
            }
        };
        record.attempts = attempts;
        record.enqueued_ms = Some(event.header.enqueued_us / 1000);
        record.queue_delay_us = Some(queue_delay_us);
        let run = LastRun {
            version: record.version.clone(),
            error_type: record.error_type.clone(),
            response: response.clone(),
        };
        let succeeded = record.status == InvocationStatus::Succeeded;
        self.sinks.record(record, Some(response));
        let config = resolved.event_config.clone();
        if succeeded {
            let destination = config
                .as_ref()
                .and_then(|config| config.destination_config.on_success.destination.clone());
            if let Some(destination) = destination
                && let Err(error) = self
                    .deliver(&resolved, &event, "Success", Some(&run), &destination)
                    .await
            {
                tracing::warn!(%error, destination, request_id = event.header.request_id, "could not deliver a success to its destination");
            }
            self.ack(queue, event.offset).await;
            return;
        }
        let allowed_retries = config
            .as_ref()
            .map_or(MAX_RETRY_ATTEMPTS, |config| config.retries());
        if event.header.retries < allowed_retries {
            let delay = self.options.event_retry_delay * 2u32.pow(event.header.retries.min(16));
            let retry = EventHeader {
                retries: event.header.retries + 1,
                prior_attempts: attempts,
                due_ms: unix_ms() + delay.as_millis() as u64,
                ..event.header.clone()
            };
            // The retry is stored before the failed record is acked: a crash in between runs it twice, never zero times.
            while let Err(error) = self
                .append_event(&queue.account, &queue.function, &retry, &event.payload)
                .await
            {
                tracing::warn!(%error, request_id = retry.request_id, "could not queue a retry; trying again");
                if self.queues.stopping.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let mut waiting = waiting_record(&resolved, &retry, InvocationStatus::Queued, attempts);
            waiting.version = run.version.clone();
            waiting.error_type = run.error_type.clone();
            self.sinks.state(waiting, Some(run.response.clone()));
            self.ack(queue, event.offset).await;
            return;
        }
        self.fail(
            queue,
            &resolved,
            &event,
            Condition::RetriesExhausted,
            Some(&run),
        )
        .await;
    }

    /// Ends an event that will not run (again): to the OnFailure destination, or the dead-letter log.
    async fn fail(
        &self,
        queue: &Queue,
        resolved: &Resolved,
        event: &Held,
        condition: Condition,
        run: Option<&LastRun>,
    ) {
        let destination = resolved
            .event_config
            .as_ref()
            .and_then(|config| config.destination_config.on_failure.destination.clone());
        let mut reason = match condition {
            Condition::RetriesExhausted => format!(
                "the function failed {} time(s) and has no retries left",
                event.attempts()
            ),
            Condition::EventAgeExceeded => format!(
                "the event was older than the maximum event age of {} s when its turn came",
                resolved
                    .event_config
                    .as_ref()
                    .map_or(MAX_EVENT_AGE_SECONDS, |config| config.max_age_seconds())
            ),
            Condition::FunctionNotFound => "the function no longer exists".to_string(),
            Condition::DeliveryLimitExceeded => format!(
                "the server stopped during {} runs of this event; it is not run again",
                event.deliveries - 1
            ),
            Condition::IdempotencyKeyMismatch => format!(
                "its idempotency key {:?} was first used with another payload",
                event.header.idempotency_key.as_deref().unwrap_or_default()
            ),
        };
        let mut condition_name = condition.name();
        if let Some(destination) = destination {
            match self
                .deliver(resolved, event, condition.name(), run, &destination)
                .await
            {
                Ok(()) => {
                    self.ack(queue, event.offset).await;
                    return;
                }
                Err(error) => {
                    condition_name = "DestinationFailed";
                    reason = format!(
                        "{reason}; its OnFailure destination {destination} could not take it: {}",
                        error.message
                    );
                }
            }
        }
        let letter = DeadLetter {
            request_id: event.header.request_id.clone(),
            function_name: queue.function.clone(),
            qualifier: event.header.qualifier.clone(),
            condition: condition_name.to_string(),
            reason,
            attempts: event.attempts() - u32::from(run.is_none() && event.deliveries > 0),
            enqueued_ms: event.header.enqueued_us / 1000,
            failed_ms: unix_ms(),
            error_type: run.and_then(|run| run.error_type.clone()),
            response: run.map(|run| result_value(&run.response)),
            payload: String::from_utf8_lossy(&event.payload).into_owned(),
            client_context: event.header.client_context.clone(),
            idempotency_key: event.header.idempotency_key.clone(),
        };
        let topic = dead_letter_topic(&queue.account.0, &queue.function);
        let bytes = serde_json::to_vec(&letter).expect("dead letters serialise");
        while let Err(error) = self.log.append(&topic, bytes.clone()).await {
            tracing::warn!(%error, topic, "could not store a dead letter; trying again");
            if self.queues.stopping.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.ack(queue, event.offset).await;
    }

    /// Queues Lambda's invocation record for an event's outcome as an event of the destination function.
    async fn deliver(
        &self,
        resolved: &Resolved,
        event: &Held,
        condition: &str,
        run: Option<&LastRun>,
        destination: &str,
    ) -> Result<(), ApiError> {
        let reference = FunctionRef::parse(destination)?;
        let target = self
            .control
            .resolve(&resolved.account, &reference, None)
            .await?;
        let function_arn = qualified_arn(
            &self.options.region,
            &resolved.account,
            &resolved.function_name,
            event.header.qualifier.as_deref().unwrap_or("$LATEST"),
        );
        let mut document = json!({
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "requestContext": {
                "requestId": event.header.request_id,
                "functionArn": function_arn,
                "condition": condition,
                "approximateInvokeCount": event.attempts(),
            },
            "requestPayload": result_value(&event.payload),
        });
        if let Some(run) = run {
            let mut context = json!({ "statusCode": 200, "executedVersion": run.version });
            if run.error_type.is_some() {
                context["functionError"] = "Unhandled".into();
            }
            document["responseContext"] = context;
            document["responsePayload"] = result_value(&run.response);
        }
        let header = EventHeader {
            request_id: request_id().to_string(),
            qualifier: reference.qualifier.map(|qualifier| qualifier.to_string()),
            enqueued_us: unix_us(),
            retries: 0,
            prior_attempts: 0,
            due_ms: 0,
            client_context: None,
            idempotency_key: target
                .idempotency
                .as_ref()
                .and_then(|config| config.key_of(document.to_string().as_bytes(), None)),
        };
        self.append_event(
            &target.account,
            &target.function_name,
            &header,
            document.to_string().as_bytes(),
        )
        .await?;
        self.sinks.state(
            waiting_record(&target, &header, InvocationStatus::Queued, 0),
            None,
        );
        Ok(())
    }

    async fn ack(&self, queue: &Queue, offset: u64) {
        // A failed ack leaves the record to be run again after a restart: at least once, never lost.
        if let Err(error) = self.log.ack(&queue.topic, QUEUE_CONSUMER, offset).await {
            tracing::warn!(%error, offset, topic = queue.topic, "could not ack an event; it will run again after a restart");
        }
    }
}

/// A record of an event that is waiting or running (no run has finished for this state).
fn waiting_record(
    resolved: &Resolved,
    header: &EventHeader,
    status: InvocationStatus,
    attempts: u32,
) -> InvocationRecord {
    InvocationRecord {
        request_id: header.request_id.clone(),
        account: resolved.account.0.clone(),
        function_name: resolved.function_name.clone(),
        version: header
            .qualifier
            .clone()
            .unwrap_or_else(|| "$LATEST".to_string()),
        invocation_type: "Event".to_string(),
        status,
        error_type: None,
        started_ms: 0,
        duration_us: 0,
        billed_duration_ms: 0,
        init_duration_us: None,
        memory_size_mb: resolved.primary.config.memory_size,
        max_memory_used_mb: 0,
        cold_start: false,
        attempts,
        enqueued_ms: Some(header.enqueued_us / 1000),
        queue_delay_us: None,
        idempotency_key: None,
        replay_of: None,
        memoized: false,
        memo_byte_seconds: None,
        phase: None,
        shutdown_reason: None,
        result: None,
    }
}

/// Starts the dispatchers of every queue stored by an earlier run of the server.
pub(crate) async fn resume(engine: Weak<Engine>) {
    let mut start_after: Option<String> = None;
    loop {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let page = match engine
            .control
            .kv()
            .scan(QUEUE_INDEX_PREFIX, start_after.as_deref(), 500)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(%error, "could not list event queues; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Some((last, _)) = page.last() else {
            return;
        };
        start_after = Some(last.clone());
        for (key, _) in &page {
            let Some((account, function)) = key[QUEUE_INDEX_PREFIX.len()..].split_once('/') else {
                continue;
            };
            match AccountId::parse(account) {
                Ok(account) => {
                    engine.start_queue(&account, function);
                }
                Err(_) => tracing::warn!(key, "queue index entry names no account"),
            }
        }
    }
}

/// The dispatcher of one queue: takes its records in order (handed over in memory, or consumed from the
/// store) and runs each when a concurrency slot and an instance are available.
async fn dispatch(engine: Weak<Engine>, queue: Arc<Queue>) {
    // Taken and due, waiting for a slot or an instance, in offset order.
    let mut ready: VecDeque<Held> = VecDeque::new();
    // Taken retries not due yet, by (due time, offset).
    let mut delayed: BTreeMap<(u64, u64), Held> = BTreeMap::new();
    // Every record up to here has been taken (or acked): an event handed over in memory is taken only
    // if it is the next one, so a backlog in the store keeps its place.
    let mut taken_up_to = 0u64;
    let mut trimmed_before = 0u64;
    let mut last_trim = Instant::now();
    // Events were taken from memory since the last consume (the store has not counted their delivery).
    let mut uncounted = 0usize;
    // Since when the event at the head has waited for an instance.
    let mut blocked_since: Option<Instant> = None;
    let mut last_consume = Instant::now();
    let reference = FunctionRef {
        account: None,
        region: None,
        name: queue.function.clone(),
        qualifier: None,
    };
    loop {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if engine.queues.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = unix_ms();
        let mut held = ready.len() + delayed.len() + queue.in_flight().len();
        let mut handed = std::mem::take(&mut *queue.handed());
        handed.sort_unstable_by_key(|event| event.offset);
        for event in handed {
            if event.offset == taken_up_to + 1 && held < MAX_HELD {
                taken_up_to = event.offset;
                ready.push_back(event);
                held += 1;
                uncounted += 1;
            } else {
                // Out of order or over the limit: left for a consume to hand out.
                queue.unseen.store(true, Ordering::SeqCst);
            }
        }

        // Consume when the store may hold records not taken yet, and now and then to have the store
        // count the deliveries of events taken from memory (so a crash during their run counts as an attempt).
        // The count is due even while events wait for slots or instances.
        let count_due = uncounted > 0 && last_consume.elapsed() >= COUNT_INTERVAL;
        let fetch = ready.is_empty() && held < MAX_HELD && queue.unseen.load(Ordering::SeqCst);
        let mut more = false;
        if fetch || count_due {
            queue.unseen.store(false, Ordering::SeqCst);
            last_consume = Instant::now();
            let limit = if fetch {
                (MAX_HELD - held).min(CONSUME_BATCH)
            } else {
                uncounted.clamp(1, CONSUME_BATCH)
            };
            let settled_before: Vec<u64> = queue.settled().iter().copied().collect();
            let last = engine.log.last_offset(&queue.topic).await.unwrap_or(0);
            match engine
                .log
                .consume(&queue.topic, QUEUE_CONSUMER, limit, LEASE)
                .await
            {
                Ok(records) => {
                    uncounted = uncounted.saturating_sub(records.len());
                    more = records.len() == limit;
                    if more {
                        queue.unseen.store(true, Ordering::SeqCst);
                    } else {
                        // Everything up to `last` was returned now, is held, or was acked.
                        taken_up_to = taken_up_to.max(last);
                    }
                    let settled = queue.settled().clone();
                    let in_flight = queue.in_flight().clone();
                    let mut unsorted = false;
                    for record in records {
                        taken_up_to = taken_up_to.max(record.offset);
                        // Already taken from memory (now leased too), or acked while this consume ran.
                        if in_flight.contains(&record.offset)
                            || settled.contains(&record.offset)
                            || ready.iter().any(|event| event.offset == record.offset)
                        {
                            continue;
                        }
                        let Some((header, payload)) = decode_event(&record.payload) else {
                            tracing::error!(
                                offset = record.offset,
                                topic = queue.topic,
                                "unreadable event record skipped"
                            );
                            engine.ack(&queue, record.offset).await;
                            continue;
                        };
                        let event = Held {
                            offset: record.offset,
                            deliveries: record.deliveries,
                            header,
                            payload,
                        };
                        if event.header.due_ms > now {
                            delayed.insert((event.header.due_ms, event.offset), event);
                        } else {
                            ready.push_back(event);
                            unsorted = true;
                        }
                    }
                    if unsorted {
                        ready
                            .make_contiguous()
                            .sort_unstable_by_key(|event| event.offset);
                    }
                    // Acked before this consume began: no later consume can return them.
                    let mut settled = queue.settled();
                    for offset in settled_before {
                        settled.remove(&offset);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, topic = queue.topic, "could not read the event queue; retrying");
                    queue.unseen.store(true, Ordering::SeqCst);
                    drop(engine);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        // Retries that are due go first: they were accepted before anything taken after them.
        let due: Vec<(u64, u64)> = delayed.range(..(now + 1, 0)).map(|(key, _)| *key).collect();
        for key in due.into_iter().rev() {
            if let Some(event) = delayed.remove(&key) {
                ready.push_front(event);
            }
        }

        let mut waiting = false;
        let mut stalled = false;
        while let Some(event) = ready.pop_front() {
            let qualifier = match event.header.qualifier.as_deref().map(Qualifier::parse) {
                Some(Ok(qualifier)) => Some(qualifier),
                Some(Err(_)) | None => None,
            };
            let resolved = match engine
                .control
                .resolve(&queue.account, &reference, qualifier)
                .await
            {
                Ok(resolved) => resolved,
                Err(error) if error.code == ErrorCode::ResourceNotFound => {
                    let engine = engine.clone();
                    let queue = queue.clone();
                    queue.in_flight().insert(event.offset);
                    tokio::spawn(async move {
                        let resolved = Resolved {
                            account: queue.account.clone(),
                            function_name: queue.function.clone(),
                            invoked_arn: String::new(),
                            primary: Arc::new(missing_version(&queue.function)),
                            additional: None,
                            reserved_concurrency: None,
                            event_config: None,
                            idempotency: None,
                            memoization: None,
                            receipts: false,
                            signatures: Default::default(),
                            hooks: None,
                        };
                        engine
                            .fail(&queue, &resolved, &event, Condition::FunctionNotFound, None)
                            .await;
                        queue.finish(event.offset);
                    });
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, topic = queue.topic, "could not resolve the function of an event; retrying");
                    ready.push_front(event);
                    stalled = true;
                    break;
                }
            };
            let max_age_ms = resolved
                .event_config
                .as_ref()
                .map_or(MAX_EVENT_AGE_SECONDS, |config| config.max_age_seconds())
                as u64
                * 1000;
            let condition = if now.saturating_sub(event.header.enqueued_us / 1000) > max_age_ms {
                Some(Condition::EventAgeExceeded)
            } else if event.deliveries > MAX_DELIVERIES {
                Some(Condition::DeliveryLimitExceeded)
            } else {
                None
            };
            if let Some(condition) = condition {
                queue.in_flight().insert(event.offset);
                let engine = engine.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut record = waiting_record(
                        &resolved,
                        &event.header,
                        InvocationStatus::Expired,
                        event.attempts() - 1,
                    );
                    if condition == Condition::DeliveryLimitExceeded {
                        record.status = InvocationStatus::Failed;
                        record.error_type = Some(condition.name().to_string());
                    }
                    engine.sinks.record(record, None);
                    engine
                        .fail(&queue, &resolved, &event, condition, None)
                        .await;
                    queue.finish(event.offset);
                });
                continue;
            }
            // Throttled: the event keeps its place and waits for a slot.
            let Ok(slot) = engine.acquire_slot(
                &resolved.account,
                &resolved.function_name,
                resolved.reserved_concurrency,
            ) else {
                ready.push_front(event);
                waiting = true;
                break;
            };
            let version = resolved.pick(rand::random::<f64>()).clone();
            let pool = engine.pool(&resolved.account, &resolved.function_name, &version);
            let warm = engine.take_warm(&pool);
            if warm.is_none() {
                // A new instance only when none of this queue's runs will free one soon: nothing runs, or
                // the event has waited for one longer than a warm instance usually takes.
                let blocked_for = blocked_since.get_or_insert_with(Instant::now).elapsed();
                let nothing_runs = queue.in_flight().is_empty();
                if queue.starting.load(Ordering::SeqCst) >= MAX_STARTING
                    || !(nothing_runs || blocked_for >= NEW_INSTANCE_AFTER)
                {
                    drop(slot);
                    ready.push_front(event);
                    waiting = true;
                    break;
                }
                queue.starting.fetch_add(1, Ordering::SeqCst);
            }
            blocked_since = None;
            queue.in_flight().insert(event.offset);
            let engine = engine.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                let offset = event.offset;
                engine
                    .run_event(&queue, event, resolved, version, warm, slot)
                    .await;
                queue.finish(offset);
            });
        }

        // Everything below the oldest record still held was acked: give its space back now and then.
        if last_trim.elapsed() > Duration::from_secs(5) {
            last_trim = Instant::now();
            let oldest_held = ready
                .iter()
                .map(|event| event.offset)
                .chain(delayed.keys().map(|(_, offset)| *offset))
                .chain(queue.in_flight().iter().next().copied())
                .min()
                .unwrap_or(taken_up_to + 1);
            if oldest_held > trimmed_before + 1 && taken_up_to > 0 {
                match engine.log.trim(&queue.topic, oldest_held).await {
                    Ok(()) => trimmed_before = oldest_held - 1,
                    Err(error) => {
                        tracing::warn!(%error, topic = queue.topic, "could not trim the event queue")
                    }
                }
            }
        }

        if more && !waiting && !stalled {
            continue;
        }
        let wait = if stalled {
            Duration::from_secs(1)
        } else if waiting {
            if blocked_since.is_some() {
                NEW_INSTANCE_AFTER
            } else {
                THROTTLE_POLL
            }
        } else {
            match delayed.keys().next() {
                Some((due_ms, _)) => Duration::from_millis(due_ms.saturating_sub(unix_ms()).max(1)),
                None => Duration::from_secs(5),
            }
        };
        let wait = if uncounted > 0 {
            wait.min(COUNT_INTERVAL)
        } else {
            wait
        };
        let slot_freed = engine.slot_freed.clone();
        drop(engine);
        tokio::select! {
            _ = queue.wake.notified() => {}
            _ = slot_freed.notified(), if waiting => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Stands in for the version of a function that no longer exists, so its events can be dead-lettered.
fn missing_version(function: &str) -> StoredVersion {
    StoredVersion {
        config: FunctionConfiguration {
            function_name: function.to_string(),
            function_arn: String::new(),
            runtime: String::new(),
            role: String::new(),
            handler: String::new(),
            code_size: 0,
            description: String::new(),
            timeout: 0,
            memory_size: 0,
            last_modified: String::new(),
            code_sha256: String::new(),
            version: "$LATEST".to_string(),
            environment: Environment::default(),
            ephemeral_storage: EphemeralStorage {
                size: MIN_EPHEMERAL_MB,
            },
            revision_id: String::new(),
            state: String::new(),
            last_update_status: String::new(),
            package_type: String::new(),
            architectures: Vec::new(),
            layers: Vec::new(),
        },
        code_digest: String::new(),
        layer_digests: Vec::new(),
        signature: None,
        routes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_record_round_trips_with_any_payload() {
        let header = EventHeader {
            request_id: "r-1".into(),
            qualifier: Some("prod".into()),
            enqueued_us: 1_700_000_000_000_000,
            retries: 2,
            prior_attempts: 3,
            due_ms: 1_700_000_000_500,
            client_context: Some("{\"a\":1}".into()),
            idempotency_key: Some("k".into()),
        };
        for payload in [&b""[..], b"{}", b"{\"k\":[1,2,3]}", &[0u8, 255, 10][..]] {
            let bytes = encode_event(&header, payload);
            let (decoded, decoded_payload) = decode_event(&bytes).expect("decodes");
            assert_eq!(decoded, header);
            assert_eq!(&decoded_payload[..], payload);
        }
    }

    #[test]
    fn a_truncated_event_record_is_refused_not_misread() {
        let bytes = encode_event(
            &EventHeader {
                request_id: "r".into(),
                qualifier: None,
                enqueued_us: 1,
                retries: 0,
                prior_attempts: 0,
                due_ms: 0,
                client_context: None,
                idempotency_key: None,
            },
            b"{}",
        );
        for cut in [0, 3, 4, 10] {
            assert!(decode_event(&bytes[..cut]).is_none(), "cut at {cut}");
        }
    }
}
