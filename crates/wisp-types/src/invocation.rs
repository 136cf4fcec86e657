//! Invocation records: what happened to one invocation, written off the hot path after it ends
//! (and, for async invocations, also while it waits and runs).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvocationStatus {
    /// An accepted event waiting in its function's queue (or for its next retry).
    Queued,
    /// Handed to an instance, not finished yet.
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Throttled,
    /// An event older than its function's maximum event age when its turn came: it was not run again.
    Expired,
}

impl InvocationStatus {
    /// Whether nothing more will happen to the invocation.
    pub fn is_final(self) -> bool {
        !matches!(self, InvocationStatus::Queued | InvocationStatus::Running)
    }
}

/// One finished invocation. Durations are microseconds; billed duration is milliseconds rounded up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub request_id: String,
    pub account: String,
    pub function_name: String,
    pub version: String,
    pub invocation_type: String,
    pub status: InvocationStatus,
    /// `errorType` for failed invocations.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error_type: Option<String>,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub duration_us: u64,
    pub billed_duration_ms: u64,
    /// Init duration of the instance that served this invocation, if it was a cold start.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub init_duration_us: Option<u64>,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u32,
    pub cold_start: bool,
    /// How many times the function was run for this invocation: 1 for a synchronous invoke; for an event,
    /// every run including retries and redeliveries after a server restart (0 while it waits for its first).
    #[serde(default = "one")]
    pub attempts: u32,
    /// For events: when the event was accepted, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub enqueued_ms: Option<u64>,
    /// For events: microseconds from acceptance (or from the retry becoming due) to the start of this run.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queue_delay_us: Option<u64>,
    /// The function's response, or its error document, when the record is kept with its result:
    /// the JSON value itself when the bytes are JSON, else a JSON string of the text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<serde_json::Value>,
    /// The idempotency key of the invocation, when its function is idempotent and the call had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub idempotency_key: Option<String>,
    /// For a duplicate answered with a stored outcome: the request id of the execution that produced it
    /// (this invocation ran nothing and bills nothing).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replay_of: Option<String>,
    /// For a pure function's call answered from its cache: true (`replay_of` names the run that made it).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub memoized: bool,
    /// For a run whose result was cached: the bytes stored times the seconds they are kept, the cost of
    /// the cache entry.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub memo_byte_seconds: Option<u64>,
    /// What ran when it was not an invocation: `shutdown` for a runtime's shutdown hook, run when its
    /// instance was stopped (`invocation_type` is then `Shutdown`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phase: Option<String>,
    /// For a shutdown hook's run: why the instance was stopped (`spindown`, `timeout`, `failure`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shutdown_reason: Option<String>,
}

fn one() -> u32 {
    1
}

/// A function's result as it is kept in a record: JSON stays JSON, anything else becomes a string.
pub fn result_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Billed milliseconds for a duration in microseconds: rounded up to the next whole millisecond, at least 1.
pub fn billed_milliseconds(duration_us: u64) -> u64 {
    duration_us.div_ceil(1000).max(1)
}

/// Lambda's closing log line for an invocation.
pub fn report_line(record: &InvocationRecord) -> String {
    let mut line = format!(
        "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
        record.request_id,
        record.duration_us as f64 / 1000.0,
        record.billed_duration_ms,
        record.memory_size_mb,
        record.max_memory_used_mb,
    );
    if let Some(init_us) = record.init_duration_us {
        line.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init_us as f64 / 1000.0
        ));
    }
    if let Some(phase) = &record.phase {
        line.push_str(&format!("\tPhase: {phase}"));
        if let Some(reason) = &record.shutdown_reason {
            line.push_str(&format!("\tReason: {reason}"));
        }
        // A phase cut off at its limit says so, as Lambda's init REPORT lines do.
        match record.status {
            InvocationStatus::TimedOut => line.push_str("\tStatus: timeout"),
            InvocationStatus::Failed => line.push_str("\tStatus: error"),
            _ => {}
        }
    }
    line.push('\t');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_hook_report_names_its_phase_reason_and_cut_off() {
        let record = |status, phase: Option<&str>| InvocationRecord {
            request_id: "r".into(),
            account: "000000000000".into(),
            function_name: "f".into(),
            version: "1".into(),
            invocation_type: "Shutdown".into(),
            status,
            error_type: None,
            started_ms: 0,
            duration_us: 1_500,
            billed_duration_ms: 2,
            init_duration_us: None,
            memory_size_mb: 128,
            max_memory_used_mb: 20,
            cold_start: false,
            attempts: 1,
            enqueued_ms: None,
            queue_delay_us: None,
            result: None,
            idempotency_key: None,
            replay_of: None,
            memoized: false,
            memo_byte_seconds: None,
            phase: phase.map(str::to_string),
            shutdown_reason: phase.map(|_| "spindown".to_string()),
        };
        let base = "REPORT RequestId: r\tDuration: 1.50 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 20 MB";
        for (status, phase, expected) in [
            (InvocationStatus::Succeeded, None, format!("{base}\t")),
            (InvocationStatus::TimedOut, None, format!("{base}\t")),
            (
                InvocationStatus::Succeeded,
                Some("shutdown"),
                format!("{base}\tPhase: shutdown\tReason: spindown\t"),
            ),
            (
                InvocationStatus::TimedOut,
                Some("shutdown"),
                format!("{base}\tPhase: shutdown\tReason: spindown\tStatus: timeout\t"),
            ),
            (
                InvocationStatus::Failed,
                Some("shutdown"),
                format!("{base}\tPhase: shutdown\tReason: spindown\tStatus: error\t"),
            ),
        ] {
            assert_eq!(
                report_line(&record(status, phase)),
                expected,
                "{status:?} {phase:?}"
            );
        }
    }

    #[test]
    fn billing_rounds_up_to_the_millisecond() {
        for (duration_us, billed) in [
            (0, 1),
            (1, 1),
            (999, 1),
            (1000, 1),
            (1001, 2),
            (1_500_000, 1500),
            (1_500_001, 1501),
        ] {
            assert_eq!(billed_milliseconds(duration_us), billed, "{duration_us} µs");
        }
    }
}
