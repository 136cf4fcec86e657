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
use crate::launcher::{LaunchReply, LaunchRequest};
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
    /// Kept open for the sandbox's lifetime: the launcher kills the function when it closes.
    _control: OwnedFd,
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
/// reports why it could not be).
///
/// # Cancel safety
///
/// Dropping the future kills the launcher; the instance's cgroups are removed.
pub async fn spawn(
    spec: &SandboxSpec,
    launcher: &LauncherCommand,
) -> Result<SpawnedSandbox, SandboxError> {
    validate(spec)?;
    let limits = Limits {
        memory_bytes: u64::from(spec.memory_mb) << 20,
        pids_max: spec.pids_max,
    };
    let (cgroup, mut degraded) = InstanceCgroup::create(layout(), &spec.instance_id, limits)
        .map_err(|error| SandboxError::Setup(error.to_string()))?;
    if !degraded.is_empty() && !DEGRADATION_LOGGED.swap(true, Ordering::Relaxed) {
        for reason in &degraded {
            tracing::warn!("sandbox isolation degraded: {reason}");
        }
    }
    let cgroup = CgroupGuard(Some(cgroup));
    let tmp = match &spec.scratch_dir {
        Some(dir) => crate::scratch::prepare(dir, spec.tmp_mb).await,
        None => Err("no scratch directory was given".to_string()),
    };
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
        cgroup_procs: cgroup.get().procs_files(),
        tmp_device,
    };
    match tokio::time::timeout(LAUNCH_TIMEOUT, start(spec, launcher, request, tmp)).await {
        Ok(Ok(started)) => Ok(SpawnedSandbox {
            instance_id: spec.instance_id.clone(),
            launcher: started.launcher,
            target: Arc::new(Target {
                pid: started.pid,
                pidfd: started.pidfd,
                cgroup: cgroup.take(),
                exited: AtomicBool::new(false),
            }),
            listener: Some(started.listener),
            stdout: started.stdout,
            stderr: started.stderr,
            _control: started.control,
            degraded,
            report: None,
        }),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(SandboxError::Launcher(format!(
            "launcher did not report within {}s",
            LAUNCH_TIMEOUT.as_secs()
        ))),
    }
}

fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
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

struct Started {
    launcher: Child,
    pid: u32,
    pidfd: Option<OwnedFd>,
    listener: TcpListener,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    control: OwnedFd,
}

async fn start(
    spec: &SandboxSpec,
    launcher: &LauncherCommand,
    request: LaunchRequest,
    tmp: Option<OwnedFd>,
) -> Result<Started, SandboxError> {
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
    // system calls (dup2, fcntl, setsid) on descriptors that exist in the child.
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

    let body = serde_json::to_vec(&request)
        .map_err(|error| SandboxError::Launcher(format!("encoding launch request: {error}")))?;
    if body.len() > crate::launcher::MAX_MESSAGE {
        return Err(SandboxError::Setup(format!(
            "sandbox spec of instance {} is too large ({} bytes)",
            spec.instance_id,
            body.len()
        )));
    }
    // SAFETY: `server_end` is an OwnedFd: its descriptor stays open and unchanged until
    // `into_inner` gives it back.
    let control = unsafe { AsyncFd::register(server_end) }.map_err(io::Error::from)?;
    // The /tmp mount travels with the request; the launcher is its only holder afterwards.
    let rights: Vec<RawFd> = tmp.iter().map(|fd| fd.as_raw_fd()).collect();
    let sent = loop {
        let mut guard = control.writable().await?;
        match guard.try_io(|fd| {
            let iov = [IoSlice::new(&body)];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&rights)];
            let cmsgs: &[nix::sys::socket::ControlMessage] =
                if rights.is_empty() { &[] } else { &cmsg };
            nix::sys::socket::sendmsg::<()>(
                fd.get_ref().as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)
        }) {
            Ok(result) => break result,
            Err(_would_block) => continue,
        }
    };
    drop(tmp);
    let reply = match sent {
        Ok(_) => loop {
            let mut guard = control.readable().await?;
            match guard.try_io(|fd| crate::launcher::receive_reply(fd.get_ref().as_raw_fd())) {
                Ok(result) => break result,
                Err(_would_block) => continue,
            }
        },
        // The launcher died before reading its request; its exit status and stderr say why.
        Err(error) if error.raw_os_error() == Some(libc::EPIPE) => Ok(None),
        Err(error) => return Err(SandboxError::Io(error)),
    };
    let control = control.into_inner();
    match reply {
        Ok(Some((LaunchReply::Ready { pid, has_pidfd }, fds))) => {
            let mut fds = fds.into_iter();
            let listener_fd = fds
                .next()
                .ok_or_else(|| SandboxError::Launcher("launcher sent no listener".into()))?;
            let pidfd = if has_pidfd { fds.next() } else { None };
            let listener = TcpListener::from(listener_fd);
            listener.set_nonblocking(true)?;
            Ok(Started {
                pid: u32::try_from(pid).map_err(|_| {
                    SandboxError::Launcher(format!("launcher reported invalid pid {pid}"))
                })?,
                pidfd,
                listener,
                stdout: child.stdout.take(),
                stderr: child.stderr.take(),
                launcher: child,
                control,
            })
        }
        Ok(Some((LaunchReply::Failed(failure), _))) => {
            let _ = child.wait().await;
            Err(failure.into())
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

/// The launcher closed its socket without a reply: report its exit status and what it printed.
async fn launcher_died(child: &mut Child) -> SandboxError {
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
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
    let output = String::from_utf8_lossy(&output);
    let output = output.trim();
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
