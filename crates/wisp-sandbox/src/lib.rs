//! Sandboxes: everything needed to run one function instance as an isolated process.
//!
//! The server calls [`SandboxPool::spawn`] (or [`spawn`]) with a [`SandboxSpec`]; that uses a
//! launcher (a small privileged path, entered through the hidden `wisp launch` subcommand or the
//! `wisp-launcher` binary), which enters fresh namespaces, opens the sandbox's Runtime API socket
//! inside the sandbox's own network namespace and forks the function's process, which joins the
//! instance's cgroups and waits; then, given the spec, it builds a private root and `exec`s the
//! bootstrap, and the listening socket goes back to the server. The pool keeps a few launchers
//! ready at the waiting point so that a cold start skips those steps (`pool.rs`). `/tmp` is a
//! size-limited ext4 filesystem on a loop device (`scratch.rs`). Sandboxes in
//! [`NetworkMode::Egress`] reach the outside through slirp4netns (`network.rs`). Function code never runs in the
//! server's process. [`archive`] unpacks function code safely and
//! [`doctor`] says which isolation mechanisms this machine offers.
//!
//! This crate knows nothing about HTTP, storage or scheduling.

pub mod archive;
pub mod cgroup;
pub mod doctor;
pub mod launcher;
mod network;
mod pool;
mod scratch;
mod spawn;

use std::path::PathBuf;

pub use network::{DNS_ADDRESS, HOST_ADDRESS, SLIRP4NETNS, find_slirp4netns};
pub use nix::sys::signal::Signal;
pub use pool::{PLACEHOLDER_LIMITS, REFILL_DELAY, SPARES, SandboxPool};
pub use spawn::{ChildProcess, ExitReport, KillHandle, LAUNCH_TIMEOUT, SpawnedSandbox, spawn};

/// Address the Runtime API listens on inside every sandbox (`AWS_LAMBDA_RUNTIME_API`).
pub const RUNTIME_API_ADDRESS: &str = "127.0.0.1:9001";

/// How to start the launcher: the program and the arguments placed before the launcher's own.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LauncherCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Everything the launcher needs to build one instance's sandbox.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SandboxSpec {
    /// Unique id of the instance; names the cgroup.
    pub instance_id: String,
    /// Unpacked function code, mounted read-only at `/var/task`.
    pub code_dir: PathBuf,
    /// Managed runtime files, mounted read-only at `/var/runtime` (none for `provided` runtimes).
    pub runtime_dir: Option<PathBuf>,
    /// Host directories mounted read-only at the same path inside (for example an interpreter's prefix).
    pub extra_read_only: Vec<PathBuf>,
    /// The function's layers, merged into one directory, mounted read-only at `/opt`
    /// (an empty `/opt` without it).
    #[serde(default)]
    pub opt_dir: Option<PathBuf>,
    /// argv of the process to exec inside the sandbox, e.g. `["/var/task/bootstrap"]`.
    pub argv: Vec<String>,
    /// The complete environment of that process; nothing of the server's environment leaks in.
    pub env: Vec<(String, String)>,
    /// Memory limit (cgroup), in MiB.
    pub memory_mb: u32,
    /// Size of `/tmp`, in MiB: a hard limit (writing past it fails with `ENOSPC`).
    pub tmp_mb: u32,
    /// Host directory where `/tmp`'s filesystem image is created (and unlinked at once); never
    /// visible inside the sandbox and must not be on tmpfs. With it, `/tmp` is an ext4 filesystem on
    /// a loop device whose data is page cache the kernel can write back and reclaim, so it does not
    /// eat `memory_mb`. Without it (or where loop devices or `mkfs.ext4` are missing) `/tmp` is a
    /// tmpfs whose files count against the memory limit, and the sandbox says so in
    /// [`SpawnedSandbox::degraded`].
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// Maximum number of processes and threads (cgroup pids controller).
    pub pids_max: u32,
    /// Network of the instance; its Runtime API is private to it in every mode.
    pub network: NetworkMode,
}

/// What a sandbox's network reaches. Every mode gives the sandbox its own network namespace, in
/// which the Runtime API listens on loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NetworkMode {
    /// Only the namespace's own loopback: nothing outside the sandbox is reachable.
    #[default]
    Isolated,
    /// Loopback plus user-space NAT through slirp4netns (a tap device and a default route): the
    /// outside world, DNS at [`DNS_ADDRESS`], and the host's loopback at [`HOST_ADDRESS`].
    Egress,
}

/// Why a sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// the launcher could not be started or died before the sandbox was ready.
    #[error("launcher failed: {0}")]
    Launcher(String),
    /// a namespace, mount or cgroup operation failed.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// the bootstrap could not be executed (missing, not executable, bad interpreter line).
    #[error("cannot execute {path}: {reason}")]
    Exec { path: String, reason: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl SandboxError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SandboxError::Io(_) | SandboxError::Launcher(_))
    }
}
