//! Wisp's shutdown extension of the Runtime API: how a runtime that got SIGTERM learns why and until
//! when, and tells the platform when its shutdown hook ran (`docs/SHUTDOWN.md`).
//!
//! - `POST /2018-06-01/runtime/wisp/shutdown` answers `{"reason", "deadlineMs", "requestId"}` and
//!   marks the start of the hook's run;
//! - `POST /2018-06-01/runtime/wisp/shutdown/done` marks its end (an optional JSON body with
//!   `errorType` says the hook failed).
//!
//! The engine announces the stop through [`ShutdownHandle::announce`] before it sends SIGTERM, and
//! follows the hook through [`ShutdownHandle::phase`]. A runtime that never calls these routes simply
//! sees SIGTERM; nothing here decides when the instance dies.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::{Body, json_response};

/// Why an instance is being stopped, in the words Lambda uses for its Shutdown phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Scale-in: idle, redeploy, server stop, concurrency change.
    Spindown,
    /// The instance is replaced after an invocation ran out of time.
    Timeout,
    /// The instance is replaced after a failure (failed init, runtime error).
    Failure,
}

impl ShutdownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownReason::Spindown => "spindown",
            ShutdownReason::Timeout => "timeout",
            ShutdownReason::Failure => "failure",
        }
    }
}

/// What the platform tells the runtime when it stops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownNotice {
    pub reason: ShutdownReason,
    /// When the runtime will be killed, milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// Request id of the hook's run, for its log lines and record.
    pub request_id: String,
}

/// Where the runtime's shutdown hook is, as seen through the Runtime API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookPhase {
    /// The runtime has not said it runs a hook (it may have none).
    NotStarted,
    /// The runtime asked for the notice at this instant: its hook runs.
    Running(Instant),
    /// The runtime said its hook is over; `error_type` when it reported a failure.
    Done {
        started: Instant,
        ended: Instant,
        error_type: Option<String>,
    },
}

/// State shared by the engine's [`ShutdownHandle`] and the instance's Runtime API server.
#[derive(Debug)]
pub(crate) struct Shared {
    notice: Mutex<Option<ShutdownNotice>>,
    phase: watch::Sender<HookPhase>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            notice: Mutex::new(None),
            phase: watch::channel(HookPhase::NotStarted).0,
        })
    }
}

/// The engine's side of one instance's shutdown extension. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ShutdownHandle {
        ShutdownHandle { shared }
    }

    /// Records why and until when the instance is stopped; call it before sending SIGTERM, so the
    /// runtime's handler finds the notice.
    pub fn announce(&self, notice: ShutdownNotice) {
        *self
            .shared
            .notice
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(notice);
    }

    /// The hook's phase, updated as the runtime calls the routes.
    pub fn phase(&self) -> watch::Receiver<HookPhase> {
        self.shared.phase.subscribe()
    }
}

/// `POST /runtime/wisp/shutdown`: the notice, and the hook's start (only the first call starts it).
pub(crate) fn started(shared: &Shared) -> Response<Body> {
    let notice = shared
        .notice
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone();
    let Some(notice) = notice else {
        return not_stopping();
    };
    shared.phase.send_if_modified(|phase| {
        if *phase == HookPhase::NotStarted {
            *phase = HookPhase::Running(Instant::now());
            true
        } else {
            false
        }
    });
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "reason": notice.reason.as_str(),
            "deadlineMs": notice.deadline_ms,
            "requestId": notice.request_id,
        })
        .to_string(),
    )
}

/// `POST /runtime/wisp/shutdown/done`: the hook's end.
pub(crate) async fn done(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let body = match crate::read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let error_type = error_type_of(&body);
    let mut answer = None;
    shared.phase.send_if_modified(|phase| match phase {
        HookPhase::Running(started) => {
            *phase = HookPhase::Done {
                started: *started,
                ended: Instant::now(),
                error_type: error_type.clone(),
            };
            true
        }
        HookPhase::Done { .. } => false,
        HookPhase::NotStarted => {
            answer = Some(json_response(
                StatusCode::CONFLICT,
                r#"{"errorMessage":"no shutdown hook is running: POST /2018-06-01/runtime/wisp/shutdown first","errorType":"ShutdownHookNotStarted"}"#.into(),
            ));
            false
        }
    });
    answer.unwrap_or_else(crate::accepted)
}

fn not_stopping() -> Response<Body> {
    json_response(
        StatusCode::CONFLICT,
        r#"{"errorMessage":"the platform is not stopping this instance","errorType":"InstanceNotStopping"}"#.into(),
    )
}

/// The `errorType` of a done body, when it names one.
fn error_type_of(body: &Bytes) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("errorType")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_done_body_names_its_error_type_or_none() {
        for (body, expected) in [
            ("", None),
            ("{}", None),
            ("not json", None),
            (r#"{"errorType":"ValueError"}"#, Some("ValueError")),
            (r#"{"errorType":3}"#, None),
        ] {
            assert_eq!(
                error_type_of(&Bytes::from(body)).as_deref(),
                expected,
                "{body:?}"
            );
        }
    }
}
