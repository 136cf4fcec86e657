//! The engine's side of extensions (agents from `/opt/extensions`, see `docs/EXTENSIONS.md`): which
//! ones a sandbox starts, what the Extensions API needs to know about the function, the wait after an
//! invocation until every extension has asked for its next event, and the `CHECKPOINT` and `SHUTDOWN`
//! events before an instance is stopped.
//!
//! The Runtime API crate keeps the registry and moves the events; this module decides the timing.
//! It must never hold a lock across an await, and costs nothing for a function without extensions.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_runtime_api::ExtensionsHandle;
use wisp_runtime_api::shutdown::ShutdownReason;
use wisp_sandbox::KillHandle;

use crate::instance::{Instance, unix_ms};

/// How often the stop and init waits look whether an extension's process is still alive.
const PROCESS_POLL: Duration = Duration::from_millis(20);

/// File names of the executables the launcher will start from the layers' `extensions/` folder
/// (`opt_dir` is the merged layers on the host), in the order it starts them.
pub fn started_extensions(opt_dir: Option<&Path>) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = opt_dir.map(|opt| opt.join("extensions")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .path()
                .metadata()
                .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Of `names`, the extensions whose process may still be running: one whose command line names
/// `/opt/extensions/NAME`, or all of them while a process the launcher forked has not exec'd yet.
fn alive(kill: &KillHandle, names: &[String]) -> Vec<String> {
    let children = kill.living_children();
    if children.iter().any(|child| child.before_exec) {
        return names.to_vec();
    }
    names
        .iter()
        .filter(|name| {
            let path = format!("{}/{name}", wisp_sandbox::launcher::EXTENSIONS_DIR);
            children.iter().any(|child| child.arguments.contains(&path))
        })
        .cloned()
        .collect()
}

/// Why init cannot complete, if a started extension exited without registering.
pub fn exited_unregistered(extensions: &ExtensionsHandle, kill: &KillHandle) -> Option<String> {
    let unregistered = extensions.unregistered();
    if unregistered.is_empty() {
        return None;
    }
    let living = alive(kill, &unregistered);
    let gone: Vec<&String> = unregistered
        .iter()
        .filter(|name| !living.contains(name))
        .collect();
    match gone.as_slice() {
        [] => None,
        [one] => Some(format!(
            "extension {one} exited without registering (started from /opt/extensions/{one})"
        )),
        many => Some(format!(
            "extensions {} exited without registering (started from /opt/extensions)",
            many.iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Describes, for an init that ran out of time, the extensions that held it up (`None` if none did).
pub fn init_holdup(extensions: &ExtensionsHandle) -> Option<String> {
    let unregistered = extensions.unregistered();
    if !unregistered.is_empty() {
        return Some(format!(
            "extension {} did not register with the Extensions API",
            unregistered.join(", ")
        ));
    }
    let not_ready = extensions.not_ready();
    if !not_ready.is_empty() {
        return Some(format!(
            "extension {} registered but did not ask for its first event",
            not_ready.join(", ")
        ));
    }
    None
}

/// Before an instance is stopped: `CHECKPOINT` to the extensions that asked for it, then `SHUTDOWN`
/// to those registered for it (with `reason`, the one the runtime is told too), each time waiting
/// until they ask for their next event or exit, within `grace` in all. Returns at once for an
/// instance without extensions.
pub async fn before_stop(
    extensions: &ExtensionsHandle,
    kill: &KillHandle,
    grace: Duration,
    reason: ShutdownReason,
) {
    if !extensions.any() {
        return;
    }
    // What the extensions' telemetry listeners have not received yet goes out before they stop.
    extensions.flush_telemetry();
    let deadline = Instant::now() + grace;
    let deadline_ms = unix_ms() + grace.as_millis() as u64;
    type Phase = fn(&ExtensionsHandle, ShutdownReason, u64) -> Vec<String>;
    let phases: [Phase; 2] = [ExtensionsHandle::checkpoint, ExtensionsHandle::shutdown];
    for queue in phases {
        let names = queue(extensions, reason, deadline_ms);
        if names.is_empty() {
            continue;
        }
        // Done when each has either asked for its next event or exited.
        loop {
            let busy: Vec<String> = extensions
                .busy()
                .into_iter()
                .filter(|name| names.contains(name))
                .collect();
            if busy.is_empty() || alive(kill, &busy).is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(?busy, "extensions did not finish within the shutdown grace");
                return;
            }
            extensions.settled(PROCESS_POLL.min(deadline - now)).await;
        }
    }
}

/// Whether a warm instance with extensions may take another invocation: once they are all back in
/// `event/next` (waiting up to `limit`), unless one reported `exit/error`. The error is the reason to
/// stop it with.
pub async fn ready_for_reuse(instance: &Instance, limit: Duration) -> Result<(), &'static str> {
    let extensions = instance.extensions();
    if !extensions.settled(limit).await {
        return Err("extensions timeout");
    }
    match extensions.exit_error() {
        Some(_) => Err("failed"),
        None => Ok(()),
    }
}

/// After an invocation whose runtime has answered: waits until every extension has asked for its
/// next event, then logs the time it took (Lambda's `PostRuntimeExtensionsDuration`). Extensions
/// still busy at the invocation's deadline stop the instance (their `SHUTDOWN` says `timeout`).
pub async fn follow_invocation(
    instance: Arc<Instance>,
    request_id: String,
    invocation: u64,
    runtime_done: Instant,
    deadline: Instant,
    grace: Duration,
) {
    let extensions = instance.extensions().clone();
    let limit = deadline.saturating_duration_since(Instant::now());
    if extensions.done_with(invocation, limit).await {
        let millis = runtime_done.elapsed().as_secs_f64() * 1000.0;
        instance.log_line(&format!(
            "EXTENSIONS RequestId: {request_id}\tPostRuntimeExtensionsDuration: {millis:.2} ms\n"
        ));
    } else {
        let busy = extensions.busy().join(", ");
        instance.log_line(&format!(
            "EXTENSIONS RequestId: {request_id}\tError: extension {busy} did not ask for its next event before the invocation's deadline; the instance is stopped\n"
        ));
        instance.stop(grace, "extensions timeout").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_extensions_are_the_executable_files_in_name_order() {
        use std::os::unix::fs::PermissionsExt;
        let opt = std::env::temp_dir().join(format!("wisp-ext-{}", std::process::id()));
        let dir = opt.join("extensions");
        std::fs::create_dir_all(dir.join("folder")).unwrap();
        for (name, mode) in [("zeta", 0o755), ("alpha", 0o755), ("notes.txt", 0o644)] {
            std::fs::write(dir.join(name), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        assert_eq!(started_extensions(Some(&opt)), ["alpha", "zeta"]);
        assert!(started_extensions(None).is_empty());
        std::fs::remove_dir_all(&opt).unwrap();
    }
}
