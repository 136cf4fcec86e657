//! Stopping an instance: the notice its runtime can read, the signals, and the metering of the
//! runtime's shutdown hook (`docs/SHUTDOWN.md`).
//!
//! Before SIGTERM the engine announces the reason (Lambda's `spindown`, `timeout` or `failure`) and
//! the deadline to the instance's Runtime API ([`wisp_runtime_api::shutdown`]); a runtime that runs a
//! hook asks for that notice, which marks the hook's start, and says when it is done. Everything the
//! runtime writes from SIGTERM to its exit belongs to the hook: when a hook ran, it is logged between
//! its own `START` and `END` lines with a `REPORT` line and an invocation record (`phase: shutdown`),
//! billed like an invocation; when none ran, the text goes to the log as it is.
//!
//! This module never delays a stop beyond the grace period, and never keeps an instance the pool let go.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::watch;
use wisp_runtime_api::shutdown::{HookPhase, ShutdownHandle, ShutdownNotice, ShutdownReason};
use wisp_types::{InvocationRecord, InvocationStatus, billed_milliseconds, report_line};

use super::{Instance, InstanceSpec, unix_ms};

/// What stopping an instance needs besides the process: its Runtime API's shutdown extension and
/// what a hook's record names.
pub(super) struct ShutdownContext {
    handle: ShutdownHandle,
    function: String,
    version: String,
    memory_mb: u32,
    /// Set when an invocation timed out and the runtime was left alive for its hook.
    timed_out: AtomicBool,
}

impl ShutdownContext {
    pub(super) fn new(handle: ShutdownHandle, spec: &InstanceSpec) -> ShutdownContext {
        ShutdownContext {
            handle,
            function: spec.function.clone(),
            version: spec.version.clone(),
            memory_mb: spec.sandbox.memory_mb,
            timed_out: AtomicBool::new(false),
        }
    }
}

/// A stop in progress: what the runtime was told, and where its hook is.
pub(super) struct ShutdownRun {
    notice: ShutdownNotice,
    phase: watch::Receiver<HookPhase>,
    grace: Duration,
}

/// Lambda's reason for one of the engine's detailed stop reasons (kept as they are in lifecycle events).
fn lambda_reason(detail: &str, timed_out: bool) -> ShutdownReason {
    match detail {
        "failed" if timed_out => ShutdownReason::Timeout,
        "failed" | "init failed" => ShutdownReason::Failure,
        // Extensions still busy at an invocation's deadline (see `crate::extensions`).
        "extensions timeout" => ShutdownReason::Timeout,
        // idle, function changed, server stopping, provisioned concurrency reduced, and any new one
        _ => ShutdownReason::Spindown,
    }
}

impl Instance {
    /// Lambda's reason for a stop with the engine's `detail`, as the runtime is told it.
    pub(super) fn lambda_reason(&self, detail: &str) -> ShutdownReason {
        lambda_reason(detail, self.shutdown.timed_out.load(Ordering::Relaxed))
    }

    /// Whether the runtime can see SIGTERM at all. As pid 1 of its namespace, a process without a
    /// handler for it never receives it; when `/proc` cannot tell, assume it can.
    fn catches_sigterm(&self) -> bool {
        self.handle.catches(Signal::SIGTERM).unwrap_or(true)
    }

    /// An invocation ran out of time. A runtime that handles SIGTERM stays alive until the stop that
    /// follows, which gives its hook the reason `timeout`; any other is killed now, as Lambda kills it.
    pub(super) fn after_timeout(&self) {
        self.shutdown.timed_out.store(true, Ordering::Relaxed);
        if !self.catches_sigterm() {
            self.kill(Signal::SIGKILL);
        }
    }

    /// Announces the stop to the runtime and starts collecting what it writes for the hook's log.
    pub(super) fn begin_shutdown(&self, grace: Duration, detail: &str) -> ShutdownRun {
        let reason = lambda_reason(detail, self.shutdown.timed_out.load(Ordering::Relaxed));
        let notice = ShutdownNotice {
            reason,
            deadline_ms: unix_ms() + grace.as_millis() as u64,
            request_id: crate::request_id().to_string(),
        };
        self.shutdown.handle.announce(notice.clone());
        {
            let mut capture = self
                .capture
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            capture.active = true;
            capture.text.clear();
        }
        ShutdownRun {
            notice,
            phase: self.shutdown.handle.phase(),
            grace,
        }
    }

    /// SIGTERM, then SIGKILL after `grace` if the runtime is still there; a runtime that cannot see
    /// SIGTERM is killed at once. Returns when SIGKILL was sent because the grace period ran out.
    pub(super) async fn signal_shutdown(&self, grace: Duration) -> Option<Instant> {
        if !self.catches_sigterm() {
            self.kill(Signal::SIGKILL);
            self.wait_exit(Duration::from_secs(5)).await;
            return None;
        }
        self.kill(Signal::SIGTERM);
        if self.wait_exit(grace).await.is_some() {
            return None;
        }
        let killed_at = Instant::now();
        self.kill(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(5)).await;
        Some(killed_at)
    }

    /// Writes what the runtime wrote while it stopped: with `START`/`END`/`REPORT` lines and a record
    /// when its hook ran, as plain log text otherwise.
    pub(super) async fn end_shutdown(&self, run: ShutdownRun, killed_at: Option<Instant>) {
        self.drain_output().await;
        let text = {
            let mut capture = self
                .capture
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            capture.active = false;
            std::mem::take(&mut capture.text)
        };
        let phase = run.phase.borrow().clone();
        let (started, ended, error_type, cut_off) = match phase {
            HookPhase::NotStarted => {
                self.sinks.log(&self.account, &self.shutdown.function, text);
                return;
            }
            // A runtime may end its hook by exiting instead of saying so.
            HookPhase::Running(started) => (
                started,
                killed_at.unwrap_or_else(Instant::now),
                None,
                killed_at.is_some(),
            ),
            HookPhase::Done {
                started,
                ended,
                error_type,
            } => (started, ended, error_type, false),
        };
        let duration_us = ended.saturating_duration_since(started).as_micros() as u64;
        let request_id = &run.notice.request_id;
        let (status, error_type) = if cut_off {
            (
                InvocationStatus::TimedOut,
                Some("Sandbox.Timedout".to_string()),
            )
        } else if error_type.is_some() {
            (InvocationStatus::Failed, error_type)
        } else {
            (InvocationStatus::Succeeded, None)
        };
        let max_memory_bytes = self.handle.memory_peak_bytes().or_else(|| {
            self.exited
                .borrow()
                .as_ref()
                .and_then(|report| report.max_memory_bytes)
        });
        let record = InvocationRecord {
            request_id: request_id.clone(),
            account: self.account.clone(),
            function_name: self.shutdown.function.clone(),
            version: self.shutdown.version.clone(),
            invocation_type: "Shutdown".to_string(),
            status,
            error_type,
            started_ms: unix_ms().saturating_sub(started.elapsed().as_millis() as u64),
            duration_us,
            billed_duration_ms: billed_milliseconds(duration_us),
            init_duration_us: None,
            memory_size_mb: self.shutdown.memory_mb,
            max_memory_used_mb: max_memory_bytes
                .map(|bytes| bytes.div_ceil(1024 * 1024) as u32)
                .unwrap_or(0),
            cold_start: false,
            attempts: 1,
            enqueued_ms: None,
            queue_delay_us: None,
            result: None,
            idempotency_key: None,
            replay_of: None,
            memoized: false,
            memo_byte_seconds: None,
            phase: Some("shutdown".to_string()),
            shutdown_reason: Some(run.notice.reason.as_str().to_string()),
        };
        let mut log_text = format!(
            "START RequestId: {request_id} Version: {} Phase: shutdown Reason: {}\n",
            self.shutdown.version,
            run.notice.reason.as_str()
        )
        .into_bytes();
        log_text.extend_from_slice(&text);
        if cut_off {
            log_text.extend_from_slice(
                format!(
                    "{} {request_id} Shutdown hook cut off: the runtime was killed after the {:.2} seconds grace period\n",
                    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    run.grace.as_secs_f64()
                )
                .as_bytes(),
            );
        }
        log_text.extend_from_slice(
            format!("END RequestId: {request_id}\n{}\n", report_line(&record)).as_bytes(),
        );
        self.sinks
            .log(&self.account, &self.shutdown.function, log_text);
        self.sinks.record(record, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_lambdas_three() {
        for (detail, timed_out, expected) in [
            ("idle", false, ShutdownReason::Spindown),
            ("function changed", false, ShutdownReason::Spindown),
            ("server stopping", false, ShutdownReason::Spindown),
            (
                "provisioned concurrency reduced",
                false,
                ShutdownReason::Spindown,
            ),
            ("failed", false, ShutdownReason::Failure),
            ("failed", true, ShutdownReason::Timeout),
            ("init failed", false, ShutdownReason::Failure),
            ("extensions timeout", false, ShutdownReason::Timeout),
            // A server stop after a timeout is still a spindown: the timeout already replaced it.
            ("server stopping", true, ShutdownReason::Spindown),
        ] {
            assert_eq!(
                lambda_reason(detail, timed_out),
                expected,
                "{detail} {timed_out}"
            );
        }
    }
}
