//! Starting a sandbox from the server's side: cgroups, the launcher process, the hand-over of the
//! Runtime API listener, waiting and killing. This module must never run function code itself.

use crate::{LauncherCommand, SandboxError, SandboxSpec};

/// How a sandbox ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// Exit code of the function's pid-1 process, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that killed the function's pid-1 process.
    pub signal: Option<i32>,
    /// The memory cgroup's OOM killer killed a process of this sandbox.
    pub oom_killed: bool,
    /// Peak memory use of the sandbox (cgroup), when a memory controller was available.
    pub max_memory_bytes: Option<u64>,
}

/// A running sandbox.
#[derive(Debug)]
pub struct SpawnedSandbox {
    _private: (),
}

/// Starts one sandbox.
pub async fn spawn(
    _spec: &SandboxSpec,
    _launcher: &LauncherCommand,
) -> Result<SpawnedSandbox, SandboxError> {
    Err(SandboxError::Setup("not implemented yet".into()))
}
