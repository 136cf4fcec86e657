//! The engine: per-version instance pools, concurrency limits, and the invoke pipeline that turns
//! a resolved function and a payload into a response, a `REPORT` line and an invocation record.
//!
//! The engine never speaks HTTP (the api crate does) and never touches the store on the warm
//! invoke path: resolution is cached by the control plane, records and logs are written in the
//! background by [`sinks`].

pub mod bus;
pub mod code;
pub mod events;
pub mod extensions;
mod hooks;
pub mod idempotency;
pub mod instance;
mod memo;
pub mod provisioned;
pub mod receipts;
pub mod signature;
pub mod sinks;
pub mod streaming;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wisp_control::{ControlPlane, Resolved, RuntimeCatalog, RuntimeFamily};
use wisp_runtime_api::Invocation;
use wisp_sandbox::{LauncherCommand, NetworkMode, SandboxSpec};
use wisp_store::Log;
use wisp_types::*;

use instance::{Instance, InstanceSpec, RunOutcome};
pub use sinks::Sinks;
pub use streaming::{StreamCompletion, StreamEvent, StreamEvents, StreamingInvoke};

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where unpacked code and runtime bootstraps are kept.
    pub data_dir: PathBuf,
    pub launcher: LauncherCommand,
    pub region: String,
    /// Concurrent executions per account.
    pub account_concurrency: u32,
    /// An instance idle this long is stopped.
    pub idle_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    pub shutdown_grace: Duration,
    /// Largest number of processes and threads in one sandbox.
    pub pids_max: u32,
    /// Network of every sandbox; in egress mode functions find the host's loopback at
    /// `WISP_HOST_ADDRESS`.
    pub network: NetworkMode,
    /// How long invocation records (with results) are kept by request id; zero keeps none.
    pub record_retention: Duration,
    /// Wait before the first retry of a failed event; each further retry waits twice as long.
    pub event_retry_delay: Duration,
}

/// How the caller asked to invoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    /// Asynchronous: the event is queued durably and run later ([`Engine::enqueue`]).
    Event,
    DryRun,
}

pub struct InvokeRequest {
    pub account: AccountId,
    pub function: FunctionRef,
    pub qualifier: Option<Qualifier>,
    pub payload: Bytes,
    pub invocation_type: InvocationType,
    pub want_log_tail: bool,
    /// Decoded `X-Amz-Client-Context` (JSON text).
    pub client_context: Option<String>,
    /// The request's `Idempotency-Key` header, used when the function takes its key from there.
    pub idempotency_key: Option<String>,
    /// Set on calls made by hooks (and hook events): they run no hooks of their own.
    pub skip_hooks: bool,
    /// The gRPC method (`package.Service/Method`) the call arrived by, set only by the gRPC gateway:
    /// it selects the route bound to that method. Events ignore it.
    pub grpc_method: Option<String>,
    /// The caller's own deadline, in milliseconds since the Unix epoch (gRPC's `grpc-timeout`): the
    /// function is told the earlier of it and its timeout as its deadline. Its run is not cut short.
    pub caller_deadline_ms: Option<u64>,
}

pub struct InvokeResponse {
    pub request_id: String,
    pub executed_version: String,
    pub payload: Bytes,
    /// `Unhandled` when the function failed.
    pub function_error: Option<String>,
    /// The invocation's log text (last 4 KB) when asked for.
    pub log_tail: Option<Vec<u8>>,
    /// For a duplicate of an idempotent call: the request id of the execution whose outcome this is.
    pub replay_of: Option<String>,
    /// The answer came from a pure function's cache (`replay_of` names the run that produced it).
    pub memoized: bool,
}

type PoolKey = (String, String, String, String); // account, function, version, revision

/// Instances of one version of one function (for `$LATEST`, one configuration revision).
struct Pool {
    key: PoolKey,
    version: Arc<StoredVersion>,
    idle: Mutex<Vec<Arc<Instance>>>,
}

/// Counters of executions in flight, per function and per account.
#[derive(Default)]
struct Concurrency {
    functions: Mutex<HashMap<(AccountId, String), Arc<AtomicU32>>>,
    accounts: Mutex<HashMap<AccountId, Arc<AtomicU32>>>,
}

/// Releases a concurrency slot when dropped, and tells queued events that one is free.
struct Slot {
    function: Arc<AtomicU32>,
    account: Arc<AtomicU32>,
    freed: Arc<tokio::sync::Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.function.fetch_sub(1, Ordering::AcqRel);
        self.account.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// An outcome stored earlier (an idempotent execution's, or a pure function's cached result).
struct StoredAnswer {
    version: String,
    payload: Bytes,
    error_type: Option<String>,
    /// The request id of the run that produced it.
    original_request_id: String,
    idempotency_key: Option<String>,
    memoized: bool,
}

/// The record of a call answered without running anything (a replay, a cached result, a refusal):
/// succeeded or failed by `error_type`, no duration, nothing billed.
fn unrun_record(
    resolved: &Resolved,
    request_id: &str,
    version: &str,
    invocation_type: &str,
    memory_size_mb: u32,
    error_type: Option<String>,
) -> InvocationRecord {
    InvocationRecord {
        request_id: request_id.to_string(),
        account: resolved.account.0.clone(),
        function_name: resolved.function_name.clone(),
        version: version.to_string(),
        invocation_type: invocation_type.to_string(),
        status: if error_type.is_some() {
            InvocationStatus::Failed
        } else {
            InvocationStatus::Succeeded
        },
        error_type,
        started_ms: instance::unix_ms(),
        duration_us: 0,
        billed_duration_ms: 0,
        init_duration_us: None,
        memory_size_mb,
        max_memory_used_mb: 0,
        cold_start: false,
        attempts: 0,
        enqueued_ms: None,
        queue_delay_us: None,
        result: None,
        idempotency_key: None,
        replay_of: None,
        memoized: false,
        memo_byte_seconds: None,
        phase: None,
        shutdown_reason: None,
    }
}

/// One run of a function on an instance: what it answered, its record and its log text (not yet
/// handed to the sinks, so the caller can add its own lines).
struct Execution {
    payload: Bytes,
    /// `errorType` when the function failed.
    error_type: Option<String>,
    record: InvocationRecord,
    log_text: Vec<u8>,
}

fn take_slot(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            (current < limit).then_some(current + 1)
        })
        .is_ok()
}

pub struct Engine {
    control: Arc<ControlPlane>,
    options: EngineOptions,
    sinks: Sinks,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Launchers prepared ahead of cold starts.
    sandboxes: wisp_sandbox::SandboxPool,
    concurrency: Concurrency,
    /// Notified whenever a concurrency slot is released (throttled events wait for it).
    slot_freed: Arc<tokio::sync::Notify>,
    provisioned: provisioned::Provisioned,
    python_runtime_dir: PathBuf,
    node_runtime_dir: PathBuf,
    log: Arc<dyn Log>,
    queues: events::Queues,
    bus: bus::Dispatchers,
    idempotency_waiters: idempotency::Waiters,
    /// The engine itself, for the tasks it starts (queue dispatchers).
    me: std::sync::Weak<Engine>,
}

impl Engine {
    /// Builds the engine and starts its background tasks (idle reaper, change watcher, record writer).
    pub fn start(
        control: Arc<ControlPlane>,
        log: Arc<dyn Log>,
        options: EngineOptions,
    ) -> std::io::Result<Arc<Engine>> {
        let (python_runtime_dir, node_runtime_dir) = code::install_runtimes(&options.data_dir)?;
        let sinks = Sinks::start(log.clone(), control.kv().clone(), options.record_retention)?;
        let engine = Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            sinks,
            control: control.clone(),
            sandboxes: wisp_sandbox::SandboxPool::new(
                options.launcher.clone(),
                wisp_sandbox::SPARES,
            ),
            options,
            pools: Mutex::new(HashMap::new()),
            concurrency: Concurrency::default(),
            slot_freed: Arc::new(tokio::sync::Notify::new()),
            provisioned: provisioned::Provisioned::default(),
            python_runtime_dir,
            node_runtime_dir,
            log,
            queues: events::Queues::default(),
            bus: bus::Dispatchers::default(),
            idempotency_waiters: idempotency::Waiters::default(),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&engine)));
        tokio::spawn(events::resume(Arc::downgrade(&engine)));
        tokio::spawn(bus::follow_rules(Arc::downgrade(&engine)));
        tokio::spawn(retire_changed(Arc::downgrade(&engine), control.subscribe()));
        tokio::spawn(provisioned::follow_changes(
            Arc::downgrade(&engine),
            control.subscribe(),
        ));
        Ok(engine)
    }

    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// Invokes a function synchronously (RequestResponse), checks that it could be (DryRun), or
    /// queues an event (Event: answered once the event is durable, with an empty payload).
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse, ApiError> {
        if request.invocation_type == InvocationType::Event {
            return self.enqueue(request).await;
        }
        if request.payload.len() > MAX_SYNC_PAYLOAD_BYTES {
            return Err(ApiError::new(
                ErrorCode::RequestTooLarge,
                format!(
                    "Request must be smaller than {MAX_SYNC_PAYLOAD_BYTES} bytes for the InvokeFunction operation"
                ),
            ));
        }
        check_json(&request.payload)?;
        let resolved = self
            .control
            .resolve(
                &request.account,
                &request.function,
                request.qualifier.clone(),
            )
            .await?;
        let version = resolved.pick(rand_unit()).clone();
        let request_id = request_id().to_string();
        if request.invocation_type == InvocationType::DryRun {
            return Ok(InvokeResponse {
                request_id,
                executed_version: version.config.version.clone(),
                payload: Bytes::new(),
                function_error: None,
                log_tail: None,
                replay_of: None,
                memoized: false,
            });
        }
        let mut request = request;
        self.apply_pre_hook(
            &resolved,
            &version,
            &mut request,
            &request_id,
            MAX_SYNC_PAYLOAD_BYTES,
        )
        .await?;
        let route = self.check_input(
            &resolved,
            &version,
            &request.payload,
            &request_id,
            "RequestResponse",
            request.grpc_method.as_deref(),
        )?;
        let fingerprint = signature::fingerprint(&request.payload, route.as_ref());
        // A pure function's result for this input may be cached: then no instance is touched.
        if resolved.memoization.is_some()
            && let Some(entry) = self.memo_lookup(&resolved, &version, &fingerprint).await
        {
            let response = self.memoized(&resolved, request_id, entry);
            self.post_hook_answered(&resolved, &request, &response);
            return Ok(response);
        }
        // An idempotent call runs only if it claims its key; a duplicate waits for, or replays, the outcome.
        let mut idempotent = None;
        if let Some(config) = &resolved.idempotency
            && let Some(key) = config.key_of(&request.payload, request.idempotency_key.as_deref())
        {
            let timeout = Duration::from_secs(version.config.timeout as u64);
            match self
                .claim_key(&resolved, config, &key, &fingerprint, &request_id, timeout)
                .await?
            {
                idempotency::Claim::Replay(stored) => {
                    let response =
                        self.replay(&resolved, request_id, key, stored, "RequestResponse");
                    self.post_hook_answered(&resolved, &request, &response);
                    return Ok(response);
                }
                idempotency::Claim::Run(held) => idempotent = Some((key, held)),
            }
        }
        let slot = match self.acquire_slot(
            &resolved.account,
            &resolved.function_name,
            resolved.reserved_concurrency,
        ) {
            Ok(slot) => slot,
            Err(throttled) => {
                if let Some((_, held)) = idempotent {
                    self.release_key(held).await;
                }
                return Err(throttled);
            }
        };
        let memo_input = request.payload.clone();
        let execution = self
            .execute(
                &resolved,
                &version,
                None,
                signature::TakenRoute::for_runtime(route),
                request.caller_deadline_ms,
                request_id.clone(),
                request.payload,
                request.client_context,
                "RequestResponse",
            )
            .await;
        drop(slot);
        let execution = match (execution, idempotent) {
            (Ok(execution), Some((key, held))) => {
                self.complete_key(
                    held,
                    &execution.record.version,
                    execution.error_type.as_deref(),
                    &execution.payload,
                )
                .await;
                let mut execution = execution;
                execution.record.idempotency_key = Some(key);
                execution
            }
            (Ok(execution), None) => execution,
            (Err(error), idempotent) => {
                if let Some((_, held)) = idempotent {
                    self.release_key(held).await;
                }
                return Err(error);
            }
        };
        let Execution {
            payload,
            error_type,
            mut record,
            mut log_text,
        } = execution;
        if let Some(config) = &resolved.memoization
            && error_type.is_none()
        {
            record.memo_byte_seconds = Some(self.memo_store(
                &resolved,
                config,
                &version,
                &fingerprint,
                &request_id,
                &payload,
            ));
        }
        log_text.extend_from_slice(
            format!("END RequestId: {request_id}\n{}\n", report_line(&record)).as_bytes(),
        );
        // Lambda returns the last 4 KB of the invocation's log.
        let log_tail = request
            .want_log_tail
            .then(|| log_text[log_text.len().saturating_sub(4096)..].to_vec());
        self.sinks
            .log(&record.account, &record.function_name, log_text);
        let executed_version = record.version.clone();
        self.sinks.record(record, Some(payload.clone()));
        self.post_hook(
            &resolved,
            request.skip_hooks,
            &request_id,
            &executed_version,
            &memo_input,
            &payload,
            error_type.is_some(),
        );
        Ok(InvokeResponse {
            request_id,
            executed_version,
            payload,
            function_error: error_type.map(|_| "Unhandled".to_string()),
            log_tail,
            replay_of: None,
            memoized: false,
        })
    }

    /// The post-invocation hook of a call answered without a run (from the cache, or a replay): it is
    /// a sync call with a record like any other.
    fn post_hook_answered(
        &self,
        resolved: &Resolved,
        request: &InvokeRequest,
        response: &InvokeResponse,
    ) {
        self.post_hook(
            resolved,
            request.skip_hooks,
            &response.request_id,
            &response.executed_version,
            &request.payload,
            &response.payload,
            response.function_error.is_some(),
        );
    }

    /// Answers a pure function's call from its cache, and records it (no run, no duration).
    fn memoized(
        &self,
        resolved: &Resolved,
        request_id: String,
        entry: memo::MemoEntry,
    ) -> InvokeResponse {
        let payload = entry.result();
        self.answer_stored(
            resolved,
            request_id,
            "RequestResponse",
            StoredAnswer {
                version: entry.version,
                payload,
                error_type: None,
                original_request_id: entry.request_id,
                idempotency_key: None,
                memoized: true,
            },
        )
    }

    /// Answers a duplicate of an idempotent call with the stored outcome, and records it (no run, no duration).
    fn replay(
        &self,
        resolved: &Resolved,
        request_id: String,
        key: String,
        stored: idempotency::KeyRecord,
        invocation_type: &str,
    ) -> InvokeResponse {
        let payload = stored.result();
        self.answer_stored(
            resolved,
            request_id,
            invocation_type,
            StoredAnswer {
                version: stored.version.unwrap_or_else(|| "$LATEST".to_string()),
                payload,
                error_type: stored.error_type,
                original_request_id: stored.request_id,
                idempotency_key: Some(key),
                memoized: false,
            },
        )
    }

    /// Answers a call with an outcome stored earlier, and records the call: nothing ran, nothing is billed.
    fn answer_stored(
        &self,
        resolved: &Resolved,
        request_id: String,
        invocation_type: &str,
        answer: StoredAnswer,
    ) -> InvokeResponse {
        let mut record = unrun_record(
            resolved,
            &request_id,
            &answer.version,
            invocation_type,
            resolved.primary.config.memory_size,
            answer.error_type.clone(),
        );
        record.idempotency_key = answer.idempotency_key;
        record.replay_of = Some(answer.original_request_id.clone());
        record.memoized = answer.memoized;
        self.sinks.record(record, Some(answer.payload.clone()));
        InvokeResponse {
            request_id,
            executed_version: answer.version,
            payload: answer.payload,
            function_error: answer.error_type.map(|_| "Unhandled".to_string()),
            log_tail: None,
            replay_of: Some(answer.original_request_id),
            memoized: answer.memoized,
        }
    }

    /// Runs one invocation (the caller holds its concurrency slot) on `instance` — an instance of
    /// `version` the caller already has, with whether it was started for this invocation — or else on a
    /// warm or new one; then returns the instance to its pool, or stops it if it failed. `route` is
    /// the (route name, handler) the caller chose for the call, if the version has routes.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        instance: Option<(Arc<Instance>, bool)>,
        route: Option<(String, String)>,
        caller_deadline_ms: Option<u64>,
        request_id: String,
        payload: Bytes,
        client_context: Option<String>,
        invocation_type: &str,
    ) -> Result<Execution, ApiError> {
        self.execute_with(
            resolved,
            version,
            instance,
            route,
            caller_deadline_ms,
            request_id,
            payload,
            client_context,
            invocation_type,
            None,
        )
        .await
    }

    /// [`Engine::execute`], with the response's chunks also sent to `sink` as they come
    /// (see [`instance::Instance::run_with`]).
    #[allow(clippy::too_many_arguments)]
    async fn execute_with(
        &self,
        resolved: &Resolved,
        version: &Arc<StoredVersion>,
        instance: Option<(Arc<Instance>, bool)>,
        route: Option<(String, String)>,
        caller_deadline_ms: Option<u64>,
        request_id: String,
        payload: Bytes,
        client_context: Option<String>,
        invocation_type: &str,
        sink: Option<&instance::ChunkSink>,
    ) -> Result<Execution, ApiError> {
        // A receipt covers the input as the caller sent it; a streamed output is not kept to hash.
        let receipt_input = (resolved.receipts && sink.is_none()).then(|| payload.clone());
        let payload = if payload.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            payload
        };
        let route_name = route.as_ref().map(|(name, _)| name.clone());
        let pool = self.pool(&resolved.account, &resolved.function_name, version);
        let (payload, content_type) =
            match signature::to_function(resolved, version, route_name.as_deref(), payload) {
                Ok(converted) => converted,
                Err(error) => {
                    // An instance the caller handed over goes back unused.
                    if let Some((instance, _)) = instance {
                        let grace = self.options.shutdown_grace;
                        if let Some(instance) =
                            self.provisioned.give_back(&pool.key, instance, grace)
                        {
                            self.return_idle(&pool, instance);
                        }
                    }
                    return Err(error);
                }
            };
        let (instance, cold) = match instance {
            Some(given) => given,
            None => match self.take_warm(&pool) {
                Some(instance) => (instance, false),
                None => (self.start_instance(&pool).await?, true),
            },
        };
        // A warm instance is reused only once its extensions are done with the last invocation,
        // and not at all after one of them reported `exit/error`.
        let (instance, cold) = if !cold && instance.extensions().any() {
            let timeout = Duration::from_secs(version.config.timeout as u64);
            match extensions::ready_for_reuse(&instance, timeout).await {
                Ok(()) => (instance, cold),
                Err(reason) => {
                    let grace = self.options.shutdown_grace;
                    tokio::spawn(async move { instance.stop(grace, reason).await });
                    (self.start_instance(&pool).await?, true)
                }
            }
        } else {
            (instance, cold)
        };

        let invocation = Invocation {
            content_type,
            route,
            request_id: request_id.clone(),
            payload,
            // Set when the run starts, to the timeout's deadline or the caller's, whichever is first.
            deadline_ms: caller_deadline_ms.unwrap_or(0),
            invoked_function_arn: resolved.invoked_arn.clone(),
            trace_id: trace_id(),
            client_context,
            cognito_identity: None,
        };
        let config = &version.config;
        let started_ms = instance::unix_ms();
        let result = instance
            .run_with(
                invocation,
                Duration::from_secs(config.timeout as u64),
                &config.version,
                sink,
            )
            .await;

        let runtime_done = Instant::now();
        let (status, error_type, duration_us, reusable, payload) = match result.outcome {
            RunOutcome::Response {
                payload,
                duration_us,
            } => (
                InvocationStatus::Succeeded,
                None,
                duration_us,
                true,
                payload,
            ),
            RunOutcome::FunctionError {
                error_type,
                payload,
                duration_us,
            } => (
                InvocationStatus::Failed,
                Some(error_type),
                duration_us,
                true,
                payload,
            ),
            RunOutcome::Fatal {
                error_type,
                payload,
                duration_us,
                timed_out,
            } => {
                let status = if timed_out {
                    InvocationStatus::TimedOut
                } else {
                    InvocationStatus::Failed
                };
                (status, Some(error_type), duration_us, false, payload)
            }
        };
        // A result that breaks the output type is not returned as it is (a streamed one has already
        // gone); a binary one is returned in protobuf's JSON mapping, as callers see every result.
        let (status, error_type, payload) = match (&status, sink) {
            (InvocationStatus::Succeeded, None) => {
                match signature::from_function(resolved, version, route_name.as_deref(), payload) {
                    Ok(payload) => (status, error_type, payload),
                    Err(document) => (
                        InvocationStatus::Failed,
                        Some(signature::OUTPUT_VIOLATION.to_string()),
                        document,
                    ),
                }
            }
            _ => (status, error_type, payload),
        };
        let record = InvocationRecord {
            request_id,
            account: resolved.account.0.clone(),
            function_name: resolved.function_name.clone(),
            version: config.version.clone(),
            invocation_type: invocation_type.to_string(),
            status,
            error_type: error_type.clone(),
            started_ms,
            duration_us,
            billed_duration_ms: billed_milliseconds(duration_us),
            init_duration_us: result.init_duration_us,
            memory_size_mb: config.memory_size,
            max_memory_used_mb: result
                .max_memory_bytes
                .map(|bytes| bytes.div_ceil(1024 * 1024) as u32)
                .unwrap_or(0),
            cold_start: cold,
            attempts: 1,
            enqueued_ms: None,
            queue_delay_us: None,
            idempotency_key: None,
            replay_of: None,
            memoized: false,
            memo_byte_seconds: None,
            phase: None,
            shutdown_reason: None,
            result: None,
        };
        if instance.extensions().telemetry_wanted() {
            let mut metrics = serde_json::json!({
                "durationMs": record.duration_us as f64 / 1000.0,
                "billedDurationMs": record.billed_duration_ms,
                "memorySizeMB": record.memory_size_mb,
                "maxMemoryUsedMB": record.max_memory_used_mb,
            });
            if let Some(init_us) = record.init_duration_us {
                metrics["initDurationMs"] = serde_json::json!(init_us as f64 / 1000.0);
            }
            instance.extensions().emit(
                "platform.report",
                serde_json::json!({
                    "requestId": record.request_id,
                    "status": match record.status {
                        InvocationStatus::Succeeded => "success",
                        InvocationStatus::TimedOut => "timeout",
                        _ if reusable => "error",
                        _ => "failure",
                    },
                    "metrics": metrics,
                }),
            );
        }
        if let Some(input) = receipt_input {
            let key = self.control.receipt_key();
            let region = &self.options.region;
            let output = payload.clone();
            if let Some(pending) =
                receipts::pending(region, resolved, version, &record, key, input, output)
            {
                self.sinks.receipt(pending);
            }
        }
        // An extension that reported `exit/error` leaves an instance that must not be reused.
        let reusable = reusable && instance.extensions().exit_error().is_none();
        if reusable && instance.extensions().any_for_invoke() {
            tokio::spawn(extensions::follow_invocation(
                instance.clone(),
                record.request_id.clone(),
                instance.extensions().invocation_number(),
                runtime_done,
                // Extensions finish within the invocation's timeout, as on Lambda.
                runtime_done
                    + Duration::from_secs(config.timeout as u64)
                        .saturating_sub(Duration::from_micros(duration_us)),
                self.options.shutdown_grace,
            ));
        }
        if reusable && !instance.has_exited() {
            let grace = self.options.shutdown_grace;
            if let Some(instance) = self.provisioned.give_back(&pool.key, instance, grace) {
                self.return_idle(&pool, instance);
            }
        } else {
            let grace = self.options.shutdown_grace;
            tokio::spawn(async move { instance.stop(grace, "failed").await });
        }
        Ok(Execution {
            payload,
            error_type,
            record,
            log_text: result.log_text,
        })
    }

    fn acquire_slot(
        &self,
        account: &AccountId,
        function: &str,
        reserved: Option<u32>,
    ) -> Result<Slot, ApiError> {
        let function_counter = {
            let mut functions = self
                .concurrency
                .functions
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            functions
                .entry((account.clone(), function.to_string()))
                .or_default()
                .clone()
        };
        let account_counter = {
            let mut accounts = self
                .concurrency
                .accounts
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            accounts.entry(account.clone()).or_default().clone()
        };
        let function_limit = reserved.unwrap_or(u32::MAX);
        if !take_slot(&function_counter, function_limit) {
            return Err(ApiError::throttled(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
                format!(
                    "Rate Exceeded. function {function} is at its reserved concurrency of {function_limit}"
                ),
            ));
        }
        if !take_slot(&account_counter, self.options.account_concurrency) {
            function_counter.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::throttled(
                "ConcurrentInvocationLimitExceeded",
                format!(
                    "Rate Exceeded. account {account} is at its concurrency limit of {}",
                    self.options.account_concurrency
                ),
            ));
        }
        Ok(Slot {
            function: function_counter,
            account: account_counter,
            freed: self.slot_freed.clone(),
        })
    }

    fn pool(&self, account: &AccountId, function: &str, version: &Arc<StoredVersion>) -> Arc<Pool> {
        let key = (
            account.0.clone(),
            function.to_string(),
            version.config.version.clone(),
            version.config.revision_id.clone(),
        );
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        pools
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    key,
                    version: version.clone(),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// A warm instance of the pool's version: a provisioned one first, else an idle on-demand one.
    fn take_warm(&self, pool: &Pool) -> Option<Arc<Instance>> {
        self.provisioned
            .take(&pool.key)
            .or_else(|| self.take_idle(pool))
    }

    fn take_idle(&self, pool: &Pool) -> Option<Arc<Instance>> {
        let mut idle = pool
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        while let Some(instance) = idle.pop() {
            if !instance.has_exited() && !instance.is_stopping() {
                return Some(instance);
            }
        }
        None
    }

    fn return_idle(&self, pool: &Arc<Pool>, instance: Arc<Instance>) {
        let current = self
            .pools
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&pool.key)
            .is_some_and(|live| Arc::ptr_eq(live, pool));
        if current {
            pool.idle
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .push(instance);
        } else {
            let grace = self.options.shutdown_grace;
            tokio::spawn(async move { instance.stop(grace, "function changed").await });
        }
    }

    async fn start_instance(&self, pool: &Pool) -> Result<Arc<Instance>, ApiError> {
        self.start_instance_as(pool, "on-demand").await
    }

    /// Starts an instance; `initialization_type` is `on-demand` or `provisioned-concurrency`.
    async fn start_instance_as(
        &self,
        pool: &Pool,
        initialization_type: &str,
    ) -> Result<Arc<Instance>, ApiError> {
        let version = &pool.version;
        let config = &version.config;
        let family = RuntimeCatalog::family(&config.runtime)?;
        let code_dir = code::unpacked(
            &self.control,
            &self.options.data_dir,
            &version.code_digest,
            self.control.options().max_unzipped_bytes,
        )
        .await?;
        let opt_dir = code::merged_layers(
            &self.control,
            &self.options.data_dir,
            &version.layer_digests,
            self.control.options().max_unzipped_bytes,
        )
        .await?;
        let instance_id = uuid::Uuid::new_v4().simple().to_string();
        let mut env: Vec<(String, String)> = Vec::new();
        let mut path = "/usr/local/bin:/usr/bin:/bin:/opt/bin".to_string();
        // The machine's interpreters are visible read-only at their own paths in every sandbox, so a
        // `provided` bootstrap can run `python3 -m awslambdaric` or `node` as it would on Lambda's images.
        let mut extra_read_only = Vec::new();
        for interpreter in [RuntimeFamily::Python, RuntimeFamily::Node]
            .into_iter()
            .filter_map(|family| self.control.runtimes().interpreter(family))
        {
            extra_read_only.extend(interpreter.prefixes.iter().cloned());
            if let Some(dir) = interpreter.executable.parent() {
                path = format!("{}:{path}", dir.display());
            }
        }
        let (argv, runtime_dir) = match family {
            RuntimeFamily::Provided => (vec!["/var/task/bootstrap".to_string()], None),
            RuntimeFamily::Python | RuntimeFamily::Node => {
                let interpreter = self.control.runtimes().interpreter(family).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "runtime {} has no interpreter on this machine",
                        config.runtime
                    ))
                })?;
                let executable = interpreter.executable.display().to_string();
                let (bootstrap, dir) = if family == RuntimeFamily::Python {
                    env.push(("PYTHONUNBUFFERED".into(), "1".into()));
                    env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
                    ("/var/runtime/bootstrap.py", self.python_runtime_dir.clone())
                } else {
                    env.push((
                        "NODE_PATH".into(),
                        "/opt/nodejs/node_modules:/var/runtime/node_modules:/var/task".into(),
                    ));
                    ("/var/runtime/bootstrap.js", self.node_runtime_dir.clone())
                };
                (vec![executable, bootstrap.to_string()], Some(dir))
            }
        };
        extra_read_only.sort();
        extra_read_only.dedup();
        let log_stream = format!(
            "{}/[{}]{}",
            chrono::Utc::now().format("%Y/%m/%d"),
            config.version,
            instance_id
        );
        let region = &self.options.region;
        for (name, value) in [
            ("AWS_LAMBDA_FUNCTION_NAME", config.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", config.version.clone()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", config.memory_size.to_string()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", config.function_name)),
            ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream),
            ("AWS_LAMBDA_RUNTIME_API", wisp_sandbox::RUNTIME_API_ADDRESS.to_string()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", initialization_type.to_string()),
            ("AWS_EXECUTION_ENV", format!("AWS_Lambda_{}", config.runtime)),
            ("AWS_REGION", region.clone()),
            ("AWS_DEFAULT_REGION", region.clone()),
            ("LAMBDA_TASK_ROOT", "/var/task".to_string()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".to_string()),
            ("_HANDLER", config.handler.clone()),
            ("TZ", ":UTC".to_string()),
            ("LANG", "en_US.UTF-8".to_string()),
            ("LD_LIBRARY_PATH", "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib".to_string()),
            ("HOME", "/tmp".to_string()),
            ("PATH", path),
        ] {
            env.push((name.to_string(), value));
        }
        if self.options.network == NetworkMode::Egress {
            env.push((
                "WISP_HOST_ADDRESS".into(),
                wisp_sandbox::HOST_ADDRESS.to_string(),
            ));
        }
        for (name, value) in &config.environment.variables {
            env.push((name.clone(), value.clone()));
        }
        let tmp_mb = tmp_size_mb(config);
        let opt_dir_for_extensions = opt_dir.clone();
        let spec = InstanceSpec {
            sandbox: SandboxSpec {
                instance_id,
                code_dir,
                runtime_dir,
                extra_read_only,
                opt_dir,
                argv,
                env,
                memory_mb: config.memory_size,
                tmp_mb,
                scratch_dir: Some(self.options.data_dir.join("scratch")),
                pids_max: self.options.pids_max,
                network: self.options.network,
            },
            account: pool.key.0.clone(),
            function: pool.key.1.clone(),
            resource: qualified_arn(
                region,
                &AccountId(pool.key.0.clone()),
                &pool.key.1,
                &config.version,
            ),
            version: config.version.clone(),
            identity: wisp_runtime_api::FunctionIdentity {
                function_name: config.function_name.clone(),
                function_version: config.version.clone(),
                handler: config.handler.clone(),
                account_id: pool.key.0.clone(),
                started_extensions: extensions::started_extensions(
                    opt_dir_for_extensions.as_deref(),
                ),
            },
        };
        // Like Lambda's INIT_START line; it also records which interpreter actually serves the runtime id.
        let runtime_version = match family {
            RuntimeFamily::Provided => config.runtime.clone(),
            _ => match self.control.runtimes().interpreter(family) {
                Some(interpreter) => {
                    format!("{} (requested {})", interpreter.version, config.runtime)
                }
                None => config.runtime.clone(),
            },
        };
        self.sinks.log(
            &pool.key.0,
            &pool.key.1,
            format!(
                "INIT_START Runtime Version: {runtime_version}\tInstance: {}\n",
                spec.sandbox.instance_id
            ),
        );
        let (account, resource) = (spec.account.clone(), spec.resource.clone());
        let instance = Instance::start(spec, &self.sandboxes, self.sinks.clone())
            .await
            .map_err(|error| {
                ApiError::internal(format!(
                    "could not start an instance of {}: {error}",
                    config.function_name
                ))
            })?;
        // Instances are started and stopped by the platform, whoever's invocation needed one.
        let started = wisp_control::lifecycle::LifecycleEvent::new(
            &account,
            wisp_control::lifecycle::EventType::InstanceStarted,
            resource,
            None,
            Some(serde_json::json!({
                "InstanceId": instance.id,
                "Version": config.version,
                "InitializationType": initialization_type,
            })),
        )
        .by_platform();
        self.sinks.lifecycle(started);
        Ok(instance)
    }

    /// Stops dispatching events and stops every instance (server shutdown). Events not finished stay
    /// in their queues and run again after the next start.
    pub async fn shutdown(&self) {
        self.bus.stop();
        self.queues.stop();
        self.shutdown_provisioned().await;
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .drain()
            .map(|(_, pool)| pool)
            .collect();
        let mut stopping = Vec::new();
        for pool in pools {
            for instance in pool
                .idle
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .drain(..)
            {
                let grace = self.options.shutdown_grace;
                stopping.push(tokio::spawn(async move {
                    instance.stop(grace, "server stopping").await
                }));
            }
        }
        for task in stopping {
            let _ = task.await;
        }
        // Records, logs and the instances' stop events of the last moments are written before the process ends.
        self.sinks.flush().await;
    }
}

/// Stops instances idle for longer than the idle timeout.
async fn reap_idle(engine: std::sync::Weak<Engine>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let limit = engine.options.idle_timeout;
        let pools: Vec<Arc<Pool>> = engine
            .pools
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .values()
            .cloned()
            .collect();
        for pool in pools {
            let expired: Vec<Arc<Instance>> = {
                let mut idle = pool
                    .idle
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                let now = Instant::now();
                let (expired, keep): (Vec<_>, Vec<_>) = idle.drain(..).partition(|instance| {
                    instance.has_exited()
                        || now.duration_since(
                            *instance
                                .last_used
                                .lock()
                                .unwrap_or_else(|poison| poison.into_inner()),
                        ) >= limit
                });
                *idle = keep;
                expired
            };
            for instance in expired {
                let grace = engine.options.shutdown_grace;
                tokio::spawn(async move { instance.stop(grace, "idle").await });
            }
        }
    }
}

/// When a function changes, its pools for superseded `$LATEST` revisions (or all, if it was deleted) are retired.
async fn retire_changed(
    engine: std::sync::Weak<Engine>,
    mut changes: tokio::sync::broadcast::Receiver<(AccountId, String)>,
) {
    loop {
        let (account, function) = match changes.recv().await {
            Ok(change) => change,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let current = engine
            .control
            .get_function(&account, &function, None)
            .await
            .ok();
        let retired: Vec<Arc<Pool>> = {
            let mut pools = engine
                .pools
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let stale: Vec<PoolKey> = pools
                .keys()
                .filter(|(pool_account, pool_function, version, revision)| {
                    *pool_account == account.0
                        && *pool_function == function
                        && match &current {
                            None => true,
                            Some((latest, _)) => {
                                version == "$LATEST" && *revision != latest.config.revision_id
                            }
                        }
                })
                .cloned()
                .collect();
            stale.iter().filter_map(|key| pools.remove(key)).collect()
        };
        for pool in retired {
            for instance in pool
                .idle
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .drain(..)
            {
                let grace = engine.options.shutdown_grace;
                tokio::spawn(async move { instance.stop(grace, "function changed").await });
            }
        }
    }
}

/// Size of `/tmp`: the configured ephemeral storage; when that is Lambda's default (512 MB), it grows
/// with the memory size instead, so bigger functions get a bigger `/tmp` without asking.
pub fn tmp_size_mb(config: &FunctionConfiguration) -> u32 {
    if config.ephemeral_storage.size == MIN_EPHEMERAL_MB {
        config.memory_size.max(MIN_EPHEMERAL_MB)
    } else {
        config.ephemeral_storage.size
    }
}

/// Refuses a payload that is not JSON (an empty one is taken as `{}`).
fn check_json(payload: &[u8]) -> Result<(), ApiError> {
    if !payload.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_err() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestContent,
            "Could not parse request body into json: the payload is not valid JSON",
        ));
    }
    Ok(())
}

/// A version 4 UUID from the thread's random generator: no system call per invocation.
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// A request id: a version 7 UUID (milliseconds since the epoch, then random bits). Ids made later sort
/// later, so the store adds records kept by request id at the end of its index instead of rewriting a
/// random page of it for each one.
pub fn request_id() -> uuid::Uuid {
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(instance::unix_ms(), &random).into_uuid()
}

fn rand_unit() -> f64 {
    rand::random::<f64>()
}

/// An X-Ray style trace header, which runtimes expect to receive.
fn trace_id() -> String {
    let id = random_uuid().simple().to_string();
    format!(
        "Root=1-{:08x}-{};Parent={};Sampled=0",
        instance::unix_ms() / 1000,
        &id[..24],
        &id[..16]
    )
}

/// Compile-time check: the invoke future can move between threads (the HTTP server needs it).
#[allow(dead_code)]
fn invoke_future_is_send(engine: &Engine, request: InvokeRequest) -> impl Send + '_ {
    engine.invoke(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back_when_released() {
        let counter = AtomicU32::new(0);
        assert!(take_slot(&counter, 2));
        assert!(take_slot(&counter, 2));
        assert!(
            !take_slot(&counter, 2),
            "a third execution is over the limit of 2"
        );
        counter.fetch_sub(1, Ordering::AcqRel);
        assert!(take_slot(&counter, 2));
        assert!(
            !take_slot(&AtomicU32::new(0), 0),
            "reserved concurrency 0 throttles every invoke"
        );
    }

    #[test]
    fn tmp_grows_with_memory_unless_ephemeral_storage_is_set() {
        let config = |memory_size, size| FunctionConfiguration {
            function_name: "f".into(),
            function_arn: String::new(),
            runtime: "provided".into(),
            role: String::new(),
            handler: String::new(),
            code_size: 0,
            description: String::new(),
            timeout: 3,
            memory_size,
            last_modified: String::new(),
            code_sha256: String::new(),
            version: "$LATEST".into(),
            environment: Environment::default(),
            ephemeral_storage: EphemeralStorage { size },
            revision_id: String::new(),
            state: String::new(),
            last_update_status: String::new(),
            package_type: String::new(),
            architectures: Vec::new(),
            layers: Vec::new(),
        };
        for (memory, ephemeral, expected) in [
            (128, 512, 512),
            (2048, 512, 2048),
            (2048, 1024, 1024),
            (128, 4096, 4096),
        ] {
            assert_eq!(
                tmp_size_mb(&config(memory, ephemeral)),
                expected,
                "memory {memory}, ephemeral {ephemeral}"
            );
        }
    }
}
