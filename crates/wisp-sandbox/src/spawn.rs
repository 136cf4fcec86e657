//! Starting a sandbox from the server's side: the instance's cgroups, its `/tmp` image, the
//! launcher process, the hand-over of the Runtime API listener, then waiting for and killing the
//! sandbox.
//!
//! This module must never run function code in the server's process, never block the async
//! runtime on the launcher, and never report a limit as enforced when its cgroup controller is
//! missing, nor `/tmp` as disk-backed when it is a tmpfs ([`SpawnedSandbox::degraded`] lists what
//! is not).

use std::io;
use std::io::IoSlice;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, socketpair};
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::cgroup::{InstanceCgroup, Layout, Limits};
use crate::launcher::{LaunchReply, LaunchRequest, PrepareRequest};
use crate::{LauncherCommand, SandboxError, SandboxSpec};

/// How long the launcher may take to build the sandbox and reach `exec`.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

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

impl ExitReport {
    fn from_status(status: io::Result<ExitStatus>) -> ExitReport {
        let (exit_code, signal) = match status {
            Ok(status) => (status.code(), status.signal()),
            Err(_) => (None, None),
        };
        ExitReport {
            exit_code,
            signal,
            oom_killed: false,
            max_memory_bytes: None,
        }
    }

    /// A one-line description in the style of Lambda's `Runtime exited with error: ...`.
    pub fn describe(&self) -> String {
        if self.oom_killed {
            return "out of memory: the sandbox reached its memory limit".into();
        }
        match (self.exit_code, self.signal) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => match Signal::try_from(signal) {
                Ok(signal) => format!("signal: {}", signal.as_str()),
                Err(_) => format!("signal: {signal}"),
            },
            (None, None) => "unknown exit status".into(),
        }
    }
}

/// What is needed to signal a sandbox; shared between [`SpawnedSandbox`] and its [`KillHandle`]s.
#[derive(Debug)]
struct Target {
    pid: u32,
    pidfd: Option<OwnedFd>,
    cgroup: InstanceCgroup,
    exited: AtomicBool,
}

impl Target {
    fn kill(&self, signal: Signal) -> Result<(), SandboxError> {
        if self.exited.load(Ordering::Acquire) {
            return Ok(());
        }
        if signal == Signal::SIGKILL {
            // Everything in the cgroup at once where v2 allows; the pid-1 kill below also takes the
            // whole pid namespace with it.
            let _ = self.cgroup.kill_all();
        }
        let result = match &self.pidfd {
            Some(pidfd) => {
                // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number, a null
                // siginfo and no flags.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        signal as libc::c_int,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            None => nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal)
                .map_err(io::Error::from),
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(error) => Err(SandboxError::Io(error)),
        }
    }
}

/// A process the sandbox's pid-1 process started, as [`KillHandle::living_children`] sees it.
#[derive(Debug, Clone)]
pub struct ChildProcess {
    /// Its command line (an interpreted extension's shows the interpreter, then the script's path).
    pub arguments: Vec<String>,
    /// Forked by the launcher and not yet through `execve` (or caught mid-`execve`): what it will run is unknown.
    pub before_exec: bool,
}

/// Sends signals to a sandbox from another task while its owner waits for it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KillHandle {
    target: Arc<Target>,
}

impl KillHandle {
    /// See [`SpawnedSandbox::kill`].
    pub fn kill(&self, signal: Signal) -> Result<(), SandboxError> {
        self.target.kill(signal)
    }

    /// See [`SpawnedSandbox::memory_peak_bytes`].
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.target.cgroup.memory_peak_bytes()
    }

    /// Whether the function's pid-1 process has a handler installed for `signal` (its `SigCgt` in
    /// `/proc`). As pid 1 of its namespace it receives no other signal but `SIGKILL` and `SIGSTOP`.
    /// `None` when that cannot be read (the process is gone, or `/proc` hides it).
    pub fn catches(&self, signal: Signal) -> Option<bool> {
        if self.target.exited.load(Ordering::Acquire) {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.target.pid)).ok()?;
        caught_signals(&status).map(|mask| mask & (1u64 << (signal as u32 - 1)) != 0)
    }

    /// Connects to `127.0.0.1:port` inside the sandbox's own network namespace, where the
    /// sandbox's processes listen (the Telemetry API delivers to an extension's listener this way).
    /// Blocks for up to `timeout`: call it off the async threads. The connect happens on a short-lived
    /// thread that joins the namespace; the socket stays in it after the thread is gone.
    pub fn connect_inside(
        &self,
        port: u16,
        timeout: std::time::Duration,
    ) -> std::io::Result<std::net::TcpStream> {
        if self
            .target
            .exited
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the sandbox has exited",
            ));
        }
        let namespace = std::fs::File::open(format!("/proc/{}/ns/net", self.target.pid))?;
        std::thread::Builder::new()
            .name("wisp-netns".into())
            .spawn(move || {
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                std::net::TcpStream::connect_timeout(&address, timeout)
            })?
            .join()
            .unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "the thread connecting into the sandbox panicked",
                ))
            })
    }

    /// The living direct children of the sandbox's pid-1 process: the extensions the launcher
    /// started before the bootstrap, and whatever the runtime started itself. Exited children that
    /// nobody reaped yet (zombies) are left out.
    pub fn living_children(&self) -> Vec<ChildProcess> {
        let pid = self.target.pid;
        let Ok(list) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) else {
            return Vec::new();
        };
        // Forked by the launcher but not yet through execve: still the launcher's program.
        let launcher_exe = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let close = stat.rfind(')')?;
                stat[close + 1..]
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            })
            .and_then(|parent| std::fs::read_link(format!("/proc/{parent}/exe")).ok());
        // The function's process itself not yet through execve: the children it forks just before
        // (extensions) may not exist yet, so nothing can be said of them.
        let own_exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if launcher_exe.is_some() && own_exe == launcher_exe {
            return vec![ChildProcess {
                arguments: Vec::new(),
                before_exec: true,
            }];
        }
        list.split_whitespace()
            .filter_map(|child| {
                let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
                let close = stat.rfind(')')?;
                let state = stat[close + 1..].split_whitespace().next()?;
                if state == "Z" || state == "X" {
                    return None;
                }
                let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).ok()?;
                let exe = std::fs::read_link(format!("/proc/{child}/exe")).ok();
                let arguments: Vec<String> = cmdline
                    .split(|byte| *byte == 0)
                    .filter(|argument| !argument.is_empty())
                    .map(|argument| String::from_utf8_lossy(argument).into_owned())
                    .collect();
                // Mid-execve the command line and executable can read as empty or missing: as
                // unknown as a process that has not exec'd yet.
                let before_exec = exe.is_none() || exe == launcher_exe || arguments.is_empty();
                Some(ChildProcess {
                    arguments,
                    before_exec,
                })
            })
            .collect()
    }
}

/// The `SigCgt` mask of a `/proc/{pid}/status` text: bit `n - 1` is set when signal `n` is caught.
fn caught_signals(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
}

/// A running sandbox. Dropping it without [`SpawnedSandbox::wait`] kills everything in it.
#[derive(Debug)]
pub struct SpawnedSandbox {
    instance_id: String,
    launcher: Child,
    target: Arc<Target>,
    listener: Option<TcpListener>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Read end of the pipe the extensions write their output to (sandboxes with layers only).
    extension_output: Option<OwnedFd>,
    /// Kept open for the sandbox's lifetime: the launcher kills the function when it closes.
    _control: OwnedFd,
    /// slirp4netns, in egress mode; killed with the sandbox when dropped.
    egress: Option<crate::network::Egress>,
    degraded: Vec<String>,
    report: Option<ExitReport>,
}

impl SpawnedSandbox {
    /// Instance id the sandbox was started with.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Host pid of the function's process (pid 1 inside the sandbox).
    pub fn pid(&self) -> u32 {
        self.target.pid
    }

    /// Host pid of the launcher process that reaps the function.
    pub fn launcher_pid(&self) -> Option<u32> {
        self.launcher.id()
    }

    /// Host pid of the slirp4netns process serving the sandbox's network (egress mode only).
    pub fn network_helper_pid(&self) -> Option<u32> {
        self.egress.as_ref().and_then(|egress| egress.pid())
    }

    /// The Runtime API listener, bound at [`crate::RUNTIME_API_ADDRESS`] inside the sandbox's own
    /// network namespace and set non-blocking (wrap it with `tokio::net::TcpListener::from_std`).
    /// `Some` once.
    pub fn take_listener(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    /// The function's standard output. `Some` once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// What the extensions started from `/opt/extensions` write (standard output and error, one
    /// pipe), non-blocking; only for sandboxes with layers. `Some` once.
    pub fn take_extension_output(&mut self) -> Option<tokio::net::unix::pipe::Receiver> {
        let fd = self.extension_output.take()?;
        tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()
    }

    /// The function's standard error. `Some` once.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Mechanisms that could not be applied to this sandbox, one sentence each (empty when fully
    /// isolated).
    pub fn degraded(&self) -> &[String] {
        &self.degraded
    }

    /// A handle that can signal the sandbox while another task awaits [`SpawnedSandbox::wait`].
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle {
            target: self.target.clone(),
        }
    }

    /// Sends `signal` to the function's pid-1 process. Its death ends every process in the
    /// sandbox. `SIGKILL` also kills the whole cgroup at once on cgroup v2. Signalling a sandbox
    /// that has already exited is not an error.
    ///
    /// As pid 1 of its namespace, the bootstrap only receives signals it installed a handler for
    /// (`SIGKILL` excepted): a runtime that does not handle `SIGTERM` does not see it.
    pub fn kill(&self, signal: Signal) -> Result<(), SandboxError> {
        self.target.kill(signal)
    }

    /// Peak memory use so far, from the cgroup (`None` without a memory controller).
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.target.cgroup.memory_peak_bytes()
    }

    /// Processes and threads in the sandbox now (`None` without a pids controller).
    pub fn pids_current(&self) -> Option<u64> {
        self.target.cgroup.pids_current()
    }

    /// Whether the OOM killer has killed a process of this sandbox so far.
    pub fn oom_killed(&self) -> bool {
        self.target.cgroup.oom_kill_count().unwrap_or(0) > 0
    }

    /// Waits until the function's pid-1 process has exited (and with it everything in the
    /// sandbox), then removes the cgroups. Calling it again returns the same report.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future before it completes loses nothing; call it again.
    pub async fn wait(&mut self) -> ExitReport {
        if let Some(report) = &self.report {
            return report.clone();
        }
        let status = self.launcher.wait().await;
        self.target.exited.store(true, Ordering::Release);
        let mut report = ExitReport::from_status(status);
        report.oom_killed = self.oom_killed();
        report.max_memory_bytes = self.target.cgroup.memory_peak_bytes();
        let target = self.target.clone();
        let removed = tokio::task::spawn_blocking(move || {
            target.cgroup.remove_patiently(Duration::from_secs(5))
        })
        .await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(instance = %self.instance_id, %error, "could not remove sandbox cgroup");
        }
        // The launcher's exit closed slirp4netns's exit pipe: it is leaving, or is made to.
        if let Some(egress) = &mut self.egress {
            egress.finish().await;
        }
        self.report = Some(report.clone());
        report
    }
}

impl Drop for SpawnedSandbox {
    fn drop(&mut self) {
        if self.report.is_some() {
            return;
        }
        let _ = self.target.kill(Signal::SIGKILL);
        // The launcher (kill_on_drop) and the function die asynchronously; their cgroups can only
        // be removed once they are gone.
        remove_when_empty(TargetCgroup(self.target.clone()));
    }
}

static LAYOUT: OnceLock<Layout> = OnceLock::new();
static DEGRADATION_LOGGED: AtomicBool = AtomicBool::new(false);
static TMP_DEGRADATION_LOGGED: AtomicBool = AtomicBool::new(false);

/// The cgroup layout of this process, discovered once; leftovers of dead servers are swept then.
pub(crate) fn layout() -> &'static Layout {
    LAYOUT.get_or_init(|| {
        let layout = Layout::discover();
        let swept = crate::cgroup::sweep_stale(&layout);
        if swept > 0 {
            tracing::info!(
                count = swept,
                "removed sandbox cgroups left by servers that exited"
            );
        }
        layout
    })
}

/// Removes an instance's cgroups once its processes are gone: a few quick tries here, then from a
/// background thread so that the caller is not held up by a slow exit.
fn remove_when_empty(cgroup: impl std::ops::Deref<Target = InstanceCgroup> + Send + 'static) {
    if cgroup.remove_patiently(Duration::from_millis(20)).is_ok() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("wisp-sandbox-cleanup".into())
        .spawn(move || {
            if let Err(error) = cgroup.remove_patiently(Duration::from_secs(5)) {
                tracing::warn!(%error, "could not remove sandbox cgroup");
            }
        });
}

/// Starts one sandbox: creates its cgroups, starts the launcher with `launcher`'s program and
/// arguments followed by `--socket-fd 3`, and returns once the bootstrap has been `exec`ed (or
/// reports why it could not be). Every step happens now; [`crate::SandboxPool::spawn`] does the
/// same with a launcher that was prepared beforehand.
///
/// # Cancel safety
///
/// Dropping the future kills the launcher; the instance's cgroups are removed.
pub async fn spawn(
    spec: &SandboxSpec,
    launcher: &LauncherCommand,
) -> Result<SpawnedSandbox, SandboxError> {
    validate(spec)?;
    let limits = limits_of(spec);
    within_launch_timeout(async {
        let prepared = prepare(launcher, &spec.instance_id, limits, false).await?;
        prepared.launch(spec).await
    })
    .await
}

pub(crate) fn limits_of(spec: &SandboxSpec) -> Limits {
    Limits {
        memory_bytes: u64::from(spec.memory_mb) << 20,
        pids_max: spec.pids_max,
    }
}

pub(crate) async fn within_launch_timeout<T>(
    work: impl std::future::Future<Output = Result<T, SandboxError>>,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(LAUNCH_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(SandboxError::Launcher(format!(
            "launcher did not report within {}s",
            LAUNCH_TIMEOUT.as_secs()
        ))),
    }
}

pub(crate) fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let id = &spec.instance_id;
    if id.is_empty()
        || id.len() > 200
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(SandboxError::Setup(format!(
            "instance id {id:?} must be 1-200 characters of letters, digits, '-', '_' or '.'"
        )));
    }
    if spec.memory_mb == 0 || spec.pids_max == 0 {
        return Err(SandboxError::Setup(
            "memory_mb and pids_max must be greater than 0".into(),
        ));
    }
    Ok(())
}

/// Removes the cgroups unless ownership moved on to the [`SpawnedSandbox`].
#[derive(Debug)]
struct CgroupGuard(Option<InstanceCgroup>);

impl CgroupGuard {
    fn get(&self) -> &InstanceCgroup {
        self.0.as_ref().expect("cgroup present until taken")
    }

    fn take(mut self) -> InstanceCgroup {
        self.0.take().expect("cgroup present until taken")
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cgroup) = self.0.take() {
            // The launcher is gone or being killed; its processes may take a moment to leave.
            let _ = cgroup.kill_all();
            remove_when_empty(Box::new(cgroup));
        }
    }
}

/// The cgroup of a shared [`Target`].
struct TargetCgroup(Arc<Target>);

impl std::ops::Deref for TargetCgroup {
    type Target = InstanceCgroup;

    fn deref(&self) -> &InstanceCgroup {
        &self.0.cgroup
    }
}

/// A launcher after its first step: namespaces entered, Runtime API socket bound, the function's
/// process in its cgroups and waiting for a spec. Dropping it kills both and removes the cgroups.
#[derive(Debug)]
pub(crate) struct Prepared {
    launcher: Child,
    control: AsyncFd<OwnedFd>,
    /// Host pid of the waiting function process.
    pid: u32,
    cgroup: CgroupGuard,
    degraded: Vec<String>,
}

/// Step 1: creates the cgroups `cgroup_name` with `limits`, starts the launcher (at the lowest CPU
/// priority when `low_priority`, for spares made in the background) and waits until its function
/// process is in them.
pub(crate) async fn prepare(
    launcher: &LauncherCommand,
    cgroup_name: &str,
    limits: Limits,
    low_priority: bool,
) -> Result<Prepared, SandboxError> {
    let (cgroup, degraded) = InstanceCgroup::create(layout(), cgroup_name, limits)
        .map_err(|error| SandboxError::Setup(error.to_string()))?;
    if !degraded.is_empty() && !DEGRADATION_LOGGED.swap(true, Ordering::Relaxed) {
        for reason in &degraded {
            tracing::warn!("sandbox isolation degraded: {reason}");
        }
    }
    let cgroup = CgroupGuard(Some(cgroup));
    let (server_end, launcher_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|errno| SandboxError::Io(errno.into()))?;
    // The launcher reads its end blocking.
    set_blocking(launcher_end.as_raw_fd())?;

    let mut command = Command::new(&launcher.program);
    command
        .args(&launcher.args)
        .arg("--socket-fd")
        .arg(crate::launcher::DEFAULT_SOCKET_FD.to_string())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let launcher_fd = launcher_end.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (dup2, fcntl, setsid, setpriority) on descriptors that exist in the child.
    unsafe {
        command.pre_exec(move || {
            let target = crate::launcher::DEFAULT_SOCKET_FD;
            if launcher_fd == target {
                if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(launcher_fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Its own session: a terminal's ^C for the server does not reach the sandboxes.
            libc::setsid();
            if low_priority {
                libc::setpriority(libc::PRIO_PROCESS, 0, SPARE_NICE);
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|error| {
        SandboxError::Launcher(format!(
            "cannot start launcher {}: {error}",
            launcher.program.display()
        ))
    })?;
    drop(launcher_end);
    // SAFETY: `server_end` is an OwnedFd: its descriptor stays open and unchanged until
    // `into_inner` gives it back.
    let control = unsafe { AsyncFd::register(server_end) }.map_err(io::Error::from)?;
    let request = PrepareRequest {
        cgroup_procs: cgroup.get().procs_files(),
        network: crate::NetworkMode::Isolated,
    };
    let body = serde_json::to_vec(&request)
        .map_err(|error| SandboxError::Launcher(format!("encoding prepare request: {error}")))?;
    let reply = match send(&control, &body, &[]).await {
        Ok(()) => receive(&control).await?,
        // The launcher died before reading its request; its exit status and stderr say why.
        Err(error) if error.raw_os_error() == Some(libc::EPIPE) => Ok(None),
        Err(error) => return Err(SandboxError::Io(error)),
    };
    match reply {
        Ok(Some((LaunchReply::Prepared { pid }, _))) => Ok(Prepared {
            launcher: child,
            control,
            pid: u32::try_from(pid).map_err(|_| {
                SandboxError::Launcher(format!("launcher reported invalid pid {pid}"))
            })?,
            cgroup,
            degraded,
        }),
        Ok(Some((LaunchReply::Failed(failure), _))) => {
            let _ = child.wait().await;
            Err(failure.into())
        }
        Ok(Some((LaunchReply::Ready { .. }, _))) => {
            let _ = child.start_kill();
            Err(SandboxError::Launcher(
                "the launcher answered ready before it was given a spec".into(),
            ))
        }
        Ok(None) => Err(launcher_died(&mut child).await),
        Err(error) => {
            let _ = child.start_kill();
            Err(SandboxError::Launcher(format!(
                "unreadable reply from the launcher: {error}"
            )))
        }
    }
}

/// The `nice` value of spare launchers until they are used.
const SPARE_NICE: libc::c_int = 19;

impl Prepared {
    /// Host pid of the launcher.
    pub(crate) fn launcher_pid(&self) -> Option<u32> {
        self.launcher.id()
    }

    /// Host pid of the waiting function process.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the launcher is still there (a spare may have been killed while it waited).
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.launcher.try_wait(), Ok(None))
    }

    /// Replaces the limits the cgroups were created with (plain writes: nothing moves).
    pub(crate) fn set_limits(&mut self, limits: Limits) -> Result<(), SandboxError> {
        self.cgroup
            .get()
            .set_limits(limits, &mut self.degraded)
            .map_err(|error| SandboxError::Setup(error.to_string()))
    }

    /// Gives the launcher and its function process the ordinary CPU priority back.
    pub(crate) fn normal_priority(&self) {
        for pid in self.launcher.id().into_iter().chain([self.pid]) {
            // SAFETY: setpriority with integer arguments only.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 0) };
        }
    }

    /// Step 2: the `/tmp` mount and the spec go to the launcher; returns once the bootstrap has
    /// been `exec`ed.
    pub(crate) async fn launch(self, spec: &SandboxSpec) -> Result<SpawnedSandbox, SandboxError> {
        let Prepared {
            launcher: mut child,
            control,
            pid,
            cgroup,
            mut degraded,
        } = self;
        // The network is configured before the bootstrap runs; slirp4netns starts while `/tmp` is
        // being prepared.
        let attach_network = async {
            match spec.network {
                crate::NetworkMode::Isolated => Ok(None),
                crate::NetworkMode::Egress => crate::network::attach(pid).await.map(Some),
            }
        };
        let prepare_tmp = async {
            match &spec.scratch_dir {
                Some(dir) => crate::scratch::prepare(dir, spec.tmp_mb).await,
                None => Err("no scratch directory was given".to_string()),
            }
        };
        let (egress, tmp) = tokio::join!(attach_network, prepare_tmp);
        // On failure the launcher and the cgroups go with `child` and `cgroup`, `/tmp` with `tmp`.
        let mut egress = egress?;
        let network_exit = egress.as_mut().and_then(|egress| egress.take_exit_fd());
        let (tmp, tmp_device) = match tmp {
            Ok(mounted) => {
                let device = mounted.device.clone();
                (Some(mounted.into_mount()), Some(device))
            }
            Err(reason) => {
                let reason = format!(
                    "disk-backed /tmp unavailable ({reason}): /tmp is a tmpfs whose files count against the memory limit"
                );
                if !TMP_DEGRADATION_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("sandbox isolation degraded: {reason}");
                }
                degraded.push(reason);
                (None, None)
            }
        };
        let request = LaunchRequest {
            spec: spec.clone(),
            tmp_device,
            network_exit_fd: network_exit.is_some(),
        };
        let body = serde_json::to_vec(&request)
            .map_err(|error| SandboxError::Launcher(format!("encoding launch request: {error}")))?;
        if body.len() > crate::launcher::MAX_MESSAGE {
            return Err(SandboxError::Setup(format!(
                "sandbox spec of instance {} is too large ({} bytes)",
                spec.instance_id,
                body.len()
            )));
        }
        // The /tmp mount and the network helper's exit pipe travel with the request; the launcher
        // is their only holder afterwards.
        let rights: Vec<RawFd> = tmp
            .iter()
            .chain(network_exit.iter())
            .map(|fd| fd.as_raw_fd())
            .collect();
        let sent = send(&control, &body, &rights).await;
        drop(tmp);
        drop(network_exit);
        let reply = match sent {
            Ok(()) => receive(&control).await?,
            Err(error) if error.raw_os_error() == Some(libc::EPIPE) => Ok(None),
            Err(error) => return Err(SandboxError::Io(error)),
        };
        let control = control.into_inner();
        match reply {
            Ok(Some((
                LaunchReply::Ready {
                    pid,
                    has_pidfd,
                    has_extension_output,
                },
                fds,
            ))) => {
                let mut fds = fds.into_iter();
                let listener_fd = fds
                    .next()
                    .ok_or_else(|| SandboxError::Launcher("launcher sent no listener".into()))?;
                let pidfd = if has_pidfd { fds.next() } else { None };
                let extension_output = if has_extension_output {
                    fds.next()
                } else {
                    None
                };
                let listener = TcpListener::from(listener_fd);
                listener.set_nonblocking(true)?;
                let pid = u32::try_from(pid).map_err(|_| {
                    SandboxError::Launcher(format!("launcher reported invalid pid {pid}"))
                })?;
                Ok(SpawnedSandbox {
                    instance_id: spec.instance_id.clone(),
                    stdout: child.stdout.take(),
                    stderr: child.stderr.take(),
                    launcher: child,
                    target: Arc::new(Target {
                        pid,
                        pidfd,
                        cgroup: cgroup.take(),
                        exited: AtomicBool::new(false),
                    }),
                    listener: Some(listener),
                    extension_output,
                    _control: control,
                    egress,
                    degraded,
                    report: None,
                })
            }
            Ok(Some((LaunchReply::Failed(failure), _))) => {
                let _ = child.wait().await;
                Err(failure.into())
            }
            Ok(Some((LaunchReply::Prepared { .. }, _))) => {
                let _ = child.start_kill();
                Err(SandboxError::Launcher(
                    "the launcher answered prepared twice".into(),
                ))
            }
            Ok(None) => Err(launcher_died(&mut child).await),
            Err(error) => {
                let _ = child.start_kill();
                Err(SandboxError::Launcher(format!(
                    "unreadable reply from the launcher: {error}"
                )))
            }
        }
    }
}

/// Sends one message (with descriptors) on the launcher socket.
async fn send(control: &AsyncFd<OwnedFd>, body: &[u8], rights: &[RawFd]) -> io::Result<()> {
    loop {
        let mut guard = control.writable().await?;
        match guard.try_io(|fd| {
            let iov = [IoSlice::new(body)];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(rights)];
            let cmsgs: &[nix::sys::socket::ControlMessage] =
                if rights.is_empty() { &[] } else { &cmsg };
            nix::sys::socket::sendmsg::<()>(
                fd.get_ref().as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map(|_| ())
            .map_err(io::Error::from)
        }) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Receives one reply; the outer error is the socket's, the inner one an unreadable reply.
async fn receive(
    control: &AsyncFd<OwnedFd>,
) -> Result<io::Result<Option<(LaunchReply, Vec<OwnedFd>)>>, SandboxError> {
    loop {
        let mut guard = control.readable().await?;
        match guard.try_io(|fd| crate::launcher::receive_reply(fd.get_ref().as_raw_fd())) {
            Ok(result) => return Ok(result),
            Err(_would_block) => continue,
        }
    }
}

/// Waits up to `wait` for a helper process that failed to exit, and collects the start of what it
/// printed on stderr: its exit status (or "still running") and that text, trimmed.
pub(crate) async fn exit_and_stderr(child: &mut Child, wait: Duration) -> (String, String) {
    let status = tokio::time::timeout(wait, child.wait()).await;
    let mut output = Vec::new();
    if let Some(stderr) = child.stderr.as_mut() {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            stderr.take(4096).read_to_end(&mut output),
        )
        .await;
    }
    let status = match status {
        Ok(Ok(status)) => status.to_string(),
        _ => "still running".to_string(),
    };
    (status, String::from_utf8_lossy(&output).trim().to_string())
}

/// The launcher closed its socket without a reply: report its exit status and what it printed.
async fn launcher_died(child: &mut Child) -> SandboxError {
    let (status, output) = exit_and_stderr(child, Duration::from_secs(5)).await;
    SandboxError::Launcher(if output.is_empty() {
        format!("launcher exited before the sandbox was ready ({status})")
    } else {
        format!("launcher exited before the sandbox was ready ({status}): {output}")
    })
}

fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; errors are reported through the return value.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_signals_are_read_from_sigcgt() {
        let status = "Name:\tpython3\nSigIgn:\t0000000001001000\nSigCgt:\t0000000180004002\n";
        let mask = caught_signals(status).expect("a SigCgt line");
        for (signal, caught) in [
            (Signal::SIGINT, true),
            (Signal::SIGTERM, true),
            (Signal::SIGHUP, false),
            (Signal::SIGPIPE, false),
        ] {
            assert_eq!(
                mask & (1u64 << (signal as u32 - 1)) != 0,
                caught,
                "{signal}"
            );
        }
        assert_eq!(caught_signals("Name:\tx\n"), None);
    }
}
