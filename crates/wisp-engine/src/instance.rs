//! One function instance: a sandboxed process, its Runtime API endpoint, its output readers and
//! the state the scheduler needs (ready, busy, exited).
//!
//! An instance runs one invocation at a time. It never decides whether to exist; the pool does.
//! How it is stopped — the shutdown notice, its runtime's hook, and the hook's log lines and
//! record — is in [`shutdown`].

mod shutdown;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};
use wisp_runtime_api::{
    Dispatch, ExtensionsHandle, FunctionIdentity, Invocation, RuntimeOutcome, RuntimeState,
    StreamFrame,
};
use wisp_sandbox::{ExitReport, SandboxSpec, SpawnedSandbox};

use crate::sinks::Sinks;
use wisp_control::lifecycle::{EventType, LifecycleEvent};

/// Longest a runtime may take to initialise before its first invocation (Lambda's 10 s).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the output readers put the text of the invocation in progress.
#[derive(Default)]
struct Capture {
    text: Vec<u8>,
    /// Whether text should also be kept for the caller (`LogType: Tail`).
    active: bool,
}

pub struct Instance {
    pub id: String,
    /// Signals the sandbox and reads its cgroup while the waiter task owns it.
    handle: wisp_sandbox::KillHandle,
    dispatch: tokio::sync::mpsc::Sender<Dispatch>,
    state: watch::Receiver<RuntimeState>,
    exited: watch::Receiver<Option<ExitReport>>,
    spawned_at: Instant,
    /// Set by the first invocation that sees the runtime ready: that one reports the init duration.
    init_reported: AtomicBool,
    capture: Arc<Mutex<Capture>>,
    /// Held by an output reader while it handles one chunk, so a drain can wait for it.
    reading: Arc<tokio::sync::Mutex<()>>,
    stdout_fd: i32,
    stderr_fd: i32,
    pub last_used: Mutex<Instant>,
    stopping: AtomicBool,
    /// Where the stop is announced, and about what.
    sinks: Sinks,
    account: String,
    function: String,
    resource: String,
    /// What stopping the instance needs: the Runtime API's shutdown extension and what meters a hook.
    shutdown: shutdown::ShutdownContext,
    /// The extensions registered through the Extensions API.
    extensions: ExtensionsHandle,
    /// Whether the launcher starts extensions from `/opt/extensions`: then init also watches them.
    starts_extensions: bool,
    /// `on-demand` or `provisioned-concurrency`, for the init's telemetry.
    initialization_type: String,
}

/// Where a streaming invocation's response chunks go, in order, as the function produces them.
/// Unbounded so that a slow caller never holds up the function's timeout; the Runtime API caps a
/// streamed response at 20 MB.
pub type ChunkSink = tokio::sync::mpsc::UnboundedSender<Bytes>;

/// How one invocation on an instance ended.
pub enum RunOutcome {
    Response {
        payload: Bytes,
        duration_us: u64,
    },
    FunctionError {
        error_type: String,
        payload: Bytes,
        duration_us: u64,
    },
    /// The instance cannot be used again (timeout, crash, out of memory, init failure).
    Fatal {
        error_type: String,
        payload: Bytes,
        duration_us: u64,
        timed_out: bool,
    },
}

pub struct RunResult {
    pub outcome: RunOutcome,
    pub init_duration_us: Option<u64>,
    /// START and everything the function wrote during the invocation (the caller adds END and REPORT).
    pub log_text: Vec<u8>,
    pub max_memory_bytes: Option<u64>,
}

/// Settings an instance is started with.
pub struct InstanceSpec {
    pub sandbox: SandboxSpec,
    pub account: String,
    pub function: String,
    /// ARN of the version the instance runs, for its lifecycle events.
    pub resource: String,
    /// The version the instance runs (`$LATEST` or a number), for its shutdown hook's log lines.
    pub version: String,
    /// What the Extensions API tells extensions, and which ones init waits for.
    pub identity: FunctionIdentity,
}

impl Instance {
    pub async fn start(
        spec: InstanceSpec,
        sandboxes: &wisp_sandbox::SandboxPool,
        sinks: Sinks,
    ) -> Result<Arc<Instance>, wisp_sandbox::SandboxError> {
        let spawned_at = Instant::now();
        let mut sandbox: SpawnedSandbox = sandboxes.spawn(&spec.sandbox).await?;
        let starts_extensions = !spec.identity.started_extensions.is_empty();
        let handle = sandbox.kill_handle();
        let connector_handle = handle.clone();
        let connector: wisp_runtime_api::telemetry::Connector =
            Arc::new(move |port| connector_handle.connect_inside(port, Duration::from_secs(1)));
        let (channel, endpoint) = wisp_runtime_api::channel(spec.identity.clone(), Some(connector));
        let initialization_type = spec
            .sandbox
            .env
            .iter()
            .find(|(name, _)| name == "AWS_LAMBDA_INITIALIZATION_TYPE")
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| "on-demand".into());
        if channel.extensions.telemetry_wanted() {
            channel.extensions.emit(
                "platform.initStart",
                serde_json::json!({
                    "initializationType": initialization_type,
                    "phase": "init",
                    "functionName": spec.identity.function_name,
                    "functionVersion": spec.identity.function_version,
                }),
            );
        }
        let listener = sandbox.take_listener().ok_or_else(|| {
            wisp_sandbox::SandboxError::Launcher("the sandbox gave no runtime api listener".into())
        })?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let server = tokio::spawn(wisp_runtime_api::serve(listener, endpoint));

        let capture = Arc::new(Mutex::new(Capture::default()));
        let reading = Arc::new(tokio::sync::Mutex::new(()));
        let (Some(stdout), Some(stderr)) = (sandbox.take_stdout(), sandbox.take_stderr()) else {
            return Err(wisp_sandbox::SandboxError::Launcher(
                "the sandbox gave no output pipes".into(),
            ));
        };
        let stdout_fd = std::os::fd::AsRawFd::as_raw_fd(&stdout);
        let stderr_fd = std::os::fd::AsRawFd::as_raw_fd(&stderr);
        let mut streams = vec![
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                "function",
            ),
            (Box::new(stderr), "function"),
        ];
        if let Some(extension_output) = sandbox.take_extension_output() {
            streams.push((Box::new(extension_output), "extension"));
        }
        for (stream, telemetry_type) in streams {
            tokio::spawn(read_output(
                stream,
                telemetry_type,
                capture.clone(),
                reading.clone(),
                sinks.clone(),
                spec.account.clone(),
                spec.function.clone(),
                channel.extensions.clone(),
            ));
        }

        let (exit_sender, exited) = watch::channel(None);
        tokio::spawn(async move {
            let report = sandbox.wait().await;
            server.abort();
            let _ = exit_sender.send(Some(report));
        });

        Ok(Arc::new(Instance {
            id: spec.sandbox.instance_id.clone(),
            handle,
            dispatch: channel.dispatch,
            state: channel.state,
            exited,
            spawned_at,
            init_reported: AtomicBool::new(false),
            capture,
            reading,
            stdout_fd,
            stderr_fd,
            last_used: Mutex::new(Instant::now()),
            stopping: AtomicBool::new(false),
            sinks,
            account: spec.account.clone(),
            function: spec.function.clone(),
            resource: spec.resource.clone(),
            shutdown: shutdown::ShutdownContext::new(channel.shutdown, &spec),
            extensions: channel.extensions,
            starts_extensions,
            initialization_type,
        }))
    }

    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Waits, within the init limit, until the runtime asks for its first invocation: how a
    /// provisioned instance is initialised before anyone invokes it. No invocation of it reports
    /// an init duration afterwards, since no caller waited for the init. On failure the instance
    /// is killed and the error says why (`Runtime.InitError: …`).
    pub async fn wait_initialised(&self) -> Result<Duration, String> {
        let outcome = self.wait_ready().await;
        let (error_type, body) = match outcome {
            Ok(Ok(ready_at)) => {
                self.init_reported.store(true, Ordering::Relaxed);
                self.init_telemetry(ready_at);
                return Ok(ready_at.duration_since(self.spawned_at));
            }
            Ok(Err(reported)) => {
                self.kill(nix::sys::signal::Signal::SIGKILL);
                let report = self.wait_exit(Duration::from_secs(2)).await;
                match reported {
                    Some(reported) => reported,
                    None => init_exit_error("provisioned-init", report.as_ref()),
                }
            }
            Err(_) => {
                self.kill(nix::sys::signal::Signal::SIGKILL);
                let (error_type, message) = self.init_timeout_error();
                let body = error_document(&error_type, &message);
                (error_type, body)
            }
        };
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|document| document["errorMessage"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        // No invocation was involved: drop the `RequestId: … Error:` prefix of exit messages.
        let message = match message.split_once(" Error: ") {
            Some((prefix, rest)) if prefix.starts_with("RequestId: ") => rest.to_string(),
            _ => message,
        };
        Err(format!("{error_type}: {message}"))
    }

    /// Waits, within [`INIT_TIMEOUT`], until the runtime and every extension are ready, init failed
    /// (`Err(Some(..))`, as reported) or the sandbox exited (`Err(None)`).
    async fn wait_ready(
        &self,
    ) -> Result<Result<Instant, Option<(String, Bytes)>>, tokio::time::error::Elapsed> {
        let mut state = self.state.clone();
        let mut exited = self.exited.clone();
        tokio::time::timeout(INIT_TIMEOUT, async {
            loop {
                if exited.borrow().is_some() {
                    return Err(None);
                }
                match &*state.borrow_and_update() {
                    RuntimeState::Ready(at) => return Ok(*at),
                    RuntimeState::InitFailed { error_type, body } => {
                        return Err(Some((error_type.clone(), body.clone())));
                    }
                    RuntimeState::Initializing => {}
                }
                // An extension that exits before registering fails init at once.
                if self.starts_extensions
                    && let Some(message) =
                        crate::extensions::exited_unregistered(&self.extensions, &self.handle)
                {
                    self.note(&format!("Extension.InitError: {message}\n"));
                    return Err(Some((
                        "Extension.InitError".to_string(),
                        error_document("Extension.InitError", &message),
                    )));
                }
                let poll = if self.starts_extensions {
                    Duration::from_millis(20)
                } else {
                    INIT_TIMEOUT
                };
                tokio::select! {
                    _ = state.changed() => {}
                    _ = exited.changed() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        })
        .await
    }

    /// The error of an init that ran out of time: the extensions' fault if they held it up.
    fn init_timeout_error(&self) -> (String, String) {
        match crate::extensions::init_holdup(&self.extensions) {
            Some(holdup) => (
                "Extension.InitError".to_string(),
                format!("{holdup} within {} seconds", INIT_TIMEOUT.as_secs()),
            ),
            None => (
                "Runtime.InitError".to_string(),
                format!(
                    "Runtime failed to initialise within {} seconds",
                    INIT_TIMEOUT.as_secs()
                ),
            ),
        }
    }

    /// The instance's extensions, as registered through the Extensions API.
    pub fn extensions(&self) -> &ExtensionsHandle {
        &self.extensions
    }

    /// Writes a platform line to the function's log outside any invocation's text.
    pub fn log_line(&self, line: &str) {
        self.sinks
            .log(&self.account, &self.function, line.as_bytes());
    }

    /// Waits until the instance's process has exited.
    pub async fn wait_exited(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
    }

    /// Runs one invocation. `timeout` is the function's; init has its own limit before it.
    /// A response the runtime streams is collected (up to 6 MB) into the outcome's payload.
    pub async fn run(&self, invocation: Invocation, timeout: Duration, version: &str) -> RunResult {
        self.run_with(invocation, timeout, version, None).await
    }

    /// [`Instance::run`], with the response also going to `sink` as it is produced: each chunk the
    /// runtime streams as it arrives, or a buffered response as one chunk. The outcome's payload is
    /// then empty for a successful streamed response.
    pub async fn run_with(
        &self,
        mut invocation: Invocation,
        timeout: Duration,
        version: &str,
        sink: Option<&ChunkSink>,
    ) -> RunResult {
        let request_id = invocation.request_id.clone();
        {
            let mut capture = self
                .capture
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            capture.active = true;
            capture.text.clear();
            capture.text.extend_from_slice(
                format!("START RequestId: {request_id} Version: {version}\n").as_bytes(),
            );
        }
        let mut init_duration_us = None;

        // Wait for the runtime to ask for work (cold start), with the init limit. A warm instance is
        // ready already: answer without arming a timer.
        let already_ready = match &*self.state.borrow() {
            RuntimeState::Ready(at) if self.exited.borrow().is_none() => Some(Ok(Ok(*at))),
            _ => None,
        };
        let warm = already_ready.is_some();
        let ready = match already_ready {
            Some(ready) => ready,
            None => self.wait_ready().await,
        };
        // A warm instance whose extensions are still busy with the last invocation is not reused
        // before they ask for their next event (within this invocation's timeout).
        if warm && self.extensions.any() && !self.extensions.settled(timeout).await {
            self.kill(nix::sys::signal::Signal::SIGKILL);
            let message = format!(
                "RequestId: {request_id} Error: extension {} still busy with the previous invocation",
                self.extensions.busy().join(", ")
            );
            return self
                .finish(
                    RunOutcome::Fatal {
                        error_type: "Extension.TimedOut".into(),
                        payload: error_document("Extension.TimedOut", &message),
                        duration_us: 0,
                        timed_out: true,
                    },
                    None,
                )
                .await;
        }
        let started = Instant::now();
        match ready {
            Ok(Ok(ready_at)) => {
                if !self.init_reported.swap(true, Ordering::Relaxed) {
                    init_duration_us =
                        Some(ready_at.duration_since(self.spawned_at).as_micros() as u64);
                    self.init_telemetry(ready_at);
                }
            }
            Ok(Err(reported)) => {
                self.kill(nix::sys::signal::Signal::SIGKILL);
                let report = self.wait_exit(Duration::from_secs(2)).await;
                let (error_type, payload) = match reported {
                    Some((error_type, body)) => (error_type, body),
                    None => init_exit_error(&request_id, report.as_ref()),
                };
                return self
                    .finish(
                        RunOutcome::Fatal {
                            error_type,
                            payload,
                            duration_us: 0,
                            timed_out: false,
                        },
                        init_duration_us,
                    )
                    .await;
            }
            Err(_) => {
                self.kill(nix::sys::signal::Signal::SIGKILL);
                let (error_type, message) = self.init_timeout_error();
                self.note(&format!("{error_type}: {message}\n"));
                let message = format!("RequestId: {request_id} Error: {message}");
                let payload = error_document(&error_type, &message);
                return self
                    .finish(
                        RunOutcome::Fatal {
                            error_type,
                            payload,
                            duration_us: 0,
                            timed_out: true,
                        },
                        init_duration_us,
                    )
                    .await;
            }
        }

        // A deadline already set is the caller's own: the function is told whichever comes first.
        let by_timeout = unix_ms() + timeout.as_millis() as u64;
        invocation.deadline_ms = match invocation.deadline_ms {
            0 => by_timeout,
            caller => caller.min(by_timeout),
        };
        if self.extensions.telemetry_wanted() {
            self.extensions.emit(
                "platform.start",
                serde_json::json!({
                    "requestId": request_id,
                    "version": version,
                    "tracing": { "type": "X-Amzn-Trace-Id", "value": invocation.trace_id },
                }),
            );
        }
        let (respond, outcome) = oneshot::channel();
        if self
            .dispatch
            .send(Dispatch {
                invocation,
                respond,
            })
            .await
            .is_err()
        {
            let payload = error_document(
                "Runtime.ExitError",
                &format!(
                    "RequestId: {request_id} Error: Runtime exited before the invocation started"
                ),
            );
            return self
                .finish(
                    RunOutcome::Fatal {
                        error_type: "Runtime.ExitError".into(),
                        payload,
                        duration_us: 0,
                        timed_out: false,
                    },
                    init_duration_us,
                )
                .await;
        }
        let mut exited = self.exited.clone();
        let outcome = tokio::select! {
            outcome = outcome => match outcome {
                Ok(RuntimeOutcome::Response(payload)) => {
                    if let Some(sink) = sink && !payload.is_empty() {
                        let _ = sink.send(payload.clone());
                    }
                    RunOutcome::Response { payload, duration_us: elapsed_us(started) }
                }
                Ok(RuntimeOutcome::Error { error_type, body }) => RunOutcome::FunctionError { error_type, payload: body, duration_us: elapsed_us(started) },
                Ok(RuntimeOutcome::Stream(frames)) => self.follow_stream(&request_id, frames, started, timeout, sink).await,
                Err(_) => self.exit_outcome(&request_id, started).await,
            },
            _ = async { let _ = exited.wait_for(Option::is_some).await; } => self.exit_outcome(&request_id, started).await,
            _ = tokio::time::sleep(timeout) => self.timed_out(&request_id, started, timeout),
        };
        if self.extensions.telemetry_wanted() {
            let (status, duration_us) = match &outcome {
                RunOutcome::Response { duration_us, .. } => ("success", *duration_us),
                RunOutcome::FunctionError { duration_us, .. } => ("error", *duration_us),
                RunOutcome::Fatal {
                    duration_us,
                    timed_out: true,
                    ..
                } => ("timeout", *duration_us),
                RunOutcome::Fatal { duration_us, .. } => ("failure", *duration_us),
            };
            self.extensions.emit(
                "platform.runtimeDone",
                serde_json::json!({
                    "requestId": request_id,
                    "status": status,
                    "metrics": { "durationMs": duration_us as f64 / 1000.0 },
                }),
            );
        }
        self.finish(outcome, init_duration_us).await
    }

    /// `platform.initRuntimeDone` and `platform.initReport`, once, when init completed at `ready_at`.
    fn init_telemetry(&self, ready_at: Instant) {
        if !self.extensions.telemetry_wanted() {
            return;
        }
        let duration_ms = ready_at.duration_since(self.spawned_at).as_secs_f64() * 1000.0;
        self.extensions.emit(
            "platform.initRuntimeDone",
            serde_json::json!({
                "initializationType": self.initialization_type,
                "phase": "init",
                "status": "success",
            }),
        );
        self.extensions.emit(
            "platform.initReport",
            serde_json::json!({
                "initializationType": self.initialization_type,
                "phase": "init",
                "status": "success",
                "metrics": { "durationMs": duration_ms },
            }),
        );
    }

    /// Ends the invocation that ran out of time and describes it as Lambda does; the runtime is
    /// killed now, or left to the stop that follows when it can run a shutdown hook.
    fn timed_out(&self, request_id: &str, started: Instant, timeout: Duration) -> RunOutcome {
        self.after_timeout();
        let seconds = format!("{:.2}", timeout.as_secs_f64());
        self.note(&format!(
            "{} {request_id} Task timed out after {seconds} seconds\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ));
        let message =
            format!("RequestId: {request_id} Error: Task timed out after {seconds} seconds");
        RunOutcome::Fatal {
            error_type: "Sandbox.Timedout".into(),
            payload: error_document("Sandbox.Timedout", &message),
            duration_us: elapsed_us(started),
            timed_out: true,
        }
    }

    /// Follows a streamed response to its end, within the invocation's timeout: chunks go to
    /// `sink` as they arrive or, without one, are collected up to the buffered limit.
    async fn follow_stream(
        &self,
        request_id: &str,
        mut frames: tokio::sync::mpsc::Receiver<StreamFrame>,
        started: Instant,
        timeout: Duration,
        sink: Option<&ChunkSink>,
    ) -> RunOutcome {
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let mut collected = bytes::BytesMut::new();
        let mut exited = self.exited.clone();
        loop {
            let frame = tokio::select! {
                frame = frames.recv() => frame,
                _ = async { let _ = exited.wait_for(Option::is_some).await; } => return self.exit_outcome(request_id, started).await,
                _ = tokio::time::sleep_until(deadline) => return self.timed_out(request_id, started, timeout),
            };
            match frame {
                Some(StreamFrame::Data(chunk)) => match sink {
                    // The caller may have hung up; the invocation still runs to its end.
                    Some(sink) => {
                        let _ = sink.send(chunk);
                    }
                    None if collected.len() + chunk.len()
                        > wisp_runtime_api::MAX_RESPONSE_BYTES =>
                    {
                        let message = format!(
                            "Response payload size exceeded maximum allowed payload size ({} bytes).",
                            wisp_runtime_api::MAX_RESPONSE_BYTES
                        );
                        // The runtime is still streaming the rest: the instance is not reused.
                        return RunOutcome::Fatal {
                            payload: error_document("Function.ResponseSizeTooLarge", &message),
                            error_type: "Function.ResponseSizeTooLarge".into(),
                            duration_us: elapsed_us(started),
                            timed_out: false,
                        };
                    }
                    None => collected.extend_from_slice(&chunk),
                },
                Some(StreamFrame::End) => {
                    return RunOutcome::Response {
                        payload: collected.freeze(),
                        duration_us: elapsed_us(started),
                    };
                }
                // A connection that broke mid-stream usually means a runtime that died: say so
                // if it did, and never reuse an instance whose runtime lost its way.
                // A stream cut at the size limit: the runtime may still be writing the rest of it, so
                // the instance is not reused.
                Some(StreamFrame::Error { error_type, body })
                    if error_type == "Function.ResponseSizeTooLarge" =>
                {
                    return RunOutcome::Fatal {
                        error_type,
                        payload: body,
                        duration_us: elapsed_us(started),
                        timed_out: false,
                    };
                }
                Some(StreamFrame::Error { error_type, body })
                    if error_type == wisp_runtime_api::streaming::TRUNCATED_RESPONSE =>
                {
                    if self.wait_exit(Duration::from_millis(500)).await.is_some() {
                        return self.exit_outcome(request_id, started).await;
                    }
                    return RunOutcome::Fatal {
                        error_type,
                        payload: body,
                        duration_us: elapsed_us(started),
                        timed_out: false,
                    };
                }
                Some(StreamFrame::Error { error_type, body }) => {
                    return RunOutcome::FunctionError {
                        error_type,
                        payload: body,
                        duration_us: elapsed_us(started),
                    };
                }
                // The runtime's connection or process ended mid-stream.
                None => return self.exit_outcome(request_id, started).await,
            }
        }
    }

    async fn exit_outcome(&self, request_id: &str, started: Instant) -> RunOutcome {
        let duration_us = elapsed_us(started);
        let report = self.wait_exit(Duration::from_secs(5)).await;
        let (error_type, message) = describe_exit(request_id, report.as_ref());
        RunOutcome::Fatal {
            payload: error_document(&error_type, &message),
            error_type,
            duration_us,
            timed_out: false,
        }
    }

    async fn finish(&self, outcome: RunOutcome, init_duration_us: Option<u64>) -> RunResult {
        self.drain_output().await;
        let text = {
            let mut capture = self
                .capture
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            capture.active = false;
            std::mem::take(&mut capture.text)
        };
        *self
            .last_used
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Instant::now();
        let max_memory_bytes = self.handle.memory_peak_bytes().or_else(|| {
            self.exited
                .borrow()
                .as_ref()
                .and_then(|report| report.max_memory_bytes)
        });
        RunResult {
            outcome,
            init_duration_us,
            log_text: text,
            max_memory_bytes,
        }
    }

    /// Waits until text the function wrote before answering has been read from its pipes.
    /// The runtime writes its output before it posts the response, so it is already in the pipe;
    /// this is bounded because a child process may keep writing forever.
    async fn drain_output(&self) {
        let deadline = Instant::now() + Duration::from_millis(20);
        loop {
            let pending = pipe_pending(self.stdout_fd) + pipe_pending(self.stderr_fd);
            if pending == 0 {
                // Nothing unread in the pipes and no reader busy with a chunk: all output is captured.
                if self.reading.try_lock().is_ok() {
                    return;
                }
                drop(self.reading.lock().await);
                if pipe_pending(self.stdout_fd) + pipe_pending(self.stderr_fd) == 0 {
                    return;
                }
            }
            if Instant::now() > deadline {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Adds a platform line to the current invocation's log.
    fn note(&self, line: &str) {
        let mut capture = self
            .capture
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        capture.text.extend_from_slice(line.as_bytes());
    }

    /// Sends a signal to the sandbox's first process.
    pub fn kill(&self, signal: nix::sys::signal::Signal) {
        // The sandbox may already be gone; there is nothing left to signal then.
        let _ = self.handle.kill(signal);
    }

    async fn wait_exit(&self, limit: Duration) -> Option<ExitReport> {
        let mut exited = self.exited.clone();
        match tokio::time::timeout(limit, exited.wait_for(Option::is_some)).await {
            Ok(Ok(report)) => report.clone(),
            _ => None,
        }
    }

    /// Stops the instance: SIGTERM, then SIGKILL after `grace` (see [`shutdown`] for what the
    /// runtime is told and how its hook is metered).
    pub async fn stop(&self, grace: Duration, reason: &str) {
        if self.stopping.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::debug!(instance = %self.id, reason, "stopping instance");
        self.sinks.lifecycle(
            LifecycleEvent::new(
                &self.account,
                EventType::InstanceStopped,
                self.resource.clone(),
                Some(serde_json::json!({ "InstanceId": self.id })),
                None,
            )
            .with_reason(reason)
            .by_platform(),
        );
        // Extensions hear of the stop first (CHECKPOINT, SHUTDOWN), then the runtime gets its own grace.
        if !self.has_exited() {
            let lambda_reason = self.lambda_reason(reason);
            crate::extensions::before_stop(&self.extensions, &self.handle, grace, lambda_reason)
                .await;
        }
        let run = self.begin_shutdown(grace, reason);
        let killed_at = self.signal_shutdown(grace).await;
        self.end_shutdown(run, killed_at).await;
    }
}

/// Reads one of the sandbox's output pipes into the log; `telemetry_type` is the Telemetry API
/// stream its lines belong to (`function`, or `extension` for the extensions' own pipe).
#[allow(clippy::too_many_arguments)]
async fn read_output(
    mut stream: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    telemetry_type: &'static str,
    capture: Arc<Mutex<Capture>>,
    reading: Arc<tokio::sync::Mutex<()>>,
    sinks: Sinks,
    account: String,
    function: String,
    extensions: ExtensionsHandle,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    // The extensions' pipe is read whole lines at a time (up to the buffer's size): an extension's
    // line is never split between an invocation's log text and the next record.
    let whole_lines = telemetry_type == "extension";
    let mut pending = 0usize;
    loop {
        let count = match stream.read(&mut buffer[pending..]).await {
            Ok(0) | Err(_) => {
                if pending > 0 {
                    sinks.log(&account, &function, &buffer[..pending]);
                }
                return;
            }
            Ok(count) => pending + count,
        };
        let (count, rest) = match buffer[..count].iter().rposition(|byte| *byte == b'\n') {
            Some(last) if whole_lines => (last + 1, count - last - 1),
            None if whole_lines && count < buffer.len() => {
                pending = count;
                continue;
            }
            _ => (count, 0),
        };
        let _guard = reading.lock().await;
        // A line per event of the Telemetry API's `function` or `extension` stream.
        if extensions.telemetry_wanted() {
            for line in String::from_utf8_lossy(&buffer[..count])
                .split('\n')
                .filter(|line| !line.is_empty())
            {
                extensions.emit(telemetry_type, serde_json::Value::String(line.to_string()));
            }
        }
        let mut capture = capture.lock().unwrap_or_else(|poison| poison.into_inner());
        if capture.active {
            capture.text.extend_from_slice(&buffer[..count]);
            // Keep memory bounded for chatty functions; the tail is what callers get anyway.
            if capture.text.len() > 1024 * 1024 {
                let excess = capture.text.len() - 512 * 1024;
                capture.text.drain(..excess);
            }
        } else {
            // Output outside an invocation (init, background threads) goes straight to the log.
            sinks.log(&account, &function, &buffer[..count]);
        }
        drop(capture);
        buffer.copy_within(count..count + rest, 0);
        pending = rest;
    }
}

fn pipe_pending(fd: i32) -> usize {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at a live local; an invalid
    // fd only makes the call fail, which we treat as nothing pending.
    let result = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut pending) };
    if result < 0 {
        0
    } else {
        pending.max(0) as usize
    }
}

fn describe_exit(request_id: &str, report: Option<&ExitReport>) -> (String, String) {
    let how = match report {
        Some(report) if report.oom_killed => {
            return (
                "Runtime.OutOfMemory".into(),
                format!("RequestId: {request_id} Error: Runtime exited with error: signal: killed"),
            );
        }
        Some(ExitReport {
            signal: Some(signal),
            ..
        }) => format!("signal: {}", signal_name(*signal)),
        Some(ExitReport {
            exit_code: Some(code),
            ..
        }) => format!("exit status {code}"),
        _ => "unknown status".to_string(),
    };
    (
        "Runtime.ExitError".into(),
        format!("RequestId: {request_id} Error: Runtime exited with error: {how}"),
    )
}

fn init_exit_error(request_id: &str, report: Option<&ExitReport>) -> (String, Bytes) {
    let (error_type, message) = match describe_exit(request_id, report) {
        (error_type, message) if error_type == "Runtime.OutOfMemory" => (error_type, message),
        (_, message) => (
            "Runtime.InitError".to_string(),
            message.replacen("Runtime exited", "Runtime exited during init", 1),
        ),
    };
    let payload = error_document(&error_type, &message);
    (error_type, payload)
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(nix::sys::signal::Signal::SIGKILL) => "killed".into(),
        Ok(nix::sys::signal::Signal::SIGSEGV) => "segmentation fault".into(),
        Ok(nix::sys::signal::Signal::SIGABRT) => "aborted".into(),
        Ok(nix::sys::signal::Signal::SIGTERM) => "terminated".into(),
        Ok(other) => other.as_str().to_lowercase(),
        Err(_) => format!("signal {signal}"),
    }
}

pub fn error_document(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn elapsed_us(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
